"""The Gradio adapter, driven by real ``gr.LikeData`` objects and a real ``gr.Blocks`` app."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any

import pytest

gr = pytest.importorskip("gradio")

from gradio.state_holder import SessionState  # noqa: E402

from feedback_plugin import InvalidFeedbackError, SessionStore  # noqa: E402
from feedback_plugin.integrations.gradio_feedback import (  # noqa: E402
    ChatTurns,
    like_handler,
    record_like,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def like(index: Any, liked: Any = True, value: Any = None, target: Any = None) -> Any:
    """A ``gr.LikeData`` as Gradio builds it from the browser's event payload."""
    data: dict[str, Any] = {"index": index, "value": value or [{"type": "text", "text": "a"}]}
    if liked is not ...:
        data["liked"] = liked
    return gr.LikeData(target, data)


def _turn(store: SessionStore, session_id: str = "s1", user: str | None = None) -> str:
    return store.record(session_id, "q?", "a.", user=user).qa_id


def _rating(store: SessionStore, qa_id: str, session_id: str = "s1", user: str | None = None):
    entry = store.get_entry(session_id, qa_id, user=user)
    assert entry is not None
    return entry.feedback_score, entry.feedback_text


# -- LikeData.liked -> the store ----------------------------------------------------------


def test_like_dislike_and_undo(store: SessionStore) -> None:
    qa_id = _turn(store)
    on_like = like_handler(store)
    turns = ChatTurns("s1", qa_ids={1: qa_id})

    on_like(like(1, True), turns)
    assert _rating(store, qa_id) == (5, None)
    on_like(like(1, False), turns)
    assert _rating(store, qa_id) == (1, None)
    on_like(like(1, ""), turns)  # clicking the selected thumb again sends liked=""
    assert _rating(store, qa_id) == (None, None)
    assert store.get_entry("s1", qa_id) is not None


def test_likedata_without_liked_means_like(store: SessionStore) -> None:
    qa_id = _turn(store)
    data = like(1, ...)
    assert data.liked is True  # Gradio's own default
    like_handler(store)(data, ChatTurns("s1", qa_ids={1: qa_id}))
    assert _rating(store, qa_id) == (5, None)


def test_custom_feedback_option_is_stored_as_comment(store: SessionStore) -> None:
    qa_id = _turn(store)
    on_like = like_handler(store)
    turns = ChatTurns("s1", qa_ids={1: qa_id})
    on_like(like(1, True), turns)
    on_like(like(1, "Inaccurate"), turns)
    assert _rating(store, qa_id) == (5, "Inaccurate")


def test_each_position_rates_its_own_turn(store: SessionStore) -> None:
    first, second = _turn(store), _turn(store)
    turns = ChatTurns("s1")
    turns.add(1, first)
    turns.add(3, second)
    on_like = like_handler(store)
    on_like(like(3, False), turns)
    assert _rating(store, second) == (1, None)
    assert _rating(store, first) == (None, None)
    on_like(like(1, True), turns)
    assert _rating(store, first) == (5, None)


