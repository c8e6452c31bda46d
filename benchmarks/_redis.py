"""What the benchmark scripts share: checking the Redis they were pointed at."""

from __future__ import annotations


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
