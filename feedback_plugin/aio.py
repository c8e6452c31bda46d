"""The store's async methods: ``aget_session``, ``arecord``, ``aadd_feedback`` and the rest.

Each ``a*`` method is its sync twin run in a worker thread of the library's
own small pool (:data:`WORKERS` threads, the caller's context carried
along), so an async app -- FastAPI, LangGraph, Chainlit -- never blocks its
event loop on SQLite or a Redis round trip; the sync method is the one core
both share. Few threads on purpose: the store's work holds the GIL between
I/O calls, and a crowd of worker threads would take it from the event loop.
Writes keep their guarantees (the backend's transactions serialise them),
and reads see what the same process wrote before (read-your-writes).

:class:`~feedback_plugin.SessionStore` inherits these; they are documented
with their sync twins.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from .models import Id, SessionQAEntry

__all__ = ["WORKERS", "AsyncMethods"]

WORKERS = 2
"""Threads that run the store's async calls (shared by every store of the process)."""

_T = TypeVar("_T")
_pool: ThreadPoolExecutor | None = None


async def _in_thread(fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
    """``fn(*args, **kwargs)`` in the library's pool, with the caller's context."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="feedback-plugin-async")
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_pool, call)


class _Sync(Protocol):
    """The sync methods the async ones run (what the mixin needs of its class)."""

    @property
    def record(self) -> Callable[..., SessionQAEntry]: ...
    @property
    def get_session(self) -> Callable[..., list[SessionQAEntry]]: ...
    @property
    def get_entry(self) -> Callable[..., SessionQAEntry | None]: ...
    @property
    def get_many(self) -> Callable[..., list[SessionQAEntry | None]]: ...
    @property
    def add_feedback(self) -> Callable[..., bool]: ...
    @property
    def rate(self) -> Callable[..., SessionQAEntry]: ...
    @property
    def thumbs(self) -> Callable[..., bool]: ...
    @property
    def delete_feedback(self) -> Callable[..., bool]: ...
    @property
    def clear_rating(self) -> Callable[..., SessionQAEntry]: ...
    @property
    def list_sessions(self) -> Callable[..., list[str]]: ...
    @property
    def delete_session(self) -> Callable[..., int]: ...
    @property
    def flush(self) -> Callable[[], None]: ...
    @property
    def close(self) -> Callable[[], None]: ...


class AsyncMethods:
    """Async twins of :class:`~feedback_plugin.SessionStore`'s methods (a mixin)."""

    async def arecord(
        self: _Sync,
        session_id: Id,
        question: str,
        answer: str,
        context: Iterable[str] = (),
        *,
        user: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        qa_id: Id | None = None,
        wait: bool | None = None,
    ) -> SessionQAEntry:
        """:meth:`record` in a worker thread."""
        return await _in_thread(
            self.record,
            session_id,
            question,
            answer,
            list(context),
            user=user,
            metadata=metadata,
            qa_id=qa_id,
            wait=wait,
        )

    async def aget_session(
        self: _Sync, session_id: Id, *, user: str | None = None, last_n: int | None = None
    ) -> list[SessionQAEntry]:
        """:meth:`get_session` in a worker thread."""
        return await _in_thread(self.get_session, session_id, user=user, last_n=last_n)

    async def aget_entry(
        self: _Sync, session_id: Id, qa_id: Id, *, user: str | None = None
    ) -> SessionQAEntry | None:
        """:meth:`get_entry` in a worker thread."""
        return await _in_thread(self.get_entry, session_id, qa_id, user=user)

    async def aget_many(
        self: _Sync, refs: Sequence[tuple[Id, Id]], *, user: str | None = None
    ) -> list[SessionQAEntry | None]:
        """:meth:`get_many` in a worker thread."""
        return await _in_thread(self.get_many, list(refs), user=user)

    async def aadd_feedback(
        self: _Sync,
        session_id: Id,
        qa_id: Id,
        feedback_text: str | None = None,
        feedback_score: int | None = None,
        *,
        user: str | None = None,
        correction: str | None = None,
    ) -> bool:
        """:meth:`add_feedback` in a worker thread."""
        return await _in_thread(
            self.add_feedback,
            session_id,
            qa_id,
            feedback_text,
            feedback_score,
            user=user,
            correction=correction,
        )

    async def arate(
        self: _Sync,
        session_id: Id,
        qa_id: Id,
        feedback_text: str | None = None,
        feedback_score: int | None = None,
        *,
        user: str | None = None,
        correction: str | None = None,
    ) -> SessionQAEntry:
        """:meth:`rate` in a worker thread."""
        return await _in_thread(
            self.rate,
            session_id,
            qa_id,
            feedback_text,
            feedback_score,
            user=user,
            correction=correction,
        )

    async def athumbs(
        self: _Sync,
        session_id: Id,
        qa_id: Id,
        up: bool,
        feedback_text: str | None = None,
        *,
        user: str | None = None,
    ) -> bool:
        """:meth:`thumbs` in a worker thread."""
        return await _in_thread(self.thumbs, session_id, qa_id, up, feedback_text, user=user)

    async def adelete_feedback(
        self: _Sync, session_id: Id, qa_id: Id, *, user: str | None = None
    ) -> bool:
        """:meth:`delete_feedback` in a worker thread."""
        return await _in_thread(self.delete_feedback, session_id, qa_id, user=user)

    async def aclear_rating(
        self: _Sync, session_id: Id, qa_id: Id, *, user: str | None = None
    ) -> SessionQAEntry:
        """:meth:`clear_rating` in a worker thread."""
        return await _in_thread(self.clear_rating, session_id, qa_id, user=user)

    async def alist_sessions(self: _Sync, *, user: str | None = None) -> list[str]:
        """:meth:`list_sessions` in a worker thread."""
        return await _in_thread(self.list_sessions, user=user)

    async def adelete_session(self: _Sync, session_id: Id, *, user: str | None = None) -> int:
        """:meth:`delete_session` in a worker thread."""
        return await _in_thread(self.delete_session, session_id, user=user)

    async def aflush(self: _Sync) -> None:
        """:meth:`flush` in a worker thread."""
        await _in_thread(self.flush)

    async def aclose(self: _Sync) -> None:
        """:meth:`close` in a worker thread."""
        await _in_thread(self.close)
