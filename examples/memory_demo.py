#!/usr/bin/env python3
"""Positive memory: a later session's answer builds on what the user liked before.

A chain ``prompt | FakeListChatModel | StrOutputParser`` answers support
questions about "Acme Notes" (a fictional app). Before the prompt, a
``PositiveMemoryRetriever`` looks up answers *this user* liked in earlier
sessions and puts them in the system message ("Answers this user liked
before: ..."). ``FeedbackCallbackHandler`` records every turn.

    Session 1  alice asks two questions; she gives the first answer a thumbs
               up, and rates the second one down *with a correction* (the
               right answer), via ``store.add_feedback(..., correction=...)``.
    Session 2  days later, alice asks about PDF export in other words. The
               memories retrieved are printed: the liked turn and the
               corrected answer come back; the disliked original answer does
               not. Then the chain's answer, and the same search through the
               agent tool ``search_positive_memory`` of ``FeedbackToolkit``.

Runs offline, no API keys: the chat model is LangChain's ``FakeListChatModel``
replying from a script, so the demo shows what a real model would be *given*
(the prompt with the memories), not a model reading it. The store lives in a
temporary directory unless ``--store DIR`` is given.

    python examples/memory_demo.py
    python examples/memory_demo.py --store /tmp/memory-demo   # keep the store
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
import uuid
from operator import itemgetter
from pathlib import Path
from typing import Any

from langchain_core.documents import Document
from langchain_core.language_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompt_values import PromptValue
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda, RunnablePassthrough

# Make the repository importable when the script is run without an install.
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from feedback_plugin import (  # noqa: E402
    FeedbackCallbackHandler,
    FeedbackToolkit,
    PositiveMemoryRetriever,
    SessionStore,
)

USER = "alice"
SESSION_1 = "alice-monday"
SESSION_2 = "alice-friday"

PASSWORD_Q = "How do I reset my password?"
PASSWORD_A = "Settings > Account > Reset password. The e-mailed link works for 30 minutes."
PDF_Q = "Can I export my notes as a PDF?"
PDF_WRONG = "Sorry, Acme Notes can't export to PDF yet. Copy the text into a document."
PDF_RIGHT = "Yes: File > Export > PDF. Pick 'Whole notebook' to get every note in one file."
LATER_Q = "What's the way to get my notes out as a PDF? Also, my password needs a reset."
LATER_A = (
    "You can export them with File > Export > PDF (choose 'Whole notebook' for everything "
    "in one file). For the password: Settings > Account > Reset password, then follow the "
    "link we e-mail you."
)

SYSTEM = """You are the support assistant of Acme Notes. Answer briefly.

