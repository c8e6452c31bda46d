"""The async half, on every backend: the store's ``a*`` methods, async memory and tools.

Each ``a*`` method must give what its sync twin gives (same entries, same
errors, same scoping), keep read-your-writes, lose nothing under concurrent
tasks, and fail the way the sync method fails when the store is down.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from feedback_plugin import (
    FeedbackToolkit,
    InvalidFeedbackError,
    InvalidIdError,
    PositiveMemoryRetriever,
    SessionStore,
    StoreError,
    TurnNotFoundError,
)
from feedback_plugin.memory import PositiveExampleSelector, asearch_memory, search_memory

from .conftest import Stores


async def test_the_async_methods_do_what_their_twins_do(backend_store: SessionStore) -> None:
    store = backend_store
    first = await store.arecord("s1", "How do I reset my password?", "Use the link.", user="al")
    second = await store.arecord("s1", "q2", "a2", user="al", wait=True)
    assert await store.aget_session("s1", user="al") == [first, second]
    assert await store.aget_session("s1", user="al") == store.get_session("s1", user="al")
    assert await store.aget_session("s1", user="al", last_n=1) == [second]
    assert await store.aget_session("s1", user="al", last_n=0) == []
    assert await store.aget_session("s1") == []  # another user's turns stay theirs
    assert await store.aget_entry("s1", first.qa_id, user="al") == first
    assert await store.aget_entry("s1", first.qa_id) is None
    assert await store.aget_many([("s1", second.qa_id), ("s1", "no")], user="al") == [second, None]
    assert await store.athumbs("s1", first.qa_id, True, user="al")
    rated = await store.arate("s1", second.qa_id, "ok", 4, user="al")
    assert rated.feedback_score == 4 and rated.feedback_text == "ok"
    assert store.get_entry("s1", second.qa_id, user="al") == rated
    with pytest.raises(TurnNotFoundError):
        await store.arate("s1", "no-such-turn", feedback_score=4, user="al")
    with pytest.raises(TurnNotFoundError):  # another user's turn is no turn of this one
        await store.arate("s1", second.qa_id, feedback_score=4, user="bo")
    assert await store.aadd_feedback("s1", first.qa_id, "great", user="al")
    assert (await store.aget_entry("s1", first.qa_id, user="al")).feedback_score == 5  # type: ignore[union-attr]
    assert (await store.aclear_rating("s1", second.qa_id, user="al")).feedback_score is None
    assert await store.adelete_feedback("s1", "no-such-turn", user="al") is False
    assert await store.adelete_feedback("s1", first.qa_id, user="al") is True
    assert await store.alist_sessions(user="al") == ["s1"]
    assert await store.alist_sessions() == []
    await store.aflush()
    assert await store.adelete_session("s1", user="al") == 2
    assert await store.aget_session("s1", user="al") == []
    await store.aclose()


async def test_bad_input_raises_before_anything_is_written(backend_store: SessionStore) -> None:
    store = backend_store
    turn = await store.arecord("s1", "q", "a", wait=True)
    with pytest.raises(InvalidFeedbackError):
        await store.aadd_feedback("s1", turn.qa_id, feedback_score=9)
    with pytest.raises(InvalidFeedbackError):
        await store.athumbs("s1", turn.qa_id, "yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidIdError):
        await store.arecord("", "q", "a")
    assert await store.aget_session("s1") == [turn]  # unchanged


async def test_a_queued_turn_is_read_back_at_once(stores: Stores) -> None:
    store = stores(flush_interval=60, flush_max_delay=60)  # the writer would wait a minute
    turn = await store.arecord("s1", "q", "a")
    assert store.pending == 1
    assert await store.aget_session("s1") == [turn]  # read-your-writes
    assert await store.aadd_feedback("s1", (await store.arecord("s1", "q2", "a2")).qa_id, "hi")


async def test_concurrent_tasks_lose_no_write(backend_store: SessionStore) -> None:
    store = backend_store
    turns = [await store.arecord("s1", f"q{i}", f"a{i}", wait=True) for i in range(20)]
    # Three fields of every turn set by three tasks at once: a lost read-modify-write
    # would drop one of them.
    await asyncio.gather(
        *(store.arate("s1", t.qa_id, feedback_score=4) for t in turns),
        *(store.arate("s1", t.qa_id, feedback_text=f"c{t.question}") for t in turns),
        *(store.arate("s1", t.qa_id, correction=f"r{t.question}") for t in turns),
        *(store.arecord("s2", f"q{i}", "a") for i in range(50)),
    )
    for entry in await store.aget_session("s1"):
        assert entry.feedback_score == 4
        assert entry.feedback_text == f"c{entry.question}"
        assert entry.correction == f"r{entry.question}"
    assert len(await store.aget_session("s2")) == 50


async def test_async_memory_matches_sync_memory_and_follows_feedback(
    backend_store: SessionStore,
) -> None:
    store = backend_store
    liked = store.record("s1", "How do I reset my password?", "Settings > Security.", user="al")
    other = store.record("s1", "How do I export notes?", "File > Export.", user="al")
    store.thumbs("s1", liked.qa_id, True, user="al")
    store.thumbs("s1", other.qa_id, True, user="al")
    query = "reset password"
    assert await asearch_memory(store, query, user="al") == search_memory(store, query, user="al")
    retriever = PositiveMemoryRetriever(store=store, user="al", k=1)
    docs = await retriever.ainvoke(query)
    assert [d.metadata["qa_id"] for d in docs] == [liked.qa_id]
    assert await PositiveMemoryRetriever(store=store, user="bo").ainvoke(query) == []
    selector = PositiveExampleSelector(store=store, user="al", k=1)
    assert await selector.aselect_examples({"question": query}) == [
        {"question": liked.question, "answer": liked.answer}
    ]
    await store.aclear_rating("s1", liked.qa_id, user="al")  # leaves memory at once
    docs = await retriever.ainvoke(query)
    assert liked.qa_id not in [d.metadata["qa_id"] for d in docs]


async def test_async_tools_rate_clear_and_search(backend_store: SessionStore) -> None:
    store = backend_store
    turn = store.record("s1", "How do I reset my password?", "Settings > Security.")
    add, clear, search = FeedbackToolkit(store=store, session_id="s1").get_tools()
    assert "saved" in await add.ainvoke({"feedback_score": 5})  # the newest turn
    assert store.get_entry("s1", turn.qa_id).feedback_score == 5  # type: ignore[union-attr]
    assert turn.qa_id in await search.ainvoke({"query": "password"})
    assert "cleared" in await clear.ainvoke({"qa_id": turn.qa_id})
    assert store.get_entry("s1", turn.qa_id).feedback_score is None  # type: ignore[union-attr]
    refused = await add.ainvoke({"qa_id": "no-such-turn", "feedback_score": 5})
    assert refused.startswith("Error: no turn 'no-such-turn'")
    assert (await add.ainvoke({"feedback_score": 9})).startswith("Error:")


async def test_a_store_that_is_down_fails_like_the_sync_methods(
    stores: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    store = stores()
    turn = await store.arecord("s1", "How do I reset my password?", "Settings.", wait=True)
    await store.athumbs("s1", turn.qa_id, True)
    _break(store)
    with pytest.raises(StoreError):
        await store.aget_session("s1")
    with pytest.raises(StoreError):
        await store.arate("s1", turn.qa_id, feedback_score=2)
    with caplog.at_level(logging.ERROR, logger="feedback_plugin"):
        assert await store.aadd_feedback("s1", turn.qa_id, feedback_score=2) is False
    assert "feedback not stored" in caplog.text
    retriever = PositiveMemoryRetriever(store=store)
    assert await retriever.ainvoke("password") == []  # memory is an aid: skipped, logged
    add = FeedbackToolkit(store=store, session_id="s1").get_tools()[0]
    said = await add.ainvoke({"qa_id": turn.qa_id, "feedback_score": 2})
    assert said.startswith("Error: the feedback store is unavailable")


def _break(store: SessionStore) -> None:
    """Make every backend call of ``store`` fail as a dead server or disk would."""

    def down(*args: object, **kwargs: object) -> None:
        raise ConnectionError("the store is down")

    async def adown(*args: object, **kwargs: object) -> None:
        raise ConnectionError("the store is down")

    backend = store.backend
    for name in ("read", "get", "get_many", "update", "sessions", "delete_session", "append"):
        setattr(backend, name, down)
        setattr(backend, "a" + name, adown)
    memory = backend.memory()
    memory.catch_up = down  # type: ignore[method-assign]
