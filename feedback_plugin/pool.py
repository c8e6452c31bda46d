"""The library's worker pool: where blocking calls made by async callers run.

SQLite (diskcache, the memory index) has no async driver. An async method
that needs it runs the sync call here, in one of :data:`WORKERS` threads
shared by every store of the process, with the caller's context carried
along, so the event loop keeps ticking. Few threads on purpose: the work
holds the GIL between I/O calls, and a crowd of worker threads would take
it from the event loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["WORKERS", "in_thread"]

WORKERS = 2
"""Threads that run the library's blocking calls for async callers (one pool per process)."""

_T = TypeVar("_T")
_pool: ThreadPoolExecutor | None = None
_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        with _lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="feedback-plugin-async")
    return _pool


async def in_thread(fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
    """``fn(*args, **kwargs)`` in the library's worker pool, with the caller's context."""
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_executor(), call)
