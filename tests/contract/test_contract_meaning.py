"""Memory by meaning, on every backend: vectors made in the background, fused with words.

The embedding model here is a fake that subclasses LangChain's ``Embeddings``:
words map to concepts through a small synonym table, so "I forgot my login
credentials" and "How do I reset my password?" share concepts without sharing
a word. That is enough to check the plumbing -- when a turn is embedded, what
the query path embeds, fusion, scoping, forgetting -- deterministically; the
real model's recall is measured in ``benchmarks/bench_memory.py``.
"""

from __future__ import annotations

import time

import pytest
from _concepts import ConceptEmbeddings

from feedback_plugin import PositiveMemoryRetriever, SessionStore, StoreError
from feedback_plugin.memory import asearch_memory, search_memory

from .conftest import Stores

pytest.importorskip("numpy")


class OtherModel(ConceptEmbeddings):
    model = "concepts-v2"


PAIRS = [  # stored question, answer, a query that shares no content word with it
    ("How do I reset my password?", "Settings > Security.", "I forgot my login credentials"),
    ("Where can I download my invoices?", "Billing > History.", "get a receipt"),
    ("Does the app work offline?", "Yes, notes sync later.", "no internet on a plane"),
    ("Can I switch to a dark theme?", "Appearance > Theme.", "night colours"),
]  # fmt: skip


def _liked(store: SessionStore, user: str | None = None) -> dict[str, str]:
    """Record and like every pair; return {stored question: qa_id}."""
    ids = {}
    for question, answer, _ in PAIRS:
        turn = store.record("s1", question, answer, user=user)
        assert store.thumbs("s1", turn.qa_id, True, user=user)
        ids[question] = turn.qa_id
    return ids


def test_a_paraphrase_finds_its_turn_by_meaning_not_by_words(backend_store: SessionStore) -> None:
    store, emb = backend_store, ConceptEmbeddings()
    ids = _liked(store)
    assert search_memory(store, "I forgot my login credentials", k=1) == []  # no shared word
    search_memory(store, "warm up", embeddings=emb)  # starts the embedder
    assert store.memory.wait_embedded(10)
    for question, _, query in PAIRS:
        found = search_memory(store, query, k=1, embeddings=emb)
        assert [e.qa_id for e, _ in found] == [ids[question]], query
        by_meaning = search_memory(store, query, k=1, embeddings=emb, lexical=False)
        assert [e.qa_id for e, _ in by_meaning] == [ids[question]]
        assert 0 < found[0][1] <= 1.0  # the fused score


def test_turns_are_embedded_in_the_background_and_the_query_embeds_only_itself(
    backend_store: SessionStore,
) -> None:
    store, emb = backend_store, ConceptEmbeddings()
    _liked(store)
    search_memory(store, "receipt", embeddings=emb)
    assert store.memory.wait_embedded(10)
    assert emb.documents == len(PAIRS)  # every liked turn embedded once
    before_docs, before_queries = emb.documents, emb.queries
    for _ in range(3):
        search_memory(store, "get a receipt", embeddings=emb)
    assert emb.documents == before_docs  # no document embedded on the query path
    assert emb.queries == before_queries + 3
    new = store.record("s2", "How do I invite a teammate?", "Share > Invite.")
    store.thumbs("s2", new.qa_id, True)  # becomes memory: embedded without any query
    deadline = time.monotonic() + 10
    while emb.documents == before_docs and time.monotonic() < deadline:
        time.sleep(0.05)
    assert emb.documents == before_docs + 1
    found = search_memory(store, "add a colleague", k=1, embeddings=emb, lexical=False)
    assert [e.qa_id for e, _ in found] == [new.qa_id]


def test_a_rating_lowered_or_cleared_leaves_memory_by_meaning_at_once(
    backend_store: SessionStore,
) -> None:
    store, emb = backend_store, ConceptEmbeddings()
    ids = _liked(store)
    search_memory(store, "x", embeddings=emb)
    assert store.memory.wait_embedded(10)
    target = ids["How do I reset my password?"]
    store.add_feedback("s1", target, feedback_score=1)
    found = search_memory(store, "I forgot my login credentials", embeddings=emb, lexical=False)
    assert target not in [e.qa_id for e, _ in found]
    store.add_feedback("s1", target, feedback_score=5)  # liked again: back, once embedded
    assert store.memory.wait_embedded(10)
    found = search_memory(store, "I forgot my login credentials", k=1, embeddings=emb)
    assert [e.qa_id for e, _ in found] == [target]
    store.delete_feedback("s1", target)
    found = search_memory(store, "I forgot my login credentials", embeddings=emb)
    assert target not in [e.qa_id for e, _ in found]


