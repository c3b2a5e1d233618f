"""The selective scanner against prometheus_client's full parser as the oracle."""

from __future__ import annotations

import math
from collections.abc import Iterable

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from plugins.shared.prometheus.samples import MetricSamples, Sample
from plugins.shared.prometheus.scan import SelectiveScanner

from promfixtures import Lora, VllmPage, vllm_page

Normalised = dict[str, list[tuple[dict[str, str], str]]]


def _value_key(value: float) -> str:
    """Floats compared by repr so NaN equals NaN and 1 equals 1.0."""
    return repr(float(value))


def oracle(text: str, names: Iterable[str]) -> Normalised:
    """What a full parse finds for `names`, keyed by sample name, in page order."""
    wanted = set(names)
    cut = text.split("\n# EOF", 1)[0] if not text.startswith("# EOF") else ""
    out: Normalised = {}
    for family in text_string_to_metric_families(cut):
        for sample in family.samples:
            if sample.name in wanted:
                out.setdefault(sample.name, []).append((sample.labels, _value_key(sample.value)))
    return out


def normalise(samples: MetricSamples) -> Normalised:
    return {
        name: [(s.labels, _value_key(s.value)) for s in series] for name, series in samples.items()
    }


def sample_names(text: str) -> set[str]:
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


# --- realistic pages -----------------------------------------------------------------------

PAGES = {
    "one engine": VllmPage(),
    "two engines, LoRA": VllmPage(
        waiting=(1, 2),
        running=(3, 4),
        kv=(0.1, 0.3),
        lora=(
            Lora("a,b", "", 4, 1.757846125e9),
            Lora("b, a", "c", 4, 1.757846130e9),
        ),
    ),
    "legacy kv name, no cache info": VllmPage(
        kv_names=("vllm:gpu_cache_usage_perc",), block_size=None, process_metrics=False
    ),
}


@pytest.mark.parametrize("page", PAGES.values(), ids=list(PAGES))
def test_fixture_pages_every_name_matches_oracle(page: VllmPage) -> None:
    body = vllm_page(page)
    text = body.decode()
    names = sample_names(text)
    assert normalise(SelectiveScanner(names).scan(body)) == oracle(text, names)


@pytest.mark.parametrize("page", PAGES.values(), ids=list(PAGES))
def test_fixture_pages_scheduler_names(page: VllmPage) -> None:
    body = vllm_page(page)
    names = {
        "vllm:num_requests_waiting",
        "vllm:num_requests_running",
        "vllm:kv_cache_usage_perc",
        "vllm:gpu_cache_usage_perc",
        "vllm:lora_requests_info",
        "vllm:cache_config_info",
        "sglang:num_queue_reqs",
        "vllm:prompt_tokens_total",
    }
    got = SelectiveScanner(names).scan(body)
    assert normalise(got) == oracle(body.decode(), names)
    assert len(got["vllm:num_requests_waiting"]) == page.engines
    assert "sglang:num_queue_reqs" not in got


def test_real_page_values() -> None:
    body = vllm_page(VllmPage(waiting=(7,), running=(2,), kv=(0.25,)))
    got = SelectiveScanner({"vllm:num_requests_waiting", "vllm:kv_cache_usage_perc"}).scan(body)
    labels = {"engine": "0", "model_name": "meta-llama/Llama-3.1-8B-Instruct"}
    assert got == {
        "vllm:num_requests_waiting": [Sample(labels, 7.0)],
        "vllm:kv_cache_usage_perc": [Sample(labels, 0.25)],
    }


# --- exactness, one rule at a time -----------------------------------------------------------


def scan(names: Iterable[str], body: bytes) -> MetricSamples:
    return SelectiveScanner(names).scan(body)


def test_prefix_of_a_longer_name_does_not_match() -> None:
    body = (
        b'vllm:num_requests_waiting_by_reason{reason="capacity"} 9\n'
        b"vllm:num_requests_waitingX 8\n"
        b"vllm:num_requests_waiting0 8\n"
        b'vllm:num_requests_waiting{engine="0"} 3\n'
    )
    assert scan({"vllm:num_requests_waiting"}, body) == {
        "vllm:num_requests_waiting": [Sample({"engine": "0"}, 3.0)]
    }


