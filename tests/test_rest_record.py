"""Recording turns over REST (POST /api/turns) for front ends without LangChain, and the
turns' ``memory_ids`` as the API serves them.

FastAPI's TestClient over a real diskcache store in tmp_path.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from _rest import ALICE, ALICE_RO, BOB, KEYS, LOCAL

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient

from feedback_plugin import SessionStore
from feedback_plugin.integrations.rest import ApiKeyAuth, create_app
from feedback_plugin.integrations.rest_models import MAX_MEMORY_IDS
from feedback_plugin.models import MAX_ID_LENGTH, MAX_TEXT_LENGTH

TURN = {
    "session_id": "web/42",
    "question": "How do I export a PDF?",
    "answer": "File > Export > PDF.",
    "context": ["Exporting notes: File > Export.", "PDF options."],
    "metadata": {"model": "gpt-x", "prompt_version": 3, "tags": ["export"], "nested": {"a": None}},
}


@pytest.fixture
def client(store: SessionStore) -> Iterator[TestClient]:
    with TestClient(create_app(store, auth=ApiKeyAuth(KEYS)), base_url=LOCAL) as c:
        yield c


def everything(store: SessionStore) -> list[str]:
    return sorted(e.model_dump_json() for e in store.iter_entries())


def feedback_url(qa_id: str) -> str:
    return f"/api/turns/{quote(qa_id, safe='')}/feedback"


def test_a_posted_turn_is_recorded_for_the_keys_user_and_readable_at_once(
    store: SessionStore, client: TestClient
) -> None:
    r = client.post("/api/turns", json=TURN, headers=ALICE)
    assert r.status_code == 201, r.text
    turn = r.json()
    qa_id = turn["qa_id"]
    assert (turn["session_id"], turn["question"], turn["answer"]) == (
        "web/42",
        "How do I export a PDF?",
        "File > Export > PDF.",
    )
    assert turn["context"] == TURN["context"] and turn["metadata"] == TURN["metadata"]
    assert (turn["user_id"], turn["feedback_score"], turn["memory_ids"]) == ("alice", None, [])

    # the very next request sees it, through the Location too
    r = client.get(r.headers["location"], headers=ALICE)
    assert r.status_code == 200 and r.json() == turn
    listed = client.get("/api/turns", params={"session_id": "web/42"}, headers=ALICE).json()
    assert listed == [turn]
    entry = store.get_entry("web/42", qa_id, user="alice")
    assert entry is not None and json.loads(entry.model_dump_json()) == turn

    # it can be rated like any turn; another user sees nothing of it
    r = client.put(
        feedback_url(qa_id),
        params={"session_id": "web/42"},
        json={"rating": "positive"},
        headers=ALICE,
    )
    assert r.status_code == 200 and r.json()["remembered"] is True
    r = client.get(f"/api/turns/{qa_id}", params={"session_id": "web/42"}, headers=BOB)
    assert r.status_code == 404
    assert client.get("/api/turns", params={"session_id": "web/42"}, headers=BOB).json() == []


def test_each_post_is_a_new_turn_in_order(store: SessionStore, client: TestClient) -> None:
    ids = [
        client.post("/api/turns", json={**TURN, "question": f"q{i}"}, headers=ALICE).json()["qa_id"]
        for i in range(3)
    ]
    assert len(set(ids)) == 3
    assert [e.qa_id for e in store.get_session("web/42", user="alice")] == ids
    assert [e.question for e in store.get_session("web/42", user="alice")] == ["q0", "q1", "q2"]


def test_only_the_required_fields(store: SessionStore, client: TestClient) -> None:
    body = {"session_id": "s", "question": "", "answer": "an answer to nothing"}
    r = client.post("/api/turns", json=body, headers=ALICE)
    assert r.status_code == 201
    assert (r.json()["context"], r.json()["metadata"], r.json()["memory_ids"]) == ([], {}, [])


def test_odd_text_round_trips(store: SessionStore, client: TestClient) -> None:
    body: dict[str, Any] = {
        "session_id": "日本語 🎉 ../x?y#z",
        "question": "lone \ud800 surrogate",
        "answer": "<script>alert(1)</script>",
        "context": ["\x00 nul", ""],
    }
    raw = json.dumps(body).encode()  # ASCII, with the surrogate as its \\ud800 escape
    r = client.post(
        "/api/turns", content=raw, headers={**ALICE, "Content-Type": "application/json"}
    )
    assert r.status_code == 201, r.text
    assert r.json()["question"] == body["question"]  # served back as the same escape
    entry = store.get_entry(body["session_id"], r.json()["qa_id"], user="alice")
    assert entry is not None
    assert (entry.question, entry.answer, entry.context) == (
        body["question"],
        body["answer"],
        body["context"],
    )


def test_memory_ids_are_kept_and_a_bad_answer_charges_the_memory(
    store: SessionStore, client: TestClient
) -> None:
    """A front end hands the model what GET /api/memory found, records the turn with
    those memory_ids, and the user rates the answers down: the memory that fed two
    disliked answers leaves memory."""
    liked = store.record("old", "How do I reset my password?", "Settings > Security.", user="alice")
    store.thumbs("old", liked.qa_id, up=True, user="alice")
    hits = client.get("/api/memory", params={"q": "reset password"}, headers=ALICE).json()
    assert [h["qa_id"] for h in hits] == [liked.qa_id]

    answers = []
    refs: list[Any] = [{"qa_id": liked.qa_id, "session_id": "old"}, liked.qa_id]
    for i, ref in enumerate(refs):
        body = {**TURN, "question": f"reset my password {i}?", "memory_ids": [ref]}
        r = client.post("/api/turns", json=body, headers=ALICE)
        assert r.status_code == 201 and r.json()["memory_ids"] == [liked.qa_id]
        answers.append(r.json()["qa_id"])
    stored = store.get_entry("web/42", answers[0], user="alice")
    assert stored is not None and stored.memory_sessions == {liked.qa_id: "old"}

    for qa_id in answers:
        r = client.put(
            feedback_url(qa_id),
            params={"session_id": "web/42"},
            json={"thumbs": "down"},
            headers=ALICE,
        )
        assert r.status_code == 200
    memory = store.get_entry("old", liked.qa_id, user="alice")
    assert memory is not None and memory.hurts and not memory.remembered
    assert client.get("/api/memory", params={"q": "reset password"}, headers=ALICE).json() == []


def test_every_turn_served_has_memory_ids(store: SessionStore, client: TestClient) -> None:
    plain = store.record("s1", "q", "a", user="alice", wait=True)
    fed = store.record("s1", "q2", "a2", user="alice", memory_ids=["m1", ("s0", "m2")], wait=True)
    params = {"session_id": "s1"}
    listed = client.get("/api/turns", params=params, headers=ALICE).json()
    assert [t["memory_ids"] for t in listed] == [[], ["m1", "m2"]]
    one = client.get(f"/api/turns/{plain.qa_id}", params=params, headers=ALICE).json()
    assert (one["memory_ids"], one["memory_sessions"], one["fed_outcomes"]) == ([], {}, {})
    one = client.get(f"/api/turns/{fed.qa_id}", params=params, headers=ALICE).json()
    assert one["memory_sessions"] == {"m2": "s0"}
    r = client.put(feedback_url(plain.qa_id), params=params, json={"score": 4}, headers=ALICE)
    assert r.json()["memory_ids"] == []
    r = client.delete(feedback_url(fed.qa_id), params=params, headers=ALICE)
    assert r.json()["memory_ids"] == ["m1", "m2"]


@pytest.mark.parametrize(
    "change",
    [
        {"session_id": ""},
        {"session_id": "s" * (MAX_ID_LENGTH + 1)},
        {"session_id": None},
        {"session_id": 42},
        {"question": None},
        {"question": 3},
        {"answer": ["a"]},
        {"context": "one string"},
        {"context": [1]},
        {"context": [None]},
        {"metadata": ["not", "a", "dict"]},
        {"metadata": "x"},
        {"memory_ids": "q1"},
        {"memory_ids": [""]},
        {"memory_ids": [5]},
        {"memory_ids": ["m" * (MAX_ID_LENGTH + 1)]},
        {"memory_ids": [{"qa_id": "q1"}]},
        {"memory_ids": [{"qa_id": "q1", "session_id": ""}]},
        {"memory_ids": [{"qa_id": "q1", "session_id": "s", "score": 5}]},
        {"memory_ids": [f"m{i}" for i in range(MAX_MEMORY_IDS + 1)]},
        {"qa_id": "mine"},
        {"user": "bob"},
        {"feedback_score": 5},
    ],
    ids=repr,
)
def test_bad_turns_are_422_and_record_nothing(
    store: SessionStore, client: TestClient, change: dict[str, Any]
) -> None:
    store.record("web/42", "before", "kept", user="alice", wait=True)
    before = everything(store)
    r = client.post("/api/turns", json={**TURN, **change}, headers=ALICE)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/json"
    assert everything(store) == before


@pytest.mark.parametrize("missing", ["session_id", "question", "answer"])
def test_a_turn_without_a_required_field_is_422(
    store: SessionStore, client: TestClient, missing: str
) -> None:
    body = {k: v for k, v in TURN.items() if k != missing}
    r = client.post("/api/turns", json=body, headers=ALICE)
    assert r.status_code == 422
    assert missing in json.dumps(r.json()["detail"])
    assert everything(store) == []


def test_text_limits_are_the_stores(store: SessionStore) -> None:
    app = create_app(store, auth=ApiKeyAuth(KEYS), max_body_bytes=3 * MAX_TEXT_LENGTH)
    with TestClient(app, base_url=LOCAL) as c:
        for field in ("question", "answer"):
            r = c.post(
                "/api/turns", json={**TURN, field: "x" * (MAX_TEXT_LENGTH + 1)}, headers=ALICE
            )
            assert r.status_code == 422 and field in r.text
        r = c.post(
            "/api/turns", json={**TURN, "context": ["x" * (MAX_TEXT_LENGTH + 1)]}, headers=ALICE
        )
        assert r.status_code == 422
        assert everything(store) == []
        r = c.post("/api/turns", json={**TURN, "answer": "y" * MAX_TEXT_LENGTH}, headers=ALICE)
        assert r.status_code == 201
    # and the default body limit comes first
    with TestClient(create_app(store, auth=ApiKeyAuth(KEYS)), base_url=LOCAL) as c:
        r = c.post("/api/turns", json={**TURN, "answer": "z" * (1024 * 1024)}, headers=ALICE)
        assert r.status_code == 413
    assert len(everything(store)) == 1


def test_auth_content_type_and_scope(store: SessionStore, client: TestClient) -> None:
    json_type = {"Content-Type": "application/json"}
    body = json.dumps(TURN).encode()
    cases = [
        (client.post("/api/turns", json=TURN), 401),
        (client.post("/api/turns", json=TURN, headers={"Authorization": "Bearer nope"}), 401),
        (client.post("/api/turns", json=TURN, headers=ALICE_RO), 403),
        (
            client.post(
                "/api/turns", content=body, headers={**ALICE, "Content-Type": "text/plain"}
            ),
            415,
        ),
        (client.post("/api/turns", content=b"{bad", headers={**ALICE, **json_type}), 422),
    ]
    for r, status in cases:
        assert r.status_code == status, (status, r.text)
        assert "detail" in r.json()
    assert everything(store) == []


def test_open_mode_records_for_user_none(store: SessionStore) -> None:
    with TestClient(create_app(store, auth=None), base_url=LOCAL) as c:
        r = c.post("/api/turns", json=TURN)
        assert r.status_code == 201 and r.json()["user_id"] is None
    assert [e.question for e in store.get_session("web/42")] == [TURN["question"]]
