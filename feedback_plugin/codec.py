"""The stored JSON layout of one turn, and every encoder and parser of it, side by side.

The layout
----------
A backend stores each turn as one JSON object (text, always valid UTF-8)
with the fields of :class:`~feedback_plugin.models.SessionQAEntry` in this
order::

    {"qa_id":"…","session_id":"…","question":"…","answer":"…","context":["…"],
     "time":"2024-05-01T12:00:00.123456Z","feedback_text":null,"feedback_score":null,
     "feedback_time":null,"user_id":null,"metadata":{…},"correction":null}

  followed, only when they hold something, by the extensions
  (:data:`EXTENSIONS`): ``"memory_ids":["…"]``, ``"memory_sessions":{"…":"…"}``
  (memory attribution), ``"fed_outcomes":{"…":"negative"}`` and
  ``"session_feedback":{…}`` (the conversation's rating, on its first turn);

* compact (no spaces), non-ASCII text as UTF-8, times in ISO 8601 UTC with a
  ``Z`` (pydantic-core's format), ``null`` for what is not there;
* up to ``feedback_text`` every value is a string or a list of strings:
  inside them a quote is always escaped, so the first ``,"feedback_text":``
  of a payload *is* that key (what :func:`parse_light` relies on);
* text that UTF-8 cannot carry (a lone surrogate such as ``"\\ud800"``, from
  a Python caller) makes the whole payload ``json.dumps(..., ensure_ascii=True)``
  of the same object: ASCII with ``\\uXXXX`` escapes and ``json``'s default
  separators (``", "``, ``": "``). Parsers treat it as "any other layout";
* readers accept any JSON object with these fields, in any order (older
  stores, imports), and ignore unknown keys.

The codecs
----------
:func:`encode_entry` / :func:`decode_entry`
    The model's: :meth:`SessionQAEntry.to_json` and ``from_json`` delegate here.
:func:`encode_queued`
    The writer's fast encoder: it runs on the writer thread once per turn
    queued by ``SessionStore.record_trusted``, and builds the same text from
    the queued tuple with pydantic-core's encoder, never building a model.
:func:`loads`, :func:`parse_light`, :func:`parse_light_time`
    Analytics' fast parsers: :func:`loads` is ``json.loads`` without its
    wrapper; :func:`parse_light` parses only the tail from ``feedback_text``
    on (and ``session_id`` in place), so ``stats`` never parses questions,
    answers and context.

``tests/test_codec.py`` pins them to one another with one property test: for
any turn, the writer's text is the model's, the model's text parses back to
the same turn, and the light parse agrees with the full one.

This module imports nothing of the package at run time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from json.scanner import make_scanner
from typing import TYPE_CHECKING, Any, TypeVar, cast

from pydantic import BaseModel
from pydantic_core import PydanticSerializationError, to_jsonable_python
from pydantic_core import to_json as _to_json

if TYPE_CHECKING:
    from .backends.base import Item

__all__ = [
    "EXTENSIONS",
    "Fields",
    "Raw",
    "decode_entry",
    "encode_entry",
    "encode_queued",
    "loads",
    "parse_light",
    "parse_light_time",
    "value_at",
]

Raw = dict[str, Any]
"""One entry as the JSON object the backend stores."""

Fields = tuple[
    "str | None",
    str,
    "str | int",
    str,
    str,
    tuple[str, ...],
    float,
    dict[str, Any],
    tuple[tuple[str, str], ...],
]
"""A turn queued by :meth:`SessionStore.record_trusted`:
``(user, session_id, qa_id, question, answer, context, time, metadata, memory)``; an
``int`` ``qa_id`` is a UUID's integer (LangChain's run id), ``time`` a POSIX timestamp,
``memory`` the ``(session_id, qa_id)`` of each remembered turn handed to the model."""

_Model = TypeVar("_Model", bound=BaseModel)

# -- the model's codec ---------------------------------------------------------------------


def _escaped(value: object) -> str:
    """The layout's form for text UTF-8 cannot carry: ``json`` escapes lone surrogates
    (in keys too); pydantic-core formats what ``json`` cannot (times)."""
    return json.dumps(value, ensure_ascii=True, default=to_jsonable_python)


def _surrogate_key(value: object) -> bool:
    """Whether a dict key anywhere in ``value`` holds a lone surrogate."""
    if isinstance(value, dict):
        return any(
            (isinstance(k, str) and not k.isascii() and _surrogate(k)) or _surrogate_key(v)
            for k, v in value.items()
        )
    if isinstance(value, (list, tuple)):
        return any(_surrogate_key(v) for v in value)
    return False


def _surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


EXTENSIONS = ("memory_ids", "memory_sessions", "fed_outcomes", "session_feedback")
"""Fields after ``correction`` that the stored JSON leaves out while they are empty
(most turns): a turn without them is stored exactly as before they existed."""


def encode_entry(entry: BaseModel) -> str:
    """The stored text of a turn (:meth:`SessionQAEntry.to_json`)."""
    empty = {name for name in EXTENSIONS if not getattr(entry, name, None)}
    try:
        text = entry.model_dump_json(exclude=empty)
    except ValueError:  # a lone surrogate in a value: escape them all, as json does
        return _escaped(entry.model_dump(exclude=empty))
    # pydantic writes a lone surrogate in a dict *key* as U+FFFD, silently: look for
    # one only when the text holds a U+FFFD (a C scan; the usual text has none)
    if "\ufffd" in text and _surrogate_key(entry.model_dump()):
        return _escaped(entry.model_dump(exclude=empty))
    return text


def decode_entry(model: type[_Model], text: str) -> _Model:
    """Parse stored text into ``model`` (:meth:`SessionQAEntry.from_json`)."""
    try:
        return model.model_validate_json(text)
    except ValueError:
        return model.model_validate(json.loads(text))


# -- the writer's fast encoder ---------------------------------------------------------


def encode_queued(turn: Fields) -> Item:
    """The backend item of a turn queued by :meth:`SessionStore.record_trusted`.

    This runs on the writer thread once per turn, so it builds the JSON with
    pydantic-core's encoder directly instead of through a model: the same
    text :func:`encode_entry` writes (same key order and formats), at a third
    of the cost of the ``json`` module. Lone surrogates, which UTF-8 cannot
    carry, are escaped by ``json``, as :func:`encode_entry` does.
    """
    user, session_id, qa_id, question, answer, context, when, metadata, memory = turn
    if isinstance(qa_id, int):
        hex32 = f"{qa_id:032x}"
        qa_id = f"{hex32[:8]}-{hex32[8:12]}-{hex32[12:16]}-{hex32[16:20]}-{hex32[20:]}"
    fields = {
        "qa_id": qa_id,
        "session_id": session_id,
        "question": question,
        "answer": answer,
        "context": context,
        "time": datetime.fromtimestamp(when, timezone.utc),
        "feedback_text": None,
        "feedback_score": None,
        "feedback_time": None,
        "user_id": user,
        "metadata": metadata,
        "correction": None,
    }
    if memory:
        places: dict[str, str | None] = {}
        for sid, qa in memory:  # the first mention of a memory wins
            places.setdefault(qa, sid)
        fields["memory_ids"] = list(places)
        fields["memory_sessions"] = {qa: sid for qa, sid in places.items() if sid is not None}
    try:
        payload = _to_json(fields).decode()
    except PydanticSerializationError:  # lone surrogates (in values or keys)
        payload = _escaped(fields)
    return (user, session_id), qa_id, payload


# -- analytics' fast parsers -----------------------------------------------------------

_scan_once = cast(
    "Callable[[str, int], tuple[Any, int]]", make_scanner(cast(Any, json.JSONDecoder()))
)
"""The C scanner behind ``json.loads``, called without its wrapper's overhead."""


