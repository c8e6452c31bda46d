"""FeedbackMiddleware on real ``create_agent`` agents with a scripted chat model."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _fakes import ScriptedChatModel, tool_call
from _redis import REDIS_URL, require_redis
from langchain.agents import create_agent
from langchain.agents.middleware import HumanInTheLoopMiddleware
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.tools import create_retriever_tool, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from feedback_plugin import FeedbackCallbackHandler, SessionStore
from feedback_plugin.backends.base import MemorySearch
from feedback_plugin.middleware import FeedbackMiddleware

ARTICLES = [Document(page_content="Reset your password from Settings > Security.")]


class Articles(BaseRetriever):
    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return list(ARTICLES)


help_centre = create_retriever_tool(Articles(), "help_centre", "Search the help centre.")


@tool
def word_count(text: str) -> int:
    """Count the words of a text."""
    return len(text.split())


class CountingStore(SessionStore):
    """A real store that counts the memory queries made through it."""

    memory_queries = 0

    @property
    def memory(self) -> MemorySearch:  # each memory query takes the store's memory once
        self.memory_queries += 1
        return super().memory


@pytest.fixture(params=["disk", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CountingStore]:
    if request.param == "disk":
        s = CountingStore(tmp_path / "store")
    else:
        require_redis()
        s = CountingStore(REDIS_URL, namespace=f"test-{uuid.uuid4().hex}")
    yield s
    if request.param == "redis":
        s.backend.drop()  # type: ignore[attr-defined]
    s.close()


def cfg(thread: str = "t1", user: str | None = "alice", **extra: Any) -> dict[str, Any]:
    configurable: dict[str, Any] = {"thread_id": thread}
    if user is not None:
        configurable["user_id"] = user
    return {"configurable": configurable, **extra}


def agent_with(store: SessionStore, model: ScriptedChatModel, **options: Any) -> Any:
    middleware = [FeedbackMiddleware(store, **options)]
    return create_agent(
        model, [help_centre, word_count], middleware=middleware, checkpointer=InMemorySaver()
    )


def liked_turn(store: SessionStore, question: str, answer: str, *, user: str = "alice") -> str:
    entry = store.record("old", question, answer, user=user, wait=True)
    assert store.thumbs("old", entry.qa_id, up=True, user=user)
    return entry.qa_id


# -- recording --------------------------------------------------------------------------------


def test_every_tool_call_of_the_turn_adds_its_documents(store: CountingStore) -> None:
    """The turn's documents are gathered (the state key's reducer), not replaced per tool call."""
    prices = [Document(page_content="Pro costs 5 a month.")]

    class Prices(BaseRetriever):
        def _get_relevant_documents(
            self, query: str, *, run_manager: CallbackManagerForRetrieverRun
        ) -> list[Document]:
            return list(prices)

    pricing = create_retriever_tool(Prices(), "pricing", "Look up prices.")
    model = ScriptedChatModel(
        script=[
            tool_call("help_centre", {"query": "password"}),
            tool_call("pricing", {"query": "pro"}),
            "Settings > Security; Pro is 5 a month.",
            tool_call("pricing", {"query": "pro"}),
            "5 a month.",
        ]
    )
    middleware = [FeedbackMiddleware(store, memory=False)]
    agent = create_agent(
        model, [help_centre, pricing], middleware=middleware, checkpointer=InMemorySaver()
    )
    agent.invoke({"messages": [("user", "Password, and the price of Pro?")]}, cfg())
    agent.invoke({"messages": [("user", "And Pro again?")]}, cfg())
    first, second = store.get_session("t1", user="alice")
    assert first.context == [ARTICLES[0].page_content, prices[0].page_content]
    assert second.context == [prices[0].page_content]  # a new turn starts afresh


def test_one_turn_per_agent_turn_with_the_callers_run_id(store: CountingStore) -> None:
    model = ScriptedChatModel(
        script=[tool_call("help_centre", {"query": "password"}), "Settings > Security.", "Hi!"]
    )
    agent = agent_with(store, model, memory=False)
    run_id = uuid.uuid4()
    result = agent.invoke(
        {"messages": [("user", "How do I reset my password?")]}, cfg(run_id=run_id)
    )
    assert result["feedback_qa_id"] == str(run_id)
    agent.invoke({"messages": [("user", "hello")]}, cfg())
    first, second = store.get_session("t1", user="alice")
    assert (first.qa_id, first.question, first.answer) == (
        str(run_id),
        "How do I reset my password?",
        "Settings > Security.",
    )
    assert first.context == [ARTICLES[0].page_content]  # a plain retriever tool's documents
    assert (second.question, second.answer, second.context) == ("hello", "Hi!", [])
    assert store.get_session("t1") == []  # alice's, not everyone's


def test_the_qa_id_reaches_a_streaming_ui_before_the_first_token(store: CountingStore) -> None:
    agent = agent_with(store, ScriptedChatModel(script=["Use the reset link."]), memory=False)
    chunks = list(
        agent.stream({"messages": [("user", "reset?")]}, cfg(), stream_mode=["messages", "custom"])
    )
    kinds = [mode for mode, _ in chunks]
    assert kinds[0] == "custom" and "messages" in kinds
    qa_id = chunks[0][1]["feedback_qa_id"]
    [entry] = store.get_session("t1", user="alice")
    assert (entry.qa_id, entry.answer) == (qa_id, "Use the reset link.")


async def test_async_agents_record_and_stream(store: CountingStore) -> None:
    agent = agent_with(store, ScriptedChatModel(script=["One.", "Two."]), memory=True)
    result = await agent.ainvoke({"messages": [("user", "first?")]}, cfg())
    seen = [
        chunk
        async for chunk in agent.astream(
            {"messages": [("user", "second?")]}, cfg(), stream_mode=["custom", "messages"]
        )
    ]
    assert seen[0][0] == "custom"
    entries = store.get_session("t1", user="alice")
    assert [(e.question, e.answer) for e in entries] == [("first?", "One."), ("second?", "Two.")]
    assert entries[0].qa_id == result["feedback_qa_id"]


def test_with_the_callback_handler_too_a_turn_is_recorded_once(store: CountingStore) -> None:
    agent = agent_with(store, ScriptedChatModel(script=["Answer."]), memory=False)
    agent.invoke({"messages": [("user", "q?")]}, cfg(callbacks=[FeedbackCallbackHandler(store)]))
    assert [e.answer for e in store.get_session("t1", user="alice")] == ["Answer."]


def test_an_interrupted_turn_is_one_turn_with_its_first_run_id(store: CountingStore) -> None:
    model = ScriptedChatModel(
        script=[
            tool_call("help_centre", {"query": "password"}),
            tool_call("word_count", {"text": "a b"}),
            "Done: two words.",
        ]
    )
    agent = create_agent(
        model,
        [help_centre, word_count],
        middleware=[
            FeedbackMiddleware(store, memory=False),
            HumanInTheLoopMiddleware(interrupt_on={"word_count": True}),
        ],
        checkpointer=InMemorySaver(),
    )
    first_run = uuid.uuid4()
    paused = agent.invoke({"messages": [("user", "count?")]}, cfg(run_id=first_run))
    assert "__interrupt__" in paused
    assert store.get_session("t1", user="alice") == []
    agent.invoke(Command(resume={"decisions": [{"type": "approve"}]}), cfg())
    [entry] = store.get_session("t1", user="alice")
    assert (entry.qa_id, entry.question, entry.answer) == (
        str(first_run),
        "count?",
        "Done: two words.",
    )
    assert entry.context == [ARTICLES[0].page_content]  # gathered before the pause


def test_a_failing_store_never_breaks_the_agent(tmp_path: Path) -> None:
    (tmp_path / "store").write_text("not a directory")  # every store call fails
    store = SessionStore(tmp_path / "store", write_behind=False)
    agent = agent_with(store, ScriptedChatModel(script=["Still answering."]))
    result = agent.invoke({"messages": [("user", "q?")]}, cfg())
    assert result["messages"][-1].text == "Still answering."


# -- memory -----------------------------------------------------------------------------------


def test_liked_turns_reach_the_system_message_of_every_model_call_of_the_turn(
    store: CountingStore,
) -> None:
    qa = liked_turn(store, "How do I reset my password?", "Use the emailed link.")
    liked_turn(store, "How do I reset my password?", "Bob's answer.", user="bob")
    model = ScriptedChatModel(
        script=[tool_call("word_count", {"text": "a"}), "Use the emailed link."]
    )
    agent = create_agent(
        model,
        [word_count],
        system_prompt="You are helpful.",
        middleware=[FeedbackMiddleware(store)],
        checkpointer=InMemorySaver(),
    )
    before = store.memory_queries
    result = agent.invoke({"messages": [("user", "password reset?")]}, cfg())
    assert store.memory_queries - before == 1  # one memory query per agent turn
    prompts = model.system_prompts()
    assert len(prompts) == 2
    for prompt in prompts:
        assert prompt.startswith("You are helpful.")
        assert "<liked_answers>" in prompt and f'qa_id="{qa}"' in prompt
        assert "Use the emailed link." in prompt and "Bob's answer." not in prompt
    # only for the call: never written into the conversation
    assert not any("liked_answers" in str(m.content) for m in result["messages"])


def test_a_turn_rated_down_or_memory_off_is_not_shown(store: CountingStore) -> None:
    qa = liked_turn(store, "How do I reset my password?", "Use the emailed link.")
    model = ScriptedChatModel(script=["a", "b", "c"])
    agent = agent_with(store, model)
    agent.invoke({"messages": [("user", "password reset?")]}, cfg("x"))
    assert "Use the emailed link." in model.system_prompts()[0]
    assert store.thumbs("old", qa, up=False, user="alice")
    agent.invoke({"messages": [("user", "password reset?")]}, cfg("y"))
    assert "Use the emailed link." not in model.system_prompts()[1]
    assert store.thumbs("old", qa, up=True, user="alice")
    agent_with(store, model, memory=False).invoke(
        {"messages": [("user", "password reset?")]}, cfg("z")
    )
    assert "liked_answers" not in model.system_prompts()[2]


def test_a_correction_is_the_answer_memory_shows(store: CountingStore) -> None:
    entry = store.record("old", "Where are invoices?", "In Settings.", user="alice", wait=True)
    assert store.add_feedback("old", entry.qa_id, correction="Billing > History.", user="alice")
    model = ScriptedChatModel(script=["ok"])
    agent_with(store, model).invoke({"messages": [("user", "invoices?")]}, cfg())
    [prompt] = model.system_prompts()
    assert "Answer: Billing > History." in prompt and "In Settings." not in prompt


@pytest.mark.parametrize("bad", [0, 9, True, 4.0])
def test_a_bad_min_score_names_min_score(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(ValueError, match="min_score"):
        FeedbackMiddleware(SessionStore(tmp_path / "store"), min_score=bad)


def test_the_recorded_turn_names_the_liked_turns_shown_to_the_model(
    store: CountingStore,
) -> None:
    """Attribution: ``memory_ids`` are the memories injected into this turn's model calls."""
    qa = liked_turn(store, "How do I reset my password?", "Use the emailed link.")
    liked_turn(store, "How do I reset my password?", "Bob's answer.", user="bob")
    model = ScriptedChatModel(
        script=[tool_call("word_count", {"text": "a"}), "Use the emailed link.", "Sunny."]
    )
    agent = agent_with(store, model)
    agent.invoke({"messages": [("user", "password reset?")]}, cfg())
    agent.invoke({"messages": [("user", "weather tomorrow?")]}, cfg())  # nothing matches
    first, second = store.get_session("t1", user="alice")
    assert (first.memory_ids, first.memory_sessions) == ([qa], {qa: "old"})
    assert f'qa_id="{qa}"' not in model.system_prompts()[2]
    assert (second.memory_ids, second.memory_sessions) == ([], {})  # not the last turn's
    # memory off: nothing shown, nothing named
    agent_with(store, ScriptedChatModel(script=["x"]), memory=False).invoke(
        {"messages": [("user", "password reset?")]}, cfg("t2")
    )
    [off] = store.get_session("t2", user="alice")
    assert off.memory_ids == []


def test_an_interrupted_turn_keeps_the_memories_it_was_shown(store: CountingStore) -> None:
    qa = liked_turn(store, "How many words?", "Count them with word_count.")
    model = ScriptedChatModel(script=[tool_call("word_count", {"text": "a b"}), "Two words."])
    agent = create_agent(
        model,
        [word_count],
        middleware=[
            FeedbackMiddleware(store),
            HumanInTheLoopMiddleware(interrupt_on={"word_count": True}),
        ],
        checkpointer=InMemorySaver(),
    )
    assert "__interrupt__" in agent.invoke({"messages": [("user", "how many words?")]}, cfg())
    agent.invoke(Command(resume={"decisions": [{"type": "approve"}]}), cfg())
    [entry] = store.get_session("t1", user="alice")
    assert (entry.answer, entry.memory_ids, entry.memory_sessions) == (
        "Two words.",
        [qa],
        {qa: "old"},
    )