def test_only_at_line_start_and_comments_ignored() -> None:
    body = (
        b"# HELP w Waiting requests, see w 5\n"
        b"# TYPE w gauge\n"
        b"#w 6\n"
        b"other_w 7\n"
        b'x{note="\\nw 8"} 1\n'
        b"w\t4\n"
    )
    assert scan({"w"}, body) == {"w": [Sample({}, 4.0)]}


def test_label_values_with_escapes_and_separators() -> None:
    body = b'm{a="x\\\\y",b="say \\"hi\\"",c="l1\\nl2",d="1,2",e="k=v",f="{}",g="\\t"} 1\n'
    assert scan({"m"}, body)["m"] == [
        Sample(
            {
                "a": "x\\y",
                "b": 'say "hi"',
                "c": "l1\nl2",
                "d": "1,2",
                "e": "k=v",
                "f": "{}",
                "g": "\\t",
            },
            1.0,
        )
    ]


def test_numbers_timestamps_and_whitespace() -> None:
    body = (
        b"m NaN\n"
        b"m +Inf\n"
        b"m -Inf\n"
        b"m 1.757846125e+09\n"
        b"m 42 1712345678000\n"
        b"m\t3\t-5\n"
        b'm {a="b"} 5\n'
        b'm{a="b"}6\n'
        b"m{} 7 \n"
    )
    values = [s.value for s in scan({"m"}, body)["m"]]
    assert math.isnan(values[0])
    assert values[1:] == [math.inf, -math.inf, 1757846125.0, 42.0, 3.0, 5.0, 6.0, 7.0]


def test_crlf_first_line_and_no_trailing_newline() -> None:
    body = b'm{a="1"} 1\r\n# TYPE m gauge\r\nm{a="2"} 2\r\nm 3'
    assert scan({"m"}, body) == {
        "m": [Sample({"a": "1"}, 1.0), Sample({"a": "2"}, 2.0), Sample({}, 3.0)]
    }


def test_split_and_repeated_families_are_all_found() -> None:
    body = b"# TYPE m gauge\nm 1\n# TYPE n gauge\nn 2\n# TYPE m gauge\nm 3\nn 4\nm 5\n"
    got = scan({"m", "n"}, body)
    assert [s.value for s in got["m"]] == [1.0, 3.0, 5.0]
    assert [s.value for s in got["n"]] == [2.0, 4.0]


def test_openmetrics_eof_ends_the_page() -> None:
    assert scan({"m"}, b"m 1\n# EOF\nm 2\n") == {"m": [Sample({}, 1.0)]}
    assert scan({"m"}, b"m 1\r\n# EOF\r\nm 2\r\n") == {"m": [Sample({}, 1.0)]}
    assert scan({"m"}, b"# EOF\nm 2\n") == {}
    assert scan({"m"}, b"m 1\n# EOFX\nm 2\n# EOF") == {"m": [Sample({}, 1.0), Sample({}, 2.0)]}


def test_openmetrics_exemplar_is_ignored() -> None:
    body = b'm_bucket{le="1"} 3 # {trace_id="abc"} 0.5 1712345678.1\n'
    assert scan({"m_bucket"}, body) == {"m_bucket": [Sample({"le": "1"}, 3.0)]}


@pytest.mark.parametrize(
    "line",
    [
        b"m",
        b"m ",
        b'm{a="1"}',
        b"m abc",
        b"m 1_000",
        b"m 1 2 3",
        b"m 1 ts",
        b'm{a="1} 1',
        b"m{a=1} 1",
        b'm{a="1"b="2"} 1',
        b'm{a="1",a="2"} 1',
        b'm{1a="1"} 1',
        b'm{a="1"} 1}',
        b" m 1",
        b'm{a="\xff"',
    ],
)
def test_malformed_lines_are_skipped(line: bytes) -> None:
    body = b"m 1\n" + line + b"\nm 2\n"
    assert [s.value for s in scan({"m"}, body)["m"]] == [1.0, 2.0]


