"""The demo's *offline responder*: a deterministic chat model for ``create_agent``.

:class:`OfflineChatModel` is a real LangChain ``BaseChatModel`` (tool calling
through ``bind_tools``, token streaming, sync and async) that needs no network
and no key. It answers the way an agent with one help-centre tool would:

1. on the first model call of a turn (no tool result after the newest human
   message yet) it calls the help-centre tool (:attr:`OfflineChatModel.tool_name`)
   with the question as its ``query``;
2. on the next call it answers: with a liked (or corrected) earlier answer when
   the system message holds one that fits the question (the
   ``<liked_answers>`` block that :class:`~feedback_plugin.middleware.FeedbackMiddleware`
   adds, read by :func:`parse_liked_answers`), else with the first
   ``Suggested reply:`` line of the tool result (the demo formats each
   article that way), else with :data:`NO_ANSWER`.

Without a bound tool it skips step 1. A liked answer fits in one of two ways:

* its question shares at least :data:`REUSE_SIMILARITY` of the new question's
  content words (:func:`similarity`): the same question again, so the answer
  comes back word for word;
* the memory found it by meaning: the block's example says so
  (``found_by="meaning"`` or ``"words+meaning"``, as the demo's middleware
  writes it) with a cosine ``similarity`` of at least :data:`REUSE_MEANING`.
  The same question in other words ("I forgot my login credentials, what
  now?" for a liked "How do I reset my password?") shares no word to match;
  the memory's own judgement is used, not the responder's word matching. The
  answer comes back introduced by :data:`LIKED_PREFIX`, so the reader sees
  where it came from. Of several, the most similar is used.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolCallChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

__all__ = [
    "HELP_TOOL",
    "LIKED_PREFIX",
    "NO_ANSWER",
    "OFFLINE_RESPONDER",
    "REPLY_PREFIX",
    "REUSE_MEANING",
    "REUSE_SIMILARITY",
    "LikedAnswer",
    "OfflineChatModel",
    "content_words",
    "message_chunks",
    "parse_liked_answers",
    "reused_answer",
    "similarity",
]

OFFLINE_RESPONDER = "offline responder"
"""The responder label of the built-in, no-LLM responder."""

HELP_TOOL = "search_help_centre"
"""The name of the demo's help-centre retriever tool."""

REPLY_PREFIX = "Suggested reply: "
"""The line of a help-centre tool result that holds the article's ready answer."""

NO_ANSWER = (
    "I couldn't find that in the Acme Notes help centre. Try rephrasing, or ask about "
    "passwords, invoices, exporting, working offline, sharing or deleting your account."
)

REUSE_SIMILARITY = 0.5
"""A liked answer is reused when its question shares this fraction of content words
(Jaccard) with the new one."""

REUSE_MEANING = 0.4
"""A liked answer the memory found by meaning is reused from this cosine similarity
to the question (all-MiniLM-L6-v2 gives a paraphrase about 0.5-0.7, a question
about something else under 0.3; memory's own floor is 0.3)."""

LIKED_PREFIX = "From an answer you liked: "
"""What a liked answer found by meaning is introduced with."""

_STOPWORDS_TEXT = """
a an and are as at be by can do does for from how i if in is it me my of on or our so that
the their there this to up we what when where which who why will with you your
"""
_STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


def content_words(text: str) -> set[str]:
    """Lower-case content words, with a crude plural fold ("invoices" ~ "invoice")."""
    out = set()
    for word in re.findall(r"[a-z0-9]+", text.lower()):
        if word in _STOPWORDS or len(word) < 2:
            continue
        out.add(word[:-1] if len(word) > 3 and word.endswith("s") else word)
    return out


def similarity(a: str, b: str) -> float:
    """The Jaccard similarity of the content words of ``a`` and ``b`` (0 when either has none)."""
    wa, wb = content_words(a), content_words(b)
    return len(wa & wb) / len(wa | wb) if wa and wb else 0.0


