"""FeedbackMiddleware(detect_feedback=model): feedback given in the chat is stored before
the agent answers it. Real ``create_agent`` agents, scripted chat models, real stores."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _fakes import ScriptedChatModel, tool_call
from _redis import REDIS_URL, require_redis
from langchain.agents import create_agent
from langchain_core.messages import BaseMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from feedback_plugin import ArgumentTypeError, SessionStore
from feedback_plugin.middleware import FeedbackMiddleware

QUESTION = "What is the capital of Australia?"
CANBERRA = json.dumps(
    {"is_feedback": True, "score": 1, "comment": "Wrong city.", "correction": "Canberra"}
)
NOT_FEEDBACK = json.dumps({"is_feedback": False})


@tool
def word_count(text: str) -> int:
    """Count the words of a text."""
    return len(text.split())


class FailingModel(ScriptedChatModel):
    """A detection model whose every call fails."""

    def _next(self, messages: list[BaseMessage]) -> Any:
        self._calls.append(list(messages))
        raise ConnectionError("model provider unavailable")


@pytest.fixture(params=["disk", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionStore]:
    if request.param == "disk":
        s = SessionStore(tmp_path / "store")
    else:
        require_redis()
        s = SessionStore(REDIS_URL, namespace=f"test-{uuid.uuid4().hex}")
    yield s
    if request.param == "redis":
        s.backend.drop()  # type: ignore[attr-defined]
    s.close()


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SessionStore]:
    s = SessionStore(tmp_path / "store")
    yield s
    s.close()


def cfg(thread: str = "t1", user: str = "alice") -> dict[str, Any]:
    return {"configurable": {"thread_id": thread, "user_id": user}}


def agent_with(store: SessionStore, model: ScriptedChatModel, **options: Any) -> Any:
    middleware = [FeedbackMiddleware(store, **options)]
    return create_agent(model, [word_count], middleware=middleware, checkpointer=InMemorySaver())


def ask(agent: Any, text: str, **config: Any) -> dict[str, Any]:
    result: dict[str, Any] = agent.invoke({"messages": [("user", text)]}, cfg(**config))
    return result


def test_a_correction_in_the_chat_is_stored_before_the_agent_answers(
    store: SessionStore,
) -> None:
    seen_when_answering: list[Any] = []

    def answer_after_feedback(messages: list[BaseMessage]) -> str:
        [first, *_] = store.get_session("t1", user="alice")
        seen_when_answering.append((first.correction, first.feedback_score))
        return "You're right, it is Canberra."

    detector = ScriptedChatModel(script=[CANBERRA])
    model = ScriptedChatModel(script=["Sydney.", answer_after_feedback])
    agent = agent_with(store, model, detect_feedback=detector)
    ask(agent, QUESTION)
    assert detector.calls == []  # the thread's first message follows no answer
    ask(agent, "No, it's Canberra.")
    assert seen_when_answering == [("Canberra", 1)]
    first, second = store.get_session("t1", user="alice")
    assert (first.question, first.answer, first.correction) == (QUESTION, "Sydney.", "Canberra")
    assert first.feedback_score == 1 and first.feedback_text == "Wrong city."
    assert first.remembered
    assert (second.question, second.answer) == (
        "No, it's Canberra.",
        "You're right, it is Canberra.",
    )
    assert second.feedback_score is None  # the feedback message's own turn is not rated
    [(system, human)] = detector.calls
    assert "Sydney." in str(human.content) and "No, it's Canberra." in str(human.content)
    assert "most such messages are not feedback" in str(system.content)  # detect=True


def test_the_correction_reaches_the_same_turns_memory(disk: SessionStore) -> None:
    detector = ScriptedChatModel(script=[CANBERRA])
    model = ScriptedChatModel(script=["Sydney.", "Canberra, yes."])
    agent = agent_with(disk, model, detect_feedback=detector)
    ask(agent, QUESTION)
    ask(agent, "No, the capital of Australia is Canberra.")
    assert "Answer: Canberra" in model.system_prompts()[1]  # shown as the liked answer


def test_a_message_that_is_not_feedback_changes_nothing(store: SessionStore) -> None:
    detector = ScriptedChatModel(script=[NOT_FEEDBACK])
    model = ScriptedChatModel(script=["Sydney.", "Wellington."])
    agent = agent_with(store, model, detect_feedback=detector)
    ask(agent, QUESTION)
    before = store.get_session("t1", user="alice")
    ask(agent, "And of New Zealand?")
    first, second = store.get_session("t1", user="alice")
    assert first == before[0] and first.feedback_score is None and first.correction is None
    assert second.answer == "Wellington." and len(detector.calls) == 1


@pytest.mark.parametrize(
    "detector",
    [
        FailingModel(),
        ScriptedChatModel(script=["I think the user is unhappy."]),
        ScriptedChatModel(script=[json.dumps({"is_feedback": True, "score": 9})]),
        ScriptedChatModel(script=[json.dumps({"score": 1})]),  # is_feedback not said
    ],
    ids=["model-fails", "not-json", "score-9", "no-is_feedback"],
)
def test_a_failing_or_confused_detector_never_breaks_the_agent(
    disk: SessionStore, detector: ScriptedChatModel, caplog: pytest.LogCaptureFixture
) -> None:
    model = ScriptedChatModel(script=["Sydney.", "Canberra."])
    agent = agent_with(disk, model, detect_feedback=detector)
    ask(agent, QUESTION)
    with caplog.at_level(logging.DEBUG, logger="feedback_plugin"):
        result = ask(agent, "No, it's Canberra.")
    assert result["messages"][-1].text == "Canberra."
    first, second = disk.get_session("t1", user="alice")
    assert (first.feedback_score, first.correction, first.feedback_text) == (None, None, None)
    assert second.answer == "Canberra."
    if isinstance(detector, FailingModel):
        assert "feedback detection failed" in caplog.text
        assert "provider unavailable" in caplog.text
    else:
        assert "no feedback stored" in caplog.text


def test_detection_runs_once_per_turn_at_its_first_model_call(disk: SessionStore) -> None:
    detector = ScriptedChatModel(script=[NOT_FEEDBACK, CANBERRA])
    model = ScriptedChatModel(
        script=[
            "Sydney.",
            tool_call("word_count", {"text": "a b"}),  # a turn of two model calls
            "Two words.",
            "Noted: Canberra.",
        ]
    )
    agent = agent_with(disk, model, detect_feedback=detector)
    ask(agent, QUESTION)
    ask(agent, "How many words in 'a b'?")
    assert len(detector.calls) == 1  # not again for the call after the tool
    ask(agent, "By the way, the first answer was wrong: Canberra.")
    assert len(detector.calls) == 2
    # the reply names no turn: the newest answer before the message (the word count) is rated
    entries = disk.get_session("t1", user="alice")
    assert [e.correction for e in entries] == [None, "Canberra", None]


def test_feedback_about_an_earlier_turn_of_the_thread(disk: SessionStore) -> None:
    about_first = json.dumps({"is_feedback": True, "turn": 1, "score": 1, "correction": "Canberra"})
    detector = ScriptedChatModel(script=[NOT_FEEDBACK, about_first])
    model = ScriptedChatModel(script=["Sydney.", "Wellington.", "Noted."])
    agent = agent_with(disk, model, detect_feedback=detector)
    ask(agent, QUESTION)
    ask(agent, "And of New Zealand?")
    ask(agent, "Your first answer was wrong, it's Canberra.")
    first, second, _ = disk.get_session("t1", user="alice")
    assert first.correction == "Canberra" and first.feedback_score == 1
    assert second.feedback_score is None and second.correction is None


def test_detection_is_scoped_to_the_threads_user(disk: SessionStore) -> None:
    detector = ScriptedChatModel(script=[CANBERRA], cycle=True)
    model = ScriptedChatModel(script=["Sydney."], cycle=True)
    agent = agent_with(disk, model, detect_feedback=detector)
    ask(agent, QUESTION, user="alice")
    bob_turn = disk.record("t1", QUESTION, "Sydney.", user="bob", wait=True)
    ask(agent, "No, it's Canberra.", user="alice")
    [alice_first, _] = disk.get_session("t1", user="alice")
    assert alice_first.correction == "Canberra"
    assert disk.get_entry("t1", bob_turn.qa_id, user="bob") == bob_turn  # untouched


def test_the_stream_tells_the_feedback_and_hides_the_detectors_tokens(
    disk: SessionStore,
) -> None:
    detector = ScriptedChatModel(script=[CANBERRA])
    model = ScriptedChatModel(script=["Sydney.", "Canberra, noted."])
    agent = agent_with(disk, model, detect_feedback=detector)
    ask(agent, QUESTION)
    chunks = list(
        agent.stream(
            {"messages": [("user", "No, it's Canberra.")]},
            cfg(),
            stream_mode=["custom", "messages"],
        )
    )
    custom = [data for mode, data in chunks if mode == "custom"]
    streamed = "".join(str(msg.content) for mode, (msg, _) in _messages(chunks))
    [told] = [c["feedback_result"] for c in custom if "feedback_result" in c]
    first = disk.get_session("t1", user="alice")[0]
    assert told["applied"] is True and told["qa_id"] == first.qa_id
    assert told["correction"] == "Canberra" and "entry" not in told
    assert "is_feedback" not in streamed and "Canberra, noted." in streamed


def _messages(chunks: list[Any]) -> list[Any]:
    return [(mode, data) for mode, data in chunks if mode == "messages"]


async def test_async_agents_detect_feedback(store: SessionStore) -> None:
    detector = ScriptedChatModel(script=[CANBERRA])
    model = ScriptedChatModel(script=["Sydney.", "Canberra."])
    agent = agent_with(store, model, detect_feedback=detector)
    await agent.ainvoke({"messages": [("user", QUESTION)]}, cfg())
    await agent.ainvoke({"messages": [("user", "No, it's Canberra.")]}, cfg())
    first, _ = store.get_session("t1", user="alice")
    assert first.correction == "Canberra" and first.feedback_score == 1


def test_detection_is_off_by_default(disk: SessionStore) -> None:
    model = ScriptedChatModel(script=["Sydney.", "Canberra."])
    agent = agent_with(disk, model)
    ask(agent, QUESTION)
    ask(agent, "No, it's Canberra.")
    first, _ = disk.get_session("t1", user="alice")
    assert first.correction is None and first.feedback_score is None
    assert FeedbackMiddleware(disk).detect_feedback is None


def test_detect_feedback_must_be_a_model(disk: SessionStore) -> None:
    with pytest.raises(ArgumentTypeError, match="detect_feedback"):
        FeedbackMiddleware(disk, detect_feedback="gpt-4o")  # type: ignore[arg-type]
