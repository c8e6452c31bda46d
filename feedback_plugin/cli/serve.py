"""``feedback-plugin serve``: the demo chat web app under uvicorn.

The one place the demo server starts: ``python -m feedback_plugin serve``,
``scripts/demo.sh`` and ``python -m feedback_plugin.integrations.webapp`` all
come here. An option left out takes its environment variable, else the
default: ``$FEEDBACK_PLUGIN_HOST`` (127.0.0.1), ``$FEEDBACK_PLUGIN_PORT``
(8000), ``$FEEDBACK_PLUGIN_ALLOWED_HOSTS``, ``$FEEDBACK_PLUGIN_MAX_BODY_BYTES``
(1 MiB), ``$FEEDBACK_PLUGIN_RATE_LIMIT`` (none), ``$FEEDBACK_PLUGIN_ALLOW_OPEN``;
the API keys come from ``$FEEDBACK_PLUGIN_API_KEYS`` / ``_FILE``. FastAPI,
uvicorn and LangChain are imported only when the command runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .output import Out
from .parser import EXIT_OK, EXIT_USAGE, CliError, parse_port

__all__ = ["ENV_HOST", "ENV_PORT", "cmd_serve"]

ENV_HOST = "FEEDBACK_PLUGIN_HOST"
ENV_PORT = "FEEDBACK_PLUGIN_PORT"

log = logging.getLogger("feedback_plugin")

_NO_WEB = "the demo server needs the web extra ({}): pip install 'feedback-plugin[web]'"


def _port(args: argparse.Namespace) -> int:
    if args.port is not None:
        return int(args.port)
    raw = os.environ.get(ENV_PORT, "").strip()
    if not raw:
        return 8000
    try:
        return parse_port(raw)
    except argparse.ArgumentTypeError as exc:
        raise CliError(f"${ENV_PORT}: {exc}", EXIT_USAGE) from None


def cmd_serve(args: argparse.Namespace, out: Out) -> int:
    """Run the demo chat until Ctrl+C; the exit code (non-zero when the server cannot start)."""
    if args.namespace is not None:
        raise CliError("serve does not take --namespace: the demo app uses the default one", 2)
    try:
        import uvicorn

        from ..integrations import guards
        from ..integrations.auth import ApiKeyAuth
        from ..integrations.demo.app import create_demo_app
    except ImportError as exc:
        raise CliError(_NO_WEB.format(exc)) from exc
    from ..store import SessionStore

    host: str = args.host or os.environ.get(ENV_HOST, "").strip() or "127.0.0.1"
    port = _port(args)
    hosts: list[str] | None = None
    if args.allowed_hosts is not None:
        hosts = [h for h in args.allowed_hosts.split(",") if h.strip()]
    # these read $FEEDBACK_PLUGIN_ALLOWED_HOSTS / _MAX_BODY_BYTES / _RATE_LIMIT / _ALLOW_OPEN
    hosts = guards.allowed_hosts_setting(hosts, bind_host=host)
    body_limit = guards.body_limit_setting(args.max_body_bytes)
    rate_limit = guards.rate_limit_setting(args.rate_limit)
    allow_open = bool(args.allow_open) or guards.allow_open_setting(None)
    auth = ApiKeyAuth.from_env()

    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    if auth is None and not guards.is_loopback(host):
        guards.check_open_mode([host, *hosts], allow_open=allow_open)
        log.warning(
            "feedback_plugin demo: listening on %s without API keys (--allow-open): "
            "anyone on the network can read and rate the turns.",
            host,
        )
    store = SessionStore(args.store)
    try:
        app = create_demo_app(
            store,
            auth=auth,
            allowed_hosts=hosts,
            max_body_bytes=body_limit,
            rate_limit=rate_limit,
            allow_open=allow_open or guards.is_loopback(host),
        )
        shown = f"[{host}]" if ":" in host else host
        out.print(
            f"feedback_plugin demo chat: http://{shown}:{port}/  (store: {store.shown_location})"
        )
        out.print(f"Answers to Host names: {', '.join(hosts)}")
        out.print("Ctrl+C stops it.")
        sys.stdout.flush()
        try:
            uvicorn.run(app, host=host, port=port, log_level="warning")
        except SystemExit as exc:  # uvicorn exits when it cannot start (port in use, ...)
            code = exc.code if isinstance(exc.code, int) and exc.code else 1
            raise CliError(f"the server did not start on {shown}:{port} (see above)", code) from exc
    finally:
        store.close()
    return EXIT_OK
