#!/usr/bin/env python3
"""REST benchmark: ``PUT /api/turns/{qa_id}/feedback`` under HTTP load, beside a bare route.

Run from the repository root (inside the project's venv)::

    python benchmarks/bench_rest.py                          # 3 rounds of 5 s each, ~1 minute
    python benchmarks/bench_rest.py --quick                  # smoke test (1 round of 1 s)
    python benchmarks/bench_rest.py --seconds 10 --rounds 5  # longer
    python benchmarks/bench_rest.py --json benchmarks/results/rest.json

Needs ``wrk`` (``apt-get install wrk``; without it the script says so and
exits 2). Otherwise it prints one markdown table and a PASS/FAIL line per
target, and exits 0: a failed target is a finding to report, not a crash.

The set-up
----------
Two uvicorn servers, one worker each, in subprocesses on free loopback ports:

* **feedback**: :func:`feedback_plugin.integrations.rest.create_app` over a
  fresh diskcache store in a temp directory, seeded with 200 sessions x 5
  turns of user ``bench``, with one API key (every request authenticates);
* **bare**: a FastAPI app with one trivial sync ``PUT /bare`` route
  returning ``{"ok": true}``: the floor of FastAPI plus uvicorn on this
  machine.

``wrk`` (2 threads, 8 connections, ``--latency``) runs them interleaved:
bare, feedback, bare, feedback, ... for ``--rounds`` rounds of ``--seconds``
each, after a short warm-up of each. A Lua script spreads the feedback PUTs
over the 1,000 seeded turns (``{"score": 5}``, ``{"thumbs": "down"}``,
``{"score": 4}`` in turn, with ``Authorization: Bearer``). Figures are
medians across rounds. One round at 1 connection (1 thread) of each is
shown for reference. The turns really are rated: the store is checked after
the run.

Targets: PUT feedback p99 <= 50 ms at 8 connections; feedback throughput
>= 0.5x the bare route's. Other processes skew the figures (wrk, the server
and anything else share the CPUs): the header gives the load average before
and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Row, print_rows

API_KEY = "bench-key"
USER = "bench"
SESSIONS = 200
TURNS = 5
THREADS = 2
CONNECTIONS = 8
P99_TARGET_MS = 50.0
RATIO_TARGET = 0.5


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def load_average() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


# -- the servers (this script again, with --serve) ------------------------------------------


def serve(kind: str, port: int, store_dir: str) -> None:
    """Run one server until killed: ``kind`` is ``feedback`` or ``bare``."""
    import uvicorn
    from fastapi import FastAPI

    if kind == "bare":
        app = FastAPI()

        @app.put("/bare")
        def bare() -> dict[str, bool]:
            return {"ok": True}

        @app.get("/healthz")
        def healthz() -> dict[str, str]:
            return {"status": "ok"}

    else:
        from feedback_plugin import SessionStore
        from feedback_plugin.integrations.rest import ApiKeyAuth, create_app

        store = SessionStore(store_dir)  # a store passed in: the app leaves closing it to us
        app = create_app(store, auth=ApiKeyAuth({API_KEY: USER}))
    try:
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    finally:
        if kind != "bare":
            store.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """One server subprocess, up (``/healthz`` answers) when the constructor returns."""

    def __init__(self, kind: str, store_dir: str) -> None:
        self.kind = kind
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", kind, str(self.port), store_dir],
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the {kind} server did not start (exit {self.proc.poll()})")
            time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- the store and the Lua scripts ------------------------------------------------------------


def seed(store_dir: str) -> list[tuple[str, str]]:
    """``SESSIONS`` x ``TURNS`` turns of ``USER``; their (session_id, qa_id)."""
    from feedback_plugin import SessionStore

    refs = []
    with SessionStore(store_dir) as store:
        for s in range(SESSIONS):
            session_id = f"bench-s{s:04d}"
            for t in range(TURNS):
                entry = store.record(
                    session_id,
                    f"question {t} of session {s}: how do I export my notes?",
                    "Open the notebook and choose File > Export, then pick a format. " * 3,
                    ["an article the answer came from " * 10],
                    user=USER,
                )
                refs.append((session_id, entry.qa_id))
        store.flush()
    return refs


def lua_feedback(refs: list[tuple[str, str]]) -> str:
    paths = ",\n".join(
        f'  "/api/turns/{qa_id}/feedback?session_id={session_id}"' for session_id, qa_id in refs
    )
    return f"""-- PUT feedback over the seeded turns; each wrk thread starts at another turn
