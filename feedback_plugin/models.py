"""The data model: one recorded turn, and the one place feedback is validated.

Every entry point (store, handler, tools, REST, CLI) calls the ``check_*``
functions here, so a score means the same thing everywhere.

>>> check_score(5)
5
>>> check_score(True)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
feedback_plugin.errors.InvalidFeedbackError: feedback_score must be an int ... got True (bool)
"""

from __future__ import annotations

import html
import json
import uuid
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from . import codec, ratings
from .errors import InvalidArgumentError, InvalidFeedbackError, InvalidIdError
from .ratings import MAX_SCORE, MIN_SCORE, NEGATIVE_SCORE, POSITIVE_SCORE

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_SCORE",
    "MAX_TEXT_LENGTH",
    "MIN_SCORE",
    "NEGATIVE_SCORE",
    "POSITIVE_SCORE",
    "Id",
    "SessionFeedback",
    "SessionQAEntry",
    "check_feedback",
    "check_id",
    "check_score",
    "check_text",
    "check_user",
    "utcnow",
]

# MIN_SCORE, MAX_SCORE, POSITIVE_SCORE (thumbs up), NEGATIVE_SCORE (thumbs down): from
# ratings.py, the one definition of the rating vocabulary; re-exported here.

Id = str | uuid.UUID
"""A session id, turn id: a string, or a :class:`uuid.UUID` that stands for its string form."""

MAX_ID_LENGTH = 1024
"""The longest session id, turn id or user accepted, in characters."""
MAX_TEXT_LENGTH = 4_000_000
"""The longest question, answer, context document, comment or correction, in characters."""


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


class SessionFeedback(BaseModel):
    """A whole conversation's rating (Helicone's session feedback).

    It is kept on the session's first turn (where Helicone keeps it, on the
    session's first request), so it is written atomically by the backend's
    ordinary ``update``, travels with exports, and lives and expires with
    that turn.

    >>> SessionFeedback(feedback_score=5).feedback_text is None
    True
    """

    model_config = ConfigDict(extra="ignore")

    feedback_score: int | None = None
    feedback_text: str | None = None
    feedback_time: datetime = Field(default_factory=utcnow)

    @field_validator("feedback_time")
    @classmethod
    def _as_utc(cls, value: datetime) -> datetime:
        return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


class SessionQAEntry(BaseModel):
    """One question/answer turn of a session, with its feedback.

    >>> e = SessionQAEntry(qa_id="q1", session_id="s1", question="Hi?", answer="Hello.")
    >>> (e.context, e.feedback_score, e.time.tzinfo is not None)
    ([], None, True)
    """

    model_config = ConfigDict(extra="ignore")

    qa_id: str
    session_id: str
    question: str
    answer: str
    context: list[str] = Field(default_factory=list)
    time: datetime = Field(default_factory=utcnow)
    feedback_text: str | None = None
    feedback_score: int | None = None
    feedback_time: datetime | None = None
    user_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    correction: str | None = None
    """Extension: a corrected answer given with the feedback (memory issue)."""
    memory_ids: list[str] = Field(default_factory=list)
    """The qa_ids of the remembered turns handed to the model for this turn (``[]``: none)."""
    memory_sessions: dict[str, str] = Field(default_factory=dict)
    """Where each of :attr:`memory_ids` lives (qa_id -> session_id), when it is known."""
    fed_outcomes: dict[str, str] = Field(default_factory=dict)
    """For a remembered turn: how the answers it fed were rated, answer qa_id ->
    ``"negative"`` or ``"positive"`` (reset when the turn itself is rated again)."""
    session_feedback: SessionFeedback | None = Field(default=None)
    """The conversation's rating; only ever on the session's first turn."""

    @field_validator("time", "feedback_time")
    @classmethod
    def _as_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        try:
            return value.astimezone(timezone.utc)
        except OverflowError as exc:  # e.g. year 1 at +01:00: before the first UTC instant
            raise InvalidArgumentError(
                f"{value.isoformat()} is outside the years UTC can hold"
            ) from exc

    def to_json(self) -> str:
        """The stored form: JSON text that is always valid UTF-8 (the layout: :mod:`.codec`).

        >>> SessionQAEntry.from_json(SessionQAEntry(qa_id="q", session_id="\\ud800",
        ...     question="", answer="").to_json()).session_id == "\\ud800"
        True
        """
        return codec.encode_entry(self)

    @classmethod
    def from_json(cls, text: str) -> SessionQAEntry:
        """Parse what :meth:`to_json` wrote."""
        return codec.decode_entry(cls, text)

    @property
    def is_rated(self) -> bool:
        """True when the turn has a score (:func:`feedback_plugin.ratings.is_rated`)."""
        return ratings.is_rated(self)

    @property
    def remembered(self) -> bool:
        """True when positive memory hands this turn back at the default ``min_score``
        (:func:`feedback_plugin.ratings.is_remembered`): what a feedback answer reports
        as "stored in memory"."""
        return ratings.is_remembered(self)

    @property
    def hurts(self) -> bool:
        """True when this memory keeps feeding disliked answers (:func:`.ratings.hurts`)."""
        return ratings.hurts(self)

    @property
    def best_answer(self) -> str:
        """The correction when there is one, else the answer (what memory hands back).

        >>> SessionQAEntry(qa_id="q", session_id="s", question="?", answer="a",
        ...     correction="b").best_answer
        'b'
        """
        return ratings.best_answer(self)

    def _repr_html_(self) -> str:
        """The turn as a two-column table in Jupyter; every value is HTML-escaped."""
        rows: list[tuple[str, object]] = [
            ("qa_id", self.qa_id),
            ("session_id", self.session_id),
            ("user_id", self.user_id),
            ("time", self.time.isoformat()),
            ("question", self.question),
            ("answer", self.answer),
            ("correction", self.correction),
            ("feedback_score", self.feedback_score),
            ("feedback_text", self.feedback_text),
            ("feedback_time", self.feedback_time and self.feedback_time.isoformat()),
            ("context", "\n---\n".join(self.context)),
            ("memory_ids", ", ".join(self.memory_ids)),
            ("metadata", json.dumps(self.metadata, ensure_ascii=False, default=str)),
        ]
        cell = "text-align:left;vertical-align:top;white-space:pre-wrap"
        body = "".join(
            f'<tr><th style="{cell}">{name}</th><td style="{cell}">'
            f"{html.escape('' if value is None else str(value))}</td></tr>"
            for name, value in rows
        )
        return f'<table class="feedback-plugin-entry">{body}</table>'


