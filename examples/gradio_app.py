#!/usr/bin/env python3
"""A Gradio chat whose answers carry 👍 / 👎, written to a feedback_plugin store.

The chain is the offline "Acme Notes" support bot of ``chat_loop.py`` (word
overlap retriever + a scripted ``FakeListChatModel``; no API keys). Every
turn is recorded by ``FeedbackCallbackHandler``; ``config={"run_id": ...}``
gives the turn's ``qa_id`` before the answer is shown, and a
``ChatTurns`` object in a ``gr.State`` remembers which chat position shows
which ``qa_id``, so ``like_handler`` can rate the right turn. The table
on the right is read back from the store after every answer and every click.

    pip install "feedback-plugin[gradio]"
    python examples/gradio_app.py            # http://127.0.0.1:7860

Turns are stored under ``./data/demo-store`` (or ``$FEEDBACK_PLUGIN_DIR``).
"""

from __future__ import annotations

import inspect
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import gradio as gr

from feedback_plugin import FeedbackCallbackHandler, SessionStore
from feedback_plugin.integrations.gradio_feedback import ChatTurns, like_handler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chat_loop import DEFAULT_STORE, build_chain, load_docs

COLUMNS = ["#", "score", "comment", "question", "answer"]
# Gradio 5 defaults to the old "tuples" history format; Gradio 6 has only "messages".
MESSAGES_FORMAT = {"type": "messages"} if "type" in inspect.signature(gr.Chatbot).parameters else {}


def session_rows(store: SessionStore, turns: ChatTurns) -> list[list[Any]]:
    """The session's turns as read back from the store, for the table."""
    return [
        [i, e.feedback_score or "", e.feedback_text or "", e.question, e.answer]
        for i, e in enumerate(store.get_session(turns.session_id, user=turns.user), 1)
    ]


def build_demo(store: SessionStore, chain: Any = None) -> gr.Blocks:
    """The chat page; ``chain`` defaults to the offline Acme Notes bot."""
    chain = chain if chain is not None else build_chain(load_docs())
    handler = FeedbackCallbackHandler(store)

    def respond(
        message: str, history: list[Any], turns: ChatTurns
    ) -> tuple[str, list[Any], ChatTurns, list[list[Any]]]:
        if not message.strip():
            return "", history, turns, session_rows(store, turns)
        run_id = uuid.uuid4()  # the turn's qa_id is str(run_id)
        answer = chain.invoke(
            message,
            config={
                "run_id": run_id,
                "callbacks": [handler],
                "metadata": {"session_id": turns.session_id, "app": "gradio example"},
            },
        )
        history = [
            *history,
            {"role": "user", "content": message},
            {"role": "assistant", "content": answer},
        ]
        turns.add(len(history) - 1, str(run_id))  # the answer's chat position -> qa_id
        return "", history, turns, session_rows(store, turns)

    def clear(turns: ChatTurns) -> tuple[list[Any], ChatTurns, list[list[Any]]]:
        fresh = ChatTurns(user=turns.user)  # a new chat is a new session
        return [], fresh, []

    with gr.Blocks(title="Acme Notes support (feedback_plugin + Gradio)") as demo:
        gr.Markdown(
            "### Acme Notes support bot\n"
            "Offline demo: answers come from six help-centre articles. "
            "Rate an answer with 👍 / 👎; click again to take it back."
        )
        turns = gr.State(ChatTurns)  # called per browser session: a new session id each
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Chat", height=420, **MESSAGES_FORMAT)
                box = gr.Textbox(placeholder="How do I reset my password?", label="Question")
                new_chat = gr.Button("New chat")
            with gr.Column(scale=2):
                table = gr.Dataframe(headers=COLUMNS, label="This session in the store")

        box.submit(respond, [box, chatbot, turns], [box, chatbot, turns, table])
        chatbot.like(like_handler(store), inputs=turns).then(
            lambda t: session_rows(store, t), inputs=turns, outputs=table
        )
        new_chat.click(clear, inputs=turns, outputs=[chatbot, turns, table])
    return demo


def main() -> None:
    location = os.environ.get("FEEDBACK_PLUGIN_DIR") or str(DEFAULT_STORE)
    store = SessionStore(location)
    print(f"feedback_plugin store: {location}")
    build_demo(store).launch()


if __name__ == "__main__":
    main()
