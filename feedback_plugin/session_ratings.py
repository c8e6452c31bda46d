"""Session ratings: a whole conversation rated up or down (Helicone's session feedback).

Where it lives
    On the session's first turn, in its ``session_feedback`` field, as
    Helicone keeps it on a session's first request. So the rating is written
    by the backend's ordinary atomic ``update`` (no writer in any process can
    lose another's change), is scoped by user like the turns, goes out with
    an export and comes back with an import, and is read by analytics in the
    same scan as the turns. It also lives and expires with that turn: a
    ``max_entries`` that trims the first turn, or its ``ttl``, takes the
    rating with it.

The calls mirror turn feedback: the same validation (a 1-5 ``int`` score, a
comment, or both; only the fields given change), ``False`` for a session
that has no turn for this user or a store that is unavailable (logged), and
raising twins (:meth:`SessionRatings.rate_session`,
:meth:`SessionRatings.clear_session_rating`) that say which.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from . import calls, codec
from .aio import _answered, _guard, _written
from .aio import _Store as AsyncStore
from .errors import TurnNotFoundError
from .models import (
    Id,
    SessionFeedback,
    SessionQAEntry,
    check_feedback,
    check_id,
    check_user,
    utcnow,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from .backends.base import SessionKey

__all__ = ["SessionChange", "SessionRatings"]


class _Store(AsyncStore, Protocol):
    """What these methods need of the store they are mixed into."""

    def _io(self, what: str, fn: Callable[..., Any], *args: Any) -> Any: ...
    def _answered(self, change: Callable[..., object], *args: Any, **kwargs: Any) -> bool: ...


class SessionChange:
    """The change that sets (or, given ``None``, clears) a session's rating on its first
    turn: only the fields given change, and the time is stamped. No ``fields``: the rating
    is a nested object, so every engine reads, changes and writes it under its lock."""

    __slots__ = ("rating", "result")
    fields = None

    def __init__(self, rating: dict[str, Any] | None) -> None:
        self.rating = rating
        self.result: SessionFeedback | None = None

    def __call__(self, payload: str) -> str:
        entry = SessionQAEntry.from_json(payload)
        if self.rating is None:
            rating = None
        else:
            old = entry.session_feedback
            rating = SessionFeedback(**{**(old.model_dump() if old else {}), **self.rating})
            rating.feedback_time = utcnow()
        self.result = rating
        return entry.model_copy(update={"session_feedback": rating}).to_json()


def _rating(feedback_text: object, feedback_score: object) -> dict[str, Any]:
    text, score, _ = check_feedback(feedback_text, feedback_score)
    fields: dict[str, Any] = {}
    if text is not None:
        fields["feedback_text"] = text
    if score is not None:
        fields["feedback_score"] = score
    return fields


def _first_id(payload: str | None, key: SessionKey) -> str:
    if payload is None:
        raise TurnNotFoundError(f"no session {key[1]!r} for this user")
    return str(codec.loads(payload)["qa_id"])


class SessionRatings:
    """The store's session-rating methods (mixed into :class:`~feedback_plugin.SessionStore`)."""

    def add_session_feedback(
        self: _Store,
        session_id: Id,
        feedback_text: str | None = None,
        feedback_score: int | None = None,
        *,
        user: str | None = None,
    ) -> bool:
        """Rate a whole conversation: a comment, a 1–5 score, or both (only those given
        change). ``False`` if the session has no turn for this user, or the store is
        unavailable (logged); :class:`InvalidFeedbackError` for a bad rating."""
        changes = _rating(feedback_text, feedback_score)
        return self._answered(_set, self, session_id, user, changes)

    def session_thumbs(
        self: _Store,
        session_id: Id,
        up: bool,
        feedback_text: str | None = None,
        *,
        user: str | None = None,
    ) -> bool:
        """Thumbs up (score 5) or down (score 1) for the whole conversation."""
        changes = _rating(feedback_text, calls.thumb(up))
        return self._answered(_set, self, session_id, user, changes)

    def delete_session_feedback(self: _Store, session_id: Id, *, user: str | None = None) -> bool:
        """Clear the conversation's rating (its turns and their ratings stay)."""
        return self._answered(_set, self, session_id, user, None)

    def rate_session(
        self: _Store,
        session_id: Id,
        feedback_text: str | None = None,
        feedback_score: int | None = None,
        *,
        user: str | None = None,
    ) -> SessionFeedback:
        """:meth:`add_session_feedback` that says what happened: the rating as stored, or
        :class:`TurnNotFoundError` (no such session) or :class:`StoreError`."""
        rating = _set(self, session_id, user, _rating(feedback_text, feedback_score))
        assert rating is not None
        return rating

    def clear_session_rating(self: _Store, session_id: Id, *, user: str | None = None) -> None:
        """:meth:`delete_session_feedback` that raises as :meth:`rate_session` does."""
        _set(self, session_id, user, None)

    def get_session_feedback(
        self: _Store, session_id: Id, *, user: str | None = None
    ) -> SessionFeedback | None:
        """The conversation's rating (``feedback_score``, ``feedback_text``,
        ``feedback_time``), or ``None`` when it has none or the session does not exist.
        Raises :class:`StoreError` if the backend fails."""
        key = (check_user(user), check_id(session_id))

        def read() -> str | None:
            self._flush_quietly(key)
            return self.backend.first(key)

        return _read(self._io("get_session_feedback", read))

    # -- async twins --------------------------------------------------------------

    async def aadd_session_feedback(
        self: _Store,
        session_id: Id,
        feedback_text: str | None = None,
        feedback_score: int | None = None,
        *,
        user: str | None = None,
    ) -> bool:
        """:meth:`add_session_feedback`, awaited."""
        changes = _rating(feedback_text, feedback_score)
        return await _answered(_aset(self, session_id, user, changes))

    async def asession_thumbs(
        self: _Store,
        session_id: Id,
        up: bool,
        feedback_text: str | None = None,
        *,
        user: str | None = None,
    ) -> bool:
        """:meth:`session_thumbs`, awaited."""
        changes = _rating(feedback_text, calls.thumb(up))
        return await _answered(_aset(self, session_id, user, changes))

    async def adelete_session_feedback(
        self: _Store, session_id: Id, *, user: str | None = None
    ) -> bool:
        """:meth:`delete_session_feedback`, awaited."""
        return await _answered(_aset(self, session_id, user, None))

    async def arate_session(
        self: _Store,
        session_id: Id,
        feedback_text: str | None = None,
        feedback_score: int | None = None,
        *,
        user: str | None = None,
    ) -> SessionFeedback:
        """:meth:`rate_session`, awaited."""
        rating = await _aset(self, session_id, user, _rating(feedback_text, feedback_score))
        assert rating is not None
        return rating

    async def aclear_session_rating(
        self: _Store, session_id: Id, *, user: str | None = None
    ) -> None:
        """:meth:`clear_session_rating`, awaited."""
        await _aset(self, session_id, user, None)

    async def aget_session_feedback(
        self: _Store, session_id: Id, *, user: str | None = None
    ) -> SessionFeedback | None:
        """:meth:`get_session_feedback`, awaited."""
        key = (check_user(user), check_id(session_id))
        await _written(self, key)
        return _read(await _guard(self, "get_session_feedback", self.backend.afirst(key)))


