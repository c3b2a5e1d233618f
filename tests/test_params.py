from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import msgspec
import pytest

from datalayer.parameters import (
    Duration,
    FilePath,
    ParameterError,
    Parameters,
    check,
    decode,
    describe,
    json_schema,
    parse_duration,
)


class Inner(Parameters):
    name: str
    weight: float = 1.0


class Params(Parameters):
    scheme: Literal["http", "https"] = "http"
    max_body_bytes: Annotated[int, msgspec.Meta(gt=0)] = 10
    timeout: Duration | None = None
    items: list[Inner] = []
    labels: dict[str, str] = {}
    enabled: bool = True
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] | None = None
    path: Annotated[str, msgspec.Meta(pattern="^/", extra={"error": "must start with '/'"})] = "/"
    key: Annotated[str, msgspec.Meta(min_length=1)] = "k"
    word: Annotated[
        str, msgspec.Meta(pattern="^[a-z]+$", extra={"error": "{value!r} has caps"})
    ] = "a"
    ca_file: FilePath | None = None
    cert_file: FilePath | None = None
    key_file: FilePath | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ParameterError("certFile", "certFile and keyFile go together")


class Outer(Parameters):
    inner: list[Params] = []


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("50ms", 0.05), ("1s", 1.0), ("1m30s", 90.0), ("250us", 0.00025), ("1.5h", 5400.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "ms", "1 s", "1s2", "-1s", "1d"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_camel_case_keys_and_nested_values() -> None:
    params = decode(
        Params,
        {"scheme": "https", "maxBodyBytes": 5, "timeout": "2s", "items": [{"name": "a"}]},
    )
    assert params == Params(scheme="https", max_body_bytes=5, timeout=2.0, items=[Inner(name="a")])
    assert isinstance(params.timeout, float)
    assert decode(Params, None) == Params()
    assert decode(Params, {"timeout": 0.5}).timeout == 0.5


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        ({"schema": "http"}, "p.schema", "unknown field (known fields: caFile, certFile, enabled,"),
        ({"scheme": "ftp"}, "p.scheme", "expected one of 'http' | 'https', got 'ftp'"),
        ({"maxBodyBytes": "10"}, "p.maxBodyBytes", "expected an integer, got str '10'"),
        ({"maxBodyBytes": True}, "p.maxBodyBytes", "expected an integer, got boolean true"),
        ({"maxBodyBytes": 0}, "p.maxBodyBytes", "must be greater than zero"),
        ({"port": 70000}, "p.port", "must be 1..65535, got 70000"),
        ({"port": "80"}, "p.port", "expected an integer or null, got str '80'"),
        ({"path": "metrics"}, "p.path", "must start with '/', got 'metrics'"),
        ({"key": ""}, "p.key", "must not be empty"),
        ({"word": "Ab"}, "p.word", "'Ab' has caps"),
        ({"timeout": "soon"}, "p.timeout", "'soon' is not a duration"),
        ({"timeout": -1}, "p.timeout", "a duration must not be negative"),
        ({"timeout": True}, "p.timeout", "expected a duration, got boolean true"),
        ({"items": [{"weight": 2}]}, "p.items[0].name", "required field is missing"),
        (
            {"items": [{"name": "a", "wieght": 2}]},
            "p.items[0].wieght",
            "known fields: name, weight",
        ),
        ({"items": {"name": "a"}}, "p.items", "expected a list, got a mapping"),
        ({"labels": {"a": "x", "b": 1}}, "p.labels.b", "expected a string, got int 1"),
        ({"enabled": "yes"}, "p.enabled", "expected true or false"),
        ({"certFile": "c.pem"}, "p.certFile", "certFile and keyFile go together"),
        ([1], "p", "expected a mapping, got a list"),
    ],
)
def test_errors_name_the_path(data: object, path: str, message: str) -> None:
    with pytest.raises(ParameterError) as info:
        decode(Params, data, "p")
    assert info.value.field == path
    assert message in info.value.message


def test_errors_in_nested_models_and_cross_field_checks_keep_the_path() -> None:
    with pytest.raises(ParameterError) as info:
        decode(Outer, {"inner": [{}, {"certFile": "c"}]}, "parameters")
    assert info.value.field == "parameters.inner[1].certFile"
    with pytest.raises(ParameterError) as info:
        decode(Outer, {"inner": [{"port": 0}]})
    assert info.value.field == "inner[0].port"


def test_a_model_built_in_code_is_checked_like_a_decoded_one() -> None:
    check(Params(port=80, timeout=0.5))
    with pytest.raises(ParameterError) as info:
        check(Params(port=0))
    assert (info.value.field, info.value.message) == ("port", "must be 1..65535, got 0")
    with pytest.raises(ParameterError, match="certFile and keyFile go together"):
        Params(cert_file="c.pem")  # __post_init__ runs on construction too


def test_relative_file_paths_resolve_against_the_base(tmp_path: Path) -> None:
    data = {"caFile": "ca.pem", "certFile": "/abs/c.pem", "keyFile": "k.pem"}
    params = decode(Outer, {"inner": [data]}, base_dir=tmp_path).inner[0]
    assert params.ca_file == str(tmp_path / "ca.pem")
    assert params.cert_file == "/abs/c.pem"
    assert params.key_file == str(tmp_path / "k.pem")
    assert decode(Params, {"caFile": "ca.pem"}).ca_file == "ca.pem"  # no base: as written


def test_schema_and_description_show_names_types_defaults_and_bounds() -> None:
    schema = json_schema(Params)
    props = schema["$defs"]["Params"]["properties"]
    assert props["port"]["anyOf"][0] == {"type": "integer", "minimum": 1, "maximum": 65535}
    assert props["timeout"]["anyOf"][0]["title"] == "Duration"
    assert schema["$defs"]["Params"]["additionalProperties"] is False
    rows = {name: (tp, default, bounds) for name, tp, default, bounds in describe(Params)}
    assert rows["maxBodyBytes"] == ("int", "10", "> 0")
    assert rows["port"] == ("int | null", "None", "1..65535")
    assert rows["timeout"] == ("duration | null", "None", "")
    assert rows["items"] == ("list of Inner", "[]", "")
    assert rows["path"] == ("str", "'/'", "matches ^/")
    assert rows["caFile"][0] == "path | null"
    assert describe(Inner)[0] == ("name", "str", "required", "")
