"""Switch recording on for every LangChain run, and read sessions from ``configurable``.

``enable()`` works the way LangSmith tracing is switched on: langchain-core
asks each registered *configure hook* for a handler whenever it builds the
callbacks of a run, and ours answers with the enabled handler, so no
``callbacks=[...]`` is needed. ``enable()`` is process-wide (every thread);
``with enabled(...):`` applies to the current context only (and the tasks and
executor threads LangChain starts from it).

langchain-core >= 1.3 no longer copies ``config["configurable"]`` into the
metadata callbacks see, so a handler cannot read
``configurable={"session_id": ...}`` (the convention of
``RunnableWithMessageHistory``). :func:`with_configurable_session` wraps a
runnable so that those keys are copied into metadata before any run starts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig
from langchain_core.tracers.context import register_configure_hook

from .extract import SESSION_KEYS
from .handler import FeedbackCallbackHandler

if TYPE_CHECKING:
    from ..store import SessionStore

__all__ = ["disable", "enable", "enabled", "with_configurable_session"]

_scoped: ContextVar[FeedbackCallbackHandler | None] = ContextVar(
    "feedback_plugin_handler", default=None
)


class _HandlerSlot:
    """What the configure hook reads: the context's handler, else the process-wide one.

    langchain-core only calls ``.get()`` on a hook's variable; a plain
    ``ContextVar`` set in one thread would be invisible in threads started
    before or outside it, which ``enable()`` must reach.
    """

    def __init__(self) -> None:
        self.global_handler: FeedbackCallbackHandler | None = None

    def get(self) -> FeedbackCallbackHandler | None:
        return _scoped.get() or self.global_handler


_slot = _HandlerSlot()
register_configure_hook(_slot, inheritable=True)  # type: ignore[arg-type]


def enable(
    store: SessionStore | None = None,
    *,
    session_id: str | None = None,
    user: str | None = None,
    handler: FeedbackCallbackHandler | None = None,
) -> FeedbackCallbackHandler:
    """Record every LangChain run in this process; return the handler used.

    >>> import feedback_plugin, tempfile
    >>> h = feedback_plugin.enable(feedback_plugin.SessionStore(tempfile.mkdtemp()))
    >>> feedback_plugin.disable()
    """
    if handler is None:
        handler = FeedbackCallbackHandler(store, session_id=session_id, user=user)
    _slot.global_handler = handler
    return handler


def disable() -> None:
    """Stop what :func:`enable` started (explicit ``callbacks=[...]`` keep working)."""
    _slot.global_handler = None


@contextlib.contextmanager
def enabled(
    store: SessionStore | None = None,
    *,
    session_id: str | None = None,
    user: str | None = None,
    handler: FeedbackCallbackHandler | None = None,
) -> Iterator[FeedbackCallbackHandler]:
    """Record every LangChain run started inside the ``with`` block."""
    if handler is None:
        handler = FeedbackCallbackHandler(store, session_id=session_id, user=user)
    token = _scoped.set(handler)
    try:
        yield handler
    finally:
        _scoped.reset(token)


def _session_copier(keys: tuple[str, ...]) -> Callable[[RunnableConfig], RunnableConfig]:
    """A config factory copying session keys from ``configurable`` into ``metadata``.

    A config factory (not a ``RunnableBinding`` subclass field) so that
    ``.with_config()``, ``.bind()``, ``.with_types()``, ``.with_retry()`` and
    ``.with_listeners()`` on the wrapped runnable keep the keys.
    """

    def copy_session(config: RunnableConfig) -> RunnableConfig:
        configurable = config.get("configurable") or {}
        found = {k: configurable[k] for k in keys if k in configurable}
        if not found:
            return {}
        # explicit metadata wins over configurable
        return {"metadata": {**found, **(config.get("metadata") or {})}}

    return copy_session


def with_configurable_session(
    runnable: Runnable[Any, Any], keys: Sequence[str] | None = None
) -> Runnable[Any, Any]:
    """Wrap ``runnable`` so ``configurable={"session_id": ...}`` reaches the handler.

    Metadata given explicitly wins over ``configurable``. The keys copied are
    ``session_id``, ``thread_id``, ``conversation_id``, ``langfuse_session_id``
    and ``user_id`` unless ``keys`` says otherwise.
    """
    session_keys = (*SESSION_KEYS, "user_id") if keys is None else tuple(keys)
    return RunnableBinding(bound=runnable, config_factories=[_session_copier(session_keys)])