def _read(payload: str | None) -> SessionFeedback | None:
    entry = None if payload is None else calls.parse(payload)
    return None if entry is None else entry.session_feedback


def _set(
    store: _Store, session_id: Id, user: str | None, rating: dict[str, Any] | None
) -> SessionFeedback | None:
    """Set or clear the rating on the session's first turn: one atomic ``update``."""
    key = (check_user(user), check_id(session_id))
    change = SessionChange(rating)

    def first() -> str | None:
        store._flush_quietly(key)  # a queued first turn must be there to hold it
        return store.backend.first(key)

    qa_id = _first_id(store._io("session feedback", first), key)
    if store._io("session feedback", store.backend.update, key, qa_id, change) is None:
        raise TurnNotFoundError(f"no session {key[1]!r} for this user")  # trimmed meanwhile
    return change.result


async def _aset(
    store: _Store, session_id: Id, user: str | None, rating: dict[str, Any] | None
) -> SessionFeedback | None:
    key = (check_user(user), check_id(session_id))
    change = SessionChange(rating)
    await _written(store, key)
    qa_id = _first_id(await _guard(store, "session feedback", store.backend.afirst(key)), key)
    if await _guard(store, "session feedback", store.backend.aupdate(key, qa_id, change)) is None:
        raise TurnNotFoundError(f"no session {key[1]!r} for this user")
    return change.result
