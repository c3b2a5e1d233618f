"""Read only the wanted series out of a Prometheus text page, without parsing the rest.

A vLLM page is 59-101 KB, almost all histogram buckets, and a scheduler needs
3-6 of its ~600 lines. A full parse costs milliseconds; this scanner costs
about ten microseconds, because an unwanted line costs nothing in Python: a native
multi-pattern search skips it.

How: one Aho-Corasick pass (`_Finder`, Rust through `ahocorasick_rs`) looks for
`\n` followed by a wanted name and a byte that may follow a name (`{`, a space,
a tab), or for `\n# EOF` (OpenMetrics' end, which ends the scan); only those
candidate lines reach Python. Matching after a newline (and at offset 0
separately) gives line-start anchoring for free; `HELP`/`TYPE` lines never match
because they start with `#`; a name that is a prefix of another
(`vllm:num_requests_waiting` vs `..._by_reason`) is told apart by the delimiter.

A candidate line is then checked against the full grammar of a sample line
(labels with escapes, value, optional timestamp and exemplar, CRLF). A line
of the plain form `head value` whose head (the name's labels and spacing) was
validated on an earlier page skips that check: its labels are looked up, and
only the value is read. A malformed line of a wanted name is skipped, as are
indented lines and Prometheus 3 quoted UTF-8 names, which no model server
writes.

The search pass is the floor of this design: ~0.12 µs per KB on this machine
whatever the number of names, where CPython's regex engine needs ~0.45 µs per KB
just to visit every newline (measured for issue 12 with pyahocorasick, google-re2
and hyperscan beside it; see bench/RESULTS.md).

Hostile pages. A scan runs on the event loop, so a page that costs a second
stalls every other endpoint and every RPC for that second; a cache that keeps
whatever a page writes grows the process without bound. So the Python work per
scan is capped, and a capped name is noted in the result's `caps` (extractors
turn it into a field error naming the cap):

- at most `MAX_SERIES_PER_NAME` candidate lines per wanted name per scan. On
  the next one the search goes on from there without the name (a finder without
  it is built once and remembered), so the rest of its lines, contiguous or not,
  cost only the native pass, like unwanted lines;
- a line longer than `MAX_LINE_BYTES` is refused before it is copied or parsed,
  and a label value longer than `MAX_LABEL_VALUE_BYTES` refuses its series;
- the remembered heads and lines are capped by bytes (`MAX_CACHE_BYTES`, an
  upper bound of key plus decoded text plus a per-entry overhead) as well as
  by count: past the cap they are dropped and relearnt.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Final, TypeAlias

from ahocorasick_rs import BytesAhoCorasick, MatchKind

from plugins.shared.prometheus.samples import MetricSamples, Sample

#: Classic (unquoted) metric names; UTF-8 quoted names are not supported.
METRIC_NAME_RE: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")

_LABEL_NAME = rb"[a-zA-Z_][a-zA-Z0-9_]*"
# A quoted label value: escapes are consumed as pairs, so `\"` never ends it.
# Written as an unrolled loop (runs of plain bytes, then one escape) because
# the regex engine runs `[^...]*` in one C loop but `(?:a|b)*` byte by byte.
_QUOTED = rb'"[^"\\\n]*(?:\\[^\n][^"\\\n]*)*"'
_PAIR = _LABEL_NAME + rb"[ \t]*=[ \t]*" + _QUOTED
_LABELS = rb"\{[ \t]*(?:" + _PAIR + rb"(?:[ \t]*,[ \t]*" + _PAIR + rb")*(?:[ \t]*,)?[ \t]*)?\}"
# Everything after the name: labels (group 2), value (3), timestamp (4), an
# OpenMetrics exemplar (ignored), then the end of the line (CRLF tolerated).
_REST = (
    rb"(?:[ \t]*(" + _LABELS + rb")[ \t]*|[ \t]+)"
    rb"([^ \t\r\n]+)"
    rb"(?:[ \t]+([^ \t\r\n#][^ \t\r\n]*))?"
    rb"(?:[ \t]+#[ \t][^\r\n]*)?"
    rb"[ \t]*\r?(?=\n|\Z)"
)
# OpenMetrics' end marker is put in the names' trie (cheaper than a second
# alternative tried at every line); `_EOF_LINE` then accepts it as a whole line.
_EOF_NAME: Final = b"# EOF"

# Label pairs inside an already validated label set, on the decoded text.
_PAIR_CAPTURE: Final = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\\n]|\\.)*)"')
_ESCAPE: Final = re.compile(r'\\[\\n"]')
_UNESCAPED: Final = {"\\\\": "\\", "\\n": "\n", '\\"': '"'}


def _unescape(match: re.Match[str]) -> str:
    return _UNESCAPED[match.group(0)]


_Trie: TypeAlias = "dict[int, _Trie]"
_END: Final = -1  # trie key marking "a name ends here"


def _trie_pattern(names: Iterable[bytes]) -> bytes:
    """A regex alternation factored by common prefixes, so a line costs one failed step.

    Plain `a|b|c` alternation retries every name at every newline; the trie
    rejects most lines on their first byte.
    """
    root: _Trie = {}
    for name in names:
        node = root
        for byte in name:
            node = node.setdefault(byte, {})
        node[_END] = {}

    def render(node: _Trie) -> bytes:
        branches = [
            re.escape(bytes([byte])) + render(child)
            for byte, child in sorted(node.items())
            if byte != _END
        ]
        optional = _END in node
        if not branches:
            return b""
        if len(branches) == 1 and not optional:
            return branches[0]
        group = b"(?:" + b"|".join(branches) + b")"
        return group + b"?" if optional else group

    return render(root)


def _parse_float(token: bytes) -> float | None:
    """Prometheus number syntax (Go's ParseFloat): `NaN`, `+Inf`, `1.5e+09`; no `_`."""
    if b"_" in token:
        return None
    try:
        return float(token)
    except ValueError:
        return None


def _parse_labels(raw: bytes) -> dict[str, str] | None:
    """Labels of a syntactically valid `{...}`; None for a duplicate name, as Prometheus."""
    text = raw.decode("utf-8", "replace")
    if "\\" not in text:
        # No escapes, so every `"` delimits a value: splitting on it is twice
        # as fast as a regex, and this is the path real pages take.
        parts = text.split('"')
        keys = parts[0:-1:2]
        values = parts[1::2]
        labels = {key.strip("{, \t="): value for key, value in zip(keys, values, strict=True)}
        return labels if len(labels) == len(keys) else None
    pairs = _PAIR_CAPTURE.findall(text)
    labels = {
        name: (_ESCAPE.sub(_unescape, value) if "\\" in value else value) for name, value in pairs
    }
    return labels if len(labels) == len(pairs) else None


class SelectiveScanner:
    """Extracts the samples of a fixed set of names from Prometheus text pages.

    Built once at start-up (compiling the names is the expensive part), then
    `scan` is called per page. `scan` never raises, whatever the bytes.

    Samples, and the label dicts in them, may be shared between the results
    of successive scans (a label set is decoded once, then looked up): treat
    a scan's result as read-only.

    >>> scanner = SelectiveScanner({"vllm:num_requests_waiting"})
    >>> page = b'vllm:num_requests_waiting{engine="0"} 3.0\\nvllm:num_requests_waiting_x 9\\n'
    >>> scanner.scan(page)
    {'vllm:num_requests_waiting': [Sample(labels={'engine': '0'}, value=3.0)]}
    """

    __slots__ = (
        "_at_start",
        "_capped",
        "_counts",
        "_finder",
        "_finders",
        "_head_bytes",
        "_heads",
        "_line_bytes",
        "_lines",
        "_names",
        "_str_names",
    )

    def __init__(self, names: Iterable[str]) -> None:
        wanted = frozenset(names)
        for name in wanted:
            if not METRIC_NAME_RE.fullmatch(name):
                raise ValueError(f"invalid metric name {name!r}")
        self._names = wanted
        #: Wanted name bytes -> name; the EOF marker maps to None.
        self._str_names: dict[bytes, str | None] = {name.encode(): name for name in wanted}
        self._str_names[_EOF_NAME] = None
        # The one pass over the page only finds candidate lines: a wanted name
        # (or `# EOF`) at a line start, followed by what may follow a name.
        # The grammar of the rest of the line is checked per candidate.
        # The page's first line has no newline before it: one regex match at offset 0.
        self._at_start = re.compile(_line_pattern(self._str_names))
        self._finder = _Finder(self._str_names)
        #: What precedes a line's value (`{labels}` plus spacing) -> its decoded labels,
        #: for heads already validated by the full grammar. Bounded by _MAX_HEADS.
        self._heads: dict[bytes, dict[str, str]] = {}
        #: The text after the name of lines already decoded -> their sample.
        self._lines: dict[bytes, Sample] = {}
        #: Upper bounds of the bytes each cache holds (see `cache_bytes`).
        self._head_bytes = 0
        self._line_bytes = 0
        #: Per scan: candidate lines seen per name, and the names that hit the series cap.
        self._counts: dict[str, int] = {}
        self._capped: set[str] = set()
        #: Finders without some capped names, built on first need.
        self._finders: dict[frozenset[str], _Finder] = {}

    @property
    def names(self) -> frozenset[str]:
        """The sample names this scanner extracts."""
        return self._names

    @property
    def cache_bytes(self) -> int:
        """An upper bound of the bytes the remembered heads and lines hold; <= MAX_CACHE_BYTES."""
        return self._head_bytes + self._line_bytes

    def scan(self, body: bytes) -> MetricSamples:
        """The samples of the wanted names in `body`, in page order; absent names have no key.

        Names that hit a cap are in the result's `caps`; their samples are incomplete.
        """
        out = MetricSamples()
        if not self._names:
            return out
        self._counts = {}
        if self._capped:
            self._capped = set()
        take = self._take
        first = self._at_start.match(body)
        if first is not None and take(out, body, first.group(1), first.end()) is False:
            return out  # `# EOF` first; the series cap cannot be hit on the first line
        finder = self._finder
        view = memoryview(body)
        size = len(body)
        pos = 0
        while pos < size:
            stop = pos + _CHUNK
            # A window reaches one pattern's length past its chunk, so a line that starts
            # in the chunk is found whole; one that starts past it is the next window's.
            window = body if pos == 0 and stop >= size else view[pos : stop + finder.longest]
            owners = finder.owners
            resume = stop
            for index, begin, end in finder.find(window):
                if begin >= _CHUNK:
                    break
                raw, delimiter = owners[index]
                verdict = take(out, body, raw, pos + end - delimiter)
                if verdict is None:
                    # The name just hit the series cap: search on from here without it.
                    finder = self._finder_without(frozenset(self._capped))
                    resume = pos + end
                    break
                if verdict is False:
                    return out  # `# EOF`
            pos = resume
        return out

    def _finder_without(self, dropped: frozenset[str]) -> _Finder:
        """The finder minus `dropped` names; built once per set (a few sets at most)."""
        finder = self._finders.get(dropped)
        if finder is None:
            if len(self._finders) >= _MAX_PATTERNS:
                self._finders.clear()
            kept = {raw: name for raw, name in self._str_names.items() if name not in dropped}
            finder = self._finders[dropped] = _Finder(kept)
        return finder

    def _take(self, out: MetricSamples, body: bytes, raw: bytes, start: int) -> bool | None:
        """Record the sample of the line of name `raw` whose rest begins at `start`, if it
        is well formed and within the caps.

        True to go on; False at `# EOF`; None when the line's name is over the series cap
        (the line is not taken, and the caller drops the name from later chunks).
        """
        name = self._str_names[raw]
        if name is None:
            return _EOF_LINE.match(body, start) is None
        counts = self._counts
        seen = counts.get(name, 0)
        if seen >= MAX_SERIES_PER_NAME:
            if name not in self._capped:
                out.note_cap(name, f"more than {MAX_SERIES_PER_NAME} series (cap hit)")
                self._capped.add(name)
            return None
        counts[name] = seen + 1
        end = body.find(b"\n", start)
        if end < 0:
            end = len(body)
        if end - start > MAX_LINE_BYTES:  # refused before it is copied or parsed
            out.note_cap(name, f"a series line longer than {MAX_LINE_BYTES} bytes (cap hit)")
            return True
        line = body[start:end]
        sample = self._lines.get(line)
        if sample is None:
            sample = self._decode(body, start, end, line)
            if sample is None:
                return True
            if sample is _LABEL_TOO_LONG:
                out.note_cap(
                    name, f"a label value longer than {MAX_LABEL_VALUE_BYTES} bytes (cap hit)"
                )
                return True
        samples = out.get(name)
        if samples is None:
            out[name] = [sample]
        else:
            samples.append(sample)
        return True

    def _decode(self, body: bytes, start: int, end: int, line: bytes) -> Sample | None:
        """The sample of a line not seen verbatim before (or None if malformed); remembered."""
        key = line
        if line[-1:] == b"\r":
            end -= 1
            line = line[:-1]
        # A line whose head (all but the last space-separated token) was validated
        # before is `head value`: only the value needs reading.
        head, space, token = line.rpartition(b" ")
        labels = self._heads.get(head) if space else None
        if labels is not None and token and b"\t" not in token and b"\r" not in token:
            value = _parse_float(token)
        else:
            labels, value = self._parse(body, start, end, head, token)
        if value is None or labels is None:
            return None
        if len(line) > MAX_LABEL_VALUE_BYTES and _too_long(labels):
            return _LABEL_TOO_LONG  # not remembered: it would only fill the cache
        sample = _new_sample(Sample, (labels, value))
        cost = 2 * len(key) + _ENTRY_BYTES
        if len(self._lines) >= _MAX_LINES or self.cache_bytes + cost > MAX_CACHE_BYTES:
            self._lines.clear()
            self._line_bytes = 0
            if self._head_bytes + cost > MAX_CACHE_BYTES:
                self._heads.clear()
                self._head_bytes = 0
        self._lines[key] = sample
        self._line_bytes += cost
        return sample

    def _parse(
        self, body: bytes, start: int, end: int, head: bytes, token: bytes
    ) -> tuple[dict[str, str] | None, float | None]:
        """The full line grammar; remembers the head when the line is plain `head value`."""
        rest = _REST_RE.match(body, start)
        if rest is None:
            return None, None
        labels_b, value_b, stamp_b = rest.group(1, 2, 3)
        value = _parse_float(value_b)
        if value is None or (stamp_b is not None and _parse_float(stamp_b) is None):
            return None, None
        labels: dict[str, str] | None = {}
        if labels_b is not None and len(labels_b) > 2:
            labels = _parse_labels(labels_b)
        if labels is None:
            return None, None
        if stamp_b is None and rest.end(2) == end and value_b == token:
            # The value is the line's last token and nothing else follows: the head
            # alone decides the labels from now on.
            cost = 2 * len(head) + _ENTRY_BYTES
            if len(self._heads) >= _MAX_HEADS or self.cache_bytes + cost > MAX_CACHE_BYTES:
                self._heads.clear()
                self._head_bytes = 0
                if self._line_bytes + cost > MAX_CACHE_BYTES:
                    self._lines.clear()
                    self._line_bytes = 0
            self._heads[head] = labels
            self._head_bytes += cost
        return labels, value


#: Candidate lines per wanted name per scan. A data-parallel pod has one series per engine
#: (and vLLM's LoRA info one per adapter combination still on the page): tens, not hundreds.
MAX_SERIES_PER_NAME: Final = 64
#: A wanted line longer than this is refused unread (a LoRA info line with 1,000 adapters is
#: ~20 KB; the store refuses lists over 1,000 items anyway).
MAX_LINE_BYTES: Final = 64 * 1024
#: A series with a label value longer than this is refused (the store keeps 4 KiB strings).
MAX_LABEL_VALUE_BYTES: Final = 16 * 1024
#: The remembered heads and lines together, by the upper bound `cache_bytes` counts.
MAX_CACHE_BYTES: Final = 8 * 1024 * 1024
#: What `cache_bytes` adds per entry for the objects around the bytes (dict slot, tuple, dict).
_ENTRY_BYTES: Final = 256
#: Patterns without capped names remembered per scanner.
_MAX_PATTERNS: Final = 32
#: Label-set heads remembered per scanner; a page has a few dozen, a fleet a few hundred.
_MAX_HEADS: Final = 4096
#: Whole lines remembered per scanner (most wanted lines repeat verbatim between scrapes).
_MAX_LINES: Final = 4096
_REST_RE: Final = re.compile(_REST)
_EOF_LINE: Final = re.compile(rb"[ \t]*\r?(?=\n|\Z)")
#: Building the tuple directly skips NamedTuple's Python-level __new__.
_new_sample: Final = tuple.__new__
#: `_decode`'s answer for a line refused by the label-value cap (compared by identity).
_LABEL_TOO_LONG: Final = Sample({}, float("nan"))


def _too_long(labels: dict[str, str]) -> bool:
    return any(len(value) > MAX_LABEL_VALUE_BYTES for value in labels.values())


#: Bytes searched per window: a real page (56-100 KB) is one window, searched in place; a
#: hostile page's capped names leave the search after the window in which they hit the cap.
_CHUNK: Final = 128 * 1024


class _Finder:
    """Where the wanted lines start: one Aho-Corasick pass (Rust, `ahocorasick_rs`) for
    `\n` + a wanted name + what may follow a name (`{`, a space, a tab), and `\n# EOF`.

    The pass costs ~0.12 µs per KB whatever the number of names (CPython's regex engine
    needs ~0.45 µs per KB just to visit every newline), and only the few wanted lines come
    back to Python. Leftmost-longest matching attributes a line to the longest wanted name
    it starts with; a longer unwanted name never matches, as its next byte is no delimiter.
    """

    __slots__ = ("find", "longest", "owners")

    def __init__(self, names: Mapping[bytes, str | None]) -> None:
        patterns: list[bytes] = []
        #: pattern index -> (the name's bytes, how many delimiter bytes end the pattern)
        self.owners: list[tuple[bytes, int]] = []
        for raw, name in names.items():
            for delimiter in (b"{", b" ", b"\t") if name is not None else (b"",):
                patterns.append(b"\n" + raw + delimiter)
                self.owners.append((raw, len(delimiter)))
        self.longest = max(len(p) for p in patterns)
        automaton = BytesAhoCorasick(patterns, matchkind=MatchKind.LeftmostLongest)
        #: window -> [(pattern index, start, end)], in order, not overlapping
        self.find: Callable[[bytes | memoryview], list[tuple[int, int, int]]] = (
            automaton.find_matches_as_indexes
        )


def _line_pattern(names: Iterable[bytes]) -> bytes:
    """A wanted name (or `# EOF`) at a line start, followed by what may follow a name."""
    return rb"(" + _trie_pattern(names) + rb")(?=[{ \t\r\n]|\Z)"
