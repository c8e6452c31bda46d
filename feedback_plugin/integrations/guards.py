"""HTTP hardening shared by the REST API and the demo chat app.

* :class:`SafeJSONResponse` and :func:`install_json_errors`: every response and
  every error body is JSON, even when it holds text UTF-8 cannot carry (lone
  surrogates come out escaped, ``"\\ud800"``) or a non-finite number; an
  unexpected exception is a JSON 500 without internals (logged).
* :func:`require_json` (415) and :func:`limit_body` (413, on ``Content-Length``
  and on the bytes actually streamed) for the routes that take a body.
* :class:`RateLimit`: an optional per-API-key request rate, counted by the
  `limits <https://limits.readthedocs.io>`_ package (``feedback-plugin[ratelimit]``).
* :class:`AllowedHosts`: answers 400 to a ``Host`` header the app was not
  started for (DNS rebinding), and :func:`check_open_mode`: no open API
  beyond loopback unless forced.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import ConfigurationError

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "AllowedHosts",
    "RateLimit",
    "SafeJSONResponse",
    "check_open_mode",
    "default_allowed_hosts",
    "install_json_errors",
    "is_loopback",
    "limit_body",
    "require_json",
]

log = logging.getLogger("feedback_plugin")

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
"""The largest request body accepted by default (1 MiB)."""

ENV_ALLOWED_HOSTS = "FEEDBACK_PLUGIN_ALLOWED_HOSTS"
ENV_MAX_BODY_BYTES = "FEEDBACK_PLUGIN_MAX_BODY_BYTES"
ENV_RATE_LIMIT = "FEEDBACK_PLUGIN_RATE_LIMIT"
ENV_ALLOW_OPEN = "FEEDBACK_PLUGIN_ALLOW_OPEN"

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
INTERNAL_ERROR = "internal server error (logged on the server)"


# -- JSON everywhere ---------------------------------------------------------------


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by its name (``"inf"``, ``"nan"``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class SafeJSONResponse(JSONResponse):
    """A JSON response that never fails to render.

    Ordinary text stays UTF-8 (compact); only when that fails, because the
    content holds a lone surrogate or a non-finite float, is it written with
    ``\\uXXXX`` escapes and the floats as strings.
    """

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except ValueError:  # UnicodeEncodeError, or NaN / inf with allow_nan=False
            return json.dumps(
                _finite(content), ensure_ascii=True, allow_nan=False, separators=(",", ":")
            ).encode("ascii")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code < 200 or exc.status_code in (204, 205, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    return SafeJSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return SafeJSONResponse({"detail": jsonable_encoder(exc.errors())}, 422)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("feedback_plugin: %s %s failed", request.method, request.url.path, exc_info=exc)
    return SafeJSONResponse({"detail": INTERNAL_ERROR}, 500)


def install_json_errors(app: FastAPI) -> None:
    """Make every error ``app`` answers a JSON ``{"detail": ...}`` that always renders.

    An unexpected exception becomes a 500 whose body says nothing about it
    (the traceback goes to the ``feedback_plugin`` logger).
    """
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)


# -- bodies: JSON only, and not too large --------------------------------------------


def require_json(request: Request) -> None:
    """415 unless the request says its body is JSON (``application/json`` or ``+json``).

    Browsers send cross-site form posts and ``text/plain`` without asking the
    server first; a JSON content type they cannot send that way. A request
    with no body at all passes (the route then answers 422, body missing).
    """
    headers = request.headers
    if "transfer-encoding" not in headers and headers.get("content-length", "0").strip() == "0":
        return
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    kind, _, sub = media.partition("/")
    if kind != "application" or not (sub == "json" or sub.endswith("+json")):
        raise HTTPException(415, "the body must be JSON (Content-Type: application/json)")


def _too_large(max_bytes: int) -> HTTPException:
    return HTTPException(413, f"the request body is larger than {max_bytes} bytes")


def limit_body(request: Request, max_bytes: int) -> Request:
    """The request, reading at most ``max_bytes`` of body: 413 beyond that.

    Checked on ``Content-Length`` first, then on the bytes that actually
    arrive (a chunked or lying client cannot stream past the limit).
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise HTTPException(400, "Content-Length is not a number") from None
        if size > max_bytes:
            raise _too_large(max_bytes)
    receive = request.receive
    seen = 0

    async def limited() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > max_bytes:
                raise _too_large(max_bytes)
        return message

    return Request(request.scope, limited)


def body_limit_setting(value: int | None, environ: Mapping[str, str] | None = None) -> int:
    """``value``, else ``$FEEDBACK_PLUGIN_MAX_BODY_BYTES``, else 1 MiB; checked."""
    env = os.environ if environ is None else environ
    if value is None:
        raw = env.get(ENV_MAX_BODY_BYTES, "").strip()
        if not raw:
            return DEFAULT_MAX_BODY_BYTES
        try:
            value = int(raw)
        except ValueError:
            raise ConfigurationError(f"{ENV_MAX_BODY_BYTES} must be a number of bytes") from None
    if type(value) is not int or value < 1:
        raise ConfigurationError("max_body_bytes must be a positive int (bytes)")
    return value


# -- rate limit ------------------------------------------------------------------------


