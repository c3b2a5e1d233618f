"""Typed plugin parameters: msgspec vs pydantic v2 on start-up time and error messages.

    .venv/bin/python bench/params.py            # pydantic from PYDANTIC_PATH if not installed

Both libraries get the same models (a realistic `metrics-data-source` + `core-metrics-extractor`
pair: camelCase keys, unknown keys forbidden, bounds, a nested list of engine configs, a
duration given as "50ms"). Start-up is measured in a fresh interpreter per run (import the
library, build the models, decode the config once), the median of 7; then the warm decode
time, and each library's own message for five typical mistakes.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import textwrap
import time

CONFIG = {
    "metrics": {"scheme": "https", "path": "/metrics", "port": 8000, "timeout": "500ms",
                "maxBodyBytes": 16777216, "caFile": "ca.pem"},
    "core": {"engineLabelKey": "inference.networking.k8s.io/engine-type", "defaultEngine": "vllm",
             "engineConfigs": [{"name": "custom", "queuedRequestsSpec": "q_waiting",
                                "runningRequestsSpec": "q_running", "kvUsageSpec": "kv",
                                "customMetrics": [{"attributeKey": "k", "metricSpec": "m"}]}]},
}  # fmt: skip

MISTAKES = {
    "typo in a key (maxBodyByte)": ("metrics", {"maxBodyByte": 10}),
    "string for an int (port: '80')": ("metrics", {"port": "80"}),
    "out of bounds (port: 70000)": ("metrics", {"port": 70000}),
    "bad enum (scheme: ftp)": ("metrics", {"scheme": "ftp"}),
    "nested required missing": ("core", {"engineConfigs": [{"kvUsageSpec": "kv"}]}),
}

MSGSPEC_MODELS = """
from typing import Annotated, Literal
import msgspec
import re

class Duration(float):
    pass

def dec_hook(tp, obj):
    if tp is Duration:
        if isinstance(obj, str) and obj.endswith("ms"):
            return Duration(float(obj[:-2]) / 1000)
        if isinstance(obj, (int, float)) and not isinstance(obj, bool):
            return Duration(obj)
        raise ValueError(f"{obj!r} is not a duration")
    raise NotImplementedError

class Base(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    pass

class Metrics(Base):
    scheme: Literal["http", "https"] = "http"
    path: Annotated[str, msgspec.Meta(pattern="^/")] = "/metrics"
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] | None = None
    timeout: Duration | None = None
    max_body_bytes: Annotated[int, msgspec.Meta(gt=0)] = 16 << 20
    insecure_skip_verify: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

class Custom(Base):
    attribute_key: Annotated[str, msgspec.Meta(min_length=1)]
    metric_spec: str

class Engine(Base):
    name: Annotated[str, msgspec.Meta(min_length=1)]
    queued_requests_spec: str = ""
    running_requests_spec: str = ""
    kv_usage_spec: str = ""
    lora_spec: str = ""
    cache_info_spec: str = ""
    custom_metrics: list[Custom] = []

class Core(Base):
    engine_label_key: Annotated[str, msgspec.Meta(min_length=1)] = "engine"
    default_engine: str = "vllm"
    engine_configs: list[Engine] = []

MODELS = {"metrics": Metrics, "core": Core}

def decode(kind, data):
    return msgspec.convert(data, MODELS[kind], dec_hook=dec_hook)

ERRORS = (msgspec.ValidationError,)
"""

PYDANTIC_MODELS = """
from typing import Annotated, Literal
import pydantic
from pydantic import BaseModel, ConfigDict, Field, BeforeValidator
from pydantic.alias_generators import to_camel

def _duration(obj):
    if isinstance(obj, str) and obj.endswith("ms"):
        return float(obj[:-2]) / 1000
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return float(obj)
    raise ValueError(f"{obj!r} is not a duration")

Duration = Annotated[float, BeforeValidator(_duration)]

class Base(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", strict=True)

class Metrics(Base):
    scheme: Literal["http", "https"] = "http"
    path: Annotated[str, Field(pattern="^/")] = "/metrics"
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    timeout: Duration | None = None
    max_body_bytes: Annotated[int, Field(gt=0)] = 16 << 20
    insecure_skip_verify: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

class Custom(Base):
    attribute_key: Annotated[str, Field(min_length=1)]
    metric_spec: str

class Engine(Base):
    name: Annotated[str, Field(min_length=1)]
    queued_requests_spec: str = ""
    running_requests_spec: str = ""
    kv_usage_spec: str = ""
    lora_spec: str = ""
    cache_info_spec: str = ""
    custom_metrics: list[Custom] = []

class Core(Base):
    engine_label_key: Annotated[str, Field(min_length=1)] = "engine"
    default_engine: str = "vllm"
    engine_configs: list[Engine] = []

MODELS = {"metrics": Metrics, "core": Core}

def decode(kind, data):
    return MODELS[kind].model_validate(data)

ERRORS = (pydantic.ValidationError,)
"""

STARTUP = """
import time
t0 = time.perf_counter()
{models}
for kind, data in {config!r}.items():
    decode(kind, data)
print((time.perf_counter() - t0) * 1000)
"""


def startup_ms(models: str, env: dict[str, str]) -> float:
    code = STARTUP.format(models=models, config=CONFIG)
    runs = []
    for _ in range(7):
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        runs.append(float(out.stdout))
    return statistics.median(runs)


def warm_us(namespace: dict[str, object]) -> float:
    decode = namespace["decode"]
    n = 5000
    t0 = time.perf_counter()
    for _ in range(n):
        for kind, data in CONFIG.items():
            decode(kind, data)  # type: ignore[operator]
    return (time.perf_counter() - t0) / n * 1e6


def errors(namespace: dict[str, object]) -> dict[str, str]:
    found = {}
    for label, (kind, data) in MISTAKES.items():
        try:
            namespace["decode"](kind, data)  # type: ignore[operator]
            found[label] = "(accepted!)"
        except namespace["ERRORS"] as exc:  # type: ignore[misc]
            found[label] = " ".join(str(exc).split())
    return found


def main() -> None:
    env = dict(os.environ)
    extra = os.environ.get("PYDANTIC_PATH", "/tmp/pydantic-bench")
    env["PYTHONPATH"] = extra + os.pathsep + env.get("PYTHONPATH", "")
    sys.path.insert(0, extra)
    rows = []
    messages = {}
    for name, models in (("msgspec", MSGSPEC_MODELS), ("pydantic v2", PYDANTIC_MODELS)):
        namespace: dict[str, object] = {}
        code = compile(textwrap.dedent(models), f"<{name}>", "exec", dont_inherit=True)
        exec(code, namespace)
        rows.append((name, startup_ms(models, env), warm_us(namespace)))
        messages[name] = errors(namespace)
    print(f"{'library':<12} {'start-up ms':>12} {'decode µs':>10}")
    for name, start, warm in rows:
        print(f"{name:<12} {start:>12.1f} {warm:>10.1f}")
    print("(start-up: import + build the models + one decode, in a fresh interpreter, median of 7;")
    print(" decode: both configs, warm)")
    for name, found in messages.items():
        print(f"\n{name}: the library's own message for")
        for label, text in found.items():
            print(f"  {label:<32} {text}")


if __name__ == "__main__":
    main()
