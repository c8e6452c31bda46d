"""The REST API over real HTTP: a uvicorn server on 127.0.0.1, hit by concurrent clients.

The load test sends 2,000 feedback requests from 8 concurrent clients, each
on its own pre-recorded turn, checks that none failed and that the store holds
every one, and reports requests/s and p99 latency (printed, visible with
``-s``, and written to ``tests/artifacts/rest_load.json``). Loopback only, a
fixed number of requests, no retries.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from feedback_plugin import SessionStore  # noqa: E402
from feedback_plugin.integrations.rest import ApiKeyAuth, create_app  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
ALICE = {"Authorization": "Bearer alice-key"}
REQUESTS = 2000
CLIENTS = 8
SESSIONS = 40


def _start_server(app: Any) -> tuple[Any, threading.Thread, socket.socket, str]:
    # IPPROTO_TCP, not the default proto 0: asyncio turns Nagle off (TCP_NODELAY)
    # only on sockets whose proto says TCP; with proto 0 every response waits
    # ~40 ms for the client's delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # a free loopback port
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_keep_alive=30)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    return server, thread, sock, f"http://127.0.0.1:{port}"


@pytest.fixture
def live(store: SessionStore) -> Iterator[str]:
    """A real uvicorn server over ``store`` in a background thread; yields its base URL."""
    app = create_app(store, auth=ApiKeyAuth({"alice-key": "alice", "bob-key": "bob"}))
    server, thread, sock, url = _start_server(app)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
    assert not thread.is_alive(), "uvicorn did not stop"


def _client(base_url: str) -> Any:
    # trust_env=False: never route loopback traffic through a configured proxy
    return httpx.Client(base_url=base_url, headers=ALICE, timeout=30.0, trust_env=False)


def _body(i: int) -> tuple[dict[str, Any], int]:
    """Request ``i``'s body and the score it must leave: scores and thumbs alternate."""
    if i % 2 == 0:
        score = 1 + (i // 2) % 5
        return {"score": score, "text": f"load {i}"}, score
    up = (i // 2) % 2 == 0
    return {"thumbs": "up" if up else "down", "text": f"load {i}"}, 5 if up else 1


@pytest.mark.slow
def test_2000_feedback_requests_from_8_clients_lose_none(
    store: SessionStore, store_dir: Path, live: str
) -> None:
    turns = [
        store.record(f"load-{i % SESSIONS}", f"question {i}", f"answer {i}", user="alice")
        for i in range(REQUESTS)
    ]
    bystander = store.record("load-0", "bob's question", "bob's answer", user="bob")
    store.flush()

    load_before = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS + 1)

    def worker(w: int) -> None:
        mine: list[float] = []
        bad: list[str] = []
        with _client(live) as client:
            start.wait()
            for i in range(w, REQUESTS, CLIENTS):  # 250 requests each, no retries
                turn = turns[i]
                body, score = _body(i)
                t0 = time.perf_counter()
                try:
                    r = client.put(
                        f"/api/turns/{quote(turn.qa_id, safe='')}/feedback",
                        params={"session_id": turn.session_id},
                        json=body,
                    )
                except httpx.HTTPError as exc:
                    bad.append(f"{i}: {type(exc).__name__}: {exc}")
                    continue
                mine.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    bad.append(f"{i}: HTTP {r.status_code} {r.text[:200]}")
                elif r.json()["feedback_score"] != score:
                    bad.append(f"{i}: answered score {r.json()['feedback_score']}, sent {body}")
        with lock:
            latencies.extend(mine)
            failures.extend(bad)

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(CLIENTS)]
    for t in threads:
        t.start()
    start.wait(timeout=30)
    t0 = time.perf_counter()
    for t in threads:
        t.join(timeout=300)
    elapsed = time.perf_counter() - t0
    assert not any(t.is_alive() for t in threads), "a client thread hung"

    assert failures == [], f"{len(failures)} failed, e.g. {failures[:5]}"
    assert len(latencies) == REQUESTS

    # Every feedback is in the store, as sent; read back through a second store
    # on the same directory, so this is what is on disk.
    with SessionStore(store_dir) as check:
        stored = {
            e.qa_id: e
            for s in range(SESSIONS)
            for e in check.get_session(f"load-{s}", user="alice")
        }
        assert len(stored) == REQUESTS
        rated = [
            i
            for i, turn in enumerate(turns)
            if stored[turn.qa_id].feedback_text == f"load {i}"
            and stored[turn.qa_id].feedback_score == _body(i)[1]
        ]
        assert len(rated) == REQUESTS
        bob = check.get_entry("load-0", bystander.qa_id, user="bob")
        assert bob is not None and bob.feedback_score is None

    ordered = sorted(latencies)
    result = {
        "requests": REQUESTS,
        "clients": CLIENTS,
        "failed": len(failures),
        "stored": len(rated),
        "seconds": round(elapsed, 3),
        "requests_per_second": round(REQUESTS / elapsed, 1),
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p99_ms": round(ordered[int(0.99 * len(ordered)) - 1] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "server": f"uvicorn {uvicorn.__version__}, 1 worker, sync endpoints in its threadpool",
        "store": "diskcache (DiskBackend) in a temporary directory",
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_1m_before": load_before,
        "machine": platform.machine(),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "rest_load.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"\nREST load: {REQUESTS} PUT feedback from {CLIENTS} clients in {elapsed:.2f} s = "
        f"{result['requests_per_second']} req/s; p50 {result['p50_ms']} ms, "
        f"p99 {result['p99_ms']} ms, max {result['max_ms']} ms; failed {len(failures)} "
        f"({os.cpu_count()} CPUs, load average {load_before} before the run; client and "
        "server share one process)"
    )


