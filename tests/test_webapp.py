"""The demo chat web app (feedback_plugin.integrations.webapp) without a browser.

A FastAPI TestClient over a real diskcache store in tmp_path; the agent is the
app's own (the offline responder's model) unless a test passes a chat model
(the scripted tool-calling model of tests/_fakes.py).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from importlib import resources
from typing import Any
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from _fakes import ScriptedChatModel, tool_call
from fastapi.testclient import TestClient
from langchain_core.embeddings import Embeddings
from langchain_core.language_models import FakeListChatModel
from langchain_core.messages import BaseMessage

from feedback_plugin import SessionStore
from feedback_plugin.embeddings import is_available, local
from feedback_plugin.errors import ArgumentTypeError, ConfigurationError, InvalidArgumentError
from feedback_plugin.integrations import webapp
from feedback_plugin.integrations.demo.agent import CHAT_FAILED
from feedback_plugin.integrations.demo.content import ENV_CHAT_MODEL, ENV_EMBEDDINGS
from feedback_plugin.integrations.demo.memory import search_by_meaning
from feedback_plugin.integrations.offline_model import HELP_TOOL, LIKED_PREFIX, REUSE_MEANING
from feedback_plugin.integrations.rest import ApiKeyAuth
from feedback_plugin.integrations.webapp import (
    OFFLINE_RESPONDER,
    create_demo_app,
    load_documents,
)

LOCAL = "http://localhost"  # a host the app answers to (not TestClient's "testserver")
PASSWORD_Q = "How do I reset my password?"
PASSWORD_Q2 = "I forgot my password, how do I reset it?"
EXPORT_Q = "Can I export my notes as a PDF?"


@pytest.fixture
def client(store: SessionStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.delenv(ENV_CHAT_MODEL, raising=False)
    with TestClient(create_demo_app(store), base_url=LOCAL) as c:
        yield c


def chat(client: TestClient, question: str, session_id: str = "s1", **kw: Any) -> dict[str, Any]:
    r = client.post("/api/chat", json={"session_id": session_id, "question": question}, **kw)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def feedback_url(qa_id: str) -> str:
    return f"/api/turns/{quote(qa_id, safe='')}/feedback"


def agent_model(*answers: Any) -> ScriptedChatModel:
    """A tool-calling model: per turn, a help-centre search for the question, then the answer."""

    def search(messages: list[BaseMessage]) -> Any:
        question = [m for m in messages if m.type == "human"][-1].text
        return tool_call(HELP_TOOL, {"query": question})

    return ScriptedChatModel(script=[step for a in answers for step in (search, a)], cycle=True)


# -- /api/chat -------------------------------------------------------------------------


def test_chat_answers_and_records_the_turn(client: TestClient, store: SessionStore) -> None:
    body = chat(client, PASSWORD_Q)
    assert body["responder"] == OFFLINE_RESPONDER and body["offline"] is True
    assert body["recorded"] is True
    assert "Reset password" in body["answer"]
    assert body["context"][0]["id"] == "password-reset"
    assert body["context"][0]["title"] == "Resetting your password"
    assert body["memories"] == []

    entry = store.get_entry("s1", body["qa_id"])
    assert entry is not None
    assert (entry.question, entry.answer) == (PASSWORD_Q, body["answer"])
    assert entry.context and entry.context[0].startswith("Resetting your password.")
    assert entry.metadata["session_id"] == "s1"
    assert entry.metadata["responder"] == OFFLINE_RESPONDER
    # the page lists the session's turns from the REST router
    turns = client.get("/api/turns", params={"session_id": "s1"}).json()
    assert [t["qa_id"] for t in turns] == [body["qa_id"]]


def test_each_question_is_its_own_turn(client: TestClient, store: SessionStore) -> None:
    ids = [chat(client, q)["qa_id"] for q in (PASSWORD_Q, EXPORT_Q, "what about the weather?")]
    assert len(set(ids)) == 3
    assert [e.qa_id for e in store.get_session("s1")] == ids
    assert store.get_entry("s1", ids[2]).answer == webapp.NO_ANSWER  # type: ignore[union-attr]


def test_memories_appear_after_a_thumbs_up(client: TestClient, store: SessionStore) -> None:
    first = chat(client, PASSWORD_Q, session_id="monday")
    assert chat(client, PASSWORD_Q2, session_id="tuesday")["memories"] == []  # not liked yet

    r = client.put(
        feedback_url(first["qa_id"]), params={"session_id": "monday"}, json={"thumbs": "up"}
    )
    assert r.status_code == 200, r.text

    later = chat(client, PASSWORD_Q2, session_id="wednesday")
    memories = later["memories"]
    assert [m["qa_id"] for m in memories] == [first["qa_id"]]
    assert memories[0] | {"relevance": 0, "found_by": "words", "similarity": None} == {
        "qa_id": first["qa_id"],
        "session_id": "monday",
        "question": PASSWORD_Q,
        "answer": first["answer"],
        "feedback_score": 5,
        "relevance": 0,
        "found_by": "words",
        "similarity": None,
    }
    # by words; by meaning too once the local model (if installed) has loaded
    assert memories[0]["found_by"] in ("words", "words+meaning")
    # the recorded turn saw the memory as context too
    entry = store.get_entry("wednesday", later["qa_id"])
    assert entry is not None
    assert any(c.startswith(f"Question: {PASSWORD_Q}") for c in entry.context)


def test_unrelated_or_disliked_turns_are_not_memories(client: TestClient) -> None:
    first = chat(client, PASSWORD_Q)
    client.put(feedback_url(first["qa_id"]), params={"session_id": "s1"}, json={"thumbs": "down"})
    assert chat(client, PASSWORD_Q2)["memories"] == []
    client.put(feedback_url(first["qa_id"]), params={"session_id": "s1"}, json={"thumbs": "up"})
    assert chat(client, "Does the app work offline?")["memories"] == []


def test_offline_responder_reuses_a_correction(client: TestClient) -> None:
    first = chat(client, EXPORT_Q)
    fixed = "PDF export needs the Pro plan: File > Export > PDF."
    r = client.put(
        feedback_url(first["qa_id"]),
        params={"session_id": "s1"},
        json={"thumbs": "down", "text": "forgot the Pro plan", "correction": fixed},
    )
    assert r.status_code == 200, r.text
    again = chat(client, "Can I export notes to PDF?", session_id="s2")
    assert again["answer"] == fixed
    assert again["memories"][0]["answer"] == fixed


def test_memories_are_scoped_to_the_user(store: SessionStore) -> None:
    auth = ApiKeyAuth({"ka": "alice", "kb": "bob"})
    alice, bob = {"Authorization": "Bearer ka"}, {"Authorization": "Bearer kb"}
    with TestClient(create_demo_app(store, auth=auth), base_url=LOCAL) as c:
        first = chat(c, PASSWORD_Q, headers=alice)
        assert store.get_entry("s1", first["qa_id"], user="alice") is not None
        assert store.get_entry("s1", first["qa_id"]) is None
        r = c.put(
            feedback_url(first["qa_id"]),
            params={"session_id": "s1"},
            json={"thumbs": "up"},
            headers=alice,
        )
        assert r.status_code == 200
        assert chat(c, PASSWORD_Q2, session_id="s9", headers=bob)["memories"] == []
        assert len(chat(c, PASSWORD_Q2, session_id="s9", headers=alice)["memories"]) == 1


@pytest.mark.parametrize("route", ["/api/chat", "/api/chat/stream"])
@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer nope"}, 401), ({"Authorization": "Bearer ro"}, 403)],
)
def test_chat_needs_a_key_with_the_feedback_scope(
    store: SessionStore, headers: dict[str, str], status: int, route: str
) -> None:
    auth = ApiKeyAuth({"ro": {"user": "alice", "scopes": ["read"]}})
    with TestClient(create_demo_app(store, auth=auth), base_url=LOCAL) as c:
        for body in ({"session_id": "s1", "question": "hi"}, {"nonsense": True}):
            r = c.post(route, json=body, headers=headers)
            assert r.status_code == status, r.text  # auth before the body is judged
            assert "detail" in r.json()
        assert c.get("/api/info").json()["auth"] is True  # /api/info and the page need no key
        assert c.get("/").status_code == 200
    assert store.list_sessions(user="alice") == []


@pytest.mark.parametrize(
    "body",
    [
        {"session_id": "s1", "question": ""},
        {"session_id": "s1", "question": "   "},
        {"session_id": "", "question": "hi"},
        {"question": "hi"},
        {"session_id": "s1"},
        {"session_id": "s1", "question": "hi", "extra": 1},
        {"session_id": 5, "question": "hi"},
        {"session_id": "s1", "question": "x" * 4001},
    ],
)
def test_bad_chat_requests_are_422_and_record_nothing(
    client: TestClient, store: SessionStore, body: dict[str, Any]
) -> None:
    r = client.post("/api/chat", json=body)
    assert r.status_code == 422, r.text
    assert list(store.iter_entries()) == []


def test_odd_session_ids_round_trip(client: TestClient, store: SessionStore) -> None:
    session = "../a b?c#d/日本語"
    body = chat(client, PASSWORD_Q, session_id=session)
    assert body["session_id"] == session
    assert store.get_entry(session, body["qa_id"]) is not None
    r = client.put(
        feedback_url(body["qa_id"]), params={"session_id": session}, json={"thumbs": "up"}
    )
    assert r.status_code == 200 and r.json()["feedback_score"] == 5


# -- responders ---------------------------------------------------------------------------


def test_a_chat_model_answers_verbatim(store: SessionStore) -> None:
    payload = '<img src=x onerror="alert(1)"><script>alert(2)</script>'
    with TestClient(create_demo_app(store, chat_model=agent_model(payload)), base_url=LOCAL) as c:
        body = chat(c, PASSWORD_Q)
        assert body["answer"] == payload
        assert body["responder"] == "ScriptedChatModel" and body["offline"] is False
        assert c.get("/api/info").json()["offline"] is False
    assert store.get_entry("s1", body["qa_id"]).answer == payload  # type: ignore[union-attr]


def test_the_chat_model_sees_articles_and_memories(store: SessionStore) -> None:
    model = agent_model("ok")
    with TestClient(create_demo_app(store, chat_model=model), base_url=LOCAL) as c:
        first = chat(c, PASSWORD_Q)
        c.put(feedback_url(first["qa_id"]), params={"session_id": "s1"}, json={"thumbs": "up"})
        chat(c, PASSWORD_Q2)
    calls = model.calls  # per turn: the search, then the answer
    assert len(calls) == 4 and model.tools_bound == [HELP_TOOL]
    tool_results = [m.text for m in calls[1] if m.type == "tool"]
    assert tool_results[0].startswith("[password-reset] Resetting your password.")
    assert "Suggested reply: Go to Settings > Account > Security" in tool_results[0]
    systems = model.system_prompts()
    assert "Acme Notes" in systems[0] and "<liked_answers>" not in systems[1]
    for system in systems[2:]:  # the second turn's calls see the liked turn
        # (found_by / similarity attributes follow once the local model finds it too)
        assert f'<example qa_id="{first["qa_id"]}"' in system
        assert f"Question: {PASSWORD_Q}\nAnswer: ok" in system
    assert calls[3][-1].type == "tool"  # the conversation: the question, search, result
    assert [m.text for m in calls[3] if m.type == "human"] == [PASSWORD_Q, PASSWORD_Q2]


def test_a_failing_chat_model_is_502_and_records_nothing(store: SessionStore) -> None:
    def broken(_: Any) -> str:
        raise RuntimeError("model down")

    model = ScriptedChatModel(script=[broken], cycle=True)
    with TestClient(create_demo_app(store, chat_model=model), base_url=LOCAL) as c:
        r = c.post("/api/chat", json={"session_id": "s1", "question": "hi"})
    assert r.status_code == 502
    assert r.json() == {"detail": CHAT_FAILED}  # nothing internal
    assert store.get_session("s1") == []


def test_a_chat_model_that_cannot_call_tools_is_refused(store: SessionStore) -> None:
    with pytest.raises(ConfigurationError, match="tool calling"):
        create_demo_app(store, chat_model=FakeListChatModel(responses=["hi"]))


def test_env_model_without_langchain_falls_back_offline(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_CHAT_MODEL, "openai:gpt-4o-mini")
    monkeypatch.setitem(sys.modules, "langchain", None)  # not importable
    monkeypatch.setitem(sys.modules, "langchain.chat_models", None)
    with TestClient(create_demo_app(store), base_url=LOCAL) as c:
        info = c.get("/api/info").json()
        assert info["offline"] is True and info["responder"] == OFFLINE_RESPONDER
        assert "openai:gpt-4o-mini" in info["note"]
        assert chat(c, PASSWORD_Q)["responder"] == OFFLINE_RESPONDER


def test_env_model_is_made_with_init_chat_model(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import types

    seen: list[str] = []

    def init_chat_model(name: str) -> Any:
        seen.append(name)
        if name == "notools:model":
            return FakeListChatModel(responses=["no tool calling"])
        return agent_model("from the configured model")

    fake = types.ModuleType("langchain.chat_models")
    fake.init_chat_model = init_chat_model  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "langchain", types.ModuleType("langchain"))
    monkeypatch.setitem(sys.modules, "langchain.chat_models", fake)
    monkeypatch.setenv(ENV_CHAT_MODEL, "someprovider:some-model")
    with TestClient(create_demo_app(store), base_url=LOCAL) as c:
        body = chat(c, PASSWORD_Q)
    assert seen == ["someprovider:some-model"]
    assert body["answer"] == "from the configured model"
    assert body["responder"] == "someprovider:some-model" and body["offline"] is False

    monkeypatch.setenv(ENV_CHAT_MODEL, "notools:model")  # the agent needs tools
    with TestClient(create_demo_app(store), base_url=LOCAL) as c:
        info = c.get("/api/info").json()
        assert info["offline"] is True and "cannot call tools" in info["note"]
        assert chat(c, PASSWORD_Q)["responder"] == OFFLINE_RESPONDER


# -- how memory is found: by meaning (the semantic extra) or by words ---------------------

BY_WORDS = "memory found by words (BM25)"
BY_MEANING = "memory found by meaning: all-MiniLM-L6-v2, on this machine"
PARAPHRASE_Q = "I forgot my login credentials, what now?"  # no word in common with PASSWORD_Q


def _memory_search(store: SessionStore, **options: Any) -> dict[str, Any]:
    with TestClient(create_demo_app(store, **options), base_url=LOCAL) as c:
        found: dict[str, Any] = c.get("/api/info").json()["memory_search"]
        return found


def test_info_reports_the_memory_search(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without options the demo uses the local model when the extra is installed."""
    monkeypatch.delenv(ENV_EMBEDDINGS, raising=False)
    found = _memory_search(store)
    if is_available():
        assert found == {
            "mode": "meaning",
            "model": "all-MiniLM-L6-v2",
            "local": True,
            "label": BY_MEANING,
            "note": None,
        }
    else:
        assert found["mode"] == "words" and found["label"] == BY_WORDS
        assert "pip install 'feedback-plugin[semantic]'" in found["note"]


