"""JSON Lines: export turns (raw, chat or eval records) and import raw exports back.

A raw export is the stored JSON text, session by session in recording order,
and :func:`import_jsonl` rebuilds exactly those turns (checking a whole file
before writing). Chat and eval records are the turns users liked, shaped for
fine-tuning and evaluation. tqdm, when installed, shows progress.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import sys
from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any, Final, Literal, TypeVar

from pydantic import ValidationError
from typing_extensions import Unpack

from ..codec import Raw
from ..errors import ImportFormatError, InvalidArgumentError
from ..models import SessionQAEntry, check_id, check_score, check_user
from ..ratings import best_answer, is_remembered
from .filters import Filter, FilterArgs, _filter
from .reading import _ordered, _scan_filtered

if TYPE_CHECKING:
    from ..store import SessionStore

__all__ = [
    "EXPORT_FORMATS",
    "ExportFormat",
    "chat_records",
    "eval_records",
    "export_jsonl",
    "import_jsonl",
    "raw_records",
]

ExportFormat = Literal["raw", "chat", "eval"]
EXPORT_FORMATS: Final = ("raw", "chat", "eval")


_T = TypeVar("_T")


def _progress(items: Iterable[_T], enabled: bool | None, what: str) -> Iterable[_T]:
    """``items`` with a tqdm progress bar on stderr when tqdm is installed and wanted.

    ``enabled=None`` shows it when stderr is a terminal.
    """
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return items
    try:
        tqdm = importlib.import_module("tqdm.auto").tqdm
    except ImportError:
        return items
    bar: Iterable[_T] = tqdm(items, desc=what, unit=" turns", file=sys.stderr, leave=False)
    return bar


def raw_records(store: SessionStore, **filters: Unpack[FilterArgs]) -> Iterator[str]:
    """The stored JSON text of every matching turn, session by session in recording order.

    Exactly what :func:`import_jsonl` reads back.
    """
    for payload, _raw in _ordered(store, _filter(filters)):
        yield payload


def _chat(raw: Raw, system: str | None) -> dict[str, Any]:
    messages = [] if system is None else [{"role": "system", "content": system}]
    messages.append({"role": "user", "content": raw["question"]})
    messages.append({"role": "assistant", "content": best_answer(raw)})
    return {"messages": messages}


def chat_records(
    store: SessionStore, *, system: str | None = None, **filters: Unpack[FilterArgs]
) -> Iterator[dict[str, Any]]:
    """Chat fine-tuning records of the turns users liked: ``{"messages": [user, assistant]}``.

    A turn is taken when it is positive or carries a correction (as positive
    memory does); the assistant message is the correction when there is one,
    else the original answer. ``system`` prepends a system message.
    Streamed in the backend's scan order.
    """
    for _payload, raw in _scan_filtered(store, _filter(filters)):
        if is_remembered(raw):
            yield _chat(raw, system)


def _eval(raw: Raw) -> dict[str, Any]:
    corrected = raw.get("correction") is not None
    return {
        "inputs": {"question": raw["question"]},
        "outputs": {"answer": best_answer(raw)},
        "metadata": {
            "qa_id": raw["qa_id"],
            "session_id": raw["session_id"],
            "user_id": raw.get("user_id"),
            "time": raw["time"],
            "reference": "correction" if corrected else "answer",
            "original_answer": raw["answer"],
            "feedback_score": raw.get("feedback_score"),
            "feedback_text": raw.get("feedback_text"),
            "context": raw.get("context") or [],
            "run_metadata": raw.get("metadata") or {},
        },
    }


def eval_records(store: SessionStore, **filters: Unpack[FilterArgs]) -> Iterator[dict[str, Any]]:
    """Evaluation examples with reference answers (LangSmith's inputs / outputs / metadata).

    The same turns as :func:`chat_records`; the reference answer is the
    correction when there is one, else the liked answer. ``metadata`` says
    which (``reference``) and keeps the original answer, rating, context and
    run metadata.
    """
    for _payload, raw in _scan_filtered(store, _filter(filters)):
        if is_remembered(raw):
            yield _eval(raw)


def _lines(store: SessionStore, fmt: str, flt: Filter, system: str | None) -> Iterator[str]:
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    if fmt == "raw":
        for payload, _raw in _ordered(store, flt):
            yield payload
        return
    for _payload, raw in _scan_filtered(store, flt):
        if is_remembered(raw):
            yield dumps(_chat(raw, system) if fmt == "chat" else _eval(raw))


def export_jsonl(
    store: SessionStore,
    out: str | os.PathLike[str] | IO[str],
    format: ExportFormat = "raw",
    *,
    system: str | None = None,
    progress: bool | None = None,
    **filters: Unpack[FilterArgs],
) -> int:
    """Write matching turns as JSON Lines to a path or text file; return the lines written.

    ``format``: ``"raw"`` (the stored entries, for :func:`import_jsonl`),
    ``"chat"`` (:func:`chat_records`) or ``"eval"`` (:func:`eval_records`).
    A raw export comes out session by session, each in recording order
    (so an import rebuilds the same sessions); the others in the backend's
    scan order, which is cheaper. ``progress``
    shows a tqdm bar on stderr (``None``: when stderr is a terminal).
    """
    if format not in EXPORT_FORMATS:
        raise InvalidArgumentError(
            f"format must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}"
        )
    lines = _lines(store, format, _filter(filters), system)
    written = 0
    if isinstance(out, (str, os.PathLike)):
        with open(out, "w", encoding="utf-8", newline="\n") as fp:
            for line in _progress(lines, progress, f"export {format}"):
                fp.write(line + "\n")
                written += 1
    else:
        for line in _progress(lines, progress, f"export {format}"):
            out.write(line + "\n")
            written += 1
    return written


# -- import --------------------------------------------------------------------------------


def _parse_line(line: str, where: str) -> SessionQAEntry:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ImportFormatError(f"{where}: not JSON ({exc.msg})") from None
    except RecursionError:
        raise ImportFormatError(f"{where}: JSON nested too deeply") from None
    if not isinstance(data, dict):
        raise ImportFormatError(f"{where}: not a raw entry (a JSON {type(data).__name__})")
    missing = [k for k in ("qa_id", "session_id", "question", "answer") if k not in data]
    if missing:
        hint = (
            " (a chat or eval export cannot be imported)"
            if "messages" in data or ("inputs" in data)
            else ""
        )
        raise ImportFormatError(f"{where}: not a raw entry, missing {', '.join(missing)}{hint}")
    try:
        # Before validation: the model would coerce "5", 5.0 and true into scores.
        check_score(data.get("feedback_score"))
        entry = SessionQAEntry.model_validate(data)
        check_id(entry.session_id)
        check_id(entry.qa_id, "qa_id")
        check_user(entry.user_id)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = ".".join(str(p) for p in error["loc"])
        raise ImportFormatError(f"{where}: {loc}: {error['msg']}") from None
    except (ValueError, OverflowError) as exc:  # OverflowError: a time moved past year 1..9999
        raise ImportFormatError(f"{where}: {exc}") from None
    except RecursionError:
        raise ImportFormatError(f"{where}: JSON nested too deeply") from None
    return entry


def _decoded(lines: Iterable[str | bytes], name: str) -> Iterator[tuple[int, str]]:
    """Number and text of each line; bytes must be UTF-8 (a BOM on the first line is dropped)."""
    for number, line in enumerate(lines, 1):
        if isinstance(line, str):
            yield number, line
            continue
        try:
            yield number, line.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise ImportFormatError(
                f"{name}, line {number}: not UTF-8 text (byte 0x{line[exc.start]:02x} at "
                f"column {exc.start + 1}); convert the file, e.g. iconv -f latin1 -t utf-8"
            ) from None


def _parse(fp: IO[str] | IO[bytes], name: str) -> Iterator[SessionQAEntry]:
    for number, line in _decoded(fp, name):
        if line.strip():
            yield _parse_line(line, f"{name}, line {number}")


def import_jsonl(
    store: SessionStore,
    source: str | os.PathLike[str] | IO[str] | IO[bytes],
    *,
    batch_size: int = 1000,
    progress: bool | None = None,
) -> int:
    """Import a raw export (:func:`export_jsonl`, ``format="raw"``); return the turns imported.

    Every field comes back exactly (``qa_id``, times, feedback, correction,
    metadata, user). A file (or any seekable source) is checked whole before
    anything is written, so a bad line (:class:`ImportFormatError`, naming the
    line) changes nothing; from a pipe, batches before the bad line stay.
    A line must be UTF-8 text (a binary source is decoded line by line, so
    the error names the line) and its ``feedback_score`` an int from 1 to 5
    or null, as everywhere else (``"5"``, ``5.0`` and ``true`` are refused).

    Turns whose ``qa_id`` already exists in their session are replaced in
    place, so importing the same file twice changes nothing. The same goes
    within one file: a ``qa_id`` repeated in one session (of one user) is one
    turn, with the later line's fields at the earlier line's place. The count
    returned is of distinct turns, which is what the store holds afterwards.
    """
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        with open(source, "rb") as fp:
            return _import(store, fp, name, batch_size, progress)
    return _import(store, source, getattr(source, "name", "<input>"), batch_size, progress)


def _import(
    store: SessionStore,
    fp: IO[str] | IO[bytes],
    name: str,
    batch_size: int,
    progress: bool | None,
) -> int:
    seekable = False
    with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
        seekable = fp.seekable()
    if seekable:
        start = fp.tell()
        for _entry in _parse(fp, name):
            pass
        fp.seek(start)
    turns: set[tuple[str | None, str, str]] = set()

    def counted(entries: Iterable[SessionQAEntry]) -> Iterator[SessionQAEntry]:
        for entry in entries:
            turns.add((entry.user_id, entry.session_id, entry.qa_id))
            yield entry

    entries_in = _progress(_parse(fp, name), progress, "import")
    store.import_entries(counted(entries_in), batch_size=batch_size)
    return len(turns)
