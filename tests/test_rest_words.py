"""Feedback in plain words over REST: POST /api/sessions/feedback/words (now, or in the
background with a task) and GET /api/feedback-tasks/{task_id}.

FastAPI's TestClient over real stores (diskcache in tmp_path; Redis and PostgreSQL
for the round trip); the chat model is ``ScriptedChatModel`` (a real LangChain
``BaseChatModel`` answering fixed JSON replies, ``tests/_fakes.py``).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from _fakes import ScriptedChatModel
from _postgres import POSTGRES_URL, require_postgres
from _redis import REDIS_URL, require_redis
from _rest import ALICE, ALICE_RO, ALICE_WO, BOB, KEYS, LOCAL
from fastapi import FastAPI
from fastapi.testclient import TestClient
from langchain_core.messages import BaseMessage

from feedback_plugin import SessionStore
from feedback_plugin.integrations.rest import ApiKeyAuth, create_app, create_router
from feedback_plugin.integrations.rest_words import MODEL_FAILED, NO_MODEL, TASK_FAILED

URL = "/api/sessions/feedback/words"
WRONG = "No, it's Canberra."


def reply(**fields: Any) -> str:
    return json.dumps(fields)


class FailingModel(ScriptedChatModel):
    """A chat model whose every call fails (a provider outage)."""

    def _next(self, messages: list[BaseMessage]) -> Any:
        self._calls.append(list(messages))
        raise ConnectionError("model provider unavailable at 10.0.0.7")


def app(store: SessionStore, model: Any) -> TestClient:
    return TestClient(
        create_app(store, auth=ApiKeyAuth(KEYS), feedback_model=model), base_url=LOCAL
    )


@pytest.fixture
def turns(store: SessionStore) -> list[str]:
    """Alice's session s1: two turns, the newest one wrong."""
    return [
        store.record("s1", q, a, user="alice", wait=True).qa_id
        for q, a in [("Hi?", "Hello."), ("What is the capital of Australia?", "Sydney.")]
    ]


def everything(store: SessionStore) -> list[str]:
    return sorted(e.model_dump_json() for e in store.iter_entries())


def finished(client: TestClient, location: str, headers: dict[str, str]) -> dict[str, Any]:
    """Poll a task until it is done or failed (10 s at most)."""
    deadline = time.monotonic() + 10
    while True:
        r = client.get(location, headers=headers)
        assert r.status_code == 200, r.text
        task: dict[str, Any] = r.json()
        if task["status"] in ("done", "failed"):
            return task
        assert time.monotonic() < deadline, task
        time.sleep(0.02)


# -- now ---------------------------------------------------------------------------------


def test_words_become_a_stored_rating(store: SessionStore, turns: list[str]) -> None:
    model = ScriptedChatModel(
        script=[reply(score=1, correction="Canberra", corrected_answer="It's Canberra.")]
    )
    with app(store, model) as c:
        r = c.post(
            URL,
            params={"session_id": "s1"},
            json={"feedback_content": WRONG, "corrected_answer": True},
            headers=ALICE,
        )
    assert r.status_code == 200, r.text
    result = r.json()
    assert (result["applied"], result["qa_id"], result["session_id"]) == (True, turns[1], "s1")
    assert (result["feedback_score"], result["correction"]) == (1, "Canberra")
    assert result["corrected_answer"] == "It's Canberra."
    entry = store.get_entry("s1", turns[1], user="alice")
    assert entry is not None
    assert (entry.feedback_score, entry.feedback_text, entry.correction) == (1, WRONG, "Canberra")
    # what every feedback answer says: a correction is remembered, and when it was recorded
    assert result["remembered"] is True is entry.remembered
    assert datetime.fromisoformat(result["recorded_at"]) == entry.feedback_time
    assert result["entry"]["memory_ids"] == []
    # the model was shown the session and the words
    [messages] = model.calls
    shown = "\n".join(str(m.content) for m in messages)
    assert "What is the capital of Australia?" in shown and WRONG in shown
    assert "corrected_answer" in shown


