"""Reading the store: every query streams its turns through here.

Only the store's public raw reads are used (:meth:`SessionStore.scan_payloads`,
:meth:`SessionStore.read_payloads`, :meth:`SessionStore.list_sessions`), which
flush the write-behind queue first and raise :class:`StoreError` on failure.
Payloads stay JSON text until a filter needs them parsed; a damaged payload
is logged and skipped, never fatal to a report.

Session ratings: a session's own rating sits on its first turn
(``session_feedback``), which a scan may meet after the session's other
turns. :class:`_SessionRatings` gathers them during a scan; a filter on
them (``session_feedback=``) costs one extra scan first
(:func:`_session_scores`), which parses only the payloads that hold a
session rating.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ..codec import Raw, parse_light_time
from ..codec import loads as _loads
from .filters import ALL_USERS, Filter, SessionKey, _time_key

if TYPE_CHECKING:
    from ..store import SessionStore

log = logging.getLogger("feedback_plugin")


def _checked(parse: Callable[[str], Raw], payload: str) -> Raw | None:
    """``parse(payload)``, or ``None`` (logged) for a damaged payload that is no turn:
    one such entry is skipped, as the store skips it, and never stops a report."""
    try:
        raw = parse(payload)
        if isinstance(raw, dict) and isinstance(raw.get("session_id"), str):
            score = raw.get("feedback_score")
            if score is None or type(score) is int:
                return raw
    except (ValueError, TypeError, KeyError):
        pass
    log.error("feedback_plugin: skipped a stored entry that is not a turn: %.200r", payload)
    return None


def _scan(store: SessionStore) -> Iterator[str]:
    """Every stored payload, after the write-behind queue is flushed; failures as StoreError."""
    for _key, payload in store.scan_payloads():
        yield payload


def _payloads(store: SessionStore, flt: Filter) -> Iterable[str]:
    """The payloads ``flt`` is answered from, unparsed and not yet tested.

    One session of one user is read directly (in recording order) instead of scanned.
    """
    if flt.session_id is not None and flt.user is not ALL_USERS:
        return store.read_payloads(flt.session_id, user=flt.user)
    return _scan(store)


class _SessionRatings:
    """The own rating of each session met in a scan: ``(user_id, session_id)`` ->
    the ``session_feedback`` object of the turn that carries it.

    The store keeps it on the session's first turn only; should an import
    have left several, the earliest turn's wins, as the store would read it.
    """

    __slots__ = ("_found",)

    def __init__(self) -> None:
        self._found: dict[SessionKey, tuple[str, dict[str, Any]]] = {}

    def see(self, raw: Raw, payload: str) -> None:
        """Note the session rating ``raw`` carries, if any (``payload``: its text, for
        the time a light parse left out)."""
        rating = raw.get("session_feedback")
        if not isinstance(rating, dict):
            return
        time = raw.get("time")
        if not isinstance(time, str):
            time = parse_light_time(payload)["time"]
        key = (raw.get("user_id"), raw["session_id"])
        when = _time_key(time)
        held = self._found.get(key)
        if held is None or when < held[0]:
            self._found[key] = (when, rating)

    def rating(self, key: SessionKey) -> dict[str, Any] | None:
        """The session's ``session_feedback`` object, or ``None``."""
        held = self._found.get(key)
        return None if held is None else held[1]

    def score(self, key: SessionKey) -> int | None:
        """The session's own score, or ``None`` (no rating, or a comment alone)."""
        rating = self.rating(key)
        score = None if rating is None else rating.get("feedback_score")
        return score if type(score) is int else None

    def scores(self) -> dict[SessionKey, int | None]:
        """Every rated session's score (a session missing has no rating)."""
        return {key: self.score(key) for key in self._found}


_HOLDS_RATING = '"session_feedback"'


def _session_ratings(store: SessionStore, flt: Filter) -> _SessionRatings:
    """The session ratings of the sessions ``flt``'s user and session cover: one scan
    that parses only the payloads holding a session rating."""
    found = _SessionRatings()
    scope = Filter(user=flt.user, session_id=flt.session_id)
    test = scope.predicate()
    for payload in _payloads(store, scope):
        if _HOLDS_RATING not in payload:  # a C substring search: most turns stop here
            continue
        raw = _checked(_loads, payload)
        if raw is not None and (test is None or test(raw)):
            found.see(raw, payload)
    return found


def _session_scores(store: SessionStore, flt: Filter) -> dict[SessionKey, int | None]:
    return _session_ratings(store, flt).scores()


def _test(store: SessionStore, flt: Filter) -> Callable[[Raw], bool] | None:
    """The whole test of ``flt`` over raw entries, ``session_feedback`` included (which
    costs a scan for the sessions' ratings first), or ``None`` when every entry passes."""
    turn = flt.predicate()
    if flt.session_feedback is None:
        return turn
    return _both(turn, flt.session_predicate(_session_scores(store, flt)))


def _both(
    first: Callable[[Raw], bool] | None, second: Callable[[Raw], bool] | None
) -> Callable[[Raw], bool] | None:
    """A test passing what both pass (``None``: no test)."""
    if first is None:
        return second
    if second is None:
        return first
    return lambda d: first(d) and second(d)


def _scan_filtered(store: SessionStore, flt: Filter) -> Iterator[tuple[str, Raw]]:
    """``(payload, raw entry)`` of every turn that passes ``flt``, in the backend's order."""
    test = _test(store, flt)
    for payload in _payloads(store, flt):
        raw = _checked(_loads, payload)
        if raw is not None and (test is None or test(raw)):
            yield payload, raw


def _ordered(store: SessionStore, flt: Filter) -> Iterator[tuple[str, Raw]]:
    """Like :func:`_scan_filtered`, but session by session, each in recording order.

    Users in sorted order (``None`` first), each user's sessions oldest first
    (``list_sessions`` order): importing the result rebuilds the same
    sessions in the same order. Costs one scan of the session keys (memory
    in proportion to the number of sessions, not turns) and one read per
    session (whose flush finds the queue empty).
    """
    if flt.user is not ALL_USERS and flt.session_id is not None:
        yield from _scan_filtered(store, flt)
        return
    found: set[tuple[str | None, str]] = set()
    if flt.user is ALL_USERS:
        for key, _payload in store.scan_payloads():
            if flt.session_id is None or key[1] == flt.session_id:
                found.add(key)
        users = sorted({user for user, _ in found}, key=lambda u: (u is not None, u or ""))
    else:
        users = [flt.user]
    test = _test(store, flt)
    for user in users:
        keys = [(user, name) for name in store.list_sessions(user=user)]
        if flt.user is ALL_USERS:
            listed = set(keys)
            keys = [k for k in keys if k in found]
            keys += sorted(k for k in found if k[0] == user and k not in listed)
        for owner, session_id in keys:
            for payload in store.read_payloads(session_id, user=owner):
                raw = _checked(_loads, payload)
                if raw is not None and (test is None or test(raw)):
                    yield payload, raw
