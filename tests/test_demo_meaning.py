"""The demo chat and the REST API find memories by meaning, and say so.

A liked answer comes back for the same question asked in other words (no word
in common): ``GET /api/memory`` finds it and says how it searched
(``search``, the ``X-Memory-Search`` header) and how each hit was found
(``found_by``, ``similarity``); the offline responder reuses it ("From an
answer you liked: ..."); the chat's answer and its history say the memory was
found by meaning. Real parts throughout: a diskcache store in tmp_path, the
app's own agent and offline responder, FastAPI's TestClient; the embedding
model is ``tests/_concepts.py``'s concept fake (the real model's run of the same
flow is ``test_webapp.py::test_the_local_model_finds_a_paraphrase_and_not_another_topic``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("numpy")  # vectors of memory by meaning

from _concepts import ConceptEmbeddings
from fastapi import FastAPI
from fastapi.testclient import TestClient
from langchain_core.embeddings import Embeddings
from langchain_core.messages import HumanMessage, SystemMessage

from feedback_plugin import SessionStore
from feedback_plugin.errors import ArgumentTypeError
from feedback_plugin.integrations.demo.content import (
    ENV_CHAT_MODEL,
    memory_text,
    split_memory_text,
)
from feedback_plugin.integrations.demo.memory import explained_block
from feedback_plugin.integrations.explained_memory import (
    FoundMemory,
    aexplain_memory,
    explain_memory,
)
from feedback_plugin.integrations.offline_model import (
    LIKED_PREFIX,
    LikedAnswer,
    OfflineChatModel,
    parse_liked_answers,
    reused_answer,
)
from feedback_plugin.integrations.rest import create_app, create_router
from feedback_plugin.integrations.webapp import create_demo_app
from feedback_plugin.middleware import memory_block

LOCAL = "http://localhost"
PASSWORD_Q = "How do I reset my password?"
PARAPHRASE_Q = "I forgot my login credentials, what now?"  # no word in common with it
EXPORT_Q = "Can I export my notes as a PDF?"  # another topic


@pytest.fixture
def emb() -> ConceptEmbeddings:
    return ConceptEmbeddings()


@pytest.fixture
def client(
    store: SessionStore, emb: ConceptEmbeddings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    monkeypatch.delenv(ENV_CHAT_MODEL, raising=False)
    with TestClient(create_demo_app(store, embeddings=emb), base_url=LOCAL) as c:
        yield c


def chat(client: TestClient, question: str, session_id: str = "s1") -> dict[str, Any]:
    r = client.post("/api/chat", json={"session_id": session_id, "question": question})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def like(client: TestClient, store: SessionStore, turn: dict[str, Any]) -> None:
    """Thumbs up through the REST API, then wait until the liked turn has its vector."""
    r = client.put(
        f"/api/turns/{quote(turn['qa_id'], safe='')}/feedback",
        params={"session_id": turn["session_id"]},
        json={"thumbs": "up"},
    )
    assert r.status_code == 200, r.text
    assert store.memory.wait_embedded(10)


def memory(client: TestClient, q: str, **params: Any) -> tuple[str, list[dict[str, Any]]]:
    """``GET /api/memory``: (its X-Memory-Search header, its hits)."""
    r = client.get("/api/memory", params={"q": q, **params})
    assert r.status_code == 200, r.text
    hits: list[dict[str, Any]] = r.json()
    return r.headers["x-memory-search"], hits


# -- GET /api/memory ------------------------------------------------------------------------


def test_api_memory_finds_a_paraphrase_by_meaning(client: TestClient, store: SessionStore) -> None:
    first = chat(client, PASSWORD_Q)
    search, hits = memory(client, PARAPHRASE_Q)
    assert (search, hits) == ("words+meaning", [])  # nothing liked yet
    like(client, store, first)

    search, hits = memory(client, PARAPHRASE_Q)
    assert search == "words+meaning"
    (hit,) = hits
    assert hit | {"relevance": 0, "similarity": 0} == {  # the fields it always had, and three
        "qa_id": first["qa_id"],
        "session_id": "s1",
        "question": PASSWORD_Q,
        "answer": first["answer"],
        "feedback_score": 5,
        "relevance": 0,
        "search": "words+meaning",
        "found_by": "meaning",  # it shares no word with the query
        "similarity": 0,
    }
    assert 0 < hit["relevance"] <= 1 and 0.8 < hit["similarity"] <= 1

    # the same question in its own words: found by both halves
    (hit,) = memory(client, "reset password")[1]
    assert hit["found_by"] == "words+meaning" and hit["similarity"] > 0.8
    # another topic: nothing (the meaning half keeps only turns close to the query)
    assert memory(client, EXPORT_Q) == ("words+meaning", [])


def test_api_memory_without_embeddings_searches_by_words(store: SessionStore) -> None:
    with TestClient(create_demo_app(store, embeddings=None), base_url=LOCAL) as c:
        first = chat(c, PASSWORD_Q)
        c.put(
            f"/api/turns/{quote(first['qa_id'], safe='')}/feedback",
            params={"session_id": "s1"},
            json={"thumbs": "up"},
        )
        assert memory(c, PARAPHRASE_Q) == ("words", [])  # no word in common
        search, (hit,) = memory(c, "reset password")
        assert search == hit["search"] == hit["found_by"] == "words"
        assert hit["similarity"] is None and hit["relevance"] > 0
        assert c.get("/api/info").json()["memory_search"]["mode"] == "words"


def test_the_rest_router_searches_with_the_embeddings_it_is_given(
    store: SessionStore, emb: ConceptEmbeddings
) -> None:
    turn = store.record("s1", PASSWORD_Q, "Settings > Security > Reset.")
    store.thumbs("s1", turn.qa_id, up=True)
    with TestClient(create_app(store, embeddings=emb), base_url=LOCAL) as c:
        assert memory(c, "warm up")[0] == "words+meaning"  # the first query starts the embedder
        assert store.memory.wait_embedded(10)
        search, (hit,) = memory(c, PARAPHRASE_Q, k=1)
        assert (search, hit["qa_id"], hit["found_by"]) == ("words+meaning", turn.qa_id, "meaning")

    now: list[Embeddings | None] = [None]  # a function: the embeddings to use at each search
    app = FastAPI()
    app.include_router(create_router(store, embeddings=lambda: now[0]))
    with TestClient(app, base_url=LOCAL) as c:
        assert memory(c, PARAPHRASE_Q) == ("words", [])  # None: by words (a model loading)
        now[0] = emb
        assert [h["found_by"] for h in memory(c, PARAPHRASE_Q)[1]] == ["meaning"]

    with pytest.raises(ArgumentTypeError):
        create_router(store, embeddings="local")  # type: ignore[arg-type]


class _DownEmbeddings(Embeddings):
    """Embeddings whose service is down."""

    model = "down"

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise RuntimeError("the embedding service is down")

    def embed_query(self, text: str) -> list[float]:
        raise RuntimeError("the embedding service is down")


def test_a_query_that_cannot_be_embedded_is_searched_by_words(store: SessionStore) -> None:
    turn = store.record("s1", PASSWORD_Q, "Settings > Security > Reset.")
    store.thumbs("s1", turn.qa_id, up=True)
    with TestClient(create_app(store, embeddings=_DownEmbeddings()), base_url=LOCAL) as c:
        search, (hit,) = memory(c, "reset my password")
        assert search == hit["search"] == hit["found_by"] == "words"


async def test_the_explained_search_sync_and_async_agree(
    store: SessionStore, emb: ConceptEmbeddings
) -> None:
    ids = {}
    for question, answer in [
        (PASSWORD_Q, "Settings > Security > Reset."),
        ("Where can I download my invoices?", "Billing > History."),
    ]:
        turn = store.record("s1", question, answer)
        store.thumbs("s1", turn.qa_id, up=True)
        ids[question] = turn.qa_id
    explain_memory(store, "warm up", emb)
    assert store.memory.wait_embedded(10)
    for query in (PARAPHRASE_Q, "password", "get a receipt", ""):
        sync = explain_memory(store, query, emb, k=2)
        assert sync == await aexplain_memory(store, query, emb, k=2)
    found = explain_memory(store, PARAPHRASE_Q, emb)
    assert [(h.entry.qa_id, h.found_by) for h in found.hits] == [(ids[PASSWORD_Q], "meaning")]
    by_words = explain_memory(store, "", emb)  # no query: the newest turns, by words
    assert by_words.search == "words" and {h.found_by for h in by_words.hits} == {"words"}


# -- the chat -------------------------------------------------------------------------------


def test_the_offline_responder_reuses_a_liked_answer_found_by_meaning(
    client: TestClient, store: SessionStore
) -> None:
    first = chat(client, PASSWORD_Q)
    assert chat(client, PARAPHRASE_Q, session_id="s2")["memories"] == []  # not liked yet
    like(client, store, first)

    later = chat(client, PARAPHRASE_Q, session_id="s3")
    assert later["answer"] == LIKED_PREFIX + first["answer"]
    (used,) = later["memories"]
    assert used["qa_id"] == first["qa_id"] and used["session_id"] == "s1"
    assert used["found_by"] == "meaning"
    assert 0.8 < used["similarity"] <= 1 and used["relevance"] > 0

    # recorded with the turn: the history after a reload says the same
    entry = store.get_entry("s3", later["qa_id"])
    assert entry is not None
    shown = [c for c in entry.context if c.startswith(f"Question: {PASSWORD_Q}")]
    assert len(shown) == 1 and shown[0].endswith(f"(similarity {used['similarity']:.2f})")
    (turn,) = client.get("/api/chat/history", params={"session_id": "s3"}).json()
    (past,) = turn["memories"]
    assert past == {
        "qa_id": first["qa_id"],
        "session_id": "s1",
        "question": PASSWORD_Q,
        "answer": first["answer"],
        "feedback_score": 5,
        "found_by": "meaning",
        "similarity": used["similarity"],
    }

    # liked in turn: found again by meaning, it is not introduced twice
    like(client, store, later)
    again = chat(client, "lost my passcode, help", session_id="s4")
    assert again["answer"] == LIKED_PREFIX + first["answer"]


def test_a_question_about_something_else_gets_its_own_answer(
    client: TestClient, store: SessionStore
) -> None:
    like(client, store, chat(client, PASSWORD_Q))
    other = chat(client, EXPORT_Q, session_id="s2")
    assert other["memories"] == [] and not other["answer"].startswith(LIKED_PREFIX)
    assert other["context"][0]["id"] == "export"


def test_the_same_question_again_is_answered_word_for_word(
    client: TestClient, store: SessionStore
) -> None:
    first = chat(client, PASSWORD_Q)
    like(client, store, first)
    again = chat(client, PASSWORD_Q, session_id="s2")
    assert again["answer"] == first["answer"]  # no prefix: the same question
    assert again["memories"][0]["found_by"] == "words+meaning"


# -- the pieces: the block, the responder, the recorded context ----------------------------


def _found(store: SessionStore, found_by: Any, similarity: float | None) -> FoundMemory:
    turn = store.record("s1", PASSWORD_Q, "Settings > Security > Reset.", qa_id=f"q-{found_by}")
    return FoundMemory(turn, 0.5, found_by, similarity)


def test_the_block_marks_what_meaning_found(store: SessionStore) -> None:
    words = _found(store, "words", None)
    assert explained_block([words]) == memory_block([words.entry])  # by words: unchanged
    meaning = _found(store, "meaning", 0.8765)
    block = explained_block([words, meaning])
    assert '<example qa_id="q-meaning" found_by="meaning" similarity="0.88">\n' in block
    assert parse_liked_answers(block) == [
        LikedAnswer("q-words", PASSWORD_Q, "Settings > Security > Reset."),
        LikedAnswer("q-meaning", PASSWORD_Q, "Settings > Security > Reset.", "meaning", 0.88),
    ]
    assert explained_block([]) == ""


def _answer(system: str, question: str, **options: Any) -> str:
    model = OfflineChatModel(**options)
    return str(model.invoke([SystemMessage(system), HumanMessage(question)]).text)


def _block(*examples: tuple[str, str, str]) -> str:
    """A ``<liked_answers>`` block of (qa_id, answer, attributes) examples."""
    lines = ["<liked_answers>", "Answers this user liked before."]
    for qa_id, answer, attrs in examples:
        lines += [f'<example qa_id="{qa_id}"{attrs}>', f"Question: {PASSWORD_Q}"]
        lines += [f"Answer: {answer}", "</example>"]
    return "\n".join([*lines, "</liked_answers>"])


def test_the_responder_reuses_the_most_similar_answer_found_by_meaning() -> None:
    block = _block(
        ("a", "near", ' found_by="meaning" similarity="0.55"'),
        ("b", "nearer", ' found_by="words+meaning" similarity="0.71"'),
        ("c", "by words only", ""),
    )
    assert _answer(block, PARAPHRASE_Q) == LIKED_PREFIX + "nearer"
    assert _answer(block, PARAPHRASE_Q, reuse_meaning=0.8) != LIKED_PREFIX + "nearer"
    far = _block(("a", "far", ' found_by="meaning" similarity="0.31"'))
    assert not _answer(far, PARAPHRASE_Q).startswith(LIKED_PREFIX)  # close enough to show only
    # the same question (shared words) still comes back word for word
    assert _answer(block, "How do I reset my password?") == "near"
    # a liked answer that came back this way is not introduced twice
    assert reused_answer(LIKED_PREFIX + "x") == reused_answer("x") == LIKED_PREFIX + "x"


def test_the_recorded_context_says_how_a_memory_was_found() -> None:
    plain = LikedAnswer("q1", "Q?", "A.\nTwo lines.")
    assert memory_text(plain) == "Question: Q?\nAnswer: A.\nTwo lines."
    assert split_memory_text(memory_text(plain)) == ("Q?", "A.\nTwo lines.", "words", None)
    meaning = LikedAnswer("q1", "Q?", "A.", "meaning", 0.5)
    text = memory_text(meaning)
    assert text == "Question: Q?\nAnswer: A.\nFound by: meaning (similarity 0.50)"
    found = split_memory_text(text)
    assert found == ("Q?", "A.", "meaning", 0.5)
    assert found is not None and found.document_text == "Question: Q?\nAnswer: A."
    assert split_memory_text("Resetting your password. Go to ...") is None
