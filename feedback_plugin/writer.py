"""Write-behind: new turns leave the caller's thread at once and reach the backend in batches.

A :class:`WriteBehind` owns a queue and one daemon thread. ``put`` appends to
the queue and returns (a few hundred nanoseconds); the thread wakes on the
first item, waits ``interval`` seconds for more to gather, then writes them
in batches of up to ``batch_size``, one backend transaction each.

While items keep arriving (a busy process: a loop over a dataset, a burst of
requests) the thread keeps gathering, up to ``max_delay`` seconds after the
first item or a full batch. A busy caller thread holds CPython's GIL, and
the writer needs it for every step between its database calls, each time
waiting up to the interpreter's switch interval (5 ms) and costing the
caller a thread switch: a few large batches keep up with a busy caller
where many small ones fall behind and slow it down. A quiet process (a chat
app between two questions) still has each turn written ``interval`` after
it was queued.

``flush()`` writes everything queued before it was called, in the caller's
thread, and raises if the backend fails; the store calls it before every read
and feedback change, which gives read-your-writes inside one process.

If a batch fails with an error that may pass (``is_transient``: the disk is
full, the server is down), it goes back to the front of the queue and the
thread retries with back-off. Any other error belongs to an item: the batch
is split in halves until the items that cannot be written are found, and
those are dropped and logged, so one bad turn never holds up the others.

The queue holds at most ``max_pending`` items: beyond that the caller
writes the queue itself (back-pressure), and only while the backend is
failing are the oldest items dropped (and logged), so a dead store never
grows memory without bound nor blocks the caller.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["WriteBehind"]

log = logging.getLogger("feedback_plugin")
T = TypeVar("T")


class WriteBehind(Generic[T]):
    def __init__(
        self,
        write: Callable[[Sequence[T]], None],
        *,
        interval: float = 0.05,
        max_delay: float = 1.0,
        batch_size: int = 1000,
        max_pending: int = 100_000,
        name: str = "feedback-plugin-writer",
        on_start: Callable[[], None] | None = None,
        is_transient: Callable[[BaseException], bool] = lambda exc: True,
    ) -> None:
        self._write = write
        self._is_transient = is_transient
        self._on_start = on_start  # called in each process that starts the thread
        self.interval = interval
        self.max_delay = max(max_delay, interval)
        self.batch_size = batch_size
        self.max_pending = max_pending
        self.name = name
        self.dropped = 0
        self.rejected = 0  # items dropped because they can never be written
        self._reset()

    def _reset(self) -> None:
        self._items: deque[T] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()  # set by close(): cuts the gathering pause short
        self._write_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._closed = False
        self._failing = False

    def __len__(self) -> int:
        return len(self._items)

    def idle(self) -> bool:
        """Nothing queued and no batch being written (a flush now would do nothing)."""
        return not self._items and not self._write_lock.locked()

    def queued(self) -> list[T]:
        """A snapshot of the items waiting to be written."""
        return list(self._items)

    def put(self, item: T) -> None:
        """Queue one item for writing; never blocks on I/O.

        A forked child must call :meth:`after_fork` first (the store does, from
        an ``os.register_at_fork`` hook), so the hot path makes no syscall.
        """
        if self._thread is None:
            self._start()
        items = self._items
        if len(items) >= self.max_pending:
            self._relieve()
        items.append(item)
        if not self._wake.is_set():
            self._wake.set()

    def _relieve(self) -> None:
        """The queue is full: write it in the caller (back-pressure) while the
        backend works; drop the oldest turn only while it is failing."""
        if not self._failing:
            try:
                self.flush()
                return
            except Exception as exc:
                log.error("feedback_plugin: store unreachable (%s: %s)", type(exc).__name__, exc)
        self._items.popleft()
        self.dropped += 1
        if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
            log.error("feedback_plugin: store unreachable, %d turns dropped", self.dropped)

    def flush(self) -> None:
        """Write every item queued before this call, now; raise what the backend raises.

        Items queued meanwhile wait for the next flush: under a steady stream
        the writer thread goes back to gathering them into a large batch
        instead of chasing them in small ones.
        """
        with self._write_lock:
            items = self._items
            left = len(items)
            while left > 0 and items:
                n = min(left, len(items), self.batch_size)
                left -= n
                self._write_isolating([items.popleft() for _ in range(n)])
                self._failing = False

    def _write_isolating(self, batch: list[T]) -> None:
        """Write ``batch``; on an item's error, halve it until the bad items are found
        (dropped, logged); on a transient error, requeue what is unwritten and raise."""
        parts = [batch]  # still to write, in order
        while parts:
            part = parts.pop(0)
            try:
                self._write(part)
            except BaseException as exc:
                if not isinstance(exc, Exception) or self._is_transient(exc):
                    unwritten = [item for p in (part, *parts) for item in p]
                    self._items.extendleft(reversed(unwritten))
                    self._failing = True
                    raise
                if len(part) > 1:
                    half = len(part) // 2
                    parts[:0] = [part[:half], part[half:]]
                    continue
                self.rejected += 1
                log.error(
                    "feedback_plugin: dropped a queued turn that cannot be written (%s: %s)",
                    type(exc).__name__,
                    exc,
                    exc_info=exc,
                )

    def close(self) -> None:
        """Stop the thread and write what is left (raises if the backend fails)."""
        self._closed = True
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
        self._thread = None
        self.flush()

    def after_fork(self) -> None:
        """In a forked child: forget the parent's queue (the parent writes it) and thread."""
        self._reset()

    def _start(self) -> None:
        with self._start_lock:
            if self._pid != os.getpid():
                self._reset()
            if self._thread is None:
                if self._on_start is not None:
                    self._on_start()
                self._closed = False
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()

    def _gather(self) -> None:
        """Wait ``interval``; again while items keep coming, up to ``max_delay`` or a batch."""
        items, interval = self._items, self.interval
        deadline = time.monotonic() + self.max_delay - interval
        while True:
            before = len(items)
            if self._stop.wait(interval):
                return
            now = len(items)
            if (
                now == before
                or now >= self.batch_size
                or interval <= 0
                or time.monotonic() >= deadline
            ):
                return

    def _run(self) -> None:
        backoff = 0.0
        while True:
            self._wake.wait()
            if self._closed:
                return
            if backoff:
                self._stop.wait(backoff)
            else:
                self._gather()
            self._wake.clear()
            if self._stop.is_set():  # close() may have set _wake before the clear: it flushes
                return
            try:
                self.flush()
                backoff = 0.0
            except Exception as exc:
                backoff = min(max(backoff * 2, 0.5), 5.0)
                log.error(
                    "feedback_plugin: could not write %d turns (%s: %s); retrying in %.1fs",
                    len(self._items),
                    type(exc).__name__,
                    exc,
                    backoff,
                )
                self._wake.set()
