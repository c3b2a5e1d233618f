"""Collection: lanes per (endpoint, source), one poll scheduler, staleness.

runtime.py     the Collector: discovery sink, extraction and commit
schedule.py    one timer heap that starts, times out and reschedules every polling lane
lanes.py       a lane's state and its staleness window
status.py      an endpoint's `stale` and `last_error`, folded from its lanes
membership.py  which of several discoveries reports which endpoint
"""

from datalayer.collector.lanes import LaneState, describe_error, staleness_window
from datalayer.collector.runtime import Collector, CollectorObserver, spec_problem

__all__ = [
    "Collector",
    "CollectorObserver",
    "LaneState",
    "describe_error",
    "spec_problem",
    "staleness_window",
]
