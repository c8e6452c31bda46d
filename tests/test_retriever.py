"""PositiveMemoryRetriever: the contract in docs/api.md and the memory issue."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding

from feedback_plugin import PositiveMemoryRetriever, SessionStore

REPO = Path(__file__).resolve().parents[1]

FILLER = [
    ("What is the capital of France?", "Paris."),
    ("How many legs does a spider have?", "Eight."),
    ("Which planet is closest to the sun?", "Mercury."),
    ("Who wrote Hamlet?", "Shakespeare."),
]


def turn(
    store: SessionStore,
    session_id: str,
    question: str,
    answer: str,
    *,
    score: int | None = 5,
    user: str | None = None,
    text: str | None = None,
    correction: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> str:
    """Record a turn (on disk at once) and rate it; return its qa_id."""
    e = store.record(session_id, question, answer, user=user, metadata=metadata, wait=True)
    if score is not None or text is not None or correction is not None:
        assert store.add_feedback(
            session_id, e.qa_id, text, score, user=user, correction=correction
        )
    return e.qa_id


def qa_ids(docs: list[Document]) -> list[str]:
    return [d.metadata["qa_id"] for d in docs]


def fill(store: SessionStore, user: str | None = None) -> None:
    for i, (q, a) in enumerate(FILLER):
        turn(store, f"filler-{i}", q, a, user=user)


def retriever(store: SessionStore, **kw: Any) -> PositiveMemoryRetriever:
    kw.setdefault("k", 10)
    return PositiveMemoryRetriever(store=store, **kw)


# -- which turns come back ---------------------------------------------------------


def test_only_positive_turns_are_returned(store: SessionStore) -> None:
    up = turn(store, "s1", "How do I reset my password?", "Settings > Security.", score=5)
    four = turn(store, "s1", "How do I reset my password twice?", "Do it again.", score=4)
    three = turn(store, "s1", "Can I reset the password by mail?", "Maybe.", score=3)
    down = turn(store, "s1", "Password reset does not work", "Buy a new laptop.", score=1)
    text_only = turn(store, "s1", "Reset password link?", "No idea.", score=None, text="meh")
    unrated = store.record("s1", "Reset password please", "Sure.", wait=True).qa_id

    got = set(qa_ids(retriever(store).invoke("reset password")))
    assert got == {up, four}
    assert not got & {three, down, text_only, unrated}


def test_min_score_is_configurable_and_thumbs_down_never_returns(store: SessionStore) -> None:
    five = turn(store, "s1", "reset password one", "a", score=5)
    four = turn(store, "s1", "reset password two", "b", score=4)
    three = turn(store, "s1", "reset password three", "c", score=3)
    two = turn(store, "s1", "reset password four", "d", score=2)
    down = store.record("s1", "reset password five", "e", wait=True).qa_id
    assert store.thumbs("s1", down, up=False)

    assert set(qa_ids(retriever(store, min_score=5).invoke("password"))) == {five}
    assert set(qa_ids(retriever(store, min_score=3).invoke("password"))) == {five, four, three}
    at_two = set(qa_ids(retriever(store, min_score=2).invoke("password")))
    assert at_two == {five, four, three, two}
    assert down not in at_two


@pytest.mark.parametrize("bad", [0, 6, True, 4.0, "4"])
def test_bad_min_score_is_rejected(store: SessionStore, bad: Any) -> None:
    with pytest.raises(ValueError):
        PositiveMemoryRetriever(store=store, min_score=bad)


def test_ranked_by_relevance_best_match_first(store: SessionStore) -> None:
    # The best match is the oldest and the partial match the newest: not recency.
    best = turn(store, "s1", "How do I reset my password?", "Use the settings page.")
    fill(store)
    partial = turn(store, "s2", "Where is the password policy?", "In the wiki.")
    docs = retriever(store).invoke("reset my password")
    assert qa_ids(docs)[0] == best
    assert partial in qa_ids(docs)
    france = retriever(store).invoke("capital of France")
    assert france[0].metadata["answer"] == "Paris."


def test_ranking_follows_the_query_not_insertion_order(store: SessionStore) -> None:
    a = turn(store, "s1", "How do I export a report to PDF?", "File > Export > PDF.")
    b = turn(store, "s1", "How do I import contacts from CSV?", "Contacts > Import.")
    fill(store)
    assert qa_ids(retriever(store, k=1).invoke("export report pdf")) == [a]
    assert qa_ids(retriever(store, k=1).invoke("import csv contacts")) == [b]


def test_across_all_sessions_or_one_session(store: SessionStore) -> None:
    s1 = turn(store, "s1", "reset password in app", "Tap settings.")
    s2 = turn(store, "s2", "reset password on web", "Click settings.")
    assert set(qa_ids(retriever(store).invoke("reset password"))) == {s1, s2}
    assert qa_ids(retriever(store, session_id="s2").invoke("reset password")) == [s2]
    assert retriever(store, session_id="s3").invoke("reset password") == []


def test_user_scoping(store: SessionStore) -> None:
    alice = turn(store, "s1", "How do I reset my password?", "alice's answer", user="alice")
    bob = turn(store, "s1", "How do I reset my password?", "bob's answer", user="bob")
    assert qa_ids(retriever(store, user="alice").invoke("reset password")) == [alice]
    assert qa_ids(retriever(store, user="bob").invoke("reset password")) == [bob]
    assert retriever(store, user=None).invoke("reset password") == []
    assert retriever(store, user="carol").invoke("reset password") == []
    assert retriever(store, user=None).invoke("") == []
    # bob cannot un-like alice's turn
    assert not store.delete_feedback("s1", alice, user="bob")
    assert qa_ids(retriever(store, user="alice").invoke("password")) == [alice]


def test_k_limits_the_number_of_documents(store: SessionStore) -> None:
    for i in range(6):
        turn(store, f"s{i}", f"reset password variant {i}", f"answer {i}")
    assert len(PositiveMemoryRetriever(store=store).invoke("reset password")) == 4  # default
    assert len(retriever(store, k=2).invoke("reset password")) == 2
    assert len(retriever(store, k=1).invoke("reset password")) == 1
    assert len(retriever(store, k=50).invoke("reset password")) == 6
    assert len(retriever(store, k=5).invoke("reset password", k=3)) == 3
    with pytest.raises(ValueError):
        PositiveMemoryRetriever(store=store, k=0)


def test_document_content_and_metadata(store: SessionStore) -> None:
    qa = turn(
        store, "s1", "How do I reset my password?", "Settings > Security.", score=5, text="great"
    )
    (doc,) = retriever(store).invoke("password")
    assert "How do I reset my password?" in doc.page_content
    assert "Settings > Security." in doc.page_content
    md = doc.metadata
    assert md["qa_id"] == qa
    assert md["session_id"] == "s1"
    assert md["question"] == "How do I reset my password?"
    assert md["answer"] == "Settings > Security."
    assert md["feedback_score"] == 5
    assert md["feedback_text"] == "great"
    stored = store.get_entry("s1", qa)
    assert stored is not None
    recorded = md["time"]
    if isinstance(recorded, str):
        recorded = datetime.fromisoformat(recorded)
    assert recorded == stored.time
    assert recorded.tzinfo is not None


# -- memory follows feedback at once ---------------------------------------------


def test_memory_follows_feedback_at_once(store: SessionStore) -> None:
    fill(store)
    qa = turn(store, "s1", "How do I reset my password?", "Settings > Security.", score=None)
    r = retriever(store)

    def returned() -> bool:
        return qa in qa_ids(r.invoke("reset password"))

    assert not returned()
    assert store.thumbs("s1", qa, up=True)
    assert returned()
    assert store.thumbs("s1", qa, up=False)
    assert not returned()
    assert store.thumbs("s1", qa, up=True)
    assert returned()
    assert store.delete_feedback("s1", qa)
    assert not returned()
    assert store.add_feedback("s1", qa, feedback_score=4)
    assert returned()
    assert store.add_feedback("s1", qa, feedback_score=3)
    assert not returned()
    assert store.add_feedback("s1", qa, feedback_score=5)
    assert returned()
    # a comment alone keeps the score: still remembered
    assert store.add_feedback("s1", qa, feedback_text="thanks")
    assert returned()


def test_queued_turn_rated_at_once_is_remembered(store: SessionStore) -> None:
    # record() queues (write-behind); rating and querying right away still works
    qa = store.record("s1", "How do I reset my password?", "Settings.").qa_id
    assert store.thumbs("s1", qa, up=True)
    assert qa_ids(retriever(store).invoke("password")) == [qa]


def test_memory_follows_feedback_with_empty_query_too(store: SessionStore) -> None:
    qa = turn(store, "s1", "How do I reset my password?", "Settings.")
    r = retriever(store)
    assert qa_ids(r.invoke("")) == [qa]
    assert store.delete_feedback("s1", qa)
    assert r.invoke("") == []


def _run_python(code: str) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True", proc.stdout + proc.stderr


@pytest.mark.slow
def test_memory_follows_feedback_across_processes(store: SessionStore, store_dir: Path) -> None:
    fill(store)
    qa = turn(store, "s1", "How do I reset my password?", "Settings > Security.", score=None)
    r = retriever(store)
    assert qa not in qa_ids(r.invoke("reset password"))  # the index is open in this process

    rate = """
        from feedback_plugin import SessionStore
        s = SessionStore({dir!r})
        print(s.{call})
        s.close()
    """
    _run_python(rate.format(dir=str(store_dir), call=f"thumbs('s1', {qa!r}, up=True)"))
    assert qa in qa_ids(r.invoke("reset password"))

    _run_python(rate.format(dir=str(store_dir), call=f"thumbs('s1', {qa!r}, up=False)"))
    assert qa not in qa_ids(r.invoke("reset password"))

    assert store.add_feedback("s1", qa, None, 5)  # this process likes it again ...
    assert qa in qa_ids(r.invoke("reset password"))

    # ... and another process clears the rating
    _run_python(rate.format(dir=str(store_dir), call=f"delete_feedback('s1', {qa!r})"))
    assert qa not in qa_ids(r.invoke("reset password"))


def test_two_stores_on_one_directory_see_each_others_changes(store_dir: Path) -> None:
    with SessionStore(store_dir) as a, SessionStore(store_dir) as b:
        qa = turn(a, "s1", "How do I reset my password?", "Settings.", score=None)
        rb = retriever(b)
        assert rb.invoke("password") == []
        assert a.thumbs("s1", qa, up=True)
        assert qa_ids(rb.invoke("password")) == [qa]
        assert a.thumbs("s1", qa, up=False)
        assert rb.invoke("password") == []


# -- corrections ------------------------------------------------------------------


def test_correction_replaces_the_answer(store: SessionStore) -> None:
    qa = turn(
        store, "s1", "How do I reset my router?", "Throw it away.", correction="Hold reset 10 s."
    )
    (doc,) = retriever(store).invoke("reset router")
    assert doc.metadata["qa_id"] == qa
    assert doc.metadata["answer"] == "Hold reset 10 s."
    assert "Hold reset 10 s." in doc.page_content
    assert "Throw it away." not in doc.page_content
    entry = store.get_entry("s1", qa)
    assert entry is not None and entry.answer == "Throw it away."  # the original is kept


def test_thumbs_down_with_correction_is_returned_with_the_corrected_answer(
    store: SessionStore,
) -> None:
    # add_feedback's docstring: memory returns the corrected answer, whatever the score.
    qa = turn(
        store,
        "s1",
        "How do I reset my router?",
        "Throw it away.",
        score=1,
        correction="Hold reset 10 s.",
    )
    plain_down = turn(store, "s1", "How do I reset my modem?", "Burn it.", score=1)
    docs = retriever(store).invoke("reset router modem")
    assert qa_ids(docs) == [qa]
    assert plain_down not in qa_ids(docs)
    assert docs[0].metadata["answer"] == "Hold reset 10 s."
    assert docs[0].metadata["feedback_score"] == 1


def test_correction_added_later_and_cleared(store: SessionStore) -> None:
    qa = turn(store, "s1", "How do I reset my router?", "Throw it away.", score=1)
    r = retriever(store)
    assert r.invoke("router") == []
    assert store.add_feedback("s1", qa, correction="Hold reset 10 s.")
    (doc,) = r.invoke("router")
    assert doc.metadata["answer"] == "Hold reset 10 s."
    # the corrected answer is what is searchable
    assert qa_ids(r.invoke("hold")) == [qa]
    assert store.delete_feedback("s1", qa)
    assert r.invoke("router") == []
    assert r.invoke("hold") == []


# -- options ----------------------------------------------------------------------


def test_metadata_filter(store: SessionStore) -> None:
    v1 = turn(store, "s1", "reset password", "old prompt", metadata={"prompt_version": "v1"})
    v2 = turn(store, "s1", "reset password", "new prompt", metadata={"prompt_version": "v2"})
    none = turn(store, "s1", "reset password", "no version")
    r = retriever(store, metadata_filter={"prompt_version": "v2"})
    assert qa_ids(r.invoke("reset password")) == [v2]
    assert qa_ids(r.invoke("")) == [v2]
    assert set(qa_ids(retriever(store).invoke("reset password"))) == {v1, v2, none}
    assert retriever(store, metadata_filter={"prompt_version": "v3"}).invoke("password") == []


def test_metadata_filter_with_many_non_matching_better_hits(store: SessionStore) -> None:
    # More better-matching turns fail the filter than any fixed candidate pool.
    target = turn(store, "s1", "password", "target", metadata={"team": "b"})
    for i in range(150):
        turn(store, f"x{i}", "password password reset", f"other {i}", metadata={"team": "a"})
    r = retriever(store, k=1, metadata_filter={"team": "b"})
    assert qa_ids(r.invoke("password reset")) == [target]


def test_time_window(store: SessionStore) -> None:
    first = turn(store, "s1", "reset password first", "a")
    first_time = store.get_entry("s1", first).time  # type: ignore[union-attr]
    second = turn(store, "s1", "reset password second", "b")
    second_time = store.get_entry("s1", second).time  # type: ignore[union-attr]
    assert first_time < second_time

    between = first_time + (second_time - first_time) / 2
    assert qa_ids(retriever(store, since=between).invoke("password")) == [second]
    assert qa_ids(retriever(store, until=between).invoke("password")) == [first]
    both = retriever(store, since=first_time, until=second_time).invoke("password")
    assert set(qa_ids(both)) == {first, second}
    future = datetime.now(timezone.utc) + timedelta(days=1)
    assert retriever(store, since=future).invoke("password") == []
    past = datetime(2000, 1, 1, tzinfo=timezone.utc)
    assert retriever(store, until=past).invoke("password") == []


def test_min_relevance_drops_weak_matches(store: SessionStore) -> None:
    fill(store)
    strong = turn(store, "s1", "How do I reset my password?", "Settings > Security.")
    weak = turn(store, "s2", "What about my account password?", "Ask support.")
    docs = retriever(store).invoke("reset my password")
    rel = {d.metadata["qa_id"]: d.metadata["relevance"] for d in docs}
    assert rel[strong] > rel[weak]
    threshold = (rel[strong] + rel[weak]) / 2
    assert qa_ids(retriever(store, min_relevance=threshold).invoke("reset my password")) == [strong]
    assert retriever(store, min_relevance=rel[strong] * 10 + 1).invoke("reset my password") == []


@pytest.mark.parametrize(
    "query",
    [
        "",
        "   ",
        "?!",
        "...;;;",
        "x" * 10_000,
        "reset password " * 700,
        "pass\x00word",
        "\x00",
        'AND OR NOT "* ^ NEAR(',
        "reset\x00password",
    ],
)
def test_odd_queries_never_raise(store: SessionStore, query: str) -> None:
    liked = turn(store, "s1", "How do I reset my password?", "Settings.")
    turn(store, "s1", "How do I reset my password now?", "Never.", score=1)
    docs = retriever(store).invoke(query)
    assert isinstance(docs, list)
    assert set(qa_ids(docs)) <= {liked}  # never a disliked turn


def test_nul_in_a_word_query_still_finds_both_halves(store: SessionStore) -> None:
    liked = turn(store, "s1", "How do I reset my password?", "Settings.")
    fill(store)
    assert qa_ids(retriever(store).invoke("reset\x00password"))[0] == liked


def test_long_query_still_ranks(store: SessionStore) -> None:
    liked = turn(store, "s1", "How do I reset my password?", "Settings.")
    fill(store)
    query = "reset password " + "x" * 10_000
    assert qa_ids(retriever(store).invoke(query)) == [liked]


def test_non_string_query_is_an_error(store: SessionStore) -> None:
    with pytest.raises(TypeError):
        retriever(store).invoke(123)  # type: ignore[arg-type]


async def test_ainvoke(store: SessionStore) -> None:
    liked = turn(store, "s1", "How do I reset my password?", "Settings.")
    down = turn(store, "s1", "How do I reset my password again?", "No.", score=1)
    docs = await retriever(store).ainvoke("reset password")
    assert qa_ids(docs) == [liked]
    assert down not in qa_ids(docs)
    assert store.delete_feedback("s1", liked)
    assert await retriever(store).ainvoke("reset password") == []


def test_semantic_ranking_with_fake_embeddings_returns_only_positives(
    store: SessionStore,
) -> None:
    emb = DeterministicFakeEmbedding(size=32)
    liked = {turn(store, f"s{i}", q, a) for i, (q, a) in enumerate(FILLER)}
    liked.add(turn(store, "s9", "How do I reset my password?", "Settings."))
    down = turn(store, "s1", "How do I reset my password fast?", "No.", score=1)
    unrated = store.record("s1", "reset password quickly", "Hmm.", wait=True).qa_id

    r = retriever(store, embeddings=emb)
    r.invoke("warm up")  # the memory starts embedding its liked turns (in the background)
    assert store.memory.wait_embedded(10)
    for query in ["reset password", "", "capital", "?!"]:
        docs = r.invoke(query)
        got = set(qa_ids(docs))
        assert got <= liked
        assert not got & {down, unrated}
    # random vectors mean nothing: the word match comes first
    assert r.invoke("reset password")[0].metadata["question"] == "How do I reset my password?"
    # the exact text of a stored turn embeds identically: it ranks first
    exact = "Question: Who wrote Hamlet?\nAnswer: Shakespeare."
    assert retriever(store, embeddings=emb, k=1).invoke(exact)[0].metadata["answer"] == (
        "Shakespeare."
    )


def test_semantic_ranking_follows_feedback(store: SessionStore) -> None:
    emb = DeterministicFakeEmbedding(size=32)
    qa = turn(store, "s1", "How do I reset my password?", "Settings.")
    r = retriever(store, embeddings=emb)
    assert qa_ids(r.invoke("password")) == [qa]
    assert store.thumbs("s1", qa, up=False)
    assert r.invoke("password") == []
    assert store.thumbs("s1", qa, up=True)
    assert qa_ids(r.invoke("password")) == [qa]


def test_turns_evicted_by_max_entries_stop_being_returned(store_dir: Path) -> None:
    with SessionStore(store_dir, max_entries=2) as s:
        old = turn(s, "s1", "How do I reset my password?", "Settings.")
        r = retriever(s)
        assert qa_ids(r.invoke("password")) == [old]
        s.record("s1", "filler one", "a", wait=True)
        s.record("s1", "filler two", "b", wait=True)
        assert s.get_entry("s1", old) is None  # evicted
        assert r.invoke("password") == []
        assert r.invoke("") == []


def test_a_stale_index_row_is_never_trusted(store: SessionStore) -> None:
    # The index is a candidate generator: if it says "liked" but the store
    # says "disliked" (a crash between the two commits), the store wins.
    qa = turn(store, "s1", "How do I reset my password?", "Settings.", score=1)
    entry = store.get_entry("s1", qa)
    assert entry is not None
    store.memory.apply(entry.model_copy(update={"feedback_score": 5}))
    assert retriever(store).invoke("password") == []
    assert retriever(store).invoke("") == []


def test_deleted_session_stops_being_returned(store: SessionStore) -> None:
    qa = turn(store, "s1", "How do I reset my password?", "Settings.")
    other = turn(store, "s2", "How do I reset my password again?", "Again.")
    assert store.delete_session("s1") == 1
    assert qa_ids(retriever(store).invoke("password")) == [other]
    assert qa not in qa_ids(retriever(store).invoke(""))


def test_retriever_in_a_chain(store: SessionStore) -> None:
    from langchain_core.runnables import RunnableLambda

    turn(store, "s1", "How do I reset my password?", "Settings > Security.")
    chain = retriever(store, k=1) | RunnableLambda(lambda docs: docs[0].metadata["answer"])
    assert chain.invoke("password reset") == "Settings > Security."


def test_store_must_be_a_session_store() -> None:
    with pytest.raises((TypeError, ValueError)):
        PositiveMemoryRetriever(store=object())
