"""Filters: which turns a query covers (:class:`Filter`, the ``**filters`` keywords).

A :class:`Filter` validates its fields once and compiles to a predicate over
raw entries (the dicts :mod:`feedback_plugin.codec` parses). The time and
metadata helpers here are the ones every query shares: times compare as
fixed-width UTC text, metadata values also by their JSON text.

One field is not a property of a turn: ``session_feedback`` asks for the
turns of sessions whose *own* rating (a whole conversation rated, kept on
its first turn) is of a kind. A turn alone cannot answer it, so
:meth:`Filter.predicate` leaves it out and :meth:`Filter.session_predicate`
tests it against the ratings a read has gathered (:mod:`.reading`).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Final, Literal

from typing_extensions import TypedDict

from ..codec import Raw
from ..errors import ArgumentTypeError, InvalidArgumentError
from ..models import SessionQAEntry, check_id, check_score, check_user
from ..ratings import (
    MAX_SCORE,
    MIN_SCORE,
    NEGATIVE_MAX_SCORE,
    POSITIVE_MIN_SCORE,
    hurts,
    is_negative,
    is_positive,
    is_rated,
)

__all__ = [
    "ALL_USERS",
    "FEEDBACK_KINDS",
    "FeedbackKind",
    "Filter",
    "FilterArgs",
    "SessionKey",
    "UserFilter",
]

FeedbackKind = Literal["positive", "negative", "rated", "unrated"]
FEEDBACK_KINDS: Final = ("positive", "negative", "rated", "unrated")


class _All(enum.Enum):
    USERS = "all users"

    def __repr__(self) -> str:
        return "ALL_USERS"


ALL_USERS: Final = _All.USERS
"""The default ``user`` of every query: turns of every user (and of none)."""

UserFilter = str | None | Literal[_All.USERS]

SessionKey = tuple[str | None, str]
"""A session of one user: ``(user_id, session_id)``."""


class FilterArgs(TypedDict, total=False):
    """The filter keywords every query takes (see :mod:`feedback_plugin.analytics`)."""

    feedback: FeedbackKind | None
    has_text: bool | None
    min_score: int | None
    max_score: int | None
    since: datetime | None
    until: datetime | None
    user: UserFilter
    session_id: str | None
    metadata: Mapping[str, Any] | None
    session_feedback: FeedbackKind | None
    hurting: bool | None


_SCORE_KIND: Final[dict[str, Callable[[int | None], bool]]] = {
    "positive": is_positive,
    "negative": is_negative,
    "rated": is_rated,
    "unrated": lambda score: not is_rated(score),
}
"""Each feedback kind as a test of one score (``None``: no score)."""


def _check_kind(name: str, value: object) -> None:
    if value is not None and value not in FEEDBACK_KINDS:
        raise InvalidArgumentError(
            f"{name} must be one of {', '.join(FEEDBACK_KINDS)} or None, got {value!r}"
        )


def _time_key(text: str) -> str:
    """A stored time as text that sorts like the time (``...SS.ffffffZ``)."""
    if text.endswith("Z"):
        if len(text) == 27:
            return text
        if len(text) == 20:  # pydantic leaves out a zero fraction
            return text[:19] + ".000000Z"
    return _key_of(_parse_time(text))


def _key_of(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: str) -> datetime:
    value = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    return _utc(value)


def _utc(value: datetime) -> datetime:
    """Naive datetimes are read as UTC, like the store does."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _meta_equal(actual: Any, wanted: Any) -> bool:
    if actual == wanted and type(actual) is not bool and type(wanted) is not bool:
        return True
    if (type(actual) is bool or type(wanted) is bool) and (
        type(actual) is type(wanted) and actual == wanted
    ):
        return True
    return isinstance(wanted, str) and not isinstance(actual, str) and _json_text(actual) == wanted


