"""The rating vocabulary: what a score means, defined once.

Every module (store, memory, analytics, REST, the CLI, the chat UI adapters)
and both browser scripts (through ``GET /api/ratings`` and ``GET /api/info``)
take these words from here, so a liked turn is liked everywhere.

The scale
    A score is an ``int`` from :data:`MIN_SCORE` (1) to :data:`MAX_SCORE` (5).
    Thumbs up stores :data:`POSITIVE_SCORE` (5), thumbs down
    :data:`NEGATIVE_SCORE` (1).
**positive**
    the score is at least :data:`POSITIVE_MIN_SCORE` (4).
**negative**
    the score is at most :data:`NEGATIVE_MAX_SCORE` (2). A 3 is neither.
**rated**
    the turn has a score. A rating *is* a score: a comment alone or a
    correction alone does not make a turn rated (they are feedback, kept
    and shown, but they say nothing about how good the answer was). The
    analytics' rates and means are taken over rated turns; ``unrated`` in
    the REST API, the CLI and the analytics filters means "no score".
**remembered**
    positive memory hands the turn back: its score is at least ``min_score``
    (:data:`POSITIVE_MIN_SCORE` unless a caller asks otherwise), or it has a
    correction, which always counts as liked -- unless it *hurts*.
**hurts**
    a remembered turn that was handed to the model for at least
    :data:`HURT_MIN_NEGATIVE` (2) answers later rated negative, and for more
    negative answers than positive ones. It leaves memory until it is
    itself rated again, which resets its record (``fed_outcomes``).
**best answer**
    what memory hands back for a remembered turn: the correction when there
    is one, else the recorded answer.

Each predicate takes a :class:`~feedback_plugin.models.SessionQAEntry`, the
stored JSON object of one (a mapping, as analytics reads it), or, for the
score-only words, the score itself (``None`` for no score):

>>> is_positive(5), is_positive(3), is_negative(2), is_negative(None)
(True, False, True, False)
>>> is_remembered({"feedback_score": 3, "correction": "Use the reset link."})
True
>>> best_answer({"answer": "Hello.", "correction": None})
'Hello.'

This module imports nothing of the package: it is the bottom layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .models import SessionQAEntry

__all__ = [
    "HURT_MIN_NEGATIVE",
    "MAX_SCORE",
    "MIN_SCORE",
    "NEGATIVE_MAX_SCORE",
    "NEGATIVE_SCORE",
    "POSITIVE_MIN_SCORE",
    "POSITIVE_SCORE",
    "best_answer",
    "hurts",
    "is_negative",
    "is_positive",
    "is_rated",
    "is_remembered",
    "outcome",
    "thresholds",
]

MIN_SCORE: Final = 1
"""The lowest score."""
MAX_SCORE: Final = 5
"""The highest score."""
POSITIVE_SCORE: Final = 5
"""What thumbs up stores."""
NEGATIVE_SCORE: Final = 1
"""What thumbs down stores."""
POSITIVE_MIN_SCORE: Final = 4
"""A turn is positive when its score is at least this; memory's default ``min_score``."""
NEGATIVE_MAX_SCORE: Final = 2
"""A turn is negative when its score is at most this."""
HURT_MIN_NEGATIVE: Final = 2
"""A memory hurts once it has fed at least this many negative answers (and more
negative than positive ones)."""


def _score(turn: SessionQAEntry | Mapping[str, Any] | int | None) -> int | None:
    if turn is None or isinstance(turn, int):
        return turn
    if isinstance(turn, Mapping):
        score: int | None = turn.get("feedback_score")
        return score
    return turn.feedback_score


def _correction(turn: SessionQAEntry | Mapping[str, Any]) -> str | None:
    if isinstance(turn, Mapping):
        correction: str | None = turn.get("correction")
        return correction
    return turn.correction