def test_invalid_utf8_in_a_label_value_is_replaced_not_fatal() -> None:
    assert scan({"m"}, b'm{a="\xff"} 1\n') == {"m": [Sample({"a": "\ufffd"}, 1.0)]}


def test_absent_names_have_no_key_and_empty_scanner_finds_nothing() -> None:
    assert scan({"absent"}, b"m 1\n") == {}
    assert scan((), b"m 1\n") == {}
    assert isinstance(scan({"m"}, b"m 1\n"), MetricSamples)


@pytest.mark.parametrize("name", ["", "1abc", "a-b", "a b", 'a"', "vllm:x{a}"])
def test_invalid_wanted_names_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="invalid metric name"):
        SelectiveScanner({name})


def test_names_property() -> None:
    assert SelectiveScanner(["a", "b", "a"]).names == frozenset({"a", "b"})


# --- property tests against the oracle -------------------------------------------------------

_NAME_START = "abcxyz_:"
_NAME_CHARS = "abcxyz_:0"
base_names = st.text(_NAME_START, min_size=1, max_size=3).flatmap(
    lambda head: st.text(_NAME_CHARS, max_size=4).map(lambda tail: head + tail)
)
label_names = st.sampled_from(["a", "b", "le", "engine", "model_name", "_x", "a1"])
label_values = st.text(
    st.one_of(
        st.sampled_from(list('\\"\n,={} \t#')),
        st.characters(blacklist_categories=("Cs",)),
    ),
    max_size=8,
)
go_numbers = st.sampled_from(["0", "1", "0.3125", "1.757846125e+09", "1e-05", "-2"])
special = st.sampled_from(["NaN", "+Inf", "-Inf"])
python_floats = st.floats(allow_nan=False, allow_infinity=False).map(repr)
values = st.one_of(go_numbers, special, python_floats, st.integers(-(10**12), 10**12).map(str))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@st.composite
def sample_lines(draw: st.DrawFn, name: str) -> str:
    keys = draw(st.lists(label_names, unique=True, max_size=3))
    sep = draw(st.sampled_from([" ", "\t"]))
    line = name
    if keys or draw(st.booleans()):
        pairs = ",".join(f'{k}="{_escape(draw(label_values))}"' for k in keys)
        line += "{" + pairs + "}"
    line += sep + draw(values)
    if draw(st.booleans()):
        line += sep + str(draw(st.integers(-(10**13), 10**13)))
    return line


@st.composite
def expositions(draw: st.DrawFn) -> tuple[str, set[str]]:
    """A page with prefix-related names, split/repeated families, histograms `_sum` first."""
    bases = draw(st.lists(base_names, min_size=1, max_size=4, unique=True))
    names = set(bases)
    families: list[list[str]] = []
    for _ in range(draw(st.integers(1, 7))):
        base = draw(st.sampled_from(bases))
        kind = draw(st.sampled_from(["gauge", "untyped", "counter", "histogram", "none"]))
        lines = []
        if kind != "none":
            doc = draw(st.sampled_from(["", f" mentions {base} 1", " a\\\\b \\n c"]))
            lines.append(f"# HELP {base}{doc}")
        if kind == "counter":
            name = base + "_total"
            lines.append(f"# TYPE {name} counter")
            names.add(name)
            lines += [draw(sample_lines(name)) for _ in range(draw(st.integers(0, 3)))]
        elif kind == "histogram":
            lines.append(f"# TYPE {base} histogram")
            parts = ["_sum", "_count", "_bucket", "_bucket"]
            for part in draw(st.permutations(parts)):
                lines.append(draw(sample_lines(base + part)))
                names.add(base + part)
        else:
            if kind != "none":
                lines.append(f"# TYPE {base} {kind}")
            related = st.sampled_from(
                [base, base + "_by_reason", base + "x", base + "0", base + ":y"]
            )
            for _ in range(draw(st.integers(0, 4))):
                name = draw(related)
                names.add(name)
                lines.append(draw(sample_lines(name)))
        families.append(lines)
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    body = newline.join(line for family in families for line in family)
    if draw(st.booleans()):
        body += newline + "# EOF" + newline + draw(sample_lines(bases[0]))
    if draw(st.booleans()):
        body += newline
    wanted = draw(st.sets(st.sampled_from(sorted(names | {"absent", bases[0][:1]}))))
    return body, wanted


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(expositions())
@example(('m{a="b"} 1\nm_x 2\n# TYPE m gauge\nm 3', {"m"}))
def test_generated_pages_match_oracle(case: tuple[str, set[str]]) -> None:
    text, wanted = case
    got = SelectiveScanner(wanted).scan(text.encode())
    assert normalise(got) == oracle(text.replace("\r\n", "\n"), wanted)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(expositions(), min_size=2, max_size=4))
