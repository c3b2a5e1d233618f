"""A small endpoint picker on the data layer, in Python: the twin of examples/go-scheduler.

It keeps a local view of the endpoints from one Watch stream (the client's EndpointMirror)
and, at every tick, picks one the way the upstream EPP's scorers do, then prints the pick
and why:

- queue scorer: the waiting queue, min-max normalised over the candidates (shortest = 1);
- KV-cache scorer: ``1 - kv_cache_usage_percent``;
- metric scorer: one ``metrics.custom`` key, clamped to ``[min, max]`` and mapped to 0..1
  (inverted when minimising); a missing key counts as the worst case of that range.
- precise prefix-cache scorer (``--prompt``, ``--model``): the data layer's MatchPrefix, the
  share of the prompt's KV blocks an endpoint holds from the start (0..1); tokens by the
  mock pod's stand-in tokenizer (one token per UTF-8 byte).

Unknown is never zero: a typed field the data layer has not read (within its staleness
threshold) is absent on the wire, and every scorer gives it its worst case (an absent queue
scores 0 like the longest one, an absent KV-cache use counts as a full cache), so a pod that
was not read never wins over one that was. Reading the bare field would see 0, the best value.

The total is the weighted sum; the highest total wins, ties going to the first name.
Endpoints whose data is stale are left out, unless every one is stale.

    .venv/bin/python examples/python_scheduler/scheduler.py --target localhost:9002 \\
        --selector app=vllm --custom-key my_metric --custom-max 10 --picks 5 --interval 1s
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TextIO

import grpc

from datalayer.client import DataLayerClient, metric
from datalayer.parameters import parse_duration
from datalayer.v1 import datalayer_pb2 as pb

MINIMIZE = "minimize"
MAXIMIZE = "maximize"


@dataclass(frozen=True)
class Config:
    """Scorer weights and the metric scorer's parameters (an empty key turns it off)."""

    queue_weight: float = 1.0
    kv_weight: float = 1.0
    metric_weight: float = 1.0
    metric_key: str = ""
    metric_min: float = 0.0
    metric_max: float = 1.0
    metric_mode: str = MINIMIZE
    #: Precise prefix-cache scorer: the prompt to route (empty: off) and its model.
    prefix_weight: float = 1.0
    prompt: str = ""
    model: str = ""

    def validate(self) -> None:
        if self.metric_mode not in (MINIMIZE, MAXIMIZE):
            raise ValueError(f"metric mode {self.metric_mode!r}: want {MINIMIZE} or {MAXIMIZE}")
        if self.metric_key and not self.metric_max > self.metric_min:
            raise ValueError(
                f"metric range: max ({self.metric_max:g}) must be greater than "
                f"min ({self.metric_min:g})"
            )


def waiting(endpoint: pb.Endpoint) -> int | None:
    """The waiting queue, or None when the data layer has not read it (absent on the wire)."""
    value = metric(endpoint, "waiting_queue_size")
    return None if value is None else int(value)


def kv_usage(endpoint: pb.Endpoint) -> float | None:
    """KV-cache use (0..1), or None when not read (absent on the wire)."""
    value = metric(endpoint, "kv_cache_usage_percent")
    return None if value is None else float(value)


def queue_scores(endpoints: Sequence[pb.Endpoint]) -> list[float]:
    """Upstream's queue-scorer: shortest queue 1, longest 0; all equal scores 1 each.

    An absent queue scores 0, the worst case (as the longest queue does), and takes no part in
    the min-max range, so it can neither win nor stretch the scale of the known ones.
    """
    queues = [waiting(ep) for ep in endpoints]
    known = [q for q in queues if q is not None]
    if not known:
        return [0.0] * len(queues)
    lo, hi = min(known), max(known)
    if hi == lo:
        return [0.0 if q is None else 1.0 for q in queues]
    return [0.0 if q is None else (hi - q) / (hi - lo) for q in queues]


def kv_cache_scores(endpoints: Sequence[pb.Endpoint]) -> list[float]:
    """Upstream's kv-cache-utilization-scorer: 1 - KV-cache use (a 0..1 fraction); an absent
    use counts as a full cache (score 0), the worst case."""
    scores = []
    for ep in endpoints:
        usage = kv_usage(ep)
        scores.append(0.0 if usage is None else 1.0 - usage)
    return scores


def metric_value(endpoint: pb.Endpoint, config: Config) -> tuple[float, bool]:
    """``metrics.custom[key]``, or the range's worst case (and False) when the key is missing."""
    if config.metric_key in endpoint.metrics.custom:
        return endpoint.metrics.custom[config.metric_key], True
    worst = config.metric_min if config.metric_mode == MAXIMIZE else config.metric_max
    return worst, False