local paths = {{
{paths}
}}
local bodies = {{'{{"score": 5}}', '{{"thumbs": "down"}}', '{{"score": 4}}'}}
local threads = 0
local i = 0
wrk.method = "PUT"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {API_KEY}"

function setup(thread)
  thread:set("offset", threads * 997)
  threads = threads + 1
end

function init(args)
  i = offset or 0
end

function request()
  i = i + 1
  return wrk.format(nil, paths[(i % #paths) + 1], nil, bodies[(i % #bodies) + 1])
end
"""


LUA_BARE = """-- the same kind of request on the bare route
wrk.method = "PUT"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"score": 5}'
"""


# -- wrk and its output -----------------------------------------------------------------------


@dataclass
class Result:
    target: str
    connections: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    bad: int  # non-2xx responses plus socket errors


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not found:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(found.group(1)) * _UNITS[found.group(2)]


def parse_wrk(output: str, target: str, connections: int) -> Result:
    """p50, p99, requests/s and errors from ``wrk --latency`` output."""

    def field(pattern: str) -> str:
        found = re.search(pattern, output, re.M)
        if not found:
            raise ValueError(f"wrk output without {pattern!r}:\n{output}")
        return found.group(1)

    bad = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s*(\d+)", output))
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if errors:
        bad += sum(int(n) for n in errors.groups())
    return Result(
        target=target,
        connections=connections,
        requests_per_s=float(field(r"^Requests/sec:\s*([\d.]+)")),
        p50_ms=_ms(field(r"^\s*50%\s+(\S+)")),
        p99_ms=_ms(field(r"^\s*99%\s+(\S+)")),
        requests=int(field(r"^\s*(\d+) requests in")),
        bad=bad,
    )


def run_wrk(
    url: str, script: Path, seconds: float, connections: int, threads: int, target: str
) -> Result:
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    return parse_wrk(proc.stdout, target, connections)


# -- the run ----------------------------------------------------------------------------------


def fmt_rate(results: list[Result]) -> str:
    rates = [r.requests_per_s for r in results]
    each = " / ".join(f"{x:,.0f}" for x in rates)
    return f"{statistics.median(rates):,.0f} req/s" + (
        f" (rounds: {each})" if len(rates) > 1 else ""
    )


def fmt_latency(results: list[Result]) -> str:
    p50 = statistics.median(r.p50_ms for r in results)
    p99 = statistics.median(r.p99_ms for r in results)
    return f"p50 {p50:.2f} ms, p99 {p99:.2f} ms"


def bench(args: argparse.Namespace) -> tuple[list[Row], dict[str, Any]]:
    base = Path(tempfile.mkdtemp(prefix="fp-bench-rest-", dir=args.dir))
    data: dict[str, Any] = {"load_before": load_average()}
    servers: list[Server] = []
    try:
        store_dir = str(base / "store")
        log(f"seeding {SESSIONS} sessions x {TURNS} turns in {store_dir}")
        refs = seed(store_dir)
        feedback_lua = base / "feedback.lua"
        feedback_lua.write_text(lua_feedback(refs), encoding="utf-8")
        bare_lua = base / "bare.lua"
        bare_lua.write_text(LUA_BARE, encoding="utf-8")

        bare = Server("bare", store_dir)
        servers.append(bare)
        feedback = Server("feedback", store_dir)
        servers.append(feedback)
        runs = {
            "bare": (f"{bare.url}/bare", bare_lua),
            "feedback": (feedback.url, feedback_lua),
        }

        def wrk(name: str, seconds: float, connections: int, threads: int) -> Result:
            url, script = runs[name]
            result = run_wrk(url, script, seconds, connections, threads, name)
            log(
                f"{name:8} c={connections}: {result.requests_per_s:,.0f} req/s, "
                f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, bad {result.bad}"
            )
            return result

        warm = min(2.0, args.seconds)
        log(f"warm-up ({warm:.0f} s each)")
        wrk("bare", warm, CONNECTIONS, THREADS)
        wrk("feedback", warm, CONNECTIONS, THREADS)
        rounds: dict[str, list[Result]] = {"bare": [], "feedback": []}
        for number in range(args.rounds):
            log(f"round {number + 1} of {args.rounds}")
            for name in ("bare", "feedback"):
                rounds[name].append(wrk(name, args.seconds, CONNECTIONS, THREADS))
        single = {name: wrk(name, args.seconds, 1, 1) for name in ("bare", "feedback")}
    finally:
        for server in servers:
            server.stop()
        data["load_after"] = load_average()

    try:
        from feedback_plugin import SessionStore

        with SessionStore(store_dir) as store:
            rated = sum(
                1
                for s in range(SESSIONS)
                for e in store.get_session(f"bench-s{s:04d}", user=USER)
                if e.feedback_score is not None
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)

    b, f = rounds["bare"], rounds["feedback"]
    bare_rate = statistics.median(r.requests_per_s for r in b)
    feedback_rate = statistics.median(r.requests_per_s for r in f)
    ratio = feedback_rate / bare_rate if bare_rate else 0.0
    p99 = statistics.median(r.p99_ms for r in f)
    bad = sum(r.bad for r in [*b, *f, *single.values()])
    n = f"{CONNECTIONS} conn"
    rows = [
        Row(f"bare PUT /bare, {n}: throughput", fmt_rate(b)),
        Row(f"bare PUT /bare, {n}: latency", fmt_latency(b)),
        Row(f"feedback PUT, {n}: throughput", fmt_rate(f)),
        Row(f"feedback PUT, {n}: latency", fmt_latency(f)),
        Row(
            f"feedback PUT, {n}: p99",
            f"{p99:.2f} ms",
            f"<= {P99_TARGET_MS:.0f} ms",
            p99 <= P99_TARGET_MS,
        ),
        Row(
            "feedback / bare throughput",
            f"{ratio:.2f}x (rounds: "
            + " / ".join(
                f"{x.requests_per_s / y.requests_per_s:.2f}" for x, y in zip(f, b, strict=True)
            )
            + ")",
            f">= {RATIO_TARGET}x",
            ratio >= RATIO_TARGET,
        ),
        Row(
            "bare PUT, 1 conn (reference)",
            f"{fmt_rate([single['bare']])}, {fmt_latency([single['bare']])}",
        ),
        Row(
            "feedback PUT, 1 conn (reference)",
            f"{fmt_rate([single['feedback']])}, {fmt_latency([single['feedback']])}",
        ),
        Row("responses 2xx, no socket errors", f"{bad} bad", "0", bad == 0),
        Row("seeded turns rated after the run", f"{rated} of {len(refs)}", "> 0", rated > 0),
    ]
    data.update(
        rounds={k: [asdict(r) for r in v] for k, v in rounds.items()},
        single={k: asdict(r) for k, r in single.items()},
        ratio=ratio,
        p99_ms=p99,
        rated=rated,
    )
    return rows, data


def versions() -> str:
    import fastapi
    import starlette
    import uvicorn

    extras = []
    for name in ("uvloop", "httptools"):
        try:
            __import__(name)
            extras.append(name)
        except ImportError:
            pass
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    wrk_version = (wrk.stdout or wrk.stderr).split("[")[0].strip() or "wrk"
    return (
        f"Python {platform.python_version()}, FastAPI {fastapi.__version__}, Starlette "
        f"{starlette.__version__}, uvicorn {uvicorn.__version__}"
        f" ({', '.join(extras) if extras else 'asyncio, h11'}), {wrk_version}, "
        f"{os.cpu_count()} CPUs, {platform.system()} {platform.machine()}"
    )


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    if raw[:1] == ["--serve"]:  # a server subprocess
        serve(raw[1], int(raw[2]), raw[3])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="length of a wrk run (default 5)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--quick", action="store_true", help="smoke test: --seconds 1 --rounds 1")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--dir", metavar="DIR", help="make the temporary store under DIR")
    args = parser.parse_args(raw)
    if args.quick:
        args.seconds, args.rounds = 1.0, 1
    if args.seconds < 1 or args.rounds < 1:
        parser.error("--seconds and --rounds must be at least 1")
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2

    rows, data = bench(args)
    print("\n## feedback_plugin REST benchmark\n")
    print(
        f"{versions()}; one uvicorn worker per server; wrk {THREADS} threads, {CONNECTIONS} "
        f"connections, {args.rounds} interleaved rounds of {args.seconds:g} s (medians); "
        f"load average {data['load_before']} before, {data['load_after']} after the run "
        "(wrk, the servers and other processes share the CPUs).\n"
    )
    print_rows(rows)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"rows": [asdict(r) for r in rows], **data}, indent=2), encoding="utf-8"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
