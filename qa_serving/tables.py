"""Markdown tables: the one writer behind the parity report, the quickstart summary and the benchmarks.

Example: ``markdown_table([{"a": 1.234}], [Column("a", "A", ".1f")])`` -> ``"| A |\\n|---:|\\n| 1.2 |"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Column:
    """One table column: ``key`` of the row dicts, its ``header``, a format spec or a callable."""

    key: str
    header: str
    fmt: str | Callable[[Any], str] = ""
    align: str = "right"  # right | left


def _cell(value: Any, fmt: str | Callable[[Any], str]) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if callable(fmt):
        return fmt(value)
    return format(value, fmt) if fmt else str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> str:
    """Rows as a markdown table; missing values and NaN print as ``—``."""
    head = "| " + " | ".join(c.header for c in columns) + " |"
    rule = "|" + "|".join("---:" if c.align == "right" else "---" for c in columns) + "|"
    body = ["| " + " | ".join(_cell(row.get(c.key), c.fmt) for c in columns) + " |" for row in rows]
    return "\n".join([head, rule, *body])


def table_rows(markdown: str) -> list[list[str]]:
    """Cells of a markdown table's body rows (for tests and for reading results back)."""
    lines = [ln for ln in markdown.strip().splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


def table_header(markdown: str) -> list[str]:
    first = next(ln for ln in markdown.strip().splitlines() if ln.startswith("|"))
    return [c.strip() for c in first.strip("|").split("|")]


def key_value_table(
    pairs: Sequence[tuple[Any, Any]] | Mapping[Any, Any], headers: tuple[str, str] = ("", "")
) -> str:
    """A two-column table of labels and values (a summary, a machine record).

    Example: ``key_value_table({"CPU": "Xeon"}, ("machine", ""))`` -> ``"| machine |  |\\n|---|---|\\n| CPU | Xeon |"``.
    """
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    columns = [Column("key", headers[0], align="left"), Column("value", headers[1], align="left")]
    return markdown_table([{"key": k, "value": v} for k, v in items], columns)
