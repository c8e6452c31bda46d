"""Imports reach positive memory without a rebuild: two optional protocols.

An import (:meth:`~feedback_plugin.store.SessionStore.import_entries`)
writes whole entries with ``append``, which records no change in the
backend's change feed. A memory that is a :class:`TakesImports` is told of
each imported batch after it is written: the SQLite index
(:class:`~.fts.MemoryIndex`) applies the batch to itself and, when its feed
is a :class:`FeedWriter` (diskcache, Redis), commits one feed record per
rated or corrected turn of it, naming the turn as ``update`` does, so every
other process's next catch-up re-reads those turns. A memory or feed
without these methods (a third-party backend) makes the store fall back to
``MemorySearch.reset``: every process rebuilds from a scan.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .base import SessionKey

if TYPE_CHECKING:
    from ..models import SessionQAEntry

__all__ = ["FeedWriter", "TakesImports", "feed_writer", "takes_imports"]


@runtime_checkable
class FeedWriter(Protocol):
    """A change feed that takes records for entries written without ``update``."""

    def add_changes(self, refs: Sequence[tuple[SessionKey, str]]) -> tuple[str | None, str] | None:
        """Commit one feed record per ``(session key, qa_id)``: readers re-read those entries.

        Returns ``(position before, position after)`` the records: a reader
        at ``before`` that has applied the entries may move to ``after``
        (``before`` is ``None`` when other records may lie between them).
        Returns ``None``, writing nothing, when the feed cannot take that
        many records (more than it keeps): the caller restarts the feed.
        """


@runtime_checkable
class TakesImports(Protocol):
    """A positive memory that learns imported entries without rebuilding."""

    def on_import(self, entries: Sequence[SessionQAEntry]) -> bool:
        """Bring memory in line with ``entries``, just written by ``append``, in every
        process; ``False`` when it cannot (the caller must ``reset()`` the memory)."""


def feed_writer(feed: object) -> FeedWriter | None:
    """``feed`` if it takes records for imported entries, else ``None``."""
    return feed if isinstance(feed, FeedWriter) else None


def takes_imports(memory: object) -> TakesImports | None:
    """``memory`` if it learns imported entries without rebuilding, else ``None``."""
    return memory if isinstance(memory, TakesImports) else None
