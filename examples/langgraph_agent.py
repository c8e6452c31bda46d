#!/usr/bin/env python3
"""A LangChain v1 agent whose users rate its answers, and which remembers what they liked.

An "Acme Notes" support agent built with ``langchain.agents.create_agent``:

* tools: ``search_help_centre`` (``create_retriever_tool`` over the six
  help-centre articles in ``examples/data/docs.json``), ``calculator``, and
  the ``FeedbackToolkit`` tools (say "thanks, perfect" and the agent rates
  its previous answer itself: the toolkit follows the thread it runs in);
* ``FeedbackMiddleware``: every agent turn is recorded (question, final
  answer, the articles the retriever tool found), its ``qa_id`` arrives on
  the ``custom`` stream before the first token, and the user's liked answers
  that match a new question are added to the model's system message;
* a terminal thumbs loop: ask, watch the answer stream, rate it 👍 / 👎
  (``store.thumbs``) or skip.

Runs offline with no API key: ``OfflineAgentModel`` below is a small
deterministic chat model that calls tools like a real one (it reads the
tool results and the liked answers it is shown). Set
``FEEDBACK_PLUGIN_CHAT_MODEL=openai:gpt-4o-mini`` (any ``init_chat_model``
name, with its provider package installed) for a real model; the rest stays
the same.

    pip install -e '.[agents]'
    python examples/langgraph_agent.py                   # type questions, rate with + / - / Enter
    python examples/langgraph_agent.py --script          # a built-in run: 4 turns, memory at work
    python examples/langgraph_agent.py --script "How do I reset my password?" + \\
        "I forgot my password" skip                      # your own: QUESTION RATING ...
    printf 'How do I reset my password?\\n+\\n' | python examples/langgraph_agent.py

A rating is ``+`` / ``up``, ``-`` / ``down`` or ``skip`` (Enter when typing).
Turns are stored under ``./data/demo-store`` in the repository (or
``$FEEDBACK_PLUGIN_DIR``, or ``--store DIR``), for user ``--user`` (default
``demo-user``): liked answers come back in later runs too.
"""

from __future__ import annotations

import argparse
import ast
import json
import operator
import os
import re
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.callbacks import CallbackManagerForLLMRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.retrievers import BaseRetriever
from langchain_core.tools import BaseTool, create_retriever_tool, tool
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import Field

from feedback_plugin import FeedbackToolkit, SessionStore
from feedback_plugin.integrations.offline_model import message_chunks
from feedback_plugin.middleware import FeedbackMiddleware

HERE = Path(__file__).resolve().parent
DOCS_FILE = HERE / "data" / "docs.json"
DEFAULT_STORE = HERE.parent / "data" / "demo-store"
ENV_CHAT_MODEL = "FEEDBACK_PLUGIN_CHAT_MODEL"

SYSTEM_PROMPT = (
    "You are the support assistant of Acme Notes, a note-taking app. Answer from the help "
    "centre (search_help_centre), use calculator for arithmetic, and when the user says what "
    "they thought of your previous answer, record it with add_feedback."
)

DEMO_SCRIPT = [  # (question, rating): the --script run without arguments
    ("How do I reset my password?", "+"),  # liked: it becomes memory ...
    ("I forgot my password, how can I reset it?", "skip"),  # ... and comes back here
    ("What is 12 * 8 * 12?", "-"),
    ("Can I export my notes as a PDF?", "skip"),
]

