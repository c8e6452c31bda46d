"""FeedbackCallbackHandler: records one turn per root LangChain run.

Run state lives in a tiny :class:`_Turn` per *root* run, keyed by ``run_id``;
every run below a root maps to it in ``_root_of``. Both are freed when the
root ends or fails, so a long-lived handler holds nothing between turns.
Callbacks may arrive from many threads (``batch``) or tasks (``abatch``) at
once: each touches only its own run's state through single dict operations.

Every callback body is guarded: a failure here (or in the store) is logged
and never reaches the user's chain, unless ``raise_error=True``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler

from .extract import answer_from, json_safe, question_from, session_id_from, user_from

if TYPE_CHECKING:
    from langchain_core.documents import Document
    from langchain_core.messages import BaseMessage
    from langchain_core.outputs import LLMResult

    from ..store import SessionStore

__all__ = ["FeedbackCallbackHandler"]

log = logging.getLogger("feedback_plugin")

_MODEL_KEYS = ("ls_provider", "ls_model_name")


@dataclass(slots=True)
class _Turn:
    """What a root run has shown so far."""

    kind: str  # "chain" | "llm" | "other" (retriever or tool as root: not a chat turn)
    session_id: str | None
    user: str | None
    inputs: Any
    metadata: dict[str, Any]
    context: list[str] = field(default_factory=list)
    children: list[UUID] = field(default_factory=list)


class FeedbackCallbackHandler(BaseCallbackHandler):
    """Record every chat turn of a chain into a :class:`~feedback_plugin.SessionStore`.

    Args:
        store: where turns go; ``None`` uses the default store
            (``$FEEDBACK_PLUGIN_DIR``, see :mod:`feedback_plugin.session`).
        session_id: used when the run's metadata names no session.
        user: used when the run's metadata has no ``user_id``.
        raise_error: write each turn synchronously and let store failures
            propagate into the chain (default: log them, never break the chain).

    The turn's ``qa_id`` is ``str(root run_id)``: pass ``config={"run_id": ...}``
    to know it before the answer is shown.
    """

    run_inline = True  # cheap, non-blocking: no executor hop under asyncio

    def __init__(
        self,
        store: SessionStore | None = None,
        *,
        session_id: str | None = None,
        user: str | None = None,
        raise_error: bool = False,
    ) -> None:
        from ..models import check_id, check_user

        if store is None:
            from ..session import default_store

            store = default_store()
        self.store = store
        self.session_id = None if session_id is None else check_id(session_id)
        self.user = check_user(user)
        self.raise_error = raise_error
        self._turns: dict[UUID, _Turn] = {}
        self._root_of: dict[UUID, UUID] = {}

    def __repr__(self) -> str:
        return f"FeedbackCallbackHandler({self.store!r}, session_id={self.session_id!r})"

    @property
    def active_runs(self) -> int:
        """Root runs in flight (0 whenever no chain is running)."""
        return len(self._turns)

    def _failed(self, event: str) -> None:
        """Called from an ``except`` block: log (the chain goes on) or re-raise."""
        if self.raise_error:
            raise  # re-raises the exception being handled by the caller
        log.exception("feedback_plugin: %s failed; the chain goes on", event)

    # -- run tracking ----------------------------------------------------------

    def _start(
        self,
        kind: str,
        run_id: UUID,
        parent_run_id: UUID | None,
        inputs: Any,
        tags: list[str] | None,
        metadata: dict[str, Any] | None,
    ) -> _Turn | None:
        """Track a starting run; return its root's turn if this run is a child."""
        if parent_run_id is not None:
            root = self._root_of.get(parent_run_id)
            if root is not None:
                self._root_of[run_id] = root
                turn = self._turns.get(root)
                if turn is not None:
                    turn.children.append(run_id)
                    if turn.session_id is None and metadata:
                        # e.g. with_configurable_session(...) wrapping an inner step only
                        turn.session_id = session_id_from(metadata, None)
                        turn.user = user_from(metadata, turn.user)
                return turn
        self._root_of[run_id] = run_id
        self._turns[run_id] = _Turn(
            kind=kind,
            session_id=session_id_from(metadata, self.session_id),
            user=user_from(metadata, self.user),
            inputs=inputs,
            metadata=json_safe(metadata, tags),
        )
        return None

    def _end(self, run_id: UUID) -> _Turn | None:
        """Forget a finished run; return its turn if it was a root."""
        root = self._root_of.pop(run_id, None)
        if root is None or root != run_id:
            return None
        turn = self._turns.pop(run_id, None)
        if turn is not None:
            for child in turn.children:
                self._root_of.pop(child, None)
        return turn

    def _record(self, run_id: UUID, turn: _Turn, inputs: Any, outputs: Any) -> None:
        if turn.session_id is None or turn.kind == "other":
            return
        question, answer = question_from(inputs), answer_from(outputs)
        if self.raise_error:  # written now, so a store failure reaches the chain
            self.store.record(
                turn.session_id,
                question,
                answer,
                turn.context,
                user=turn.user,
                metadata=turn.metadata,
                qa_id=str(run_id),
                wait=True,
            )
        else:  # queued as fields: the writer thread builds and stores the entry
            self.store.record_trusted(
                turn.session_id,
                question,
                answer,
                turn.context,
                turn.user,
                turn.metadata,
                str(run_id),
            )

    # -- chains ----------------------------------------------------------------

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            self._start("chain", run_id, parent_run_id, inputs, tags, metadata)
        except Exception:
            self._failed("on_chain_start")

    def on_chain_end(
        self,
        outputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            turn = self._end(run_id)
            if turn is not None:
                # Under stream()/astream() the start saw a placeholder; the real input comes here.
                inputs = kwargs.get("inputs")
                self._record(run_id, turn, turn.inputs if inputs is None else inputs, outputs)
        except Exception:
            self._failed("on_chain_end")

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            self._end(run_id)
        except Exception:
            self._failed("on_chain_error")

    # -- models ----------------------------------------------------------------

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            self._model_start(run_id, parent_run_id, messages, tags, metadata)
        except Exception:
            self._failed("on_chat_model_start")

    def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            self._model_start(run_id, parent_run_id, prompts[0] if prompts else "", tags, metadata)
        except Exception:
            self._failed("on_llm_start")

    def _model_start(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        inputs: Any,
        tags: list[str] | None,
        metadata: dict[str, Any] | None,
    ) -> None:
        root_turn = self._start("llm", run_id, parent_run_id, inputs, tags, metadata)
        if root_turn is not None and metadata:
            for key in _MODEL_KEYS:  # name the model in the turn's metadata
                if key in metadata and key not in root_turn.metadata:
                    root_turn.metadata[key] = metadata[key]

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            turn = self._end(run_id)
            if turn is not None:
                self._record(run_id, turn, turn.inputs, response)
        except Exception:
            self._failed("on_llm_end")

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            self._end(run_id)
        except Exception:
            self._failed("on_llm_error")

    # -- retrievers and tools --------------------------------------------------

    def on_retriever_start(
        self,
        serialized: dict[str, Any] | None,
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            self._start("other", run_id, parent_run_id, query, tags, metadata)
        except Exception:
            self._failed("on_retriever_start")

    def on_retriever_end(
        self, documents: Sequence[Document], *, run_id: UUID, **kwargs: Any
    ) -> None:
        try:
            root = self._root_of.get(run_id)
            turn = None if root is None else self._turns.get(root)
            if turn is not None and root != run_id:
                turn.context.extend(doc.page_content for doc in documents)
            self._end(run_id)
        except Exception:
            self._failed("on_retriever_end")

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            self._end(run_id)
        except Exception:
            self._failed("on_retriever_error")

    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            self._start("other", run_id, parent_run_id, input_str, tags, metadata)
        except Exception:
            self._failed("on_tool_start")

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            self._end(run_id)
        except Exception:
            self._failed("on_tool_end")

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            self._end(run_id)
        except Exception:
            self._failed("on_tool_error")