def loads(text: str) -> Raw:
    """``json.loads`` of a stored payload, about twice as fast; broken text still raises."""
    try:
        value, end = _scan_once(text, 0)
    except StopIteration:
        end = -1
    if end != len(text) or not isinstance(value, dict):
        checked: Raw = json.loads(text)  # the proper error, or an odd but valid text
        return checked
    found: Raw = value
    return found


def value_at(payload: str, index: int) -> Any:
    """The JSON value that starts at ``payload[index]``; ``ValueError`` if there is none."""
    try:
        return _scan_once(payload, index)[0]
    except StopIteration:
        raise ValueError(f"broken payload at {index}: {payload[:80]!r}") from None


_CANONICAL = '{"qa_id":'
_SESSION_AT = ',"session_id":'
_TIME_AT = ',"time":'
_FEEDBACK_AT = ',"feedback_text":'


def parse_light(payload: str) -> Raw:
    """The fields metrics and non-time filters read, without parsing question, answer, context.

    A payload in the layout above (compact, in field order) has, up to
    ``feedback_text``, only strings and lists of strings as values, inside
    which a quote is always escaped, so the first ``,"feedback_text":`` is
    that key: only the tail from there is parsed (feedback, user, metadata,
    correction), and ``session_id`` is decoded in place. Answers and
    retrieved context are the bulk of a turn; skipping them keeps ``stats``
    fast however long they are. Any other layout is parsed whole.
    """
    if payload.startswith(_CANONICAL):
        tail = payload.find(_FEEDBACK_AT)
        if tail > 0:
            head = payload.find(_SESSION_AT, 0, tail)
            if head > 0:
                raw = loads("{" + payload[tail + 1 :])
                raw["session_id"] = value_at(payload, head + len(_SESSION_AT))
                return raw
    return loads(payload)


def parse_light_time(payload: str) -> Raw:
    """:func:`parse_light` plus ``time``."""
    raw = parse_light(payload)
    if "time" not in raw:
        at = payload.find(_TIME_AT, 0, payload.find(_FEEDBACK_AT))
        raw["time"] = value_at(payload, at + len(_TIME_AT)) if at > 0 else loads(payload)["time"]
    return raw