# -- the <liked_answers> block of FeedbackMiddleware --------------------------------------


@dataclass(frozen=True)
class LikedAnswer:
    """One example of a ``<liked_answers>`` block: a liked turn as the model was shown it."""

    qa_id: str
    question: str
    answer: str
    """The corrected answer when the turn was corrected, else its answer."""
    found_by: str | None = None
    """How memory found it, when the block says: ``"words"``, ``"meaning"`` or
    ``"words+meaning"`` (the example's ``found_by`` attribute)."""
    similarity: float | None = None
    """Its cosine similarity to the question, when found by meaning (``similarity``)."""


_BLOCK = re.compile(r"<liked_answers>\n(.*?)\n</liked_answers>", re.DOTALL)
_EXAMPLE = re.compile(
    r'<example qa_id="(?P<qa_id>[^"\n]*)"(?P<attrs>(?: [a-z_]+="[^"\n]*")*)>\n'
    r"Question: (?P<question>.*?)\n"
    r"Answer: (?P<answer>.*?)\n</example>(?=\n<example |\Z)",
    re.DOTALL,
)
_ATTR = re.compile(r' ([a-z_]+)="([^"\n]*)"')


def parse_liked_answers(text: str) -> list[LikedAnswer]:
    """The examples of the ``<liked_answers>`` block in ``text`` (a system message), in order.

    The block is :func:`feedback_plugin.middleware.memory_block`'s format; text
    without one gives ``[]``. An example may carry ``found_by`` and ``similarity``
    attributes after its ``qa_id`` (the demo's middleware writes them). A question
    that itself contains a line starting with ``Answer: `` is cut there (the format
    has no escaping).

    >>> parse_liked_answers('''Be brief.
    ...
    ... <liked_answers>
    ... Answers this user liked before (a corrected answer is the right one). Follow ...
    ... <example qa_id="q1">
    ... Question: Hi?
    ... Answer: Hello!
    ... </example>
    ... </liked_answers>''')
    [LikedAnswer(qa_id='q1', question='Hi?', answer='Hello!', found_by=None, similarity=None)]
    """
    found = _BLOCK.search(text)
    if found is None:
        return []
    body = found.group(1)
    start = body.find("<example ")
    if start < 0:
        return []
    return [_liked(m) for m in _EXAMPLE.finditer(body[start:])]


def _liked(found: re.Match[str]) -> LikedAnswer:
    attrs = dict(_ATTR.findall(found.group("attrs")))
    try:
        similarity: float | None = float(attrs["similarity"])
    except (KeyError, ValueError):
        similarity = None
    return LikedAnswer(
        found.group("qa_id"),
        found.group("question"),
        found.group("answer"),
        attrs.get("found_by"),
        similarity,
    )


def reused_answer(answer: str) -> str:
    """A liked answer found by meaning as the responder gives it: after :data:`LIKED_PREFIX`
    (once: an answer that came back this way and was liked again is not prefixed twice)."""
    while answer.startswith(LIKED_PREFIX):
        answer = answer[len(LIKED_PREFIX) :]
    return LIKED_PREFIX + answer


# -- the model ----------------------------------------------------------------------------


def _text(message: BaseMessage) -> str:
    return str(message.text)


def _tokens(text: str) -> list[str]:
    """``text`` cut into word tokens that keep their following space ("Go ", "to ", ...)."""
    return re.findall(r"\S+\s*|\s+", text)


