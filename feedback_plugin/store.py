"""SessionStore: recorded turns and their feedback, over a swappable backend.

The store is the policy layer: it validates every id and rating (through
:mod:`feedback_plugin.models`) before anything is written, scopes every key by
user, queues new turns in a write-behind queue and gives read-your-writes,
turns backend failures into the contract's return values, and tells
listeners about every feedback change. The backend below it only does I/O.

Durability: with ``write_behind=True`` (the default) :meth:`SessionStore.record`
returns once the turn is queued; the queue reaches the backend within
``flush_interval`` seconds (50 ms) while the process is quiet, and within
``flush_max_delay`` (1 s) while turns keep coming; also on any read or
feedback call in the same process, on :meth:`flush`, on :meth:`close` and
at interpreter exit. So a process killed with SIGKILL loses at most the
turns of its last 50 ms when quiet, of its last second when busy. With
``write_behind=False`` (or ``record(..., wait=True)``) a turn is on disk when
``record`` returns. Feedback is always written before the call returns.

Failures: a queued turn that the backend refuses (not a passing fault) is
dropped and logged, never blocking the turns behind it; on a passing fault
(disk full, server down) the queue is kept and retried, and reads of other
sessions go on. A stored entry that no longer parses is skipped and logged.

Positive memory (:mod:`feedback_plugin.memory`) is a cache of this store:
the backend commits every feedback change with a record in its change feed,
and the memory index applies the feed before each query, rebuilding itself
from a scan when it must (see :meth:`SessionStore.ready_memory`).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import attribution, calls, lifecycle
from .aio import AsyncMethods
from .backends.base import Backend, Item, MemorySearch, SessionKey
from .backends.registry import open_backend
from .codec import Fields, encode_queued
from .errors import (
    ConfigurationError,
    InvalidArgumentError,
    StoreError,
    TurnNotFoundError,
)
from .interpretation import FeedbackInterpretation
from .models import (
    Id,
    SessionQAEntry,
    check_id,
    check_score,
    check_user,
)
from .ratings import MIN_SCORE, is_remembered
from .session_ratings import SessionRatings
from .writer import WriteBehind

__all__ = ["ChangeListener", "SessionStore", "default_location"]

log = logging.getLogger("feedback_plugin")

Queued = Item | Fields
"""A queued turn: a backend item (its JSON built already), or the fields to build it from."""

ChangeListener = Callable[[SessionQAEntry], None]
"""Called with an entry after its feedback changed (and after it was recorded)."""


def default_location() -> str:
    """``$FEEDBACK_PLUGIN_DIR``, else a per-user data directory.

    Linux: ``$XDG_DATA_HOME/feedback_plugin`` (``~/.local/share/...``);
    macOS: ``~/Library/Application Support/feedback_plugin``;
    Windows: ``%LOCALAPPDATA%\\feedback_plugin``.
    """
    env = os.environ.get("FEEDBACK_PLUGIN_DIR")
    if env:
        return env
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return str(base / "feedback_plugin")


class SessionStore(SessionRatings, AsyncMethods, FeedbackInterpretation):
    """Recorded chat turns, keyed by session and user, with their feedback.

    >>> import tempfile
    >>> store = SessionStore(tempfile.mkdtemp())
    >>> turn = store.record("s1", "What is 2+2?", "4")
    >>> store.thumbs("s1", turn.qa_id, up=True)
    True
    >>> [(e.answer, e.feedback_score) for e in store.get_session("s1")]
    [('4', 5)]
    >>> store.close()

    Args:
        location: a directory for the diskcache backend (``None``: see
            :func:`default_location`), or a ``redis://`` URL.
        namespace: separates stores that share one directory or Redis database.
        ttl: seconds after which a recorded turn expires (``None``: never).
        max_entries: keep at most this many turns per session, dropping the oldest.
        write_behind: queue new turns and write them in batches (see module docs).
        flush_interval: seconds a queued turn waits before it is written while
            the process is quiet.
        flush_max_delay: while turns keep coming (a busy process), the writer
            gathers them into larger batches, and a turn waits at most this long
            (or ``flush_interval``, if that is longer).
        backend: use this :class:`~feedback_plugin.backends.Backend` instead of
            building one from ``location``.

    The constructor validates and does no I/O.
    """

    def __init__(
        self,
        location: str | os.PathLike[str] | None = None,
        *,
        namespace: str | None = None,
        ttl: float | None = None,
        max_entries: int | None = None,
        write_behind: bool = True,
        flush_interval: float = 0.05,
        flush_max_delay: float = 1.0,
        backend: Backend | None = None,
    ) -> None:
        if namespace is not None and (not isinstance(namespace, str) or not namespace):
            raise ConfigurationError("namespace must be a non-empty string or None")
        if ttl is not None and (
            isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0
        ):
            raise ConfigurationError(f"ttl must be a positive number of seconds, got {ttl!r}")
        if max_entries is not None and (type(max_entries) is not int or max_entries < 1):
            raise ConfigurationError(f"max_entries must be an int >= 1, got {max_entries!r}")
        for name, seconds in (
            ("flush_interval", flush_interval),
            ("flush_max_delay", flush_max_delay),
        ):
            if (
                isinstance(seconds, bool)
                or not isinstance(seconds, (int, float))
                or not seconds >= 0
            ):
                raise ConfigurationError(
                    f"{name} must be a number of seconds >= 0, got {seconds!r}"
                )
        self.namespace = namespace
        self.ttl = ttl
        self.max_entries = max_entries
        self.write_behind = write_behind
        if backend is not None:
            self.location = repr(backend)
            self.backend: Backend = backend
        else:
            self.location = os.fspath(location) if location is not None else default_location()
            self.backend = open_backend(
                self.location, namespace=namespace, ttl=ttl, max_entries=max_entries
            )
        self.shown_location = calls.redacted(self.location)  # for messages: no password
        self._writer: WriteBehind[Queued] = WriteBehind(
            self._append,
            interval=flush_interval,
            max_delay=flush_max_delay,
            on_start=lifecycle.ensure_exit_hook,
            is_transient=self.backend.is_transient,
        )
        self._listeners: list[ChangeListener] = []
        lifecycle.track(self, self._writer)  # written at exit, even if this store is dropped

    @property
    def memory(self) -> MemorySearch:
        """Positive memory: the backend's :class:`~.backends.base.MemorySearch` over its
        rated turns (a cache of this store: see :meth:`ready_memory`)."""
        return self.backend.memory()

    def ready_memory(self) -> MemorySearch:
        """Positive memory, caught up with every feedback change made in any process.

        Raises :class:`StoreError` on failure.
        """
        memory = self.backend.memory()
        self._io("memory", memory.catch_up)
        return memory

    def refresh_memory(self, session_id: str, qa_id: str, *, user: str | None = None) -> None:
        """Bring one turn's memory in line with the store (a stale hit)."""
        self._io("memory", self.backend.memory().on_change, (user, session_id), qa_id)

    def __repr__(self) -> str:
        return f"SessionStore({self.shown_location!r}, namespace={self.namespace!r})"

    def __enter__(self) -> SessionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing turns -------------------------------------------------------

    def record(
        self,
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
        """Record one turn and return it.

        ``qa_id`` defaults to a new UUID; recording an existing ``qa_id`` again
        replaces that turn in place. ``wait=True`` writes before returning
        (raising :class:`StoreError` on failure), ``wait=False`` queues,
        ``None`` follows the store's ``write_behind`` setting.
        ``memory_ids`` names the remembered turns handed to the model for this
        answer (qa_ids, ``(session_id, qa_id)`` pairs or memory ``Document`` objects;
        MemOS's ``retrieved_memory_ids``): rating this turn down charges them
        (see :mod:`feedback_plugin.attribution`).
        """
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
            self._io("record", self._write_now, [item])
        else:
            self._writer.put(item)
        return entry

    def _waits(self, wait: bool | None) -> bool:
        return bool(wait) or (wait is None and not self.write_behind)

    def record_trusted(
        self,
        session_id: str,
        question: str,
        answer: str,
        context: Sequence[str],
        user: str | None,
        metadata: dict[str, Any],
        qa_id: str | int,
        memory: tuple[tuple[str, str], ...] = (),
    ) -> None:
        """Queue a turn whose fields are already checked (the callback handler's path).

        Skips validation and leaves building the stored entry (the ``qa_id``
        string, the ISO time, the JSON) to the writer thread, so the caller's
        thread pays about a microsecond (with ``write_behind=False`` it is
        written now, raising :class:`StoreError` on failure). Fields must be
        what :meth:`record` would accept: non-empty ids, strings, JSON-safe
        metadata; an int ``qa_id`` is a UUID's 128-bit value (a LangChain
        ``run_id.int``) and stands for that UUID's string; ``memory`` is the
        ``(session_id, qa_id)`` of each remembered turn handed to the model.

        The queued turn is one flat tuple of plain strings, numbers and a dict
        of them, which the garbage collector stops tracking: a long queue (a
        busy process) costs each collection one object per turn, not a tree.
        """
        turn = (
            user,
            session_id,
            qa_id,
            question,
            answer,
            tuple(context),
            time.time(),
            metadata,
            memory,
        )
        if self.write_behind:
            self._writer.put(turn)
        else:
            self._io("record", self._write_now, [encode_queued(turn)])

    def _append(self, queued: Sequence[Queued]) -> None:
        """The writer's batch: turn queued fields into stored JSON, then append."""
        items: list[Item] = []
        for turn in queued:
            if len(turn) == 3:  # from record(): an item, JSON already
                items.append(turn)
                continue
            try:
                items.append(encode_queued(turn))
            except Exception:  # never block the queue on one bad turn
                log.exception("feedback_plugin: turn %r not recordable, dropped", turn[2])
        self.backend.append(items)

    def _write_now(self, items: Sequence[Item]) -> None:
        self._writer.flush()  # keep the order of turns already queued
        self.backend.append(items)

    def import_entries(self, entries: Iterable[SessionQAEntry], *, batch_size: int = 1000) -> int:
        """Store whole entries exactly as given (a restore); return how many were written.

        Unlike :meth:`record`, every field is kept: ``qa_id``, ``time``, the
        feedback, ``correction``, ``metadata`` and the owner ``user_id``. Each
        entry goes to the end of its ``(user_id, session_id)`` session, or
        replaces the turn with its ``qa_id`` in place, so importing a file
        twice changes nothing. Turns queued by :meth:`record` are written
        first; entries are validated (ids, score) and written in batches of
        ``batch_size``: a bad entry raises before its batch is written, but
        earlier batches stay. Raises :class:`StoreError` if the backend fails.

        Positive memory: after each batch is written, the memory takes it
        (:class:`~.backends.feed.TakesImports`): the SQLite index applies it
        and writes a change-feed record per rated or corrected turn, so every
        process's next query finds them without a rebuild. A memory or feed
        that cannot take them (a third-party backend, or more records than
        the feed keeps) restarts the feed at the end instead: every process's
        index then rebuilds from a scan on its next query.
        """
        from .backends.feed import takes_imports

        if type(batch_size) is not int or batch_size < 1:
            raise InvalidArgumentError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.flush()
        memory: MemorySearch = self._io("import_entries", self.backend.memory)
        takes = takes_imports(memory)
        written = 0
        rebuild = False  # memory missed an imported rating: restart the feed at the end
        batch: list[SessionQAEntry] = []

        def write() -> None:
            nonlocal rebuild
            items = [((e.user_id, e.session_id), e.qa_id, e.to_json()) for e in batch]
            remembered = any(is_remembered(e, MIN_SCORE) for e in batch)
            self.backend.append(items)
            if takes is None or rebuild:
                rebuild = rebuild or remembered
                return
            rebuild = remembered  # until the memory has taken the batch
            rebuild = not takes.on_import(batch) and remembered

        try:
            for entry in entries:
                check_id(entry.session_id)
                check_id(entry.qa_id, "qa_id")
                check_user(entry.user_id)
                check_score(entry.feedback_score)
                batch.append(entry)
                if len(batch) >= batch_size:
                    self._io("import_entries", write)
                    written += len(batch)
                    batch = []
            if batch:
                self._io("import_entries", write)
                written += len(batch)
        finally:
            if rebuild:
                self._io("import_entries", memory.reset)
        return written

    def flush(self) -> None:
        """Write every queued turn now; raise :class:`StoreError` if the backend fails."""
        self._io("flush", self._writer.flush)

    def close(self) -> None:
        """Write what is queued, stop the writer thread, release the backend.

        The store can still be used afterwards (it reopens on demand).
        """
        try:
            self._io("close", self._writer.close)
        finally:
            self.backend.close()

    @property
    def pending(self) -> int:
        """How many recorded turns are queued and not yet written."""
        return len(self._writer)

    # -- reading -------------------------------------------------------------

    def get_session(
        self, session_id: Id, *, user: str | None = None, last_n: int | None = None
    ) -> list[SessionQAEntry]:
        """The session's turns for this user, oldest first (the newest ``last_n``).

        Unknown sessions give ``[]``. Raises :class:`StoreError` if the backend fails.
        """
        key, last_n = calls.session_args(session_id, user, last_n)
        if last_n == 0:
            return []
        return calls.parse_all(self._io("get_session", self._read, key, last_n))

    def _read(self, key: SessionKey, last_n: int | None) -> list[str]:
        self._flush_quietly(key)
        return self.backend.read(key, last_n)

    def _flush_quietly(self, scope: tuple[str | None, str | None] | None = None) -> None:
        """Read-your-writes: write what is queued before a read or a change.

        Always flush, even with an empty queue: flush() waits for a batch the
        writer thread has taken off the queue but not yet written. If the
        queue cannot be written now (the writer keeps retrying), the read
        goes on with what is stored -- unless a turn still queued belongs to
        the ``scope`` read (``(user, session_id)``, or ``(user, None)`` for all
        of a user's sessions): then the answer would be silently incomplete,
        so the error is raised.
        """
        try:
            self._writer.flush()
        except Exception as exc:
            log.error(
                "feedback_plugin: %d queued turns not written yet: %s",
                len(self._writer),
                calls.describe(exc),
            )
            if scope is None:
                return
            user, session_id = scope
            for queued in self._writer.queued():
                owner, sid = queued[0] if len(queued) == 3 else queued[:2]
                if owner == user and session_id in (None, sid):
                    raise

    def get_entry(
        self, session_id: Id, qa_id: Id, *, user: str | None = None
    ) -> SessionQAEntry | None:
        """One turn, or ``None`` if it does not exist for this user."""
        key, qa_id = calls.entry_args(session_id, qa_id, user)
        payload = self._io("get_entry", self._get, key, qa_id)
        return None if payload is None else calls.parse(payload)

    def get_many(
        self, refs: Sequence[tuple[Id, Id]], *, user: str | None = None
    ) -> list[SessionQAEntry | None]:
        """This user's turns named by ``(session_id, qa_id)``, in order (``None`` for a turn
        that does not exist), read in as few round trips as the backend allows."""
        user, keys = calls.many_args(refs, user)
        payloads: list[str | None] = self._io("get_many", self._get_many, user, keys)
        return [None if p is None else calls.parse(p) for p in payloads]

    def _get_many(self, user: str | None, keys: list[tuple[SessionKey, str]]) -> list[str | None]:
        self._flush_quietly((user, None))
        return self.backend.get_many(keys)

    def _get(self, key: SessionKey, qa_id: str) -> str | None:
        self._flush_quietly(key)
        return self.backend.get(key, qa_id)

    def iter_entries(self) -> Iterator[SessionQAEntry]:
        """Every stored turn of every user and session, streamed, in no set order."""
        self.flush()
        return self._scan()

    def _scan(self) -> Iterator[SessionQAEntry]:
        for _key, payload in self.scan_payloads():
            entry = calls.parse(payload)
            if entry is not None:
                yield entry

    def scan_payloads(self) -> Iterator[tuple[SessionKey, str]]:
        """Every stored ``((user, session_id), payload)`` as the backend holds it (JSON
        text, see :mod:`.codec`), streamed after queued turns are written: the raw
        read under analytics and export. Raises :class:`StoreError` on failure."""
        self.flush()
        try:
            yield from self.backend.scan()
        except Exception as exc:
            raise StoreError(
                f"scan failed on {self.shown_location}: {calls.describe(exc)}"
            ) from exc

    def read_payloads(self, session_id: Id, *, user: str | None = None) -> list[str]:
        """One session's stored payloads, oldest first, unparsed (see :meth:`scan_payloads`)."""
        key = (check_user(user), check_id(session_id))
        payloads: list[str] = self._io("read", self._read, key, None)
        return payloads

    # -- feedback --------------------------------------------------------------

    def add_feedback(
        self,
        session_id: Id,
        qa_id: Id,
        feedback_text: str | None = None,
        feedback_score: int | None = None,
        *,
        user: str | None = None,
        correction: str | None = None,
    ) -> bool:
        """Rate a turn: set its comment, its 1–5 score, a corrected answer, or several.

        Only the fields given change: a comment added after a thumbs up keeps
        the score. ``correction`` (an extension) stores the right answer
        beside the original; positive memory then returns the corrected
        answer, whatever the score (see the README). Raises
        :class:`InvalidFeedbackError` for a missing or bad rating; returns
        ``False`` if the turn does not exist for this user or the store is
        unavailable (logged). :meth:`rate` tells those two apart.
        """
        return self._answered(
            self.rate,
            session_id,
            qa_id,
            feedback_text,
            feedback_score,
            user=user,
            correction=correction,
        )

    def rate(
        self,
        session_id: Id,
        qa_id: Id,
        feedback_text: str | None = None,
        feedback_score: int | None = None,
        *,
        user: str | None = None,
        correction: str | None = None,
    ) -> SessionQAEntry:
        """:meth:`add_feedback` that says what happened: the entry as stored, or
        :class:`TurnNotFoundError` (no such turn for this user: nothing changed) or
        :class:`StoreError` (the store is unavailable: try again later)."""
        changes = calls.rating(feedback_text, feedback_score, correction)
        return self._change(session_id, qa_id, user, changes)

    def thumbs(
        self,
        session_id: Id,
        qa_id: Id,
        up: bool,
        feedback_text: str | None = None,
        *,
        user: str | None = None,
    ) -> bool:
        """Thumbs up (score 5) or down (score 1), with an optional comment."""
        return self.add_feedback(session_id, qa_id, feedback_text, calls.thumb(up), user=user)

    def delete_feedback(self, session_id: Id, qa_id: Id, *, user: str | None = None) -> bool:
        """Clear a turn's comment and score (the turn itself stays); ``False`` if the
        turn does not exist for this user or the store is unavailable (logged)."""
        return self._answered(self.clear_rating, session_id, qa_id, user=user)

    def clear_rating(self, session_id: Id, qa_id: Id, *, user: str | None = None) -> SessionQAEntry:
        """:meth:`delete_feedback` that says what happened (see :meth:`rate`)."""
        return self._change(session_id, qa_id, user, dict(calls.CLEARED))

    def _answered(self, change: Callable[..., object], *args: Any, **kwargs: Any) -> bool:
        """A raising feedback call as the boolean API's answer (cognee's contract)."""
        try:
            change(*args, **kwargs)
        except (TurnNotFoundError, StoreError) as exc:
            return calls.refused(exc)
        return True

    def _change(
        self, session_id: Id, qa_id: Id, user: str | None, changes: dict[str, Any]
    ) -> SessionQAEntry:
        key, qa_id = calls.entry_args(session_id, qa_id, user)
        change = calls.Change(changes)
        # The backend commits the change with a record in its change feed;
        # positive memory learns it from there (see ready_memory).
        self._flush_quietly()
        new = self._io("feedback", self.backend.update, key, qa_id, change)
        entry = self._changed(change, change.stored(new) is not None, key, qa_id)
        if entry.memory_ids and attribution.charges(change.changes):
            attribution.charge(self.backend, entry)  # the memories that fed it learn of it
        return entry

    def _changed(
        self, change: calls.Change, found: bool, key: SessionKey, qa_id: str
    ) -> SessionQAEntry:
        """After ``update``: the entry as stored (listeners told), or TurnNotFoundError."""
        if not found or change.result is None:
            raise TurnNotFoundError(f"no turn {qa_id!r} in session {key[1]!r} for this user")
        self._notify(change.result)
        return change.result

    def list_sessions(self, *, user: str | None = None) -> list[str]:
        """This user's session ids, oldest session first."""
        user = check_user(user)
        names: list[str] = self._io("list_sessions", self._sessions, user)
        return names

    def _sessions(self, user: str | None) -> list[str]:
        self._flush_quietly((user, None))
        return self.backend.sessions(user)

    def delete_session(self, session_id: Id, *, user: str | None = None) -> int:
        """Remove a session and all its turns for this user; return how many turns went."""
        key = (check_user(user), check_id(session_id))
        return int(self._io("delete_session", self._delete, key))

    def _delete(self, key: SessionKey) -> int:
        self._flush_quietly(key)  # a turn queued for it would bring the session back
        removed = self.backend.delete_session(key)
        if removed:
            self._scrub(key)
        return removed

    def _scrub(self, key: SessionKey) -> None:
        """Drop a deleted session's turns from memory now (its rows are stale anyway)."""
        try:
            self.backend.memory().on_delete_session(key)
        except Exception as exc:
            log.error(
                "feedback_plugin: memory index kept rows of deleted session %r: %s",
                key[1],
                calls.describe(exc),
            )

    # -- listeners -------------------------------------------------------------

    def add_listener(self, listener: ChangeListener) -> None:
        """Call ``listener(entry)`` after every successful feedback change in this process."""
        self._listeners.append(listener)

    def _notify(self, entry: SessionQAEntry) -> None:
        for listener in self._listeners:
            try:
                listener(entry)
            except Exception:
                log.exception("feedback_plugin: change listener %r failed", listener)

    # -- plumbing --------------------------------------------------------------

    def _io(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(
                f"{what} failed on {self.shown_location}: {calls.describe(exc)}"
            ) from exc
