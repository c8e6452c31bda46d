"""Sessions: :func:`sessions` lists them with their figures (:class:`SessionSummary`).

A filter picks which sessions are listed (those with a matching turn); the
figures of a listed session cover all its turns. One pass over the store,
memory in proportion to the number of sessions. Each summary carries the
session's own rating (``session_score``, ``session_text``: a whole
conversation rated, kept on its first turn), and ``session_feedback=``
lists only the sessions whose rating is of that kind.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

from typing_extensions import Unpack

from ..errors import InvalidArgumentError
from ..ratings import is_negative, is_positive
from .filters import Filter, FilterArgs, _filter, _parse_time, _time_key
from .reading import _scan_filtered, _SessionRatings
from .tables import _html_table, _pandas

if TYPE_CHECKING:
    from ..store import SessionStore

__all__ = ["SessionSummary", "SessionTable", "sessions"]


@dataclass(frozen=True)
class SessionSummary:
    """One session of one user: its figures cover all its turns.

    ``matching`` counts the turns that passed the query's filters.
    ``session_score`` and ``session_text`` are the session's own rating (the
    whole conversation's; ``None`` when it has none).
    """

    user_id: str | None
    session_id: str
    turns: int
    rated: int
    positive: int
    negative: int
    with_text: int
    mean_score: float | None
    first_time: datetime
    last_time: datetime
    first_question: str
    matching: int
    session_score: int | None = None
    session_text: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO 8601 text."""
        out = asdict(self)
        out["first_time"] = self.first_time.isoformat()
        out["last_time"] = self.last_time.isoformat()
        return out


_SESSION_COLUMNS = tuple(f.name for f in fields(SessionSummary))


class SessionTable(Sequence[SessionSummary]):
    """Sessions, least recently active first: a table in Jupyter, a DataFrame with ``to_pandas``."""

    def __init__(self, rows: Iterable[SessionSummary]) -> None:
        self._rows = list(rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: Any) -> Any:
        return self._rows[index]

    def __repr__(self) -> str:
        return f"SessionTable({len(self)} sessions)"

    def to_dicts(self) -> list[dict[str, Any]]:
        return [row.to_dict() for row in self._rows]

    def to_pandas(self) -> Any:
        pandas = _pandas()
        return pandas.DataFrame([asdict(r) for r in self._rows], columns=list(_SESSION_COLUMNS))

    def _repr_html_(self) -> str:
        rows = ([getattr(r, c) for c in _SESSION_COLUMNS] for r in self._rows)
        return _html_table(_SESSION_COLUMNS, rows, f"{len(self)} sessions")


class _SessionAcc:
    __slots__ = (
        "first", "first_question", "last", "matching", "negative", "positive", "rated",
        "score_sum", "turns", "with_text",
    )  # fmt: skip

    def __init__(self, time_key: str, question: str) -> None:
        self.turns = self.rated = self.positive = self.negative = self.with_text = 0
        self.matching = self.score_sum = 0
        self.first = self.last = time_key
        self.first_question = question


def sessions(
    store: SessionStore, *, limit: int | None = None, **filters: Unpack[FilterArgs]
) -> SessionTable:
    """Sessions with at least one turn that passes the filters, least recently active first.

    Each :class:`SessionSummary` covers all the session's turns (``matching``
    counts those that passed), so ``sessions(store, feedback="negative")`` lists
    every session a user disliked something in, with its whole record, and
    ``sessions(store, session_feedback="negative")`` every conversation rated
    down as a whole. One scan; memory grows with the number of sessions, not
    turns. ``limit`` keeps the most recently active ones.
    """
    if limit is not None and (type(limit) is not int or limit < 0):
        raise InvalidArgumentError(f"limit must be an int >= 0 or None, got {limit!r}")
    flt = _filter(filters)
    test = flt.predicate()
    # A session listed by a filter on turns still gets its figures from all its
    # turns: scan everything of the user/session asked for, test each turn.
    scope = Filter(user=flt.user, session_id=flt.session_id)
    accs: dict[tuple[str | None, str], _SessionAcc] = {}
    ratings = _SessionRatings()
    for payload, raw in _scan_filtered(store, scope):
        ratings.see(raw, payload)
        key = (raw.get("user_id"), raw["session_id"])
        time_key = _time_key(raw["time"])
        acc = accs.get(key)
        if acc is None:
            acc = accs[key] = _SessionAcc(time_key, raw["question"])
        elif time_key < acc.first:
            acc.first, acc.first_question = time_key, raw["question"]
        if time_key > acc.last:
            acc.last = time_key
        acc.turns += 1
        score = raw.get("feedback_score")
        if score is not None:  # rated
            acc.rated += 1
            acc.score_sum += score
            if is_positive(score):
                acc.positive += 1
            elif is_negative(score):
                acc.negative += 1
        if raw.get("feedback_text") is not None:
            acc.with_text += 1
        if test is None or test(raw):
            acc.matching += 1
    rows = [
        SessionSummary(
            user_id=key[0],
            session_id=key[1],
            turns=acc.turns,
            rated=acc.rated,
            positive=acc.positive,
            negative=acc.negative,
            with_text=acc.with_text,
            mean_score=acc.score_sum / acc.rated if acc.rated else None,
            first_time=_parse_time(acc.first),
            last_time=_parse_time(acc.last),
            first_question=acc.first_question,
            matching=acc.matching,
            session_score=ratings.score(key),
            session_text=_text(ratings.rating(key)),
        )
        for key, acc in accs.items()
        if acc.matching and flt.session_matches(ratings.score(key))
    ]
    rows.sort(key=lambda r: (r.last_time, r.user_id or "", r.session_id))
    if limit is not None:
        rows = rows[len(rows) - limit :] if limit else []
    return SessionTable(rows)


def _text(rating: dict[str, Any] | None) -> str | None:
    text = None if rating is None else rating.get("feedback_text")
    return text if isinstance(text, str) else None
