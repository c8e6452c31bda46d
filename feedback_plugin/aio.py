"""The store's async methods: ``aget_session``, ``arecord``, ``aadd_feedback`` and the rest.

Each ``a*`` method shares its core with its sync twin (:mod:`.calls`: the
same checks, the same entry built, the same results and errors) and differs
only in how it waits for the backend: it awaits the backend's async half
(``Backend.aread``, ``aupdate``, ...). Redis answers those through
``redis.asyncio`` on the caller's event loop; diskcache (SQLite, which has no
async driver) runs each call in the library's small worker pool (:mod:`.pool`).

Read-your-writes holds as in the sync methods: a read first writes the
turns this process has queued -- in a worker thread, and only when the
write-behind queue is not idle, so a quiet store's reads never leave the loop
(on Redis). Queuing a turn (``arecord`` without ``wait``) is a list append
and never leaves the loop either.

:class:`~feedback_plugin.SessionStore` inherits these; they are documented
with their sync twins.
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from . import attribution, calls
from .errors import StoreError, TurnNotFoundError
from .pool import in_writer_thread

if TYPE_CHECKING:
    from .backends.base import Backend, Item, SessionKey
    from .models import Id, SessionQAEntry

__all__ = ["AsyncMethods"]

_T = TypeVar("_T")


class _Writer(Protocol):
    def put(self, item: Any) -> None: ...
    def idle(self) -> bool: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class _Store(Protocol):
    """What the async methods need of the store they are mixed into."""

    @property
    def backend(self) -> Backend: ...
    @property
    def location(self) -> str: ...
    @property
    def shown_location(self) -> str: ...
    @property
    def _writer(self) -> _Writer: ...

    def _waits(self, wait: bool | None) -> bool: ...
    def _flush_quietly(self, scope: tuple[str | None, str | None] | None = None) -> None: ...
    def _changed(
        self, change: calls.Change, found: bool, key: SessionKey, qa_id: str
    ) -> SessionQAEntry: ...
    def _scrub(self, key: SessionKey) -> None: ...
    async def arate(
        self,
        session_id: Id,
        qa_id: Id,
        feedback_text: str | None = None,
        feedback_score: int | None = None,
        *,
        user: str | None = None,
        correction: str | None = None,
    ) -> SessionQAEntry: ...
    async def aclear_rating(
        self, session_id: Id, qa_id: Id, *, user: str | None = None
    ) -> SessionQAEntry: ...
    async def aadd_feedback(
        self,
        session_id: Id,
        qa_id: Id,
        feedback_text: str | None = None,
        feedback_score: int | None = None,
        *,
        user: str | None = None,
        correction: str | None = None,
    ) -> bool: ...


async def _guard(store: _Store, what: str, work: Awaitable[_T]) -> _T:
    """Await ``work``; a backend failure becomes :class:`StoreError` (as ``_io`` does)."""
    try:
        return await work
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"{what} failed on {store.shown_location}: {calls.describe(exc)}") from exc


async def _written(store: _Store, scope: tuple[str | None, str | None] | None = None) -> None:
    """Read-your-writes: write what this process queued, off the loop, unless idle."""
    if not store._writer.idle():
        await in_writer_thread(store._flush_quietly, scope)


async def _answered(work: Awaitable[object]) -> bool:
    try:
        await work
    except (TurnNotFoundError, StoreError) as exc:
        return calls.refused(exc)
    return True


class AsyncMethods:
    """Async twins of :class:`~feedback_plugin.SessionStore`'s methods (a mixin)."""

    async def arecord(
        self: _Store,
        session_id: Id,
        question: str,
        answer: str,
        context: Iterable[str] = (),
        *,
        user: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        qa_id: Id | None = None,
        wait: bool | None = None,
        memory_ids: Iterable[Any] | None = None,
    ) -> SessionQAEntry:
        """:meth:`record`, awaited."""
        entry, item = calls.new_turn(
            session_id,
            question,
            answer,
            context,
            user,
            metadata,
            qa_id,
            calls.memory_refs(memory_ids),
        )
        if self._waits(wait):
            await _guard(self, "record", _write_now(self, [item]))
        else:
            self._writer.put(item)
        return entry

    async def aget_session(
        self: _Store, session_id: Id, *, user: str | None = None, last_n: int | None = None
    ) -> list[SessionQAEntry]:
        """:meth:`get_session`, awaited."""
        key, last_n = calls.session_args(session_id, user, last_n)
        if last_n == 0:
            return []

        async def read() -> list[str]:
            await _written(self, key)
            return await self.backend.aread(key, last_n)

        return calls.parse_all(await _guard(self, "get_session", read()))

    async def aget_entry(
        self: _Store, session_id: Id, qa_id: Id, *, user: str | None = None
    ) -> SessionQAEntry | None:
        """:meth:`get_entry`, awaited."""
        key, qa_id = calls.entry_args(session_id, qa_id, user)

        async def get() -> str | None:
            await _written(self, key)
            return await self.backend.aget(key, qa_id)

        payload = await _guard(self, "get_entry", get())
        return None if payload is None else calls.parse(payload)

    async def aget_many(
        self: _Store, refs: Sequence[tuple[Id, Id]], *, user: str | None = None
    ) -> list[SessionQAEntry | None]:
        """:meth:`get_many`, awaited."""
        user, keys = calls.many_args(refs, user)

        async def get() -> list[str | None]:
            await _written(self, (user, None))
            return await self.backend.aget_many(keys)

        payloads = await _guard(self, "get_many", get())
        return [None if p is None else calls.parse(p) for p in payloads]

    async def aadd_feedback(
        self: _Store,
        session_id: Id,
        qa_id: Id,
        feedback_text: str | None = None,
        feedback_score: int | None = None,
        *,
        user: str | None = None,
        correction: str | None = None,
    ) -> bool:
        """:meth:`add_feedback`, awaited."""
        return await _answered(
            self.arate(
                session_id, qa_id, feedback_text, feedback_score, user=user, correction=correction
            )
        )

    async def arate(
        self: _Store,
        session_id: Id,
        qa_id: Id,
        feedback_text: str | None = None,
        feedback_score: int | None = None,
        *,
        user: str | None = None,
        correction: str | None = None,
    ) -> SessionQAEntry:
        """:meth:`rate`, awaited."""
        changes = calls.rating(feedback_text, feedback_score, correction)
        return await _change(self, session_id, qa_id, user, changes)

    async def athumbs(
        self: _Store,
        session_id: Id,
        qa_id: Id,
        up: bool,
        feedback_text: str | None = None,
        *,
        user: str | None = None,
    ) -> bool:
        """:meth:`thumbs`, awaited."""
        score = calls.thumb(up)
        return await self.aadd_feedback(session_id, qa_id, feedback_text, score, user=user)

    async def adelete_feedback(
        self: _Store, session_id: Id, qa_id: Id, *, user: str | None = None
    ) -> bool:
        """:meth:`delete_feedback`, awaited."""
        return await _answered(self.aclear_rating(session_id, qa_id, user=user))

    async def aclear_rating(
        self: _Store, session_id: Id, qa_id: Id, *, user: str | None = None
    ) -> SessionQAEntry:
        """:meth:`clear_rating`, awaited."""
        return await _change(self, session_id, qa_id, user, dict(calls.CLEARED))

    async def alist_sessions(self: _Store, *, user: str | None = None) -> list[str]:
        """:meth:`list_sessions`, awaited."""
        from .models import check_user

        user = check_user(user)

        async def sessions() -> list[str]:
            await _written(self, (user, None))
            return await self.backend.asessions(user)

        return await _guard(self, "list_sessions", sessions())

    async def adelete_session(self: _Store, session_id: Id, *, user: str | None = None) -> int:
        """:meth:`delete_session`, awaited."""
        key, _ = calls.session_args(session_id, user, None)

        async def delete() -> int:
            await _written(self, key)  # a turn queued for it would bring the session back
            removed = await self.backend.adelete_session(key)
            if removed:
                await in_writer_thread(self._scrub, key)
            return removed

        return await _guard(self, "delete_session", delete())

    async def aflush(self: _Store) -> None:
        """:meth:`flush`, awaited."""
        if not self._writer.idle():
            await _guard(self, "flush", in_writer_thread(self._writer.flush))

    async def aclose(self: _Store) -> None:
        """:meth:`close`, awaited."""
        try:
            await _guard(self, "close", in_writer_thread(self._writer.close))
        finally:
            await self.backend.aclose()


async def _write_now(store: _Store, items: Sequence[Item]) -> None:
    if not store._writer.idle():
        await in_writer_thread(store._writer.flush)  # keep the order of turns already queued
    await store.backend.aappend(items)


async def _change(
    store: _Store, session_id: Id, qa_id: Id, user: str | None, changes: dict[str, Any]
) -> SessionQAEntry:
    key, qa_id = calls.entry_args(session_id, qa_id, user)
    change = calls.Change(changes)

    async def update() -> str | None:
        await _written(store)
        return await store.backend.aupdate(key, qa_id, change)

    new = await _guard(store, "feedback", update())
    entry = store._changed(change, change.stored(new) is not None, key, qa_id)
    if entry.memory_ids and attribution.charges(change.changes):
        await in_writer_thread(attribution.charge, store.backend, entry)
    return entry
