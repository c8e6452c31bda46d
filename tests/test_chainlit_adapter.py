"""The Chainlit adapter, driven by real ``Feedback`` objects and by Chainlit's own server."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock

import pytest

# Importing chainlit writes .chainlit/ and .files/ into its app root (default: the cwd).
os.environ.setdefault("CHAINLIT_APP_ROOT", tempfile.mkdtemp(prefix="chainlit-root-"))
pytest.importorskip("chainlit")

import chainlit as cl
import chainlit.data as cl_data
from chainlit.config import config as cl_config
from chainlit.context import init_http_context
from chainlit.data.base import BaseDataLayer
from chainlit.types import Feedback, Pagination, ThreadFilter
from chainlit.user import PersistedUser, User

from feedback_plugin import ConfigurationError, InvalidFeedbackError, SessionStore
from feedback_plugin.integrations.chainlit_feedback import (
    FeedbackDataLayer,
    TurnNotFoundError,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def in_chainlit(coro: Any, **context: Any) -> Any:
    """Await ``coro`` inside a Chainlit HTTP context (as around Chainlit's REST calls)."""

    async def go() -> Any:
        init_http_context(**context)
        return await coro

    return asyncio.run(go())


def _turn(store: SessionStore, session_id: str = "thread-1", user: str | None = None) -> str:
    return store.record(session_id, "q?", "a.", user=user).qa_id


def _rating(store: SessionStore, qa_id: str, session_id: str = "thread-1", user: str | None = None):
    entry = store.get_entry(session_id, qa_id, user=user)
    assert entry is not None
    return entry.feedback_score, entry.feedback_text


# -- Feedback objects straight into the data layer ---------------------------------------------


def test_is_a_complete_chainlit_data_layer(store: SessionStore) -> None:
    layer = FeedbackDataLayer(store)
    assert isinstance(layer, BaseDataLayer)  # every abstract method is implemented

    async def rest() -> None:
        page = await layer.list_threads(Pagination(first=10), ThreadFilter())
        assert page.data == [] and page.pageInfo.hasNextPage is False
        assert await layer.get_thread("t") is None
        assert await layer.get_element("t", "e") is None
        assert await layer.get_favorite_steps("u") == []
        assert await layer.build_debug_url() == ""
        user = await layer.create_user(User(identifier="alice"))
        assert user is not None and user.id == "alice" and user.identifier == "alice"
        got = await layer.get_user("alice")
        assert got is not None and got.id == "alice"
        await layer.close()

    run(rest())


def test_thumbs_up_down_comment_and_delete(store: SessionStore) -> None:
    qa_id = _turn(store)
    layer = FeedbackDataLayer(store)

    fid = run(layer.upsert_feedback(Feedback(forId=qa_id, threadId="thread-1", value=1)))
    assert fid == qa_id
    assert _rating(store, qa_id) == (5, None)

    again = Feedback(forId=qa_id, threadId="thread-1", value=0, id=fid, comment="outdated")
    assert run(layer.upsert_feedback(again)) == fid
    assert _rating(store, qa_id) == (1, "outdated")

    assert run(layer.delete_feedback(fid)) is True
    assert _rating(store, qa_id) == (None, None)
    assert store.get_entry("thread-1", qa_id) is not None  # the turn stays


@pytest.mark.parametrize("value", [2, -1, True, "1", None])
def test_values_other_than_0_and_1_are_refused(store: SessionStore, value: Any) -> None:
    qa_id = _turn(store)
    layer = FeedbackDataLayer(store)
    run(layer.upsert_feedback(Feedback(forId=qa_id, threadId="thread-1", value=1)))
    if value is not True:  # Chainlit's own (pydantic) check; it reads True as 1
        with pytest.raises(ValueError):
            Feedback(forId=qa_id, threadId="thread-1", value=value)
    bad = Feedback(forId=qa_id, threadId="thread-1", value=0)
    bad.value = value  # assignment is not validated: the data layer checks again
    with pytest.raises(InvalidFeedbackError):
        run(layer.upsert_feedback(bad))
    assert _rating(store, qa_id) == (5, None)


def test_message_that_is_no_turn_raises_and_stores_nothing(store: SessionStore) -> None:
    qa_id = _turn(store)
    layer = FeedbackDataLayer(store)
    with pytest.raises(TurnNotFoundError):
        run(layer.upsert_feedback(Feedback(forId="welcome-msg", threadId="thread-1", value=1)))
    with pytest.raises(TurnNotFoundError):  # no thread known at all
        run(layer.upsert_feedback(Feedback(forId=qa_id, value=1)))
    assert _rating(store, qa_id) == (None, None)
    assert run(layer.delete_feedback("never-given")) is False


def test_thread_learned_from_create_step_beats_the_browser_thread(store: SessionStore) -> None:
    qa_id = _turn(store, session_id="thread-A")
    layer = FeedbackDataLayer(store)
    step = {"id": qa_id, "threadId": "thread-A", "type": "assistant_message"}
    in_chainlit(layer.create_step(step), thread_id="thread-A")
    in_chainlit(layer.create_step({"id": qa_id, "threadId": "thread-EVIL"}))  # first seen wins
    run(layer.upsert_feedback(Feedback(forId=qa_id, threadId="thread-EVIL", value=1)))
    assert _rating(store, qa_id, session_id="thread-A") == (5, None)
    run(layer.upsert_feedback(Feedback(forId=qa_id, value=0)))  # no threadId needed
    assert _rating(store, qa_id, session_id="thread-A") == (1, None)


def test_registered_message_maps_to_any_turn(store: SessionStore) -> None:
    qa_id = _turn(store, session_id="my-session", user="alice")
    layer = FeedbackDataLayer(store)
    ref = layer.register("msg-42", session_id="my-session", qa_id=qa_id, user="alice")
    assert layer.turns_for("msg-42", "some-thread") == [ref]
    fid = run(layer.upsert_feedback(Feedback(forId="msg-42", threadId="t", value=1, comment="ok")))
    assert fid == "msg-42"
    assert _rating(store, qa_id, session_id="my-session", user="alice") == (5, "ok")
    assert run(layer.delete_feedback(fid)) is True
    assert _rating(store, qa_id, session_id="my-session", user="alice") == (None, None)
    with pytest.raises(ValueError):
        layer.register("", session_id="s")


def test_user_comes_from_the_thread_and_isolates_users(store: SessionStore) -> None:
    alice_turn = _turn(store, session_id="thread-a", user="alice")
    bob_turn = _turn(store, session_id="thread-b", user="bob")
    layer = FeedbackDataLayer(store)
    run(layer.update_thread("thread-a", user_id="alice"))
    run(layer.update_thread("thread-b", user_id="bob"))

    run(layer.upsert_feedback(Feedback(forId=alice_turn, threadId="thread-a", value=1)))
    assert _rating(store, alice_turn, session_id="thread-a", user="alice") == (5, None)
    assert run(layer.get_thread_author("thread-a")) == "alice"

    # bob's click claiming alice's turn in his own thread finds nothing
    with pytest.raises(TurnNotFoundError):
        run(layer.upsert_feedback(Feedback(forId=alice_turn, threadId="thread-b", value=0)))
    assert _rating(store, alice_turn, session_id="thread-a", user="alice") == (5, None)
    assert _rating(store, bob_turn, session_id="thread-b", user="bob") == (None, None)


def test_default_user(store: SessionStore) -> None:
    qa_id = _turn(store, user="kiosk")
    run(
        FeedbackDataLayer(store, user="kiosk").upsert_feedback(
            Feedback(forId=qa_id, threadId="thread-1", value=1)
        )
    )
    assert _rating(store, qa_id, user="kiosk") == (5, None)


def test_inner_data_layer_gets_every_call(store: SessionStore) -> None:
    qa_id = _turn(store)
    inner = AsyncMock(spec=BaseDataLayer)
    inner.upsert_feedback.return_value = "inner-fb-1"
    inner.delete_feedback.return_value = True
    inner.get_thread_author.return_value = "someone"
    layer = FeedbackDataLayer(store, inner=inner)

    feedback = Feedback(forId=qa_id, threadId="thread-1", value=1)
    assert run(layer.upsert_feedback(feedback)) == "inner-fb-1"
    inner.upsert_feedback.assert_awaited_once_with(feedback)
    assert _rating(store, qa_id) == (5, None)
    assert run(layer.delete_feedback("inner-fb-1")) is True
    inner.delete_feedback.assert_awaited_once_with("inner-fb-1")
    assert _rating(store, qa_id) == (None, None)

    # a message that is no turn: the inner layer still stores the feedback, nothing raises
    other = Feedback(forId="not-a-turn", threadId="thread-1", value=0)
    assert run(layer.upsert_feedback(other)) == "inner-fb-1"

    in_chainlit(layer.create_step({"id": "s", "threadId": "t"}))
    inner.create_step.assert_awaited_once()
    assert run(layer.get_thread_author("t")) == "someone"
    run(layer.update_thread("t", name="n", user_id="u"))
    inner.update_thread.assert_awaited_once_with("t", "n", "u", None, None)
    run(layer.close())
    inner.close.assert_awaited_once()


# -- through Chainlit itself -----------------------------------------------------------------------


@pytest.fixture
def installed_layer() -> Iterator[Any]:
    """Install a data layer the way ``@cl.data_layer`` does; undo it afterwards."""
    saved = cl_config.code.data_layer

    def install(layer: FeedbackDataLayer) -> None:
        cl.data_layer(lambda: layer)
        cl_data._data_layer = None
        cl_data._data_layer_initialized = False

    yield install
    cl_config.code.data_layer = saved
    cl_data._data_layer = None
    cl_data._data_layer_initialized = False


def test_chainlit_rest_endpoints_reach_the_store(store: SessionStore, installed_layer: Any) -> None:
    from chainlit.server import app
    from starlette.testclient import TestClient

    qa_id = _turn(store)
    installed_layer(FeedbackDataLayer(store))
    client = TestClient(app)

    body = {"forId": qa_id, "threadId": "thread-1", "value": 0, "comment": "too vague"}
    r = client.put("/feedback", json={"sessionId": "ws-1", "feedback": body})
    assert r.status_code == 200, r.text
    feedback_id = r.json()["feedbackId"]
    assert _rating(store, qa_id) == (1, "too vague")

    r = client.request("DELETE", "/feedback", json={"feedbackId": feedback_id})
    assert r.status_code == 200, r.text
    assert _rating(store, qa_id) == (None, None)

    r = client.put(
        "/feedback",
        json={"sessionId": "ws-1", "feedback": {"forId": "nope", "threadId": "t", "value": 1}},
    )
    assert r.status_code == 500  # Chainlit's answer to a failing data layer
    assert "not a recorded turn" in r.json()["detail"]


def _load_example(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_example_app_click_on_the_run_rates_the_turn(
    store: SessionStore, installed_layer: Any
) -> None:
    """examples/chainlit_app.py through Chainlit's own on_message dispatch and REST endpoints.

    Chainlit wraps ``on_message`` in a run step and the browser sends that
    step's id as ``Feedback.forId``; the example links it with ``register_run``.
    """
    from chainlit.server import app
    from starlette.testclient import TestClient

    example = _load_example("chainlit_app")  # its store: $FEEDBACK_PLUGIN_DIR (a tmp dir)
    layer: FeedbackDataLayer = example.feedback_layer
    installed_layer(layer)
    steps: list[dict[str, Any]] = []
    learn = layer.create_step

    async def spy(step_dict: Any) -> None:
        steps.append(dict(step_dict))
        await learn(step_dict)

    layer.create_step = spy  # type: ignore[method-assign]
    thread_id = str(uuid.uuid4())
    alice = PersistedUser(id="alice", identifier="alice", createdAt="2025-01-01T00:00:00Z")

    async def chat() -> None:
        init_http_context(thread_id=thread_id, user=alice)
        question = cl.Message(content="How do I reset my password?", type="user_message")
        await cl_config.code.on_message(question)  # what Chainlit calls for a user message
        await asyncio.sleep(0.05)  # Chainlit persists steps in background tasks

    run(chat())
    [entry] = example.store.get_session(thread_id, user="alice")
    assert entry.question == "How do I reset my password?"
    assert entry.context and "Reset password" in entry.answer
    [run_step] = [s for s in steps if s.get("type") == "run"]
    answers = [s for s in steps if s.get("type") == "assistant_message"]
    assert [a["output"] for a in answers] == [entry.answer]
    assert answers[0]["parentId"] == run_step["id"]  # the answer is sent inside the run

    # the browser's click, as the Chainlit frontend sends it: forId = the run step
    client = TestClient(app)
    body = {"forId": run_step["id"], "threadId": thread_id, "value": 1, "comment": "clear"}
    r = client.put("/feedback", json={"sessionId": "ws", "feedback": body})
    assert r.status_code == 200, r.text
    ours = example.store.get_entry(thread_id, entry.qa_id, user="alice")
    assert (ours.feedback_score, ours.feedback_text) == (5, "clear")
    r = client.request("DELETE", "/feedback", json={"feedbackId": r.json()["feedbackId"]})
    assert r.status_code == 200, r.text
    ours = example.store.get_entry(thread_id, entry.qa_id, user="alice")
    assert (ours.feedback_score, ours.feedback_text) == (None, None)


def test_register_run_links_the_current_run(store: SessionStore) -> None:
    qa_id = _turn(store, session_id="thread-r", user="bob")
    layer = FeedbackDataLayer(store)
    bob = PersistedUser(id="u-17", identifier="bob", createdAt="2025-01-01T00:00:00Z")

    async def in_run() -> str:
        init_http_context(thread_id="thread-r", user=bob)
        async with cl.Step(name="on_message", type="run") as step:
            ref = layer.register_run(uuid.UUID(qa_id))
            assert (ref.session_id, ref.qa_id, ref.user) == ("thread-r", qa_id, "bob")
        return str(step.id)

    step_id = run(in_run())
    run(layer.upsert_feedback(Feedback(forId=step_id, threadId="thread-r", value=0)))
    assert _rating(store, qa_id, session_id="thread-r", user="bob") == (1, None)
    with pytest.raises(ConfigurationError, match="on_message"):
        in_chainlit(_call(layer.register_run, qa_id))


async def _call(fn: Any, *args: Any) -> Any:
    return fn(*args)


def test_turn_found_among_the_run_steps_messages(store: SessionStore) -> None:
    """Without registration: qa_id == id of a message sent inside the clicked run."""
    qa_id = _turn(store, session_id="thread-c")
    decoy = _turn(store, session_id="thread-c")
    layer = FeedbackDataLayer(store)
    steps = [
        {"id": "run-1", "threadId": "thread-c", "type": "run", "parentId": "user-msg"},
        {"id": "tool-step", "threadId": "thread-c", "type": "tool", "parentId": "run-1"},
        {"id": qa_id, "threadId": "thread-c", "type": "assistant_message", "parentId": "run-1"},
        # a browser-sent message never counts, whatever its id
        {"id": decoy, "threadId": "thread-c", "type": "user_message", "parentId": "run-1"},
    ]
    for step in steps:
        in_chainlit(layer.create_step(step), thread_id="thread-c")
    fid = run(layer.upsert_feedback(Feedback(forId="run-1", threadId="thread-c", value=1)))
    assert _rating(store, qa_id, session_id="thread-c") == (5, None)
    assert _rating(store, decoy, session_id="thread-c") == (None, None)
    assert run(layer.delete_feedback(fid)) is True
    assert _rating(store, qa_id, session_id="thread-c") == (None, None)
    in_chainlit(layer.delete_step("run-1"))
    with pytest.raises(TurnNotFoundError):
        run(layer.upsert_feedback(Feedback(forId="run-1", value=1)))
