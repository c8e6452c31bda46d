"""An in-memory backend written only against the documented protocol.

It exists to prove the protocol is the whole contract: the store, positive
memory and every contract test run on it without knowing it. Locations are
``memory://<name>``; stores that open the same name in one process share its
data (another process sees nothing: ``shared_across_processes = False``).
Its memory is the library's own SQLite FTS5 index, fed by this backend's
change feed (:class:`~feedback_plugin.backends.base.ChangeFeed`).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from feedback_plugin.backends.base import Item, SessionKey
from feedback_plugin.backends.fts import MemoryIndex
from feedback_plugin.backends.registry import register_scheme

__all__ = ["InMemoryBackend"]


@dataclass
class _Session:
    order: int
    entries: dict[str, tuple[str, float | None]] = field(default_factory=dict)  # in order


@dataclass
class _Data:
    lock: threading.RLock = field(default_factory=threading.RLock)
    sessions: dict[tuple[str | None, SessionKey], _Session] = field(default_factory=dict)
    started: int = 0
    feed: list[tuple[SessionKey, str]] = field(default_factory=list)
    epoch: str = field(default_factory=lambda: uuid.uuid4().hex)


_places: dict[str, _Data] = {}
_places_lock = threading.Lock()


class InMemoryBackend:
    """Session entries in this process's memory (see the module docstring)."""

    shared_across_processes = False

    def __init__(
        self,
        location: str,
        *,
        namespace: str | None = None,
        ttl: float | None = None,
        max_entries: int | None = None,
    ) -> None:
        self.location = location
        self.namespace = namespace
        self.ttl = ttl
        self.max_entries = max_entries
        with _places_lock:
            self._data = _places.setdefault(location, _Data())
        self._memory: MemoryIndex | None = None

    def __repr__(self) -> str:
        return f"InMemoryBackend({self.location!r}, namespace={self.namespace!r})"

    # -- helpers -------------------------------------------------------------------

    def _session(self, key: SessionKey) -> _Session | None:
        session = self._data.sessions.get((self.namespace, key))
        if session is not None:
            self._expire(session)
            if not session.entries:
                del self._data.sessions[(self.namespace, key)]
                return None
        return session

    @staticmethod
    def _expire(session: _Session) -> None:
        now = time.time()
        for qa_id, (_, expires) in list(session.entries.items()):
            if expires is not None and expires <= now:
                del session.entries[qa_id]

    # -- the protocol --------------------------------------------------------------

    def append(self, items: Sequence[Item]) -> None:
        expires = None if self.ttl is None else time.time() + self.ttl
        with self._data.lock:
            for key, qa_id, payload in items:
                session = self._session(key)
                if session is None:
                    self._data.started += 1
                    session = self._data.sessions[(self.namespace, key)] = _Session(
                        self._data.started
                    )
                session.entries[qa_id] = (payload, expires)  # a known qa_id keeps its place
                while self.max_entries is not None and len(session.entries) > self.max_entries:
                    del session.entries[next(iter(session.entries))]

    def read(self, key: SessionKey, last_n: int | None = None) -> list[str]:
        with self._data.lock:
            session = self._session(key)
            payloads = [] if session is None else [p for p, _ in session.entries.values()]
        return payloads if last_n is None else payloads[-last_n:] if last_n else []

    def first(self, key: SessionKey) -> str | None:
        with self._data.lock:
            session = self._session(key)
            entries = [] if session is None else list(session.entries.values())
        return entries[0][0] if entries else None

    def get(self, key: SessionKey, qa_id: str) -> str | None:
        with self._data.lock:
            session = self._session(key)
            found = None if session is None else session.entries.get(qa_id)
        return None if found is None else found[0]

    def get_many(self, refs: Sequence[tuple[SessionKey, str]]) -> list[str | None]:
        return [self.get(key, qa_id) for key, qa_id in refs]

    def update(self, key: SessionKey, qa_id: str, change: Callable[[str], str]) -> str | None:
        with self._data.lock:
            session = self._session(key)
            found = None if session is None else session.entries.get(qa_id)
            if session is None or found is None:
                return None
            new = change(found[0])
            session.entries[qa_id] = (new, found[1])  # the original expiry stays
            self._data.feed.append((key, qa_id))
            return new

    def sessions(self, user: str | None) -> list[str]:
        with self._data.lock:
            found = [
                (s.order, key[1])
                for (ns, key), s in list(self._data.sessions.items())
                if ns == self.namespace and key[0] == user and self._session(key) is not None
            ]
        return [name for _, name in sorted(found)]

    def delete_session(self, key: SessionKey) -> int:
        with self._data.lock:
            session = self._data.sessions.pop((self.namespace, key), None)
            if session is None:
                return 0
            self._expire(session)
            return len(session.entries)

    def scan(self) -> Iterator[tuple[SessionKey, str]]:
        with self._data.lock:
            rows = [
                (key, payload)
                for (ns, key), session in list(self._data.sessions.items())
                if ns == self.namespace and self._session(key) is not None
                for payload, _ in session.entries.values()
            ]
        yield from rows

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, OSError)

    def memory(self) -> MemoryIndex:
        if self._memory is None:
            self._memory = MemoryIndex(None, namespace=self.namespace, feed=self)
        return self._memory

    def exists(self) -> bool:
        return True

    def close(self) -> None:
        if self._memory is not None:
            self._memory.close()

    # -- the async half: nothing here waits, so each is its sync twin -----------------

    async def aappend(self, items: Sequence[Item]) -> None:
        self.append(items)

    async def aread(self, key: SessionKey, last_n: int | None = None) -> list[str]:
        return self.read(key, last_n)

    async def aget(self, key: SessionKey, qa_id: str) -> str | None:
        return self.get(key, qa_id)

    async def afirst(self, key: SessionKey) -> str | None:
        return self.first(key)

    async def aget_many(self, refs: Sequence[tuple[SessionKey, str]]) -> list[str | None]:
        return self.get_many(refs)

    async def aupdate(
        self, key: SessionKey, qa_id: str, change: Callable[[str], str]
    ) -> str | None:
        return self.update(key, qa_id, change)

    async def asessions(self, user: str | None) -> list[str]:
        return self.sessions(user)

    async def adelete_session(self, key: SessionKey) -> int:
        return self.delete_session(key)

    async def aclose(self) -> None:
        self.close()

    # -- the change feed ----------------------------------------------------------------

    def feed_position(self) -> str:
        with self._data.lock:
            return f"{self._data.epoch}:{len(self._data.feed)}"

    def changes_since(self, position: str) -> tuple[str, list[str]] | None:
        epoch, _, seen = position.partition(":")
        with self._data.lock:
            if epoch != self._data.epoch or not seen.isdigit() or int(seen) > len(self._data.feed):
                return None
            changed = dict.fromkeys(self._data.feed[int(seen) :])
            head = f"{self._data.epoch}:{len(self._data.feed)}"
        payloads = [p for key, qa_id in changed if (p := self.get(key, qa_id)) is not None]
        return head, payloads

    def restart_feed(self) -> None:
        with self._data.lock:
            self._data.epoch = uuid.uuid4().hex

    # -- for the contract suite ----------------------------------------------------------

    def stored_text(self) -> str:
        """Everything kept: every payload, and every row of the memory index."""
        parts = [payload for _, payload in self.scan()]
        if self._memory is not None:
            rows = self._memory._connect().execute("SELECT * FROM turns").fetchall()
            parts.extend(json.dumps(row) for row in rows)
        return "\n".join(parts)


register_scheme("memory://", InMemoryBackend)
