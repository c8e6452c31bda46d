"""FeedbackCallbackHandler on real LangChain runnables: what gets recorded, when, and for whom."""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from operator import itemgetter
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler, CallbackManagerForRetrieverRun
from langchain_core.chat_history import InMemoryChatMessageHistory
from langchain_core.documents import Document
from langchain_core.language_models import FakeListChatModel, FakeListLLM
from langchain_core.language_models.fake_chat_models import FakeListChatModelError
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import ChatGeneration, LLMResult
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import (
    Runnable,
    RunnableConfig,
    RunnableLambda,
    RunnablePassthrough,
)
from langchain_core.runnables.history import RunnableWithMessageHistory

import feedback_plugin
from feedback_plugin import FeedbackCallbackHandler, SessionQAEntry, SessionStore
from feedback_plugin.backends import DiskBackend
from feedback_plugin.errors import StoreError

# -- a small RAG app ------------------------------------------------------------

DOCS = [
    Document(page_content="Reset your password from the login page.", metadata={"id": 1}),
    Document(page_content="Invoices are emailed on the first of the month.", metadata={"id": 2}),
    Document(page_content="The password must have twelve characters.", metadata={"id": 3}),
    Document(page_content="Support is open Monday to Friday.", metadata={"id": 4}),
]


class KeywordRetriever(BaseRetriever):
    """Documents sharing a word with the query, in corpus order (all of them if ``match=False``)."""

    docs: list[Document]
    match: bool = True

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        if not self.match:
            return list(self.docs)
        words = {w.strip("?.,!").lower() for w in query.split()}
        return [
            d for d in self.docs if words & {w.strip(".").lower() for w in d.page_content.split()}
        ]


class EchoRetriever(BaseRetriever):
    """Two documents derived from the query, after a short random pause (to interleave runs)."""

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        time.sleep(random.random() * 0.002)
        return [
            Document(page_content=f"{query} :: doc1"),
            Document(page_content=f"{query} :: doc2"),
        ]

    async def _aget_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
        await asyncio.sleep(random.random() * 0.002)
        return [
            Document(page_content=f"{query} :: doc1"),
            Document(page_content=f"{query} :: doc2"),
        ]


def format_docs(docs: list[Document]) -> str:
    return "\n".join(d.page_content for d in docs)


PROMPT = ChatPromptTemplate.from_messages(
    [("system", "Answer from this context:\n{context}"), ("human", "{question}")]
)


def rag_chain(*responses: str) -> Runnable[Any, str]:
    """{"question": ...} -> str: retriever, prompt, FakeListChatModel, StrOutputParser."""
    model = FakeListChatModel(responses=list(responses) or ["fake answer"])
    retriever = KeywordRetriever(docs=DOCS)
    return (
        RunnablePassthrough.assign(context=itemgetter("question") | retriever | format_docs)
        | PROMPT
        | model
        | StrOutputParser()
    )


def _answer(x: dict[str, Any]) -> str:
    return f"answer to {x['question']} from {len(x['context'])} docs"


async def _aanswer(x: dict[str, Any]) -> str:
    await asyncio.sleep(random.random() * 0.003)
    return _answer(x)


def echo_chain() -> Runnable[Any, str]:
    """Deterministic per question (unlike FakeListChatModel), so concurrent runs can be checked."""
    return {
        "context": itemgetter("question") | EchoRetriever(),
        "question": itemgetter("question"),
    } | RunnableLambda(_answer, afunc=_aanswer)


def cfg(
    handler: BaseCallbackHandler, session_id: str | None = "s1", **extra: Any
) -> RunnableConfig:
    metadata = dict(extra.pop("metadata", {}))
    if session_id is not None:
        metadata["session_id"] = session_id
    return RunnableConfig(callbacks=[handler], metadata=metadata, **extra)  # type: ignore[typeddict-item]


def all_entries(store: SessionStore) -> list[SessionQAEntry]:
    return list(store.iter_entries())


def assert_idle(handler: FeedbackCallbackHandler) -> None:
    assert handler.active_runs == 0
    assert len(handler._turn_of) == 0
    assert len(handler._turns) == 0


@pytest.fixture
def handler(store: SessionStore) -> FeedbackCallbackHandler:
    return FeedbackCallbackHandler(store)


# -- one entry per root run -----------------------------------------------------


