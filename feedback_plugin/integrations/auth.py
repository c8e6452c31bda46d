"""API-key auth shared by the REST API and the demo chat: keys, principals, scopes.

:class:`ApiKeyAuth` maps each key to one user and a set of scopes (``read``
for GET, ``feedback`` for PUT / PATCH / POST / DELETE). :func:`authorize`
checks a request for a scope; :func:`guarded_route` is the route class that
checks the key (and the rate limit, the body's type and size) before
FastAPI reads a body. Both :mod:`~feedback_plugin.integrations.rest` and the
demo chat (:mod:`~feedback_plugin.integrations.demo`) use them; users import
``ApiKeyAuth`` from ``feedback_plugin.integrations.rest``, which re-exports it.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute
from fastapi.security.utils import get_authorization_scheme_param

from ..errors import ConfigurationError
from ..models import check_user
from .guards import RateLimit, body_limit_setting, limit_body, require_json

__all__ = [
    "ENV_KEYS",
    "ENV_KEYS_FILE",
    "OPEN",
    "SCOPES",
    "ApiKeyAuth",
    "Principal",
    "authenticate",
    "authorize",
    "check_scope",
    "guarded_route",
]

SCOPES = frozenset({"read", "feedback"})
"""``read``: the GET endpoints; ``feedback``: PUT and DELETE on a turn's feedback."""

ENV_KEYS = "FEEDBACK_PLUGIN_API_KEYS"
ENV_KEYS_FILE = "FEEDBACK_PLUGIN_API_KEYS_FILE"

UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}
"""The header of every 401."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user every operation is scoped to, and what they may do."""

    user: str | None
    scopes: frozenset[str]
    key_id: str | None = None
    """A short digest of the API key (what a rate limit counts by); ``None`` when open."""


OPEN = Principal(user=None, scopes=SCOPES)
"""The caller of an API without keys: user ``None``, every scope."""


class ApiKeyAuth:
    """API keys, each mapped to one user and a set of scopes.

    >>> auth = ApiKeyAuth({"k1": "alice", "k2": {"user": "bob", "scopes": ["read"]}})
    >>> auth.authenticate("k1").user, sorted(auth.authenticate("k1").scopes)
    ('alice', ['feedback', 'read'])
    >>> auth.authenticate("k2").scopes
    frozenset({'read'})
    >>> auth.authenticate("nope") is None
    True

    Keys are kept only as SHA-256 digests and compared with
    :func:`hmac.compare_digest` against every configured key, so the time a
    lookup takes does not depend on how much of a key was right.
    """

    def __init__(self, keys: Mapping[str, str | Mapping[str, Any]]) -> None:
        if not isinstance(keys, Mapping):
            raise ConfigurationError(f"API keys must be a mapping, got {type(keys).__name__}")
        if not keys:
            raise ConfigurationError("no API keys given")
        entries: list[tuple[bytes, Principal]] = []
        for key, spec in keys.items():
            if not isinstance(key, str) or not key.strip() or key != key.strip():
                raise ConfigurationError(
                    "an API key must be a non-empty string without surrounding whitespace"
                )
            digest = _digest(key)
            who = _principal(spec)
            entries.append((digest, Principal(who.user, who.scopes, digest[:12].hex())))
        self._entries: tuple[tuple[bytes, Principal], ...] = tuple(entries)

    def __repr__(self) -> str:  # never shows the keys
        users = sorted({str(p.user) for _, p in self._entries})
        return f"ApiKeyAuth({len(self._entries)} keys for users {users})"

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, key: str) -> Principal | None:
        """The principal a key belongs to, or ``None`` for an unknown key."""
        digest = _digest(key)
        found: Principal | None = None
        for known, principal in self._entries:  # no early exit
            if hmac.compare_digest(known, digest):
                found = principal
        return found

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ApiKeyAuth:
        """Keys from a JSON object: ``{key: user}`` or ``{key: {"user": u, "scopes": [...]}}``."""
        return cls(_raw_keys_from_file(os.fspath(path)))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ApiKeyAuth | None:
        """Keys from ``FEEDBACK_PLUGIN_API_KEYS`` and/or ``FEEDBACK_PLUGIN_API_KEYS_FILE``.

        ``FEEDBACK_PLUGIN_API_KEYS`` is ``"key1:alice,key2:bob"`` (both scopes
        each; a key cannot contain ``:`` or ``,`` there, use the file for
        that); ``FEEDBACK_PLUGIN_API_KEYS_FILE`` names a JSON file (see
        :meth:`from_file`). When both are set their keys are merged. Returns
        ``None`` when neither is set; a variable that is set but holds no key
        is a :class:`ConfigurationError` (the API never opens by mistake).
        """
        env = os.environ if environ is None else environ
        inline = env.get(ENV_KEYS)
        file = env.get(ENV_KEYS_FILE)
        if inline is None and file is None:
            return None
        keys: dict[str, str | Mapping[str, Any]] = {}
        if file is not None:
            if not file.strip():
                raise ConfigurationError(f"{ENV_KEYS_FILE} is set but empty")
            keys.update(_raw_keys_from_file(file))
        if inline is not None:
            for part in inline.split(","):
                if not part.strip():
                    continue
                key, sep, user = part.strip().partition(":")
                if not sep or not key.strip() or not user.strip():
                    raise ConfigurationError(
                        f"{ENV_KEYS} entries must look like 'key:user', got an entry "
                        f"of {len(part.strip())} characters without that shape"
                    )
                key = key.strip()
                if key in keys and _principal(keys[key]).user != user.strip():
                    raise ConfigurationError(f"an API key in {ENV_KEYS} is mapped to two users")
                keys[key] = user.strip()
            if not keys:
                raise ConfigurationError(f"{ENV_KEYS} is set but holds no 'key:user' entry")
        return cls(keys)