def test_unmapped_position_stores_nothing_and_does_not_raise(
    store: SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    qa_id = _turn(store)
    turns = ChatTurns("s1", qa_ids={1: qa_id})
    with caplog.at_level(logging.WARNING, logger="feedback_plugin"):
        like_handler(store)(like(0, True), turns)  # the user's own message
        like_handler(store)(like(7, True), turns)
        like_handler(store)(like(1, True))  # no state wired in
    assert _rating(store, qa_id) == (None, None)
    assert "no turn known at chat position" in caplog.text


def test_unknown_turn_is_logged_not_raised(
    store: SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="feedback_plugin"):
        like_handler(store)(like(1, True), ChatTurns("s1", qa_ids={1: "gone"}))
    assert "not stored" in caplog.text


def test_user_scoping(store: SessionStore) -> None:
    qa_id = _turn(store, user="alice")
    like_handler(store)(like(1, True), ChatTurns("s1", user="bob", qa_ids={1: qa_id}))
    assert _rating(store, qa_id, user="alice") == (None, None)
    like_handler(store)(like(1, True), ChatTurns("s1", user="alice", qa_ids={1: qa_id}))
    assert _rating(store, qa_id, user="alice") == (5, None)
    # the handler's user is used when the state names none
    like_handler(store, user="alice")(like(1, False), ChatTurns("s1", qa_ids={1: qa_id}))
    assert _rating(store, qa_id, user="alice") == (1, None)


def test_plain_dict_and_list_states_need_a_session_id(store: SessionStore) -> None:
    qa_id = _turn(store)
    like_handler(store)(like(1, True), {1: qa_id})  # no session: nothing to rate
    assert _rating(store, qa_id) == (None, None)
    like_handler(store, session_id="s1")(like(1, True), {1: qa_id})
    assert _rating(store, qa_id) == (5, None)
    like_handler(store, session_id="s1")(like(1, False), [None, qa_id])
    assert _rating(store, qa_id) == (1, None)
    like_handler(store, session_id="s1")(like(5, False), [None, qa_id])  # out of range
    assert _rating(store, qa_id) == (1, None)


def test_two_dimensional_index_uses_the_row(store: SessionStore) -> None:
    qa_id = _turn(store)
    like_handler(store)(like([2, 1], True), ChatTurns("s1", qa_ids={2: qa_id}))
    assert _rating(store, qa_id) == (5, None)


def test_record_like_refuses_non_gradio_values(store: SessionStore) -> None:
    qa_id = _turn(store)
    record_like(store, "s1", qa_id, True)
    for bad in (1, 0, 1.0, ["Like"]):
        with pytest.raises(InvalidFeedbackError):
            record_like(store, "s1", qa_id, bad)  # type: ignore[arg-type]
    assert _rating(store, qa_id) == (5, None)
    assert record_like(store, "s1", qa_id, None) is True
    assert _rating(store, qa_id) == (None, None)


def test_chat_turns() -> None:
    a, b = ChatTurns(), ChatTurns()
    assert a.session_id != b.session_id
    a.add(1, "q1")
    a.add(3, "q3")
    assert a.qa_id_at(1) == "q1" and a.qa_id_at((3, 0)) == "q3" and a.qa_id_at(2) is None
    a.forget_after(2)
    assert a.qa_ids == {1: "q1"}
    with pytest.raises(ValueError):
        a.add(-1, "x")
    with pytest.raises(ValueError):
        a.add(2, "")
    with pytest.raises(ValueError):
        ChatTurns("")
    assert ChatTurns("s", qa_ids={1: "x"}) == ChatTurns("s", qa_ids={1: "x"})


# -- through Gradio's own event processing -------------------------------------------------


def _fn(demo: Any, name: str) -> Any:
    return next(f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == name)


def test_wired_into_blocks_gradio_injects_likedata(store: SessionStore) -> None:
    """Gradio's processing finds the ``gr.LikeData`` parameter by its annotation."""
    qa_id = _turn(store)
    with gr.Blocks() as demo:
        chatbot = gr.Chatbot()
        turns = gr.State(ChatTurns)
        chatbot.like(like_handler(store), inputs=turns)
    state = SessionState(demo)
    state[turns._id] = ChatTurns("s1", qa_ids={1: qa_id})
    block_fn = _fn(demo, "feedback_like")
    event = gr.LikeData(chatbot, {"index": 1, "value": ["a."], "liked": False})
    asyncio.run(demo.process_api(block_fn=block_fn, inputs=[None], state=state, event_data=event))
    assert _rating(store, qa_id) == (1, None)


def _load_example(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_example_app_records_and_rates_through_gradio(store: SessionStore) -> None:
    example = _load_example("gradio_app")
    demo = example.build_demo(store)
    state = SessionState(demo)
    turns_block = next(b for b in demo.blocks.values() if isinstance(b, gr.State))
    chatbot = next(b for b in demo.blocks.values() if isinstance(b, gr.Chatbot))
    state[turns_block._id] = ChatTurns("web-1")

    async def ask(question: str, history: list[Any]) -> list[Any]:
        out = await demo.process_api(
            block_fn=_fn(demo, "respond"), inputs=[question, history, None], state=state
        )
        return out["data"][1]  # the chatbot's new value, as sent to the browser

    async def click(index: int, liked: Any) -> None:
        event = gr.LikeData(chatbot, {"index": index, "value": [], "liked": liked})
        await demo.process_api(
            block_fn=_fn(demo, "feedback_like"), inputs=[None], state=state, event_data=event
        )

    async def scenario() -> None:
        history = await ask("How do I reset my password?", [])
        history = await ask("Can I export my notes as a PDF?", history)
        assert [m["role"] for m in history] == ["user", "assistant"] * 2
        await click(1, True)
        await click(3, False)
        await click(3, "")
        await click(3, False)

    asyncio.run(scenario())
    entries = store.get_session("web-1")
    assert [e.question for e in entries] == [
        "How do I reset my password?",
        "Can I export my notes as a PDF?",
    ]
    assert "Reset password" in entries[0].answer
    assert entries[0].context  # the retriever's documents were recorded
    assert [e.feedback_score for e in entries] == [5, 1]
    assert state[turns_block._id].qa_ids == {1: entries[0].qa_id, 3: entries[1].qa_id}