def test_memory_by_meaning_is_scoped_by_user(backend_store: SessionStore) -> None:
    store, emb = backend_store, ConceptEmbeddings()
    _liked(store, user="al")
    search_memory(store, "x", embeddings=emb, user="al")
    assert store.memory.wait_embedded(10)
    assert search_memory(store, "get a receipt", embeddings=emb, user="bo") == []
    assert search_memory(store, "get a receipt", embeddings=emb, lexical=False) == []
    assert search_memory(store, "get a receipt", embeddings=emb, user="al", k=1)


def test_another_model_re_embeds_every_turn(backend_store: SessionStore) -> None:
    store, first, second = backend_store, ConceptEmbeddings(), OtherModel()
    _liked(store)
    search_memory(store, "x", embeddings=first)
    assert store.memory.wait_embedded(10)
    search_memory(store, "x", embeddings=second)
    assert store.memory.wait_embedded(10)
    assert second.documents == len(PAIRS)
    found = search_memory(store, "no internet on a plane", k=1, embeddings=second, lexical=False)
    assert found and found[0][0].question == "Does the app work offline?"


async def test_async_search_by_meaning_matches_the_sync_one(backend_store: SessionStore) -> None:
    store, emb = backend_store, ConceptEmbeddings()
    _liked(store)
    search_memory(store, "x", embeddings=emb)
    assert store.memory.wait_embedded(10)
    for _, _, query in PAIRS:
        assert await asearch_memory(store, query, embeddings=emb) == search_memory(
            store, query, embeddings=emb
        )
    docs = await PositiveMemoryRetriever(store=store, embeddings=emb, k=1).ainvoke("night colours")
    assert docs[0].metadata["question"] == "Can I switch to a dark theme?"


