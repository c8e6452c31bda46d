"""A scripted chat model for agent tests: tool calling and streaming, no network.

:class:`ScriptedChatModel` subclasses LangChain's ``BaseChatModel`` (the real
API, not a mock): it answers each call with the next item of its script and
remembers the messages every call received, so a test can check what the
model was shown (a system message with injected memories, say).
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field, PrivateAttr

from feedback_plugin.integrations.offline_model import message_chunks

Step = str | AIMessage | Callable[[list[BaseMessage]], "str | AIMessage"]


def tool_call(name: str, args: dict[str, Any], call_id: str | None = None) -> AIMessage:
    """A model turn that calls one tool."""
    return AIMessage(
        content="",
        tool_calls=[{"name": name, "args": args, "id": call_id or f"call-{uuid.uuid4().hex[:8]}"}],
    )


class ScriptedChatModel(BaseChatModel):
    """Answers call ``i`` with ``script[i]`` (cycling when ``cycle``); records every call.

    A step is a string (the answer), an ``AIMessage`` (tool calls included) or a
    function of the messages received that returns either.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    script: list[Any] = Field(default_factory=list)
    cycle: bool = False
    _calls: list[list[BaseMessage]] = PrivateAttr(default_factory=list)
    _position: Iterator[int] = PrivateAttr(default_factory=itertools.count)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    tools_bound: list[str] = Field(default_factory=list)

    @property
    def calls(self) -> list[list[BaseMessage]]:
        """The messages of every call so far, in order."""
        return self._calls

    def system_prompts(self) -> list[str]:
        """The system message text each call received ("" when it had none)."""
        out = []
        for messages in self._calls:
            system = [m for m in messages if m.type == "system"]
            out.append(str(system[0].text) if system else "")
        return out

    @property
    def _llm_type(self) -> str:
        return "scripted-chat-model"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        names = [getattr(t, "name", None) or getattr(t, "__name__", str(t)) for t in tools]
        self.tools_bound[:] = names
        return self

    def _next(self, messages: list[BaseMessage]) -> AIMessage:
        with self._lock:
            self._calls.append(list(messages))
            i = next(self._position)
        if not self.script:
            raise RuntimeError("ScriptedChatModel has no script")
        if i >= len(self.script):
            if not self.cycle:
                raise RuntimeError(f"ScriptedChatModel: script of {len(self.script)} ran out")
            i %= len(self.script)
        step = self.script[i]
        if callable(step) and not isinstance(step, AIMessage):
            step = step(list(messages))
        message = AIMessage(content=step) if isinstance(step, str) else step.model_copy()
        if message.id is None:
            message.id = f"run-{uuid.uuid4()}"
        return message

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._next(messages))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield from message_chunks(self._next(messages))
