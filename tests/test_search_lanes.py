"""A sync memory search runs its by-meaning half in the meaning lane (pool.beside) while
the caller's thread runs the words half: no deadlock from any thread, same results."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from _concepts import ConceptEmbeddings

from feedback_plugin import SessionStore
from feedback_plugin.memory import search_memory
from feedback_plugin.pool import in_thread

pytest.importorskip("numpy")


def _store(tmp_path: Path) -> SessionStore:
    store = SessionStore(str(tmp_path / "store"))
    for question, answer in [
        ("How do I reset my password?", "Settings > Security."),
        ("Where can I download my invoices?", "Billing > History."),
    ]:
        turn = store.record("s1", question, answer)
        store.thumbs("s1", turn.qa_id, True)
    return store


def test_sync_searches_from_every_read_thread_at_once_finish(tmp_path: Path) -> None:
    """Both read threads busy with sync hybrid searches, each waiting for its meaning
    half: the meaning lane is their own, so they finish."""
    store, emb = _store(tmp_path), ConceptEmbeddings()
    search_memory(store, "warm up", embeddings=emb)
    assert store.memory.wait_embedded(10)

    async def main() -> list[list[str]]:
        calls = [
            in_thread(search_memory, store, "I forgot my login credentials", k=1, embeddings=emb)
            for _ in range(6)
        ]
        found = await asyncio.wait_for(asyncio.gather(*calls), timeout=30)
        return [[e.question for e, _ in hits] for hits in found]

    assert asyncio.run(main()) == [["How do I reset my password?"]] * 6
    store.close()


def test_the_meaning_half_runs_beside_the_words_half(tmp_path: Path) -> None:
    store = _store(tmp_path)
    seen: set[str] = set()

    class Recording(ConceptEmbeddings):
        pass

    emb = Recording()
    search_memory(store, "warm up", embeddings=emb)
    assert store.memory.wait_embedded(10)
    search = store.memory.search_by_vector

    def recorded(*args: object, **kwargs: object) -> object:
        seen.add(threading.current_thread().name)
        return search(*args, **kwargs)  # type: ignore[arg-type]

    store.memory.search_by_vector = recorded  # type: ignore[method-assign]
    found = search_memory(store, "get a receipt", k=1, embeddings=emb)
    assert [e.question for e, _ in found] == ["Where can I download my invoices?"]
    assert len(seen) == 1 and next(iter(seen)).startswith("feedback-plugin-meaning")
    store.close()
