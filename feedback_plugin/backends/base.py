"""The Backend protocol: what every storage engine under the store must do.

A backend stores opaque entry payloads (JSON text) under a *session key*
``(user, session_id)``, keeps each session's entries in recording order, and
offers one atomic read-modify-write. It does I/O and nothing else: it never
parses payloads except to learn the ``qa_id`` of an entry it evicts, never
validates, never decides what is positive.

Costs a backend must keep: ``append`` and ``update`` independent of the
session's length; ``read(last_n=n)`` proportional to ``n``.

Positive memory is a port each backend supplies: ``Backend.memory()``
returns a :class:`MemorySearch` over the backend's rated turns. The SQLite
FTS5 index (:mod:`.fts`) is one implementation any backend can reuse: it
reads the backend's :class:`ChangeFeed` (every ``update`` commits, with the
new payload, a record naming the changed entry; a reader keeps the position
it has read up to and asks for the changes after it). A server with a search
engine of its own may answer :meth:`MemorySearch.search` itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

__all__ = ["Backend", "Change", "ChangeFeed", "Hit", "Item", "MemorySearch", "SessionKey"]

SessionKey = tuple["str | None", str]
"""``(user, session_id)``: the unit of ownership and ordering."""

Item = tuple[SessionKey, str, str]
"""One new entry: ``(session key, qa_id, payload)``."""


@dataclass(frozen=True, slots=True)
class Hit:
    """One memory candidate: which turn, and how relevant it is to the query."""

    key: SessionKey
    qa_id: str
    relevance: float  # higher is more relevant; 0.0 for a query without words
    payload: str | None = None
    """The entry as stored, when the search read it from the store itself in the same
    query (a server-side memory): the caller then need not re-read it."""


class Change(Protocol):
    """A feedback change for :meth:`Backend.update`: ``change(payload)`` is the new payload.

    ``fields`` is the JSON object of the top-level fields the change sets (or
    ``None``), for an engine that merges them into the stored entry itself
    (PostgreSQL's ``jsonb ||``) instead of reading the payload to call it. A
    field set to an empty object or list is removed instead (the stored layout
    leaves empty extension fields out: see :mod:`feedback_plugin.codec`).
    """

    @property
    def fields(self) -> str | None: ...

    def __call__(self, payload: str) -> str: ...


class MemorySearch(Protocol):
    """A backend's positive memory: its rated or corrected turns, found by a query.

    A candidate generator, not the truth: callers re-read every hit from the
    backend (``get_many``) and drop hits it no longer backs.
    """

    def search(
        self,
        query: str,
        *,
        user: str | None,
        limit: int,
        min_score: int,
        session_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        metadata_filter: Mapping[str, Any] | None = None,
    ) -> list[Hit]:
        """Best-first candidates among ``user``'s turns with ``score >= min_score`` or a
        correction. A query without words returns the most recent ones. An
        implementation may apply ``metadata_filter`` or leave it to the caller."""

    def catch_up(self) -> None:
        """See every feedback change committed so far, in any process (before a query)."""

    def on_change(self, key: SessionKey, qa_id: str) -> None:
        """Bring one turn in line with the backend (a hit found stale)."""

    def on_delete_session(self, key: SessionKey) -> None:
        """Forget a deleted session's turns now (their text must not stay behind)."""

    def reset(self) -> None:
        """Rebuild from the backend before the next search, in every process
        (entries were written without ``update``: an import)."""

    def use_embeddings(self, model: str, embeddings: Any) -> None:
        """Keep every remembered turn embedded with ``embeddings`` (whose id is ``model``),
        off the query path (a background thread); a new model re-embeds everything.
        ``embeddings`` has ``embed_documents(texts)`` (a LangChain ``Embeddings``)."""

    def search_by_vector(
        self,
        vector: Sequence[float],
        *,
        model: str,
        user: str | None,
        limit: int,
        min_score: int,
        session_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[Hit]:
        """Nearest-first candidates by meaning (relevance: cosine similarity) among the
        turns already embedded with ``model``; the same filters as :meth:`search`."""

    def wait_embedded(self, timeout: float) -> bool:
        """Block until every remembered turn has its vector (``False`` on timeout)."""

    def close(self) -> None:
        """Release connections; the memory may be used again afterwards."""


class ChangeFeed(Protocol):
    """What the SQLite FTS5 memory (:mod:`.fts`) reads from a backend."""

    def feed_position(self) -> str:
        """The change feed's newest position (an opaque string)."""

    def changes_since(self, position: str) -> tuple[str, list[str]] | None:
        """The current payloads of entries changed after ``position``, and the new position.

        ``None`` when not every change after ``position`` can be read (the
        feed was restarted or trimmed): the reader must rebuild from
        :meth:`scan`. Entries deleted since their change are left out.
        """

    def restart_feed(self) -> None:
        """Make every reader rebuild from :meth:`scan` (entries changed without ``update``)."""

    def scan(self) -> Iterator[tuple[SessionKey, str]]:
        """Every stored ``(session key, payload)``."""

    def get(self, key: SessionKey, qa_id: str) -> str | None:
        """One entry's payload, or ``None``."""


@runtime_checkable
class Backend(Protocol):
    """Storage for session entries. Implementations must be thread-safe; those with
    ``shared_across_processes`` must also be safe for several processes to share
    (diskcache directory, Redis server), and every process must see every change."""

    shared_across_processes: bool

    def append(self, items: Sequence[Item]) -> None:
        """Store new entries, atomically as one batch, at the end of their sessions.

        An item whose ``qa_id`` already exists in its session replaces that
        entry in place (same position).
        """

    def read(self, key: SessionKey, last_n: int | None = None) -> list[str]:
        """Payloads of a session, oldest first; the newest ``last_n`` if given."""

    def get(self, key: SessionKey, qa_id: str) -> str | None:
        """One entry's payload, or ``None``."""

    def first(self, key: SessionKey) -> str | None:
        """The session's oldest entry still stored (where the conversation's rating
        lives), or ``None`` for a session with no entries."""

    def get_many(self, refs: Sequence[tuple[SessionKey, str]]) -> list[str | None]:
        """The payloads of several entries, in order (``None`` for missing ones), in as
        few round trips as the engine allows."""

    def update(self, key: SessionKey, qa_id: str, change: Change) -> str | None:
        """Atomically replace an entry's payload by ``change(payload)``.

        Returns the new payload, or ``None`` (and calls nothing) when the
        entry does not exist. No other writer's change can be lost between
        the read and the write, across threads and processes.
        """

    def sessions(self, user: str | None) -> list[str]:
        """Session ids this user has turns in, oldest session first."""

    def delete_session(self, key: SessionKey) -> int:
        """Remove a session and all its entries; return how many were removed."""

    def scan(self) -> Iterator[tuple[SessionKey, str]]:
        """Every stored ``(session key, payload)``, in no particular order, streamed."""

    def is_transient(self, exc: BaseException) -> bool:
        """Whether ``exc``, raised by this backend, may pass if the call is retried
        (disk full or locked, server unreachable), rather than being about the
        items given (which are then never stored)."""

    def memory(self) -> MemorySearch:
        """This backend's positive memory (built on first call, then the same object)."""

    def exists(self) -> bool:
        """Whether the location already holds a store (a server always answers ``True``)."""

    def close(self) -> None:
        """Release connections; the backend may be used again afterwards."""

    # -- the async half: same results and errors as the sync methods ----------
    # A backend with an async client (Redis) awaits it; one without (diskcache,
    # SQLite) inherits :class:`~.threaded.ThreadedAsync`, which runs the sync
    # method in the library's small worker pool.

    async def aappend(self, items: Sequence[Item]) -> None:
        """:meth:`append`, awaited."""

    async def aread(self, key: SessionKey, last_n: int | None = None) -> list[str]:
        """:meth:`read`, awaited."""

    async def aget(self, key: SessionKey, qa_id: str) -> str | None:
        """:meth:`get`, awaited."""

    async def afirst(self, key: SessionKey) -> str | None:
        """:meth:`first`, awaited."""

    async def aget_many(self, refs: Sequence[tuple[SessionKey, str]]) -> list[str | None]:
        """:meth:`get_many`, awaited."""

    async def aupdate(self, key: SessionKey, qa_id: str, change: Change) -> str | None:
        """:meth:`update`, awaited (``change`` stays a plain function)."""

    async def asessions(self, user: str | None) -> list[str]:
        """:meth:`sessions`, awaited."""

    async def adelete_session(self, key: SessionKey) -> int:
        """:meth:`delete_session`, awaited."""

    async def aclose(self) -> None:
        """:meth:`close`, awaited (async connections are closed on their own loop)."""
