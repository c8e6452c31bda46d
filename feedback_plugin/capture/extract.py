"""Read a chat turn out of LangChain callback payloads.

Pure functions, no state: the handler calls them with what LangChain passes.

>>> question_from({"question": "Why?", "history": []})
'Why?'
>>> answer_from({"answer": "Because.", "docs": []})
'Because.'
>>> session_id_from({"thread_id": "t-9"}, None)
't-9'

LangGraph graphs and agents keep a conversation as a ``messages`` list in
their state: :func:`turn_from_messages` reads the turn out of it (the
newest human message and the final AI message after it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.prompt_values import PromptValue

from ..memory import MEMORY_SOURCE
from ..models import MAX_ID_LENGTH

__all__ = [
    "SESSION_KEYS",
    "answer_from",
    "is_command",
    "is_interrupt",
    "json_safe",
    "memories_in",
    "messages_in",
    "question_from",
    "session_id_from",
    "turn_from_messages",
    "user_from",
    "user_from_config",
]

SESSION_KEYS = ("session_id", "thread_id", "conversation_id", "langfuse_session_id")
"""Metadata keys that name a session, in order of preference."""

_QUESTION_KEYS = ("question", "input", "query")
_ANSWER_KEYS = ("answer", "output", "result", "text")


def _id(value: object) -> str | None:
    if type(value) is str:  # the common case first
        return value or None
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, UUID)):
        return str(value)
    if isinstance(value, str):
        return value or None
    return None


def session_id_from(metadata: Mapping[str, Any] | None, default: str | None) -> str | None:
    """The first usable session id in ``metadata`` (see :data:`SESSION_KEYS`), else ``default``."""
    if metadata:
        for key in SESSION_KEYS:
            value = metadata.get(key)
            if value is not None and (found := _id(value)) is not None:
                return found
    return default


def user_from(metadata: Mapping[str, Any] | None, default: str | None) -> str | None:
    """``metadata["user_id"]`` if usable, else ``default``."""
    if metadata:
        value = metadata.get("user_id")
        if value is not None and (found := _id(value)) is not None:
            return found
    return default


def user_from_config(config: Mapping[str, Any] | None) -> str | None:
    """The user a LangGraph run was given: ``configurable["user_id"]``, else the
    runtime ``context`` (``context={"user_id": ...}`` or an object with ``user_id``).

    LangGraph keeps the runtime in ``configurable["__pregel_runtime"]`` of the
    config its nodes run with; callbacks never receive a config, so the
    handler reads this from the config of the code that is running.
    """
    if not config:
        return None
    configurable = config.get("configurable")
    if not configurable:
        return None
    found = _id(configurable.get("user_id"))
    if found is not None:
        return found
    context = getattr(configurable.get("__pregel_runtime"), "context", None)
    if context is None:
        return None
    if isinstance(context, Mapping):
        return _id(context.get("user_id"))
    return _id(getattr(context, "user_id", None))


def is_command(value: object) -> bool:
    """Whether ``value`` is a LangGraph ``Command`` (the input that resumes an interrupt)."""
    kind = type(value)
    return kind.__name__ == "Command" and kind.__module__.startswith("langgraph")


def is_interrupt(error: BaseException) -> bool:
    """Whether ``error`` is LangGraph pausing a run at ``interrupt()`` (not a failure)."""
    return any(
        kind.__name__ == "GraphInterrupt" and kind.__module__.startswith("langgraph")
        for kind in type(error).__mro__
    )


def memories_in(documents: Any) -> tuple[tuple[str, str], ...]:
    """``(session_id, qa_id)`` of each remembered turn among ``documents``: those whose
    metadata's ``source`` is :data:`~feedback_plugin.memory.MEMORY_SOURCE` (as
    :class:`~feedback_plugin.PositiveMemoryRetriever` writes them) with usable ids;
    any other document, or anything not a list of documents, gives nothing.

    >>> from langchain_core.documents import Document
    >>> memory = {"source": "feedback_plugin.memory", "session_id": "s1", "qa_id": "q1"}
    >>> memories_in([Document("Q/A", metadata=memory), Document("an article", metadata={})])
    (('s1', 'q1'),)
    """
    if not isinstance(documents, (list, tuple)):
        return ()
    found: list[tuple[str, str]] = []
    for doc in documents:
        meta = getattr(doc, "metadata", None)
        if type(meta) is not dict or meta.get("source") != MEMORY_SOURCE:
            continue
        session, qa = meta.get("session_id"), meta.get("qa_id")
        if type(session) is str and type(qa) is str and _usable(session) and _usable(qa):
            found.append((session, qa))
    return tuple(found)


def _usable(value: str) -> bool:
    """Whether :func:`~feedback_plugin.models.check_id` accepts this string."""
    return 0 < len(value) <= MAX_ID_LENGTH


def messages_in(state: Any) -> list[Any] | None:
    """The ``messages`` list of a LangGraph state (a dict), else ``None``."""
    if type(state) is dict or isinstance(state, Mapping):
        messages = state.get("messages")
        if isinstance(messages, list):
            return messages
    return None


def _role(message: Any) -> str | None:
    if isinstance(message, BaseMessage):
        return message.type
    if isinstance(message, tuple) and len(message) == 2:
        role = message[0]
    elif isinstance(message, Mapping):
        role = message.get("role") or message.get("type")
    else:
        return None
    return _ROLES.get(role, role) if isinstance(role, str) else None


_ROLES = {"user": "human", "assistant": "ai"}


def _text(message: Any) -> str:
    if isinstance(message, BaseMessage):
        return _exact(message.text)
    if isinstance(message, tuple):
        return str(message[1])
    content = message.get("content", "")
    return content if isinstance(content, str) else str(content)


def _calls_tools(message: Any) -> bool:
    if isinstance(message, BaseMessage):
        return bool(getattr(message, "tool_calls", None))
    return isinstance(message, Mapping) and bool(message.get("tool_calls"))


def turn_from_messages(messages: Sequence[Any]) -> tuple[str, str] | None:
    """``(question, answer)`` of the conversation's newest turn, or ``None`` if unfinished.

    The question is the newest human message; the answer the text of the
    final AI message after it, one that calls no tool (its content blocks
    joined as text). ``None`` when no such answer follows the question (the
    run paused or stopped before answering).

    >>> from langchain_core.messages import AIMessage, HumanMessage
    >>> turn_from_messages([HumanMessage("Hi?"), AIMessage("Hello."), HumanMessage("2+2?"),
    ...     AIMessage("", tool_calls=[{"name": "calc", "args": {}, "id": "1"}]),
    ...     AIMessage("4")])
    ('2+2?', '4')
    """
    for i in range(len(messages) - 1, -1, -1):
        if _role(messages[i]) == "human":
            break
    else:
        return None
    answer = None
    for message in messages[i + 1 :]:
        if _role(message) == "ai":
            answer = None if _calls_tools(message) else _text(message)
    return None if answer is None else (_text(messages[i]), answer)


def _exact(text: str) -> str:
    """``text`` as a plain ``str``: LangChain hands out ``str`` subclasses (a
    message's ``.text`` is a ``TextAccessor``), which the garbage collector
    keeps following while the turn waits in the write-behind queue."""
    return text if type(text) is str else str.__str__(text)


def _message_text(message: BaseMessage) -> str:
    return str(message.text)


def _last_human(messages: Sequence[Any]) -> str | None:
    for message in reversed(messages):
        if isinstance(message, BaseMessage) and message.type == "human":
            return _message_text(message)
        if isinstance(message, tuple) and len(message) == 2 and message[0] in ("human", "user"):
            return str(message[1])
        if isinstance(message, Mapping) and message.get("role") in ("human", "user"):
            return str(message.get("content", ""))
    return None


def _fallback(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


def question_from(inputs: Any) -> str:
    """The user's question in a root run's input.

    A string; a dict's ``question``/``input``/``query`` key (else its first
    string value); the last human message of a message list or prompt value.
    """
    if isinstance(inputs, str):
        return _exact(inputs)
    if type(inputs) is dict:  # the common case, before the slower ABC checks below
        return _question_in(inputs)
    if inputs is None:
        return ""
    if isinstance(inputs, PromptValue):
        inputs = inputs.to_messages()
    if isinstance(inputs, BaseMessage):
        return _message_text(inputs)
    if isinstance(inputs, Mapping):
        return _question_in(inputs)
    if isinstance(inputs, (list, tuple)):
        if inputs and isinstance(inputs[0], list):  # on_chat_model_start: list of lists
            inputs = inputs[0]
        found = _last_human(inputs)
        if found is not None:
            return found
        if inputs and isinstance(inputs[-1], str):
            return _exact(inputs[-1])
    return _fallback(inputs)


def _question_in(inputs: Mapping[str, Any]) -> str:
    for key in _QUESTION_KEYS:
        if key in inputs:
            value = inputs[key]
            if isinstance(value, str):
                return _exact(value)
            if isinstance(value, (list, tuple, BaseMessage, PromptValue)):
                return question_from(value)
    for value in inputs.values():
        if isinstance(value, str):
            return _exact(value)
    for value in inputs.values():
        if isinstance(value, (list, tuple)):
            found = _last_human(value)
            if found is not None:
                return found
    return _fallback(dict(inputs))


def answer_from(outputs: Any) -> str:
    """The final answer in a root run's output.

    A string; a message's content; a dict's ``answer``/``output``/``result``/``text``
    key; the first generation of an ``LLMResult``.
    """
    if isinstance(outputs, str):
        return _exact(outputs)
    if outputs is None:  # e.g. a stream abandoned before its first chunk was accounted
        return ""
    if isinstance(outputs, BaseMessage):
        return _message_text(outputs)
    if isinstance(outputs, LLMResult):
        if outputs.generations and outputs.generations[0]:
            generation = outputs.generations[0][0]
            if isinstance(generation, ChatGeneration):
                return _message_text(generation.message)
            return generation.text
        return ""
    if isinstance(outputs, Mapping):
        for key in _ANSWER_KEYS:
            if key in outputs:
                return answer_from(outputs[key])
        if len(outputs) == 1:
            return answer_from(next(iter(outputs.values())))
    return _fallback(outputs)


_SCALARS = (str, int, float, bool, type(None))


_PLAIN = frozenset((str, int, bool, type(None)))


def _is_json(value: Any, depth: int = 0) -> bool:
    if type(value) in _PLAIN:  # the common case, first and cheapest
        return True
    if isinstance(value, _SCALARS):
        return not isinstance(value, float) or (value == value and abs(value) != float("inf"))
    if depth > 8:
        return False
    if isinstance(value, (list, tuple)):
        return all(_is_json(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v, depth + 1) for k, v in value.items())
    return False


def json_safe(
    metadata: Mapping[str, Any] | None, tags: Sequence[str] | None = None
) -> dict[str, Any]:
    """The JSON-representable part of run metadata, plus ``tags`` under ``"tags"``.

    Tags become a tuple (a JSON array all the same): a dict of strings,
    numbers and tuples of strings is one the garbage collector need not
    follow while the turn waits in the write-behind queue.

    >>> json_safe({"model": "m1", "client": object()}, ["v2"])
    {'model': 'm1', 'tags': ('v2',)}
    """
    out = {}
    if metadata:
        for k, v in metadata.items():
            if (type(v) in _PLAIN or _is_json(v)) and isinstance(k, str):
                out[k] = v
    if tags:
        out["tags"] = tuple(tags)
    return out
