"""The demo chat as a streaming agent: ``POST /api/chat/stream`` (NDJSON events).

A FastAPI TestClient over a real diskcache store in tmp_path and the app's
real agent: ``create_agent`` with FeedbackMiddleware and the offline
responder's model (:class:`OfflineChatModel`), unless a test passes the
scripted tool-calling model of tests/_fakes.py. No mocks.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from _fakes import ScriptedChatModel, tool_call
from fastapi.testclient import TestClient
from langchain_core.messages import AIMessage, BaseMessage

from feedback_plugin import SessionStore
from feedback_plugin.integrations.demo.agent import CHAT_FAILED
from feedback_plugin.integrations.demo.content import ENV_CHAT_MODEL
from feedback_plugin.integrations.offline_model import HELP_TOOL, NO_ANSWER
from feedback_plugin.integrations.rest import ApiKeyAuth
from feedback_plugin.integrations.webapp import OFFLINE_RESPONDER, create_demo_app

LOCAL = "http://localhost"
PASSWORD_Q = "How do I reset my password?"
PASSWORD_Q2 = "I forgot my password, how do I reset it?"
EXPORT_Q = "Can I export my notes as a PDF?"
PASSWORD_REPLY = (
    "Go to Settings > Account > Security and click Reset password. We'll e-mail you a link "
    "that stays valid for 30 minutes. If you sign in with Google or Apple, change the "
    "password with them instead."
)
ANSWER_KEYS = {
    "qa_id",
    "session_id",
    "question",
    "answer",
    "responder",
    "offline",
    "recorded",
    "context",
    "memories",
}


@pytest.fixture
def client(store: SessionStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.delenv(ENV_CHAT_MODEL, raising=False)
    with TestClient(create_demo_app(store), base_url=LOCAL) as c:
        yield c


def stream(
    client: TestClient, question: str, session_id: str = "s1", **kw: Any
) -> list[dict[str, Any]]:
    """The events of one streamed turn, checked for the NDJSON framing."""
    r = client.post("/api/chat/stream", json={"session_id": session_id, "question": question}, **kw)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    assert r.headers["cache-control"] == "no-store"
    assert r.content.endswith(b"\n")
    events = [json.loads(line) for line in r.content.decode("utf-8").splitlines()]
    assert events and all(isinstance(e, dict) and "type" in e for e in events)
    return events


def final(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The answer event of a turn that worked, without its ``type``."""
    assert events[-1]["type"] == "answer", events
    return {k: v for k, v in events[-1].items() if k != "type"}


def tokens(events: list[dict[str, Any]]) -> str:
    text = ""
    for event in events:
        if event["type"] == "reset":
            text = ""
        elif event["type"] == "token":
            text += event["text"]
    return text


def rate(client: TestClient, qa_id: str, session_id: str, body: dict[str, Any]) -> None:
    r = client.put(
        f"/api/turns/{quote(qa_id, safe='')}/feedback", params={"session_id": session_id}, json=body
    )
    assert r.status_code == 200, r.text


# -- the event order and the recorded turn -------------------------------------------------


def test_the_first_event_is_the_qa_id_of_the_recorded_turn(
    client: TestClient, store: SessionStore
) -> None:
    events = stream(client, PASSWORD_Q)
    assert events[0] == {"type": "qa_id", "qa_id": events[0]["qa_id"], "session_id": "s1"}
    qa_id = events[0]["qa_id"]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "qa_id" and kinds[-1] == "answer"
    assert set(kinds[1:-1]) == {"token"} and len(kinds) > 10  # word by word
    answer = final(events)
    assert set(answer) == ANSWER_KEYS
    assert answer["qa_id"] == qa_id and answer["answer"] == PASSWORD_REPLY
    assert tokens(events) == PASSWORD_REPLY  # only the final answer: no tool call, no article
    assert answer["responder"] == OFFLINE_RESPONDER and answer["offline"] is True
    assert answer["recorded"] is True and answer["memories"] == []
    assert [d["id"] for d in answer["context"]] == ["password-reset", "delete-account"]

    entry = store.get_entry("s1", qa_id)
    assert entry is not None
    assert (entry.question, entry.answer) == (PASSWORD_Q, PASSWORD_REPLY)
    assert entry.context == [d["text"] for d in answer["context"]]
    assert entry.metadata["responder"] == OFFLINE_RESPONDER
    assert entry.metadata["session_id"] == "s1"


def test_one_recorded_turn_per_question_streamed_or_not(
    client: TestClient, store: SessionStore
) -> None:
    ids = [final(stream(client, q))["qa_id"] for q in (PASSWORD_Q, EXPORT_Q)]
    r = client.post("/api/chat", json={"session_id": "s1", "question": "what about the weather?"})
    assert r.status_code == 200 and set(r.json()) == ANSWER_KEYS
    ids.append(r.json()["qa_id"])
    entries = store.get_session("s1")
    assert [e.qa_id for e in entries] == ids and len(set(ids)) == 3
    assert [e.question for e in entries] == [PASSWORD_Q, EXPORT_Q, "what about the weather?"]
    assert entries[1].answer.startswith("Open the notebook and choose File > Export")
    assert entries[1].context[0].startswith("Exporting your notes.")
    assert (entries[2].answer, entries[2].context) == (NO_ANSWER, [])


