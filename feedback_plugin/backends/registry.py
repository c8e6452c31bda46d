"""Store locations: which backend a location string opens.

>>> {"redis://", "postgresql://", "postgres://"} <= set(schemes())  # built in; more can be added
True
>>> type(open_backend("some/dir")).__name__  # no scheme: a directory (opened on first use)
'DiskBackend'

A location with a registered scheme opens that scheme's backend; any other
location without ``://`` is a diskcache directory. ``register_scheme`` adds
a backend for a scheme (a test's in-memory backend, a third-party engine);
the store and the command line both open locations through here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..errors import ConfigurationError
from .base import Backend

__all__ = ["BackendFactory", "open_backend", "register_scheme", "schemes"]

BackendFactory = Callable[..., Backend]
"""``factory(location, *, namespace, ttl, max_entries) -> Backend``."""

_lock = threading.Lock()
_schemes: dict[str, BackendFactory] = {}


def register_scheme(scheme: str, factory: BackendFactory) -> None:
    """Open locations that start with ``scheme`` (e.g. ``"memory://"``) with ``factory``."""
    if not scheme.endswith("://") or len(scheme) < 4:
        raise ConfigurationError(f"a scheme looks like 'name://', got {scheme!r}")
    with _lock:
        _schemes[scheme] = factory


def schemes() -> list[str]:
    """The registered schemes."""
    with _lock:
        return list(_schemes)


def open_backend(
    location: str,
    *,
    namespace: str | None = None,
    ttl: float | None = None,
    max_entries: int | None = None,
) -> Backend:
    """The backend for ``location`` (the constructor of each backend does no I/O)."""
    options: dict[str, Any] = {"namespace": namespace, "ttl": ttl, "max_entries": max_entries}
    with _lock:
        factory = next((f for s, f in _schemes.items() if location.startswith(s)), None)
    if factory is not None:
        return factory(location, **options)
    if "://" in location:
        raise ConfigurationError(
            f"unsupported store location {location!r} (schemes: {', '.join(schemes())})"
        )
    from .disk import DiskBackend

    return DiskBackend(location, **options)


def _redis(location: str, **options: Any) -> Backend:
    try:
        from .redis import RedisBackend
    except ImportError as exc:  # pragma: no cover
        raise ConfigurationError(f"no Redis backend for {location!r}: {exc}") from exc
    return RedisBackend(location, **options)


def _postgres(location: str, **options: Any) -> Backend:
    from .postgres import PostgresBackend

    return PostgresBackend(location, **options)


for _scheme in ("redis://", "rediss://", "unix://"):
    register_scheme(_scheme, _redis)
for _scheme in ("postgresql://", "postgres://"):
    register_scheme(_scheme, _postgres)
