"""The `core-metrics-extractor` plugin: typed scheduler signals per model-server engine."""

from plugins.extractors.core_metrics.extractor import (
    BUILTIN_ENGINES,
    CoreMetricsExtractor,
    CoreMetricsParameters,
    EngineConfig,
    EngineMapping,
)

__all__ = [
    "BUILTIN_ENGINES",
    "CoreMetricsExtractor",
    "CoreMetricsParameters",
    "EngineConfig",
    "EngineMapping",
]
