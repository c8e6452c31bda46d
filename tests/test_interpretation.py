"""Feedback in plain words: a scripted chat model's JSON reply becomes a stored rating.

The model is :class:`ScriptedChatModel` (a real ``BaseChatModel``) answering fixed
JSON; the store is real (diskcache in a temp dir, and Redis / PostgreSQL for the
paths every backend must share).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _fakes import ScriptedChatModel
from _postgres import POSTGRES_URL, require_postgres
from _redis import REDIS_URL, require_redis
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage

from feedback_plugin import (
    ArgumentTypeError,
    InvalidFeedbackError,
    InvalidIdError,
    SessionQAEntry,
    SessionStore,
)
from feedback_plugin.feedback_tasks import FeedbackTask, TaskBoard
from feedback_plugin.interpretation import SHOWN_TURNS, TAGS, FeedbackResult


def reply(**fields: Any) -> str:
    return json.dumps(fields)


class FailingModel(ScriptedChatModel):
    """A chat model whose every call fails (a provider outage)."""

    def _next(self, messages: list[BaseMessage]) -> Any:
        self._calls.append(list(messages))
        raise ConnectionError("model provider unavailable")


def _open(kind: str, tmp_path: Path) -> SessionStore:
    if kind == "disk":
        return SessionStore(tmp_path / "store")
    if kind == "redis":
        require_redis()
        return SessionStore(REDIS_URL, namespace=f"test-{uuid.uuid4().hex}")
    require_postgres()
    return SessionStore(POSTGRES_URL, namespace=f"test-{uuid.uuid4().hex}")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SessionStore]:
    s = SessionStore(tmp_path / "store")
    yield s
    s.close()


@pytest.fixture(params=["disk", "redis", "postgres"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionStore]:
    s = _open(request.param, tmp_path)
    yield s
    if request.param != "disk":
        s.backend.drop()  # type: ignore[attr-defined]
    s.close()


def australia(store: SessionStore, user: str | None = "alice") -> SessionQAEntry:
    return store.record("s1", "What is the capital of Australia?", "Sydney.", user=user, wait=True)


def three_turns(store: SessionStore, user: str | None = "alice") -> list[SessionQAEntry]:
    return [
        store.record("s1", "Capital of France?", "Lyon.", user=user, wait=True),
        store.record("s1", "Capital of Spain?", "Madrid.", user=user, wait=True),
        store.record("s1", "Capital of Italy?", "Rome.", user=user, wait=True),
    ]


def unchanged(store: SessionStore, before: list[SessionQAEntry], user: str = "alice") -> bool:
    return store.get_session("s1", user=user) == before


# -- the reply applied ------------------------------------------------------------------------


def test_a_clear_correction_is_stored_and_remembered(any_store: SessionStore) -> None:
    turn = australia(any_store)
    model = ScriptedChatModel(
        script=[reply(is_feedback=True, score=1, comment="Wrong city.", correction="Canberra")]
    )
    result = any_store.process_feedback(
        "s1", "No, the capital is Canberra.", user="alice", model=model
    )
    assert result.applied, result.reason
    assert (result.qa_id, result.session_id) == (turn.qa_id, "s1")
    assert (result.feedback_score, result.feedback_text, result.correction) == (
        1,
        "Wrong city.",
        "Canberra",
    )
    assert result.corrected_answer is None  # not asked for
    stored = any_store.get_entry("s1", turn.qa_id, user="alice")
    assert stored is not None and result.entry == stored
    assert stored.correction == "Canberra" and stored.feedback_score == 1
    assert result.remembered is stored.remembered is True  # a correction is remembered
    assert result.recorded_at == stored.feedback_time is not None
    # the model saw the turn and the user's words, delimited
    (system, human) = model.calls[0]
    assert '"is_feedback"' in str(system.content) and "corrected_answer" not in str(system.content)
    assert "Sydney." in str(human.content)
    assert "<feedback>\nNo, the capital is Canberra.\n</feedback>" in str(human.content)


def test_a_thumbs_down_in_words_keeps_the_users_words(store: SessionStore) -> None:
    turn = australia(store)
    model = ScriptedChatModel(script=[reply(is_feedback=True, thumbs="down")])
    result = store.process_feedback("s1", "  That's useless.  ", user="alice", model=model)
    assert result.applied
    assert (result.feedback_score, result.feedback_text, result.correction) == (
        1,
        "That's useless.",  # no comment from the model: the user's own words
        None,
    )
    assert result.remembered is False
    stored = store.get_entry("s1", turn.qa_id, user="alice")
    assert stored is not None and stored.feedback_score == 1


def test_thumbs_up_and_a_matching_score(store: SessionStore) -> None:
    turn = australia(store)
    model = ScriptedChatModel(script=[reply(score=5, thumbs="up", comment="Perfect")])
    result = store.process_feedback("s1", "perfect, thanks", user="alice", model=model)
    assert result.applied and result.feedback_score == 5 and result.remembered
    assert result.qa_id == turn.qa_id


@pytest.mark.parametrize("named", ["number", "qa_id"])
def test_feedback_about_an_earlier_turn(store: SessionStore, named: str) -> None:
    first, second, third = three_turns(store)
    turn: Any = 1 if named == "number" else first.qa_id
    model = ScriptedChatModel(script=[reply(turn=turn, score=1, correction="Paris")])
    result = store.process_feedback(
        "s1", "the first answer was wrong, it's Paris", user="alice", model=model
    )
    assert result.applied and result.qa_id == first.qa_id
    assert "turn 1 of the 3 shown" in result.reason
    after = store.get_session("s1", user="alice")
    assert after[0].correction == "Paris" and after[0].feedback_score == 1
    assert after[1:] == [second, third]  # the others untouched
    human = str(model.calls[0][1].content)
    assert f'<turn number="1" qa_id="{first.qa_id}">' in human
    assert "turn 3 is the newest" in human


def test_the_model_sees_the_newest_turns_only(store: SessionStore) -> None:
    for i in range(SHOWN_TURNS + 2):
        store.record("s1", f"question {i}?", f"answer {i}.", user="alice")
    model = ScriptedChatModel(script=[reply(turn=1, score=2)])
    result = store.process_feedback("s1", "meh", user="alice", model=model)
    human = str(model.calls[0][1].content)
    assert "question 1?" not in human and "question 2?" in human
    entry = result.entry
    assert entry is not None and entry.question == "question 2?"  # 1 = the oldest shown


def test_a_fenced_reply_is_read(store: SessionStore) -> None:
    australia(store)
    fenced = "```json\n" + reply(score=2, comment="Not quite.") + "\n```"
    result = store.process_feedback(
        "s1", "not quite", user="alice", model=ScriptedChatModel(script=[fenced])
    )
    assert result.applied and result.feedback_score == 2


def test_the_corrected_answer_comes_from_the_same_reply(store: SessionStore) -> None:
    australia(store)
    model = ScriptedChatModel(
        script=[
            reply(
                score=1,
                correction="Canberra",
                corrected_answer="You're right: the capital of Australia is Canberra.",
            )
        ]
    )
    result = store.process_feedback(
        "s1", "No, it's Canberra", user="alice", model=model, corrected_answer=True
    )
    assert result.corrected_answer == "You're right: the capital of Australia is Canberra."
    assert len(model.calls) == 1 and "corrected_answer" in str(model.calls[0][0].content)


def test_the_corrected_answer_falls_back_to_the_correction(store: SessionStore) -> None:
    australia(store)
    model = ScriptedChatModel(script=[reply(score=1, correction="Canberra")])
    result = store.process_feedback(
        "s1", "No, it's Canberra", user="alice", model=model, corrected_answer=True
    )
    assert result.corrected_answer == "Canberra"


def test_listeners_hear_of_the_change(store: SessionStore) -> None:
    australia(store)
    heard: list[SessionQAEntry] = []
    store.add_listener(heard.append)
    model = ScriptedChatModel(script=[reply(score=1, correction="Canberra")])
    result = store.process_feedback("s1", "Canberra!", user="alice", model=model)
    assert heard == [result.entry]


def test_the_model_call_is_tagged(store: SessionStore) -> None:
    australia(store)
    seen: list[tuple[list[str], str | None]] = []

    class Spy(BaseCallbackHandler):
        def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
            seen.append((kwargs.get("tags") or [], kwargs.get("name")))

    model = ScriptedChatModel(script=[reply(score=4)]).with_config(callbacks=[Spy()])
    assert store.process_feedback("s1", "good", user="alice", model=model).applied
    ((tags, name),) = seen
    assert set(TAGS) <= set(tags) and "nostream" in tags
    assert name == "feedback_plugin.interpret_feedback"


# -- the reply refused: nothing changes ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "why", "understood"),
    [
        ("Sure! The user is unhappy.", "is not JSON", False),
        ("[1, 2]", "is not a JSON object", False),
        ('{"score": 4} and more', "is not JSON", False),
        (reply(turn=7, score=1), "turn 7, but the turns shown are 1 to 1", False),
        (reply(turn=0, score=1), "turn 0", False),
        (reply(turn="no-such-turn", score=1), "'no-such-turn', which is not one of", False),
        (reply(score=9), "got 9", True),
        (reply(score=0), "got 0", True),
        (reply(score="4"), "score: Input should be a valid integer", False),
        (reply(score=4.0), "score: Input should be a valid integer", False),
        (reply(score=True), "score: Input should be a valid integer", False),
        (reply(thumbs="sideways"), "thumbs:", False),
        (reply(is_feedback="yes"), "is_feedback:", False),
        (reply(score=5, thumbs="down"), "score 5 and thumbs 'down' disagree", True),
        (reply(is_feedback=False), "no feedback", False),
    ],
)
def test_a_bad_reply_changes_nothing(
    store: SessionStore, text: str, why: str, understood: bool
) -> None:
    turn = australia(store)
    before = store.get_session("s1", user="alice")
    heard: list[SessionQAEntry] = []
    store.add_listener(heard.append)
    result = store.process_feedback(
        "s1", "wrong!", user="alice", model=ScriptedChatModel(script=[text])
    )
    assert not result.applied
    assert why in result.reason, result.reason
    assert result.model_reply == text
    assert (result.entry, result.feedback_score, result.correction) == (None, None, None)
    assert (result.remembered, result.recorded_at) == (False, None)
    assert unchanged(store, before) and heard == []
    assert result.qa_id == (turn.qa_id if understood else None)  # the turn, when understood


@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_a_bad_reply_changes_nothing_on_servers(kind: str, tmp_path: Path) -> None:
    s = _open(kind, tmp_path)
    try:
        australia(s)
        before = s.get_session("s1", user="alice")
        for text in ("not json", reply(turn=3), reply(score=9)):
            result = s.process_feedback(
                "s1", "wrong", user="alice", model=ScriptedChatModel(script=[text])
            )
            assert not result.applied and result.reason
        assert unchanged(s, before)
    finally:
        s.backend.drop()  # type: ignore[attr-defined]
        s.close()


def test_a_reply_that_is_not_text(store: SessionStore) -> None:
    from langchain_core.runnables import RunnableLambda

    australia(store)
    result = store.process_feedback(
        "s1", "wrong", user="alice", model=RunnableLambda(lambda _: {"score": 1})
    )
    assert not result.applied and "not text (dict)" in result.reason


def test_a_plain_string_runnable_is_a_model_too(store: SessionStore) -> None:
    from langchain_core.runnables import RunnableLambda

    australia(store)
    model = RunnableLambda(lambda _: reply(score=2))
    assert store.process_feedback("s1", "meh", user="alice", model=model).applied


def test_a_failing_model_raises_and_changes_nothing(store: SessionStore) -> None:
    australia(store)
    before = store.get_session("s1", user="alice")
    with pytest.raises(ConnectionError, match="provider unavailable"):
        store.process_feedback("s1", "wrong", user="alice", model=FailingModel())
    assert unchanged(store, before)


# -- arguments and empty sessions -----------------------------------------------------------------


def test_an_empty_session_is_applied_false_without_a_model_call(store: SessionStore) -> None:
    model = ScriptedChatModel(script=[reply(score=1)])
    result = store.process_feedback("nothing-here", "wrong", user="alice", model=model)
    assert not result.applied and "no turns in session 'nothing-here'" in result.reason
    assert model.calls == [] and result.model_reply is None


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"feedback_content": "   "}, InvalidFeedbackError),
        ({"feedback_content": ""}, InvalidFeedbackError),
        ({"feedback_content": None}, InvalidFeedbackError),
        ({"model": "gpt-4o"}, ArgumentTypeError),
        ({"corrected_answer": "yes"}, ArgumentTypeError),
        ({"detect": 1}, ArgumentTypeError),
        ({"session_id": ""}, InvalidIdError),
        ({"user": ""}, InvalidIdError),
    ],
)
def test_bad_arguments_raise_before_anything(
    store: SessionStore, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    australia(store)
    model = ScriptedChatModel(script=[reply(score=1)])
    call: dict[str, Any] = {
        "session_id": "s1",
        "feedback_content": "wrong",
        "user": "alice",
        "model": model,
        **kwargs,
    }
    session_id, content = call.pop("session_id"), call.pop("feedback_content")
    with pytest.raises(error):
        store.process_feedback(session_id, content, **call)
    with pytest.raises(error):
        store.submit_feedback(session_id, content, **call)
    assert model.calls == []


def test_another_users_session_is_not_seen(store: SessionStore) -> None:
    australia(store, user="alice")
    before = store.get_session("s1", user="alice")
    model = ScriptedChatModel(script=[reply(score=1, correction="Canberra")])
    result = store.process_feedback("s1", "No, Canberra", user="bob", model=model)
    assert not result.applied and "no turns" in result.reason and model.calls == []
    assert unchanged(store, before)


# -- async -------------------------------------------------------------------------------------


async def test_aprocess_feedback(any_store: SessionStore) -> None:
    first, *_ = three_turns(any_store)
    model = ScriptedChatModel(script=[reply(turn=first.qa_id, score=1, correction="Paris")])
    result = await any_store.aprocess_feedback(
        "s1", "The first one is Paris", user="alice", model=model, corrected_answer=True
    )
    assert result.applied and result.qa_id == first.qa_id
    assert result.correction == result.corrected_answer == "Paris"
    stored = await any_store.aget_entry("s1", first.qa_id, user="alice")
    assert stored == result.entry and stored is not None and stored.correction == "Paris"


async def test_aprocess_feedback_refusals(store: SessionStore) -> None:
    australia(store)
    before = store.get_session("s1", user="alice")
    bad = await store.aprocess_feedback(
        "s1", "x", user="alice", model=ScriptedChatModel(script=[reply(score=9)])
    )
    empty = await store.aprocess_feedback(
        "s1", "x", user="bob", model=ScriptedChatModel(script=[reply(score=1)])
    )
    assert not bad.applied and "got 9" in bad.reason
    assert not empty.applied and "no turns" in empty.reason
    with pytest.raises(ConnectionError):
        await store.aprocess_feedback("s1", "x", user="alice", model=FailingModel())
    with pytest.raises(InvalidFeedbackError):
        await store.aprocess_feedback("s1", " ", user="alice", model=FailingModel())
    assert unchanged(store, before)


# -- background tasks ----------------------------------------------------------------------------


def wait_for(store: SessionStore, task_id: str, user: str | None = "alice") -> FeedbackTask:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        task = store.feedback_task(task_id, user=user)
        assert task is not None
        if task.status in ("done", "failed"):
            return task
        time.sleep(0.02)
    raise AssertionError(f"task {task_id} did not finish")


def test_submit_then_poll_until_done(any_store: SessionStore) -> None:
    turn = australia(any_store)
    model = ScriptedChatModel(script=[reply(score=1, correction="Canberra")])
    task_id = any_store.submit_feedback("s1", "No, Canberra", user="alice", model=model)
    assert isinstance(task_id, str) and task_id
    task = wait_for(any_store, task_id)
    assert task.status == "done" and task.error is None
    assert task.task_id == task_id and task.session_id == "s1"
    assert isinstance(task.result, FeedbackResult) and task.result.applied
    assert task.finished_at is not None and task.finished_at >= task.submitted_at
    stored = any_store.get_entry("s1", turn.qa_id, user="alice")
    assert stored is not None and stored.correction == "Canberra"


def test_a_task_that_refuses_is_done_with_the_reason(store: SessionStore) -> None:
    australia(store)
    model = ScriptedChatModel(script=["not json"])
    task = wait_for(store, store.submit_feedback("s1", "hmm", user="alice", model=model))
    assert task.status == "done" and task.result is not None
    assert not task.result.applied and "not JSON" in task.result.reason


def test_a_failing_model_fails_the_task(store: SessionStore) -> None:
    australia(store)
    before = store.get_session("s1", user="alice")
    task = wait_for(store, store.submit_feedback("s1", "hmm", user="alice", model=FailingModel()))
    assert task.status == "failed" and task.result is None
    assert task.error == "ConnectionError: model provider unavailable"
    assert unchanged(store, before)
    # the workers live on
    ok = ScriptedChatModel(script=[reply(score=4)])
    assert wait_for(store, store.submit_feedback("s1", "ok", user="alice", model=ok)).result


def test_a_task_is_pending_then_running(store: SessionStore) -> None:
    australia(store)
    gate = threading.Event()
    started: list[bool] = []

    def slow(messages: list[BaseMessage]) -> str:
        started.append(True)
        while not gate.is_set():
            time.sleep(0.01)
        return reply(score=4)

    task_id = store.submit_feedback(
        "s1", "fine", user="alice", model=ScriptedChatModel(script=[slow])
    )
    task = store.feedback_task(task_id, user="alice")
    assert task is not None and task.status in ("pending", "running")
    deadline = time.monotonic() + 10
    while not started and time.monotonic() < deadline:
        time.sleep(0.01)
    running = store.feedback_task(task_id, user="alice")
    assert running is not None and running.status == "running" and running.result is None
    gate.set()
    assert wait_for(store, task_id).status == "done"


def test_a_task_is_only_visible_to_its_user(store: SessionStore) -> None:
    australia(store, user="alice")
    australia(store, user=None)
    model = ScriptedChatModel(script=[reply(score=4)], cycle=True)
    task_id = store.submit_feedback("s1", "good", user="alice", model=model)
    wait_for(store, task_id)
    assert store.feedback_task(task_id, user="bob") is None
    assert store.feedback_task(task_id) is None  # no user is not alice
    assert store.feedback_task(str(uuid.uuid4()), user="alice") is None
    anonymous = store.submit_feedback("s1", "good", model=model)
    assert wait_for(store, anonymous, user=None).status == "done"
    assert store.feedback_task(anonymous, user="alice") is None
    with pytest.raises(InvalidIdError):
        store.feedback_task("", user="alice")


def test_tasks_belong_to_their_store(store: SessionStore, tmp_path: Path) -> None:
    australia(store)
    task_id = store.submit_feedback(
        "s1", "good", user="alice", model=ScriptedChatModel(script=[reply(score=4)])
    )
    wait_for(store, task_id)
    with SessionStore(tmp_path / "store") as other:
        assert other.feedback_task(task_id, user="alice") is None


def test_only_the_newest_finished_tasks_are_kept() -> None:
    board = TaskBoard(max_finished=3)
    done = FeedbackResult(applied=False, reason="test", session_id="s")
    ids = [board.submit("alice", "s", lambda: done) for _ in range(5)]

    def settled() -> bool:
        tasks = [board.get(i, "alice") for i in ids]
        kept = [t for t in tasks if t is not None]
        return len(kept) == 3 and all(t.status == "done" for t in kept)

    deadline = time.monotonic() + 10
    while not settled() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert settled() and len(board) == 3


# -- detect=True: the words may not be feedback ---------------------------------------------------


def test_detect_needs_the_model_to_say_is_feedback(store: SessionStore) -> None:
    australia(store)
    before = store.get_session("s1", user="alice")
    silent = ScriptedChatModel(script=[reply(score=1)])
    result = store.process_feedback(
        "s1", "And New Zealand?", user="alice", model=silent, detect=True
    )
    assert not result.applied and "does not say is_feedback" in result.reason
    assert "most such messages are not feedback" in str(silent.calls[0][0].content)
    no = ScriptedChatModel(script=[reply(is_feedback=False)])
    result = store.process_feedback("s1", "And New Zealand?", user="alice", model=no, detect=True)
    assert not result.applied and result.is_feedback is False
    assert unchanged(store, before)
    yes = ScriptedChatModel(script=[reply(is_feedback=True, score=1, correction="Canberra")])
    result = store.process_feedback("s1", "No, Canberra.", user="alice", model=yes, detect=True)
    assert result.applied and result.correction == "Canberra"


def test_without_detect_a_missing_is_feedback_counts_as_feedback(store: SessionStore) -> None:
    australia(store)
    model = ScriptedChatModel(script=[reply(score=2)])
    result = store.process_feedback("s1", "meh", user="alice", model=model)
    assert result.applied and result.is_feedback is True
    assert "most such messages" not in str(model.calls[0][0].content)


def test_enable_does_not_record_the_interpretation_call(store: SessionStore) -> None:
    import feedback_plugin

    australia(store)
    feedback_plugin.enable(store, session_id="everything")
    try:
        model = ScriptedChatModel(script=[reply(score=1, correction="Canberra")])
        assert store.process_feedback("s1", "No, Canberra", user="alice", model=model).applied
    finally:
        feedback_plugin.disable()
    store.flush()
    assert store.get_session("everything") == []
