"""Reading the store: every query streams its turns through here.

Only the store's public raw reads are used (:meth:`SessionStore.scan_payloads`,
:meth:`SessionStore.read_payloads`, :meth:`SessionStore.list_sessions`), which
flush the write-behind queue first and raise :class:`StoreError` on failure.
Payloads stay JSON text until a filter needs them parsed; a damaged payload
is logged and skipped, never fatal to a report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from ..codec import Raw
from ..codec import loads as _loads
from .filters import ALL_USERS, Filter

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


def _scan_filtered(store: SessionStore, flt: Filter) -> Iterator[tuple[str, Raw]]:
    """``(payload, raw entry)`` of every turn that passes ``flt``, in the backend's order."""
    test = flt.predicate()
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
    test = flt.predicate()
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
