#!/usr/bin/env python3
"""Agent benchmark: what recording costs a LangGraph chatbot and a ``create_agent`` agent.

Run from the repository root (inside the project's venv)::

    python benchmarks/bench_agents.py            # full run, a few minutes
    python benchmarks/bench_agents.py --quick    # smoke test

``benchmarks/bench_core.py`` runs the same rows as its section 6. Every
comparison runs its variants interleaved in one process (order reversed
every other round) and reports the median over rounds of each round's
ratio to its neighbour (see ``bench_core.paired_ratio``); the model is the
scripted chat model of the tests (``tests/_fakes.py``), so the rows measure
LangChain, LangGraph and this library, not a provider.

1. ``StateGraph(MessagesState)`` chatbot, one model node, a conversation of
   eight messages per invoke: ``FeedbackCallbackHandler`` vs a no-op
   ``BaseCallbackHandler`` (target <= 1.05x: LangChain's own callback
   dispatch is the no-op's cost, the handler's share is on top of it); no
   callbacks, for information.
2. ``create_agent`` with one tool call per turn (two model calls, one tool):
   the handler vs a no-op handler (target <= 1.05x), and
   ``FeedbackMiddleware(record=True, memory=False)`` vs the same agent
   without middleware (target <= 1.10x).
3. Memory injection: the extra time per agent turn of
   ``FeedbackMiddleware(memory=True)`` over ``memory=False``, p50, in a store
   of 100,000 turns of which 30,000 are liked, spread over 1,000 users whose
   questions share everyday words (target <= 5 ms), and the same for one
   user who owns every turn (information: the worst case).
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
_ROOT = _HERE.parent
for path in (_ROOT, _ROOT / "tests", _HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from _common import print_rows  # noqa: E402
from _fakes import ScriptedChatModel, tool_call  # noqa: E402  (tests/_fakes.py)
from bench_core import (  # noqa: E402
    Report,
    fmt_timing,
    interleaved,
    load_average,
    log,
    paired_ratio,
    timed_close,
)

from feedback_plugin import FeedbackCallbackHandler, SessionStore  # noqa: E402

HANDLER_VS_NOOP_MAX = 1.05
MIDDLEWARE_RATIO_MAX = 1.10
MEMORY_P50_MAX_MS = 5.0


@dataclass
class Settings:
    rounds: int = 15
    invokes: int = 200
    warmup: int = 50
    memory_turns: int = 100_000
    memory_liked: int = 30_000
    memory_users: int = 1_000
    memory_calls: int = 200


QUICK = Settings(
    rounds=3, invokes=50, warmup=10, memory_turns=5_000, memory_liked=1_500, memory_calls=40
)


def _noop_handler() -> Any:
    from langchain_core.callbacks import BaseCallbackHandler

    class NoOpHandler(BaseCallbackHandler):
        """Receives every callback and does nothing."""

    return NoOpHandler()


# -- 1: a MessagesState chatbot ----------------------------------------------------------


def bench_graph(s: Settings, base: Path, rep: Report) -> None:
    from langgraph.graph import END, START, MessagesState, StateGraph

    model = ScriptedChatModel(
        script=["Open Settings > Security and use the reset link."], cycle=True
    )

    def chat(state: MessagesState) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("chat", chat)
    graph.add_edge(START, "chat")
    graph.add_edge("chat", END)
    app = graph.compile()
    history: list[Any] = []
    for i in range(3):
        history += [("user", f"Earlier question {i} about my account?"), ("ai", f"Answer {i}.")]
    inputs = {"messages": [*history, ("user", "How do I reset my password?")]}
    store = SessionStore(base / "graph")
    meta = {"session_id": "bench-graph"}
    configs = {
        "none": {"metadata": meta},
        "noop": {"metadata": meta, "callbacks": [_noop_handler()]},
        "handler": {"metadata": meta, "callbacks": [FeedbackCallbackHandler(store)]},
    }
    log(f"graph: {s.rounds} rounds x {s.invokes} invokes per variant")
    t = interleaved(
        {name: (lambda c=c: app.invoke(inputs, c)) for name, c in configs.items()},
        rounds=s.rounds,
        invokes=s.invokes,
        warmup=s.warmup,
        after={"handler": lambda: _flush(store)},
    )
    ratio = paired_ratio(t["handler"], t["noop"])
    last = store.get_session("bench-graph", last_n=1)
    right = bool(last) and (last[0].question, last[0].answer) == (
        "How do I reset my password?",
        "Open Settings > Security and use the reset link.",
    )
    rep.closes.append(timed_close(store))
    rep.add("graph: StateGraph(MessagesState) chatbot, no callbacks", fmt_timing(t["none"]))
    rep.add(
        "graph: + a no-op BaseCallbackHandler",
        fmt_timing(t["noop"]) + f", {paired_ratio(t['noop'], t['none']):.2f}x no callbacks",
    )
    rep.add(
        "graph: + FeedbackCallbackHandler",
        fmt_timing(t["handler"]) + f", {paired_ratio(t['handler'], t['none']):.2f}x no callbacks",
    )
    rep.add(
        "graph: handler / no-op handler, median of paired rounds",
        f"{ratio:.3f}x",
        f"<= {HANDLER_VS_NOOP_MAX}x",
        ratio <= HANDLER_VS_NOOP_MAX,
    )
    rep.add(
        "graph: the recorded turn is the question and the final AI message (check)",
        "yes" if right else "no",
        "yes",
        right,
    )
    rep.data["graph"] = {"handler_vs_noop": ratio}


def _flush(store: SessionStore) -> float:
    start = time.perf_counter()
    store.flush()
    return time.perf_counter() - start


# -- 2: an agent with one tool call per turn ----------------------------------------------


def _agent(middleware: list[Any]) -> Any:
    from langchain.agents import create_agent
    from langchain_core.tools import tool

    @tool
    def lookup(topic: str) -> str:
        """Look a topic up in the help centre."""
        return "Password reset: Settings > Security > Reset password."

    model = ScriptedChatModel(
        script=[tool_call("lookup", {"topic": "password"}, "call-1"), "Settings > Security."],
        cycle=True,
    )
    return create_agent(model, [lookup], middleware=middleware)


def bench_agent(s: Settings, base: Path, rep: Report) -> None:
    from feedback_plugin.middleware import FeedbackMiddleware

    plain = _agent([])
    mw_store = SessionStore(base / "agent-mw")
    with_mw = _agent([FeedbackMiddleware(mw_store, memory=False)])
    store = SessionStore(base / "agent-handler")
    inputs = {"messages": [("user", "How do I reset my password?")]}
    meta = {"session_id": "bench-agent"}
    variants = {
        "none": lambda: plain.invoke(inputs, {"metadata": meta}),
        "noop": lambda: plain.invoke(inputs, {"metadata": meta, "callbacks": [_noop_handler()]}),
        "handler": lambda: plain.invoke(
            inputs, {"metadata": meta, "callbacks": [FeedbackCallbackHandler(store)]}
        ),
        "middleware": lambda: with_mw.invoke(inputs, {"metadata": meta}),
    }
    log(f"agent: {s.rounds} rounds x {s.invokes} invokes per variant")
    t = interleaved(
        variants,
        rounds=s.rounds,
        invokes=s.invokes,
        warmup=s.warmup,
        after={"handler": lambda: _flush(store), "middleware": lambda: _flush(mw_store)},
    )
    handler_ratio = paired_ratio(t["handler"], t["noop"])
    mw_ratio = paired_ratio(t["middleware"], t["none"])
    expected = s.warmup + s.rounds * s.invokes
    by_handler = len(store.get_session("bench-agent"))
    by_mw = len(mw_store.get_session("bench-agent"))
    rep.closes += [timed_close(store), timed_close(mw_store)]
    rep.add("agent: create_agent, one tool call per turn, no callbacks", fmt_timing(t["none"]))
    rep.add(
        "agent: + a no-op BaseCallbackHandler",
        fmt_timing(t["noop"]) + f", {paired_ratio(t['noop'], t['none']):.2f}x no callbacks",
    )
    rep.add(
        "agent: handler / no-op handler, median of paired rounds",
        f"{handler_ratio:.3f}x",
        f"<= {HANDLER_VS_NOOP_MAX}x",
        handler_ratio <= HANDLER_VS_NOOP_MAX,
    )
    rep.add(
        "agent: FeedbackMiddleware(record=True, memory=False) / no middleware",
        f"{mw_ratio:.3f}x ({fmt_timing(t['middleware'])})",
        f"<= {MIDDLEWARE_RATIO_MAX}x",
        mw_ratio <= MIDDLEWARE_RATIO_MAX,
    )
    rep.add(
        "agent: turns recorded by the handler / by the middleware (check)",
        f"{by_handler:,} / {by_mw:,} of {expected:,}",
        "all",
        by_handler == expected == by_mw,
    )
    rep.data["agent"] = {"handler_vs_noop": handler_ratio, "middleware_vs_none": mw_ratio}


# -- 3: memory injection at 100,000 turns -----------------------------------------------------

_WORDS = [
    *("account", "password", "reset", "invoice", "export", "note", "share", "folder"),
    *("sync", "offline", "delete", "change", "set", "email", "login", "settings"),
    *("billing", "plan", "team", "upgrade", "download", "pdf", "markdown", "tag"),
    *("search", "backup", "restore", "device", "phone", "desktop", "app", "update"),
]


def _question(rng: random.Random) -> str:
    return "How do I " + " ".join(rng.sample(_WORDS, 4)) + "?"


def _fill(store: SessionStore, s: Settings, users: int, rng: random.Random) -> None:
    liked_every = s.memory_turns / s.memory_liked
    liked: list[tuple[str, str, str]] = []
    for i in range(s.memory_turns):
        user = f"user-{i % users}"
        session = f"s-{i % (users * 3)}"
        entry = store.record(session, _question(rng), "An answer. " * 20, user=user)
        if int((i + 1) / liked_every) > int(i / liked_every):
            liked.append((session, entry.qa_id, user))
        if i % 5000 == 4999:
            store.flush()
    store.flush()
    for session, qa_id, user in liked:
        store.thumbs(session, qa_id, up=True, user=user)
    store.ready_memory()  # the index catches up once, before timing


def _memory_extra(
    s: Settings, base: Path, users: int, rng: random.Random
) -> tuple[float, float, int]:
    """p50 extra ms per agent turn with memory, the p50 without, and the liked turns shown."""
    from feedback_plugin.middleware import FeedbackMiddleware

    store = SessionStore(base / f"memory-{users}")
    log(f"memory: filling {s.memory_turns:,} turns ({s.memory_liked:,} liked) for {users:,} users")
    _fill(store, s, users, rng)
    on = _agent([FeedbackMiddleware(store, memory=True, record=False)])
    off = _agent([FeedbackMiddleware(store, memory=False, record=False)])
    questions = [_question(rng) for _ in range(s.memory_calls)]
    on_ms: list[float] = []
    off_ms: list[float] = []
    shown = 0
    for i, question in enumerate(questions):
        cfg = {"configurable": {"thread_id": f"t{i}", "user_id": f"user-{i % users}"}}
        inputs = {"messages": [("user", question)]}
        pair = [(on, on_ms), (off, off_ms)]
        for agent, out in pair if i % 2 == 0 else pair[::-1]:
            start = time.perf_counter()
            result = agent.invoke(inputs, cfg)
            out.append((time.perf_counter() - start) * 1000)
            if agent is on:
                shown += "<liked_answers>" in str(result)  # never in the conversation
    extra = statistics.median(a - b for a, b in zip(on_ms, off_ms, strict=True))
    store.close()
    return extra, statistics.median(off_ms), shown


def bench_memory(s: Settings, base: Path, rep: Report) -> None:
    rng = random.Random(11)
    extra, plain, leaked = _memory_extra(s, base, s.memory_users, rng)
    rep.add(
        f"memory injection: extra per agent turn, p50, {s.memory_turns:,} turns / "
        f"{s.memory_liked:,} liked over {s.memory_users:,} users",
        f"{extra:.2f} ms (agent turn without memory: {plain:.2f} ms)",
        f"<= {MEMORY_P50_MAX_MS} ms",
        extra <= MEMORY_P50_MAX_MS,
    )
    rep.add(
        "memory injection: liked turns written into the conversation (check)",
        str(leaked),
        "0",
        leaked == 0,
    )
    extra_one, _, _ = _memory_extra(s, base, 1, rng)
    rep.add(
        "memory injection: extra per agent turn, p50, one user owning all "
        f"{s.memory_turns:,} turns",
        f"{extra_one:.2f} ms",
        f"<= {MEMORY_P50_MAX_MS} ms (info)",
        extra_one <= MEMORY_P50_MAX_MS,
        info=True,
    )
    rep.data["memory"] = {"extra_ms_p50": extra, "extra_ms_p50_one_user": extra_one}


def run(s: Settings, base: Path, rep: Report) -> None:
    """All three sections into ``rep`` (bench_core's section 6 calls this)."""
    bench_graph(s, base, rep)
    bench_agent(s, base, rep)
    bench_memory(s, base, rep)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts, for a smoke test")
    args = parser.parse_args(argv)
    s = QUICK if args.quick else Settings()
    base = Path(tempfile.mkdtemp(prefix="fp-bench-agents-"))
    rep = Report()
    before = load_average()
    try:
        run(s, base, rep)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"load average before / after: {before} / {load_average()}")
    print_rows(rep.rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