class OfflineChatModel(BaseChatModel):
    """A no-network, deterministic tool-calling chat model (see the module docstring).

    Example::

        from langchain.agents import create_agent
        agent = create_agent(OfflineChatModel(), tools=[help_centre_tool],
                             middleware=[FeedbackMiddleware(store)])
    """

    tool_name: str = HELP_TOOL
    """The tool called with the question on a turn's first model call."""
    no_answer: str = NO_ANSWER
    """The answer when neither a liked answer nor the tool result gives one."""
    reuse_similarity: float = REUSE_SIMILARITY
    """How alike a liked answer's question must be to be reused (see :func:`similarity`)."""
    reuse_meaning: float = REUSE_MEANING
    """How similar in meaning a liked answer the memory found by meaning must be to be
    reused (the block's ``similarity``)."""

    @property
    def _llm_type(self) -> str:
        return "feedback-plugin-offline"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "tool_name": self.tool_name,
            "reuse_similarity": self.reuse_similarity,
            "reuse_meaning": self.reuse_meaning,
        }

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """This model with ``tools`` bound (only their names matter to it)."""
        specs = [convert_to_openai_tool(tool) for tool in tools]
        return self.bind(tools=specs, **kwargs)

    # -- deciding -----------------------------------------------------------------------

    def reply(self, messages: Sequence[BaseMessage], tools: Sequence[Any] = ()) -> AIMessage:
        """The model's next message for ``messages``, given the bound ``tools`` (specs)."""
        names = {_tool_name(spec) for spec in tools}
        last_human = max((i for i, m in enumerate(messages) if m.type == "human"), default=-1)
        question = _text(messages[last_human]) if last_human >= 0 else ""
        results = [m for m in messages[last_human + 1 :] if m.type == "tool"]
        if self.tool_name in names and not results:
            call = {
                "name": self.tool_name,
                "args": {"query": question},
                "id": f"offline-call-{len(messages)}",
                "type": "tool_call",
            }
            return AIMessage(content="", tool_calls=[call])
        return AIMessage(content=self._answer(messages, question, results))

    def _answer(
        self, messages: Sequence[BaseMessage], question: str, results: Sequence[BaseMessage]
    ) -> str:
        system = "\n".join(_text(m) for m in messages if m.type == "system")
        liked = parse_liked_answers(system)
        for example in liked:  # the same question again: the answer word for word
            if similarity(question, example.question) >= self.reuse_similarity:
                return example.answer
        by_meaning = [  # the same question in other words, as the memory judged it
            (example.similarity, i, example)
            for i, example in enumerate(liked)
            if example.found_by in ("meaning", "words+meaning")
            and example.similarity is not None
            and example.similarity >= self.reuse_meaning
        ]
        if by_meaning:
            _, _, closest = max(by_meaning, key=lambda found: (found[0], -found[1]))
            return reused_answer(closest.answer)
        for result in results:
            for line in _text(result).splitlines():
                if line.startswith(REPLY_PREFIX) and line[len(REPLY_PREFIX) :].strip():
                    return line[len(REPLY_PREFIX) :].strip()
        return self.no_answer

    # -- BaseChatModel ------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        message = self.reply(messages, kwargs.get("tools") or ())
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield from message_chunks(self.reply(messages, kwargs.get("tools") or ()))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in message_chunks(self.reply(messages, kwargs.get("tools") or ())):
            yield chunk


def _tool_name(spec: Any) -> str | None:
    if isinstance(spec, dict):
        function = spec.get("function")
        name = function.get("name") if isinstance(function, dict) else spec.get("name")
        return name if isinstance(name, str) else None
    return None


def message_chunks(message: AIMessage) -> Iterator[ChatGenerationChunk]:
    """``message`` as stream chunks: its words, then its tool calls as one chunk.

    For chat models that stream a reply they have whole (offline and scripted
    models): what ``_stream`` yields.
    """
    tokens = _tokens(_text(message))
    for token in tokens:
        yield ChatGenerationChunk(message=AIMessageChunk(content=token))
    if not tokens and not message.tool_calls:
        yield ChatGenerationChunk(message=AIMessageChunk(content=""))
    if message.tool_calls:
        calls = [
            ToolCallChunk(
                name=call["name"],
                args=_json(call["args"]),
                id=call["id"],
                index=i,
                type="tool_call_chunk",
            )
            for i, call in enumerate(message.tool_calls)
        ]
        yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=calls))


def _json(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)