def _raw_keys_from_file(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read API keys from {path!r}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path!r} must hold a JSON object of API keys")
    return data


def _digest(key: str) -> bytes:
    return sha256(key.encode("utf-8", "surrogatepass")).digest()


def _principal(spec: object) -> Principal:
    if isinstance(spec, str):
        return Principal(user=_key_user(spec), scopes=SCOPES)
    if not isinstance(spec, Mapping):
        raise ConfigurationError(
            f"an API key must map to a user name or {{'user': ..., 'scopes': [...]}}, "
            f"got {type(spec).__name__}"
        )
    unknown = set(spec) - {"user", "scopes"}
    if unknown:
        raise ConfigurationError(f"unknown API key settings: {sorted(unknown)}")
    raw_scopes = spec.get("scopes", sorted(SCOPES))
    if not isinstance(raw_scopes, (list, tuple, set, frozenset)) or not all(
        isinstance(s, str) for s in raw_scopes
    ):
        raise ConfigurationError("scopes must be a list of strings")
    scopes = frozenset(raw_scopes)
    if not scopes:
        raise ConfigurationError("an API key needs at least one scope")
    if not scopes <= SCOPES:
        raise ConfigurationError(
            f"unknown scopes {sorted(scopes - SCOPES)}; known: {sorted(SCOPES)}"
        )
    return Principal(user=_key_user(spec.get("user")), scopes=scopes)


def _key_user(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError("an API key's user must be a non-empty string")
    user = check_user(value)
    assert user is not None
    return user


# -- checking a request ------------------------------------------------------------------


def authenticate(keys: ApiKeyAuth, request: Request) -> Principal:
    """The caller's principal from ``Authorization: Bearer <key>``, else a 401."""
    scheme, token = get_authorization_scheme_param(request.headers.get("Authorization"))
    if scheme.lower() != "bearer" or not token:
        raise HTTPException(
            401, "missing API key (Authorization: Bearer <key>)", headers=UNAUTHORIZED
        )
    found = keys.authenticate(token)
    if found is None:
        raise HTTPException(401, "unknown API key", headers=UNAUTHORIZED)
    return found


def check_scope(who: Principal, scope: str) -> None:
    """A 403 unless ``who`` has ``scope``."""
    if scope not in who.scopes:
        raise HTTPException(
            403,
            f"this API key lacks the {scope!r} scope",
            headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
        )


def authorize(keys: ApiKeyAuth | None, request: Request, scope: str) -> str | None:
    """The calling user for an endpoint needing ``scope`` ("read" or "feedback").

    ``None`` when ``keys`` is ``None`` (an open API); otherwise raises the
    router's own 401 / 403 ``HTTPException``. For apps that add endpoints of
    their own beside the router (the demo chat's ``POST /api/chat``).
    """
    if keys is None:
        return None
    who = authenticate(keys, request)
    check_scope(who, scope)
    return who.user


def guarded_route(
    keys: ApiKeyAuth | None,
    *,
    max_body_bytes: int | None = None,
    rate_limit: RateLimit | None = None,
) -> type[APIRoute]:
    """A route class that checks a request before FastAPI reads its body.

    In this order: the key (401 / 403; the scope is ``feedback`` for PUT,
    PATCH, POST, DELETE, else ``read``), the rate limit of that key (429),
    then, on routes that take a body, its content type (415) and its size
    (413, ``max_body_bytes``, default 1 MiB). The caller's user is left in
    ``request.state.user`` (the :class:`Principal` in ``request.state.principal``,
    which the dependencies then take instead of checking the key again).
    FastAPI parses a JSON body before it runs any dependency, so without this a
    caller with no key would get a 422 for a malformed body instead of a 401.
    The dependencies still declare the key (it is in the OpenAPI schema).
    """
    body_limit = body_limit_setting(max_body_bytes, {})

    class GuardedRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()
            writes = {"PUT", "PATCH", "POST", "DELETE"} & (self.methods or set())
            scope = "feedback" if writes else "read"
            takes_body = self.body_field is not None

            async def guarded(request: Request) -> Response:
                who = OPEN if keys is None else authenticate(keys, request)
                check_scope(who, scope)
                request.state.user, request.state.principal = who.user, who
                if rate_limit is not None:
                    client = request.client.host if request.client else "unknown"
                    rate_limit.hit(f"key:{who.key_id}" if who.key_id else f"client:{client}")
                if takes_body:
                    require_json(request)
                    request = limit_body(request, body_limit)
                return await handler(request)

            return guarded

    return GuardedRoute
