"""What the benchmark scripts share: a table row and its printing, checking the Redis and
PostgreSQL servers they were pointed at, and deleting a run's namespace there."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class Row:
    name: str
    value: str
    target: str = ""
    ok: bool | None = None  # None: information only
    info: bool = False  # a target shown for information: met or not, never PASS/FAIL

    @property
    def result(self) -> str:
        if self.ok is None:
            return ""
        if self.info:
            return "info: met" if self.ok else "info: over"
        return "PASS" if self.ok else "**FAIL**"


def print_rows(rows: Sequence[Row]) -> None:
    """Print ``rows`` as a markdown table, a PASS/FAIL (or INFO) line per target, a tally."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    header = ["measurement", "value", "target", "result"]
    table = [[cell(r.name), cell(r.value), r.target, r.result] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in table:
        print(line(row))
    targets = [r for r in rows if r.ok is not None and not r.info]
    infos = [r for r in rows if r.ok is not None and r.info]
    failed = [r for r in targets if not r.ok]
    print()
    for r in targets:
        print(f"{'PASS' if r.ok else 'FAIL'}  {r.name}: {r.value} (target {r.target})")
    for r in infos:
        target = r.target.removesuffix(" (info)")
        print(f"INFO  {r.name}: {r.value} (target {target}: {'met' if r.ok else 'over'})")
    print(
        f"\n{len(targets) - len(failed)}/{len(targets)} targets and checks pass"
        + (f"; FAIL: {len(failed)}" if failed else "")
        + (
            f"; information-only targets: {sum(r.ok is True for r in infos)}/{len(infos)} met"
            if infos
            else ""
        )
    )


def redis_unreachable(url: str) -> str | None:
    """Why the Redis server at ``url`` cannot be used, or ``None`` when it answers a PING."""
    try:
        import redis
    except ImportError:
        return "the redis client is not installed (pip install 'feedback-plugin[redis]')"
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return None


def redis_versions(url: str) -> tuple[str, str]:
    """The Redis server's and the redis-py client's versions."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        server = str(client.info("server").get("redis_version", "?"))
    finally:
        client.close()
    return server, redis.__version__


POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
"""The PostgreSQL the benchmarks use by default (the test server ``.ci/run`` starts)."""


def libpq_url(url: str) -> str:
    """``url`` without the backend's own query parameters (``schema``, ``pool_size``...)."""
    from feedback_plugin.backends.postgres import PostgresBackend

    return PostgresBackend(url).conninfo  # the constructor does no I/O


def postgres_unreachable(url: str) -> str | None:
    """Why the PostgreSQL server at ``url`` cannot be used, or ``None`` when it answers."""
    try:
        import psycopg
        import psycopg_pool  # noqa: F401  (the backend needs both)
    except ImportError:
        return "psycopg is not installed (pip install 'feedback-plugin[postgres]')"
    try:
        with psycopg.connect(libpq_url(url), connect_timeout=3) as con:
            con.execute("SELECT 1")
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}".strip()
    return None


def postgres_versions(url: str) -> tuple[str, str]:
    """The PostgreSQL server's and the psycopg client's versions."""
    import psycopg

    with psycopg.connect(libpq_url(url), connect_timeout=3) as con:
        row = con.execute("SHOW server_version").fetchone()
    return (str(row[0]).split()[0] if row else "?"), psycopg.__version__


def drop_namespace(location: str, namespace: str) -> int:
    """Delete everything of ``namespace`` on a Redis or PostgreSQL server (a benchmark
    run's own, ``bench-...``); return how many keys or rows went."""
    from feedback_plugin import SessionStore

    if not namespace.startswith("bench"):
        raise ValueError(f"not a benchmark namespace: {namespace!r}")
    store = SessionStore(location, namespace=namespace)
    try:
        return int(store.backend.drop())  # type: ignore[attr-defined]
    finally:
        store.close()
