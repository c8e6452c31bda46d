"""Read a chat turn out of LangChain callback payloads.

Pure functions, no state: the handler calls them with what LangChain passes.

>>> question_from({"question": "Why?", "history": []})
'Why?'
>>> answer_from({"answer": "Because.", "docs": []})
'Because.'
>>> session_id_from({"thread_id": "t-9"}, None)
't-9'
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.prompt_values import PromptValue

__all__ = [
    "SESSION_KEYS",
    "answer_from",
    "json_safe",
    "question_from",
    "session_id_from",
    "user_from",
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