@pytest.mark.parametrize(
    "answer",
    [
        reply(is_feedback=False),
        "I think the user is unhappy.",
        reply(turn=7, score=1),
        reply(score=9),
        reply(score=5, thumbs="down"),
    ],
    ids=["not feedback", "not JSON", "turn not shown", "score 9", "disagree"],
)
def test_a_reply_that_is_no_rating_changes_nothing(
    store: SessionStore, turns: list[str], answer: str
) -> None:
    before = everything(store)
    with app(store, ScriptedChatModel(script=[answer])) as c:
        r = c.post(URL, params={"session_id": "s1"}, json={"feedback_content": "hm"}, headers=ALICE)
    assert r.status_code == 200, r.text
    assert r.json()["applied"] is False and r.json()["reason"]
    assert (r.json()["remembered"], r.json()["recorded_at"]) == (False, None)
    assert everything(store) == before


def test_an_unknown_or_anothers_session_is_404_and_the_model_is_not_asked(
    store: SessionStore, turns: list[str]
) -> None:
    model = ScriptedChatModel(script=[reply(score=1)])
    before = everything(store)
    with app(store, model) as c:
        for params, headers in (({"session_id": "nope"}, ALICE), ({"session_id": "s1"}, BOB)):
            r = c.post(URL, params=params, json={"feedback_content": WRONG}, headers=headers)
            assert r.status_code == 404 and r.json() == {"detail": "no such session"}
            bg = {"feedback_content": WRONG, "background": True}
            assert c.post(URL, params=params, json=bg, headers=headers).status_code == 404
    assert model.calls == []
    assert everything(store) == before


def test_a_failing_model_is_a_502_that_says_nothing_internal(
    store: SessionStore, turns: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    before = everything(store)
    with app(store, FailingModel()) as c, caplog.at_level(logging.WARNING, "feedback_plugin"):
        r = c.post(
            URL, params={"session_id": "s1"}, json={"feedback_content": WRONG}, headers=ALICE
        )
    assert r.status_code == 502
    assert r.json() == {"detail": MODEL_FAILED}
    assert "10.0.0.7" in caplog.text  # the details are in the server log
    assert everything(store) == before


# -- in the background ---------------------------------------------------------------------


def test_in_the_background_a_task_to_read_back(store: SessionStore, turns: list[str]) -> None:
    model = ScriptedChatModel(script=[reply(turn=2, thumbs="down", comment="wrong city")])
    with app(store, model) as c:
        r = c.post(
            URL,
            params={"session_id": "s1"},
            json={"feedback_content": WRONG, "background": True},
            headers=ALICE,
        )
        assert r.status_code == 202, r.text
        task = r.json()
        assert task["status"] in ("pending", "running", "done")
        assert task["session_id"] == "s1"
        location = r.headers["location"]
        assert location.endswith(f"/api/feedback-tasks/{task['task_id']}")

        done = finished(c, location, ALICE)
        assert done["status"] == "done" and done["error"] is None
        result = done["result"]
        assert (result["applied"], result["qa_id"], result["feedback_score"]) == (True, turns[1], 1)
        assert result["remembered"] is False  # thumbs down: not in memory
        entry = store.get_entry("s1", turns[1], user="alice")
        assert entry is not None and (entry.feedback_score, entry.feedback_text) == (
            1,
            "wrong city",
        )

        # only its user reads it; an unknown id is 404 too
        assert c.get(location, headers=BOB).status_code == 404
        r = c.get(f"/api/feedback-tasks/{uuid.uuid4()}", headers=ALICE)
        assert r.status_code == 404 and r.json() == {"detail": "no such task"}


def test_a_background_task_that_fails_says_so_and_not_why(
    store: SessionStore, turns: list[str]
) -> None:
    before = everything(store)
    with app(store, FailingModel()) as c:
        bg = {"feedback_content": WRONG, "background": True}
        r = c.post(URL, params={"session_id": "s1"}, json=bg, headers=ALICE)
        assert r.status_code == 202
        done = finished(c, r.headers["location"], ALICE)
    assert (done["status"], done["error"], done["result"]) == ("failed", TASK_FAILED, None)
    assert everything(store) == before


# -- no model, bad input, auth ---------------------------------------------------------------


def test_without_a_model_both_routes_are_501(store: SessionStore, turns: list[str]) -> None:
    before = everything(store)
    with TestClient(create_app(store, auth=ApiKeyAuth(KEYS)), base_url=LOCAL) as c:
        r = c.post(
            URL, params={"session_id": "s1"}, json={"feedback_content": WRONG}, headers=ALICE
        )
        assert r.status_code == 501 and r.json() == {"detail": NO_MODEL}
        assert "feedback_model" in r.json()["detail"]
        bad = {"feedback_content": 5}  # the missing model is said first
        assert c.post(URL, params={"session_id": "s1"}, json=bad, headers=ALICE).status_code == 501
        r = c.get(f"/api/feedback-tasks/{uuid.uuid4()}", headers=ALICE)
        assert r.status_code == 501
        # the key is still checked first
        assert (
            c.post(URL, params={"session_id": "s1"}, json={"feedback_content": WRONG}).status_code
            == 401
        )
    assert everything(store) == before


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"feedback_content": ""},
        {"feedback_content": "   \n"},
        {"feedback_content": 5},
        {"feedback_content": None},
        {"feedback_content": WRONG, "corrected_answer": "yes"},
        {"feedback_content": WRONG, "corrected_answer": 1},
        {"feedback_content": WRONG, "background": "true"},
        {"feedback_content": WRONG, "detect": True},
        {"feedback_content": WRONG, "score": 5},
        [WRONG],
    ],
    ids=repr,
)
def test_bad_input_is_422_and_asks_no_model(
    store: SessionStore, turns: list[str], body: Any
) -> None:
    model = ScriptedChatModel(script=[reply(score=1)])
    before = everything(store)
    with app(store, model) as c:
        r = c.post(URL, params={"session_id": "s1"}, json=body, headers=ALICE)
    assert r.status_code == 422, r.text
    assert "detail" in r.json()
    assert model.calls == [] and everything(store) == before