def is_positive(entry_or_score: SessionQAEntry | Mapping[str, Any] | int | None) -> bool:
    """Whether the score is at least :data:`POSITIVE_MIN_SCORE` (no score: ``False``).

    >>> [is_positive(s) for s in (None, 1, 3, 4, 5)]
    [False, False, False, True, True]
    """
    score = _score(entry_or_score)
    return score is not None and score >= POSITIVE_MIN_SCORE


def is_negative(entry_or_score: SessionQAEntry | Mapping[str, Any] | int | None) -> bool:
    """Whether the score is at most :data:`NEGATIVE_MAX_SCORE` (no score: ``False``).

    >>> [is_negative(s) for s in (None, 1, 2, 3, 5)]
    [False, True, True, False, False]
    """
    score = _score(entry_or_score)
    return score is not None and score <= NEGATIVE_MAX_SCORE


def is_rated(entry_or_score: SessionQAEntry | Mapping[str, Any] | int | None) -> bool:
    """Whether the turn has a score; a comment or a correction alone does not rate it.

    >>> is_rated(3), is_rated(None), is_rated({"feedback_score": None, "feedback_text": "hm"})
    (True, False, False)
    """
    return _score(entry_or_score) is not None


def outcome(entry_or_score: SessionQAEntry | Mapping[str, Any] | int | None) -> str | None:
    """What an answer's rating says of the memories that fed it: ``"negative"``,
    ``"positive"``, or ``None`` (no score, or a 3).

    >>> outcome(1), outcome(5), outcome(3), outcome(None)
    ('negative', 'positive', None, None)
    """
    if is_negative(entry_or_score):
        return "negative"
    if is_positive(entry_or_score):
        return "positive"
    return None


def hurts(entry: SessionQAEntry | Mapping[str, Any]) -> bool:
    """Whether a memory has fed at least :data:`HURT_MIN_NEGATIVE` negative answers and
    more negative answers than positive ones.

    >>> hurts({"fed_outcomes": {"a1": "negative", "a2": "negative", "a3": "positive"}})
    True
    >>> hurts({"fed_outcomes": {"a1": "negative", "a2": "positive"}})
    False
    """
    fed = entry.get("fed_outcomes") if isinstance(entry, Mapping) else entry.fed_outcomes
    if not fed:
        return False
    negative = sum(1 for verdict in fed.values() if verdict == "negative")
    return negative >= HURT_MIN_NEGATIVE and negative > len(fed) - negative


def is_remembered(
    entry: SessionQAEntry | Mapping[str, Any], min_score: int = POSITIVE_MIN_SCORE
) -> bool:
    """Whether positive memory hands the turn back: score >= ``min_score``, or a correction.

    ``min_score=MIN_SCORE`` asks whether *some* threshold remembers it (a
    score or a correction): the turns a memory index holds.

    >>> is_remembered({"feedback_score": 4, "correction": None})
    True
    >>> is_remembered({"feedback_score": 4, "correction": None}, min_score=5)
    False
    """
    if _correction(entry) is None:
        score = _score(entry)
        if score is None or score < min_score:
            return False
    return not hurts(entry)


def best_answer(entry: SessionQAEntry | Mapping[str, Any]) -> str:
    """The correction when the turn has one, else the recorded answer."""
    correction = _correction(entry)
    if correction is not None:
        return correction
    if isinstance(entry, Mapping):
        return str(entry["answer"])
    return entry.answer


def thresholds() -> dict[str, int]:
    """The scale and the thresholds, as ``GET /api/ratings`` serves them to the browser.

    >>> thresholds()["positive_min_score"]
    4
    """
    return {
        "min_score": MIN_SCORE,
        "max_score": MAX_SCORE,
        "positive_score": POSITIVE_SCORE,
        "negative_score": NEGATIVE_SCORE,
        "positive_min_score": POSITIVE_MIN_SCORE,
        "negative_max_score": NEGATIVE_MAX_SCORE,
    }