def test_one_scanner_over_many_pages_matches_oracle(cases: list[tuple[str, set[str]]]) -> None:
    """A scanner remembers validated lines and label heads between pages (as it does between
    scrapes of a pod): every page, scanned again from those caches, still matches the oracle
    and a fresh scanner."""
    wanted = set().union(*(names for _, names in cases))
    warm = SelectiveScanner(wanted)
    for text, _ in cases * 2:
        body = text.encode()
        got = normalise(warm.scan(body))
        assert got == normalise(SelectiveScanner(wanted).scan(body))
        assert got == oracle(text.replace("\r\n", "\n"), wanted)


def test_remembered_heads_never_change_what_a_line_means() -> None:
    """Lines sharing a validated head (`m{a="b"}`) but ending differently: each is read by
    the full grammar, exactly as a scanner that never saw the head reads it."""
    warm = SelectiveScanner({"m"})
    warm.scan(b'm{a="b"} 1\nm 2\nm{a="b"}  3\n')
    body = (
        b'm{a="b"} 1_0\n'  # not a number
        b'm{a="b"} 3\t4\n'  # value and timestamp, tab-separated
        b'm{a="b"} 5 #x\n'  # not an exemplar
        b'm{a="b"} 6\r\n'  # CRLF
        b"m 7\r\r\n"  # one CR too many
        b"m\t8\n"
        b'm{a="b"}  9\n'
        b'm{a="b"} 10 \n'  # trailing space
        b'm{a="b"} \x0c11\n'
        b"m 12"
    )
    got = warm.scan(body)
    assert got == SelectiveScanner({"m"}).scan(body)
    assert [s.value for s in got["m"]] == [3.0, 6.0, 8.0, 9.0, 10.0, 11.0, 12.0]
    assert warm.scan(body) == got  # and again, from the remembered lines


@settings(max_examples=300)
@given(
    st.binary(max_size=300),
    st.sets(st.sampled_from(["m", "m_sum", "vllm:x", "a:b_c"]), min_size=1),
)
def test_arbitrary_bytes_never_raise(body: bytes, names: set[str]) -> None:
    got = SelectiveScanner(names).scan(body)
    assert set(got) <= names
    assert all(isinstance(s.value, float) for series in got.values() for s in series)


_REAL = vllm_page(VllmPage(lora=(Lora("a", "", 1, 5.0),), process_metrics=False))


@settings(max_examples=200)
@given(st.data())
def test_corrupted_real_pages_never_raise(data: st.DataObject) -> None:
    body = bytearray(_REAL)
    for _ in range(data.draw(st.integers(1, 20))):
        pos = data.draw(st.integers(0, len(body) - 1))
        body[pos : pos + data.draw(st.integers(0, 3))] = data.draw(st.binary(max_size=4))
    names = {"vllm:num_requests_waiting", "vllm:lora_requests_info", "vllm:cache_config_info"}
    got = SelectiveScanner(names).scan(bytes(body))
    assert set(got) <= names
