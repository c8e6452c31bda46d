"""Redis stopped while a chain runs, then started again.

The test runs its own ``redis-server`` on a private port (AOF, fsync always)
so it can stop and restart it. While the server is down the chain keeps
answering at full speed (the handler only queues), the failure is logged,
the store API reports it the documented way, and once the server is back
the write-behind queue delivers every turn made during the outage, after
the ones made before it, with nothing lost or half-written.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from typing import Any

import pytest
from langchain_core.language_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from feedback_plugin import (
    FeedbackCallbackHandler,
    FeedbackToolkit,
    PositiveMemoryRetriever,
    SessionStore,
    StoreError,
)

from .conftest import PrivateRedis, wait_for

PROMPT = ChatPromptTemplate.from_messages([("human", "{question}")])
BEFORE, DURING, AFTER = 3, 4, 2


def test_redis_stopped_while_a_chain_runs(
    private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="feedback_plugin")
    total = BEFORE + DURING + AFTER
    chain = (
        PROMPT
        | FakeListChatModel(responses=[f"answer {i}" for i in range(total)])
        | StrOutputParser()
    )
    run_ids = [uuid.uuid4() for _ in range(total)]
    store = SessionStore(private_redis.url)
    reader = SessionStore(private_redis.url)  # another client: sees only what reached Redis
    handler = FeedbackCallbackHandler(store)

    def ask(i: int) -> str:
        config: Any = {
            "callbacks": [handler],
            "metadata": {"session_id": "chat", "user_id": "alice"},
            "run_id": run_ids[i],
        }
        return chain.invoke({"question": f"question {i}"}, config=config)

    def stored() -> list[str]:
        return [e.qa_id for e in reader.get_session("chat", user="alice")]

    try:
        # -- before the outage: turns and a rating reach Redis ---------------------------
        for i in range(BEFORE):
            assert ask(i) == f"answer {i}"
        assert store.thumbs("chat", str(run_ids[0]), up=True, user="alice")
        assert stored() == [str(r) for r in run_ids[:BEFORE]]

        # -- the server goes away -----------------------------------------------------------
        private_redis.stop()
        assert not private_redis.ping()
        for i in range(BEFORE, BEFORE + DURING):
            started = time.monotonic()
            assert ask(i) == f"answer {i}"  # the chain still answers ...
            assert time.monotonic() - started < 2.0  # ... without waiting on the store
        # the writer thread's failure is logged
        assert wait_for(
            lambda: any(
                r.name == "feedback_plugin"
                and r.levelno >= logging.ERROR
                and "could not write" in r.getMessage()
                for r in caplog.records
            ),
            timeout=20,
        ), [r.getMessage() for r in caplog.records]
        # the store API reports the outage as the contract says
        assert store.add_feedback("chat", str(run_ids[1]), "nice", 5, user="alice") is False
        assert any("not stored" in r.getMessage() for r in caplog.records)
        with pytest.raises(StoreError, match="get_session failed"):
            store.get_session("chat", user="alice")
        search = FeedbackToolkit(store=store, user="alice").get_tools()[2]
        assert search.invoke({"query": "question"}).startswith("Error:")
        assert store.pending >= DURING  # nothing was dropped: it waits in the queue

        # -- the server is back: the queue delivers what was made during the outage ---------
        private_redis.start()
        expected = [str(r) for r in run_ids[: BEFORE + DURING]]
        assert wait_for(lambda: stored() == expected, timeout=20), stored()
        for i in range(BEFORE + DURING, total):  # and recording goes on as before
            assert ask(i) == f"answer {i}"
        entries = store.get_session("chat", user="alice")
        assert [e.qa_id for e in entries] == [str(r) for r in run_ids]
        for i, e in enumerate(entries):  # whole entries, nothing half-written
            assert (e.question, e.answer, e.user_id) == (f"question {i}", f"answer {i}", "alice")
            assert e.feedback_score == (5 if i == 0 else None)
        assert store.pending == 0
        # positive memory works again, with the rating made before the outage
        docs = PositiveMemoryRetriever(store=store, user="alice").invoke("question 0")
        assert [d.metadata["qa_id"] for d in docs] == [str(run_ids[0])]
        for record in caplog.records:  # for the test log: what an operator sees
            print(f"{record.levelname} {record.getMessage().splitlines()[0]}")
    finally:
        for s in (store, reader):
            # (StoreError: the server did not come back; the test has failed already)
            with contextlib.suppress(StoreError):
                s.close()
