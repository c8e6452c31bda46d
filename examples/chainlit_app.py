"""A Chainlit chat whose 👍 / 👎 (and comments) go to a feedback_plugin store.

The chain is the offline "Acme Notes" support bot of ``chat_loop.py`` (word
overlap retriever + a scripted ``FakeListChatModel``; no API keys). Every
turn is recorded by ``FeedbackCallbackHandler`` with the Chainlit thread as
its session; ``config={"run_id": ...}`` gives the turn's ``qa_id``, and
``feedback_layer.register_run(run_id)`` tells ``FeedbackDataLayer`` that the
👍 / 👎 Chainlit shows for this run (its ``Feedback.forId`` is the id of the
run step around ``on_message``) rate that turn.

    pip install "feedback-plugin[chainlit]"
    python examples/chainlit_app.py                   # http://localhost:8001
    chainlit run examples/chainlit_app.py --port 8001  # the same

Its default port is 8001, not Chainlit's 8000: that one is the demo chat's
(``python -m feedback_plugin.integrations.webapp``), so both can run at once
(``$CHAINLIT_PORT`` or ``--port`` picks another). When the port is taken the
example exits with status 1 and says so (Chainlit alone would exit 0).

Chainlit shows the feedback buttons because a data layer is configured.
Turns are stored under ``./data/demo-store`` (or ``$FEEDBACK_PLUGIN_DIR``);
``python examples/chat_loop.py``-style inspection works on the same store.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from pathlib import Path
from typing import Any

import chainlit as cl
from chainlit.config import config as chainlit_config

from feedback_plugin import FeedbackCallbackHandler, SessionStore
from feedback_plugin.integrations.chainlit_feedback import FeedbackDataLayer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chat_loop import DEFAULT_STORE, build_chain, load_docs

DEFAULT_PORT = 8001
"""Not 8000, the demo chat's port."""


def _exit_if_port_taken() -> None:
    """Under ``chainlit run``: stop with status 1 when the server's port is taken.

    Chainlit loads this module before it binds the port, and on "address
    already in use" it would exit 0, which a script or supervisor reads as success.
    """
    target = chainlit_config.run.module_name
    if not target or Path(target).resolve() != Path(__file__).resolve():
        return  # imported by something else (a test), not served
    host, port = chainlit_config.run.host, chainlit_config.run.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            print(
                f"error: cannot serve the Chainlit example on {host}:{port}: port in use "
                f"({exc.strerror}); pick another with --port or $CHAINLIT_PORT",
                file=sys.stderr,
            )
            sys.exit(1)


_exit_if_port_taken()

store = SessionStore(os.environ.get("FEEDBACK_PLUGIN_DIR") or str(DEFAULT_STORE))
handler = FeedbackCallbackHandler(store)
chain = build_chain(load_docs())
feedback_layer = FeedbackDataLayer(store)


@cl.data_layer
def data_layer() -> FeedbackDataLayer:
    return feedback_layer


@cl.on_chat_start
async def start() -> None:
    await cl.Message(
        content="Ask me about Acme Notes: passwords, billing, export, offline use, sharing. "
        "(Offline demo: answers come from six help-centre articles.) Rate every answer!"
    ).send()


@cl.on_message
async def on_message(message: cl.Message) -> None:
    metadata: dict[str, Any] = {
        "session_id": cl.context.session.thread_id,  # the Chainlit thread is the session
        "app": "chainlit example",
    }
    user = cl.user_session.get("user")
    if user is not None:  # with authentication on, turns belong to the logged-in user
        metadata["user_id"] = user.identifier
    run_id = uuid.uuid4()  # the turn's qa_id is str(run_id)
    answer = await chain.ainvoke(
        message.content,
        config={"run_id": run_id, "callbacks": [handler], "metadata": metadata},
    )
    feedback_layer.register_run(run_id)  # this run's 👍 / 👎 rate that turn
    await cl.Message(content=answer).send()


if __name__ == "__main__":  # python examples/chainlit_app.py [chainlit run options]
    os.environ.setdefault("CHAINLIT_PORT", str(DEFAULT_PORT))
    os.execv(sys.executable, [sys.executable, "-m", "chainlit", "run", __file__, *sys.argv[1:]])
