"""The ``feedback-plugin`` command: look into a store, measure it, export it, serve it.

A thin layer: it parses arguments, calls :mod:`feedback_plugin.analytics` and
the :class:`~feedback_plugin.SessionStore`, and prints. ``--json`` prints
what scripts want instead of tables. See ``docs/cli.md`` for every
command's help.

Exit codes: 0 success; 1 the store or a file failed (no store there, Redis
down, a bad line in an import file, ...); 2 bad arguments. Errors are one
line on stderr, never a traceback (``FEEDBACK_PLUGIN_DEBUG=1`` shows it).

A session id may be given by a unique prefix (the 8 characters the demo page
shows): see :func:`_resolve_session`.

Start-up cost: ``--help`` and argument errors import neither the store nor
LangChain; each command imports :mod:`feedback_plugin.analytics` and the
store when it runs (``tests/test_import_time.py`` keeps it so).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

from .errors import ConfigurationError, FeedbackPluginError, StoreError
from .ratings import NEGATIVE_MAX_SCORE, POSITIVE_MIN_SCORE, is_negative, is_positive

if TYPE_CHECKING:
    from . import analytics
    from .models import SessionQAEntry
    from .store import SessionStore

__all__ = ["build_parser", "main"]

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


def _port(text: str) -> int:
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
        help="store directory or redis:// URL (default: $FEEDBACK_PLUGIN_DIR, else "
        "the per-user data directory)",
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
        "first. Each row covers all the session's turns; MATCH counts those that passed.",
    )
    _filter_options(sessions)
    sessions.add_argument(
        "--limit", type=_count, metavar="N", help="only the N most recently active sessions"
    )

    entries = command(
        "entries",
        "list turns (with filters)",
        "List the turns that pass the filters, in the store's order.",
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
        "per session and the share of sessions with a negative rating.",
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
        "--port", type=_port, help="port (default: $FEEDBACK_PLUGIN_PORT, else 8000)"
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


# -- output ------------------------------------------------------------------------------


def _clean(text: str, *, lines: bool = False) -> str:
    """Text safe for a terminal: no control characters (escape sequences); lone
    surrogates, which UTF-8 cannot carry, are shown escaped (``\\ud800``)."""
    out = []
    for ch in text:
        if ch == "\n" and lines:
            out.append(ch)
        elif ch in "\t\n\r":
            out.append(" ")
        elif "\ud800" <= ch <= "\udfff":
            out.append(f"\\u{ord(ch):04x}")
        elif not ch.isprintable():
            out.append("\ufffd")
        else:
            out.append(ch)
    return "".join(out)


def _cell(value: Any, width: int | None = None) -> str:
    text = _clean("" if value is None else str(value))
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


class _Out:
    """Writes to the current stdout / stderr, never failing on an encoding."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    @staticmethod
    def _write(stream: IO[str], text: str) -> None:
        try:
            stream.write(text)
        except UnicodeEncodeError:
            encoding = getattr(stream, "encoding", None) or "utf-8"
            stream.write(text.encode(encoding, "backslashreplace").decode(encoding))

    def print(self, text: str = "") -> None:
        self._write(sys.stdout, text + "\n")

    def note(self, text: str) -> None:
        self._write(sys.stderr, text + "\n")

    def json(self, value: Any) -> None:
        text = json.dumps(value, ensure_ascii=False, indent=2, default=str)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: escape them
            text = json.dumps(value, ensure_ascii=True, indent=2, default=str)
        self.print(text)


