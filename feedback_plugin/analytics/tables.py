"""Result tables for notebooks: HTML rendering, ``to_pandas()``, and :class:`EntryTable`.

Every table of the package renders through :func:`_html_table` (all text
escaped) and converts to pandas through :func:`_pandas`, which imports
pandas only when called (it is in the ``analytics`` extra, never needed at
import time).
"""

from __future__ import annotations

import html
import importlib
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from ..models import SessionQAEntry

__all__ = ["EntryTable", "fed_counts"]

_EXTRA_HINT = "pip install 'feedback-plugin[analytics]'"

_CELL = "text-align:left;vertical-align:top;white-space:pre-wrap"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _show(value: Any, width: int = 200) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, (dict, list)):
        value = json.dumps(value, ensure_ascii=False, default=str)
    return _clip(str(value), width)


def _html_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], caption: str = "") -> str:
    """An HTML table; every header and cell is escaped."""
    head = "".join(f'<th style="{_CELL}">{html.escape(c)}</th>' for c in columns)
    body = "".join(
        "<tr>" + "".join(f'<td style="{_CELL}">{html.escape(_show(v))}</td>' for v in row) + "</tr>"
        for row in rows
    )
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return (
        f'<table class="feedback-plugin">{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _pandas() -> Any:
    try:
        return importlib.import_module("pandas")  # no stubs needed: used as Any
    except ImportError as exc:
        raise ImportError(f"to_pandas() needs pandas: {_EXTRA_HINT}") from exc


_ENTRY_COLUMNS = (
    "time", "user_id", "session_id", "qa_id", "question", "answer",
    "feedback_score", "feedback_text", "correction", "metadata",
)  # fmt: skip
_FED_COLUMNS = ("fed_negative", "fed_positive")


def fed_counts(entry: SessionQAEntry | Mapping[str, Any]) -> tuple[int, int]:
    """``(negative, positive)``: how many answers this memory fed were rated each way
    (its ``fed_outcomes``)."""
    fed = entry.get("fed_outcomes") if isinstance(entry, Mapping) else entry.fed_outcomes
    if not fed:
        return 0, 0
    verdicts = list(fed.values())
    return verdicts.count("negative"), verdicts.count("positive")


def _cell(entry: SessionQAEntry, column: str) -> Any:
    if column == "fed_negative":
        return fed_counts(entry)[0]
    if column == "fed_positive":
        return fed_counts(entry)[1]
    return getattr(entry, column)


class EntryTable(Sequence[SessionQAEntry]):
    """A list of turns in hand: a table in Jupyter, a DataFrame with :meth:`to_pandas`.

    The HTML table adds a ``memory_ids`` column when a turn was answered with
    remembered turns, and ``fed_negative`` / ``fed_positive`` (how the answers
    a memory fed were rated) when a turn is a memory that fed rated answers.
    """

    def __init__(self, entries: Iterable[SessionQAEntry], *, more: bool = False) -> None:
        self._entries = list(entries)
        self.more = more
        """True when the query had more turns than this table holds."""

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index: Any) -> Any:
        return self._entries[index]

    def __repr__(self) -> str:
        return f"EntryTable({len(self)} turns{', more not shown' if self.more else ''})"

    def to_list(self) -> list[SessionQAEntry]:
        return list(self._entries)

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame``, one row per turn, one column per field, plus
        ``fed_negative`` and ``fed_positive`` (counted from ``fed_outcomes``)."""
        return _entries_frame(self._entries)

    def _repr_html_(self) -> str:
        columns: tuple[str, ...] = _ENTRY_COLUMNS
        if any(e.memory_ids for e in self._entries):
            columns += ("memory_ids",)
        if any(e.fed_outcomes for e in self._entries):
            columns += _FED_COLUMNS
        rows = ([_cell(e, c) for c in columns] for e in self._entries)
        caption = f"{len(self)} turns" + (" (first ones; more not shown)" if self.more else "")
        return _html_table(columns, rows, caption)


def _entries_frame(entries: Iterable[SessionQAEntry]) -> Any:
    pandas = _pandas()
    columns = [*SessionQAEntry.model_fields, *_FED_COLUMNS]
    rows = []
    for e in entries:
        row = e.model_dump()
        row["fed_negative"], row["fed_positive"] = fed_counts(e)
        rows.append(row)
    return pandas.DataFrame(rows, columns=columns)