def metric_scores(endpoints: Sequence[pb.Endpoint], config: Config) -> list[float]:
    """Upstream's metric-scorer, linear: clamp to [min, max], map to 0..1, invert to minimise."""
    span = config.metric_max - config.metric_min
    if span <= 0:
        return [0.0] * len(endpoints)
    scores = []
    for ep in endpoints:
        value, _ = metric_value(ep, config)
        value = min(max(value, config.metric_min), config.metric_max)
        score = (value - config.metric_min) / span
        scores.append(score if config.metric_mode == MAXIMIZE else 1.0 - score)
    return scores


def stand_in_tokens(prompt: str) -> list[int]:
    """The stand-in tokenizer the mock pod uses: one token per UTF-8 byte. A real scheduler
    runs the model's tokenizer here; the data layer only sees token IDs either way."""
    return list(prompt.encode())


def prefix_scores(
    endpoints: Sequence[pb.Endpoint], matched: dict[str, int], total_blocks: int
) -> list[float]:
    """Upstream's precise prefix-cache scorer: the share of the prompt's blocks an endpoint
    holds from the start (matched / total, 0..1); an endpoint MatchPrefix did not list holds
    none, and a prompt shorter than a block scores 0 everywhere."""
    if total_blocks <= 0:
        return [0.0 for _ in endpoints]
    return [min(1.0, matched.get(ep.name, 0) / total_blocks) for ep in endpoints]


def filter_stale(
    endpoints: Sequence[pb.Endpoint],
) -> tuple[list[pb.Endpoint], list[str], bool]:
    """(kept, names dropped as stale, all stale): when all are stale, all are kept."""
    kept = [ep for ep in endpoints if not ep.stale]
    if not kept and endpoints:
        return list(endpoints), [], True
    return kept, [ep.name for ep in endpoints if ep.stale], False


@dataclass
class Scored:
    name: str
    total: float
    queue: float
    kv: float
    waiting: int | None  # None: absent on the wire (not known), scored as the worst case
    kv_usage: float | None
    stale: bool
    metric: float = 0.0
    metric_value: float = math.nan
    metric_present: bool = False
    prefix: float = 0.0


@dataclass
class Decision:
    pick: str  # "" when there was no endpoint
    ranked: list[Scored] = field(default_factory=list)  # best first
    skip_stale: list[str] = field(default_factory=list)
    all_stale: bool = False
    #: Seconds the mirror has been without the data layer, once past its staleness threshold
    #: (its whole view is then stale and unknown): 0 while connected.
    unreachable_for: float = 0.0


def pick(
    endpoints: Sequence[pb.Endpoint],
    config: Config,
    prefix: tuple[dict[str, int], int] | None = None,
) -> Decision:
    """Score the non-stale endpoints (all when all are stale) and take the best; `prefix` is
    MatchPrefix's answer (matched blocks by endpoint, total blocks) when routing a prompt."""
    ordered = sorted(endpoints, key=lambda ep: ep.name)
    candidates, dropped, all_stale = filter_stale(ordered)
    queue = queue_scores(candidates)
    kv = kv_cache_scores(candidates)
    metric = metric_scores(candidates, config) if config.metric_key else None
    cached = prefix_scores(candidates, *prefix) if prefix is not None else None
    ranked = []
    for i, ep in enumerate(candidates):
        scored = Scored(
            name=ep.name,
            total=config.queue_weight * queue[i] + config.kv_weight * kv[i],
            queue=queue[i],
            kv=kv[i],
            waiting=waiting(ep),
            kv_usage=kv_usage(ep),
            stale=ep.stale,
        )
        if metric is not None:
            scored.metric = metric[i]
            scored.metric_value, scored.metric_present = metric_value(ep, config)
            scored.total += config.metric_weight * scored.metric
        if cached is not None:
            scored.prefix = cached[i]
            scored.total += config.prefix_weight * cached[i]
        ranked.append(scored)
    ranked.sort(key=lambda s: -s.total)  # stable: a tie goes to the first name
    return Decision(ranked[0].name if ranked else "", ranked, dropped, all_stale)


def format_decision(n: int, decision: Decision, config: Config) -> list[str]:
    """The lines printed for one pick: the pick and why, then one line per candidate."""
    if not decision.pick:
        return [f"pick {n}: none (no endpoints)"]
    why = [f"best of {len(decision.ranked)}"]
    if decision.skip_stale:
        why.append("stale, skipped: " + ",".join(decision.skip_stale))
    if decision.all_stale:
        why.append("all stale, scored anyway")
    if decision.unreachable_for:
        why.append(f"data layer unreachable for {decision.unreachable_for:.1f}s")
    best = decision.ranked[0]
    lines = [f"pick {n}: {decision.pick} score={best.total:.3f} ({'; '.join(why)})"]
    for s in decision.ranked:
        queue = f"waiting={s.waiting}" if s.waiting is not None else "waiting absent, worst case"
        kv = f"usage={s.kv_usage:.3f}" if s.kv_usage is not None else "usage absent, worst case"
        line = f"  {s.name} score={s.total:.3f} queue={s.queue:.3f} ({queue}) kv={s.kv:.3f} ({kv})"
        if config.metric_key:
            if s.metric_present:
                line += f" metric={s.metric:.3f} ({config.metric_key}={s.metric_value:g})"
            else:
                line += (
                    f" metric={s.metric:.3f} ({config.metric_key} missing, "
                    f"worst case {s.metric_value:g})"
                )
        if config.prompt:
            line += f" prefix={s.prefix:.3f}"
        if s.stale:
            line += " stale"
        lines.append(line)
    return lines


