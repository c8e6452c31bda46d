"""Metrics: feedback figures per group (:func:`stats`) and the Wilson interval.

:func:`stats` groups turns by one metadata key (a prompt or model version)
and gives each group its counts, mean score, positive rate with its 95%
Wilson interval (:func:`wilson_interval`) and per-session figures, among them
the session-level positive rate: of the group's sessions rated as a whole
(Helicone's session feedback), the share rated positive, with its own
Wilson interval. It parses only the small tail of each payload
(:func:`feedback_plugin.codec.parse_light`).

Which sessions a group holds: every ``(user, session)`` with at least one
turn in the group (that passes the filters). A session whose turns carry
two values of the key counts in both groups; in an A/B test, where a
session stays on one variant, each session is in exactly one group.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Final

from typing_extensions import Unpack

from ..codec import parse_light, parse_light_time
from ..errors import InvalidArgumentError
from ..ratings import NEGATIVE_MAX_SCORE, POSITIVE_MIN_SCORE, is_positive, is_rated
from .filters import FilterArgs, _filter, _json_text
from .reading import _both, _checked, _payloads, _session_ratings, _SessionRatings
from .tables import _html_table, _pandas

if TYPE_CHECKING:
    from ..store import SessionStore

__all__ = ["GroupMetrics", "Metrics", "stats", "wilson_interval"]

Z_95: Final = 1.959963984540054
"""The standard normal quantile of a two-sided 95% interval."""


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``successes / n`` (95% by default).

    With no observations (``n == 0``) nothing is known: ``(0.0, 1.0)``.

    >>> [round(x, 4) for x in wilson_interval(3, 4)]
    [0.3006, 0.9544]
    """
    if n < 0 or not 0 <= successes <= n:
        raise InvalidArgumentError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


@dataclass(frozen=True)
class GroupMetrics:
    """The figures of one group (one value of the metadata key grouped by).

    ``rated`` counts turns with a score; ``mean_score``, ``positive_rate``
    and its 95% Wilson interval ``ci_low``..``ci_high`` are over those
    (``None`` / ``(0, 1)`` when there are none). Per session: ``sessions``
    counts the ``(user, session)`` pairs with a turn in the group,
    ``turns_per_session`` is ``turns / sessions`` and
    ``negative_session_share`` the share of those sessions with at least
    one negative turn in the group.

    Session ratings (a whole conversation rated): ``rated_sessions`` counts
    the group's sessions with a score of their own, ``positive_sessions``
    those rated positive; ``session_positive_rate`` is their ratio and
    ``session_ci_low``..``session_ci_high`` its 95% Wilson interval
    (``None`` / ``(0, 1)`` when no session is rated).
    """

    group: Any
    turns: int
    rated: int
    positive: int
    negative: int
    with_text: int
    mean_score: float | None
    positive_rate: float | None
    ci_low: float
    ci_high: float
    sessions: int
    turns_per_session: float
    negative_sessions: int
    negative_session_share: float | None
    rated_sessions: int = 0
    positive_sessions: int = 0
    session_positive_rate: float | None = None
    session_ci_low: float = 0.0
    session_ci_high: float = 1.0

    @property
    def label(self) -> str:
        """The group's value as text; ``(none)`` for turns without the key."""
        if self.group is None:
            return "(none)"
        return self.group if isinstance(self.group, str) else _json_text(self.group)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_METRIC_COLUMNS = tuple(f.name for f in fields(GroupMetrics))


class Metrics(Sequence[GroupMetrics]):
    """Figures per group (:class:`GroupMetrics`), groups sorted by value, ``(none)`` last."""

    def __init__(self, by: str | None, groups: Iterable[GroupMetrics]) -> None:
        self.by = by
        self._groups = list(groups)

    def __len__(self) -> int:
        return len(self._groups)

    def __getitem__(self, index: Any) -> Any:
        return self._groups[index]

    def group(self, value: Any) -> GroupMetrics:
        """The figures of the group whose value is ``value`` (``KeyError`` if none)."""
        for g in self._groups:
            if g.group == value or g.label == value:
                return g
        raise KeyError(value)

    def __repr__(self) -> str:
        inner = ", ".join(
            f"{g.label}: {g.turns} turns, {g.positive}/{g.rated} positive"
            + (
                f", sessions {g.positive_sessions}/{g.rated_sessions} positive"
                if g.rated_sessions
                else ""
            )
            for g in self._groups
        )
        return f"Metrics(by={self.by!r}, {inner})"

    def to_dicts(self) -> list[dict[str, Any]]:
        return [g.to_dict() for g in self._groups]

    def to_pandas(self) -> Any:
        """A ``pandas.DataFrame``, one row per group, indexed by the group's label.

        The index is named after the key grouped by; ``(none)`` labels the
        turns without it (the ``group`` column keeps the raw value).
        """
        pandas = _pandas()
        frame = pandas.DataFrame([g.to_dict() for g in self._groups], columns=list(_METRIC_COLUMNS))
        frame.index = pandas.Index([g.label for g in self._groups], name=self.by or "group")
        return frame

    def _repr_html_(self) -> str:
        columns = (self.by or "group", *_METRIC_COLUMNS[1:])
        rows = ([g.label, *(getattr(g, c) for c in _METRIC_COLUMNS[1:])] for g in self._groups)
        return _html_table(columns, rows, f"feedback by {self.by}" if self.by else "feedback")