def test_memory_by_words_when_turned_off_or_asked(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_EMBEDDINGS, "off")
    found = _memory_search(store)
    assert (found["mode"], found["model"], found["label"]) == ("words", None, BY_WORDS)
    assert f"{ENV_EMBEDDINGS}=off" in found["note"]
    monkeypatch.delenv(ENV_EMBEDDINGS)
    assert _memory_search(store, embeddings=None) == {
        "mode": "words",
        "model": None,
        "local": False,
        "label": BY_WORDS,
        "note": None,
    }
    with pytest.raises(ArgumentTypeError):
        create_demo_app(store, embeddings=object())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        create_demo_app(store, embeddings="local")  # type: ignore[arg-type]


def test_memory_by_words_without_the_extra(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_EMBEDDINGS, raising=False)
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # not importable
    found = _memory_search(store)
    assert (found["mode"], found["label"]) == ("words", BY_WORDS)
    assert "pip install 'feedback-plugin[semantic]'" in found["note"]
    with TestClient(create_demo_app(store), base_url=LOCAL) as c:  # and the chat works
        first = chat(c, PASSWORD_Q)
        c.put(feedback_url(first["qa_id"]), params={"session_id": "s1"}, json={"thumbs": "up"})
        assert [m["qa_id"] for m in chat(c, PASSWORD_Q2)["memories"]] == [first["qa_id"]]