class RateLimit:
    """Requests per API key (per client address without keys), e.g. ``"60/minute"``.

    Counted with a moving window by the ``limits`` package (``pip install
    "feedback-plugin[ratelimit]"``), in this process's memory by default;
    ``storage="redis://host:6379"`` shares the count between workers. Beyond
    the rate a request answers 429 with ``Retry-After``.
    """

    def __init__(self, rate: str, *, storage: str = "memory://") -> None:
        try:
            from limits import parse_many
            from limits.storage import storage_from_string
            from limits.strategies import MovingWindowRateLimiter
        except ImportError as exc:
            raise ConfigurationError(
                "a rate limit needs the 'limits' package: pip install 'feedback-plugin[ratelimit]'"
            ) from exc
        try:
            self._items = parse_many(rate)
        except ValueError as exc:
            raise ConfigurationError(
                f"rate limit {rate!r} is not like '60/minute' or '10/second;500/hour'"
            ) from exc
        self.rate = rate
        self._limiter = MovingWindowRateLimiter(storage_from_string(storage))

    def __repr__(self) -> str:
        return f"RateLimit({self.rate!r})"

    def hit(self, who: str) -> None:
        """Count one request of ``who``; raise a 429 when it is over the rate."""
        for item in self._items:
            if not self._limiter.hit(item, "feedback_plugin", who):
                reset = self._limiter.get_window_stats(item, "feedback_plugin", who).reset_time
                wait = max(1, math.ceil(reset - time.time()))
                raise HTTPException(
                    429,
                    f"too many requests (limit {self.rate}); retry in {wait} s",
                    headers={"Retry-After": str(wait)},
                )


def rate_limit_setting(
    value: str | RateLimit | None, environ: Mapping[str, str] | None = None
) -> RateLimit | None:
    """``value``, else ``$FEEDBACK_PLUGIN_RATE_LIMIT``, else none (off)."""
    if isinstance(value, RateLimit):
        return value
    env = os.environ if environ is None else environ
    rate = value if value is not None else env.get(ENV_RATE_LIMIT, "").strip() or None
    return None if rate is None else RateLimit(rate)


# -- hosts -------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.1``, ``::1``, ``[::1]``)."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_wildcard(host: str) -> bool:
    return host.strip().strip("[]") in ("", "0.0.0.0", "::")


def _norm(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def default_allowed_hosts(bind_host: str | None = None) -> list[str]:
    """The ``Host`` names a server bound to ``bind_host`` answers to by default.

    Unknown bind (an app factory) or a loopback bind: ``localhost``,
    ``127.0.0.1``, ``::1`` (plus the bind host). All interfaces (``0.0.0.0``,
    ``::``): also this machine's host name and FQDN. Any other address: that
    address only.
    """
    if bind_host is None or is_loopback(bind_host):
        hosts = [*LOOPBACK_NAMES] + ([] if bind_host is None else [_norm(bind_host)])
    elif _is_wildcard(bind_host):
        hosts = [*LOOPBACK_NAMES, _norm(socket.gethostname()), _norm(socket.getfqdn())]
    else:
        hosts = [_norm(bind_host)]
    return list(dict.fromkeys(h for h in hosts if h))


def allowed_hosts_setting(
    value: Sequence[str] | None,
    bind_host: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """``value``, else ``$FEEDBACK_PLUGIN_ALLOWED_HOSTS`` (comma-separated), else the default."""
    env = os.environ if environ is None else environ
    if value is None:
        raw = env.get(ENV_ALLOWED_HOSTS, "")
        value = [h for h in raw.split(",") if h.strip()] or default_allowed_hosts(bind_host)
    if isinstance(value, str) or not all(isinstance(h, str) and h.strip() for h in value):
        raise ConfigurationError("allowed_hosts must be a list of host names")
    if not value:
        raise ConfigurationError("allowed_hosts is empty: no request could be answered")
    return [_norm(h) if h.strip() != "*" else "*" for h in value]


def _host_name(header: str) -> str:
    header = header.strip()
    if header.startswith("["):  # [::1]:8000
        return _norm(header[1 : header.find("]")] if "]" in header else header)
    name, sep, port = header.rpartition(":")
    return _norm(name if sep and port.isdigit() and ":" not in name else header)


class AllowedHosts:
    """ASGI middleware: a request whose ``Host`` is not one of ``hosts`` gets a JSON 400.

    ``"*"`` allows any host; ``"*.example.com"`` any subdomain of example.com.
    A port in the header is ignored.
    """

    def __init__(self, app: ASGIApp, hosts: Sequence[str]) -> None:
        self.app = app
        self.any = "*" in hosts
        self.exact = frozenset(h for h in hosts if not h.startswith("*"))
        self.suffixes = tuple(h[1:] for h in hosts if h.startswith("*."))

    def allows(self, header: str) -> bool:
        name = _host_name(header)
        return self.any or name in self.exact or (bool(name) and name.endswith(self.suffixes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self.allows(
            Headers(scope=scope).get("host", "")
        ):
            await self.app(scope, receive, send)
            return
        response = SafeJSONResponse(
            {"detail": "this server does not answer to that Host name (see allowed hosts)"}, 400
        )
        await response(scope, receive, send)


def allow_open_setting(value: bool | None, environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    if value is None:
        return env.get(ENV_ALLOW_OPEN, "").strip().lower() in ("1", "true", "yes")
    return bool(value)


def check_open_mode(hosts: Sequence[str], *, allow_open: bool) -> None:
    """Refuse an open API (no keys) that answers to a non-loopback host, unless forced."""
    public = [h for h in hosts if not is_loopback(h)]
    if public and not allow_open:
        raise ConfigurationError(
            "no API keys, and the app would answer to non-loopback hosts "
            f"{public}: anyone who can reach it could read and rate every turn. "
            "Set FEEDBACK_PLUGIN_API_KEYS, or force the open mode with "
            f"allow_open=True / {ENV_ALLOW_OPEN}=1 (--allow-open for the demo)."
        )