class _GroupAcc:
    __slots__ = ("negative", "positive", "rated", "score_sum", "sessions", "turns", "with_text")

    def __init__(self) -> None:
        self.turns = self.rated = self.positive = self.negative = self.with_text = 0
        self.score_sum = 0
        self.sessions: dict[tuple[str | None, str], bool] = {}


def _group_key(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return _json_text(value)
    return value


def _group_order(value: Any) -> tuple[int, str]:
    if value is None:
        return 1, ""
    return 0, value if isinstance(value, str) else _json_text(value)


def stats(store: SessionStore, by: str | None = None, **filters: Unpack[FilterArgs]) -> Metrics:
    """Feedback figures per value of the metadata key ``by`` (one group if ``None``).

    Turns without the key (or with ``null``) form the group ``None``, shown
    as ``(none)``. Each group also has the session-level positive rate of
    its sessions rated as a whole, with its Wilson interval
    (:class:`GroupMetrics`); a session belongs to every group it has a
    (matching) turn in. One scan over the raw payloads (two with a
    ``session_feedback`` filter); memory grows with the number of sessions,
    not turns.
    """
    if by is not None and (not isinstance(by, str) or not by):
        raise InvalidArgumentError("by must be a non-empty metadata key or None")
    flt = _filter(filters)
    test = flt.predicate()
    groups: dict[Any, _GroupAcc] = {}
    light = parse_light_time if flt.since is not None or flt.until is not None else parse_light
    if flt.session_feedback is None:
        ratings, seen = _SessionRatings(), True  # gathered in this scan
    else:  # the filter needs every session's rating before its turns: a scan first
        ratings, seen = _session_ratings(store, flt), False
        test = _both(test, flt.session_predicate(ratings.scores()))
    for payload in _payloads(store, flt):
        raw = _checked(light, payload)
        if raw is None:
            continue
        if seen:
            ratings.see(raw, payload)  # before the test: the first turn may not pass it
        if test is not None and not test(raw):
            continue
        if by is None:
            value = None
        else:
            meta = raw.get("metadata")
            value = meta.get(by) if meta else None
            if value is not None and not isinstance(value, (str, int, float, bool)):
                value = _group_key(value)
        acc = groups.get(value)
        if acc is None:
            acc = groups[value] = _GroupAcc()
        acc.turns += 1
        negative = False
        score = raw.get("feedback_score")
        if score is not None:
            acc.rated += 1
            acc.score_sum += score
            if score >= POSITIVE_MIN_SCORE:
                acc.positive += 1
            elif score <= NEGATIVE_MAX_SCORE:
                acc.negative += 1
                negative = True
        if raw.get("feedback_text") is not None:
            acc.with_text += 1
        session = (raw.get("user_id"), raw["session_id"])
        if negative:
            acc.sessions[session] = True
        elif session not in acc.sessions:
            acc.sessions[session] = False
    out = []
    for value in sorted(groups, key=_group_order):
        acc = groups[value]
        low, high = wilson_interval(acc.positive, acc.rated)
        n_sessions = len(acc.sessions)
        negative_sessions = sum(acc.sessions.values())
        scores = [ratings.score(key) for key in acc.sessions]
        rated_sessions = sum(1 for score in scores if is_rated(score))
        positive_sessions = sum(1 for score in scores if is_positive(score))
        session_low, session_high = wilson_interval(positive_sessions, rated_sessions)
        out.append(
            GroupMetrics(
                group=value,
                turns=acc.turns,
                rated=acc.rated,
                positive=acc.positive,
                negative=acc.negative,
                with_text=acc.with_text,
                mean_score=acc.score_sum / acc.rated if acc.rated else None,
                positive_rate=acc.positive / acc.rated if acc.rated else None,
                ci_low=low,
                ci_high=high,
                sessions=n_sessions,
                turns_per_session=acc.turns / n_sessions,
                negative_sessions=negative_sessions,
                negative_session_share=negative_sessions / n_sessions,
                rated_sessions=rated_sessions,
                positive_sessions=positive_sessions,
                session_positive_rate=(
                    positive_sessions / rated_sessions if rated_sessions else None
                ),
                session_ci_low=session_low,
                session_ci_high=session_high,
            )
        )
    return Metrics(by, out)
