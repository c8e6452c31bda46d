"""The checked form of each store call: the core a sync method and its async twin share.

:class:`~feedback_plugin.SessionStore`'s methods (``store.py``) and their
``a*`` twins (``aio.py``) differ only in how they wait for the backend; what
they check, build and return is defined here once: argument checks, the new
turn and its stored item, the fields a rating sets, the read-modify-write
handed to ``Backend.update``, and parsing what the backend returns (a damaged
entry is skipped and logged, never fatal).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic_core import to_json

from .backends.base import Item, SessionKey
from .errors import InvalidArgumentError, InvalidFeedbackError, StoreError, TurnNotFoundError
from .models import (
    NEGATIVE_SCORE,
    POSITIVE_SCORE,
    Id,
    SessionQAEntry,
    check_feedback,
    check_id,
    check_text,
    check_user,
    utcnow,
)

__all__ = [
    "CLEARED",
    "Change",
    "describe",
    "entry_args",
    "many_args",
    "memory_refs",
    "new_turn",
    "parse",
    "parse_all",
    "rating",
    "redacted",
    "refused",
    "session_args",
    "thumb",
]

log = logging.getLogger("feedback_plugin")

_MAX_TURNS = 2**31
"""No session holds more turns: a larger ``last_n`` reads them all."""

CLEARED: Mapping[str, None] = {"feedback_text": None, "feedback_score": None, "correction": None}


def session_args(
    session_id: Id, user: str | None, last_n: int | None
) -> tuple[SessionKey, int | None]:
    key = (check_user(user), check_id(session_id))
    if last_n is not None and (type(last_n) is not int or last_n < 0):
        raise InvalidArgumentError(f"last_n must be an int >= 0 or None, got {last_n!r}")
    if last_n is not None and last_n > _MAX_TURNS:
        last_n = None  # more than any session holds: all of them
    return key, last_n


def entry_args(session_id: Id, qa_id: Id, user: str | None) -> tuple[SessionKey, str]:
    session_id = check_id(session_id)
    qa_id = check_id(qa_id, "qa_id")
    return (check_user(user), session_id), qa_id


def many_args(
    refs: Sequence[tuple[Id, Id]], user: str | None
) -> tuple[str | None, list[tuple[SessionKey, str]]]:
    user = check_user(user)
    return user, [((user, check_id(s)), check_id(q, "qa_id")) for s, q in refs]


MemoryRef = tuple["str | None", str]
"""A remembered turn handed to the model: ``(session_id or None if unknown, qa_id)``."""


def memory_refs(values: Iterable[Any] | None) -> list[MemoryRef]:
    """The remembered turns named by ``values``, checked, first mention kept.

    Each value is a qa_id, a ``(session_id, qa_id)`` pair, a memory ``Document``
    (its ``metadata`` holds both, as :class:`PositiveMemoryRetriever` writes them)
    or a :class:`SessionQAEntry`.

    >>> memory_refs(["q1", ("s2", "q2"), "q1"])
    [(None, 'q1'), ('s2', 'q2')]
    """
    if values is None:
        return []
    if isinstance(values, (str, bytes)):
        raise InvalidArgumentError("memory_ids must be a list of ids, not one string")
    refs: dict[str, str | None] = {}
    sid: str | None
    qa: Any
    for value in values:
        if isinstance(value, SessionQAEntry):
            sid, qa = value.session_id, value.qa_id
        elif isinstance(value, (tuple, list)) and len(value) == 2:
            sid, qa = check_id(value[0]), value[1]
        elif hasattr(value, "metadata") and isinstance(value.metadata, Mapping):
            meta = value.metadata
            qa = meta.get("qa_id")
            sid = None if meta.get("session_id") is None else check_id(meta["session_id"])
        else:
            sid, qa = None, value
        qa = check_id(qa, "memory id")
        if refs.get(qa) is None:
            refs[qa] = sid
    return [(sid, qa) for qa, sid in refs.items()]


def new_turn(
    session_id: Id,
    question: str,
    answer: str,
    context: Iterable[str],
    user: str | None,
    metadata: Mapping[str, Any] | None,
    qa_id: Id | None,
    memory: Sequence[MemoryRef] = (),
) -> tuple[SessionQAEntry, Item]:
    """A checked new turn and the item that stores it."""
    session_id = check_id(session_id)
    user = check_user(user)
    qa_id = str(uuid.uuid4()) if qa_id is None else check_id(qa_id, "qa_id")
    entry = SessionQAEntry(
        qa_id=qa_id,
        session_id=session_id,
        question=check_text(question, "question"),
        answer=check_text(answer, "answer"),
        context=[check_text(doc, "context") for doc in context],
        user_id=user,
        metadata=dict(metadata or {}),
        memory_ids=[qa for _, qa in memory],
        memory_sessions={qa: sid for sid, qa in memory if sid is not None},
    )
    return entry, ((user, session_id), qa_id, entry.to_json())


def rating(text: str | None, score: int | None, correction: str | None) -> dict[str, Any]:
    """The fields a rating sets (only those given)."""
    text, score, correction = check_feedback(text, score, correction)
    changes: dict[str, Any] = {}
    if text is not None:
        changes["feedback_text"] = text
    if score is not None:
        changes["feedback_score"] = score
    if correction is not None:
        changes["correction"] = correction
    if "feedback_score" in changes or "correction" in changes:
        changes["fed_outcomes"] = {}  # rated again: the memory's record starts over
    return changes


def thumb(up: bool) -> int:
    if not isinstance(up, bool):
        raise InvalidFeedbackError(f"up must be True or False, got {up!r}")
    return POSITIVE_SCORE if up else NEGATIVE_SCORE


def refused(exc: TurnNotFoundError | StoreError) -> bool:
    """The boolean API's ``False`` (cognee's contract), the store's failure logged."""
    if isinstance(exc, StoreError):
        log.error("feedback_plugin: feedback not stored: %s", exc, exc_info=exc)
    return False


