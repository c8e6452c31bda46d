"""A Streamlit chat whose answers carry ``st.feedback`` ratings, kept in a feedback_plugin store.

The chain is the offline "Acme Notes" support bot of ``chat_loop.py`` (word
overlap retriever + a scripted ``FakeListChatModel``; no API keys). Every
turn is recorded by ``FeedbackCallbackHandler``; ``config={"run_id": ...}``
makes the turn's ``qa_id`` known before the answer is shown.

The chat on screen is read back from the store on every rerun, and the
session id lives in the URL (``?session=...``), so a page reload shows the
same conversation with its ratings. Pick thumbs, stars or faces in the sidebar.

    pip install "feedback-plugin[streamlit]"
    streamlit run examples/streamlit_app.py

Turns are stored under ``./data/demo-store`` (or ``$FEEDBACK_PLUGIN_DIR``).
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

import streamlit as st

from feedback_plugin import FeedbackCallbackHandler, SessionStore
from feedback_plugin.integrations.streamlit_feedback import feedback_widget

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chat_loop import DEFAULT_STORE, build_chain, load_docs


@st.cache_resource
def resources(location: str) -> tuple[SessionStore, FeedbackCallbackHandler, Any]:
    """One store, handler and chain per server process (shared by all browser sessions)."""
    store = SessionStore(location)
    return store, FeedbackCallbackHandler(store), build_chain(load_docs())


def session_id() -> str:
    """This browser's session id, kept in the URL so a reload finds the same chat."""
    sid = st.query_params.get("session")
    if not sid:
        sid = f"st-{uuid.uuid4()}"
        st.query_params["session"] = sid
    return sid


def main() -> None:
    st.set_page_config(page_title="Acme Notes support", page_icon="💬")
    store, handler, chain = resources(os.environ.get("FEEDBACK_PLUGIN_DIR") or str(DEFAULT_STORE))
    sid = session_id()

    with st.sidebar:
        kind = st.radio("Rating widget", ["thumbs", "stars", "faces"], horizontal=True)
        st.caption(f"Session `{sid}`")
        if st.button("New chat"):
            st.query_params["session"] = f"st-{uuid.uuid4()}"
            st.rerun()

    st.title("Acme Notes support")
    st.caption("Offline demo: answers come from six help-centre articles. Rate every answer.")

    question = st.chat_input("How do I reset my password?")
    if question:
        run_id = uuid.uuid4()  # the turn's qa_id is str(run_id)
        chain.invoke(
            question,
            config={
                "run_id": run_id,
                "callbacks": [handler],
                "metadata": {"session_id": sid, "app": "streamlit example"},
            },
        )

    for entry in store.get_session(sid):  # the chat, as the store has it
        with st.chat_message("user"):
            st.text(entry.question)
        with st.chat_message("assistant"):
            st.text(entry.answer)
            feedback_widget(store, sid, entry.qa_id, kind=kind)  # type: ignore[arg-type]


main()