def _time(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _user(value: str | None) -> str:
    return "-" if value is None else _cell(value, 20)


# -- commands ----------------------------------------------------------------------------


def _location(args: argparse.Namespace) -> str:
    from .store import default_location

    location: str | None = args.store
    return default_location() if location is None else location


def _open(args: argparse.Namespace, *, must_exist: bool) -> SessionStore:
    """The store the arguments name; for reading commands it must already exist."""
    from .backends.registry import open_backend
    from .store import SessionStore

    location = _location(args)
    # a backend's constructor does no I/O: asking it costs one stat for a directory
    if must_exist and not open_backend(location, namespace=args.namespace).exists():
        hint = "" if args.store else " (give --store DIR, or set FEEDBACK_PLUGIN_DIR)"
        raise CliError(f"no store at {location}{hint}")
    return SessionStore(location, namespace=args.namespace)


def _resolve_session(text: str, ids: Callable[[], Sequence[str]]) -> str:
    """The session id ``text`` names among ``ids()``: itself, or the one id it begins.

    An id equal to ``text`` always wins (``s1`` beside ``s10``). A prefix of
    several ids is an error; a prefix of none is kept as given, for the
    command to report that it found no turns.
    """
    known = ids()
    if text in known:
        return text
    matches = [s for s in known if s.startswith(text)]
    if len(matches) > 1:
        raise CliError(
            f"session {text!r} is ambiguous: it begins {len(matches)} session ids "
            "(give more characters)"
        )
    return matches[0] if matches else text


def _session_of_filters(args: argparse.Namespace, store: SessionStore) -> None:
    """Resolve a ``--session`` prefix among the sessions of the ``--user`` filter."""
    if args.session is None:
        return
    from . import analytics

    def ids() -> Sequence[str]:
        if args.no_user or args.user is not None:
            return store.list_sessions(user=None if args.no_user else args.user)
        return sorted({s.session_id for s in analytics.sessions(store)})  # every user's

    args.session = _resolve_session(args.session, ids)


def _filters(args: argparse.Namespace) -> analytics.FilterArgs:
    filters: analytics.FilterArgs = {
        "feedback": args.feedback,
        "has_text": args.has_text,
        "min_score": args.min_score,
        "max_score": args.max_score,
        "since": args.since,
        "until": args.until,
        "session_id": args.session,
        "metadata": dict(args.meta) if args.meta else None,
    }
    if args.no_user:
        filters["user"] = None
    elif args.user is not None:
        filters["user"] = args.user
    if (
        args.min_score is not None
        and args.max_score is not None
        and args.min_score > args.max_score
    ):
        raise CliError(
            f"--min-score {args.min_score} is above --max-score {args.max_score}", EXIT_USAGE
        )
    return filters


def _narrowed(args: argparse.Namespace) -> bool:
    names = ("feedback", "has_text", "min_score", "max_score", "since", "until", "meta", "user",
             "no_user", "session")  # fmt: skip
    return any(getattr(args, name) not in (None, False) for name in names)


def cmd_sessions(args: argparse.Namespace, store: SessionStore, out: _Out) -> int:
    from . import analytics

    table = analytics.sessions(store, limit=args.limit, **_filters(args))
    if out.as_json:
        out.json(table.to_dicts())
        return EXIT_OK
    if not table:
        out.note("no sessions match" if _narrowed(args) else "no sessions")
        return EXIT_OK
    narrowed = _narrowed(args)
    headers = ["LAST ACTIVE", "USER", "SESSION", "TURNS", "RATED", "+", "-", "MEAN"]
    if narrowed:
        headers.append("MATCH")
    headers.append("FIRST QUESTION")
    rows = []
    for s in table:
        row = [
            _time(s.last_time), _user(s.user_id), _cell(s.session_id, 36), str(s.turns),
            str(s.rated), str(s.positive), str(s.negative), _num(s.mean_score, 1),
        ]  # fmt: skip
        if narrowed:
            row.append(str(s.matching))
        row.append(_cell(s.first_question, 48))
        rows.append(row)
    right = {3, 4, 5, 6, 7, 8} if narrowed else {3, 4, 5, 6, 7}
    out.print(_table(headers, rows, right))
    out.print(f"{len(table)} session{'s' if len(table) != 1 else ''}")
    return EXIT_OK


def _score_text(entry: SessionQAEntry) -> str:
    score = entry.feedback_score
    if score is None:
        return "-"
    if is_positive(score):
        return f"{score} +"
    if is_negative(score):
        return f"{score} -"
    return str(score)


def cmd_entries(args: argparse.Namespace, store: SessionStore, out: _Out) -> int:
    from . import analytics

    table = analytics.entries(store, **_filters(args)).head(args.limit)
    if out.as_json:
        out.json([e.model_dump(mode="json") for e in table])
        return EXIT_OK
    if not table:
        out.note("no turns match" if _narrowed(args) else "no turns")
        return EXIT_OK
    headers = ["TIME", "USER", "SESSION", "SCORE", "QUESTION", "ANSWER", "COMMENT"]
    rows = [
        [
            _time(e.time), _user(e.user_id), _cell(e.session_id, 24), _score_text(e),
            _cell(e.question, 40), _cell(e.answer, 40),
            _cell(e.feedback_text, 30),
        ]
        for e in table
    ]  # fmt: skip
    out.print(_table(headers, rows, set()))
    more = f" (the first {len(table)}; --limit N for more)" if table.more else ""
    out.print(f"{len(table)} turn{'s' if len(table) != 1 else ''}{more}")
    return EXIT_OK


def cmd_show(args: argparse.Namespace, store: SessionStore, out: _Out) -> int:
    from . import analytics
    from .models import check_user

    user = check_user(args.user)
    args.session = _resolve_session(args.session, lambda: store.list_sessions(user=user))
    turns = store.get_session(args.session, user=user, last_n=args.last)
    if not turns:
        others = sorted(
            {s.user_id or "" for s in analytics.sessions(store, session_id=args.session)}
        )
        hint = ""
        if others:
            names = ", ".join(u or "(no user)" for u in others[:5])
            hint = f"; it has turns for: {names} (use --user)"
        owner = f"user {user!r}" if user is not None else "no user"
        raise CliError(f"no turns in session {args.session!r} for {owner}{hint}")
    if out.as_json:
        out.json([e.model_dump(mode="json") for e in turns])
        return EXIT_OK
    owner = "" if user is None else f" (user {_cell(user)})"
    out.print(
        f"session {_cell(args.session)}{owner}: {len(turns)} turn{'s' if len(turns) != 1 else ''}"
    )
    for number, e in enumerate(turns, 1):
        out.print()
        head = f"[{number}] {e.time.strftime('%Y-%m-%d %H:%M:%S')}  qa_id {_cell(e.qa_id)}"
        if e.feedback_score is not None:
            head += f"  score {_score_text(e)}"
        out.print(head)
        out.print(f"  Q: {_clean(e.question, lines=True)}")
        out.print(f"  A: {_clean(e.answer, lines=True)}")
        if e.correction is not None:
            out.print(f"  correction: {_clean(e.correction, lines=True)}")
        if e.feedback_text is not None:
            out.print(f"  comment: {_clean(e.feedback_text, lines=True)}")
        if e.context:
            out.print(f"  context: {len(e.context)} document{'s' if len(e.context) != 1 else ''}")
        if e.metadata:
            meta = json.dumps(e.metadata, ensure_ascii=False, default=str)
            out.print(f"  metadata: {_cell(meta, 200)}")
    return EXIT_OK


def cmd_stats(args: argparse.Namespace, store: SessionStore, out: _Out) -> int:
    from . import analytics

    metrics = analytics.stats(store, by=args.by, **_filters(args))
    if out.as_json:
        out.json({"by": args.by, "groups": metrics.to_dicts()})
        return EXIT_OK
    if not metrics:
        out.note("no turns match" if _narrowed(args) else "no turns")
        return EXIT_OK
    headers = [
        (args.by or "GROUP").upper(), "TURNS", "RATED", "MEAN", "POSITIVE", "95% CI",
        "SESSIONS", "TURNS/SESSION", "NEG. SESSIONS",
    ]  # fmt: skip
    rows = [
        [
            _cell(g.label if args.by else "all", 30), str(g.turns), str(g.rated),
            _num(g.mean_score), _pct(g.positive_rate),
            f"{g.ci_low:.1%} - {g.ci_high:.1%}" if g.rated else "-",
            str(g.sessions), _num(g.turns_per_session, 1), _pct(g.negative_session_share),
        ]
        for g in metrics
    ]  # fmt: skip
    out.print(_table(headers, rows, {1, 2, 3, 4, 5, 6, 7, 8}))
    out.print(
        f"positive: score >= {POSITIVE_MIN_SCORE} among rated turns; "
        f"NEG. SESSIONS: share of sessions with a score <= {NEGATIVE_MAX_SCORE}"
    )
    return EXIT_OK


def cmd_export(args: argparse.Namespace, store: SessionStore, out: _Out) -> int:
    import tempfile

    from . import analytics

    filters = _filters(args)
    if args.system is not None and args.format != "chat":
        raise CliError("--system goes with --format chat", EXIT_USAGE)
    if args.output is None or args.output == "-":
        written = analytics.export_jsonl(
            store, sys.stdout, args.format, system=args.system, progress=args.progress, **filters
        )
        sys.stdout.flush()
        out.note(f"exported {written} {args.format} record{'s' if written != 1 else ''}")
        return EXIT_OK
    target = Path(args.output)
    # Write beside the target and rename: a failed export leaves no half file.
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fp:
            written = analytics.export_jsonl(
                store, fp, args.format, system=args.system, progress=args.progress, **filters
            )
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    if out.as_json:
        out.json({"format": args.format, "file": str(target), "written": written})
    else:
        out.print(f"wrote {written} {args.format} record{'s' if written != 1 else ''} to {target}")
    return EXIT_OK


def cmd_import(args: argparse.Namespace, store: SessionStore, out: _Out) -> int:
    from . import analytics

    # Standard input as bytes, so a line that is not UTF-8 is named like in a file.
    source = getattr(sys.stdin, "buffer", sys.stdin) if args.file == "-" else args.file
    try:
        imported = analytics.import_jsonl(store, source, progress=args.progress)
    except analytics.ImportFormatError as exc:  # a bad line: a file error, not bad arguments
        raise CliError(str(exc)) from exc
    if out.as_json:
        out.json({"imported": imported, "store": store.location, "namespace": store.namespace})
    else:
        out.print(f"imported {imported} turn{'s' if imported != 1 else ''} into {store.location}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace, out: _Out) -> int:
    if args.namespace is not None:
        raise CliError("serve does not take --namespace: the demo app uses the default one", 2)
    try:
        webapp = importlib.import_module("feedback_plugin.integrations.webapp")
    except ImportError as exc:
        raise CliError(
            f"the demo server needs the web extra ({exc}): pip install 'feedback-plugin[web]'"
        ) from exc
    argv: list[str] = []
    if args.host is not None:
        argv += ["--host", args.host]
    if args.port is not None:
        argv += ["--port", str(args.port)]
    if args.store is not None:
        argv += ["--store", args.store]
    if args.allowed_hosts is not None:
        argv += ["--allowed-hosts", args.allowed_hosts]
    if args.max_body_bytes is not None:
        argv += ["--max-body-bytes", str(args.max_body_bytes)]
    if args.rate_limit is not None:
        argv += ["--rate-limit", args.rate_limit]
    if args.allow_open:
        argv.append("--allow-open")
    try:
        return int(webapp.main(argv) or 0)
    except ImportError as exc:  # uvicorn is imported when the server starts
        raise CliError(
            f"the demo server needs the web extra ({exc}): pip install 'feedback-plugin[web]'"
        ) from exc


_READERS: dict[str, Callable[[argparse.Namespace, SessionStore, _Out], int]] = {
    "sessions": cmd_sessions,
    "entries": cmd_entries,
    "show": cmd_show,
    "stats": cmd_stats,
    "export": cmd_export,
}


def _run(args: argparse.Namespace, out: _Out) -> int:
    if args.command == "serve":
        return cmd_serve(args, out)
    if hasattr(args, "feedback"):
        _filters(args)  # bad filters are bad arguments, whatever the store
    handler: Callable[[argparse.Namespace, SessionStore, _Out], int]
    if args.command == "import":
        store = _open(args, must_exist=False)
        handler = cmd_import
    else:
        store = _open(args, must_exist=True)
        handler = _READERS[args.command]
    try:
        if hasattr(args, "feedback"):
            _session_of_filters(args, store)
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
    out = _Out(bool(args.json))
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
    _Out._write(sys.stderr, f"{PROG}: error: {_clean(message)}\n")
    return code


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
