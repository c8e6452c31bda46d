"""The ``feedback-plugin`` command: look into a store, measure it, export it, serve it.

A thin layer: it parses arguments, calls :mod:`feedback_plugin.analytics` and
the :class:`~feedback_plugin.SessionStore`, and prints. ``--json`` prints
what scripts want instead of tables. See ``docs/cli.md`` for every
command's help.

Exit codes: 0 success; 1 the store or a file failed (no store there, Redis
down, a bad line in an import file, ...); 2 bad arguments. Errors are one
line on stderr, never a traceback (``FEEDBACK_PLUGIN_DEBUG=1`` shows it).

A session id may be given by a unique prefix (the 8 characters the demo page
shows): see :func:`.commands._resolve_session`.

The package: :mod:`.parser` (the commands and options), :mod:`.commands`
(the commands that read or fill a store), :mod:`.serve` (``serve``: the demo
chat under uvicorn), :mod:`.output` (tables and JSON); :func:`main` runs them.

Start-up cost: ``--help`` and argument errors import neither the store nor
LangChain; each command imports :mod:`feedback_plugin.analytics` and the
store when it runs (``tests/test_import_time.py`` keeps it so).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..errors import ConfigurationError, FeedbackPluginError, StoreError
from .commands import READERS, cmd_import, filter_args, open_store, resolve_session_filter
from .output import Out, clean
from .parser import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    EXPORT_FORMATS,
    FEEDBACK_KINDS,
    PROG,
    CliError,
    build_parser,
)
from .serve import cmd_serve

if TYPE_CHECKING:
    from ..store import SessionStore

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "EXPORT_FORMATS",
    "FEEDBACK_KINDS",
    "PROG",
    "CliError",
    "build_parser",
    "main",
]


def _run(args: argparse.Namespace, out: Out) -> int:
    if args.command == "serve":
        return cmd_serve(args, out)
    if hasattr(args, "feedback"):
        filter_args(args)  # bad filters are bad arguments, whatever the store
    handler: Callable[[argparse.Namespace, SessionStore, Out], int]
    if args.command == "import":
        store = open_store(args, must_exist=False)
        handler = cmd_import
    else:
        store = open_store(args, must_exist=True)
        handler = READERS[args.command]
    try:
        if hasattr(args, "feedback"):
            resolve_session_filter(args, store)
        return handler(args, store, out)
    finally:
        store.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (the ``feedback-plugin`` entry point)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    out = Out(bool(args.json))
    try:
        return _run(args, out)
    except CliError as exc:
        return _fail(str(exc), exc.code)
    except ConfigurationError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except StoreError as exc:
        return _fail(str(exc), EXIT_FAILED)
    except (FeedbackPluginError, ValueError) as exc:  # a bad id, score, filter
        return _fail(str(exc), EXIT_USAGE)
    except BrokenPipeError:  # the reader went away (| head): stop quietly
        _silence_stdout()
        return 141
    except OSError as exc:
        name = f": {exc.filename}" if exc.filename else ""
        return _fail(f"{exc.strerror or exc}{name}", EXIT_FAILED)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: still one line, as promised (the debug switch shows it)
        return _fail(
            f"unexpected {type(exc).__name__}: {exc} (FEEDBACK_PLUGIN_DEBUG=1 shows the traceback)",
            EXIT_FAILED,
        )


def _fail(message: str, code: int) -> int:
    if os.environ.get("FEEDBACK_PLUGIN_DEBUG"):
        traceback.print_exc()
    Out._write(sys.stderr, f"{PROG}: error: {clean(message)}\n")
    return code


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
