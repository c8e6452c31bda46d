"""The ``feedback-plugin`` argument parser: its commands, options and argument types.

Building it (and ``--help``) imports neither the store nor LangChain nor
:mod:`feedback_plugin.analytics` (``tests/test_import_time.py`` keeps it so).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import NoReturn

from ..errors import FeedbackPluginError
from ..ratings import HURT_MIN_NEGATIVE, NEGATIVE_MAX_SCORE, POSITIVE_MIN_SCORE

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "EXPORT_FORMATS",
    "FEEDBACK_KINDS",
    "PROG",
    "CliError",
    "build_parser",
    "parse_port",
]

PROG = "feedback-plugin"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


# The choices of --feedback and --format: analytics.FEEDBACK_KINDS and
# analytics.EXPORT_FORMATS, spelled here so that building the parser (and
# --help) does not import analytics (tests/test_cli.py checks they agree).
FEEDBACK_KINDS = ("positive", "negative", "rated", "unrated")
EXPORT_FORMATS = ("raw", "chat", "eval")


class CliError(FeedbackPluginError):
    """A failure to report as one line on stderr, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors that name the command and point to ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n(see '{self.prog} --help')\n")


# -- argument types ------------------------------------------------------------------

_AGE = re.compile(r"(\d+)\s*([smhdw])")
_AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _when(text: str) -> datetime:
    """An ISO date or time (UTC unless it says otherwise), or an age like ``7d``."""
    age = _AGE.fullmatch(text.strip())
    if age:
        delta = timedelta(**{_AGE_UNITS[age.group(2)]: int(age.group(1))})
        return datetime.now(timezone.utc) - delta
    try:
        value = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: give an ISO date or time (2024-05-01, "
            "2024-05-01T14:30, 2024-05-01T14:30+02:00; UTC unless it says) or an age "
            "(30m, 12h, 7d, 2w)"
        ) from None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def _score(text: str) -> int:
    if not re.fullmatch(r"[1-5]", text.strip()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a score from 1 to 5")
    return int(text)


def _count(text: str) -> int:
    if not re.fullmatch(r"\d+", text.strip()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0")
    return int(text)


def _positive(text: str) -> int:
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def _meta(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _nonempty(what: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        if not text:
            raise argparse.ArgumentTypeError(f"{what} must not be empty")
        return text

    return check


def parse_port(text: str) -> int:
    if not re.fullmatch(r"\d{1,5}", text.strip()) or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1-65535)")
    return int(text)


# -- the parser ------------------------------------------------------------------------


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # Given on the top level, they set defaults; repeated after the command
    # (SUPPRESS keeps the top level's value when they are not), they win.
    default = None if top else argparse.SUPPRESS
    parser.add_argument(
        "--store",
        metavar="DIR|URL",
        default=default,
        help="store directory, redis:// or postgresql:// URL (default: $FEEDBACK_PLUGIN_DIR, "
        "else the per-user data directory)",
    )
    parser.add_argument(
        "--namespace",
        metavar="NS",
        type=_nonempty("--namespace"),
        default=default,
        help="the store's namespace (stores sharing one directory or Redis database)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="print JSON for scripts instead of tables",
    )


def _filter_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "filters", "which turns count (all of them unless narrowed; combine freely)"
    )
    group.add_argument(
        "--feedback",
        choices=FEEDBACK_KINDS,
        help=f"positive (score >= {POSITIVE_MIN_SCORE}), negative (<= {NEGATIVE_MAX_SCORE}), "
        "rated (has a score) or unrated",
    )
    text = group.add_mutually_exclusive_group()
    text.add_argument(
        "--has-text", dest="has_text", action="store_const", const=True, help="with a comment"
    )
    text.add_argument(
        "--no-text", dest="has_text", action="store_const", const=False, help="without a comment"
    )
    group.add_argument("--min-score", type=_score, metavar="N", help="score at least N (1-5)")
    group.add_argument("--max-score", type=_score, metavar="N", help="score at most N (1-5)")
    group.add_argument(
        "--since",
        type=_when,
        metavar="WHEN",
        help="recorded at or after WHEN: an ISO date/time (UTC unless given) or an age "
        "like 7d, 12h, 30m",
    )
    group.add_argument("--until", type=_when, metavar="WHEN", help="recorded before WHEN")
    users = group.add_mutually_exclusive_group()
    users.add_argument(
        "--user", type=_nonempty("--user"), metavar="U", help="only user U (default: all users)"
    )
    users.add_argument(
        "--no-user",
        action="store_true",
        help="only turns recorded without a user",
    )
    group.add_argument(
        "--session",
        metavar="ID",
        type=_nonempty("--session"),
        help="one session (its id, or a unique prefix of it)",
    )
    group.add_argument(
        "--meta",
        type=_meta,
        action="append",
        metavar="KEY=VALUE",
        help="run metadata KEY equals VALUE (repeat to require several)",
    )
    group.add_argument(
        "--session-feedback",
        choices=FEEDBACK_KINDS,
        help="only turns of sessions whose own rating (the whole conversation rated) is "
        "positive, negative, rated or unrated (no rating, or a comment alone)",
    )
    group.add_argument(
        "--hurting",
        action="store_const",
        const=True,
        help="only memories that hurt: liked or corrected turns that fed at least "
        f"{HURT_MIN_NEGATIVE} answers rated negative, and more negative than positive ones "
        "(out of memory until rated again)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``feedback-plugin`` argument parser (``main`` runs it)."""
    parser = _Parser(
        prog=PROG,
        description="Look into a feedback_plugin session store: list and show sessions, "
        "compare feedback by prompt or model version, export liked answers as datasets, "
        "import backups, run the demo chat.",
        epilog="Exit codes: 0 ok, 1 store or file error, 2 bad arguments. "
        f"'{PROG} COMMAND --help' describes a command.",
    )
    _global_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def command(name: str, help: str, description: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=description)
        _global_options(sub, top=False)
        return sub

    sessions = command(
        "sessions",
        "list sessions (with filters)",
        "List sessions with at least one turn that passes the filters, least recently active "
        "first. Each row covers all the session's turns; MATCH counts those that passed; "
        "RATING is the session's own rating (the whole conversation rated).",
    )
    _filter_options(sessions)
    sessions.add_argument(
        "--limit", type=_count, metavar="N", help="only the N most recently active sessions"
    )

    entries = command(
        "entries",
        "list turns (with filters)",
        "List the turns that pass the filters, in the store's order. With --hurting: the "
        "memories that hurt, worst first, with the answers each one fed counted by their "
        "rating: FED - negative, FED + positive.",
    )
    _filter_options(entries)
    entries.add_argument(
        "--limit", type=_count, default=50, metavar="N", help="show at most N turns (default 50)"
    )

    show = command("show", "show one session's turns", "Show every turn of one session.")
    show.add_argument("session", metavar="SESSION", help="the session id, or a unique prefix of it")
    show.add_argument(
        "--user",
        metavar="U",
        type=_nonempty("--user"),
        help="the session's owner (default: turns recorded without a user)",
    )
    show.add_argument("--last", type=_positive, metavar="N", help="only the last N turns")

    stats = command(
        "stats",
        "feedback figures per group",
        "Feedback figures per value of a metadata key (an A/B comparison): turns, rated "
        "turns, mean score, positive rate with its 95% Wilson interval, sessions, turns "
        "per session and the share of sessions with a negative rating; then, when sessions "
        "are rated as a whole, the session-level positive rate of each group with its 95% "
        "Wilson interval. A session counts in every group it has a turn in.",
    )
    stats.add_argument(
        "--by",
        metavar="KEY",
        type=_nonempty("--by"),
        help="metadata key to group by, e.g. prompt_version or model (default: one group)",
    )
    _filter_options(stats)

    export = command(
        "export",
        "export turns as JSON Lines",
        "Write turns as JSON Lines: raw (the stored entries, for 'import'), chat (liked or "
        'corrected turns as {"messages": [...]} fine-tuning records) or eval (the same turns '
        "as evaluation examples with reference answers; a correction wins over the original "
        "answer).",
    )
    export.add_argument("--format", choices=EXPORT_FORMATS, required=True, help="what to write")
    export.add_argument(
        "-o", "--output", metavar="FILE", help="write to FILE (default: standard output)"
    )
    export.add_argument(
        "--system", metavar="TEXT", help="chat format: start every record with this system message"
    )
    export.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (needs tqdm; default: when stderr is a terminal)",
    )
    _filter_options(export)

    imp = command(
        "import",
        "import a raw export",
        "Import a raw export ('export --format raw') into the store: every field comes back "
        "exactly; turns already there (same user, session and qa_id) are replaced, so "
        "importing twice changes nothing; within one file the later line of a repeated qa_id "
        "wins. A file is checked whole before anything is written.",
    )
    imp.add_argument("file", metavar="FILE", help="the JSON Lines file ('-': standard input)")
    imp.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar on stderr (needs tqdm; default: when stderr is a terminal)",
    )

    serve = command(
        "serve",
        "run the demo chat web app",
        "Run the demo chat web app on the store (needs the web extra: "
        "pip install 'feedback-plugin[web]').",
    )
    serve.add_argument(
        "--host", help="interface to listen on (default: $FEEDBACK_PLUGIN_HOST, else 127.0.0.1)"
    )
    serve.add_argument(
        "--port", type=parse_port, help="port (default: $FEEDBACK_PLUGIN_PORT, else 8000)"
    )
    serve.add_argument(
        "--allowed-hosts",
        metavar="H1,H2",
        help="Host names the app answers to, comma-separated ('*.example.com', '*'; default: "
        "$FEEDBACK_PLUGIN_ALLOWED_HOSTS, else the --host plus localhost / 127.0.0.1 / ::1 for "
        "a loopback host, or this machine's names for 0.0.0.0)",
    )
    serve.add_argument(
        "--max-body-bytes",
        type=_positive,
        metavar="N",
        help="largest request body (default: $FEEDBACK_PLUGIN_MAX_BODY_BYTES, else 1048576)",
    )
    serve.add_argument(
        "--rate-limit",
        metavar="RATE",
        help="requests per API key, e.g. 30/minute (default: $FEEDBACK_PLUGIN_RATE_LIMIT, "
        "else none; needs feedback-plugin[ratelimit])",
    )
    serve.add_argument(
        "--allow-open",
        action="store_true",
        help="serve without API keys on a non-loopback host (or $FEEDBACK_PLUGIN_ALLOW_OPEN=1): "
        "anyone who reaches it reads and rates every turn",
    )
    return parser