@pytest.mark.parametrize("qa_id", ["%41", "a%2Fb", "a/b", "x y?z#w", "ünï 🎉", "../x"])
def test_turn_ids_over_real_http(store: SessionStore, live: str, qa_id: str) -> None:
    """Percent-encoded turn ids reach the store decoded exactly once (``%41`` stays ``%41``).

    Starlette's TestClient decodes the path twice, so this runs over real HTTP.
    """
    session_id = "../x/y ?#"
    store.record(session_id, "q", "a", user="alice", qa_id=qa_id)
    with _client(live) as client:
        url = f"/api/turns/{quote(qa_id, safe='')}"
        r = client.get(url, params={"session_id": session_id})
        assert r.status_code == 200 and r.json()["qa_id"] == qa_id
        r = client.put(f"{url}/feedback", params={"session_id": session_id}, json={"score": 4})
        assert r.status_code == 200 and r.json()["feedback_score"] == 4
        r = client.get(
            url, params={"session_id": session_id}, headers={"Authorization": "Bearer bob-key"}
        )
        assert r.status_code == 404
    entry = store.get_entry(session_id, qa_id, user="alice")
    assert entry is not None and entry.feedback_score == 4


def test_errors_over_real_http_are_json(store: SessionStore, live: str) -> None:
    t = store.record("s", "q", "a", user="alice")
    url = f"/api/turns/{t.qa_id}/feedback"
    with httpx.Client(base_url=live, timeout=30.0, trust_env=False) as client:
        r = client.put(url, params={"session_id": "s"}, json={"score": 4})
        assert (r.status_code, r.headers["www-authenticate"]) == (401, "Bearer")
        assert r.headers["content-type"] == "application/json" and "detail" in r.json()
        r = client.put(url, params={"session_id": "s"}, json={"score": True}, headers=ALICE)
        assert r.status_code == 422 and "detail" in r.json()
        r = client.put(url, params={"session_id": "nope"}, json={"score": 4}, headers=ALICE)
        assert r.status_code == 404 and r.json() == {"detail": "no such turn"}
    assert store.get_entry("s", t.qa_id, user="alice").feedback_score is None  # type: ignore[union-attr]
