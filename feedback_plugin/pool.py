"""The library's worker threads: where blocking calls made by async callers run.

SQLite (diskcache, the memory index) has no async driver. An async method
that needs it runs the sync call here, with the caller's context carried
along, so the event loop keeps ticking. Two lanes, shared by every store of
the process:

* reads (:func:`in_thread`): :data:`WORKERS` threads, each with its own
  SQLite read connections (WAL readers run at once);
* meaning (:func:`beside`): :data:`WORKERS` threads where a sync memory
  search runs its by-meaning half while the caller's thread runs the words
  half (their own lane: a task there never waits for another, so a search
  made from a read thread cannot starve it);
* writes (:func:`in_writer_thread`): one thread. Writers to a store take
  turns anyway (one SQLite write lock), and one thread keeps one connection
  whose page cache stays warm: writes spread over several threads' connections
  each found the others' changes and re-read pages (a rating took a third
  longer).

Few threads on purpose: the work holds the GIL between I/O calls, and a
crowd of worker threads would take it from the event loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["WORKERS", "beside", "in_thread", "in_writer_thread"]

WORKERS = 2
"""Threads that run the library's blocking calls for async callers (one pool per process)."""

_T = TypeVar("_T")
_pools: dict[str, ThreadPoolExecutor] = {}
_lock = threading.Lock()


def _executor(lane: str = "read") -> ThreadPoolExecutor:
    pool = _pools.get(lane)
    if pool is None:
        with _lock:
            pool = _pools.get(lane)
            if pool is None:
                pool = _pools[lane] = ThreadPoolExecutor(
                    1 if lane == "write" else WORKERS,
                    thread_name_prefix=f"feedback-plugin-{lane}",
                )
    return pool


def beside(fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
    """Start ``fn(*args, **kwargs)`` in the meaning lane, with the caller's context; the
    caller goes on with other work and then waits for the future."""
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return _executor("meaning").submit(call)


async def in_thread(fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
    """``fn(*args, **kwargs)`` in the library's read threads, with the caller's context."""
    return await _run("read", fn, *args, **kwargs)


async def in_writer_thread(fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
    """``fn(*args, **kwargs)`` in the library's write thread, with the caller's context."""
    return await _run("write", fn, *args, **kwargs)


async def _run(lane: str, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_executor(lane), call)
