import contextlib
from collections.abc import Callable
from typing import SupportsIndex

import grpc
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


# --- linear parsing and caps (issue 10, item 11) -------------------------------------------

from selector_oracle import old_parse_selector  # noqa: E402

from datalayer.selector import MAX_REQUIREMENTS, MAX_SELECTOR_LENGTH  # noqa: E402

from stack import Stack  # noqa: E402

_ALPHABET = " ,=!()inotabcxyz/-._A9\t"
_key_names = st.from_regex(r"[a-zA-Z0-9]([-a-zA-Z0-9_.]{0,5}[a-zA-Z0-9])?", fullmatch=True)
_prefixes = st.from_regex(r"[a-z0-9]([-a-z0-9.]{0,5}[a-z0-9])?/", fullmatch=True)
_values = st.from_regex(r"([a-zA-Z0-9]([-a-zA-Z0-9_.]{0,5}[a-zA-Z0-9])?)?", fullmatch=True)
_space = st.sampled_from(["", "", " ", "  ", "\t", "\u00a0"])


@st.composite
def _requirement_text(draw: st.DrawFn) -> str:
    key = draw(st.one_of(st.just(""), _prefixes)) + draw(_key_names)
    s = [draw(_space) for _ in range(4)]
    op = draw(st.sampled_from(["=", "==", "!=", "in", "notin", "exists", "!", "near-keyword"]))
    if op == "near-keyword":  # words that start like an operator: `in` only as a whole word
        word = draw(st.sampled_from(["in", "notin", "inx", "notin9", "in_", "i", "not", "!in"]))
        return f"{s[0]}{key} {word}{s[1]}{draw(st.sampled_from(['', '(v)', ',b']))}"
    if op == "exists":
        return f"{s[0]}{key}{s[1]}"
    if op == "!":
        return f"{s[0]}!{s[1]}{key}{s[2]}"
    if op in ("in", "notin"):
        values = draw(st.lists(_values, min_size=1, max_size=4))
        inner = ",".join(f"{s[3]}{v}" for v in values)
        return f"{s[0]}{key} {op}{s[1]}({inner}{s[2]})"
    return f"{s[0]}{key}{s[1]}{op}{s[2]}{draw(_values)}{s[3]}"


@st.composite
def _selector_text(draw: st.DrawFn) -> str:
    """Mostly-legal selectors, sometimes broken by one edit, sometimes noise from the alphabet."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(alphabet=_ALPHABET, max_size=30))
    text = ",".join(draw(st.lists(_requirement_text(), max_size=6)))
    edit = draw(st.integers(0, 3))
    if text and edit == 1:  # delete one character
        at = draw(st.integers(0, len(text) - 1))
        text = text[:at] + text[at + 1 :]
    elif edit == 2:  # insert one character
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(_ALPHABET)) + text[at:]
    return text


def _outcome(parse: Callable[[str], object], text: str) -> object:
    try:
        return parse(text)
    except SelectorError as exc:
        # Long selectors are quoted shortened now; where and why must still be the same.
        message = str(exc)
        return ("SelectorError", message if len(text) <= 200 else message.split(", at ")[-1])


@given(_selector_text())
def test_same_results_as_the_old_parser(text: str) -> None:
    assert _outcome(parse_selector, text) == _outcome(old_parse_selector, text)


@given(st.text(max_size=40))
def test_same_results_as_the_old_parser_on_any_text(text: str) -> None:
    assert _outcome(parse_selector, text) == _outcome(old_parse_selector, text)


class _CountingStr(str):
    """A str that counts the characters handed out by indexing and slicing (copies)."""

    copied = 0

    def __getitem__(self, index: SupportsIndex | slice) -> str:
        piece = super().__getitem__(index)
        _CountingStr.copied += len(piece)
        return piece


def _large_legal_selector(target: int) -> tuple[str, int]:
    """About `target` characters in at most MAX_REQUIREMENTS terms of every operator."""
    per_term = target // MAX_REQUIREMENTS
    terms = []
    for i in range(MAX_REQUIREMENTS):
        kind = i % 4
        if kind == 0:
            terms.append(f"k{i} in (" + ",".join(f"v{j}" for j in range(per_term // 4)) + ")")
        elif kind == 1:
            terms.append(f"k{i} notin (" + ",".join(f"w{j}" for j in range(per_term // 4)) + ")")
        elif kind == 2:
            terms.append(f"k{i}" + " " * (per_term - 8))
        else:
            terms.append(f"!k{i}" + " " * (per_term - 8))
    return ",".join(terms)[:MAX_SELECTOR_LENGTH], len(terms)


def test_large_legal_selector_is_parsed_with_linear_copying() -> None:
    text, terms = _large_legal_selector(60_000)
    assert 55_000 < len(text) <= MAX_SELECTOR_LENGTH
    _CountingStr.copied = 0
    selector = parse_selector(_CountingStr(text))
    assert len(selector.requirements) == terms
    assert selector == old_parse_selector(text)
    # Each character is looked at a bounded number of times; the old parser copied the rest
    # of the text for every `in`, `notin` and bare-key term (~200 x 30 KB here).
    assert _CountingStr.copied <= 2 * len(text), _CountingStr.copied


def test_selector_longer_than_the_cap_is_refused_naming_the_cap() -> None:
    text = "app=vllm," * (MAX_SELECTOR_LENGTH // 9) + "a" * 20
    assert len(text) > MAX_SELECTOR_LENGTH
    with pytest.raises(SelectorError) as info:
        parse_selector(text)
    message = str(info.value)
    assert f"longer than the cap of {MAX_SELECTOR_LENGTH} characters" in message
    assert len(message) < 400  # the text is quoted, not copied whole into the message
    parse_selector(" " * MAX_SELECTOR_LENGTH)  # exactly at the cap is still parsed


def test_more_terms_than_the_cap_are_refused_naming_the_cap() -> None:
    at_cap = ",".join(f"k{i}" for i in range(MAX_REQUIREMENTS))
    assert len(parse_selector(at_cap).requirements) == MAX_REQUIREMENTS
    with pytest.raises(SelectorError, match=f"more than {MAX_REQUIREMENTS} requirements"):
        parse_selector(at_cap + ",one-more")


def test_error_in_a_long_selector_quotes_only_its_start() -> None:
    text = "app=" + "v" * 60 + ",tier in (" + "x," * 1000 + "y),=oops"
    with pytest.raises(SelectorError) as info:
        parse_selector(text)
    message = str(info.value)
    assert f"at character {len(text) - 5}: expected a label key" in message
    assert len(message) < 400


async def test_service_answers_invalid_argument_naming_the_caps(stack: Stack) -> None:
    """The caps reach gRPC clients as INVALID_ARGUMENT (server/service.py maps SelectorError)."""
    too_long = ",".join(f"k{i}" for i in range(MAX_SELECTOR_LENGTH // 4))
    too_many = ",".join(f"k{i}" for i in range(MAX_REQUIREMENTS + 1))
    for text, cap in [
        (too_long, f"cap of {MAX_SELECTOR_LENGTH} characters"),
        (too_many, f"more than {MAX_REQUIREMENTS} requirements"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stack.client.list_endpoints(selector=text)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert cap in (info.value.details() or "")
