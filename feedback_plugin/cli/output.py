"""What the commands print: terminal-safe text, tables, JSON (never failing on an encoding)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import IO, Any

__all__ = ["Out", "cell", "clean", "fmt_num", "fmt_pct", "fmt_time", "fmt_user", "render_table"]

# -- output ------------------------------------------------------------------------------


def clean(text: str, *, lines: bool = False) -> str:
    """Text safe for a terminal: no control characters (escape sequences); lone
    surrogates, which UTF-8 cannot carry, are shown escaped (``\\ud800``)."""
    out = []
    for ch in text:
        if ch == "\n" and lines:
            out.append(ch)
        elif ch in "\t\n\r":
            out.append(" ")
        elif "\ud800" <= ch <= "\udfff":
            out.append(f"\\u{ord(ch):04x}")
        elif not ch.isprintable():
            out.append("\ufffd")
        else:
            out.append(ch)
    return "".join(out)


def cell(value: Any, width: int | None = None) -> str:
    text = clean("" if value is None else str(value))
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


class Out:
    """Writes to the current stdout / stderr, never failing on an encoding."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    @staticmethod
    def _write(stream: IO[str], text: str) -> None:
        try:
            stream.write(text)
        except UnicodeEncodeError:
            encoding = getattr(stream, "encoding", None) or "utf-8"
            stream.write(text.encode(encoding, "backslashreplace").decode(encoding))

    def print(self, text: str = "") -> None:
        self._write(sys.stdout, text + "\n")

    def note(self, text: str) -> None:
        self._write(sys.stderr, text + "\n")

    def json(self, value: Any) -> None:
        text = json.dumps(value, ensure_ascii=False, indent=2, default=str)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: escape them
            text = json.dumps(value, ensure_ascii=True, indent=2, default=str)
        self.print(text)


def fmt_time(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M")


def fmt_pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def fmt_num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def fmt_user(value: str | None) -> str:
    return "-" if value is None else cell(value, 20)
