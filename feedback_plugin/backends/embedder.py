"""Embedder: the background thread that embeds remembered turns for one model.

It leases a batch of pending turns from the :class:`~.vectors.VectorStore`
(a lease, not a delete: a process that dies mid-batch leaves the turns to be
leased again), embeds them, and stores the vectors and clears their queue
entries in one transaction; a batch the model fails on is given back. When
nothing is pending it has the memory index catch up with the store's change
feed -- so a turn rated in any process is embedded without waiting for a
query -- keeps the approximate indexes of large memories built and saved
(:meth:`~.vectors.VectorStore.maintain`), and then sleeps until woken or
:data:`POLL` seconds pass.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

__all__ = ["BATCH", "POLL", "Embedder", "Embeds", "Queue"]

log = logging.getLogger("feedback_plugin")

BATCH = 64
"""Turns embedded per batch."""

POLL = 1.0
"""Seconds between looks at the store's change feed while idle."""


class Embeds(Protocol):
    """What the library needs of an embedding model (a LangChain ``Embeddings`` is one)."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]: ...


class Queue(Protocol):
    """The turns waiting for a vector, as the embedder takes them (the SQLite memory's
    :class:`~.vectors.VectorStore`, PostgreSQL's ``embed_queue``)."""

    def lease(self, limit: int) -> tuple[float, list[tuple[int, str]]]:
        """Up to ``limit`` pending ``(turn id, text)`` pairs, and the lease's stamp."""

    def store(self, model: str, stamp: float, vectors: dict[int, Any]) -> None:
        """Save the vectors of turns still leased with ``stamp``."""

    def release(self, stamp: float, turn_ids: list[int]) -> None:
        """Give back a leased batch the model failed on."""

    def pending(self) -> int:
        """How many turns wait for a vector."""

    def catch_up(self) -> None:
        """Look for turns that entered memory in any process."""

    def maintain(self) -> None:
        """Idle work (building and saving approximate indexes)."""


class Embedder:
    """The background thread that embeds pending turns for one model (daemon)."""

    def __init__(self, vectors: Queue, model: str, embeddings: Embeds) -> None:
        self.vectors = vectors
        self.model = model
        self.embeddings = embeddings
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._thread: threading.Thread | None = None
        self.failures = 0

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"feedback-plugin-embedder[{self.model}]", daemon=True
        )
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        """Look for new pending turns now (a rating was just made)."""
        self._idle.clear()
        self._wake.set()

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is pending (in this file, for this model); ``False`` on timeout."""
        self.wake()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._idle.wait(0.05) and self.vectors.pending() == 0:
                return True
        return self.vectors.pending() == 0

    def stop(self, wait: float = 30.0) -> None:
        """Stop the thread and wait up to ``wait`` seconds for it to finish its batch: the
        index file closes next, and a thread still reading it would read a closed
        connection (a crash, not an error)."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(wait)
            if thread.is_alive():
                log.warning("feedback_plugin: the embedder thread did not stop in %.0fs", wait)

    def _run(self) -> None:
        """Embed leased batches; when none is left, look for turns that entered memory in
        any process (the index catches up with the store's change feed), then wait."""
        backoff, looked = 0.0, False
        while not self._stop.is_set():
            try:
                stamp, batch = self.vectors.lease(BATCH)
                if batch:
                    texts = [text for _, text in batch]
                    try:
                        vectors = self.embeddings.embed_documents(texts)
                    except Exception:
                        self.vectors.release(stamp, [t for t, _ in batch])
                        raise
                    done = dict(zip((t for t, _ in batch), vectors, strict=True))
                    self.vectors.store(self.model, stamp, done)
                    backoff, looked = 0.0, False
                    continue
                if not looked:
                    self.vectors.catch_up()
                    looked = True
                    continue
                self.vectors.maintain()  # approximate indexes built, snapshots written
                self._idle.set()
            except Exception as exc:  # a model or file error: logged, retried later
                self.failures += 1
                backoff = min(max(backoff * 2, 1.0), 60.0)
                log.error(
                    "feedback_plugin: embedding remembered turns failed (%s: %s); retry in %.0fs",
                    type(exc).__name__,
                    exc,
                    backoff,
                )
            self._wake.wait(backoff or POLL)
            self._wake.clear()
            looked = False