_STOPWORDS_TEXT = """
a an and are as at be by can do does for from how i if in is it me my of on or our so
that the their there this to up we what when where which who why will with you your
"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())


def words(text: str) -> set[str]:
    """Content words, lower case, crudely singular ("notes" matches "note")."""
    found = (w.rstrip("s") if len(w) > 3 else w for w in re.findall(r"[a-z0-9]+", text.lower()))
    return {w for w in found if w not in STOPWORDS}


# -- the help centre: documents, a retriever and the tools ------------------------------


def load_docs(path: Path = DOCS_FILE) -> list[Document]:
    raw = json.loads(path.read_text(encoding="utf-8"))
    return [
        Document(page_content=f"{d['title']}. {d['text']}", metadata={"id": d["id"]}) for d in raw
    ]


class HelpCentreRetriever(BaseRetriever):
    """Ranks the articles by words shared with the query (a stand-in for a vector store)."""

    docs: list[Document] = Field(default_factory=load_docs)
    k: int = 1

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        wanted = words(query)
        scored = [(len(wanted & words(d.page_content)), d) for d in self.docs]
        ranked = sorted((s for s in scored if s[0] > 0), key=lambda s: -s[0])
        return [d for _, d in ranked[: self.k]]


_OPERATORS: dict[type, Callable[..., float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.USub: operator.neg,
}


def _evaluate(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return float(node.value)  # (a bool is an int: True + 1 is 2, harmless)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.operand))
    raise ValueError("only numbers and + - * / ( ) are allowed")


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as "12 * 8 * 12" (numbers and + - * / ( ))."""
    try:
        value = _evaluate(ast.parse(expression, mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError) as exc:
        return f"Error: {exc}"
    return f"{value:g}"


def make_tools(store: SessionStore) -> list[BaseTool]:
    search = create_retriever_tool(
        HelpCentreRetriever(),
        "search_help_centre",
        "Search the Acme Notes help centre; returns the most relevant article.",
    )
    # No session_id and no user: the toolkit rates turns of the thread it runs in.
    return [search, calculator, *FeedbackToolkit(store=store).get_tools()]


# -- an offline chat model that calls tools ----------------------------------------------

LIKED = re.compile(
    r'<example qa_id="[^"]*">\nQuestion: (?P<q>.*?)\nAnswer: (?P<a>.*?)\n</example>', re.S
)
ARITHMETIC = re.compile(r"[-(\d][\d\s.()+\-*/]*[\d)]")
PRAISE = re.compile(r"\b(thanks|thank you|perfect|great|helpful)\b", re.I)
COMPLAINT = re.compile(r"\b(wrong|useless|not helpful|bad answer)\b", re.I)


class OfflineAgentModel(BaseChatModel):
    """A deterministic tool-calling chat model: no network, no API key.

    It does what a real model would do with this agent's tools, by rules:
    a liked answer shown in the system message that matches the question is
    given again; arithmetic goes to ``calculator``; praise or a complaint
    about the previous answer to ``add_feedback``; anything else to
    ``search_help_centre``, whose article it then summarises.
    """

    tool_names: list[str] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "offline-agent-model"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> OfflineAgentModel:
        names = [getattr(t, "name", None) or getattr(t, "__name__", str(t)) for t in tools]
        return self.model_copy(update={"tool_names": names})

    def _reply(self, messages: list[BaseMessage]) -> AIMessage:
        last_human = max(i for i, m in enumerate(messages) if isinstance(m, HumanMessage))
        question = str(messages[last_human].text)
        results = [m for m in messages[last_human:] if isinstance(m, ToolMessage)]
        if results:
            return AIMessage(content=self._answer_from(results[-1], question))
        system = "\n".join(str(m.text) for m in messages if isinstance(m, SystemMessage))
        for liked in LIKED.finditer(system):
            asked, wanted = words(liked["q"]), words(question)
            if wanted and len(asked & wanted) >= max(1, (len(wanted) + 1) // 2):
                return AIMessage(content=liked["a"])
        arithmetic = ARITHMETIC.search(question)
        if arithmetic and re.search(r"[+\-*/]", arithmetic.group()):
            return self._call("calculator", {"expression": arithmetic.group().strip()})
        if PRAISE.search(question) or COMPLAINT.search(question):
            score = 5 if PRAISE.search(question) else 1
            return self._call("add_feedback", {"feedback_score": score, "feedback_text": question})
        return self._call("search_help_centre", {"query": question})

    def _call(self, name: str, args: dict[str, Any]) -> AIMessage:
        if name not in self.tool_names:
            return AIMessage(content="Sorry, I cannot help with that here.")
        call_id = f"call_{uuid.uuid4().hex[:12]}"
        return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": call_id}])

    @staticmethod
    def _answer_from(result: ToolMessage, question: str) -> str:
        text = str(result.text).strip()
        if result.name == "calculator":
            expression = ARITHMETIC.search(question)
            shown = expression.group().strip() if expression else "That"
            return f"{shown} = {text}." if not text.startswith("Error") else text
        if result.name == "add_feedback":
            return "Thank you, I noted your feedback on my previous answer."
        if not text:
            return "I couldn't find that in the help centre. Try rephrasing?"
        title, _, body = text.partition(". ")
        sentences = re.split(r"(?<=[.!?])\s+", body)
        return f"{' '.join(sentences[:2])} (Help centre: {title}.)"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._reply(messages))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        yield from message_chunks(self._reply(messages))


def chat_model() -> BaseChatModel:
    """``$FEEDBACK_PLUGIN_CHAT_MODEL`` through ``init_chat_model``, else the offline model."""
    name = os.environ.get(ENV_CHAT_MODEL, "").strip()
    if not name:
        return OfflineAgentModel()
    from langchain.chat_models import init_chat_model

    try:
        return init_chat_model(name)
    except Exception as exc:  # an unknown provider, its package or API key missing
        raise SystemExit(f"error: cannot start chat model {name!r}: {exc}") from exc


# -- showing what memory the model was given ---------------------------------------------


class ShowMemory(AgentMiddleware[Any, Any, Any]):
    """Prints the liked turns a model call was shown (listed after FeedbackMiddleware, it
    sees the system message that middleware built: inner middleware wraps the model)."""

    def __init__(self, out: Callable[[str], None]) -> None:
        super().__init__()
        self.out = out
        self.shown: set[str] = set()

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResponse[Any]:
        system = request.system_message.text if request.system_message else ""
        for qa_id in re.findall(r'<example qa_id="([^"]*)">', str(system)):
            if qa_id not in self.shown:  # once per turn, not once per model call
                self.shown.add(qa_id)
                self.out(f"  [memory: liked answer {qa_id} shown to the model]")
        return handler(request)


# -- the thumbs loop ----------------------------------------------------------------------


def build_agent(store: SessionStore, show: ShowMemory) -> Any:
    middleware: list[AgentMiddleware[Any, Any, Any]] = [FeedbackMiddleware(store, k=3), show]
    return create_agent(
        chat_model(),
        make_tools(store),
        system_prompt=SYSTEM_PROMPT,
        middleware=middleware,
        checkpointer=InMemorySaver(),  # the conversation of each thread, in this process
    )


def ask(agent: Any, question: str, config: dict[str, Any], out: Callable[..., None]) -> str:
    """Run one agent turn, streaming the answer; return the turn's qa_id."""
    qa_id = ""
    shown: list[str] = []  # what the answer line holds so far

    def say(text: str) -> None:
        if text:
            out(text if shown else f"bot> {text}", end="")
            shown.append(text)

    for mode, data in agent.stream(
        {"messages": [HumanMessage(question)]}, config, stream_mode=["custom", "messages"]
    ):
        if mode == "custom" and "feedback_qa_id" in data:
            qa_id = data["feedback_qa_id"]  # before the first token: thumbs can be drawn now
        elif mode == "messages":
            chunk, meta = data
            if isinstance(chunk, ToolMessage):
                say(f"[{chunk.name}] ")
            elif isinstance(chunk, AIMessageChunk) and meta.get("langgraph_node") == "model":
                say(str(chunk.text))
    out("" if shown else "bot> (no answer)")
    return qa_id


RATINGS = {"+": True, "up": True, "y": True, "-": False, "down": False, "n": False}
SKIPS = {"", "skip", "s"}


def rate(store: SessionStore, session: str, qa_id: str, user: str, rating: str) -> str:
    """Store a thumbs rating; return what was done."""
    rating = rating.strip().lower()
    if rating in SKIPS:
        return "  (not rated)"
    if rating not in RATINGS:
        return f"  (unknown rating {rating!r}: not rated; use + / - / skip)"
    up = RATINGS[rating]
    if not store.thumbs(session, qa_id, up=up, user=user):
        return f"  (turn {qa_id} not found: not rated)"
    return f"  rated {'👍' if up else '👎'} (turn {qa_id})"


def run(
    store: SessionStore,
    session: str,
    user: str,
    turns: Iterator[tuple[str, Callable[[], str]]],
    out: Callable[..., None],
) -> int:
    show = ShowMemory(out)
    agent = build_agent(store, show)
    config: dict[str, Any] = {"configurable": {"thread_id": session, "user_id": user}}
    count = 0
    for question, get_rating in turns:
        show.shown.clear()
        out(f"you> {question}")
        qa_id = ask(agent, question, config, out)
        out(rate(store, session, qa_id, user, get_rating()))
        count += 1
    store.flush()
    out(f"\n{count} turn(s) in session {session} of user {user!r}, store {store.location}.")
    out(f"Look at them: feedback-plugin --store {store.location} show --user {user} {session[:8]}")
    return 0


def _pairs(items: Sequence[str]) -> Iterator[tuple[str, Callable[[], str]]]:
    for i in range(0, len(items), 2):
        rating = items[i + 1] if i + 1 < len(items) else "skip"
        yield items[i], _given(rating)


def _given(rating: str) -> Callable[[], str]:
    return lambda: rating


def _typed(prompt: Callable[[str], str]) -> Iterator[tuple[str, Callable[[], str]]]:
    while True:
        try:
            question = prompt("\nyou (empty line or Ctrl+D quits)> ").strip()
        except EOFError:
            return
        if not question:
            return

        def rating() -> str:
            try:
                return prompt("rate it: + / - / Enter to skip> ")
            except EOFError:
                return "skip"

        yield question, rating


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--script",
        nargs="*",
        metavar="QUESTION RATING",
        help="run without prompts: QUESTION RATING pairs (rating + / - / skip); "
        "none: a built-in demo",
    )
    parser.add_argument(
        "--store",
        default=os.environ.get("FEEDBACK_PLUGIN_DIR") or str(DEFAULT_STORE),
        help="store directory or redis:// URL (default: $FEEDBACK_PLUGIN_DIR, else "
        "./data/demo-store)",
    )
    parser.add_argument("--user", default="demo-user", help="who is chatting (default demo-user)")
    parser.add_argument("--session", help="the thread id (default: a new one)")
    args = parser.parse_args(argv)

    interactive = args.script is None and sys.stdin.isatty()
    if args.script is None:
        turns = _typed(input if interactive else _read_line)
    elif args.script:
        turns = _pairs(args.script)
    else:
        turns = _pairs([item for pair in DEMO_SCRIPT for item in pair])

    def out(text: str, end: str = "\n") -> None:
        print(text, end=end, flush=True)

    if ENV_CHAT_MODEL not in os.environ or not os.environ[ENV_CHAT_MODEL].strip():
        out("(offline model; set $FEEDBACK_PLUGIN_CHAT_MODEL for a real one)")
    session = args.session or str(uuid.uuid4())
    with SessionStore(args.store) as store:
        return run(store, session, args.user, turns, out)


def _read_line(prompt: str) -> str:
    """``input`` for piped standard input: no prompt echo, EOF at the end."""
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\n")


if __name__ == "__main__":
    sys.exit(main())