async def run(
    target: str,
    config: Config,
    *,
    selector: str = "",
    picks: int = 0,
    duration: float = 0.0,
    interval: float = 1.0,
    sync_timeout: float = 10.0,
    out: TextIO = sys.stdout,
) -> int:
    """Mirror the endpoints and print picks until `picks` or `duration` is reached."""
    deadline = time.monotonic() + duration if duration > 0 else math.inf
    async with (
        DataLayerClient(target) as client,
        client.mirror(selector=selector, attributes=("metrics",)) as mirror,
    ):
        try:
            await asyncio.wait_for(mirror.synced.wait(), sync_timeout)
        except TimeoutError:
            message = f"no snapshot from {target} within {sync_timeout:g}s"
            print(f"python-scheduler: {message}", file=sys.stderr)
            return 1
        print(
            f"synced: {len(mirror.endpoints)} endpoints at revision {mirror.revision} "
            f'(instance {mirror.instance_id}), selector "{selector}"',
            file=out,
            flush=True,
        )
        n = 1
        tokens = stand_in_tokens(config.prompt)
        while picks == 0 or n <= picks:
            prefix = None
            if config.prompt:
                try:
                    answer = await client.match_prefix(config.model, tokens, selector)
                    matched = {m.endpoint: m.matched_blocks for m in answer.matches}
                    prefix = (matched, answer.total_blocks)
                except grpc.aio.AioRpcError as exc:  # no index, or unreachable: score without
                    print(f"MatchPrefix: {exc.code().name}: {exc.details()}", file=out)
            decision = pick(list(mirror.endpoints.values()), config, prefix)
            if mirror.view_stale:
                decision.unreachable_for = mirror.disconnected_for()
            print("\n".join(format_decision(n, decision, config)), file=out, flush=True)
            if (picks and n == picks) or time.monotonic() + interval > deadline:
                break
            await asyncio.sleep(interval)
            n += 1
    return 0


def _duration(text: str) -> float:
    return 0.0 if text.strip() == "0" else float(parse_duration(text))


def main(argv: Sequence[str] | None = None) -> int:
    defaults = Config()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="localhost:9002", help="the data layer's address")
    parser.add_argument("--selector", default="", help="label selector (Kubernetes syntax)")
    parser.add_argument("--picks", type=int, default=0, help="stop after N picks (0: no limit)")
    parser.add_argument("--duration", type=_duration, default=0.0, help="stop after (e.g. 10s)")
    parser.add_argument("--interval", type=_duration, default=1.0, help="between picks (1s)")
    parser.add_argument("--sync-timeout", type=_duration, default=10.0, help="first snapshot")
    parser.add_argument("--custom-key", default="", help="metrics.custom key (empty: off)")
    parser.add_argument("--custom-min", type=float, default=defaults.metric_min)
    parser.add_argument("--custom-max", type=float, default=defaults.metric_max)
    parser.add_argument("--custom-mode", default=defaults.metric_mode, choices=(MINIMIZE, MAXIMIZE))
    parser.add_argument("--queue-weight", type=float, default=defaults.queue_weight)
    parser.add_argument("--kv-weight", type=float, default=defaults.kv_weight)
    parser.add_argument("--custom-weight", type=float, default=defaults.metric_weight)
    parser.add_argument("--prompt", default="", help="route this prompt by prefix (MatchPrefix)")
    parser.add_argument("--model", default="", help="the prompt's model (base or LoRA name)")
    parser.add_argument("--prefix-weight", type=float, default=defaults.prefix_weight)
    args = parser.parse_args(argv)
    config = Config(
        queue_weight=args.queue_weight,
        kv_weight=args.kv_weight,
        metric_weight=args.custom_weight,
        metric_key=args.custom_key,
        metric_min=args.custom_min,
        metric_max=args.custom_max,
        metric_mode=args.custom_mode,
        prefix_weight=args.prefix_weight,
        prompt=args.prompt,
        model=args.model,
    )
    try:
        config.validate()
    except ValueError as exc:
        parser.error(str(exc))
    try:
        return asyncio.run(
            run(
                args.target,
                config,
                selector=args.selector,
                picks=args.picks,
                duration=args.duration,
                interval=args.interval,
                sync_timeout=args.sync_timeout,
            )
        )
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
