"""Picks the metrics page for an engine type, so nothing else names the flavours."""

from __future__ import annotations

from mockpod.page import PodMetrics
from mockpod.sglang_page import SglangMetrics
from mockpod.spec import PodSpec
from mockpod.vllm_page import VllmMetrics

__all__ = ["build_metrics"]


def build_metrics(spec: PodSpec, started_at: float) -> PodMetrics:
    """The page flavour for ``spec.engine_type``; ``started_at`` stamps every ``_created``."""
    if spec.engine_type == "sglang":
        return SglangMetrics(spec, started_at)
    return VllmMetrics(spec, started_at)
