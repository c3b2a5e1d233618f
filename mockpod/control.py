"""``POST /control``: turn a JSON object into override changes on a pod.

Each key has its own parser in :data:`FIELDS`, so a later mode (faults: slow, 500, garbage,
truncated, hang) is one more entry plus the code that honours it; unknown keys are refused,
so a typo in a test fails loudly instead of pinning nothing.

Body: any subset of ``waiting``, ``running``, ``kv_cache_usage`` (a number, or one number
per engine), ``running_lora``, ``waiting_lora`` (a list of names or a comma-separated
string); ``null`` clears that override; ``"reset": true`` clears all of them first.
A single count is spread over the engines so the engines sum to it; a single KV use is
reported by every engine, so their average is it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from mockpod.spec import PodSpec
from mockpod.state import Overrides, PodState

__all__ = ["FIELDS", "ControlError", "ControlTarget", "apply_control"]


class ControlError(ValueError):
    """The body asked for something the pod cannot take; answered with 400."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _per_engine(
    name: str, value: object, engines: int, *, split: bool, minimum: float | None
) -> list[float]:
    if isinstance(value, list):
        if len(value) != engines or not all(_is_number(v) for v in value):
            raise ControlError(f"{name}: a list must hold one number per engine ({engines})")
        values = [float(v) for v in value]
    elif _is_number(value):
        number = value  # narrowed for mypy below
        assert isinstance(number, int | float)
        if split and isinstance(number, int):
            base, extra = divmod(number, engines)
            values = [float(base + (1 if i < extra else 0)) for i in range(engines)]
        elif split:
            values = [float(number) / engines] * engines
        else:
            values = [float(number)] * engines
    else:
        raise ControlError(f"{name}: expected a number, a list of numbers or null")
    if minimum is not None and any(v < minimum for v in values):
        raise ControlError(f"{name}: must be >= {minimum}")
    return values


def _names(name: str, value: object) -> list[str]:
    if isinstance(value, str):
        return [part for part in (p.strip() for p in value.split(",")) if part]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ControlError(f"{name}: expected a list of names, a comma-separated string or null")


@dataclass
class ControlTarget:
    """What a field parser may change: a staged copy, committed only if the whole body parses.

    Fault modes will add their own staged settings here.
    """

    spec: PodSpec
    overrides: Overrides


FieldParser = Callable[[ControlTarget, object], None]


def _count(field_name: str) -> FieldParser:
    def apply(target: ControlTarget, value: object) -> None:
        parsed = None
        if value is not None:
            engines = target.spec.engines
            parsed = _per_engine(field_name, value, engines, split=True, minimum=0.0)
        setattr(target.overrides, field_name, parsed)

    return apply


def _kv(target: ControlTarget, value: object) -> None:
    parsed = None
    if value is not None:
        engines = target.spec.engines
        parsed = _per_engine("kv_cache_usage", value, engines, split=False, minimum=None)
    target.overrides.kv_cache_usage = parsed


def _lora(field_name: str) -> FieldParser:
    def apply(target: ControlTarget, value: object) -> None:
        setattr(target.overrides, field_name, None if value is None else _names(field_name, value))

    return apply


FIELDS: dict[str, FieldParser] = {
    "waiting": _count("waiting"),
    "running": _count("running"),
    "kv_cache_usage": _kv,
    "running_lora": _lora("running_lora"),
    "waiting_lora": _lora("waiting_lora"),
}


def apply_control(state: PodState, body: object) -> None:
    """Validate the whole body on a copy, then commit, so a bad value changes nothing."""
    if not isinstance(body, Mapping):
        raise ControlError("the body must be a JSON object")
    unknown = sorted(str(k) for k in set(body) - set(FIELDS) - {"reset"})
    if unknown:
        raise ControlError(f"unknown keys: {', '.join(unknown)}")
    reset = body.get("reset", False)
    if not isinstance(reset, bool):
        raise ControlError("reset: expected true or false")
    target = ControlTarget(state.spec, replace(state.overrides))
    if reset:
        target.overrides.clear()
    for key, value in body.items():
        if key != "reset":
            FIELDS[key](target, value)
    state.overrides = target.overrides
    state.refresh()