class _BrokenEmbeddings(Embeddings):
    """Embeddings whose service is down."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise RuntimeError("the embedding service is down")

    def embed_query(self, text: str) -> list[float]:
        raise RuntimeError("the embedding service is down")


def test_failing_embeddings_leave_memory_by_words(store: SessionStore) -> None:
    with TestClient(create_demo_app(store, embeddings=_BrokenEmbeddings()), base_url=LOCAL) as c:
        found = c.get("/api/info").json()["memory_search"]
        assert (found["mode"], found["model"], found["local"]) == (
            "meaning",
            "_BrokenEmbeddings",
            False,
        )
        first = chat(c, PASSWORD_Q)
        c.put(feedback_url(first["qa_id"]), params={"session_id": "s1"}, json={"thumbs": "up"})
        later = chat(c, PASSWORD_Q2)
        assert [m["qa_id"] for m in later["memories"]] == [first["qa_id"]]
        history = c.get("/api/chat/history", params={"session_id": "s1"}).json()
        assert [m["qa_id"] for m in history[-1]["memories"]] == [first["qa_id"]]


@pytest.mark.slow
@pytest.mark.skipif(not is_available(), reason="the semantic extra is not installed")
def test_the_local_model_finds_a_paraphrase_and_not_another_topic(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo with the local model: a liked answer comes back for the same question in
    other words -- in GET /api/memory, and reused by the offline responder, found by
    meaning -- and not for a question about something else."""
    monkeypatch.delenv(ENV_EMBEDDINGS, raising=False)
    with TestClient(create_demo_app(store), base_url=LOCAL) as c:
        first = chat(c, PASSWORD_Q)
        c.put(feedback_url(first["qa_id"]), params={"session_id": "s1"}, json={"thumbs": "up"})
        model = local()
        model.load()  # the app loads it as it starts; this waits for it
        deadline = time.monotonic() + 30  # until the liked turn is embedded (background)
        while not [
            e
            for e, _ in search_by_meaning(store, PARAPHRASE_Q, model, k=3)
            if e.qa_id == first["qa_id"]
        ]:
            assert time.monotonic() < deadline, "the liked turn was never found by meaning"
            time.sleep(0.1)

        r = c.get("/api/memory", params={"q": PARAPHRASE_Q})
        assert r.status_code == 200 and r.headers["x-memory-search"] == "words+meaning"
        (hit,) = r.json()
        assert (hit["qa_id"], hit["search"], hit["found_by"]) == (
            first["qa_id"],
            "words+meaning",
            "meaning",  # no word in common
        )
        assert hit["similarity"] >= REUSE_MEANING  # close enough for the responder to reuse

        later = chat(c, PARAPHRASE_Q, session_id="s2")
        assert later["answer"] == LIKED_PREFIX + first["answer"]  # the liked answer, reused
        assert [m["qa_id"] for m in later["memories"]] == [first["qa_id"]]
        assert later["memories"][0]["relevance"] > 0
        assert later["memories"][0]["found_by"] == "meaning"
        assert later["memories"][0]["similarity"] >= REUSE_MEANING
        other = chat(c, EXPORT_Q, session_id="s2")
        assert other["memories"] == []  # nearest, but not close
        assert not other["answer"].startswith(LIKED_PREFIX)
        history = c.get("/api/chat/history", params={"session_id": "s2"}).json()
        assert [[m["qa_id"] for m in t["memories"]] for t in history] == [[first["qa_id"]], []]
        assert history[0]["memories"][0]["found_by"] == "meaning"


