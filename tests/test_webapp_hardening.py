"""The demo chat app facing the world: JSON always, limits, hosts, 502s, reloads, HEAD, ports.

A FastAPI TestClient over a real diskcache store in tmp_path (base URL
``http://localhost``), or the real command line in a subprocess.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from _fakes import ScriptedChatModel
from fastapi.testclient import TestClient

from feedback_plugin import SessionStore
from feedback_plugin.errors import ConfigurationError
from feedback_plugin.integrations import webapp
from feedback_plugin.integrations.demo.content import ENV_CHAT_MODEL
from feedback_plugin.integrations.rest import ApiKeyAuth
from feedback_plugin.integrations.webapp import create_demo_app

LOCAL = "http://localhost"
JSON = {"Content-Type": "application/json"}
PASSWORD_Q = "How do I reset my password?"
PASSWORD_Q2 = "I forgot my password, how do I reset it?"
EXPORT_Q = "Can I export my notes as a PDF?"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def client(store: SessionStore, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.delenv(ENV_CHAT_MODEL, raising=False)
    with TestClient(create_demo_app(store), base_url=LOCAL) as c:
        yield c


def chat(client: TestClient, question: str, session_id: str = "s1") -> dict[str, Any]:
    r = client.post("/api/chat", json={"session_id": session_id, "question": question})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def is_json_error(r: Any, status: int) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert "detail" in json.loads(r.content)


# -- 9 and 10: any text in, JSON out ------------------------------------------------------


def test_chat_with_lone_surrogates_answers_json(client: TestClient, store: SessionStore) -> None:
    body = json.dumps({"session_id": "s\udc80", "question": "reset my password \ud800?"})
    r = client.post("/api/chat", content=body, headers=JSON)
    assert r.status_code == 200, r.text
    reply = json.loads(r.content)
    assert reply["question"] == "reset my password \ud800?" and reply["recorded"] is True
    entry = store.get_entry("s\udc80", reply["qa_id"])
    assert entry is not None and entry.question == "reset my password \ud800?"

    # a session id a URL can carry, so the turn can be rated over REST
    body = json.dumps({"session_id": "s1", "question": "reset my password \ud800?"})
    reply = json.loads(client.post("/api/chat", content=body, headers=JSON).content)
    r = client.put(
        f"/api/turns/{reply['qa_id']}/feedback",
        params={"session_id": "s1"},
        content=json.dumps({"thumbs": "up", "text": "\udfff"}),
        headers=JSON,
    )
    assert r.status_code == 200, r.text
    again = chat(client, "How do I reset my password?", session_id="s2")  # it is a memory now
    assert reply["qa_id"] in [m["qa_id"] for m in again["memories"]]
    r = client.get("/api/chat/history", params={"session_id": "s1"})
    assert r.status_code == 200 and json.loads(r.content)[0]["feedback_text"] == "\udfff"


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "1e309"])
def test_chat_with_non_finite_numbers_is_422_json(
    client: TestClient, store: SessionStore, bad: str
) -> None:
    r = client.post(
        "/api/chat", content='{"session_id": ' + bad + ', "question": "hi"}', headers=JSON
    )
    is_json_error(r, 422)
    assert list(store.iter_entries()) == []


# -- 15: body limit on the chat, from the command line ---------------------------------


def test_a_chat_body_over_the_limit_is_413(store: SessionStore) -> None:
    with TestClient(create_demo_app(store, max_body_bytes=200), base_url=LOCAL) as c:
        body = {"session_id": "s1", "question": "x" * 300}
        is_json_error(c.post("/api/chat", json=body), 413)
        assert chat(c, PASSWORD_Q)["recorded"] is True
    assert len(store.get_session("s1")) == 1


@pytest.fixture
def run_main(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """``webapp.main(argv)`` with ``uvicorn.run`` replaced: returns (exit code, app, run kwargs)."""
    import uvicorn

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append({"app": app, **kw}))
    for var in (
        "API_KEYS",
        "API_KEYS_FILE",
        "HOST",
        "PORT",
        "ALLOWED_HOSTS",
        "MAX_BODY_BYTES",
        "RATE_LIMIT",
        "ALLOW_OPEN",
    ):
        monkeypatch.delenv(f"FEEDBACK_PLUGIN_{var}", raising=False)

    def run(*argv: str) -> tuple[int, Any, dict[str, Any]]:
        calls.clear()
        code = webapp.main([*argv, "--store", str(tmp_path / "st")])
        return code, (calls[0]["app"] if calls else None), (calls[0] if calls else {})

    yield run


def test_the_demo_body_limit_comes_from_flag_or_env(
    run_main: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, app, _ = run_main("--max-body-bytes", "100")
    assert code == 0
    with TestClient(app, base_url=LOCAL) as c:
        is_json_error(c.post("/api/chat", json={"session_id": "s", "question": "x" * 200}), 413)
    monkeypatch.setenv("FEEDBACK_PLUGIN_MAX_BODY_BYTES", "100")
    _, app, _ = run_main()
    with TestClient(app, base_url=LOCAL) as c:
        is_json_error(c.post("/api/chat", json={"session_id": "s", "question": "x" * 200}), 413)


# -- 16: hosts and open mode -------------------------------------------------------------


def test_the_demo_refuses_a_foreign_host(client: TestClient, store: SessionStore) -> None:
    chat(client, PASSWORD_Q)
    for path in ("/", "/api/info", "/api/turns?session_id=s1", "/static/app.js"):
        r = client.get(path, headers={"Host": "attacker.example"})
        is_json_error(r, 400)
        assert PASSWORD_Q not in r.text
    r = client.post(
        "/api/chat", json={"session_id": "s1", "question": "hi"}, headers={"Host": "evil.example"}
    )
    is_json_error(r, 400)
    assert len(store.get_session("s1")) == 1
    assert client.get("/", headers={"Host": "127.0.0.1:8000"}).status_code == 200


def test_the_demo_answers_the_host_it_was_started_for(
    run_main: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEEDBACK_PLUGIN_API_KEYS", "k:alice")
    code, app, kw = run_main("--host", "192.0.2.10")
    assert code == 0 and kw["host"] == "192.0.2.10"
    with TestClient(app, base_url="http://192.0.2.10:8000") as c:
        assert c.get("/").status_code == 200
        assert c.get("/", headers={"Host": "evil.example"}).status_code == 400
    _, app, _ = run_main("--host", "192.0.2.10", "--allowed-hosts", "chat.example.com")
    with TestClient(app, base_url="http://chat.example.com") as c:
        assert c.get("/").status_code == 200
        assert c.get("/", headers={"Host": "192.0.2.10"}).status_code == 400


def test_open_mode_is_refused_beyond_loopback(
    run_main: Any, capsys: pytest.CaptureFixture[str], store: SessionStore
) -> None:
    code, app, _ = run_main("--host", "0.0.0.0")
    assert code != 0 and app is None  # no server started
    err = capsys.readouterr().err
    assert "FEEDBACK_PLUGIN_API_KEYS" in err and "--allow-open" in err
    code, app, kw = run_main("--host", "0.0.0.0", "--allow-open")
    assert code == 0 and kw["host"] == "0.0.0.0"
    with pytest.raises(ConfigurationError):
        create_demo_app(store, allowed_hosts=["chat.example.com"])
    create_demo_app(store, allowed_hosts=["chat.example.com"], allow_open=True)
    auth = ApiKeyAuth({"k": "alice"})
    create_demo_app(store, auth=auth, allowed_hosts=["chat.example.com"])  # keys: fine


# -- 17: cross-site posts cannot record a turn --------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_a_chat_not_sent_as_json_is_415(
    client: TestClient, store: SessionStore, content_type: str
) -> None:
    body = json.dumps({"session_id": "s1", "question": PASSWORD_Q})
    r = client.post("/api/chat", content=body, headers={"Content-Type": content_type})
    is_json_error(r, 415)
    assert list(store.iter_entries()) == []


# -- 18: a failing chat model tells the client nothing internal ----------------------------


def test_a_failing_chain_is_a_generic_502(
    store: SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_: Any) -> str:
        raise RuntimeError(f"model down; store at {store.location}; key sk-secret")

    with caplog.at_level(logging.ERROR, logger="feedback_plugin"):
        app = create_demo_app(store, chat_model=ScriptedChatModel(script=[broken], cycle=True))
        with TestClient(app, base_url=LOCAL) as c:
            r = c.post("/api/chat", json={"session_id": "s1", "question": "hi"})
    is_json_error(r, 502)
    for secret in ("model down", store.location, "sk-secret", "RuntimeError"):
        assert secret not in r.text
    assert "sk-secret" in caplog.text  # the details are in the server log
    assert store.get_session("s1") == []


# -- 19: a reload shows sources and memories as they were -----------------------------------


def test_history_has_the_sources_and_memories_of_each_answer(
    client: TestClient, store: SessionStore
) -> None:
    first = chat(client, PASSWORD_Q)
    r = client.put(
        f"/api/turns/{quote(first['qa_id'])}/feedback",
        params={"session_id": "s1"},
        json={"thumbs": "up"},
    )
    assert r.status_code == 200
    second = chat(client, EXPORT_Q)
    third = chat(client, PASSWORD_Q2)
    assert third["memories"] and third["context"]

    r = client.get("/api/chat/history", params={"session_id": "s1"})
    assert r.status_code == 200, r.text
    history = r.json()
    assert [h["qa_id"] for h in history] == [first["qa_id"], second["qa_id"], third["qa_id"]]
    for turn, answered in zip(history, (first, second, third), strict=True):
        assert turn["context"] == answered["context"]  # titles and all, not plain strings
        assert turn["answer"] == answered["answer"] and turn["question"] == answered["question"]
        assert turn["responder"] == answered["responder"] and turn["recorded"] is True
        keep = ("qa_id", "session_id", "question", "answer")
        assert [{k: m[k] for k in keep} for m in turn["memories"]] == [
            {k: m[k] for k in keep} for m in answered["memories"]
        ]
    assert history[0]["feedback_score"] == 5 and history[2]["memories"][0]["feedback_score"] == 5
    # another session, and another user, see nothing of it
    assert client.get("/api/chat/history", params={"session_id": "other"}).json() == []


def test_history_needs_the_read_scope(store: SessionStore) -> None:
    auth = ApiKeyAuth({"w": {"user": "alice", "scopes": ["feedback"]}, "r": "alice"})
    with TestClient(create_demo_app(store, auth=auth), base_url=LOCAL) as c:
        assert c.get("/api/chat/history", params={"session_id": "s"}).status_code == 401
        r = c.get(
            "/api/chat/history", params={"session_id": "s"}, headers={"Authorization": "Bearer w"}
        )
        assert r.status_code == 403
        r = c.get(
            "/api/chat/history", params={"session_id": "s"}, headers={"Authorization": "Bearer r"}
        )
        assert r.status_code == 200 and r.json() == []


# -- 24: HEAD, and a port that is taken ------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/", "/favicon.ico", "/static/app.js", "/static/style.css", "/healthz"]
)
def test_head_answers_200(client: TestClient, path: str) -> None:
    get, head = client.get(path), client.head(path)
    assert head.status_code == 200 == get.status_code
    assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]


@pytest.fixture
def busy_port() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDBACK_PLUGIN_API_KEYS")}
    return {**env, "FEEDBACK_PLUGIN_DIR": str(tmp_path / "store"), "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
def test_the_demo_exits_non_zero_when_its_port_is_taken(tmp_path: Path, busy_port: int) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "feedback_plugin.integrations.webapp", "--port", str(busy_port)],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(tmp_path),
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "in use" in proc.stderr + proc.stdout


@pytest.mark.slow
def test_the_chainlit_example_has_its_own_port_and_fails_loudly(
    tmp_path: Path, busy_port: int
) -> None:
    pytest.importorskip("chainlit")
    source = (REPO / "examples" / "chainlit_app.py").read_text(encoding="utf-8")
    assert "DEFAULT_PORT = 8001" in source  # not the demo's 8000
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "chainlit",
            "run",
            str(REPO / "examples" / "chainlit_app.py"),
            "--headless",
            "--port",
            str(busy_port),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        env=_env(tmp_path),
        cwd=tmp_path,
    )
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "in use" in proc.stderr + proc.stdout
