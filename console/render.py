"""rich renderables for the console commands: the endpoints table and one endpoint's detail.

Colour carries the health (red stale, yellow degraded, green fresh), and the same words are
printed too, so the table still reads on a terminal without colour or in a pipe.
"""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf import json_format
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from console.rows import (
    DEGRADED,
    FRESH,
    KV_HIGH,
    STALE,
    EndpointRow,
    count_states,
    format_age,
    format_count,
    format_kv,
    format_lora,
)
from datalayer.client import metric
from datalayer.v1 import datalayer_pb2 as pb

STATE_STYLES = {STALE: "bold red", DEGRADED: "yellow", FRESH: "green"}
ROW_STYLES = {STALE: "red", DEGRADED: "yellow", FRESH: ""}
COLUMNS = ("NAME", "ENGINE", "WAITING", "RUNNING", "KV", "LORA", "AGE", "STATE", "LAST ERROR")


def endpoints_table(rows: Sequence[EndpointRow], *, boxed: bool = False) -> Table:
    """One line per endpoint. `boxed=False` is kubectl-like plain columns, for `list`."""
    table = Table(
        box=box.SIMPLE_HEAD if boxed else None,
        pad_edge=False,
        show_edge=False,
        header_style="bold",
        expand=False,
    )
    for column in COLUMNS:
        # On a narrow terminal only the free-text columns give way (they wrap); the others
        # are short and are what an operator scans for.
        wraps = column in ("LORA", "LAST ERROR")
        table.add_column(
            column,
            justify="right" if column in ("WAITING", "RUNNING", "KV", "AGE") else "left",
            no_wrap=not wraps,
            overflow="fold",
            min_width=len(column) if not wraps else None,
        )
    for row in rows:
        high = row.kv is not None and row.kv >= KV_HIGH
        kv = Text(format_kv(row.kv), style="bold yellow" if high else "")
        table.add_row(
            row.name,
            row.engine,
            format_count(row.waiting),
            format_count(row.running),
            kv,
            format_lora(row),
            format_age(row.age),
            Text(row.state, style=STATE_STYLES[row.state]),
            row.last_error or "-",
            style=ROW_STYLES[row.state],
        )
    return table


def summary_line(rows: Sequence[EndpointRow]) -> Text:
    """`3 endpoints: 1 stale, 0 degraded, 2 fresh`, each count in its colour."""
    counts = count_states(rows)
    text = Text(f"{len(rows)} endpoints: ")
    parts = [(STALE, counts[STALE]), (DEGRADED, counts[DEGRADED]), (FRESH, counts[FRESH])]
    for i, (state, count) in enumerate(parts):
        if i:
            text.append(", ")
        text.append(f"{count} {state}", style=STATE_STYLES[state] if count else "")
    return text


def endpoint_detail(endpoint: pb.Endpoint, row: EndpointRow) -> RenderableType:
    """Everything the server holds about one endpoint, as label: value lines."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    metrics = endpoint.metrics
    lines: list[tuple[str, RenderableType]] = [
        ("name", endpoint.name),
        ("namespace", endpoint.namespace or "-"),
        ("address", row.address),
        ("engine", row.engine),
        ("labels", ", ".join(f"{k}={v}" for k, v in sorted(endpoint.labels.items())) or "-"),
        ("state", Text(row.state, style=STATE_STYLES[row.state])),
        ("last error", row.last_error or "-"),
        ("data age", format_age(row.age)),
        ("revision", str(endpoint.revision)),
        ("waiting", format_count(row.waiting)),
        ("running", format_count(row.running)),
        ("kv cache", format_kv(row.kv)),
        ("kv blocks", _kv_blocks(metrics)),
        ("lora", format_lora(row)),
    ]
    for key in sorted(metrics.custom):
        lines.append((f"custom {key}", f"{metrics.custom[key]:g}"))
    for key in sorted(endpoint.attributes):
        lines.append((f"attribute {key}", _attribute_text(endpoint.attributes[key])))
    for label, value in lines:
        grid.add_row(label, value)
    return Group(grid)


def _kv_blocks(metrics: pb.Metrics) -> str:
    """`N x M tokens`, with `-` for a side that is not known (absent), never 0."""
    blocks, size = metric(metrics, "cache_num_blocks"), metric(metrics, "cache_block_size")
    return f"{format_count(_int(blocks))} x {format_count(_int(size))} tokens"


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _attribute_text(value: pb.AttributeValue) -> str:
    kind = value.WhichOneof("kind")
    if kind == "number":
        return f"{value.number:g}"
    if kind == "text":
        return value.text
    if kind == "strings":
        return ", ".join(value.strings.values)
    if kind == "object":
        text = json_format.MessageToJson(value.object, indent=None)
        return text if len(text) <= 200 else text[:197] + "..."
    return "-"
