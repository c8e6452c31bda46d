"""feedback_plugin.enable()/enabled(): recording every LangChain run without passing callbacks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from operator import itemgetter
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.language_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableConfig, RunnablePassthrough

import feedback_plugin
from feedback_plugin import FeedbackCallbackHandler, SessionQAEntry, SessionStore


class AllDocs(BaseRetriever):
    docs: list[Document]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return list(self.docs)


DOCS = [Document(page_content="Plans renew yearly."), Document(page_content="Refunds take 5 days.")]


def rag_chain() -> Runnable[Any, str]:
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Context: {context}"), ("human", "{question}")]
    )
    model = FakeListChatModel(responses=["The answer."])
    return (
        RunnablePassthrough.assign(context=itemgetter("question") | AllDocs(docs=DOCS))
        | prompt
        | model
        | StrOutputParser()
    )


def meta(session_id: str) -> RunnableConfig:
    return {"metadata": {"session_id": session_id}}


def all_entries(store: SessionStore) -> list[SessionQAEntry]:
    return list(store.iter_entries())


@pytest.fixture(autouse=True)
def _always_disable() -> Iterator[None]:
    feedback_plugin.disable()
    yield
    feedback_plugin.disable()


def test_enable_records_runs_without_callbacks(store: SessionStore) -> None:
    handler = feedback_plugin.enable(store)
    assert isinstance(handler, FeedbackCallbackHandler)
    assert handler.store is store

    out = rag_chain().invoke({"question": "When do plans renew?"}, config=meta("e1"))

    assert out == "The answer."
    [entry] = store.get_session("e1")
    assert (entry.question, entry.answer) == ("When do plans renew?", "The answer.")
    assert entry.context == ["Plans renew yearly.", "Refunds take 5 days."]
    assert len(all_entries(store)) == 1  # one entry per root run, not per child
    assert handler.active_runs == 0


def test_enable_with_session_and_user_defaults(store: SessionStore) -> None:
    feedback_plugin.enable(store, session_id="global", user="alice")
    rag_chain().invoke({"question": "q"})
    [entry] = store.get_session("global", user="alice")
    assert entry.user_id == "alice"
    assert store.get_session("global") == []


def test_enable_reaches_threads_started_afterwards(store: SessionStore) -> None:
    feedback_plugin.enable(store)
    chain = rag_chain()
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            chain.invoke({"question": f"from thread {i}"}, config=meta(f"thread-{i}"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i in range(3):
        [entry] = store.get_session(f"thread-{i}")
        assert entry.question == f"from thread {i}"


async def test_enable_records_async_and_batch_runs(store: SessionStore) -> None:
    feedback_plugin.enable(store)
    chain = rag_chain()
    await chain.ainvoke({"question": "async"}, config=meta("async"))
    chain.batch([{"question": "b0"}, {"question": "b1"}], config=[meta("b0"), meta("b1")])
    assert [e.question for e in store.get_session("async")] == ["async"]
    assert [e.question for e in store.get_session("b0")] == ["b0"]
    assert [e.question for e in store.get_session("b1")] == ["b1"]


def test_disable_stops_recording(store: SessionStore) -> None:
    feedback_plugin.enable(store)
    chain = rag_chain()
    chain.invoke({"question": "recorded"}, config=meta("d"))
    feedback_plugin.disable()
    chain.invoke({"question": "not recorded"}, config=meta("d"))
    assert [e.question for e in store.get_session("d")] == ["recorded"]

    # explicit callbacks keep working after disable()
    chain.invoke(
        {"question": "explicit"},
        config={"callbacks": [FeedbackCallbackHandler(store)], **meta("d")},
    )
    assert [e.question for e in store.get_session("d")] == ["recorded", "explicit"]


def test_enabled_block_records_only_inside(store: SessionStore) -> None:
    chain = rag_chain()
    chain.invoke({"question": "before"}, config=meta("w"))
    with feedback_plugin.enabled(store) as handler:
        assert isinstance(handler, FeedbackCallbackHandler)
        chain.invoke({"question": "inside"}, config=meta("w"))
        chain.batch([{"question": "inside batch"}], config=meta("w"))
    chain.invoke({"question": "after"}, config=meta("w"))
    assert sorted(e.question for e in store.get_session("w")) == ["inside", "inside batch"]


async def test_enabled_block_covers_async_tasks(store: SessionStore) -> None:
    chain = rag_chain()
    with feedback_plugin.enabled(store):
        await asyncio.gather(
            chain.ainvoke({"question": "t1"}, config=meta("at")),
            chain.ainvoke({"question": "t2"}, config=meta("at")),
        )
    await chain.ainvoke({"question": "after"}, config=meta("at"))
    assert sorted(e.question for e in store.get_session("at")) == ["t1", "t2"]


def test_enabled_block_does_not_leak_into_other_threads(store: SessionStore) -> None:
    chain = rag_chain()
    go = threading.Event()
    done = threading.Event()

    def other() -> None:
        go.wait(5)
        chain.invoke({"question": "other thread"}, config=meta("iso"))
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    with feedback_plugin.enabled(store):
        go.set()
        assert done.wait(5)
        chain.invoke({"question": "this thread"}, config=meta("iso"))
    thread.join()
    assert [e.question for e in store.get_session("iso")] == ["this thread"]


@pytest.fixture
def record_calls(store: SessionStore, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every turn the handler writes (a second write of the same qa_id would replace, not add)."""
    calls: list[str] = []
    real = store.record_trusted

    def spy(session_id: str, question: str, *args: Any, **kwargs: Any) -> None:
        calls.append(question)
        real(session_id, question, *args, **kwargs)

    monkeypatch.setattr(store, "record_trusted", spy)
    return calls


def test_explicit_handler_and_enable_of_the_same_handler_record_once(
    store: SessionStore, record_calls: list[str]
) -> None:
    handler = FeedbackCallbackHandler(store)
    assert feedback_plugin.enable(handler=handler) is handler
    rag_chain().invoke({"question": "once"}, config={"callbacks": [handler], **meta("dup")})
    assert record_calls == ["once"]
    [entry] = store.get_session("dup")
    assert entry.question == "once"
    assert len(all_entries(store)) == 1
    assert handler.active_runs == 0


def test_enabled_block_with_explicit_same_handler_records_once(
    store: SessionStore, record_calls: list[str]
) -> None:
    handler = FeedbackCallbackHandler(store)
    with feedback_plugin.enabled(handler=handler):
        rag_chain().invoke({"question": "once"}, config={"callbacks": [handler], **meta("dup2")})
    assert record_calls == ["once"]
    assert [e.question for e in store.get_session("dup2")] == ["once"]