Answers this user liked before (reuse them when they fit):
{memories}"""

WIDTH = 88


# -- printing --------------------------------------------------------------------


def heading(title: str) -> None:
    print(f"\n{'=' * WIDTH}\n{title}\n{'=' * WIDTH}")


def sub(title: str) -> None:
    print(f"\n--- {title} " + "-" * max(0, WIDTH - len(title) - 5))


def show(label: str, text: str, indent: int = 4) -> None:
    """``label`` then ``text`` wrapped and indented under it."""
    print(f"  {label}")
    for para in text.splitlines() or [""]:
        print(
            textwrap.fill(para, WIDTH, initial_indent=" " * indent, subsequent_indent=" " * indent)
            or ""
        )


def item(label: str, text: str) -> None:
    """``label: text`` under a list entry, wrapped with a hanging indent."""
    print(
        textwrap.fill(
            text, WIDTH, initial_indent=f"      {label + ':':<12}", subsequent_indent=" " * 18
        )
    )


# -- the chain -------------------------------------------------------------------


def format_memories(docs: list[Document]) -> str:
    if not docs:
        return "(none yet)"
    return "\n".join(f"- Q: {d.metadata['question']}\n  A: {d.metadata['answer']}" for d in docs)


def build_chain(store: SessionStore, replies: list[str]) -> tuple[Runnable[Any, str], list[Any]]:
    """The chain, and a list that receives every prompt the model is given."""
    memory = PositiveMemoryRetriever(store=store, user=USER, k=3)
    prompt = ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", "{question}")])
    model = FakeListChatModel(responses=replies)
    seen_prompts: list[PromptValue] = []

    def keep(value: PromptValue) -> PromptValue:
        seen_prompts.append(value)
        return value

    chain = (
        RunnablePassthrough.assign(memories=itemgetter("question") | memory | format_memories)
        | prompt
        | RunnableLambda(keep, name="show_prompt")
        | model
        | StrOutputParser()
    )
    return chain, seen_prompts


def ask(
    chain: Runnable[Any, str], handler: FeedbackCallbackHandler, session_id: str, question: str
) -> tuple[str, str]:
    """Run one turn; return its ``qa_id`` (the root run id the handler records it under)."""
    run_id = uuid.uuid4()
    answer = chain.invoke(
        {"question": question},
        config={"callbacks": [handler], "metadata": {"session_id": session_id}, "run_id": run_id},
    )
    return str(run_id), answer


# -- the story -------------------------------------------------------------------


def session_one(store: SessionStore, handler: FeedbackCallbackHandler) -> None:
    heading(f"SESSION 1 ({SESSION_1}): {USER} asks two questions, then rates the answers")
    chain, _ = build_chain(store, [PASSWORD_A, PDF_WRONG])
    qa_password, answer = ask(chain, handler, SESSION_1, PASSWORD_Q)
    show(f"{USER}: {PASSWORD_Q}", f"assistant: {answer}")
    qa_pdf, answer = ask(chain, handler, SESSION_1, PDF_Q)
    show(f"{USER}: {PDF_Q}", f"assistant: {answer}")

    sub("ratings")
    store.thumbs(SESSION_1, qa_password, up=True, user=USER)
    print(f"  thumbs up   -> '{PASSWORD_Q}'")
    store.add_feedback(
        SESSION_1, qa_pdf, "Wrong, PDF export exists.", 1, user=USER, correction=PDF_RIGHT
    )
    print(f"  thumbs down -> '{PDF_Q}'")
    print(
        textwrap.fill(
            f"with a correction: {PDF_RIGHT!r}",
            WIDTH,
            initial_indent=" " * 17,
            subsequent_indent=" " * 17,
        )
    )

    sub(f"what the store holds for session {SESSION_1}")
    for e in store.get_session(SESSION_1, user=USER):
        print(f"  - {e.question}")
        item("answer", e.answer)
        item("score", f"{e.feedback_score}   comment: {e.feedback_text!r}")
        if e.correction:
            item("correction", e.correction)


def session_two(store: SessionStore, handler: FeedbackCallbackHandler) -> bool:
    heading(f"SESSION 2 ({SESSION_2}, days later): {USER} asks in other words")
    print(f"  {USER}: {LATER_Q}")

    sub("memories retrieved (PositiveMemoryRetriever, user='alice', k=3)")
    docs = PositiveMemoryRetriever(store=store, user=USER, k=3).invoke(LATER_Q)
    for i, d in enumerate(docs, 1):
        m = d.metadata
        if m["correction"]:
            kind = f"rated {m['feedback_score']} with a correction: the corrected answer"
        else:
            kind = f"liked: rated {m['feedback_score']}"
        print(f"  {i}. [{kind}; from session {m['session_id']}]")
        print(f"     Q: {m['question']}")
        print(f"     A: {m['answer']}")
        if m["correction"]:
            print(
                textwrap.fill(
                    f"(the original answer is not used: {m['original_answer']!r})",
                    WIDTH,
                    initial_indent="     ",
                    subsequent_indent="      ",
                )
            )

    chain, prompts = build_chain(store, [LATER_A])
    _, answer = ask(chain, handler, SESSION_2, LATER_Q)
    sub("the system message the chat model was given")
    system = prompts[-1].to_messages()[0].content
    for line in str(system).splitlines():
        print(f"  | {line}")
    sub("the answer")
    show("assistant:", answer)

    sub("the same search as an agent tool: FeedbackToolkit -> search_positive_memory")
    tools = {
        t.name: t for t in FeedbackToolkit(store=store, session_id=SESSION_2, user=USER).get_tools()
    }
    output = tools["search_positive_memory"].invoke({"query": LATER_Q})
    for line in str(output).splitlines():
        print(f"  {line}")

    sub("checks")
    answers = [d.metadata["answer"] for d in docs]
    checks = {
        "the liked answer came back": PASSWORD_A in answers,
        "the corrected answer came back": PDF_RIGHT in answers,
        "the disliked original answer did not": PDF_WRONG not in answers
        and PDF_WRONG not in str(system)
        and PDF_WRONG not in str(output),
        "another user sees none of it": not PositiveMemoryRetriever(store=store, user="bob").invoke(
            LATER_Q
        ),
    }
    for name, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAILED'}] {name}")
    return all(checks.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--store", metavar="DIR", help="keep the store here (default: a temp dir)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="memory-demo-") as tmp:
        store = SessionStore(args.store or tmp)
        handler = FeedbackCallbackHandler(store, user=USER)
        try:
            session_one(store, handler)
            ok = session_two(store, handler)
        finally:
            store.close()
    print()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
