"""The handler, PositiveMemoryRetriever and FeedbackToolkit, on every backend.

Covers docs/api.md (handler, retriever, toolkit) and the memory issue:
only positive turns, ranked, per user, and memory follows feedback at once
-- also when the change is made by another process.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.language_models import FakeListChatModel
from langchain_core.messages import ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.tools import BaseTool

from feedback_plugin import (
    FeedbackCallbackHandler,
    FeedbackToolkit,
    PositiveMemoryRetriever,
    SessionStore,
)

from .conftest import Stores

PROMPT = ChatPromptTemplate.from_messages(
    [("system", "You are a helpful assistant."), ("human", "{question}")]
)

PASSWORD_Q, PASSWORD_A = "How do I reset my password?", "Settings > Security > Reset."
FILLER = [
    ("What is the capital of France?", "Paris."),
    ("How many legs does a spider have?", "Eight."),
    ("Which planet is closest to the sun?", "Mercury."),
    ("Who wrote Hamlet?", "Shakespeare."),
]


def chain(*responses: str) -> Runnable[Any, str]:
    return PROMPT | FakeListChatModel(responses=list(responses)) | StrOutputParser()


def turn(
    store: SessionStore,
    session_id: str,
    question: str,
    answer: str,
    score: int | None = 5,
    user: str | None = None,
) -> str:
    qa = store.record(session_id, question, answer, user=user).qa_id
    if score is not None:
        assert store.add_feedback(session_id, qa, None, score, user=user)
    return qa


def qa_ids(docs: list[Document]) -> list[str]:
    return [d.metadata["qa_id"] for d in docs]


def memory(store: SessionStore, **kw: Any) -> PositiveMemoryRetriever:
    kw.setdefault("k", 10)
    return PositiveMemoryRetriever(store=store, **kw)


# -- the handler records a real chain -------------------------------------------------


def test_handler_records_a_prompt_model_parser_chain(backend_store: SessionStore) -> None:
    handler = FeedbackCallbackHandler(backend_store)
    c = chain("First answer.", "Second answer.")
    run_id = uuid.uuid4()
    config: Any = {
        "callbacks": [handler],
        "metadata": {"session_id": "chat-1", "user_id": "alice"},
        "run_id": run_id,
    }
    assert c.invoke({"question": "Hello?"}, config=config) == "First answer."
    config2 = {**config, "run_id": None}
    assert c.invoke({"question": "And then?"}, config=config2) == "Second answer."
    got = backend_store.get_session("chat-1", user="alice")
    assert [(e.question, e.answer) for e in got] == [
        ("Hello?", "First answer."),
        ("And then?", "Second answer."),
    ]
    assert got[0].qa_id == str(run_id)
    assert got[0].session_id == "chat-1" and got[0].user_id == "alice"
    assert got[0].context == []
    assert backend_store.get_session("chat-1") == []  # recorded for alice only
    # the recorded turn can be rated and then remembered
    assert backend_store.thumbs("chat-1", str(run_id), up=True, user="alice")
    assert qa_ids(memory(backend_store, user="alice").invoke("hello")) == [str(run_id)]


def test_handler_batch_stream_and_async(backend_store: SessionStore) -> None:
    handler = FeedbackCallbackHandler(backend_store, session_id="default-session")
    c = PROMPT | RunnableLambda(lambda p: f"echo {p.to_messages()[-1].content}")
    cfg: Any = {"callbacks": [handler]}
    c.batch([{"question": f"b{i}"} for i in range(4)], config=cfg)
    assert "".join(c.stream({"question": "s"}, config=cfg)) == "echo s"
    assert asyncio.run(c.ainvoke({"question": "a"}, config=cfg)) == "echo a"
    got = backend_store.get_session("default-session")
    assert sorted((e.question, e.answer) for e in got) == sorted(
        [(f"b{i}", f"echo b{i}") for i in range(4)] + [("s", "echo s"), ("a", "echo a")]
    )


def test_handler_records_nothing_without_a_session_or_on_failure(
    backend_store: SessionStore,
) -> None:
    handler = FeedbackCallbackHandler(backend_store)
    assert chain("ok").invoke({"question": "q"}, config={"callbacks": [handler]}) == "ok"

    def boom(_: Any) -> str:
        raise KeyError("user bug")

    failing = PROMPT | FakeListChatModel(responses=["x"]) | RunnableLambda(boom)
    with pytest.raises(KeyError, match="user bug"):
        failing.invoke(
            {"question": "q"}, config={"callbacks": [handler], "metadata": {"session_id": "s1"}}
        )
    assert backend_store.get_session("s1") == []
    assert list(backend_store.iter_entries()) == []


# -- PositiveMemoryRetriever -----------------------------------------------------------


def test_only_positive_turns_are_returned(backend_store: SessionStore) -> None:
    s = backend_store
    liked5 = turn(s, "s1", "reset password five", "a", score=5)
    liked4 = turn(s, "s2", "reset password four", "a", score=4)
    turn(s, "s3", "reset password three", "a", score=3)
    turn(s, "s4", "reset password one", "a", score=1)
    turn(s, "s5", "reset password unrated", "a", score=None)
    text_only = s.record("s6", "reset password comment", "a").qa_id
    assert s.add_feedback("s6", text_only, "a comment, no score")
    got = memory(s).invoke("reset password")
    assert sorted(qa_ids(got)) == sorted([liked5, liked4])
    assert all(d.metadata["feedback_score"] >= 4 for d in got)
    assert sorted(qa_ids(memory(s, min_score=5).invoke("reset password"))) == [liked5]
    assert len(memory(s, min_score=3).invoke("reset password")) == 3
    assert len(memory(s, min_score=1).invoke("reset password")) == 4


def test_ranked_by_relevance(backend_store: SessionStore) -> None:
    s = backend_store
    for i, (q, a) in enumerate(FILLER):
        turn(s, f"filler-{i}", q, a)
    target = turn(s, "s1", PASSWORD_Q, PASSWORD_A)
    partial = turn(s, "s2", "Where do I find my settings?", "Top right.")
    docs = memory(s).invoke("reset my password")
    assert qa_ids(docs)[0] == target
    docs = memory(s).invoke("capital of France")
    assert docs[0].metadata["answer"] == "Paris."
    docs = memory(s, k=1).invoke("settings")
    assert qa_ids(docs) == [partial]


def test_document_content_and_metadata(backend_store: SessionStore) -> None:
    qa = turn(backend_store, "s1", PASSWORD_Q, PASSWORD_A)
    assert backend_store.add_feedback("s1", qa, "spot on")
    (doc,) = memory(backend_store).invoke("password")
    assert PASSWORD_Q in doc.page_content and PASSWORD_A in doc.page_content
    meta = doc.metadata
    for key in ("qa_id", "session_id", "question", "answer", "feedback_score", "feedback_text"):
        assert key in meta
    assert (meta["qa_id"], meta["session_id"]) == (qa, "s1")
    assert (meta["question"], meta["answer"]) == (PASSWORD_Q, PASSWORD_A)
    assert (meta["feedback_score"], meta["feedback_text"]) == (5, "spot on")
    assert meta["time"]


def test_user_and_session_scoping(backend_store: SessionStore) -> None:
    s = backend_store
    alice = turn(s, "s1", PASSWORD_Q, "alice's answer", user="alice")
    alice2 = turn(s, "s2", "password again", "alice's other answer", user="alice")
    bob = turn(s, "s1", PASSWORD_Q, "bob's answer", user="bob")
    anon = turn(s, "s1", PASSWORD_Q, "anonymous answer")
    assert sorted(qa_ids(memory(s, user="alice").invoke("password"))) == sorted([alice, alice2])
    assert qa_ids(memory(s, user="bob").invoke("password")) == [bob]
    assert qa_ids(memory(s).invoke("password")) == [anon]
    assert memory(s, user="carol").invoke("password") == []
    assert qa_ids(memory(s, user="alice", session_id="s2").invoke("password")) == [alice2]


def test_memory_follows_feedback_at_once(backend_store: SessionStore) -> None:
    s = backend_store
    for i, (q, a) in enumerate(FILLER):
        turn(s, f"filler-{i}", q, a)
    qa = turn(s, "s1", PASSWORD_Q, PASSWORD_A, score=None)
    r = memory(s)

    def returned() -> bool:
        return qa in qa_ids(r.invoke("reset password"))

    assert not returned()
    steps: list[tuple[Any, bool]] = [
        (lambda: s.thumbs("s1", qa, up=True), True),
        (lambda: s.thumbs("s1", qa, up=False), False),
        (lambda: s.add_feedback("s1", qa, feedback_score=4), True),
        (lambda: s.add_feedback("s1", qa, feedback_score=3), False),
        (lambda: s.add_feedback("s1", qa, feedback_score=5), True),
        (lambda: s.add_feedback("s1", qa, feedback_text="thanks"), True),  # keeps the score
        (lambda: s.delete_feedback("s1", qa), False),
        (lambda: s.thumbs("s1", qa, up=True), True),
        (lambda: s.delete_session("s1"), False),
    ]
    for change, expected in steps:
        assert change()
        assert returned() is expected


def test_two_store_objects_see_each_others_changes(stores: Stores) -> None:
    a, b = stores(), stores()
    qa = turn(a, "s1", PASSWORD_Q, PASSWORD_A, score=None)
    a.flush()
    rb = memory(b)
    assert rb.invoke("password") == []
    assert a.thumbs("s1", qa, up=True)
    assert qa_ids(rb.invoke("password")) == [qa]
    assert a.thumbs("s1", qa, up=False)
    assert rb.invoke("password") == []
    assert a.add_feedback("s1", qa, feedback_score=4)
    assert qa_ids(rb.invoke("password")) == [qa]
    assert a.delete_feedback("s1", qa)
    assert rb.invoke("password") == []


def test_a_change_made_by_another_process_is_seen_by_the_very_next_query(
    stores: Stores, popen_child: Any
) -> None:
    s = stores()
    for i, (q, a) in enumerate(FILLER):
        turn(s, f"filler-{i}", q, a)
    qa = turn(s, "s1", PASSWORD_Q, PASSWORD_A, score=None)
    s.flush()
    r = memory(s)
    assert qa not in qa_ids(r.invoke("reset password"))  # the index is built in this process
    # one child makes a series of changes; after each it waits for this process to query
    proc_code = f"""
        s = open_store()
        for call in [
            lambda: s.thumbs("s1", {qa!r}, up=True),
            lambda: s.thumbs("s1", {qa!r}, up=False),
            lambda: s.add_feedback("s1", {qa!r}, feedback_score=4),
            lambda: s.delete_feedback("s1", {qa!r}),
        ]:
            assert call()
            print("changed", flush=True)
            assert sys.stdin.readline().strip() == "next"
        s.close()
    """
    child = popen_child(proc_code)
    assert child.stdin is not None and child.stdout is not None
    for expected in (True, False, True, False):
        assert child.stdout.readline().strip() == "changed"
        assert (qa in qa_ids(r.invoke("reset password"))) is expected
        child.stdin.write("next\n")
        child.stdin.flush()
    assert child.wait(timeout=30) == 0
    # and this process' own change is again seen at once, after the others'
    assert s.thumbs("s1", qa, up=True)
    assert qa in qa_ids(r.invoke("reset password"))


def test_memory_stays_right_when_the_change_feed_is_trimmed(stores: Stores) -> None:
    """More changes than the Redis change stream keeps happen between two queries of a
    process (here: a stream of 10): that process must notice and rebuild its index."""

    def small_feed() -> SessionStore:
        if not stores.is_redis:
            return stores()
        from feedback_plugin.backends.redis import RedisBackend

        backend = RedisBackend(stores.location, namespace=stores.namespace, stream_maxlen=10)
        store = SessionStore(backend=backend, namespace=stores.namespace)
        stores.adopt(store)
        return store

    reader, writer = small_feed(), small_feed()
    assert memory(reader).invoke("password") == []  # the reader's index: built, feed empty
    qa = turn(writer, "s1", PASSWORD_Q, PASSWORD_A)  # change 1: liked
    other = turn(writer, "s2", "filler question", "filler", score=None)
    for i in range(300):  # 300 more changes push change 1 out of the stream
        assert writer.thumbs("s2", other, up=i % 2 == 1)
    assert qa_ids(memory(reader).invoke("password")) == [qa]
    assert writer.thumbs("s1", qa, up=False)  # and the reader keeps following
    assert memory(reader).invoke("password") == []
    for i in range(300):
        assert writer.thumbs("s2", other, up=i % 2 == 1)
    assert writer.thumbs("s1", qa, up=True)
    assert qa_ids(memory(reader).invoke("password")) == [qa]


# -- FeedbackToolkit ------------------------------------------------------------------------


def tools(store: SessionStore, **kw: Any) -> dict[str, BaseTool]:
    return {t.name: t for t in FeedbackToolkit(store=store, **kw).get_tools()}


@pytest.mark.parametrize(
    "args",
    [
        {"feedback_score": 9},
        {"feedback_score": 0},
        {"feedback_score": True},
        {"feedback_score": "5"},
        {"feedback_score": 4.5},
        {},
        {"feedback_text": "   "},
        {"qa_id": "no-such-turn", "feedback_score": 5},
        {"qa_id": "", "feedback_score": 5},
        {"session_id": "other-session", "feedback_score": 5},
    ],
)
def test_add_feedback_tool_errors_are_strings_and_change_nothing(
    backend_store: SessionStore, args: dict[str, Any]
) -> None:
    qa = backend_store.record("s1", PASSWORD_Q, PASSWORD_A).qa_id
    assert backend_store.add_feedback("s1", qa, "fine", 4)
    before = backend_store.get_session("s1")
    result = tools(backend_store, session_id="s1")["add_feedback"].invoke({"qa_id": qa, **args})
    assert isinstance(result, str) and result.startswith("Error:"), result
    assert backend_store.get_session("s1") == before


def test_toolkit_round_trip_and_error_strings(backend_store: SessionStore) -> None:
    s = backend_store
    qa = s.record("s1", PASSWORD_Q, PASSWORD_A, user="alice").qa_id
    t = tools(s, session_id="s1", user="alice")
    assert [*t] == ["add_feedback", "clear_feedback", "search_positive_memory"]
    assert (
        tools(s)["add_feedback"].invoke({"qa_id": qa, "feedback_score": 5}).startswith("Error:")
    )  # no session anywhere
    assert (
        tools(s, session_id="s1")["add_feedback"]
        .invoke({"qa_id": qa, "feedback_score": 5})
        .startswith("Error:")
    )  # another user's turn
    assert t["clear_feedback"].invoke({"qa_id": "no-such-turn"}).startswith("Error:")
    assert t["search_positive_memory"].invoke({"query": 5}).startswith("Error:")
    assert PASSWORD_A not in t["search_positive_memory"].invoke({"query": "password"})

    assert not t["add_feedback"].invoke({"qa_id": qa, "feedback_score": 5}).startswith("Error")
    assert PASSWORD_A in t["search_positive_memory"].invoke({"query": "password"})
    msg = t["add_feedback"].invoke(
        {
            "name": "add_feedback",
            "args": {"qa_id": qa, "feedback_score": 9},
            "id": "c1",
            "type": "tool_call",
        }
    )
    assert isinstance(msg, ToolMessage) and msg.status == "error"
    assert str(msg.content).startswith("Error:")
    assert not t["clear_feedback"].invoke({"qa_id": qa}).startswith("Error")
    assert s.get_session("s1", user="alice")[0].feedback_score is None
    assert PASSWORD_A not in t["search_positive_memory"].invoke({"query": "password"})
