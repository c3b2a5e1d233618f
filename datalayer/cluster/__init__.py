"""Replica groups: each endpoint collected by one live member, every member serving all.

settings.py  the `cluster:` config section
ring.py      rendezvous (highest-random-weight) ownership over the live members
remote.py    a peer's `Endpoint` message as store state
peer.py      one peer's own-shard Watch stream, and whether the peer is alive
members.py   who the members are: a static list, or a DNS name resolved again and again
shard.py     the gate between discovery and the collector: collect what is owned, relay
             the rest from its owner, hand endpoints over without a gap
"""

from datalayer.cluster.settings import ClusterSettings

__all__ = ["ClusterSettings"]
