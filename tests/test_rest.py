"""REST API (feedback_plugin.integrations.rest): every endpoint, auth, isolation, errors.

All tests run a FastAPI TestClient over a real diskcache store in tmp_path.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from _rest import ALICE, ALICE_RO, ALICE_WO, BOB, KEYS, LOCAL

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi import FastAPI
from fastapi.testclient import TestClient

from feedback_plugin import SessionStore
from feedback_plugin.backends.disk import DiskBackend
from feedback_plugin.errors import ConfigurationError
from feedback_plugin.integrations import rest
from feedback_plugin.integrations.rest import ApiKeyAuth, create_app, create_router

ODD_SESSION_IDS = [
    "../x/y",
    "a b?c#d",
    "日本語 🎉",
    "/",
    "..",
    "%2F",
    "a&b=c;d",
    "s1 ",
    "x" * 500,
    '["s1"]',
]


@pytest.fixture
def auth() -> ApiKeyAuth:
    return ApiKeyAuth(KEYS)


@pytest.fixture
def client(store: SessionStore, auth: ApiKeyAuth) -> Iterator[TestClient]:
    with TestClient(create_app(store, auth=auth), base_url=LOCAL) as c:
        yield c


def feedback_url(qa_id: str) -> str:
    return f"/api/turns/{quote(qa_id, safe='')}/feedback"


def turn_url(qa_id: str) -> str:
    return f"/api/turns/{quote(qa_id, safe='')}"


def dump(store: SessionStore, session_id: str, user: str | None) -> list[dict[str, Any]]:
    return [e.model_dump() for e in store.get_session(session_id, user=user)]


# -- endpoints -------------------------------------------------------------------


def test_list_turns_oldest_first_and_last_n(store: SessionStore, client: TestClient) -> None:
    turns = [store.record("s1", f"q{i}", f"a{i}", [f"doc{i}"], user="alice") for i in range(3)]
    r = client.get("/api/turns", params={"session_id": "s1"}, headers=ALICE)
    assert r.status_code == 200
    body = r.json()
    assert [t["qa_id"] for t in body] == [t.qa_id for t in turns]
    assert body[0]["question"] == "q0" and body[0]["context"] == ["doc0"]
    assert body[0]["user_id"] == "alice" and body[0]["feedback_score"] is None

    r = client.get("/api/turns", params={"session_id": "s1", "last_n": 2}, headers=ALICE)
    assert [t["question"] for t in r.json()] == ["q1", "q2"]
    r = client.get("/api/turns", params={"session_id": "s1", "last_n": 0}, headers=ALICE)
    assert r.json() == []
    r = client.get("/api/turns", params={"session_id": "unknown"}, headers=ALICE)
    assert r.status_code == 200 and r.json() == []


def test_get_one_turn(store: SessionStore, client: TestClient) -> None:
    t = store.record("s1", "q", "a", user="alice", metadata={"model": "m1"})
    r = client.get(turn_url(t.qa_id), params={"session_id": "s1"}, headers=ALICE)
    assert r.status_code == 200
    assert r.json() == json.loads(t.model_dump_json())
    assert r.json()["metadata"] == {"model": "m1"}

    r = client.get(turn_url("nope"), params={"session_id": "s1"}, headers=ALICE)
    assert r.status_code == 404 and r.json() == {"detail": "no such turn"}
    r = client.get(turn_url(t.qa_id), params={"session_id": "s2"}, headers=ALICE)
    assert r.status_code == 404


def test_put_score_thumbs_text_correction(store: SessionStore, client: TestClient) -> None:
    t = store.record("s1", "q", "a", user="alice")
    url, params = feedback_url(t.qa_id), {"session_id": "s1"}

    r = client.put(url, params=params, json={"score": 4}, headers=ALICE)
    assert r.status_code == 200
    assert r.json()["feedback_score"] == 4 and r.json()["feedback_time"] is not None
    assert store.get_entry("s1", t.qa_id, user="alice").feedback_score == 4  # type: ignore[union-attr]

    r = client.put(url, params=params, json={"text": "nice"}, headers=ALICE)
    assert (r.json()["feedback_score"], r.json()["feedback_text"]) == (4, "nice")  # score kept

    r = client.put(url, params=params, json={"thumbs": "down", "text": "wrong"}, headers=ALICE)
    assert (r.json()["feedback_score"], r.json()["feedback_text"]) == (1, "wrong")

    r = client.put(url, params=params, json={"thumbs": "up", "score": None}, headers=ALICE)
    assert r.json()["feedback_score"] == 5

    r = client.put(url, params=params, json={"correction": "b"}, headers=ALICE)
    assert (r.json()["feedback_score"], r.json()["correction"]) == (5, "b")

    stored = store.get_entry("s1", t.qa_id, user="alice")
    assert stored is not None
    assert (stored.feedback_score, stored.feedback_text, stored.correction) == (5, "wrong", "b")
    answer = r.json()
    assert answer.pop("remembered") is True  # a score of 5 is in positive memory
    assert datetime.fromisoformat(answer.pop("recorded_at")) == stored.feedback_time
    assert answer == json.loads(stored.model_dump_json())


def test_delete_feedback_clears_and_keeps_the_turn(store: SessionStore, client: TestClient) -> None:
    t = store.record("s1", "q", "a", user="alice")
    store.add_feedback("s1", t.qa_id, "good", 5, user="alice", correction="A")
    r = client.delete(feedback_url(t.qa_id), params={"session_id": "s1"}, headers=ALICE)
    assert r.status_code == 200
    body = r.json()
    assert (body["feedback_score"], body["feedback_text"], body["correction"]) == (None,) * 3
    stored = store.get_entry("s1", t.qa_id, user="alice")
    assert stored is not None and stored.feedback_score is None and stored.answer == "a"
    # clearing twice is fine; an unknown turn is 404
    r = client.delete(feedback_url(t.qa_id), params={"session_id": "s1"}, headers=ALICE)
    assert r.status_code == 200
    r = client.delete(feedback_url("nope"), params={"session_id": "s1"}, headers=ALICE)
    assert r.status_code == 404 and r.json() == {"detail": "no such turn"}


def test_memory_search(store: SessionStore, client: TestClient) -> None:
    liked = store.record("s1", "How do I reset my password?", "Settings > Security.", user="alice")
    fixed = store.record("s2", "Password rules?", "Any.", user="alice")
    disliked = store.record("s1", "Reset password by email?", "No.", user="alice")
    store.thumbs("s1", liked.qa_id, up=True, user="alice")
    store.add_feedback("s2", fixed.qa_id, None, 4, user="alice", correction="12+ characters.")
    store.thumbs("s1", disliked.qa_id, up=False, user="alice")
    bobs = store.record("s1", "password reset", "bob's answer", user="bob")
    store.thumbs("s1", bobs.qa_id, up=True, user="bob")

    r = client.get("/api/memory", params={"q": "password"}, headers=ALICE)
    assert r.status_code == 200
    hits = {h["qa_id"]: h for h in r.json()}
    assert set(hits) == {liked.qa_id, fixed.qa_id}  # not the thumbs-down, not bob's
    assert hits[liked.qa_id]["answer"] == "Settings > Security."
    assert hits[liked.qa_id]["session_id"] == "s1"
    assert hits[liked.qa_id]["feedback_score"] == 5
    assert hits[fixed.qa_id]["answer"] == "12+ characters."  # the correction
    assert all(isinstance(h["relevance"], float) for h in hits.values())

    r = client.get("/api/memory", params={"q": "password", "k": 1}, headers=ALICE)
    assert len(r.json()) == 1

    # memory follows feedback at once
    client.delete(feedback_url(liked.qa_id), params={"session_id": "s1"}, headers=ALICE)
    r = client.get("/api/memory", params={"q": "password"}, headers=ALICE)
    assert [h["qa_id"] for h in r.json()] == [fixed.qa_id]

    r = client.get("/api/memory", params={"q": "password"}, headers=BOB)
    assert [h["qa_id"] for h in r.json()] == [bobs.qa_id]


def test_memory_default_k_comes_from_the_router(store: SessionStore, auth: ApiKeyAuth) -> None:
    for i in range(5):
        t = store.record("s", f"password question {i}", f"answer {i}", user="alice")
        store.thumbs("s", t.qa_id, up=True, user="alice")
    app = FastAPI()
    app.include_router(create_router(store, auth=auth, memory_k=2))
    with TestClient(app, base_url=LOCAL) as c:
        assert len(c.get("/api/memory", params={"q": "password"}, headers=ALICE).json()) == 2
        r = c.get("/api/memory", params={"q": "password", "k": 5}, headers=ALICE)
        assert len(r.json()) == 5


def _rate(store: SessionStore, session_id: str, ratings: Sequence[Any], user: str) -> None:
    for i, rating in enumerate(ratings):
        t = store.record(session_id, f"q{i}", f"a{i}", user=user)
        if isinstance(rating, int):
            store.add_feedback(session_id, t.qa_id, None, rating, user=user)
        elif rating == "text":
            store.add_feedback(session_id, t.qa_id, "just a comment", user=user)
        elif rating == "correction":
            store.add_feedback(session_id, t.qa_id, correction="fixed", user=user)


def test_sessions_summaries_and_feedback_filters(store: SessionStore, client: TestClient) -> None:
    _rate(store, "pos", [5, None], "alice")  # positive 1, unrated 1
    _rate(store, "neg", [1, 2, 3], "alice")  # negative 2, one neutral
    _rate(store, "unrated", [None, None], "alice")  # unrated 2
    # positive 1, negative 1; a comment or a correction alone is no score: unrated 2
    _rate(store, "mixed", [4, 2, "text", "correction"], "alice")
    _rate(store, "neutral", [3], "alice")  # nothing
    _rate(store, "bobs", [5, 1, None], "bob")

    r = client.get("/api/sessions", headers=ALICE)
    assert r.status_code == 200
    got = {s["session_id"]: s for s in r.json()}
    assert [s["session_id"] for s in r.json()] == ["pos", "neg", "unrated", "mixed", "neutral"]
    counts = {k: (v["turns"], v["positive"], v["negative"], v["unrated"]) for k, v in got.items()}
    assert counts == {
        "pos": (2, 1, 0, 1),
        "neg": (3, 0, 2, 0),
        "unrated": (2, 0, 0, 2),
        "mixed": (4, 1, 1, 2),
        "neutral": (1, 0, 0, 0),
    }
    newest = store.get_session("mixed", user="alice")[-1].time
    assert got["mixed"]["last_time"] == json.loads(json.dumps(newest.isoformat())).replace(
        "+00:00", "Z"
    )

    def ids(feedback: str) -> set[str]:
        res = client.get("/api/sessions", params={"feedback": feedback}, headers=ALICE)
        assert res.status_code == 200
        return {s["session_id"] for s in res.json()}

    assert ids("any") == set(got)
    assert ids("positive") == {"pos", "mixed"}
    assert ids("negative") == {"neg", "mixed"}
    assert ids("unrated") == {"pos", "unrated", "mixed"}

    r = client.get("/api/sessions", headers=BOB)
    assert [(s["session_id"], s["positive"], s["negative"], s["unrated"]) for s in r.json()] == [
        ("bobs", 1, 1, 1)
    ]
    r = client.get("/api/sessions", params={"feedback": "good"}, headers=ALICE)
    assert r.status_code == 422


def test_sessions_follow_feedback_changes(store: SessionStore, client: TestClient) -> None:
    t = store.record("s", "q", "a", user="alice")
    params = {"feedback": "positive"}
    assert client.get("/api/sessions", params=params, headers=ALICE).json() == []
    client.put(feedback_url(t.qa_id), params={"session_id": "s"}, json={"score": 4}, headers=ALICE)
    assert [
        s["session_id"] for s in client.get("/api/sessions", params=params, headers=ALICE).json()
    ] == ["s"]
    client.delete(feedback_url(t.qa_id), params={"session_id": "s"}, headers=ALICE)
    assert client.get("/api/sessions", params=params, headers=ALICE).json() == []


@pytest.mark.parametrize("session_id", ODD_SESSION_IDS)
def test_any_string_is_a_session_id(
    store: SessionStore, client: TestClient, session_id: str
) -> None:
    t = store.record(session_id, "q", "a", user="alice")
    store.record("x", "other", "other", user="alice")  # a decoy that must not be touched
    params = {"session_id": session_id}
    r = client.get("/api/turns", params=params, headers=ALICE)
    assert [e["qa_id"] for e in r.json()] == [t.qa_id]
    assert r.json()[0]["session_id"] == session_id
    r = client.get(turn_url(t.qa_id), params=params, headers=ALICE)
    assert r.status_code == 200 and r.json()["session_id"] == session_id
    r = client.put(feedback_url(t.qa_id), params=params, json={"thumbs": "up"}, headers=ALICE)
    assert r.status_code == 200 and r.json()["feedback_score"] == 5
    names = [s["session_id"] for s in client.get("/api/sessions", headers=ALICE).json()]
    assert session_id in names
    r = client.delete(feedback_url(t.qa_id), params=params, headers=ALICE)
    assert r.status_code == 200 and r.json()["feedback_score"] is None
    assert all(e.feedback_score is None for e in store.get_session("x", user="alice"))


@pytest.mark.parametrize("qa_id", ["a/b", "../c", "x y?z#w", "ünï 🎉", "feedback", "x/feedback"])
def test_any_string_is_a_turn_id(store: SessionStore, client: TestClient, qa_id: str) -> None:
    store.record("s", "q", "a", user="alice", qa_id=qa_id)
    params = {"session_id": "s"}
    r = client.get(turn_url(qa_id), params=params, headers=ALICE)
    assert r.status_code == 200 and r.json()["qa_id"] == qa_id
    r = client.put(feedback_url(qa_id), params=params, json={"score": 2}, headers=ALICE)
    assert r.status_code == 200 and r.json()["qa_id"] == qa_id
    assert store.get_entry("s", qa_id, user="alice").feedback_score == 2  # type: ignore[union-attr]


def test_healthz_needs_no_key(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


# -- auth ------------------------------------------------------------------------

ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/api/sessions", None),
    ("GET", "/api/turns?session_id=s1", None),
    ("GET", "/api/turns/{qa}?session_id=s1", None),
    ("PUT", "/api/turns/{qa}/feedback?session_id=s1", {"score": 2}),
    ("DELETE", "/api/turns/{qa}/feedback?session_id=s1", None),
    ("GET", "/api/memory?q=question", None),
    ("GET", "/api/sessions/feedback?session_id=s1", None),
    ("PUT", "/api/sessions/feedback?session_id=s1", {"rating": "negative"}),
    ("DELETE", "/api/sessions/feedback?session_id=s1", None),
    ("POST", "/api/turns", {"session_id": "s1", "question": "q", "answer": "a"}),
]
WRITES = [e for e in ENDPOINTS if e[0] in ("PUT", "DELETE", "POST")]
READS = [e for e in ENDPOINTS if e[0] == "GET"]


def call(
    client: TestClient,
    endpoint: tuple[str, str, dict[str, Any] | None],
    qa_id: str,
    headers: dict[str, str] | None,
) -> Any:
    method, url, body = endpoint
    return client.request(method, url.format(qa=qa_id), json=body, headers=headers)


@pytest.fixture
def rated(store: SessionStore) -> str:
    """A turn of alice's in session s1, rated 5 with a comment; returns its qa_id."""
    t = store.record("s1", "the question", "the answer", user="alice")
    store.add_feedback("s1", t.qa_id, "keep", 5, user="alice")
    return t.qa_id


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: f"{e[0]} {e[1]}")
@pytest.mark.parametrize(
    "headers",
    [
        None,
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": "Bearer alice-key2"},
        {"Authorization": "Bearer ALICE-KEY"},
        {"Authorization": "Basic YWxpY2U6YWxpY2Uta2V5"},
        {"Authorization": "alice-key"},
        {"X-API-Key": "alice-key"},
    ],
    ids=["none", "empty", "wrong", "prefix", "case", "basic", "no-scheme", "other-header"],
)
def test_missing_or_unknown_key_is_401(
    store: SessionStore,
    client: TestClient,
    rated: str,
    endpoint: tuple[str, str, dict[str, Any] | None],
    headers: dict[str, str] | None,
) -> None:
    before = dump(store, "s1", "alice")
    r = call(client, endpoint, rated, headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.headers["content-type"] == "application/json"
    assert isinstance(r.json()["detail"], str)
    assert dump(store, "s1", "alice") == before


def test_auth_runs_before_body_validation(client: TestClient, rated: str) -> None:
    url = feedback_url(rated) + "?session_id=s1"
    assert client.put(url, json={"score": 9}).status_code == 401
    assert (
        client.put(
            url, content=b"{not json", headers={"Content-Type": "application/json"}
        ).status_code
        == 401
    )
    assert client.put(url, json={"score": 9}, headers=ALICE_RO).status_code == 403


@pytest.mark.parametrize("endpoint", WRITES, ids=lambda e: f"{e[0]} {e[1]}")
def test_read_only_key_cannot_write(
    store: SessionStore,
    client: TestClient,
    rated: str,
    endpoint: tuple[str, str, dict[str, Any] | None],
) -> None:
    before = dump(store, "s1", "alice")
    r = call(client, endpoint, rated, ALICE_RO)
    assert r.status_code == 403
    assert "feedback" in r.json()["detail"]
    assert "insufficient_scope" in r.headers["www-authenticate"]
    assert dump(store, "s1", "alice") == before
    # the same key reads fine
    assert call(client, ENDPOINTS[2], rated, ALICE_RO).status_code == 200


@pytest.mark.parametrize("endpoint", READS, ids=lambda e: f"{e[0]} {e[1]}")
def test_feedback_only_key_cannot_read(
    client: TestClient, rated: str, endpoint: tuple[str, str, dict[str, Any] | None]
) -> None:
    r = call(client, endpoint, rated, ALICE_WO)
    assert r.status_code == 403 and "read" in r.json()["detail"]


def test_feedback_only_key_can_write(store: SessionStore, client: TestClient, rated: str) -> None:
    r = call(client, ENDPOINTS[3], rated, ALICE_WO)
    assert r.status_code == 200
    assert store.get_entry("s1", rated, user="alice").feedback_score == 2  # type: ignore[union-attr]


# -- cross-user isolation --------------------------------------------------------


def test_bob_cannot_see_or_change_alices_turns(
    store: SessionStore, client: TestClient, rated: str
) -> None:
    before = dump(store, "s1", "alice")
    params = {"session_id": "s1"}
    r = client.get(turn_url(rated), params=params, headers=BOB)
    assert r.status_code == 404 and r.json() == {"detail": "no such turn"}
    r = client.put(feedback_url(rated), params=params, json={"thumbs": "down"}, headers=BOB)
    assert r.status_code == 404
    r = client.put(feedback_url(rated), params=params, json={"correction": "x"}, headers=BOB)
    assert r.status_code == 404
    r = client.delete(feedback_url(rated), params=params, headers=BOB)
    assert r.status_code == 404
    assert client.get("/api/turns", params=params, headers=BOB).json() == []
    assert client.get("/api/sessions", headers=BOB).json() == []
    assert client.get("/api/memory", params={"q": "question"}, headers=BOB).json() == []
    assert dump(store, "s1", "alice") == before
    # alice still sees it all
    assert client.get(turn_url(rated), params=params, headers=ALICE).status_code == 200
    assert [
        h["qa_id"]
        for h in client.get("/api/memory", params={"q": "question"}, headers=ALICE).json()
    ] == [rated]


def test_same_session_id_for_two_users_stays_separate(
    store: SessionStore, client: TestClient
) -> None:
    a = store.record("shared", "qa", "aa", user="alice")
    b = store.record("shared", "qb", "bb", user="bob")
    params = {"session_id": "shared"}
    assert [e["qa_id"] for e in client.get("/api/turns", params=params, headers=ALICE).json()] == [
        a.qa_id
    ]
    assert [e["qa_id"] for e in client.get("/api/turns", params=params, headers=BOB).json()] == [
        b.qa_id
    ]
    r = client.put(feedback_url(b.qa_id), params=params, json={"score": 5}, headers=BOB)
    assert r.status_code == 200
    assert (
        client.put(
            feedback_url(b.qa_id), params=params, json={"score": 1}, headers=ALICE
        ).status_code
        == 404
    )
    assert store.get_entry("shared", b.qa_id, user="bob").feedback_score == 5  # type: ignore[union-attr]
    assert store.get_entry("shared", a.qa_id, user="alice").feedback_score is None  # type: ignore[union-attr]
    # neither user's session list shows the other's counts
    (alice_s,) = client.get("/api/sessions", headers=ALICE).json()
    (bob_s,) = client.get("/api/sessions", headers=BOB).json()
    assert (alice_s["turns"], alice_s["positive"]) == (1, 0)
    assert (bob_s["turns"], bob_s["positive"]) == (1, 1)


def test_turns_of_user_none_are_invisible_to_keys(store: SessionStore, client: TestClient) -> None:
    t = store.record("s1", "q", "a")  # no user
    r = client.get(turn_url(t.qa_id), params={"session_id": "s1"}, headers=ALICE)
    assert r.status_code == 404


# -- 422: bad input changes nothing -----------------------------------------------

BAD_BODIES: list[Any] = [
    {"score": True},
    {"score": False},
    {"score": 3.5},
    {"score": 4.0},
    {"score": "4"},
    {"score": 0},
    {"score": 6},
    {"score": -1},
    {"score": 10**30},
    {"score": [4]},
    {"score": 4, "thumbs": "up"},
    {"score": 1, "thumbs": "down", "text": "both"},
    {"thumbs": "sideways"},
    {"thumbs": True},
    {},
    {"score": None, "thumbs": None, "text": None, "correction": None},
    {"text": ""},
    {"text": "   "},
    {"text": 5},
    {"correction": ["x"]},
    {"feedback_score": 4},  # an unknown field is refused, not ignored
    {"score": 4, "extra": 1},
    [4],
    "4",
    4,
    None,
]


@pytest.mark.parametrize("body", BAD_BODIES, ids=repr)
def test_bad_feedback_is_422_and_changes_nothing(
    store: SessionStore, client: TestClient, rated: str, body: Any
) -> None:
    before = dump(store, "s1", "alice")
    r = client.put(feedback_url(rated), params={"session_id": "s1"}, json=body, headers=ALICE)
    assert r.status_code == 422, r.text
    assert isinstance(r.json()["detail"], list) and r.json()["detail"]
    assert dump(store, "s1", "alice") == before


@pytest.mark.parametrize(
    ("method", "url", "content"),
    [
        ("PUT", "/api/turns/{qa}/feedback?session_id=s1", b"{not json"),
        ("PUT", "/api/turns/{qa}/feedback?session_id=s1", b""),
        ("PUT", "/api/turns/{qa}/feedback", b'{"score": 4}'),  # no session id
        ("PUT", "/api/turns/{qa}/feedback?session_id=", b'{"score": 4}'),  # empty session id
        ("DELETE", "/api/turns/{qa}/feedback", None),
        ("DELETE", "/api/turns/{qa}/feedback?session_id=", None),
        ("GET", "/api/turns/{qa}", None),
        ("GET", "/api/turns", None),
        ("GET", "/api/turns?session_id=", None),
        ("GET", "/api/turns?session_id=s1&last_n=-1", None),
        ("GET", "/api/turns?session_id=s1&last_n=two", None),
        ("GET", "/api/turns?session_id=s1&last_n=1.5", None),
        ("GET", "/api/memory", None),
        ("GET", "/api/memory?q=x&k=0", None),
        ("GET", "/api/memory?q=x&k=51", None),
        ("GET", "/api/memory?q=x&k=true", None),
        ("GET", "/api/sessions?feedback=liked", None),
        ("PUT", "/api/turns//feedback?session_id=s1", b'{"score": 4}'),  # empty qa_id
    ],
)
def test_bad_parameters_are_422_and_change_nothing(
    store: SessionStore,
    client: TestClient,
    rated: str,
    method: str,
    url: str,
    content: bytes | None,
) -> None:
    before = dump(store, "s1", "alice")
    headers = dict(ALICE, **({"Content-Type": "application/json"} if content is not None else {}))
    r = client.request(method, url.format(qa=rated), content=content, headers=headers)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/json"
    assert "detail" in r.json()
    assert dump(store, "s1", "alice") == before


def test_404_changes_nothing(store: SessionStore, client: TestClient, rated: str) -> None:
    before = dump(store, "s1", "alice")
    for sid, qa in [("s1", "missing"), ("s2", rated), ("S1", rated), ("s1 ", rated)]:
        r = client.put(
            feedback_url(qa), params={"session_id": sid}, json={"score": 1}, headers=ALICE
        )
        assert r.status_code == 404
        r = client.delete(feedback_url(qa), params={"session_id": sid}, headers=ALICE)
        assert r.status_code == 404
    assert dump(store, "s1", "alice") == before


def test_unknown_route_and_method(client: TestClient, rated: str) -> None:
    r = client.post(
        feedback_url(rated), params={"session_id": "s1"}, json={"score": 1}, headers=ALICE
    )
    assert r.status_code == 405 and "detail" in r.json()
    assert client.get("/api/nothing", headers=ALICE).status_code == 404


# -- 503: the store is down --------------------------------------------------------


class FailingBackend(DiskBackend):
    """A real DiskBackend that can be told to fail reads and/or writes."""

    fail_reads = False
    fail_writes = False

    def _check(self, reads: bool) -> None:
        if self.fail_reads if reads else self.fail_writes:
            raise OSError("disk unavailable")

    def read(self, key: Any, last_n: int | None = None) -> list[str]:
        self._check(True)
        return super().read(key, last_n)

    def get(self, key: Any, qa_id: str) -> str | None:
        self._check(True)
        return super().get(key, qa_id)

    def sessions(self, user: str | None) -> list[str]:
        self._check(True)
        return super().sessions(user)

    def scan(self) -> Iterator[Any]:
        self._check(True)
        return super().scan()

    def update(self, key: Any, qa_id: str, change: Callable[[str], str]) -> str | None:
        self._check(False)
        return super().update(key, qa_id, change)

    def append(self, items: Any) -> None:
        self._check(False)
        super().append(items)


@pytest.fixture
def failing(
    tmp_path: Path, auth: ApiKeyAuth
) -> Iterator[tuple[SessionStore, FailingBackend, TestClient, str]]:
    backend = FailingBackend(tmp_path / "failing")
    store = SessionStore(backend=backend)
    t = store.record("s1", "the question", "the answer", user="alice", wait=True)
    store.add_feedback("s1", t.qa_id, "keep", 5, user="alice")
    with TestClient(create_app(store, auth=auth), base_url=LOCAL) as c:
        yield store, backend, c, t.qa_id
    store.close()


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=lambda e: f"{e[0]} {e[1]}")
def test_store_down_is_503(
    failing: tuple[SessionStore, FailingBackend, TestClient, str],
    endpoint: tuple[str, str, dict[str, Any] | None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, backend, client, qa_id = failing
    before = dump(store, "s1", "alice")
    backend.fail_reads = backend.fail_writes = True
    with caplog.at_level(logging.WARNING, logger="feedback_plugin"):
        r = call(client, endpoint, qa_id, ALICE)
    assert r.status_code == 503, r.text
    assert r.json() == {"detail": "the feedback store is unavailable, try again later"}
    assert r.headers["retry-after"] == "5"
    backend.fail_reads = backend.fail_writes = False
    assert dump(store, "s1", "alice") == before
    assert call(client, endpoint, qa_id, ALICE).status_code in (200, 201)  # and it recovers


@pytest.mark.parametrize("endpoint", WRITES, ids=lambda e: f"{e[0]} {e[1]}")
def test_failed_write_is_503_not_404(
    failing: tuple[SessionStore, FailingBackend, TestClient, str],
    endpoint: tuple[str, str, dict[str, Any] | None],
) -> None:
    store, backend, client, qa_id = failing
    before = dump(store, "s1", "alice")
    backend.fail_writes = True  # reads work: the turn is found, the write fails
    r = call(client, endpoint, qa_id, ALICE)
    assert r.status_code == 503
    backend.fail_writes = False
    assert dump(store, "s1", "alice") == before


def test_auth_errors_come_before_store_errors(
    failing: tuple[SessionStore, FailingBackend, TestClient, str],
) -> None:
    _, backend, client, qa_id = failing
    backend.fail_reads = backend.fail_writes = True
    assert call(client, ENDPOINTS[3], qa_id, None).status_code == 401
    assert call(client, ENDPOINTS[3], qa_id, ALICE_RO).status_code == 403


# -- open mode, app factory, OpenAPI ----------------------------------------------


def test_open_router_acts_as_user_none(
    store: SessionStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(rest, "_open_warned", False)
    t = store.record("s", "q", "a")
    alices = store.record("s", "q", "a", user="alice")
    with caplog.at_level(logging.WARNING, logger="feedback_plugin"):
        app = FastAPI()
        app.include_router(create_router(store))
        app.include_router(create_router(store), prefix="/again")
    warnings = [r for r in caplog.records if "no auth" in r.getMessage()]
    assert len(warnings) == 1  # once
    with TestClient(app, base_url=LOCAL) as c:
        r = c.put(feedback_url(t.qa_id), params={"session_id": "s"}, json={"thumbs": "up"})
        assert r.status_code == 200 and r.json()["feedback_score"] == 5
        r = c.get(turn_url(alices.qa_id), params={"session_id": "s"})
        assert r.status_code == 404  # user None cannot see alice's turn
        assert c.get("/api/sessions").json()[0]["session_id"] == "s"
    schema = app.openapi()
    assert "security" not in schema["paths"]["/api/sessions"]["get"]


def test_create_app_defaults_from_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _default_dir: Path
) -> None:
    monkeypatch.setenv("FEEDBACK_PLUGIN_API_KEYS", "k1:carol, k2:dave")
    app = create_app()
    with TestClient(app, base_url=LOCAL) as c:
        assert c.get("/api/sessions").status_code == 401
        assert c.get("/api/sessions", headers={"Authorization": "Bearer k1"}).json() == []
    # the default store lives in FEEDBACK_PLUGIN_DIR
    s = SessionStore(_default_dir)
    t = s.record("s", "q", "a", user="dave", wait=True)
    s.close()
    with TestClient(create_app(), base_url=LOCAL) as c:
        r = c.put(
            feedback_url(t.qa_id),
            params={"session_id": "s"},
            json={"score": 3},
            headers={"Authorization": "Bearer k2"},
        )
        assert r.status_code == 200


def test_openapi_schema_is_complete(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    assert set(paths) == {
        "/api/sessions",
        "/api/sessions/feedback",
        "/api/sessions/feedback/words",
        "/api/feedback-tasks/{task_id}",
        "/api/turns",
        "/api/turns/{qa_id}",
        "/api/turns/{qa_id}/feedback",
        "/api/memory",
        "/api/ratings",
        "/healthz",
    }
    assert set(paths["/api/turns/{qa_id}/feedback"]) == {"put", "delete"}
    assert set(paths["/api/sessions/feedback"]) == {"get", "put", "delete"}
    assert set(paths["/api/turns"]) == {"get", "post"}
    for path, ops in paths.items():
        if path in ("/healthz", "/api/ratings"):  # no auth: nothing secret
            continue
        for method, op in ops.items():
            assert op["security"] == [{"ApiKey": []}]
            ok = "201" if (path, method) == ("/api/turns", "post") else "200"
            codes = set(op["responses"])
            # (a background task is read from the server's memory, never from the store)
            store_down = set() if path == "/api/feedback-tasks/{task_id}" else {"503"}
            assert {ok, "401", "403", "422", *store_down} <= codes
            assert "$ref" in str(op["responses"][ok]["content"]["application/json"]["schema"])
    comps = schema["components"]["schemas"]
    assert {
        "Turn",
        "FeedbackAnswer",
        "SessionSummary",
        "SessionRating",
        "MemoryHit",
        "FeedbackRequest",
        "SessionFeedbackRequest",
        "TurnRequest",
        "ErrorResponse",
    } <= set(comps)
    assert {"memory_ids", "remembered", "recorded_at"} <= set(comps["FeedbackAnswer"]["required"])
    assert "memory_ids" in comps["Turn"]["required"]
    score = comps["FeedbackRequest"]["properties"]["score"]["anyOf"][0]
    assert (score["type"], score["minimum"], score["maximum"]) == ("integer", 1, 5)
    assert comps["FeedbackRequest"]["additionalProperties"] is False
    assert schema["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"


# -- ApiKeyAuth --------------------------------------------------------------------


def test_api_key_auth_maps_keys_to_users_and_scopes() -> None:
    auth = ApiKeyAuth({"k1": "alice", "k2": {"user": "bob", "scopes": ["read"]}, "ключ🔑": "eve"})
    p = auth.authenticate("k1")
    assert p is not None and p.user == "alice" and p.scopes == {"read", "feedback"}
    p = auth.authenticate("k2")
    assert p is not None and (p.user, p.scopes) == ("bob", frozenset({"read"}))
    assert auth.authenticate("ключ🔑").user == "eve"  # type: ignore[union-attr]
    for wrong in ["", "k", "k1 ", "K1", "k1k1", "\udcff"]:
        assert auth.authenticate(wrong) is None
    assert "k1" not in repr(auth) and "alice" in repr(auth)
    assert len(auth) == 3


@pytest.mark.parametrize(
    "keys",
    [
        {},
        {"": "alice"},
        {" k": "alice"},
        {"k": ""},
        {"k": None},
        {"k": 5},
        {"k": {"user": "a", "scopes": ["admin"]}},
        {"k": {"user": "a", "scopes": []}},
        {"k": {"user": "a", "scopes": "read"}},
        {"k": {"user": "a", "scopes": 5}},
        {"k": {"user": "a", "scopes": [1]}},
        {"k": {"scopes": ["read"]}},
        {"k": {"user": "a", "role": "x"}},
        ["k"],
    ],
    ids=repr,
)
def test_api_key_auth_refuses_bad_config(keys: Any) -> None:
    with pytest.raises(ConfigurationError):
        ApiKeyAuth(keys)


def test_from_env_inline_and_file(tmp_path: Path) -> None:
    assert ApiKeyAuth.from_env({}) is None
    auth = ApiKeyAuth.from_env({"FEEDBACK_PLUGIN_API_KEYS": "key1:alice, key2:bob,"})
    assert auth is not None and len(auth) == 2
    assert auth.authenticate("key2").user == "bob"  # type: ignore[union-attr]

    f = tmp_path / "keys.json"
    f.write_text(
        json.dumps({"kf": "carol", "kr": {"user": "dave", "scopes": ["read"]}, "a:b": "erin"}),
        encoding="utf-8",
    )
    auth = ApiKeyAuth.from_env({"FEEDBACK_PLUGIN_API_KEYS_FILE": str(f)})
    assert auth is not None
    assert auth.authenticate("kr").scopes == {"read"}  # type: ignore[union-attr]
    assert auth.authenticate("a:b").user == "erin"  # type: ignore[union-attr]
    assert ApiKeyAuth.from_file(f).authenticate("kf").user == "carol"  # type: ignore[union-attr]

    both = ApiKeyAuth.from_env(
        {"FEEDBACK_PLUGIN_API_KEYS_FILE": str(f), "FEEDBACK_PLUGIN_API_KEYS": "k9:zed"}
    )
    assert both is not None and len(both) == 4


def test_from_env_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEEDBACK_PLUGIN_API_KEYS", raising=False)
    monkeypatch.delenv("FEEDBACK_PLUGIN_API_KEYS_FILE", raising=False)
    assert ApiKeyAuth.from_env() is None
    monkeypatch.setenv("FEEDBACK_PLUGIN_API_KEYS", "abc:alice")
    assert ApiKeyAuth.from_env().authenticate("abc").user == "alice"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "env",
    [
        {"FEEDBACK_PLUGIN_API_KEYS": ""},  # set but empty: never silently open
        {"FEEDBACK_PLUGIN_API_KEYS": " , "},
        {"FEEDBACK_PLUGIN_API_KEYS": "justakey"},
        {"FEEDBACK_PLUGIN_API_KEYS": ":alice"},
        {"FEEDBACK_PLUGIN_API_KEYS": "k:"},
        {"FEEDBACK_PLUGIN_API_KEYS": "k:alice,k:bob"},
        {"FEEDBACK_PLUGIN_API_KEYS_FILE": ""},
        {"FEEDBACK_PLUGIN_API_KEYS_FILE": "/nonexistent/keys.json"},
    ],
    ids=repr,
)
def test_from_env_refuses_bad_config(env: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError):
        ApiKeyAuth.from_env(env)


def test_from_file_refuses_bad_json(tmp_path: Path) -> None:
    f = tmp_path / "keys.json"
    for text in ["{not json", '["k"]', '{"k": 5}']:
        f.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigurationError):
            ApiKeyAuth.from_file(f)


def test_create_router_checks_its_arguments(store: SessionStore, auth: ApiKeyAuth) -> None:
    with pytest.raises(TypeError):
        create_router("not a store", auth=auth)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        create_router(store, auth={"k": "alice"})  # type: ignore[arg-type]
    for k in (0, 51, True, 2.0):
        with pytest.raises(ConfigurationError):
            create_router(store, auth=auth, memory_k=k)  # type: ignore[arg-type]


def test_memory_on_a_fresh_store_that_is_down_is_503(tmp_path: Path, auth: ApiKeyAuth) -> None:
    backend = FailingBackend(tmp_path / "fresh")
    store = SessionStore(backend=backend)
    store.record("s1", "q", "a", user="alice", wait=True)  # memory index not built yet
    backend.fail_reads = True
    try:
        with TestClient(create_app(store, auth=auth), base_url=LOCAL) as c:
            r = c.get("/api/memory", params={"q": "q"}, headers=ALICE)
            assert r.status_code == 503, r.text
            backend.fail_reads = False
            assert c.get("/api/memory", params={"q": "q"}, headers=ALICE).status_code == 200
    finally:
        store.close()


def test_router_mounted_under_a_prefix_keeps_auth_first(
    store: SessionStore, auth: ApiKeyAuth, rated: str
) -> None:
    app = FastAPI()
    app.include_router(create_router(store, auth=auth), prefix="/v1")
    url = f"/v1{feedback_url(rated)}?session_id=s1"
    json_type = {"Content-Type": "application/json"}
    with TestClient(app, base_url=LOCAL) as c:
        assert c.put(url, content=b"{bad", headers=json_type).status_code == 401
        assert c.put(url, content=b"{bad", headers={**json_type, **ALICE_RO}).status_code == 403
        assert c.put(url, content=b"{bad", headers={**json_type, **ALICE}).status_code == 422
        assert c.put(url, json={"score": 3}, headers=ALICE).json()["feedback_score"] == 3