# -- the page and its files ----------------------------------------------------------------


def test_page_and_static_files(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'self'" in csp
    assert '<script src="/static/feedback-buttons.js"' in r.text
    for name, kind in [
        ("app.js", "javascript"),
        ("feedback-buttons.js", "javascript"),
        ("style.css", "text/css"),
        ("favicon.svg", "image/svg+xml"),
    ]:
        s = client.get(f"/static/{name}")
        assert s.status_code == 200 and kind in s.headers["content-type"], name
        assert s.headers["x-content-type-options"] == "nosniff"
    assert client.get("/static/nope.js").status_code == 404
    assert client.get("/static/../webapp.py").status_code == 404
    assert client.get("/favicon.ico").status_code == 200
    assert client.get("/healthz").json() == {"status": "ok"}


def test_page_scripts_never_use_html_sinks() -> None:
    """All user and model text goes in with textContent: no HTML sink in our scripts."""
    for name in ("app.js", "feedback-buttons.js"):
        source = resources.files("feedback_plugin.integrations").joinpath("static", name)
        text = source.read_text(encoding="utf-8")
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in text, f"{name} uses {sink}"


def test_the_openapi_schema_has_the_chat_and_feedback_endpoints(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/api/chat" in paths and "/api/info" in paths
    assert "/api/turns/{qa_id}/feedback" in paths
    assert "/" not in paths


def test_bundled_documents_ship_as_package_data() -> None:
    docs = load_documents()
    raw = json.loads(
        resources.files("feedback_plugin.integrations").joinpath("data", "docs.json").read_text()
    )
    assert len(docs) == len(raw) == 6
    assert {d.metadata["id"] for d in docs} >= {"password-reset", "export", "offline-sync"}


# -- main() ------------------------------------------------------------------------------


def test_main_runs_uvicorn_with_the_options(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append({"app": app, **kw}))
    monkeypatch.delenv("FEEDBACK_PLUGIN_API_KEYS", raising=False)
    monkeypatch.delenv("FEEDBACK_PLUGIN_API_KEYS_FILE", raising=False)
    assert webapp.main(["--port", "8123", "--store", str(tmp_path / "st")]) == 0
    assert calls[0]["host"] == "127.0.0.1" and calls[0]["port"] == 8123
    out = capsys.readouterr().out
    assert "http://127.0.0.1:8123/" in out and str(tmp_path / "st") in out

    monkeypatch.setenv("FEEDBACK_PLUGIN_HOST", "::1")
    monkeypatch.setenv("FEEDBACK_PLUGIN_PORT", "9001")
    webapp.main([])
    assert (calls[1]["host"], calls[1]["port"]) == ("::1", 9001)
    assert "http://[::1]:9001/" in capsys.readouterr().out