def test_invoke_records_one_turn_with_question_answer_context_and_time(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    chain = rag_chain("Use the login page.")
    run_id = uuid.uuid4()
    before = datetime.now(timezone.utc)

    out = chain.invoke(
        {"question": "How do I reset my password?"}, config=cfg(handler, run_id=run_id)
    )

    after = datetime.now(timezone.utc)
    assert out == "Use the login page."
    [entry] = store.get_session("s1")
    assert entry.qa_id == str(run_id)
    assert entry.session_id == "s1"
    assert entry.question == "How do I reset my password?"
    assert entry.answer == "Use the login page."
    assert entry.context == [
        "Reset your password from the login page.",
        "The password must have twelve characters.",
    ]
    assert entry.time.tzinfo is not None
    assert entry.time.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= entry.time <= after + timedelta(seconds=1)
    assert entry.feedback_score is None and entry.feedback_text is None
    assert entry.user_id is None
    # the many child runs (retriever, prompt, model, parser) added nothing
    assert len(all_entries(store)) == 1
    assert_idle(handler)


def test_qa_id_from_run_id_lets_the_app_rate_the_turn(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    chain = rag_chain("first", "second")
    ids = [uuid.uuid4(), uuid.uuid4()]
    for run_id, q in zip(
        ids, ["When are invoices sent?", "Is support open on Monday?"], strict=True
    ):
        chain.invoke({"question": q}, config=cfg(handler, run_id=run_id))

    entries = store.get_session("s1")
    assert [e.qa_id for e in entries] == [str(i) for i in ids]
    assert [e.answer for e in entries] == ["first", "second"]
    assert entries[0].context == ["Invoices are emailed on the first of the month."]
    assert store.thumbs("s1", str(ids[1]), up=True)
    assert store.get_session("s1")[1].feedback_score == 5


def test_run_id_not_given_still_uses_the_root_run_id(store: SessionStore) -> None:
    seen: list[uuid.UUID] = []

    class RootIds(BaseCallbackHandler):
        def on_chain_start(
            self, *a: Any, run_id: uuid.UUID, parent_run_id: Any = None, **k: Any
        ) -> None:
            if parent_run_id is None:
                seen.append(run_id)

    handler = FeedbackCallbackHandler(store)
    config = cfg(handler)
    config["callbacks"] = [handler, RootIds()]
    rag_chain("a").invoke({"question": "password?"}, config=config)

    [entry] = store.get_session("s1")
    assert [entry.qa_id] == [str(r) for r in seen]


def test_context_collects_every_retriever_in_order_including_nested(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    first = KeywordRetriever(docs=DOCS[:2], match=False)
    deep = KeywordRetriever(
        docs=[Document(page_content="deep one"), Document(page_content="deep two")], match=False
    )
    third = KeywordRetriever(docs=[Document(page_content="last")], match=False)
    inner = RunnableLambda(lambda q: q.upper()) | deep  # a sequence ...

    def call_inner(x: dict[str, Any]) -> list[Document]:
        return inner.invoke(x["question"])  # ... inside a lambda: two levels below the root

    chain = (
        RunnablePassthrough.assign(a=itemgetter("question") | first)
        | RunnablePassthrough.assign(b=RunnableLambda(call_inner))
        | RunnablePassthrough.assign(c=itemgetter("question") | third)
        | RunnableLambda(lambda x: {"answer": f"{len(x['a']) + len(x['b']) + len(x['c'])} docs"})
    )

    out = chain.invoke({"question": "anything"}, config=cfg(handler))

    assert out == {"answer": "5 docs"}
    [entry] = store.get_session("s1")
    assert entry.answer == "5 docs"
    assert entry.context == [
        DOCS[0].page_content,
        DOCS[1].page_content,
        "deep one",
        "deep two",
        "last",
    ]


def test_run_without_retriever_has_empty_context(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    chain = RunnableLambda(lambda x: f"echo {x}")
    chain.invoke("hello", config=cfg(handler))
    [entry] = store.get_session("s1")
    assert (entry.question, entry.answer, entry.context) == ("hello", "echo hello", [])


def test_question_and_answer_shapes_through_real_chains(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    model = FakeListChatModel(responses=["as message"])
    messages_chain = RunnableLambda(lambda msgs: msgs) | model
    messages_chain.invoke(
        [SystemMessage("sys"), HumanMessage("old"), AIMessage("x"), HumanMessage("newest")],
        config=cfg(handler, "shapes"),
    )
    dict_out = RunnableLambda(lambda x: {"output": f"out:{x['input']}", "intermediate": [1]})
    dict_out.invoke({"input": "agent style"}, config=cfg(handler, "shapes"))
    first_str = RunnableLambda(lambda x: {"result": "r"})
    first_str.invoke({"n": 1, "topic": "billing"}, config=cfg(handler, "shapes"))

    entries = store.get_session("shapes")
    assert [(e.question, e.answer) for e in entries] == [
        ("newest", "as message"),
        ("agent style", "out:agent style"),
        ("billing", "r"),
    ]


# -- models called directly ---------------------------------------------------


def test_chat_model_as_root_records_a_turn(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    model = FakeListChatModel(responses=["pong"])
    run_id = uuid.uuid4()
    out = model.invoke(
        [SystemMessage("be brief"), HumanMessage("ping")],
        config=cfg(handler, run_id=run_id, metadata={"prompt_version": "v3"}),
    )
    assert out.content == "pong"
    [entry] = store.get_session("s1")
    assert (entry.qa_id, entry.question, entry.answer, entry.context) == (
        str(run_id),
        "ping",
        "pong",
        [],
    )
    assert entry.metadata["prompt_version"] == "v3"
    assert entry.metadata["ls_provider"] == "fakelistchatmodel"
    assert_idle(handler)


def test_chat_model_as_root_under_stream_and_ainvoke(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    model = FakeListChatModel(responses=["streamed reply", "async reply"])
    chunks = [c.content for c in model.stream("stream me", config=cfg(handler))]
    assert "".join(chunks) == "streamed reply"  # type: ignore[arg-type]
    asyncio.run(model.ainvoke("await me", config=cfg(handler)))

    entries = store.get_session("s1")
    assert [(e.question, e.answer) for e in entries] == [
        ("stream me", "streamed reply"),
        ("await me", "async reply"),
    ]
    assert_idle(handler)


def test_llm_as_root_records_a_turn(store: SessionStore, handler: FeedbackCallbackHandler) -> None:
    llm = FakeListLLM(responses=["completion"])
    assert llm.invoke("complete this", config=cfg(handler)) == "completion"
    [entry] = store.get_session("s1")
    assert (entry.question, entry.answer) == ("complete this", "completion")


def test_model_inside_chain_names_the_model_in_metadata(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    rag_chain("x").invoke({"question": "password"}, config=cfg(handler))
    [entry] = store.get_session("s1")
    assert entry.metadata["ls_provider"] == "fakelistchatmodel"


def test_retriever_or_tool_called_directly_is_not_a_chat_turn(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    from langchain_core.tools import tool

    @tool
    def lookup(query: str) -> str:
        """Look something up."""
        return f"found {query}"

    docs = KeywordRetriever(docs=DOCS).invoke("password", config=cfg(handler))
    assert len(docs) == 2
    assert lookup.invoke("x", config=cfg(handler)) == "found x"
    assert all_entries(store) == []
    assert_idle(handler)


# -- every way of running a chain ------------------------------------------------


def test_stream_records_the_real_input_not_the_placeholder(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    seen_start_inputs: list[Any] = []

    class RootStart(BaseCallbackHandler):
        def on_chain_start(
            self, s: Any, inputs: Any, *, parent_run_id: Any = None, **k: Any
        ) -> None:
            if parent_run_id is None:
                seen_start_inputs.append(inputs)

    chain = rag_chain("Streamed answer about passwords.")
    config = cfg(handler)
    config["callbacks"] = [handler, RootStart()]
    chunks = list(chain.stream({"question": "How do I reset my password?"}, config=config))

    # langchain-core gives the root start a placeholder under stream
    assert seen_start_inputs and seen_start_inputs[0] != {"question": "How do I reset my password?"}
    assert len(chunks) > 1
    [entry] = store.get_session("s1")
    assert entry.question == "How do I reset my password?"
    assert entry.answer == "".join(chunks) == "Streamed answer about passwords."
    assert entry.context == [DOCS[0].page_content, DOCS[2].page_content]
    assert_idle(handler)


async def test_astream_records_the_real_input(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    chain = rag_chain("Invoices arrive monthly.")
    run_id = uuid.uuid4()
    chunks = [
        c
        async for c in chain.astream({"question": "invoices?"}, config=cfg(handler, run_id=run_id))
    ]
    [entry] = store.get_session("s1")
    assert entry.qa_id == str(run_id)
    assert entry.question == "invoices?"
    assert entry.answer == "".join(chunks) == "Invoices arrive monthly."
    assert entry.context == [DOCS[1].page_content]
    assert_idle(handler)


async def test_astream_events_records_one_turn(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    chain = rag_chain("Support is open on weekdays.")
    events = [
        e
        async for e in chain.astream_events(
            {"question": "Is support open?"}, config=cfg(handler), version="v2"
        )
    ]
    assert events
    [entry] = store.get_session("s1")
    assert entry.question == "Is support open?"
    assert entry.answer == "Support is open on weekdays."
    assert entry.context == [DOCS[3].page_content]
    assert_idle(handler)


async def test_ainvoke(store: SessionStore, handler: FeedbackCallbackHandler) -> None:
    run_id = uuid.uuid4()
    out = await rag_chain("async").ainvoke(
        {"question": "password length?"}, config=cfg(handler, run_id=run_id)
    )
    [entry] = store.get_session("s1")
    assert (entry.qa_id, entry.question, entry.answer) == (str(run_id), "password length?", out)
    assert entry.context == [DOCS[0].page_content, DOCS[2].page_content]


def test_batch_with_one_config_per_input_and_distinct_sessions(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    chain = echo_chain()
    questions = [f"question {i}" for i in range(6)]
    run_ids = [uuid.uuid4() for _ in questions]
    configs = [cfg(handler, f"batch-{i % 3}", run_id=run_ids[i]) for i in range(len(questions))]
    outs = chain.batch([{"question": q} for q in questions], config=configs)

    assert outs == [f"answer to {q} from 2 docs" for q in questions]
    for s in range(3):
        entries = store.get_session(f"batch-{s}")
        assert sorted(e.question for e in entries) == [questions[s], questions[s + 3]]
        for e in entries:
            i = questions.index(e.question)
            assert e.qa_id == str(run_ids[i])
    assert len(all_entries(store)) == 6
    assert_idle(handler)


async def test_abatch_with_distinct_sessions(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    chain = echo_chain()
    questions = [f"aq {i}" for i in range(6)]
    configs = [cfg(handler, f"abatch-{i}") for i in range(6)]
    await chain.abatch([{"question": q} for q in questions], config=configs)
    for i, q in enumerate(questions):
        [entry] = store.get_session(f"abatch-{i}")
        assert entry.question == q
        assert entry.answer == f"answer to {q} from 2 docs"
        assert entry.context == [f"{q} :: doc1", f"{q} :: doc2"]
    assert_idle(handler)


def _check_no_mixing(store: SessionStore, n: int, sessions: int, prefix: str) -> None:
    entries = all_entries(store)
    assert len(entries) == n
    assert len({e.qa_id for e in entries}) == n
    assert sorted(e.question for e in entries) == sorted(f"{prefix} {i}" for i in range(n))
    for e in entries:
        i = int(e.question.rsplit(" ", 1)[1])
        assert e.session_id == f"{prefix}-session-{i % sessions}"
        assert e.answer == f"answer to {e.question} from 2 docs"
        assert e.context == [f"{e.question} :: doc1", f"{e.question} :: doc2"]


async def test_50_concurrent_ainvoke_tasks_do_not_mix(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    chain = echo_chain()
    outs = await asyncio.gather(
        *(
            chain.ainvoke({"question": f"async {i}"}, config=cfg(handler, f"async-session-{i % 7}"))
            for i in range(50)
        )
    )
    assert outs == [f"answer to async {i} from 2 docs" for i in range(50)]
    _check_no_mixing(store, 50, 7, "async")
    assert_idle(handler)


def test_threaded_batch_of_50_does_not_mix(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    chain = echo_chain()
    configs = [cfg(handler, f"thread-session-{i % 7}", max_concurrency=50) for i in range(50)]
    outs = chain.batch([{"question": f"thread {i}"} for i in range(50)], config=configs)
    assert outs == [f"answer to thread {i} from 2 docs" for i in range(50)]
    _check_no_mixing(store, 50, 7, "thread")
    assert_idle(handler)


def test_many_threads_each_invoking_share_one_handler(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    chain = echo_chain()
    barrier = threading.Barrier(10)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            barrier.wait()
            for j in range(5):
                i = t * 5 + j
                chain.invoke(
                    {"question": f"worker {i}"}, config=cfg(handler, f"worker-session-{i % 7}")
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    _check_no_mixing(store, 50, 7, "worker")
    assert_idle(handler)


# -- what is not recorded -------------------------------------------------------


def test_nothing_recorded_without_a_session_id(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    chain = rag_chain("a")
    assert chain.invoke({"question": "password?"}, config=cfg(handler, session_id=None)) == "a"
    assert chain.invoke({"question": "password?"}, config={"callbacks": [handler]}) == "a"
    assert all_entries(store) == []
    assert_idle(handler)


class AppError(Exception):
    pass


def test_failing_run_records_nothing_and_the_exception_is_unchanged(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    err = AppError("boom")

    def fail(x: Any) -> Any:
        raise err

    chain = RunnablePassthrough.assign(
        context=itemgetter("question") | KeywordRetriever(docs=DOCS)
    ) | RunnableLambda(fail)

    with pytest.raises(AppError) as info:
        chain.invoke({"question": "password?"}, config=cfg(handler))
    assert info.value is err
    assert all_entries(store) == []
    assert_idle(handler)

    # the same session goes on normally afterwards, and the failed retrieval leaks no context
    rag_chain("fine").invoke({"question": "invoices?"}, config=cfg(handler))
    [entry] = store.get_session("s1")
    assert entry.answer == "fine"
    assert entry.context == [DOCS[1].page_content]


async def test_failing_async_and_streamed_runs_record_nothing(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    err = AppError("async boom")

    async def afail(x: Any) -> Any:
        raise err

    chain = RunnableLambda(lambda x: x) | RunnableLambda(afail)
    with pytest.raises(AppError) as info:
        await chain.ainvoke("q", config=cfg(handler))
    assert info.value is err
    with pytest.raises(AppError) as info:
        async for _ in chain.astream("q", config=cfg(handler)):
            pass
    assert info.value is err
    assert all_entries(store) == []
    assert_idle(handler)


def test_failing_retriever_propagates(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    err = AppError("index down")

    class Broken(BaseRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
            raise err

    chain = RunnablePassthrough.assign(context=itemgetter("question") | Broken()) | RunnableLambda(
        str
    )
    with pytest.raises(AppError) as info:
        chain.invoke({"question": "q"}, config=cfg(handler))
    assert info.value is err
    assert all_entries(store) == []
    assert_idle(handler)


def test_failing_model_called_directly_records_nothing(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    model = FakeListChatModel(responses=["never"], error_on_chunk_number=0)
    with pytest.raises(FakeListChatModelError):
        list(model.stream("hi", config=cfg(handler)))
    assert all_entries(store) == []
    assert_idle(handler)


async def test_cancelled_run_records_nothing_and_frees_state(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    started = asyncio.Event()

    async def slow(x: Any) -> str:
        started.set()
        await asyncio.sleep(30)
        return "never"

    chain = RunnableLambda(lambda x: x) | RunnableLambda(slow)
    task = asyncio.create_task(chain.ainvoke("q", config=cfg(handler)))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all_entries(store) == []
    assert_idle(handler)


# -- session id and user -----------------------------------------------------------

ALL_KEYS = {
    "session_id": "by-session-id",
    "thread_id": "by-thread-id",
    "conversation_id": "by-conversation-id",
    "langfuse_session_id": "by-langfuse",
}


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        (["session_id", "thread_id", "conversation_id", "langfuse_session_id"], "by-session-id"),
        (["thread_id", "conversation_id", "langfuse_session_id"], "by-thread-id"),
        (["conversation_id", "langfuse_session_id"], "by-conversation-id"),
        (["langfuse_session_id"], "by-langfuse"),
        ([], "handler-default"),
    ],
)
def test_session_id_resolution_order(
    store: SessionStore, present: list[str], expected: str
) -> None:
    handler = FeedbackCallbackHandler(store, session_id="handler-default")
    metadata = {k: ALL_KEYS[k] for k in present}
    RunnableLambda(lambda x: "a").invoke("q", config={"callbacks": [handler], "metadata": metadata})
    [entry] = all_entries(store)
    assert entry.session_id == expected
    assert len(store.get_session(expected)) == 1


def test_user_from_metadata_else_handler_user_and_scoping(store: SessionStore) -> None:
    handler = FeedbackCallbackHandler(store, user="handler-user")
    chain = RunnableLambda(lambda x: f"re: {x}")
    chain.invoke("from alice", config=cfg(handler, "shared", metadata={"user_id": "alice"}))
    chain.invoke("from default", config=cfg(handler, "shared"))

    [alice] = store.get_session("shared", user="alice")
    assert (alice.question, alice.user_id) == ("from alice", "alice")
    [default] = store.get_session("shared", user="handler-user")
    assert (default.question, default.user_id) == ("from default", "handler-user")
    assert store.get_session("shared") == []
    assert store.get_session("shared", user="mallory") == []
    assert not store.thumbs("shared", alice.qa_id, up=True, user="handler-user")
    assert store.thumbs("shared", alice.qa_id, up=True, user="alice")


def test_handler_without_user_records_unscoped(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    RunnableLambda(lambda x: "a").invoke("q", config=cfg(handler))
    [entry] = store.get_session("s1")
    assert entry.user_id is None
    assert store.get_session("s1", user="alice") == []


def test_queued_turns_cost_the_garbage_collector_one_object_each(store_dir: Path) -> None:
    """A busy process may queue thousands of turns: the collector must not walk a tree per turn.

    The handler queues one flat tuple of plain strings, numbers and a dict of
    them (tags as a tuple, the run id as an int); CPython stops tracking such
    a dict at a collection, so only the tuple itself is left to visit. A UUID,
    a list or LangChain's ``TextAccessor`` string subclass would stay tracked.
    """
    with SessionStore(store_dir, flush_interval=3600) as slow:
        handler = FeedbackCallbackHandler(slow)
        config = cfg(handler, metadata={"prompt_version": "v2"}, tags=["rag", "prod"])
        for i in range(20):
            rag_chain("a").invoke({"question": f"q{i}"}, config=config)
        queued = list(slow._writer._items)
        assert len(queued) == 20
        gc.collect()
        assert [field for turn in queued for field in turn if gc.is_tracked(field)] == []
        assert [e.question for e in slow.get_session("s1")] == [f"q{i}" for i in range(20)]
        assert slow.get_session("s1")[0].metadata["tags"] == ["rag", "prod"]


def test_entry_metadata_keeps_json_safe_metadata_and_tags(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    config = cfg(
        handler,
        metadata={
            "prompt_version": "v2",
            "model": "gpt-fake",
            "temperature": 0.2,
            "flags": {"beta": True, "ids": [1, 2]},
            "client": object(),
            "nan": float("nan"),
            "blob": b"bytes",
        },
        tags=["rag", "prod"],
    )
    rag_chain("a").invoke({"question": "password?"}, config=config)
    [entry] = store.get_session("s1")
    md = entry.metadata
    assert md["prompt_version"] == "v2"
    assert md["model"] == "gpt-fake"
    assert md["temperature"] == 0.2
    assert md["flags"] == {"beta": True, "ids": [1, 2]}
    assert md["session_id"] == "s1"
    assert md["tags"] == ["rag", "prod"]
    for dropped in ("client", "nan", "blob"):
        assert dropped not in md


def test_default_store_used_when_none_given(_default_dir: Path) -> None:
    handler = FeedbackCallbackHandler(session_id="default-session")
    RunnableLambda(lambda x: "a").invoke("q", config={"callbacks": [handler]})
    [entry] = feedback_plugin.session.get_session("default-session")
    assert (entry.question, entry.answer) == ("q", "a")
    assert handler.store.location == str(_default_dir)


# -- configurable={"session_id": ...} ----------------------------------------------


def test_plain_langchain_does_not_pass_configurable_to_callback_metadata(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    """Why ``with_configurable_session`` exists: configurable never reaches callbacks."""
    seen: list[dict[str, Any]] = []

    class Meta(BaseCallbackHandler):
        def on_chain_start(self, *a: Any, metadata: Any = None, **k: Any) -> None:
            seen.append(dict(metadata or {}))

    chain = RunnableLambda(lambda x: "a") | RunnableLambda(lambda x: x)
    chain.invoke(
        "q", config={"callbacks": [handler, Meta()], "configurable": {"session_id": "cfg-s"}}
    )
    assert seen
    assert all("session_id" not in m for m in seen)
    assert all_entries(store) == []


def test_with_configurable_session_records_into_the_configured_session(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    chain = feedback_plugin.with_configurable_session(rag_chain("one", "two", "three"))
    run_id = uuid.uuid4()
    chain.invoke(
        {"question": "password?"},
        config={
            "callbacks": [handler],
            "configurable": {"session_id": "cfg-s", "user_id": "alice"},
            "run_id": run_id,
        },
    )
    [entry] = store.get_session("cfg-s", user="alice")
    assert (entry.qa_id, entry.question, entry.answer) == (str(run_id), "password?", "one")
    assert entry.context == [DOCS[0].page_content, DOCS[2].page_content]

    # explicit metadata wins over configurable
    chain.invoke(
        {"question": "invoices?"},
        config={
            "callbacks": [handler],
            "configurable": {"session_id": "cfg-s"},
            "metadata": {"session_id": "meta-s"},
        },
    )
    assert [e.answer for e in store.get_session("meta-s")] == ["two"]
    assert store.get_session("cfg-s") == []

    # stream too
    list(
        chain.stream(
            {"question": "support?"},
            config={"callbacks": [handler], "configurable": {"thread_id": "t"}},
        )
    )
    [streamed] = store.get_session("t")
    assert (streamed.question, streamed.answer) == ("support?", "three")


def test_with_configurable_session_in_batch_keeps_sessions_apart(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    chain = feedback_plugin.with_configurable_session(echo_chain())
    configs: list[RunnableConfig] = [
        {"callbacks": [handler], "configurable": {"session_id": f"cb-{i}"}} for i in range(8)
    ]
    chain.batch([{"question": f"cq {i}"} for i in range(8)], config=configs)
    for i in range(8):
        [entry] = store.get_session(f"cb-{i}")
        assert entry.question == f"cq {i}"


async def test_with_configurable_session_async_paths(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    chain = feedback_plugin.with_configurable_session(echo_chain())

    def conf(session: str) -> RunnableConfig:
        return {"callbacks": [handler], "configurable": {"session_id": session}}

    await chain.ainvoke({"question": "ainvoke"}, config=conf("ac"))
    _ = [c async for c in chain.astream({"question": "astream"}, config=conf("ac"))]
    await chain.abatch(
        [{"question": "ab0"}, {"question": "ab1"}], config=[conf("ab0"), conf("ab1")]
    )
    assert [e.question for e in store.get_session("ac")] == ["ainvoke", "astream"]
    assert [e.question for e in store.get_session("ab0")] == ["ab0"]
    assert [e.question for e in store.get_session("ab1")] == ["ab1"]


def test_with_configurable_session_survives_with_config_and_custom_keys(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    base = RunnableLambda(lambda x: f"re: {x}")
    default_keys = feedback_plugin.with_configurable_session(base).with_config(tags=["t"])
    default_keys.invoke("q1", config={"callbacks": [handler], "configurable": {"session_id": "k1"}})
    [entry] = store.get_session("k1")
    assert entry.metadata["tags"] == ["t"]

    # only thread_id is copied: the session_id in configurable is for something else
    custom = feedback_plugin.with_configurable_session(base, keys=["thread_id"])
    both = {"session_id": "not-this", "thread_id": "k2"}
    custom.invoke("q2", config={"callbacks": [handler], "configurable": both})
    # the usual ways of deriving a runnable keep the custom keys
    for derived in (
        custom.with_config(run_name="named"),
        custom.with_types(input_type=str),
        custom.with_retry(stop_after_attempt=2),
        custom.bind(),
    ):
        derived.invoke("q2", config={"callbacks": [handler], "configurable": both})
    assert [e.answer for e in store.get_session("k2")] == ["re: q2"] * 5
    assert store.get_session("not-this") == []


def _history_chain() -> tuple[Runnable[Any, Any], dict[str, InMemoryChatMessageHistory]]:
    histories: dict[str, InMemoryChatMessageHistory] = {}

    def get_history(session_id: str) -> InMemoryChatMessageHistory:
        return histories.setdefault(session_id, InMemoryChatMessageHistory())

    prompt = ChatPromptTemplate.from_messages(
        [("system", "Be helpful."), MessagesPlaceholder("history"), ("human", "{question}")]
    )
    model = FakeListChatModel(responses=["Hello Ada.", "Your name is Ada.", "other"])
    with_history = RunnableWithMessageHistory(
        prompt | model,
        get_history,
        input_messages_key="question",
        history_messages_key="history",
    )
    return with_history, histories


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_runnable_with_message_history_wrapped(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    with_history, histories = _history_chain()
    chain = feedback_plugin.with_configurable_session(with_history)
    config: RunnableConfig = {"callbacks": [handler], "configurable": {"session_id": "chat-1"}}

    first = chain.invoke({"question": "I am Ada."}, config=config)
    second = chain.invoke({"question": "What is my name?"}, config=config)

    assert (first.content, second.content) == ("Hello Ada.", "Your name is Ada.")
    assert len(histories["chat-1"].messages) == 4  # the wrapper did not disturb the history
    entries = store.get_session("chat-1")
    assert [(e.question, e.answer) for e in entries] == [
        ("I am Ada.", "Hello Ada."),
        ("What is my name?", "Your name is Ada."),
    ]
    assert all(e.context == [] for e in entries)
    assert_idle(handler)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_runnable_with_message_history_unwrapped_records_nothing(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    with_history, histories = _history_chain()
    with_history.invoke(
        {"question": "I am Ada."},
        config={"callbacks": [handler], "configurable": {"session_id": "chat-2"}},
    )
    assert len(histories["chat-2"].messages) == 2
    assert all_entries(store) == []


# -- run state is freed ---------------------------------------------------------------


@pytest.mark.slow
def test_no_state_left_after_100k_runs(store: SessionStore) -> None:
    handler = FeedbackCallbackHandler(store)
    uuid4 = uuid.uuid4
    docs = [Document(page_content="ctx")]
    recorded: list[str] = []
    llm_result = LLMResult(generations=[[ChatGeneration(message=AIMessage("model answer"))]])
    err = AppError("x")
    for i in range(100_000):
        root, child, grandchild = uuid4(), uuid4(), uuid4()
        metadata = {"session_id": "leak"} if i % 10_000 == 0 else {"other": i}
        kind = i % 5
        if kind == 4:  # a chat model as root, with a failure now and then
            handler.on_chat_model_start(
                None, [[HumanMessage(f"m{i}")]], run_id=root, metadata=metadata
            )
            if i % 15 == 14:
                handler.on_llm_error(err, run_id=root)
            else:
                handler.on_llm_end(llm_result, run_id=root)
                if metadata.get("session_id"):
                    recorded.append(f"m{i}")
            continue
        handler.on_chain_start(None, {"question": f"q{i}"}, run_id=root, metadata=metadata)
        handler.on_chain_start(None, {"question": f"q{i}"}, run_id=child, parent_run_id=root)
        handler.on_retriever_start(None, f"q{i}", run_id=grandchild, parent_run_id=child)
        handler.on_retriever_end(docs, run_id=grandchild, parent_run_id=child)
        if kind == 1:  # failure inside, propagating to the root
            handler.on_chain_error(err, run_id=child, parent_run_id=root)
            handler.on_chain_error(err, run_id=root)
        elif kind == 2:  # a child that never reports its end (abandoned generator)
            handler.on_chain_end({"answer": "a"}, run_id=root)
            if metadata.get("session_id"):
                recorded.append(f"q{i}")
        else:
            handler.on_chain_end({"x": 1}, run_id=child, parent_run_id=root)
            handler.on_chain_end({"answer": "a"}, run_id=root)
            if metadata.get("session_id"):
                recorded.append(f"q{i}")
    assert handler.active_runs == 0
    assert len(handler._turn_of) == 0
    assert len(handler._turns) == 0
    entries = store.get_session("leak")
    assert [e.question for e in entries] == recorded
    assert len(recorded) == 10
    assert all(e.context == ["ctx"] for e in entries if e.question.startswith("q"))


@pytest.mark.slow
def test_no_state_left_after_1000_real_runs_including_failures(store: SessionStore) -> None:
    handler = FeedbackCallbackHandler(store)
    ok = echo_chain()
    err = AppError("fail")

    def fail(x: Any) -> Any:
        raise err

    bad = {"context": itemgetter("question") | KeywordRetriever(docs=DOCS)} | RunnableLambda(fail)
    recorded = 0
    for i in range(1000):
        session = "real" if i % 100 == 0 else None
        if i % 4 == 3:
            with pytest.raises(AppError):
                bad.invoke({"question": f"q {i}"}, config=cfg(handler, session))
        else:
            ok.invoke({"question": f"q {i}"}, config=cfg(handler, session))
            recorded += session is not None
    assert handler.active_runs == 0
    assert len(handler._turn_of) == 0
    assert len(store.get_session("real")) == recorded == 10


def test_abandoned_stream_frees_state_and_records_no_bogus_answer(
    store: SessionStore, handler: FeedbackCallbackHandler
) -> None:
    def gen(x: Any) -> Iterator[str]:
        yield from ("a", "b", "c", "d")

    chain = RunnableLambda(lambda x: x) | RunnableLambda(gen)
    shown: dict[str, str] = {}
    for read in (1, 2, 3):
        stream = chain.stream(f"question {read}", config=cfg(handler))
        shown[f"question {read}"] = "".join(next(stream) for _ in range(read))
        stream.close()  # the user stops reading early (client went away)
        assert_idle(handler)
    # whatever is recorded is the real question and at most what the user was shown
    for entry in store.get_session("s1"):
        assert entry.question in shown
        assert shown[entry.question].startswith(entry.answer)


# -- a store failure never breaks the chain ---------------------------------------------


class FailingBackend(DiskBackend):
    """A DiskBackend whose writes fail while ``failing`` is set."""

    failing = True

    def append(self, items: Any) -> None:
        if self.failing:
            raise OSError("disk full")
        super().append(items)


@pytest.fixture
def failing_store(store_dir: Path) -> Iterator[tuple[SessionStore, FailingBackend]]:
    backend = FailingBackend(store_dir)
    s = SessionStore(backend=backend)
    yield s, backend
    backend.failing = False
    s.close()


def test_store_failure_does_not_break_the_chain(
    failing_store: tuple[SessionStore, FailingBackend], caplog: pytest.LogCaptureFixture
) -> None:
    store, backend = failing_store
    handler = FeedbackCallbackHandler(store)
    caplog.set_level(logging.ERROR, logger="feedback_plugin")

    out = rag_chain("still answered").invoke({"question": "password?"}, config=cfg(handler))

    assert out == "still answered"
    assert_idle(handler)
    with pytest.raises(StoreError):
        store.flush()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(
        r.name == "feedback_plugin" and r.levelno >= logging.ERROR for r in caplog.records
    ):
        time.sleep(0.02)
    assert any(
        r.name == "feedback_plugin" and r.levelno >= logging.ERROR and "OSError" in r.getMessage()
        for r in caplog.records
    )
    # once the store is back, the queued turn is written: nothing lost
    backend.failing = False
    [entry] = store.get_session("s1")
    assert entry.answer == "still answered"


def test_store_failure_with_synchronous_writes_is_logged_not_raised(
    store_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend = FailingBackend(store_dir)
    store = SessionStore(backend=backend, write_behind=False)
    handler = FeedbackCallbackHandler(store)
    caplog.set_level(logging.ERROR, logger="feedback_plugin")
    try:
        out = RunnableLambda(lambda x: "answered").invoke("q", config=cfg(handler))
        assert out == "answered"
        errors = [
            r for r in caplog.records if r.name == "feedback_plugin" and r.levelno >= logging.ERROR
        ]
        assert errors
        assert any("disk full" in str(r.exc_info[1]) for r in errors if r.exc_info)
        assert_idle(handler)
    finally:
        backend.failing = False
        store.close()


def test_store_failure_propagates_with_raise_error(
    failing_store: tuple[SessionStore, FailingBackend],
) -> None:
    store, backend = failing_store
    handler = FeedbackCallbackHandler(store, raise_error=True)
    with pytest.raises(StoreError) as info:
        rag_chain("a").invoke({"question": "password?"}, config=cfg(handler))
    assert isinstance(info.value.__cause__, OSError)
    assert_idle(handler)
    backend.failing = False
    assert store.get_session("s1") == []


def test_raise_error_writes_synchronously(store: SessionStore) -> None:
    handler = FeedbackCallbackHandler(store, raise_error=True)
    RunnableLambda(lambda x: "a").invoke("q", config=cfg(handler))
    assert store.pending == 0
    assert len(store.get_session("s1")) == 1


# -- session ids found below the root ----------------------------------------------


def test_uuid_session_id_is_recorded_as_its_string(store: SessionStore) -> None:
    sid = uuid.uuid4()
    handler = FeedbackCallbackHandler(store)
    RunnableLambda(lambda x: f"echo {x}").invoke(
        "hi", config={"callbacks": [handler], "metadata": {"thread_id": sid}}
    )
    assert [e.answer for e in store.get_session(str(sid))] == ["echo hi"]


def test_configurable_wrapper_on_an_inner_step_still_names_the_session(
    store: SessionStore,
) -> None:
    """with_configurable_session(inner) | parser: the root has no session, a child does."""
    inner = feedback_plugin.with_configurable_session(RunnableLambda(lambda x: f"re: {x}"))
    chain = inner | RunnableLambda(lambda s: s.upper())
    handler = FeedbackCallbackHandler(store)
    out = chain.invoke(
        "q1",
        config={"callbacks": [handler], "configurable": {"session_id": "inner-s", "user_id": "u1"}},
    )
    assert out == "RE: Q1"
    [entry] = store.get_session("inner-s", user="u1")
    assert (entry.question, entry.answer) == ("q1", "RE: Q1")
    assert store.get_session("inner-s") == []
