"""The REST app as a server facing the world: JSON always, limits, hosts, content types.

A FastAPI TestClient over a real diskcache store in tmp_path (base URL
``http://localhost``: the hosts a default app answers to), except where a
test needs real HTTP streaming (a uvicorn server on 127.0.0.1).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import httpx
from fastapi.testclient import TestClient

from feedback_plugin import SessionStore
from feedback_plugin.errors import ConfigurationError
from feedback_plugin.integrations.rest import ApiKeyAuth, create_app
from feedback_plugin.models import MAX_ID_LENGTH, MAX_TEXT_LENGTH

ALICE = {"Authorization": "Bearer alice-key"}
BOB = {"Authorization": "Bearer bob-key"}
JSON = {"Content-Type": "application/json"}
LOCAL = "http://localhost"


@pytest.fixture
def auth() -> ApiKeyAuth:
    return ApiKeyAuth({"alice-key": "alice", "bob-key": "bob"})


@pytest.fixture
def client(store: SessionStore, auth: ApiKeyAuth) -> Iterator[TestClient]:
    with TestClient(create_app(store, auth=auth), base_url=LOCAL) as c:
        yield c


@pytest.fixture
def turn(store: SessionStore) -> str:
    return store.record("s1", "How do I reset my password?", "Settings.", user="alice").qa_id


def feedback_url(qa_id: str) -> str:
    return f"/api/turns/{quote(qa_id, safe='')}/feedback"


def put_raw(client: TestClient, qa_id: str, body: str | bytes, **headers: str) -> Any:
    return client.put(
        feedback_url(qa_id),
        params={"session_id": "s1"},
        content=body,
        headers={**ALICE, **JSON, **headers},
    )


def stored(store: SessionStore, qa_id: str) -> dict[str, Any]:
    entry = store.get_entry("s1", qa_id, user="alice")
    assert entry is not None
    return entry.model_dump()


def is_json_error(r: Any, status: int) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert "detail" in json.loads(r.content)


# -- 9: text UTF-8 cannot carry is stored escaped and served back -------------------


SURROGATES = {"text": "\ud800 lone high", "correction": "lone low \udfff"}


def test_lone_surrogates_in_feedback_are_stored_and_served_back(
    store: SessionStore, client: TestClient, turn: str
) -> None:
    body = json.dumps({**SURROGATES, "score": 5})  # ASCII, with \ud800 escapes
    r = put_raw(client, turn, body)
    assert r.status_code == 200, r.text
    got = json.loads(r.content)
    assert (got["feedback_text"], got["correction"]) == (
        SURROGATES["text"],
        SURROGATES["correction"],
    )
    entry = stored(store, turn)
    assert (entry["feedback_text"], entry["correction"]) == (
        SURROGATES["text"],
        SURROGATES["correction"],
    )

    r = client.get(f"/api/turns/{turn}", params={"session_id": "s1"}, headers=ALICE)
    assert r.status_code == 200 and json.loads(r.content)["feedback_text"] == SURROGATES["text"]
    r = client.get("/api/turns", params={"session_id": "s1"}, headers=ALICE)
    assert (
        r.status_code == 200 and json.loads(r.content)[0]["correction"] == SURROGATES["correction"]
    )
    r = client.get("/api/sessions", headers=ALICE)
    assert r.status_code == 200 and json.loads(r.content)[0]["positive"] == 1


def test_memory_search_serves_lone_surrogates(
    store: SessionStore, client: TestClient, turn: str
) -> None:
    assert put_raw(client, turn, json.dumps({**SURROGATES, "score": 5})).status_code == 200
    r = client.get("/api/memory", params={"q": "reset my password"}, headers=ALICE)
    assert r.status_code == 200, r.text
    [hit] = json.loads(r.content)
    assert hit["qa_id"] == turn and hit["answer"] == SURROGATES["correction"]


def test_ordinary_non_ascii_stays_utf8(store: SessionStore, client: TestClient) -> None:
    t = store.record("s1", "日本語 🎉", "ünïcödé", user="alice")
    r = client.get(f"/api/turns/{t.qa_id}", params={"session_id": "s1"}, headers=ALICE)
    assert "日本語 🎉".encode() in r.content and "ünïcödé".encode() in r.content


# -- 10: non-finite scores, and every error is JSON ------------------------------------


@pytest.mark.parametrize("score", ["1e309", "-1e309", "NaN", "Infinity", "-Infinity"])
def test_non_finite_scores_are_422_json(
    store: SessionStore, client: TestClient, turn: str, score: str
) -> None:
    before = stored(store, turn)
    r = put_raw(client, turn, '{"score": ' + score + "}")
    is_json_error(r, 422)
    assert stored(store, turn) == before


class BuggyStore(SessionStore):
    """A real store with a bug in one read (not a store failure)."""

    def get_entry(self, session_id: str, qa_id: str, *, user: str | None = None) -> Any:
        raise RuntimeError(f"a bug near the secret path {self.location}")

    async def aget_entry(self, session_id: str, qa_id: str, *, user: str | None = None) -> Any:
        return self.get_entry(session_id, qa_id, user=user)  # what the async routes call


def test_an_unexpected_error_is_a_json_500_without_internals(
    tmp_path: Path, auth: ApiKeyAuth, caplog: pytest.LogCaptureFixture
) -> None:
    store = BuggyStore(tmp_path / "secret-dir")
    try:
        app = create_app(store, auth=auth)
        with (
            caplog.at_level(logging.ERROR, logger="feedback_plugin"),
            TestClient(app, base_url=LOCAL, raise_server_exceptions=False) as c,
        ):
            r = c.get("/api/turns/x", params={"session_id": "s1"}, headers=ALICE)
        is_json_error(r, 500)
        assert "secret" not in r.text and "RuntimeError" not in r.text
        assert "secret-dir" in caplog.text  # the details are in the server log
    finally:
        store.close()


# -- 15: body size, text lengths, rate limit ---------------------------------------


def test_a_body_over_1_mib_is_413(store: SessionStore, client: TestClient, turn: str) -> None:
    before = stored(store, turn)
    body = json.dumps({"text": "x" * (1024 * 1024)})
    is_json_error(put_raw(client, turn, body), 413)
    assert stored(store, turn) == before


def test_the_body_limit_is_configurable(store: SessionStore, auth: ApiKeyAuth, turn: str) -> None:
    with TestClient(create_app(store, auth=auth, max_body_bytes=64), base_url=LOCAL) as c:
        assert put_raw(c, turn, json.dumps({"text": "x" * 30})).status_code == 200
        is_json_error(put_raw(c, turn, json.dumps({"text": "x" * 60})), 413)
    with pytest.raises(ConfigurationError):
        create_app(store, auth=auth, max_body_bytes=0)


def test_the_body_limit_comes_from_the_environment(
    store: SessionStore, auth: ApiKeyAuth, turn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEEDBACK_PLUGIN_MAX_BODY_BYTES", "64")
    with TestClient(create_app(store, auth=auth), base_url=LOCAL) as c:
        is_json_error(put_raw(c, turn, json.dumps({"text": "x" * 60})), 413)


@pytest.fixture
def server(store: SessionStore, auth: ApiKeyAuth) -> Iterator[str]:
    """The app (body limit 1 KiB) on a real uvicorn server; yields its base URL."""
    uvicorn = pytest.importorskip("uvicorn")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(store, auth=auth, max_body_bytes=1024)
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(15)
        sock.close()


def test_a_streamed_body_without_length_is_cut_at_the_limit(
    store: SessionStore, server: str, turn: str
) -> None:
    """Chunked transfer (no Content-Length): counted as it arrives."""
    before = stored(store, turn)

    def chunks() -> Iterator[bytes]:
        yield b'{"text": "'
        for _ in range(64):
            yield b"x" * 1024
        yield b'"}'

    with httpx.Client(base_url=server, trust_env=False, timeout=30) as c:
        r = c.put(
            feedback_url(turn),
            params={"session_id": "s1"},
            content=chunks(),
            headers={**ALICE, **JSON},
        )
        is_json_error(r, 413)
        ok = c.put(
            feedback_url(turn), params={"session_id": "s1"}, json={"text": "fine"}, headers=ALICE
        )
        assert ok.status_code == 200
    assert stored(store, turn)["feedback_text"] == "fine" != before["feedback_text"]


def test_text_fields_are_limited_like_the_store(
    store: SessionStore, auth: ApiKeyAuth, turn: str
) -> None:
    app = create_app(store, auth=auth, max_body_bytes=MAX_TEXT_LENGTH + 1000)
    client = TestClient(app, base_url=LOCAL)
    before = stored(store, turn)
    for field in ("text", "correction"):
        is_json_error(put_raw(client, turn, json.dumps({field: "x" * (MAX_TEXT_LENGTH + 1)})), 422)
    assert stored(store, turn) == before
    r = put_raw(client, turn, json.dumps({"text": "y" * MAX_TEXT_LENGTH}))
    assert r.status_code == 200 and len(stored(store, turn)["feedback_text"]) == MAX_TEXT_LENGTH
    long_id = "s" * (MAX_ID_LENGTH + 1)
    r = client.get("/api/turns", params={"session_id": long_id}, headers=ALICE)
    is_json_error(r, 422)
    r = client.get(
        f"/api/turns/{'q' * (MAX_ID_LENGTH + 1)}", params={"session_id": "s1"}, headers=ALICE
    )
    is_json_error(r, 422)
    # and the schema says so
    schema = client.get("/openapi.json").json()
    request = schema["components"]["schemas"]["FeedbackRequest"]["properties"]
    assert MAX_TEXT_LENGTH in {s.get("maxLength") for s in request["text"]["anyOf"]}
    params = schema["paths"]["/api/turns"]["get"]["parameters"]
    [session] = [p for p in params if p["name"] == "session_id"]
    assert session["schema"]["maxLength"] == MAX_ID_LENGTH


def test_rate_limit_per_key_is_429_with_retry_after(
    store: SessionStore, auth: ApiKeyAuth, turn: str
) -> None:
    pytest.importorskip("limits")
    before = stored(store, turn)
    with TestClient(create_app(store, auth=auth, rate_limit="3/minute"), base_url=LOCAL) as c:
        for _ in range(3):
            assert (
                c.get("/api/turns", params={"session_id": "s1"}, headers=ALICE).status_code == 200
            )
        r = put_raw(c, turn, '{"score": 1}')
        is_json_error(r, 429)
        assert 1 <= int(r.headers["retry-after"]) <= 60
        r = c.get("/api/turns", params={"session_id": "s1"}, headers=BOB)
        assert r.status_code == 200  # bob has his own count
        assert c.get("/healthz").status_code == 200
    assert stored(store, turn) == before


def test_rate_limit_is_off_by_default(store: SessionStore, client: TestClient) -> None:
    for _ in range(120):
        assert (
            client.get("/api/turns", params={"session_id": "s1"}, headers=ALICE).status_code == 200
        )


def test_bad_rate_limits_are_refused(store: SessionStore, auth: ApiKeyAuth) -> None:
    pytest.importorskip("limits")
    with pytest.raises(ConfigurationError):
        create_app(store, auth=auth, rate_limit="lots")


# -- 16: hosts --------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1", "[::1]:8000", "LOCALHOST"])
def test_loopback_hosts_are_answered(client: TestClient, host: str) -> None:
    r = client.get("/api/turns", params={"session_id": "s1"}, headers={**ALICE, "Host": host})
    assert r.status_code == 200


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", ""]
)
def test_a_foreign_host_is_400(
    store: SessionStore, client: TestClient, turn: str, host: str
) -> None:
    before = stored(store, turn)
    r = client.get("/api/turns", params={"session_id": "s1"}, headers={**ALICE, "Host": host})
    is_json_error(r, 400)
    assert "s1" not in r.text
    r = put_raw(client, turn, '{"score": 1}', Host=host)
    is_json_error(r, 400)
    assert stored(store, turn) == before


def test_allowed_hosts_are_configurable(
    store: SessionStore, auth: ApiKeyAuth, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(store, auth=auth, allowed_hosts=["api.example.com", "*.internal"])
    with TestClient(app, base_url="http://api.example.com") as c:
        assert c.get("/api/turns", params={"session_id": "s"}, headers=ALICE).status_code == 200
        assert c.get("/healthz", headers={"Host": "a.b.internal"}).status_code == 200
        assert c.get("/healthz", headers={"Host": "localhost"}).status_code == 400
    monkeypatch.setenv("FEEDBACK_PLUGIN_ALLOWED_HOSTS", "chat.example.org")
    with TestClient(create_app(store, auth=auth), base_url="http://chat.example.org") as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/healthz", headers={"Host": "other.example.org"}).status_code == 400


def test_open_mode_only_answers_loopback(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FEEDBACK_PLUGIN_API_KEYS", raising=False)
    monkeypatch.delenv("FEEDBACK_PLUGIN_API_KEYS_FILE", raising=False)
    with pytest.raises(ConfigurationError, match="FEEDBACK_PLUGIN_API_KEYS"):
        create_app(store, allowed_hosts=["api.example.com"])
    with pytest.raises(ConfigurationError):
        create_app(store, allowed_hosts=["*"])
    create_app(store, allowed_hosts=["api.example.com"], allow_open=True)  # forced
    monkeypatch.setenv("FEEDBACK_PLUGIN_ALLOW_OPEN", "1")
    create_app(store, allowed_hosts=["api.example.com"])
    monkeypatch.delenv("FEEDBACK_PLUGIN_ALLOW_OPEN")
    with TestClient(create_app(store), base_url=LOCAL) as c:  # loopback: fine
        assert c.get("/api/turns", params={"session_id": "s"}).status_code == 200


# -- 17: a JSON content type on every body route ----------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None],
)
def test_a_body_that_is_not_declared_json_is_415(
    store: SessionStore, client: TestClient, turn: str, content_type: str | None
) -> None:
    before = stored(store, turn)
    headers = dict(ALICE)
    if content_type is not None:
        headers["Content-Type"] = content_type
    r = client.put(
        feedback_url(turn), params={"session_id": "s1"}, content=b'{"score": 1}', headers=headers
    )
    is_json_error(r, 415)
    assert stored(store, turn) == before


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "application/x+json"]
)
def test_json_content_types_are_accepted(client: TestClient, turn: str, content_type: str) -> None:
    r = put_raw(client, turn, '{"score": 2}', **{"Content-Type": content_type})
    assert r.status_code == 200 and r.json()["feedback_score"] == 2
