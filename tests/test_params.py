from dataclasses import dataclass, field
from typing import Literal

import pytest

from datalayer.params import (
    DecodeError,
    Duration,
    decode_dataclass,
    describe_fields,
    parse_duration,
)


@dataclass
class Inner:
    name: str
    weight: float = 1.0


@dataclass
class Params:
    scheme: Literal["http", "https"] = "http"
    max_body_bytes: int = 10
    timeout: Duration | None = None
    items: list[Inner] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    enabled: bool = True


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
    params = decode_dataclass(
        Params,
        {"scheme": "https", "maxBodyBytes": 5, "timeout": "2s", "items": [{"name": "a"}]},
    )
    assert params == Params("https", 5, Duration(2.0), [Inner("a")])


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        ({"schema": "http"}, "p.schema", "unknown field (known fields: enabled, items,"),
        ({"scheme": "ftp"}, "p.scheme", "expected one of 'http' | 'https', got 'ftp'"),
        ({"maxBodyBytes": "10"}, "p.maxBodyBytes", "expected an integer, got str '10'"),
        ({"maxBodyBytes": True}, "p.maxBodyBytes", "expected an integer, got boolean true"),
        ({"timeout": "soon"}, "p.timeout", "'soon' is not a duration"),
        ({"items": [{"weight": 2}]}, "p.items[0].name", "required field is missing"),
        ({"items": {"name": "a"}}, "p.items", "expected a list, got a mapping"),
        ({"labels": {"a": 1}}, "p.labels.a", "expected a string, got int 1"),
        ({"enabled": "yes"}, "p.enabled", "expected true or false"),
        ([1], "p", "expected a mapping, got a list"),
    ],
)
def test_errors_name_the_path(data: object, path: str, message: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_dataclass(Params, data, "p")
    assert info.value.path == path
    assert message in info.value.message


def test_describe_fields_lists_yaml_names_types_and_defaults() -> None:
    rows = {name: (tp, default) for name, tp, default in describe_fields(Params)}
    assert rows["maxBodyBytes"] == ("int", "10")
    assert rows["timeout"] == ("duration | null", "None")
    assert rows["items"] == ("list of mapping", "[]")