def check_id(value: object, name: str = "session_id") -> str:
    """Return ``value`` if it is a non-empty string, else raise :class:`InvalidIdError`.

    A :class:`uuid.UUID` stands for its string form.

    >>> check_id("../../x")
    '../../x'
    >>> check_id(uuid.UUID(int=1))
    '00000000-0000-0000-0000-000000000001'
    """
    if isinstance(value, uuid.UUID):
        return str(value)
    if not isinstance(value, str):
        raise InvalidIdError(f"{name} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidIdError(f"{name} must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidIdError(f"{name} is longer than {MAX_ID_LENGTH} characters")
    return value


def check_user(value: object) -> str | None:
    """``None`` (no owner) or a non-empty string."""
    if value is None:
        return None
    return check_id(value, "user")


def check_score(value: object) -> int | None:
    """``None`` or an ``int`` in 1..5; ``bool``, ``float`` and ``str`` are refused."""
    if value is None:
        return None
    if type(value) is not int or not MIN_SCORE <= value <= MAX_SCORE:
        raise InvalidFeedbackError(
            f"feedback_score must be an int from {MIN_SCORE} to {MAX_SCORE}, "
            f"got {value!r} ({type(value).__name__})"
        )
    return value


def check_text(value: object, name: str = "text") -> str:
    """Return ``value`` if it is a string of at most :data:`MAX_TEXT_LENGTH` characters.

    Raises :class:`InvalidFeedbackError` (a ``ValueError``) otherwise.
    """
    if not isinstance(value, str):
        raise InvalidFeedbackError(f"{name} must be a string, got {type(value).__name__}")
    if len(value) > MAX_TEXT_LENGTH:
        raise InvalidFeedbackError(f"{name} is longer than {MAX_TEXT_LENGTH} characters")
    return value


def _text(value: object, name: str) -> str | None:
    if value is None:
        return None
    check_text(value, name)
    assert isinstance(value, str)
    return value if value.strip() else None


def check_feedback(
    feedback_text: object, feedback_score: object, correction: object = None
) -> tuple[str | None, int | None, str | None]:
    """Validate one rating; return ``(text, score, correction)``, blank text read as none.

    >>> check_feedback("  ", 4)
    (None, 4, None)
    >>> check_feedback(None, None)
    Traceback (most recent call last):
    ...
    feedback_plugin.errors.InvalidFeedbackError: give feedback_text, feedback_score or both
    """
    text = _text(feedback_text, "feedback_text")
    fixed = _text(correction, "correction")
    score = check_score(feedback_score)
    if text is None and score is None and fixed is None:
        raise InvalidFeedbackError("give feedback_text, feedback_score or both")
    return text, score, fixed
