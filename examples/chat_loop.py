#!/usr/bin/env python3
"""A chat loop that remembers what users thought of its answers.

A small RAG chain answers questions about "Acme Notes" (a fictional note-taking
app) from the six help-centre articles the demo chat ships, ranked the demo's way
(``feedback_plugin.integrations.demo.content``: articles, word-overlap retriever).
Every turn -- question, answer, the retrieved documents -- is recorded by
``FeedbackCallbackHandler`` into a ``SessionStore``; one answer gets a thumbs
up, one a thumbs down with a comment, and the session is printed as a table.

Runs offline with no API keys: the retriever ranks documents by word overlap
and the chat model is LangChain's ``FakeListChatModel`` replying with a
scripted answer. Swap in a real retriever and chat model; the recording
lines stay the same.

    python examples/chat_loop.py                  # scripted demo: 4 questions, 2 ratings
    python examples/chat_loop.py --interactive    # type your own questions, rate with + / -

Turns are stored under ``./data/demo-store`` in the repository (or
``$FEEDBACK_PLUGIN_DIR``, or ``--store DIR``).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from langchain_core.documents import Document
from langchain_core.language_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompt_values import PromptValue
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough

from feedback_plugin import FeedbackCallbackHandler, SessionQAEntry, SessionStore

# The demo chat's content (langchain-core only, no web extra): its help-centre
# articles (each a Document with id, title and scripted reply), the retriever that
# ranks them by shared content words, the questions it suggests, its "no answer".
from feedback_plugin.integrations.demo.content import (
    NO_ANSWER,
    SUGGESTIONS,
    HelpCentreRetriever,
)
from feedback_plugin.integrations.demo.content import load_documents as load_docs

HERE = Path(__file__).resolve().parent
DEFAULT_STORE = HERE.parent / "data" / "demo-store"

SCRIPT = list(SUGGESTIONS)


# -- the RAG chain ----------------------------------------------------------------


def format_docs(docs: list[Document]) -> str:
    if not docs:
        return "(no matching article)"
    return "\n\n".join(f"[{d.metadata['id']}] {d.page_content}" for d in docs)


def make_fake_model(docs: list[Document]) -> Runnable[Any, Any]:
    """Stand-in for a real chat model (offline, no keys).

    Returns a fresh ``FakeListChatModel`` scripted with the reply of the best
    article in the prompt's context (LangChain then invokes it on the same
    prompt, so the run is a real chat-model run). Replace with e.g.
    ``ChatOpenAI(model=...)``.
    """
    replies = {d.metadata["id"]: d.metadata["reply"] for d in docs}

    def pick(prompt: PromptValue) -> FakeListChatModel:
        system = prompt.to_messages()[0].text
        found = re.search(r"^\[([\w-]+)\]", system, re.MULTILINE)
        reply = replies.get(found.group(1), NO_ANSWER) if found else NO_ANSWER
        return FakeListChatModel(responses=[reply])

    return RunnableLambda(pick, name="FakeChatModel")


def build_chain(docs: list[Document]) -> Runnable[str, str]:
    retriever = HelpCentreRetriever(docs=docs, k=2)
    prompt = ChatPromptTemplate.from_messages(
        [
            (
                "system",
                "You are the support assistant of Acme Notes. Answer the question "
                "briefly, using only these help-centre articles:\n\n{context}",
            ),
            ("human", "{question}"),
        ]
    )
    return (
        {"context": retriever | format_docs, "question": RunnablePassthrough()}
        | prompt
        | make_fake_model(docs)
        | StrOutputParser()
    )


# -- recording and rating ---------------------------------------------------------


def ask(
    chain: Runnable[str, str], handler: FeedbackCallbackHandler, session_id: str, question: str
) -> tuple[str, str]:
    """Answer one question, recording the turn; return ``(qa_id, answer)``.

    Passing our own ``run_id`` tells us the turn's ``qa_id`` (``str(run_id)``)
    before the answer is shown, which is what a UI puts under its thumbs buttons.
    """
    run_id = uuid.uuid4()
    answer = chain.invoke(
        question,
        config={
            "callbacks": [handler],
            "metadata": {"session_id": session_id, "app": "chat_loop example"},
            "run_id": run_id,
        },
    )
    return str(run_id), answer


def clip(text: str | None, width: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= width else text[: width - 3] + "..."


def session_table(entries: list[SessionQAEntry]) -> str:
    """The session as a plain-text table."""
    headers = ["#", "question", "answer", "docs", "score", "comment"]
    widths = [2, 34, 52, 4, 5, 40]
    rows = [
        [
            str(i),
            clip(e.question, widths[1]),
            clip(e.answer, widths[2]),
            str(len(e.context)),
            "-" if e.feedback_score is None else str(e.feedback_score),
            clip(e.feedback_text, widths[5]) or "-",
        ]
        for i, e in enumerate(entries, 1)
    ]
    widths = [max([len(headers[c])] + [len(r[c]) for r in rows]) for c in range(len(headers))]
    right = {0, 3, 4}

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.rjust(w) if c in right else cell.ljust(w)
            for c, (cell, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def scripted(chain: Runnable[str, str], store: SessionStore, session_id: str) -> None:
    handler = FeedbackCallbackHandler(store)
    turns = []
    for question in SCRIPT:
        qa_id, answer = ask(chain, handler, session_id, question)
        turns.append(qa_id)
        print(f"you> {question}\nbot> {answer}\n")

    store.thumbs(session_id, turns[0], up=True)
    store.thumbs(
        session_id,
        turns[2],
        up=False,
        feedback_text="Didn't say that PDF export needs the Pro plan.",
    )
    print("Rated turn 1 thumbs up, turn 3 thumbs down with a comment.\n")


def read(prompt: str) -> str:
    """One line from stdin; echoed when stdin is piped, so the transcript reads well."""
    line = input(prompt).strip()
    if not sys.stdin.isatty():
        print(line)
    return line


def interactive(chain: Runnable[str, str], store: SessionStore, session_id: str) -> None:
    handler = FeedbackCallbackHandler(store)
    print(
        "Ask about Acme Notes (passwords, billing, export, offline, sharing, deleting "
        "your account).\nAfter each answer rate it: '+' thumbs up, '-' thumbs down, "
        "optionally followed by a comment; Enter skips. An empty question ends.\n"
    )
    while True:
        try:
            question = read("you> ")
        except EOFError:
            print()
            break
        if not question or question.lower() in {"quit", "exit", "q"}:
            break
        qa_id, answer = ask(chain, handler, session_id, question)
        print(f"bot> {answer}")
        try:
            rating = read("rate [+/-, comment]> ")
        except EOFError:
            print()
            break
        if rating[:1] in {"+", "-"}:
            comment = rating[1:].strip() or None
            store.thumbs(session_id, qa_id, up=rating[0] == "+", feedback_text=comment)
            print("(thanks, noted)")
        print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--interactive", action="store_true", help="type your own questions, rate with + / -"
    )
    parser.add_argument(
        "--store",
        metavar="DIR",
        help="store directory (default: $FEEDBACK_PLUGIN_DIR, else ./data/demo-store)",
    )
    parser.add_argument(
        "--session", metavar="ID", help="session id (default: a new one for this run)"
    )
    args = parser.parse_args(argv)

    location = args.store or os.environ.get("FEEDBACK_PLUGIN_DIR") or str(DEFAULT_STORE)
    session_id = args.session or f"demo-{datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:4]}"
    chain = build_chain(load_docs())

    with SessionStore(location) as store:
        print(f"Acme Notes support bot -- session {session_id!r}, store {location}\n")
        if args.interactive:
            interactive(chain, store, session_id)
        else:
            scripted(chain, store, session_id)
        entries = store.get_session(session_id)
        print(f"Session {session_id} ({len(entries)} turns):\n")
        print(session_table(entries))
    if not args.interactive:
        print("\nType your own questions: python examples/chat_loop.py --interactive")
    return 0


if __name__ == "__main__":
    sys.exit(main())