# -- memory: liked answers come back, disliked ones do not ----------------------------------


def test_a_liked_answer_comes_back_and_a_thumbs_down_removes_it(
    client: TestClient, store: SessionStore
) -> None:
    first = final(stream(client, PASSWORD_Q, session_id="monday"))
    assert final(stream(client, PASSWORD_Q2, session_id="tuesday"))["memories"] == []

    rate(client, first["qa_id"], "monday", {"thumbs": "up"})
    later = final(stream(client, PASSWORD_Q2, session_id="wednesday"))
    assert later["answer"] == first["answer"]  # the offline model reuses the liked answer
    (memory,) = later["memories"]
    assert memory | {"relevance": 0, "found_by": "words", "similarity": None} == {
        "qa_id": first["qa_id"],
        "session_id": "monday",
        "question": PASSWORD_Q,
        "answer": first["answer"],
        "feedback_score": 5,
        "relevance": 0,
        "found_by": "words",
        "similarity": None,
    }
    assert memory["found_by"] in ("words", "words+meaning")  # meaning: once a model loaded
    assert isinstance(memory["relevance"], float) and memory["relevance"] > 0
    # the recorded turn keeps the memory it used, so the history shows it after a reload
    entry = store.get_entry("wednesday", later["qa_id"])
    assert entry is not None and f"Question: {PASSWORD_Q}\nAnswer: {first['answer']}" in (
        entry.context
    )
    (turn,) = client.get("/api/chat/history", params={"session_id": "wednesday"}).json()
    assert turn["context"] == later["context"]
    assert [(m["qa_id"], m["answer"]) for m in turn["memories"]] == [
        (first["qa_id"], first["answer"])
    ]

    rate(client, first["qa_id"], "monday", {"thumbs": "down"})
    assert final(stream(client, PASSWORD_Q2, session_id="thursday"))["memories"] == []


def test_a_corrected_answer_is_reused_word_for_word(client: TestClient) -> None:
    first = final(stream(client, EXPORT_Q))
    fixed = "PDF export needs the Pro plan: File > Export > PDF."
    rate(client, first["qa_id"], "s1", {"thumbs": "down", "correction": fixed})
    events = stream(client, "Can I export notes to PDF?", session_id="s2")
    assert tokens(events) == fixed == final(events)["answer"]
    assert final(events)["memories"][0]["answer"] == fixed


def test_memories_are_the_users_own(store: SessionStore) -> None:
    auth = ApiKeyAuth({"ka": "alice", "kb": "bob"})
    alice, bob = {"Authorization": "Bearer ka"}, {"Authorization": "Bearer kb"}
    with TestClient(create_demo_app(store, auth=auth), base_url=LOCAL) as c:
        first = final(stream(c, PASSWORD_Q, headers=alice))
        r = c.put(
            f"/api/turns/{first['qa_id']}/feedback",
            params={"session_id": "s1"},
            json={"thumbs": "up"},
            headers=alice,
        )
        assert r.status_code == 200
        assert final(stream(c, PASSWORD_Q2, session_id="s9", headers=bob))["memories"] == []
        assert len(final(stream(c, PASSWORD_Q2, session_id="s9", headers=alice))["memories"]) == 1
    assert [e.qa_id for e in store.get_session("s1", user="alice")] == [first["qa_id"]]
    assert len(store.get_session("s9", user="bob")) == 1


# -- a real model: the conversation, tool calls, text before a tool call -----------------------


def search_then(answer: str) -> list[Any]:
    def search(messages: list[BaseMessage]) -> AIMessage:
        question = [m for m in messages if m.type == "human"][-1].text
        return tool_call(HELP_TOOL, {"query": question})

    return [search, answer]


def test_text_before_a_tool_call_is_reset_and_only_the_answer_counts(store: SessionStore) -> None:
    thinking = AIMessage(
        content="Let me look that up.",
        tool_calls=[{"name": HELP_TOOL, "args": {"query": "password"}, "id": "c1"}],
    )
    model = ScriptedChatModel(script=[thinking, "Use Settings > Account > Security."])
    with TestClient(create_demo_app(store, chat_model=model), base_url=LOCAL) as c:
        events = stream(c, PASSWORD_Q)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "qa_id" and "reset" in kinds
    assert "".join(e["text"] for e in events[1 : kinds.index("reset")]) == "Let me look that up."
    assert tokens(events) == "Use Settings > Account > Security." == final(events)["answer"]
    assert final(events)["context"][0]["id"] == "password-reset"
    entry = store.get_entry("s1", events[0]["qa_id"])
    assert entry is not None and entry.answer == "Use Settings > Account > Security."