def test_a_model_that_fails_leaves_memory_by_words_working(
    backend_store: SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(ConceptEmbeddings):
        model = "broken"

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            raise RuntimeError("model server down")

    store, emb = backend_store, Broken()
    ids = _liked(store)
    found = search_memory(store, "How do I reset my password?", k=1, embeddings=emb)
    assert [e.qa_id for e, _ in found] == [ids["How do I reset my password?"]]  # by words
    assert not store.memory.wait_embedded(0.5)


def test_another_process_finds_the_turns_by_meaning(stores: Stores) -> None:
    if not stores().backend.shared_across_processes:
        pytest.skip("a backend of one process")
    from .conftest import run_python

    store, emb = stores(), ConceptEmbeddings()
    ids = _liked(store)
    search_memory(store, "x", embeddings=emb)
    assert store.memory.wait_embedded(10)
    out = run_python(
        """
        import sys
        sys.path.insert(0, "tests")
        from contract.test_contract_meaning import ConceptEmbeddings
        from feedback_plugin.memory import search_memory
        store = open_store()
        emb = ConceptEmbeddings()
        search_memory(store, "warm up", embeddings=emb)  # this process's memory uses it
        assert store.memory.wait_embedded(20)  # diskcache: done already; Redis: its own index
        found = search_memory(store, "get a receipt", k=1, embeddings=emb, lexical=False)
        print(found[0][0].qa_id if found else "none")
        store.close()
        """,
        *stores.subprocess_args(store),
    )
    assert out.stdout.split()[-1] == ids["Where can I download my invoices?"]


def test_the_agent_middleware_shows_a_liked_turn_found_by_meaning(
    backend_store: SessionStore,
) -> None:
    from _fakes import ScriptedChatModel
    from langchain.agents import create_agent
    from langgraph.checkpoint.memory import InMemorySaver

    from feedback_plugin.middleware import FeedbackMiddleware

    store, emb = backend_store, ConceptEmbeddings()
    ids = _liked(store, user="al")
    search_memory(store, "x", embeddings=emb, user="al")
    assert store.memory.wait_embedded(10)
    model = ScriptedChatModel(script=["Here is how."])
    agent = create_agent(
        model,
        [],
        middleware=[FeedbackMiddleware(store, embeddings=emb, record=False)],
        checkpointer=InMemorySaver(),
    )
    config = {"configurable": {"thread_id": "t9", "user_id": "al"}}
    agent.invoke({"messages": [("user", "I forgot my login credentials")]}, config)
    prompt = model.system_prompts()[0]
    assert f'qa_id="{ids["How do I reset my password?"]}"' in prompt  # no word in common


def test_a_question_about_something_else_gets_no_memory_by_meaning(
    backend_store: SessionStore,
) -> None:
    """The nearest vectors of an unrelated question are still the nearest: a turn found
    by meaning alone counts only above ``min_similarity``."""
    store, emb = backend_store, ConceptEmbeddings()
    _liked(store)
    search_memory(store, "x", embeddings=emb)
    assert store.memory.wait_embedded(10)
    assert search_memory(store, "banana smoothie recipe", embeddings=emb) == []
    assert search_memory(store, "banana smoothie", embeddings=emb, lexical=False) == []
    nearest = search_memory(store, "banana smoothie", embeddings=emb, min_similarity=-1.0)
    assert len(nearest) == 4  # without the floor every liked turn is "near"


def test_a_query_the_model_cannot_embed_is_answered_by_words(
    backend_store: SessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    class QueryDown(ConceptEmbeddings):
        def embed_query(self, text: str) -> list[float]:
            raise RuntimeError("model server down")

        async def aembed_query(self, text: str) -> list[float]:
            raise RuntimeError("model server down")

    store, emb = backend_store, QueryDown()
    ids = _liked(store)
    found = search_memory(store, "download my invoices", k=1, embeddings=emb)
    assert [e.qa_id for e, _ in found] == [ids["Where can I download my invoices?"]]
    assert "found by words only" in caplog.text
    with pytest.raises(StoreError):
        search_memory(store, "download my invoices", embeddings=emb, lexical=False)


def test_turns_sharing_one_everyday_word_do_not_push_a_paraphrase_down(
    backend_store: SessionStore,
) -> None:
    """Words vote in the hybrid by how much of the query a turn holds: turns that share
    one word of the query ("forgot", "login") rank below the turn that means it (plain
    reciprocal rank fusion put them first: they are found both ways)."""
    store, emb = backend_store, ConceptEmbeddings()
    target = store.record("s1", "How do I reset my password?", "Settings > Security.")
    store.thumbs("s1", target.qa_id, True)
    for question in ("I forgot which plan I chose", "Why is my login slow?"):
        turn = store.record("s1", question, "See the help centre.")
        store.thumbs("s1", turn.qa_id, True)
    search_memory(store, "warm up", embeddings=emb)
    assert store.memory.wait_embedded(10)
    query = "I forgot my login credentials, what now?"
    assert len(search_memory(store, query, k=5)) == 2  # by words: only the one-word matches
    found = search_memory(store, query, k=3, embeddings=emb)
    assert found[0][0].qa_id == target.qa_id


def test_an_exact_keyword_still_wins_in_the_hybrid(backend_store: SessionStore) -> None:
    """An error code the query names outranks turns nearer in meaning."""
    store, emb = backend_store, ConceptEmbeddings()
    code = store.record("s1", "What does error E-4012 mean?", "The sync token expired.")
    store.thumbs("s1", code.qa_id, True)
    for question in ("How do I reset my password?", "I cannot sign in to my account"):
        turn = store.record("s1", question, "Use the login page to recover access.")
        store.thumbs("s1", turn.qa_id, True)
    search_memory(store, "warm up", embeddings=emb)
    assert store.memory.wait_embedded(10)
    query = "login fails with E-4012"
    by_meaning = search_memory(store, query, k=3, embeddings=emb, lexical=False)
    assert by_meaning[0][0].qa_id != code.qa_id  # by meaning alone, the sign-in turns lead
    found = search_memory(store, query, k=3, embeddings=emb)
    assert found[0][0].qa_id == code.qa_id


def test_the_same_model_from_a_script_keeps_the_vectors(backend_store: SessionStore) -> None:
    """A script's class is ``__main__.X``, the worker's that imports it ``app.X``: the
    same model, whose vectors stay (an id with the module re-embedded every turn, for
    every process of the store, each time the other one searched)."""
    store, emb = backend_store, ConceptEmbeddings()
    _liked(store)
    search_memory(store, "warm up", embeddings=emb)
    assert store.memory.wait_embedded(10)
    as_script = type("ConceptEmbeddings", (ConceptEmbeddings,), {"__module__": "__main__"})()
    found = search_memory(store, "I forgot my login credentials", k=1, embeddings=as_script)
    assert found and found[0][0].question == "How do I reset my password?"
    assert store.memory.wait_embedded(10)
    assert as_script.documents == 0  # nothing embedded again
