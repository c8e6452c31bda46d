"""Positive memory is a cache of the store that heals itself (hardening issue, items 5-9).

The index file (``memory.sqlite3``) may be deleted, replaced, corrupted or
unwritable while an app runs, and a store change may fail half-way: liked
turns still come back, and a chain that uses memory still answers.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _redis import REDIS_URL, require_redis
from langchain_core.language_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough

from feedback_plugin import PositiveMemoryRetriever, SessionQAEntry, SessionStore, StoreError
from feedback_plugin.backends import DiskBackend
from feedback_plugin.backends.base import SessionKey


def remembered(store: SessionStore, query: str = "password", **options: Any) -> list[str]:
    docs = PositiveMemoryRetriever(store=store, k=10, raise_on_error=True, **options).invoke(query)
    return sorted(d.metadata["qa_id"] for d in docs)


def liked(store: SessionStore, question: str, answer: str = "Use the reset link.") -> str:
    turn = store.record("s1", question, answer, wait=True)
    assert store.thumbs("s1", turn.qa_id, up=True)
    return turn.qa_id


def index_files(store_dir: Path) -> list[Path]:
    return [store_dir / f"memory.sqlite3{suffix}" for suffix in ("", "-wal", "-shm")]


# -- 5. the index file deleted while the app runs ---------------------------------------------


def test_deleting_the_index_file_while_running_loses_no_rating(
    store: SessionStore, store_dir: Path
) -> None:
    first = liked(store, "How do I reset my password?")
    assert remembered(store) == [first]
    for path in index_files(store_dir):
        path.unlink(missing_ok=True)
    second = liked(store, "I forgot my password")
    assert remembered(store) == sorted([first, second])
    assert (store_dir / "memory.sqlite3").exists()  # a new file, rebuilt from the store
    # ... and another process (a second store on the directory) reads the same
    with SessionStore(store_dir) as other:
        assert remembered(other) == sorted([first, second])


def test_a_process_holding_a_replaced_index_reads_the_new_file(store_dir: Path) -> None:
    with SessionStore(store_dir) as a, SessionStore(store_dir) as b:
        first = liked(a, "How do I reset my password?")
        assert remembered(b) == [first]  # b has the index open
        for path in index_files(store_dir):
            path.unlink(missing_ok=True)
        second = liked(a, "Password expired, what now?")
        assert remembered(a) == sorted([first, second])
        assert remembered(b) == sorted([first, second])


# -- 6. a store change that fails half-way ----------------------------------------------------


class FailingUpdates(DiskBackend):
    """The real diskcache backend; while ``fail`` is set, an update computes the new
    entry (everything up to the store's commit happens) and then fails."""

    fail = False

    def update(self, key: SessionKey, qa_id: str, change: Callable[[str], str]) -> str | None:
        if not self.fail:
            return super().update(key, qa_id, change)

        def change_then_crash(payload: str) -> str:
            change(payload)
            raise OSError("the process died before the store committed")

        return super().update(key, qa_id, change_then_crash)


def test_a_change_that_never_reached_the_store_leaves_memory_as_the_store_is(
    store_dir: Path,
) -> None:
    backend = FailingUpdates(store_dir)
    with SessionStore(backend=backend) as store:
        qa_id = liked(store, "How do I reset my password?")
        assert remembered(store) == [qa_id]
        backend.fail = True
        assert store.thumbs("s1", qa_id, up=False) is False  # not stored: still liked
        backend.fail = False
        assert store.get_entry("s1", qa_id).feedback_score == 5  # type: ignore[union-attr]
        assert remembered(store) == [qa_id]


def test_a_rating_committed_by_a_process_that_died_at_once_reaches_memory(
    store_dir: Path,
) -> None:
    with SessionStore(store_dir) as store:
        qa_id = liked(store, "How do I reset my password?")
        assert remembered(store) == [qa_id]
        # another process rates and dies before anything else runs: only the store
        # commit happened (no index write); the next query anywhere catches up
        other = SessionStore(store_dir)
        assert other.thumbs("s1", qa_id, up=False)
        assert remembered(store) == []
        assert other.thumbs("s1", qa_id, up=True)
        assert remembered(store) == [qa_id]
        other.close()


# -- 7. a corrupt index -----------------------------------------------------------------------


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not an SQLite database " * 200)


def test_a_corrupt_index_file_is_set_aside_and_rebuilt(
    store_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with SessionStore(store_dir) as store:
        qa_id = liked(store, "How do I reset my password?")
        assert remembered(store) == [qa_id]
    for path in index_files(store_dir):
        path.unlink(missing_ok=True)
    _garbage(store_dir / "memory.sqlite3")
    with SessionStore(store_dir) as store, caplog.at_level(logging.ERROR, "feedback_plugin"):
        second = liked(store, "New password please")  # ratings never wait on the index
        assert remembered(store) == sorted([qa_id, second])
    assert any("corrupt" in r.getMessage() for r in caplog.records)
    assert list(store_dir.glob("memory.sqlite3.corrupt-*"))


def test_an_index_corrupted_under_a_running_app_is_rebuilt(
    store: SessionStore, store_dir: Path
) -> None:
    qa_id = liked(store, "How do I reset my password?")
    assert remembered(store) == [qa_id]
    replacement = store_dir / "garbage"
    _garbage(replacement)
    for path in index_files(store_dir)[1:]:
        path.unlink(missing_ok=True)
    os.replace(replacement, store_dir / "memory.sqlite3")
    second = liked(store, "New password please")
    assert remembered(store) == sorted([qa_id, second])


# -- 8. memory that cannot be read ------------------------------------------------------------


PROMPT = ChatPromptTemplate.from_messages(
    [("system", "Answers the user liked:\n{memory}"), ("human", "{question}")]
)


def _chain(store: SessionStore) -> Any:
    memory = PositiveMemoryRetriever(store=store)
    model = FakeListChatModel(responses=["an answer"] * 40)
    return (
        {"memory": memory, "question": RunnablePassthrough()} | PROMPT | model | StrOutputParser()
    )


def test_a_chain_answers_without_memory_when_memory_cannot_be_read(
    store: SessionStore, store_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    liked(store, "How do I reset my password?")
    store.close()
    for path in index_files(store_dir):
        path.unlink(missing_ok=True)
    (store_dir / "memory.sqlite3").mkdir()  # the index cannot be opened, let alone written
    chain = _chain(store)
    with caplog.at_level(logging.ERROR, "feedback_plugin"):
        answers = [chain.invoke("How do I reset my password?") for _ in range(20)]
    assert answers == ["an answer"] * 20
    assert any("memory unavailable" in r.getMessage() for r in caplog.records)
    with pytest.raises(StoreError):  # who asks for errors gets them
        remembered(store)


async def test_an_async_chain_answers_without_memory_too(
    store: SessionStore, store_dir: Path
) -> None:
    liked(store, "How do I reset my password?")
    store.close()
    for path in index_files(store_dir):
        path.unlink(missing_ok=True)
    (store_dir / "memory.sqlite3").mkdir()
    assert await _chain(store).ainvoke("password?") == "an answer"


# -- imports reach every process's memory -----------------------------------------------------


@pytest.fixture(params=["disk", "redis"])
def two_stores(request: pytest.FixtureRequest, store_dir: Path) -> Iterator[tuple[Any, Any]]:
    """Two stores on one location: two processes of one app."""
    if request.param == "disk":
        a, b = SessionStore(store_dir), SessionStore(store_dir)
    else:
        require_redis()
        namespace = f"test-{uuid.uuid4().hex}"
        a, b = (SessionStore(REDIS_URL, namespace=namespace) for _ in range(2))
    yield a, b
    if request.param == "redis":
        a.backend.drop()  # type: ignore[attr-defined]
    a.close()
    b.close()


def test_imported_ratings_reach_the_memory_of_every_process(two_stores: Any) -> None:
    a, b = two_stores
    first = liked(a, "How do I reset my password?")
    assert remembered(a) == [first] and remembered(b) == [first]
    imported = SessionQAEntry(
        qa_id="imported-1",
        session_id="old",
        question="password rules?",
        answer="Twelve characters.",
        feedback_score=5,
    )
    assert b.import_entries([imported]) == 1
    assert remembered(a) == sorted([first, "imported-1"])
    assert remembered(b) == sorted([first, "imported-1"])


# -- 9. text that UTF-8 cannot carry ----------------------------------------------------------


def test_lone_surrogates_in_remembered_turns_and_queries(store: SessionStore) -> None:
    turn = store.record("s\ud800", "password \ud800 reset?", "answer \udfff", wait=True)
    assert store.add_feedback("s\ud800", turn.qa_id, "text \ud800", 5, correction="fixed \ud800")
    docs = PositiveMemoryRetriever(store=store, raise_on_error=True).invoke("password \ud800")
    assert [d.metadata["answer"] for d in docs] == ["fixed \ud800"]
    assert docs[0].metadata["question"] == "password \ud800 reset?"
