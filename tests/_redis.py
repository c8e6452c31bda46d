"""The test Redis, shared by every suite that runs on a real server.

``FEEDBACK_PLUGIN_TEST_REDIS`` names it (default: database 15 of the local
server that ``.ci/run`` starts). When it does not answer, Redis tests fail
under CI (``$CI`` set) and are skipped elsewhere, with the reason.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import pytest

REDIS_URL = os.environ.get("FEEDBACK_PLUGIN_TEST_REDIS", "redis://127.0.0.1:6379/15")


@cache
def redis_unavailable() -> str | None:
    """Why the test Redis cannot be used, or ``None`` when it answers."""
    try:
        import redis
    except ImportError:
        return "the redis client is not installed (pip install 'feedback-plugin[redis]')"
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
        client.ping()
        client.close()
    except Exception as exc:
        return f"no Redis at {REDIS_URL} ({type(exc).__name__}: {exc})"
    return None


def require_redis(what: str = "Redis") -> None:
    """Fail (under CI) or skip the calling test when the test Redis is unavailable."""
    reason = redis_unavailable()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and the {what} tests cannot run: {reason}")
    pytest.skip(f"{what} tests skipped: {reason}")


class Counter:
    """Counts the commands a redis-py client sends, upper case (a pipeline is one)."""

    def __init__(self, client: Any) -> None:
        self.commands: list[str] = []
        self._send = client.execute_command
        client.execute_command = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.commands.append(str(args[0]).upper())
        return self._send(*args, **kwargs)
