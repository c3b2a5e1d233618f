import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from datalayer.selector import SelectorError, parse_selector


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ("", {}, True),
        ("app=vllm", {"app": "vllm"}, True),
        ("app==vllm", {"app": "sglang"}, False),
        ("app!=vllm", {}, True),
        ("app!=vllm", {"app": "vllm"}, False),
        ("tier in (a, b)", {"tier": "b"}, True),
        ("tier in (a,b)", {"tier": "c"}, False),
        ("tier notin (a)", {}, True),
        ("tier notin (a)", {"tier": "a"}, False),
        ("gpu", {"gpu": ""}, True),
        ("!gpu", {"gpu": "x"}, False),
        ("!gpu", {}, True),
        (
            "app=vllm, llm-d.ai/engine-type=vllm",
            {"app": "vllm", "llm-d.ai/engine-type": "vllm"},
            True,
        ),
        ("app=vllm,zone in (x,y),!draining", {"app": "vllm", "zone": "y", "draining": "1"}, False),
    ],
)
def test_matches(text: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_selector(text).matches(labels) is expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("=x", "expected a label key"),
        ("app in a,b", "expected '('"),
        ("app in (a", "expected ')'"),
        ("app vllm", "expected an operator"),
        ("app=vllm,", "expected a label key"),
        ("app=vllm;x=y", "expected ','"),
        ("app=" + "x" * 64, "longer than 63"),
    ],
)
def test_errors_say_where(text: str, fragment: str) -> None:
    with pytest.raises(SelectorError, match="at character") as info:
        parse_selector(text)
    assert fragment in str(info.value)


def test_empty_value_matches_empty_label_as_in_kubernetes() -> None:
    assert parse_selector("app=").matches({"app": ""})
    assert not parse_selector("app=").matches({"app": "x"})


_names = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)


@given(st.dictionaries(_names, _names, max_size=5), st.dictionaries(_names, _names, max_size=3))
def test_equality_selector_is_subset_check(labels: dict[str, str], wanted: dict[str, str]) -> None:
    text = ",".join(f"{k}={v}" for k, v in wanted.items())
    expected = all(labels.get(k) == v for k, v in wanted.items())
    assert parse_selector(text).matches(labels) is expected


@given(st.text(max_size=40))
def test_never_raises_anything_but_selector_error(text: str) -> None:
    with contextlib.suppress(SelectorError):
        parse_selector(text)
