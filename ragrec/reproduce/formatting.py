"""Tables for people: the formatter that shows a few chosen columns of a results table, to be read.

The CSV files keep every column at full precision for machines (the book links them as
downloads); a page shows a :class:`PeopleTable` instead: chosen columns under readable headers,
AUC to 3 decimals, 95% intervals as ``0.741 [0.690, 0.789]``, speed-ups as ``1.86×``, times with
their unit, no index column, and "—" for a value that is absent, with a footnote saying why. It
renders as a narrow HTML table (text wraps, numbers do not) that fits the book's content column.

:func:`people_table` is the one formatter; :mod:`ragrec.reproduce.tables` holds the views each
chapter shows (which columns, in which order).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

MISSING = "—"


def _ratio(x: float) -> str:
    digits = 0 if abs(x) >= 100 else 1 if abs(x) >= 10 else 2  # 15,232× · 15.2× · 1.86×
    return f"{x:,.{digits}f}×"


def _milliseconds(x: float) -> str:
    digits = 3 if abs(x) < 1 else 2 if abs(x) < 10 else 1 if abs(x) < 100 else 0
    return f"{x:,.{digits}f} ms"


def _seconds(x: float) -> str:
    if abs(x) < 1:
        return _milliseconds(1000 * x)
    if abs(x) < 60:
        return f"{x:.1f} s"
    minutes, seconds = divmod(round(x), 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


def _signed(x: float) -> str:
    text = f"{x:+.3f}"
    return "0.000" if text in ("+0.000", "-0.000") else text  # no sign on what rounds to zero


def _timestamp(x: Any) -> str:
    stamp = pd.Timestamp(x)
    return (
        stamp.tz_convert("UTC").strftime("%Y-%m-%d %H:%M UTC")
        if stamp.tzinfo
        else stamp.strftime("%Y-%m-%d %H:%M")
    )


FORMATS: dict[str, Callable[[Any], str]] = {
    "text": str,
    "auc": lambda x: f"{float(x):.3f}",  # AUC, LogLoss, hit rates: 3 decimals
    "signed": lambda x: _signed(float(x)),  # differences
    "int": lambda x: f"{float(x):,.0f}",
    "ratio": lambda x: _ratio(float(x)),
    "rate": lambda x: f"{float(x):,.2f}",  # requests per second
    "ms": lambda x: _milliseconds(float(x)),
    "s": lambda x: _seconds(float(x)),
    "share": lambda x: f"{float(x):.1%}",
    "layer": lambda x: f"{float(x):.1f}",
    "tau": lambda x: f"{float(x):g}",
    "sci": lambda x: f"{float(x):.1e}",  # tiny differences
    "time": _timestamp,
}
"""How each kind of value reads; :class:`Column` names one of these."""


@dataclass(frozen=True)
class Column:
    """One column shown.

    Args:
        name: the results column holding the value (for an interval, the estimate).
        label: the header shown.
        kind (str or callable): a key of :data:`FORMATS`, or a function of the row giving one
            (for a column whose rows measure different things). (default: ``"text"``)
        low, high: the columns of the 95% interval, shown after the value as ``[a, b]``.
            (default: :obj:`None`)
        missing: why a value can be absent, for the footnote under the table. (default: a
            generic "no value")
    """

    name: str
    label: str
    kind: str | Callable[[pd.Series], str] = "text"
    low: str | None = None
    high: str | None = None
    missing: str = ""

    def kind_of(self, row: pd.Series) -> str:
        return self.kind(row) if callable(self.kind) else self.kind


def is_missing(value: Any) -> bool:
    """None, NaN, NA or an empty string."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def format_value(value: Any, kind: str) -> str | None:
    """``value`` as a person reads it; None when absent."""
    if is_missing(value):
        return None
    if kind not in FORMATS:
        raise KeyError(f"unknown column kind {kind!r}; choose one of {', '.join(FORMATS)}")
    if kind != "text" and isinstance(value, float) and not math.isfinite(value):
        return None
    return FORMATS[kind](value)


@dataclass
class PeopleTable:
    """A formatted table: string cells under their headers, the footnotes, and how it renders
    in a notebook (HTML for the book, plain text elsewhere)."""

    frame: pd.DataFrame
    numeric: frozenset[str] = frozenset()
    notes: list[str] = field(default_factory=list)
    caption: str = ""

    def _repr_html_(self) -> str:
        head = "".join(f"<th{_align(c, self.numeric)}>{html.escape(c)}</th>" for c in self.frame.columns)
        body = "".join(
            "<tr>"
            + "".join(
                f"<td{_align(c, self.numeric)}>{_cell_html(v, c in self.numeric)}</td>"
                for c, v in row.items()
            )
            + "</tr>"
            for _, row in self.frame.iterrows()
        )
        caption = f"<caption>{html.escape(self.caption)}</caption>" if self.caption else ""
        notes = "".join(f'<p class="ragrec-note">{html.escape(n)}</p>' for n in self.notes)
        return (
            f'<div class="ragrec-table-wrap"><table class="ragrec-table">{caption}'
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{notes}</div>"
        )

    def __repr__(self) -> str:
        text = self.frame.to_string(index=False)
        return "\n".join([self.caption, text, *self.notes] if self.caption else [text, *self.notes])


def _align(column: str, numeric: frozenset[str]) -> str:
    return ' class="num"' if column in numeric else ""


def _cell_html(value: str, numeric: bool) -> str:
    # a number keeps its unit and an interval stays whole, but an interval may wrap below its estimate
    def keep(text: str) -> str:
        return html.escape(text).replace(" ", "&nbsp;") if numeric else html.escape(text)

    if value.endswith("]") and " [" in value:
        estimate, interval = value.split(" [", 1)
        return f'{keep(estimate)} <span class="ci">[{keep(interval)}</span>'
    return keep(value)


def people_table(frame: pd.DataFrame, columns: Sequence[Column], *, caption: str = "") -> PeopleTable:
    """The chosen ``columns`` of ``frame``, formatted (see the module docstring).

    Args:
        frame: a results table (as read from its CSV).
        columns: what to show, in order.
        caption: a line above the table.
    """
    labels = [c.label for c in columns]
    if len(set(labels)) != len(labels):
        raise ValueError(f"column labels must differ (each is a header): {labels}")
    cells: dict[str, list[str]] = {label: [] for label in labels}
    why: dict[str, str] = {}
    for _, row in frame.iterrows():
        for column in columns:
            text = _cell(row, column)
            if text is None:
                absent = column.name not in frame.columns
                why[column.label] = "not in this results table" if absent else column.missing or "no value"
                text = MISSING
            cells[column.label].append(text)
    numeric = frozenset(c.label for c in columns if callable(c.kind) or c.kind not in ("text", "time"))
    notes = [f"{MISSING} {label}: {reason}." for label, reason in why.items()]
    return PeopleTable(pd.DataFrame(cells, columns=[c.label for c in columns]), numeric, notes, caption)


def _cell(row: pd.Series, column: Column) -> str | None:
    kind = column.kind_of(row)
    value = format_value(row.get(column.name), kind)
    if value is None or column.low is None or column.high is None:
        return value
    low, high = format_value(row.get(column.low), kind), format_value(row.get(column.high), kind)
    return value if low is None or high is None else f"{value} [{low}, {high}]"
