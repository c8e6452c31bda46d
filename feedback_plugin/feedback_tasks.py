"""Background feedback tasks: :meth:`SessionStore.submit_feedback`'s task board.

A task is one ``process_feedback`` call run in a worker thread. Its
:class:`~feedback_plugin.interpretation.FeedbackTask` moves ``pending`` ->
``running`` -> ``done`` (with the :class:`FeedbackResult`, applied or not) or
``failed`` (with ``"Type: message"`` of the exception: a model that raised, a
store that is down). No exception leaves a worker.

Where tasks live
    In this process's memory, one board per store object: not in the store,
    so another process (or a restart) does not see them. A task is visible
    only to the user who submitted it. Pending and running tasks are all
    kept; of the finished ones, the newest :data:`MAX_FINISHED` (the oldest
    finished is dropped first).

Threads
    :data:`WORKERS` threads per process, shared by every store, started on
    the first submit, apart from the library's I/O pool (:mod:`.pool`): a
    model call takes seconds, and must not hold up the store's async
    reads. Each task runs with the submitter's context (tracing, ...). At
    interpreter exit, Python waits for the tasks already submitted.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from . import calls
from .interpretation import FeedbackResult
from .models import utcnow

__all__ = ["MAX_FINISHED", "WORKERS", "FeedbackTask", "TaskBoard", "board"]

log = logging.getLogger("feedback_plugin")

MAX_FINISHED = 1000
"""Finished tasks kept per store object (the oldest finished is dropped first)."""
WORKERS = 2
"""Threads that run background feedback tasks (one pool per process)."""

_executor: ThreadPoolExecutor | None = None
_lock = threading.Lock()


class FeedbackTask(BaseModel):
    """A background :meth:`SessionStore.submit_feedback` call, as it stands."""

    task_id: str
    status: Literal["pending", "running", "done", "failed"]
    session_id: str
    result: FeedbackResult | None = None
    """Set when ``status`` is ``"done"`` (``result.applied`` may still be False)."""
    error: str | None = None
    """Set when ``status`` is ``"failed"``: ``"Type: message"`` of the exception."""
    submitted_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="feedback-plugin-interpret")
        return _executor


class _Task:
    __slots__ = ("state", "user")

    def __init__(self, state: FeedbackTask, user: str | None) -> None:
        self.state = state
        self.user = user


class TaskBoard:
    """One store's background tasks: submitted, read, and the finished ones trimmed."""

    def __init__(self, max_finished: int = MAX_FINISHED) -> None:
        self.max_finished = max_finished
        self._tasks: OrderedDict[str, _Task] = OrderedDict()
        self._finished: deque[str] = deque()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._tasks)

    def submit(self, user: str | None, session_id: str, work: Callable[[], FeedbackResult]) -> str:
        """Queue ``work`` for ``user``; return the new task's id."""
        task_id = str(uuid.uuid4())
        state = FeedbackTask(task_id=task_id, status="pending", session_id=session_id)
        with self._lock:
            self._tasks[task_id] = _Task(state, user)
        context = contextvars.copy_context()
        _pool().submit(context.run, self._run, task_id, work)
        return task_id

    def get(self, task_id: str, user: str | None) -> FeedbackTask | None:
        """The task as it stands (a copy), or ``None``: unknown, dropped, another user's."""
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None or task.user != user:
                return None
            return task.state.model_copy()

    def _set(self, task_id: str, **changes: object) -> None:
        with self._lock:
            task = self._tasks[task_id]
            task.state = task.state.model_copy(update=changes)
            if changes.get("status") in ("done", "failed"):
                self._finished.append(task_id)
                while len(self._finished) > self.max_finished:
                    self._tasks.pop(self._finished.popleft(), None)

    def _run(self, task_id: str, work: Callable[[], FeedbackResult]) -> None:
        try:
            self._set(task_id, status="running")
            result = work()
        except BaseException as exc:  # a worker never dies of a task
            log.warning(
                "feedback_plugin: feedback task %s failed: %s", task_id, calls.describe(exc)
            )
            self._set(task_id, status="failed", error=calls.describe(exc), finished_at=utcnow())
            if not isinstance(exc, Exception):
                raise
        else:
            self._set(task_id, status="done", result=result, finished_at=utcnow())


_boards_lock = threading.Lock()


def board(store: object) -> TaskBoard:
    """The task board of ``store`` (made on first use, kept on the store object)."""
    found = vars(store).get("_feedback_tasks")
    if found is None:
        with _boards_lock:
            found = vars(store).setdefault("_feedback_tasks", TaskBoard())
    assert isinstance(found, TaskBoard)
    return found