@dataclass(frozen=True)
class Filter:
    """Which turns a query covers; every field left at its default selects everything.

    Validates on construction (a bad value raises ``ValueError``) and
    compiles to a predicate over raw entries (:meth:`predicate`).

    ``session_feedback`` keeps the turns of sessions whose own rating (the
    whole conversation's, :meth:`SessionStore.add_session_feedback`) is
    ``"positive"``, ``"negative"``, ``"rated"`` or ``"unrated"`` (no rating,
    or a comment without a score), by :mod:`feedback_plugin.ratings`' words.
    ``hurting=True`` keeps the memories that hurt (:func:`.ratings.hurts`),
    ``False`` the other turns.
    """

    feedback: FeedbackKind | None = None
    has_text: bool | None = None
    min_score: int | None = None
    max_score: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    user: UserFilter = ALL_USERS
    session_id: str | None = None
    metadata: Mapping[str, Any] | None = None
    session_feedback: FeedbackKind | None = None
    hurting: bool | None = None

    def __post_init__(self) -> None:
        _check_kind("feedback", self.feedback)
        _check_kind("session_feedback", self.session_feedback)
        for name in ("has_text", "hurting"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise InvalidArgumentError(f"{name} must be True, False or None, got {value!r}")
        check_score(self.min_score)
        check_score(self.max_score)
        low, high = self.min_score, self.max_score
        if low is not None and high is not None and low > high:
            raise InvalidArgumentError(f"min_score {low} is above max_score {high}")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, datetime):
                    raise ArgumentTypeError(
                        f"{name} must be a datetime, got {type(value).__name__}"
                    )
                object.__setattr__(self, name, _utc(value))
        if self.user is not ALL_USERS:
            check_user(self.user)
        if self.session_id is not None:
            check_id(self.session_id)
        if self.metadata is not None:
            if not isinstance(self.metadata, Mapping) or not all(
                isinstance(k, str) for k in self.metadata
            ):
                raise ArgumentTypeError("metadata must be a mapping with string keys")
            object.__setattr__(self, "metadata", dict(self.metadata))

    @property
    def is_empty(self) -> bool:
        """True when the filter selects every turn."""
        return self.predicate() is None and self.session_feedback is None

    def predicate(self) -> Callable[[Raw], bool] | None:
        """A test over raw entries, or ``None`` when every entry passes.

        Everything but ``session_feedback``, which one turn cannot answer
        (:meth:`session_predicate`).
        """
        tests: list[Callable[[Raw], bool]] = []
        feedback, low, high = self.feedback, self.min_score, self.max_score
        if feedback == "positive":
            low = POSITIVE_MIN_SCORE if low is None else max(low, POSITIVE_MIN_SCORE)
        elif feedback == "negative":
            high = NEGATIVE_MAX_SCORE if high is None else min(high, NEGATIVE_MAX_SCORE)
        elif feedback == "rated":
            tests.append(is_rated)
        elif feedback == "unrated":
            tests.append(lambda d: not is_rated(d))
        if low is not None or high is not None:
            lo = MIN_SCORE if low is None else low
            hi = MAX_SCORE if high is None else high

            def in_range(d: Raw) -> bool:
                score = d.get("feedback_score")
                return score is not None and lo <= score <= hi

            tests.append(in_range)
        if self.has_text is not None:
            want = self.has_text
            tests.append(lambda d: (d.get("feedback_text") is not None) is want)
        if self.user is not ALL_USERS:
            user = self.user
            tests.append(lambda d: d.get("user_id") == user)
        if self.session_id is not None:
            session_id = self.session_id
            tests.append(lambda d: d.get("session_id") == session_id)
        if self.since is not None or self.until is not None:
            since = None if self.since is None else _key_of(self.since)
            until = None if self.until is None else _key_of(self.until)

            def in_window(d: Raw) -> bool:
                key = _time_key(d["time"])
                return (since is None or key >= since) and (until is None or key < until)

            tests.append(in_window)
        if self.metadata:
            wanted = list(self.metadata.items())

            def meta_match(d: Raw) -> bool:
                meta = d.get("metadata") or {}
                return all(k in meta and _meta_equal(meta[k], v) for k, v in wanted)

            tests.append(meta_match)
        if self.hurting is not None:
            hurting = self.hurting
            tests.append(lambda d: hurts(d) is hurting)
        if not tests:
            return None
        if len(tests) == 1:
            return tests[0]
        return lambda d: all(test(d) for test in tests)

    def session_predicate(
        self, scores: Mapping[SessionKey, int | None]
    ) -> Callable[[Raw], bool] | None:
        """The ``session_feedback`` test, given the score of each rated session
        (``scores``; a session missing from it has no rating), or ``None``."""
        if self.session_feedback is None:
            return None
        kind = _SCORE_KIND[self.session_feedback]
        return lambda d: kind(scores.get((d.get("user_id"), d["session_id"])))

    def session_matches(self, score: int | None) -> bool:
        """Whether a session whose own rating has ``score`` (``None``: none) passes
        ``session_feedback``."""
        return self.session_feedback is None or _SCORE_KIND[self.session_feedback](score)

    def matches(self, entry: SessionQAEntry) -> bool:
        """Whether one entry passes (for entries already in hand).

        ``session_feedback`` needs the session's rating, which one entry does
        not hold: such a filter raises ``ValueError`` here (query the store).
        """
        if self.session_feedback is not None:
            raise InvalidArgumentError(
                "session_feedback needs each session's rating: query the store "
                "(analytics.entries) instead of matching one entry"
            )
        test = self.predicate()
        return test is None or test(entry.model_dump(mode="json"))


def _filter(filters: FilterArgs) -> Filter:
    return Filter(**filters)