def test_each_users_session_is_its_own_conversation(store: SessionStore) -> None:
    model = ScriptedChatModel(script=search_then("ok"), cycle=True)
    auth = ApiKeyAuth({"ka": "alice", "kb": "bob"})
    with TestClient(create_demo_app(store, chat_model=model, auth=auth), base_url=LOCAL) as c:
        stream(c, PASSWORD_Q, headers={"Authorization": "Bearer ka"})
        stream(c, EXPORT_Q, headers={"Authorization": "Bearer ka"})
        stream(c, "Does the app work offline?", headers={"Authorization": "Bearer kb"})
    humans = [[m.text for m in call if m.type == "human"] for call in model.calls]
    assert humans[3] == [PASSWORD_Q, EXPORT_Q]  # alice's second turn sees her first
    assert humans[5] == ["Does the app work offline?"]  # bob's same session id: not hers


# -- failures and guards ------------------------------------------------------------------------


def test_a_failure_mid_stream_is_a_final_error_event_without_internals(
    store: SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_: Any) -> str:
        raise RuntimeError(f"model down; store at {store.location}; key sk-secret")

    model = ScriptedChatModel(script=[*search_then("x")[:1], broken])
    app = create_demo_app(store, chat_model=model)
    with (
        caplog.at_level(logging.ERROR, logger="feedback_plugin"),
        TestClient(app, base_url=LOCAL) as c,
    ):
        r = c.post("/api/chat/stream", json={"session_id": "s1", "question": "hi"})
    assert r.status_code == 200  # the stream had started
    events = [json.loads(line) for line in r.text.splitlines()]
    assert events[0]["type"] == "qa_id"
    assert events[-1] == {"type": "error", "detail": CHAT_FAILED}
    for secret in ("model down", store.location, "sk-secret", "RuntimeError"):
        assert secret not in r.text
    assert "sk-secret" in caplog.text
    assert store.get_session("s1") == []


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        ('{"session_id": "s1", "question": "hi"}', {"Content-Type": "text/plain"}, 415),
        ("session_id=s1&question=hi", {"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ('{"session_id": "s1", "question": "' + "x" * 300 + '"}', {}, 413),
        ('{"session_id": "s1", "question": "  "}', {}, 422),
        ('{"session_id": NaN, "question": "hi"}', {}, 422),
    ],
)
def test_bad_stream_requests_are_json_errors_and_record_nothing(
    store: SessionStore, content: str, headers: dict[str, str], status: int
) -> None:
    with TestClient(create_demo_app(store, max_body_bytes=200), base_url=LOCAL) as c:
        r = c.post(
            "/api/chat/stream",
            content=content,
            headers={"Content-Type": "application/json", **headers},
        )
        assert r.status_code == status, r.text
        assert r.headers["content-type"].startswith("application/json")
        assert "detail" in r.json()
        r = c.post(
            "/api/chat/stream",
            json={"session_id": "s1", "question": "hi"},
            headers={"Host": "evil.example"},
        )
        assert r.status_code == 400
    assert list(store.iter_entries()) == []


def test_text_utf8_cannot_carry_streams_escaped(client: TestClient, store: SessionStore) -> None:
    body = json.dumps({"session_id": "s1", "question": "reset my password \ud800?"})
    r = client.post("/api/chat/stream", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    events = [json.loads(line) for line in r.content.splitlines()]
    answer = final(events)
    assert answer["question"] == "reset my password \ud800?" and answer["recorded"] is True
    assert b"\\ud800" in r.content
    entry = store.get_entry("s1", answer["qa_id"])
    assert entry is not None and entry.question == "reset my password \ud800?"


def test_the_openapi_schema_describes_the_stream(client: TestClient) -> None:
    op = client.get("/openapi.json").json()["paths"]["/api/chat/stream"]["post"]
    assert "application/x-ndjson" in op["responses"]["200"]["content"]
    assert '"type": "qa_id"' in op["description"]
    assert {"401", "403", "413", "415", "422"} <= set(op["responses"])


@pytest.mark.slow
def test_a_client_that_leaves_mid_answer_leaves_the_session_free(store: SessionStore) -> None:
    """The turn goes on without its client (and is recorded); the next one does not wait."""
    import httpx

    pytest.importorskip("uvicorn")
    from test_webapp_browser import SlowOfflineModel, serve

    with (
        serve(create_demo_app(store, chat_model=SlowOfflineModel())) as base,
        httpx.Client(base_url=base, timeout=30) as http,
    ):
        body = {"session_id": "s1", "question": PASSWORD_Q}
        with http.stream("POST", "/api/chat/stream", json=body) as r:
            first = json.loads(next(r.iter_lines()))  # the qa_id, then the client leaves
        assert first["type"] == "qa_id"
        r = http.post("/api/chat", json={"session_id": "s1", "question": EXPORT_Q})
        assert r.status_code == 200, r.text
    entries = store.get_session("s1")
    assert [e.qa_id for e in entries] == [first["qa_id"], r.json()["qa_id"]]
    assert entries[0].answer == PASSWORD_REPLY
