"""Process lifecycle: queued turns are written at exit, and a forked child starts clean.

Every store and its write-behind queue are tracked in weak sets. At
interpreter exit (``atexit``) each open store is closed, which writes what
it queued; a queue whose store was dropped right after ``record()`` is
written too (its thread holds it alive). A ``multiprocessing`` child leaves
through ``os._exit``, which skips ``atexit``, so a writer starting in a new
process registers a ``multiprocessing`` finalizer there. A forked child
forgets the parent's queues and threads: the parent writes them.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import weakref
from typing import Any, Protocol

from .writer import WriteBehind

__all__ = ["ensure_exit_hook", "track"]

log = logging.getLogger("feedback_plugin")


class _Closable(Protocol):
    def close(self) -> None: ...


_open_stores: weakref.WeakSet[Any] = weakref.WeakSet()
# A writer outlives its store while its thread runs (the thread holds it), so a
# store dropped right after record() still has its queued turns written at exit.
_open_writers: weakref.WeakSet[WriteBehind[Any]] = weakref.WeakSet()


def track(store: _Closable, writer: WriteBehind[Any]) -> None:
    """Close ``store`` and write ``writer``'s queue at exit (weakly: no leak)."""
    _open_stores.add(store)
    _open_writers.add(writer)


def _flush_all_at_exit() -> None:
    for store in list(_open_stores):
        try:
            store.close()
        except Exception:
            log.exception("feedback_plugin: turns still queued in %r were lost at exit", store)
    for writer in list(_open_writers):  # also waits for a batch its thread has in flight
        try:
            writer.close()
        except Exception:
            log.exception("feedback_plugin: %d queued turns were lost at exit", len(writer))


_exit_hook_pid = os.getpid()  # atexit covers the importing process


def ensure_exit_hook() -> None:
    """Flush at the end of a ``multiprocessing`` child too (called as a writer starts).

    A forked child leaves through ``os._exit``, which skips ``atexit``; its
    ``multiprocessing`` finalizers still run, so register one there (the child
    clears the registry it inherited, hence on first use, not at fork time).
    """
    global _exit_hook_pid
    if _exit_hook_pid == os.getpid():
        return
    _exit_hook_pid = os.getpid()
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None:
        mp_util.Finalize(None, _flush_all_at_exit, exitpriority=0)


def _reset_after_fork() -> None:
    """In a forked child: forget the parent's queues and threads (the parent writes them)."""
    for writer in list(_open_writers):  # every store's, and those of stores already dropped
        writer.after_fork()


atexit.register(_flush_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
