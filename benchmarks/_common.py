"""What the benchmark scripts share: a table row, and checking the Redis they were pointed at."""

from __future__ import annotations

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
