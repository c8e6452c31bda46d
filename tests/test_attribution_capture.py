"""Memory attribution through real capture: which remembered turns fed a recorded answer.

Real LangChain runnables and ``create_agent`` agents with scripted chat models
(tests/_fakes.py), recorded by :class:`FeedbackCallbackHandler` or
:class:`FeedbackMiddleware`: the recorded turn's ``memory_ids`` name the
remembered turns handed to the model (PositiveMemoryRetriever documents, the
``search_positive_memory`` tool's, the middleware's injected examples) and
nothing else; and the rule end to end: a liked turn that fed two answers rated
down leaves positive memory, and comes back when it is liked again. The rule
runs on diskcache, Redis and PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any

import pytest
from _fakes import ScriptedChatModel, tool_call
from _postgres import POSTGRES_URL, require_postgres
from _redis import REDIS_URL, require_redis
from langchain.agents import create_agent
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnablePassthrough
from langchain_core.tools import create_retriever_tool
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import Field

from feedback_plugin import (
    FeedbackCallbackHandler,
    FeedbackToolkit,
    PositiveMemoryRetriever,
    SessionStore,
)
from feedback_plugin.capture.extract import memories_in
from feedback_plugin.memory import MEMORY_SOURCE
from feedback_plugin.middleware import FeedbackMiddleware

LIKED_Q, LIKED_A = "How do I reset my password?", "Use the emailed reset link."
ARTICLE = "Reset your password from Settings > Security."


class Articles(BaseRetriever):
    """An ordinary retriever: its documents are context, never memories."""

    docs: list[Document] = Field(
        default_factory=lambda: [Document(page_content=ARTICLE, metadata={"id": 7})]
    )

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return list(self.docs)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SessionStore]:
    s = SessionStore(tmp_path / "store")
    yield s
    s.close()


@pytest.fixture(params=["disk", "redis", "postgres"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionStore]:
    """A real store on each engine (Redis and PostgreSQL: a namespace of its own, dropped)."""
    if request.param == "disk":
        s = SessionStore(tmp_path / "store")
    elif request.param == "redis":
        require_redis()
        s = SessionStore(REDIS_URL, namespace=f"test-{uuid.uuid4().hex}")
    else:
        require_postgres()
        s = SessionStore(POSTGRES_URL, namespace=f"test-{uuid.uuid4().hex}")
    yield s
    if request.param != "disk":
        s.backend.drop()  # type: ignore[attr-defined]
    s.close()


def liked_turn(store: SessionStore, *, user: str = "alice", session: str = "old") -> str:
    entry = store.record(session, LIKED_Q, LIKED_A, user=user, wait=True)
    assert store.thumbs(session, entry.qa_id, up=True, user=user)
    return entry.qa_id


def remembered(store: SessionStore, qa_id: str, *, user: str = "alice") -> bool:
    """Whether PositiveMemoryRetriever hands ``qa_id`` back for a matching question."""
    docs = PositiveMemoryRetriever(store=store, user=user, k=10).invoke("reset password")
    return qa_id in [d.metadata["qa_id"] for d in docs]


def _text(docs: list[Document]) -> str:
    return "\n".join(d.page_content for d in docs)


PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "Liked answers:\n{memories}\n\nArticles:\n{articles}"),
        ("human", "{question}"),
    ]
)


def rag_chain(store: SessionStore, model: ScriptedChatModel, **memory: Any) -> Runnable[Any, str]:
    """{"question": ...} -> str: liked turns (PositiveMemoryRetriever) and articles
    (an ordinary retriever) in the prompt, a scripted chat model, a string parser."""
    liked = PositiveMemoryRetriever(store=store, user="alice", **memory)
    return (
        RunnablePassthrough.assign(
            memories=itemgetter("question") | liked | _text,
            articles=itemgetter("question") | Articles() | _text,
        )
        | PROMPT
        | model
        | StrOutputParser()
    )


def run(chain: Runnable[Any, Any], question: str, store: SessionStore, **handler: Any) -> str:
    """Run ``chain`` as alice's turn in session "s"; return the recorded turn's qa_id."""
    run_id = uuid.uuid4()
    chain.invoke(
        {"question": question},
        {
            "run_id": run_id,
            "metadata": {"session_id": "s", "user_id": "alice"},
            "callbacks": [FeedbackCallbackHandler(store, **handler)],
        },
    )
    return str(run_id)


# -- the callback handler: PositiveMemoryRetriever documents --------------------------------


def test_a_chains_memory_documents_are_the_recorded_turns_memory_ids(
    store: SessionStore,
) -> None:
    liked = liked_turn(store)
    other = store.record("older", "How do I reset my PIN?", "Ask the bank.", user="alice").qa_id
    assert store.thumbs("older", other, up=True, user="alice")
    bobs = liked_turn(store, user="bob")  # another user's memory is never retrieved
    qa = run(
        rag_chain(store, ScriptedChatModel(script=["Use the link."])), "reset password?", store
    )
    entry = store.get_entry("s", qa, user="alice")
    assert entry is not None and entry.answer == "Use the link."
    assert set(entry.memory_ids) == {liked, other} and bobs not in entry.memory_ids
    assert entry.memory_sessions == {liked: "old", other: "older"}
    assert ARTICLE in entry.context  # an ordinary retriever's documents: context only
    assert f"Question: {LIKED_Q}\nAnswer: {LIKED_A}" in entry.context  # memories are too


async def test_async_chains_and_synchronous_writes_name_their_memories(
    store: SessionStore,
) -> None:
    liked = liked_turn(store)
    chain = rag_chain(store, ScriptedChatModel(script=["One.", "Two."]))
    run_id = uuid.uuid4()
    cfg = {"metadata": {"session_id": "s", "user_id": "alice"}}
    await chain.ainvoke(
        {"question": "reset password?"},
        {**cfg, "run_id": run_id, "callbacks": [FeedbackCallbackHandler(store)]},
    )
    waited = run(chain, "reset password?", store, raise_error=True)  # store.record(wait=True)
    for qa in (str(run_id), waited):
        entry = store.get_entry("s", qa, user="alice")
        assert entry is not None
        assert (entry.memory_ids, entry.memory_sessions) == ([liked], {liked: "old"})


def test_no_memory_retrieved_and_ordinary_retrievers_name_none(store: SessionStore) -> None:
    liked = liked_turn(store)
    # a retriever whose documents carry a turn's ids, but are not memory documents
    lookalike = Articles(
        docs=[Document(page_content="An old turn.", metadata={"qa_id": liked, "session_id": "old"})]
    )
    chain = (
        RunnablePassthrough.assign(
            memories=itemgetter("question") | lookalike | _text,
            articles=itemgetter("question") | Articles() | _text,
        )
        | PROMPT
        | ScriptedChatModel(script=["a", "b"])
        | StrOutputParser()
    )
    plain = store.get_entry("s", run(chain, "reset password?", store), user="alice")
    nothing = rag_chain(store, ScriptedChatModel(script=["c"]))
    unmatched = store.get_entry("s", run(nothing, "weather tomorrow?", store), user="alice")
    assert plain is not None and unmatched is not None
    assert sorted(plain.context) == ["An old turn.", ARTICLE]  # (the two run side by side)
    assert (plain.memory_ids, plain.memory_sessions) == ([], {})
    assert (unmatched.memory_ids, unmatched.memory_sessions) == ([], {})


def test_memory_documents_are_read_strictly() -> None:
    def doc(**meta: Any) -> Document:
        return Document(page_content="x", metadata={"source": MEMORY_SOURCE, **meta})

    docs = [
        doc(session_id="s1", qa_id="q1"),
        doc(session_id="s1", qa_id=7),  # not a string id
        doc(session_id="", qa_id="q2"),  # empty
        doc(session_id="s1", qa_id="q" * 2000),  # longer than an id may be
        doc(qa_id="q3"),  # no session
        Document(
            page_content="y", metadata={"source": "notes.txt", "session_id": "s", "qa_id": "q"}
        ),
    ]
    assert memories_in(docs) == (("s1", "q1"),)
    assert memories_in("not documents") == ()
    assert memories_in(None) == ()


# -- the callback handler: an agent's search_positive_memory tool --------------------------


def test_an_agents_search_positive_memory_results_are_its_memory_ids(
    store: SessionStore,
) -> None:
    liked = liked_turn(store)
    tools = FeedbackToolkit(store=store).get_tools()
    model = ScriptedChatModel(
        script=[tool_call("search_positive_memory", {"query": "reset password"}), LIKED_A]
    )
    agent = create_agent(model, tools, checkpointer=InMemorySaver())
    handler = FeedbackCallbackHandler(store)
    cfg = {"configurable": {"thread_id": "t", "user_id": "alice"}, "callbacks": [handler]}
    result = agent.invoke({"messages": [("user", "How do I reset it?")]}, cfg)
    tool_message = result["messages"][2]
    assert LIKED_A in tool_message.content and liked in tool_message.content  # text for the model
    assert [d.metadata["qa_id"] for d in tool_message.artifact] == [liked]
    [entry] = store.get_session("t", user="alice")
    assert (entry.answer, entry.memory_ids, entry.memory_sessions) == (
        LIKED_A,
        [liked],
        {liked: "old"},
    )


def test_a_memory_retriever_tool_in_an_agent_counts_too(store: SessionStore) -> None:
    liked = liked_turn(store)
    memory_tool = create_retriever_tool(
        PositiveMemoryRetriever(store=store, user="alice"), "liked", "Answers the user liked."
    )
    articles_tool = create_retriever_tool(Articles(), "articles", "Help articles.")
    model = ScriptedChatModel(
        script=[
            tool_call("articles", {"query": "reset password"}),
            tool_call("liked", {"query": "reset password"}),
            "Use the link.",
        ]
    )
    agent = create_agent(model, [memory_tool, articles_tool], checkpointer=InMemorySaver())
    cfg = {
        "configurable": {"thread_id": "t", "user_id": "alice"},
        "callbacks": [FeedbackCallbackHandler(store)],
    }
    agent.invoke({"messages": [("user", "reset?")]}, cfg)
    [entry] = store.get_session("t", user="alice")
    assert (entry.memory_ids, entry.memory_sessions) == ([liked], {liked: "old"})
    assert ARTICLE in entry.context


# -- the rule, end to end -------------------------------------------------------------------


def rate_down_twice(store: SessionStore, liked: str, answers: list[str]) -> None:
    """The two answers ``liked`` fed are rated down: the first leaves it in memory,
    the second takes it out; liking it again brings it back."""
    first, second = answers
    assert remembered(store, liked)
    assert store.thumbs("s", first, up=False, user="alice")
    assert remembered(store, liked)  # one disliked answer is not enough
    assert store.thumbs("s", second, up=False, user="alice")
    assert not remembered(store, liked)
    memory = store.get_entry("old", liked, user="alice")
    assert memory is not None and memory.hurts and not memory.remembered
    assert memory.feedback_score == 5  # its own rating is untouched
    assert store.thumbs("old", liked, up=True, user="alice")  # liked again: a fresh record
    assert remembered(store, liked)


def test_a_memory_that_fed_two_disliked_chain_answers_leaves_memory(
    any_store: SessionStore,
) -> None:
    store = any_store
    liked = liked_turn(store)
    chain = rag_chain(store, ScriptedChatModel(script=["Reinstall.", "Reinstall again."]))
    answers = [run(chain, "reset password?", store) for _ in range(2)]
    for qa in answers:
        entry = store.get_entry("s", qa, user="alice")
        assert entry is not None and entry.memory_ids == [liked]
    rate_down_twice(store, liked, answers)
    again = run(rag_chain(store, ScriptedChatModel(script=["ok"])), "reset password?", store)
    entry = store.get_entry("s", again, user="alice")
    assert entry is not None and entry.memory_ids == [liked]  # it is handed out again


def test_a_memory_the_middleware_injected_into_two_disliked_answers_leaves_memory(
    any_store: SessionStore,
) -> None:
    store = any_store
    liked = liked_turn(store)
    model = ScriptedChatModel(script=["Reinstall.", "Reinstall again.", "x", "y"])
    agent = create_agent(
        model, [], middleware=[FeedbackMiddleware(store)], checkpointer=InMemorySaver()
    )
    cfg = {"configurable": {"thread_id": "s", "user_id": "alice"}}
    answers = [
        agent.invoke({"messages": [("user", "password reset?")]}, cfg)["feedback_qa_id"]
        for _ in range(2)
    ]
    assert [store.get_entry("s", qa, user="alice").memory_ids for qa in answers] == [  # type: ignore[union-attr]
        [liked],
        [liked],
    ]
    assert all(LIKED_A in prompt for prompt in model.system_prompts())
    assert store.thumbs("s", answers[0], up=False, user="alice")
    assert store.thumbs("s", answers[1], up=False, user="alice")
    third = agent.invoke({"messages": [("user", "password reset?")]}, cfg)["feedback_qa_id"]
    assert LIKED_A not in model.system_prompts()[2]  # no longer shown to the model
    entry = store.get_entry("s", third, user="alice")
    assert entry is not None and entry.memory_ids == []
    assert not remembered(store, liked)
    assert store.thumbs("old", liked, up=True, user="alice")
    agent.invoke({"messages": [("user", "password reset?")]}, cfg)
    assert LIKED_A in model.system_prompts()[3]


@pytest.mark.parametrize("memory", [False, True])
def test_memories_a_middleware_agents_tools_return_are_its_memory_ids(
    store: SessionStore, memory: bool
) -> None:
    """In an agent recorded by FeedbackMiddleware (the handler skips its runs), the
    memories its tools hand the model count too: a PositiveMemoryRetriever behind a
    retriever tool, and search_positive_memory's artifact; an ordinary retriever's
    documents stay context only; the next turn starts with none."""
    liked = liked_turn(store)
    memory_tool = create_retriever_tool(
        PositiveMemoryRetriever(store=store, user="alice"), "liked", "Answers the user liked."
    )
    articles_tool = create_retriever_tool(Articles(), "articles", "Help articles.")
    search = next(
        t for t in FeedbackToolkit(store=store).get_tools() if t.name == "search_positive_memory"
    )
    model = ScriptedChatModel(
        script=[
            tool_call("articles", {"query": "reset password"}),
            tool_call("liked", {"query": "reset password"}),
            "Use the link.",
            tool_call("search_positive_memory", {"query": "reset password"}),
            "Use the link again.",
            "Hello.",
        ]
    )
    agent = create_agent(
        model,
        [memory_tool, articles_tool, search],
        middleware=[FeedbackMiddleware(store, memory=memory)],
        checkpointer=InMemorySaver(),
    )
    cfg = {"configurable": {"thread_id": "t", "user_id": "alice"}}
    turns = [
        agent.invoke({"messages": [("user", q)]}, cfg)["feedback_qa_id"]
        for q in ("reset?", "and again?", "thanks, bye")
    ]
    entries = [store.get_entry("t", qa, user="alice") for qa in turns]
    assert entries[0] is not None and ARTICLE in entries[0].context
    assert entries[0].memory_ids == [liked] and entries[0].memory_sessions == {liked: "old"}
    assert entries[1] is not None and entries[1].memory_ids == [liked]
    assert entries[2] is not None and entries[2].memory_ids == []  # a new turn starts clean