def test_keys_and_scopes(store: SessionStore, turns: list[str]) -> None:
    model = ScriptedChatModel(script=[reply(score=4)], cycle=True)
    before = everything(store)
    with app(store, model) as c:
        words = {"feedback_content": "good", "background": True}
        for headers, status in ((None, 401), ({"Authorization": "Bearer x"}, 401), (ALICE_RO, 403)):
            r = c.post(URL, params={"session_id": "s1"}, json=words, headers=headers)
            assert r.status_code == status
        assert everything(store) == before and model.calls == []
        r = c.post(URL, params={"session_id": "s1"}, json=words, headers=ALICE_WO)
        assert r.status_code == 202
        location = r.headers["location"]
        assert c.get(location, headers=ALICE_WO).status_code == 403  # reading needs "read"
        assert finished(c, location, ALICE_RO)["status"] == "done"  # the same user, read scope


def test_create_router_checks_the_model(store: SessionStore) -> None:
    with pytest.raises(TypeError):
        create_router(store, feedback_model="openai:gpt-4o-mini")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        create_app(store, feedback_model=object())  # type: ignore[arg-type]
    mounted = FastAPI()
    mounted.include_router(create_router(store, feedback_model=ScriptedChatModel()), prefix="/v1")
    paths = mounted.openapi()["paths"]
    assert {"/v1/api/sessions/feedback/words", "/v1/api/feedback-tasks/{task_id}"} <= set(paths)


@pytest.fixture(params=["redis", "postgres"])
def server_store(request: pytest.FixtureRequest) -> Iterator[SessionStore]:
    if request.param == "redis":
        require_redis()
        s = SessionStore(REDIS_URL, namespace=f"test-{uuid.uuid4().hex}")
    else:
        require_postgres()
        s = SessionStore(POSTGRES_URL, namespace=f"test-{uuid.uuid4().hex}")
    yield s
    s.backend.drop()  # type: ignore[attr-defined]
    s.close()


def test_now_and_in_the_background_on_a_server_store(server_store: SessionStore) -> None:
    store = server_store
    first = store.record("s1", "Capital of Australia?", "Sydney.", user="alice", wait=True)
    second = store.record("s1", "And of Canada?", "Ottawa.", user="alice", wait=True)
    model = ScriptedChatModel(script=[reply(turn=1, correction="Canberra"), reply(turn=2, score=5)])
    with app(store, model) as c:
        r = c.post(
            URL, params={"session_id": "s1"}, json={"feedback_content": WRONG}, headers=ALICE
        )
        assert r.status_code == 200 and r.json()["qa_id"] == first.qa_id
        bg = {"feedback_content": "Ottawa is right", "background": True}
        r = c.post(URL, params={"session_id": "s1"}, json=bg, headers=ALICE)
        assert r.status_code == 202
        assert finished(c, r.headers["location"], ALICE)["result"]["qa_id"] == second.qa_id
    assert store.get_entry("s1", first.qa_id, user="alice").correction == "Canberra"  # type: ignore[union-attr]
    assert store.get_entry("s1", second.qa_id, user="alice").feedback_score == 5  # type: ignore[union-attr]
