"""REST session ratings (GET/PUT/DELETE /api/sessions/feedback), and what every feedback
answer says: ``remembered`` and ``recorded_at``; ``rating`` as thumbs in words.

FastAPI's TestClient over real stores: diskcache in tmp_path, and Redis and
PostgreSQL (a namespace of their own, dropped after) for the round trip.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from _postgres import POSTGRES_URL, require_postgres
from _redis import REDIS_URL, require_redis
from _rest import ALICE, ALICE_RO, ALICE_WO, BOB, KEYS, LOCAL
from fastapi.testclient import TestClient

from feedback_plugin import SessionStore
from feedback_plugin.integrations.rest import ApiKeyAuth, create_app
from feedback_plugin.models import MAX_TEXT_LENGTH

URL = "/api/sessions/feedback"


@pytest.fixture
def client(store: SessionStore) -> Iterator[TestClient]:
    with TestClient(create_app(store, auth=ApiKeyAuth(KEYS)), base_url=LOCAL) as c:
        yield c


@pytest.fixture(params=["disk", "redis", "postgres"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionStore]:
    """A real store on each engine (Redis and PostgreSQL: a namespace of their own)."""
    if request.param == "disk":
        s = SessionStore(tmp_path / "store")
    elif request.param == "redis":
        require_redis()
        s = SessionStore(REDIS_URL, namespace=f"test-{uuid.uuid4().hex}")
    else:
        require_postgres()
        s = SessionStore(POSTGRES_URL, namespace=f"test-{uuid.uuid4().hex}")
    yield s
    if request.param != "disk":
        s.backend.drop()  # type: ignore[attr-defined]
    s.close()


def session(
    store: SessionStore, session_id: str = "s1", user: str = "alice", n: int = 2
) -> list[str]:
    """Record ``n`` turns of ``session_id``; their qa_ids."""
    return [
        store.record(session_id, f"question {i}", f"answer {i}", user=user, wait=True).qa_id
        for i in range(n)
    ]


def everything(store: SessionStore) -> list[str]:
    return sorted(e.model_dump_json() for e in store.iter_entries())


def feedback_url(qa_id: str) -> str:
    return f"/api/turns/{quote(qa_id, safe='')}/feedback"


def when(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


# -- session ratings -------------------------------------------------------------------


def test_rate_a_session_up_read_it_back_and_clear_it(any_store: SessionStore) -> None:
    store = any_store
    session(store, "s/1 ?#")
    params = {"session_id": "s/1 ?#"}
    with TestClient(create_app(store, auth=ApiKeyAuth(KEYS)), base_url=LOCAL) as c:
        r = c.get(URL, params=params, headers=ALICE)
        assert r.status_code == 200
        assert r.json() == {
            "session_id": "s/1 ?#",
            "rating": None,
            "feedback_score": None,
            "feedback_text": None,
            "recorded_at": None,
            "remembered": False,
            "remembered_turns": 0,
        }

        r = c.put(URL, params=params, json={"thumbs": "up", "text": "helpful"}, headers=ALICE)
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["rating"], body["feedback_score"], body["feedback_text"]) == (
            "positive",
            5,
            "helpful",
        )
        stored = store.get_session_feedback("s/1 ?#", user="alice")
        assert stored is not None and stored.feedback_score == 5
        assert stored.feedback_text == "helpful"
        assert when(body["recorded_at"]) == stored.feedback_time
        assert c.get(URL, params=params, headers=ALICE).json() == body

        r = c.delete(URL, params=params, headers=ALICE)
        assert r.status_code == 200
        assert (r.json()["rating"], r.json()["recorded_at"]) == (None, None)
        assert store.get_session_feedback("s/1 ?#", user="alice") is None
        assert len(store.get_session("s/1 ?#", user="alice")) == 2  # the turns stay


@pytest.mark.parametrize(
    ("body", "score", "rating"),
    [
        ({"thumbs": "up"}, 5, "positive"),
        ({"thumbs": "down"}, 1, "negative"),
        ({"rating": "positive"}, 5, "positive"),
        ({"rating": "negative"}, 1, "negative"),
        ({"thumbs": "down", "rating": "negative"}, 1, "negative"),  # they agree
        ({"score": 4}, 4, "positive"),
        ({"score": 3}, 3, None),
        ({"score": 2}, 2, "negative"),
    ],
)
def test_a_session_takes_score_thumbs_or_rating(
    store: SessionStore, client: TestClient, body: dict[str, Any], score: int, rating: str
) -> None:
    session(store)
    r = client.put(URL, params={"session_id": "s1"}, json=body, headers=ALICE)
    assert r.status_code == 200, r.text
    assert (r.json()["feedback_score"], r.json()["rating"]) == (score, rating)
    stored = store.get_session_feedback("s1", user="alice")
    assert stored is not None and stored.feedback_score == score


def test_only_the_fields_given_change(store: SessionStore, client: TestClient) -> None:
    session(store)
    params = {"session_id": "s1"}
    client.put(URL, params=params, json={"rating": "negative"}, headers=ALICE)
    r = client.put(URL, params=params, json={"text": "it went round in circles"}, headers=ALICE)
    assert (r.json()["feedback_score"], r.json()["feedback_text"]) == (
        1,
        "it went round in circles",
    )
    r = client.put(URL, params=params, json={"thumbs": "up"}, headers=ALICE)
    assert (r.json()["feedback_score"], r.json()["feedback_text"]) == (
        5,
        "it went round in circles",
    )


def test_a_session_rating_is_not_a_turn_rating(store: SessionStore, client: TestClient) -> None:
    """The conversation's rating puts nothing in memory; ``remembered`` says whether any
    of its turns is there, which only rating the turns changes."""
    first, second = session(store)
    params = {"session_id": "s1"}
    r = client.put(URL, params=params, json={"thumbs": "up"}, headers=ALICE)
    assert (r.json()["remembered"], r.json()["remembered_turns"]) == (False, 0)
    assert [e.feedback_score for e in store.get_session("s1", user="alice")] == [None, None]

    client.put(feedback_url(second), params=params, json={"thumbs": "up"}, headers=ALICE)
    r = client.get(URL, params=params, headers=ALICE)
    assert (r.json()["remembered"], r.json()["remembered_turns"]) == (True, 1)
    client.put(feedback_url(first), params=params, json={"correction": "better"}, headers=ALICE)
    assert client.get(URL, params=params, headers=ALICE).json()["remembered_turns"] == 2


def test_the_session_list_shows_the_session_rating(store: SessionStore, client: TestClient) -> None:
    session(store, "rated")
    session(store, "unrated")
    client.put(URL, params={"session_id": "rated"}, json={"score": 2, "text": "meh"}, headers=ALICE)
    found = {s["session_id"]: s for s in client.get("/api/sessions", headers=ALICE).json()}
    rating = found["rated"]["session_feedback"]
    assert (rating["feedback_score"], rating["feedback_text"]) == (2, "meh")
    assert when(rating["feedback_time"]) is not None
    assert found["unrated"]["session_feedback"] is None
    # the turn counts are still the turns' own
    assert (found["rated"]["turns"], found["rated"]["unrated"]) == (2, 2)


def test_unknown_or_another_users_session_is_404_and_nothing_changes(
    store: SessionStore, client: TestClient
) -> None:
    session(store, "bobs", user="bob")
    before = everything(store)
    for headers, session_id in ((ALICE, "bobs"), (ALICE, "nope"), (BOB, "nope")):
        params = {"session_id": session_id}
        for r in (
            client.get(URL, params=params, headers=headers),
            client.put(URL, params=params, json={"thumbs": "up"}, headers=headers),
            client.delete(URL, params=params, headers=headers),
        ):
            assert r.status_code == 404, r.text
            assert r.json() == {"detail": "no such session"}
    assert everything(store) == before
    assert store.get_session_feedback("bobs", user="bob") is None


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"text": "   "},
        {"score": 0},
        {"score": 6},
        {"score": 3.0},
        {"score": "4"},
        {"score": True},
        {"score": 4, "thumbs": "up"},
        {"score": 5, "rating": "positive"},
        {"thumbs": "down", "rating": "positive"},
        {"thumbs": "up", "rating": "negative"},
        {"rating": "great"},
        {"rating": 5},
        {"thumbs": True},
        {"correction": "a session has no correction"},
        {"feedback_score": 5},
        {"text": 5},
        {"text": "x" * (MAX_TEXT_LENGTH + 1)},
        [],
        "up",
    ],
    ids=repr,
)
def test_bad_session_feedback_is_422_and_changes_nothing(
    store: SessionStore, client: TestClient, body: Any
) -> None:
    session(store)
    client.put(URL, params={"session_id": "s1"}, json={"thumbs": "up"}, headers=ALICE)
    before = everything(store)
    r = client.put(
        URL,
        params={"session_id": "s1"},
        content=json.dumps(body),
        headers={**ALICE, "Content-Type": "application/json"},
    )
    expected = 413 if len(json.dumps(body)) > 1024 * 1024 else 422  # over 1 MiB: 413 first
    assert r.status_code == expected, r.text
    assert r.headers["content-type"] == "application/json"
    assert "detail" in r.json()
    assert everything(store) == before


def test_bad_requests_are_json_errors_and_change_nothing(
    store: SessionStore, client: TestClient
) -> None:
    session(store)
    before = everything(store)
    params = {"session_id": "s1"}
    json_type = {"Content-Type": "application/json"}
    cases = [
        (client.put(URL, params=params, content=b"{bad", headers={**ALICE, **json_type}), 422),
        (client.put(URL, params=params, content=b"\xff\xfe", headers={**ALICE, **json_type}), 422),
        (client.put(URL, params=params, content=b'{"thumbs":"up"}', headers=ALICE), 415),
        (client.put(URL, params=params, json={"thumbs": "up"}), 401),
        (client.put(URL, params=params, json={"thumbs": "up"}, headers=ALICE_RO), 403),
        (client.delete(URL, params=params, headers=ALICE_RO), 403),
        (client.get(URL, params=params, headers=ALICE_WO), 403),
        (client.get(URL, params={"session_id": ""}, headers=ALICE), 422),
        (client.get(URL, params={"session_id": "s" * 1025}, headers=ALICE), 422),
        (client.get(URL, headers=ALICE), 422),
    ]
    for r, status in cases:
        assert r.status_code == status, (status, r.text)
        assert "detail" in r.json()
    assert everything(store) == before


# -- what a turn's feedback answer says ---------------------------------------------------


def test_turn_feedback_says_remembered_and_recorded_at(
    store: SessionStore, client: TestClient
) -> None:
    [qa_id] = session(store, n=1)
    url, params = feedback_url(qa_id), {"session_id": "s1"}

    def check(r: Any, remembered: bool) -> dict[str, Any]:
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        entry = store.get_entry("s1", qa_id, user="alice")
        assert entry is not None
        assert body["remembered"] is remembered is entry.remembered
        assert when(body["recorded_at"]) == entry.feedback_time is not None
        assert body["memory_ids"] == []
        return body

    check(client.put(url, params=params, json={"thumbs": "up"}, headers=ALICE), True)
    check(client.put(url, params=params, json={"score": 3}, headers=ALICE), False)
    check(client.put(url, params=params, json={"correction": "better"}, headers=ALICE), True)
    check(client.put(url, params=params, json={"rating": "negative"}, headers=ALICE), True)
    body = check(client.delete(url, params=params, headers=ALICE), False)
    assert (body["feedback_score"], body["correction"]) == (None, None)
    body = check(client.put(url, params=params, json={"text": "a comment"}, headers=ALICE), False)
    assert body["feedback_text"] == "a comment"


@pytest.mark.parametrize(
    ("body", "score"),
    [
        ({"rating": "positive"}, 5),
        ({"rating": "negative"}, 1),
        ({"thumbs": "up", "rating": "positive"}, 5),
    ],
)
def test_turn_feedback_takes_rating_as_thumbs_in_words(
    store: SessionStore, client: TestClient, body: dict[str, Any], score: int
) -> None:
    [qa_id] = session(store, n=1)
    r = client.put(feedback_url(qa_id), params={"session_id": "s1"}, json=body, headers=ALICE)
    assert r.status_code == 200 and r.json()["feedback_score"] == score
    assert store.get_entry("s1", qa_id, user="alice").feedback_score == score  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "body",
    [
        {"rating": "positive", "thumbs": "down"},
        {"rating": "negative", "thumbs": "up"},
        {"rating": "positive", "score": 5},
        {"rating": "negative", "score": 4},
        {"rating": "liked"},
        {"rating": None},
    ],
    ids=repr,
)
def test_turn_feedback_with_conflicting_ratings_is_422(
    store: SessionStore, client: TestClient, body: dict[str, Any]
) -> None:
    [qa_id] = session(store, n=1)
    store.add_feedback("s1", qa_id, "kept", 4, user="alice")
    before = everything(store)
    r = client.put(feedback_url(qa_id), params={"session_id": "s1"}, json=body, headers=ALICE)
    assert r.status_code == 422, r.text
    assert everything(store) == before


def test_the_openapi_schema_names_the_new_fields(client: TestClient) -> None:
    comps = client.get("/openapi.json").json()["components"]["schemas"]
    assert comps["FeedbackRequest"]["properties"]["rating"]["anyOf"][0]["enum"] == [
        "positive",
        "negative",
    ]
    assert set(comps["SessionFeedbackRequest"]["properties"]) == {
        "score",
        "thumbs",
        "rating",
        "text",
    }
    assert comps["SessionFeedbackRequest"]["additionalProperties"] is False
    assert {"rating", "recorded_at", "remembered"} <= set(comps["SessionRating"]["properties"])
    assert "session_feedback" in comps["SessionSummary"]["properties"]