class Change:
    """The change a feedback call hands the backend's ``update`` (a
    :class:`~.backends.base.Change`): applies ``changes`` (stamped with the time) to a
    payload, or names them as ``fields`` for an engine that merges them itself."""

    __slots__ = ("changes", "result")

    def __init__(self, changes: dict[str, Any], *, stamp: bool = True) -> None:
        self.changes = {**changes, "feedback_time": utcnow()} if stamp else dict(changes)
        self.result: SessionQAEntry | None = None

    @property
    def fields(self) -> str:
        """The changed fields as one JSON object, in the stored layout's formats."""
        return to_json(self.changes).decode()

    def __call__(self, payload: str) -> str:
        changed = SessionQAEntry.from_json(payload).model_copy(update=self.changes)
        self.result = changed
        return changed.to_json()

    def stored(self, new: str | None) -> SessionQAEntry | None:
        """The entry as stored after ``update`` returned ``new``: the one this change
        built, or (an engine merged ``fields`` itself) ``new`` parsed."""
        if self.result is None and new is not None:
            self.result = parse(new)
        return self.result


class Outcome:
    """The change that tells a memory how an answer it fed was rated (a
    :class:`~.backends.base.Change` with no ``fields``: a nested key, so every engine
    reads, changes and writes it under its lock)."""

    __slots__ = ("answer", "result", "verdict")
    fields = None

    def __init__(self, answer: str, verdict: str | None) -> None:
        self.answer, self.verdict = answer, verdict
        self.result: SessionQAEntry | None = None

    def __call__(self, payload: str) -> str:
        entry = SessionQAEntry.from_json(payload)
        fed = dict(entry.fed_outcomes)
        if self.verdict is None:
            fed.pop(self.answer, None)
        else:
            fed[self.answer] = self.verdict
        self.result = entry.model_copy(update={"fed_outcomes": fed})
        return self.result.to_json()


def parse_all(payloads: Iterable[str]) -> list[SessionQAEntry]:
    return [e for e in map(parse, payloads) if e is not None]


def parse(payload: str) -> SessionQAEntry | None:
    """A stored entry, or ``None`` (logged) if it is not one: one damaged entry must
    not make its whole session, or a scan of the store, unreadable."""
    try:
        return SessionQAEntry.from_json(payload)
    except (ValueError, TypeError) as exc:
        log.error(
            "feedback_plugin: skipped a stored entry that is not a turn (%s): %.200r",
            describe(exc),
            payload,
        )
        return None


def redacted(location: str) -> str:
    """A store location fit for messages and logs: a URL's password as ``***``.

    >>> redacted("postgresql://app:s3cret@db:5432/feedback")
    'postgresql://app:***@db:5432/feedback'
    """
    scheme, sep, rest = location.partition("://")
    userinfo, at, host = rest.partition("@")
    if not sep or not at or ":" not in userinfo or "/" in userinfo:
        return location
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


def describe(exc: BaseException) -> str:
    """``Type: message`` of the error that caused a failure.

    SQLite ends a transaction by itself on some errors (a full disk); the
    ROLLBACK that follows then fails with "cannot rollback - no transaction
    is active", which would hide the real cause: report the cause.
    """
    cause = exc
    while "no transaction is active" in str(cause) and cause.__context__ is not None:
        cause = cause.__context__
    return f"{type(cause).__name__}: {cause}"
