"""ThreadedAsync: the async half of the Backend protocol for a backend with only sync I/O.

SQLite (diskcache) has no async driver: its calls are short and release the
GIL while SQLite works, so each ``a*`` method runs its sync twin in the
library's worker threads (:mod:`feedback_plugin.pool`: reads in its read
threads, writes in its one write thread), and the event loop keeps ticking.
A backend with an async client (Redis) implements the ``a*`` methods itself
instead of inheriting these.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from ..pool import in_thread, in_writer_thread
from .base import Item, SessionKey

__all__ = ["ThreadedAsync"]


class _SyncIO(Protocol):
    """The sync methods the async ones run (what the mixin needs of its class)."""

    def append(self, items: Sequence[Item]) -> None: ...
    def read(self, key: SessionKey, last_n: int | None = None) -> list[str]: ...
    def get(self, key: SessionKey, qa_id: str) -> str | None: ...
    def first(self, key: SessionKey) -> str | None: ...
    def get_many(self, refs: Sequence[tuple[SessionKey, str]]) -> list[str | None]: ...
    def update(self, key: SessionKey, qa_id: str, change: Callable[[str], str]) -> str | None: ...
    def sessions(self, user: str | None) -> list[str]: ...
    def delete_session(self, key: SessionKey) -> int: ...
    def close(self) -> None: ...


class ThreadedAsync:
    """Mixin: ``aread`` is ``read`` in a worker thread, and so on for every ``a*`` method."""

    async def aappend(self: _SyncIO, items: Sequence[Item]) -> None:
        await in_writer_thread(self.append, items)

    async def aread(self: _SyncIO, key: SessionKey, last_n: int | None = None) -> list[str]:
        return await in_thread(self.read, key, last_n)

    async def aget(self: _SyncIO, key: SessionKey, qa_id: str) -> str | None:
        return await in_thread(self.get, key, qa_id)

    async def afirst(self: _SyncIO, key: SessionKey) -> str | None:
        return await in_thread(self.first, key)

    async def aget_many(self: _SyncIO, refs: Sequence[tuple[SessionKey, str]]) -> list[str | None]:
        return await in_thread(self.get_many, refs)

    async def aupdate(
        self: _SyncIO, key: SessionKey, qa_id: str, change: Callable[[str], str]
    ) -> str | None:
        return await in_writer_thread(self.update, key, qa_id, change)

    async def asessions(self: _SyncIO, user: str | None) -> list[str]:
        return await in_thread(self.sessions, user)

    async def adelete_session(self: _SyncIO, key: SessionKey) -> int:
        return await in_writer_thread(self.delete_session, key)

    async def aclose(self: _SyncIO) -> None:
        await in_writer_thread(self.close)
