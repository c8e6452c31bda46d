"""The Backend protocol: what every storage engine under the store must do.

A backend stores opaque entry payloads (JSON text) under a *session key*
``(user, session_id)``, keeps each session's entries in recording order, and
offers one atomic read-modify-write. It does I/O and nothing else: it never
parses payloads except to learn the ``qa_id`` of an entry it evicts, never
validates, never decides what is positive.

Costs a backend must keep: ``append`` and ``update`` independent of the
session's length; ``read(last_n=n)`` proportional to ``n``.

Positive memory reads a backend through its *change feed*: every ``update``
commits, with the new payload, a record naming the changed entry; a reader
keeps the position it has read up to and asks for the changes after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, runtime_checkable

__all__ = ["Backend", "Item", "SessionKey"]

SessionKey = tuple["str | None", str]
"""``(user, session_id)``: the unit of ownership and ordering."""

Item = tuple[SessionKey, str, str]
"""One new entry: ``(session key, qa_id, payload)``."""


@runtime_checkable
class Backend(Protocol):
    """Storage for session entries. Implementations must be thread-safe and
    safe for several processes to share (diskcache directory, Redis server)."""

    @property
    def index_path(self) -> str | None:
        """Where a memory index file shared by every process may live, or ``None``
        (each process keeps its index in memory)."""

    def append(self, items: Sequence[Item]) -> None:
        """Store new entries, atomically as one batch, at the end of their sessions.

        An item whose ``qa_id`` already exists in its session replaces that
        entry in place (same position).
        """

    def read(self, key: SessionKey, last_n: int | None = None) -> list[str]:
        """Payloads of a session, oldest first; the newest ``last_n`` if given."""

    def get(self, key: SessionKey, qa_id: str) -> str | None:
        """One entry's payload, or ``None``."""

    def update(self, key: SessionKey, qa_id: str, change: Callable[[str], str]) -> str | None:
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

    def close(self) -> None:
        """Release connections; the backend may be used again afterwards."""
