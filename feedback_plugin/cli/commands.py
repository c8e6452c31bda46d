"""The commands that read or fill a store: sessions, entries, show, stats, export, import.

Each is ``cmd_NAME(args, store, out) -> exit code``; ``feedback_plugin.cli.main``
opens the store and runs it. They import :mod:`feedback_plugin.analytics` when they
run, not before.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..ratings import (
    HURT_MIN_NEGATIVE,
    NEGATIVE_MAX_SCORE,
    POSITIVE_MIN_SCORE,
    is_negative,
    is_positive,
)
from .output import Out, cell, clean, fmt_num, fmt_pct, fmt_time, fmt_user, render_table
from .parser import EXIT_OK, EXIT_USAGE, CliError

if TYPE_CHECKING:
    from .. import analytics
    from ..store import SessionStore

__all__ = [
    "READERS",
    "cmd_entries",
    "cmd_export",
    "cmd_import",
    "cmd_sessions",
    "cmd_show",
    "cmd_stats",
    "filter_args",
    "open_store",
    "resolve_session_filter",
]

# -- commands ----------------------------------------------------------------------------


def _location(args: argparse.Namespace) -> str:
    from ..store import default_location

    location: str | None = args.store
    return default_location() if location is None else location


def open_store(args: argparse.Namespace, *, must_exist: bool) -> SessionStore:
    """The store the arguments name; for reading commands it must already exist."""
    from ..backends.registry import open_backend
    from ..store import SessionStore

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


def resolve_session_filter(args: argparse.Namespace, store: SessionStore) -> None:
    """Resolve a ``--session`` prefix among the sessions of the ``--user`` filter."""
    if args.session is None:
        return
    from .. import analytics

    def ids() -> Sequence[str]:
        if args.no_user or args.user is not None:
            return store.list_sessions(user=None if args.no_user else args.user)
        return sorted({s.session_id for s in analytics.sessions(store)})  # every user's

    args.session = _resolve_session(args.session, ids)


def filter_args(args: argparse.Namespace) -> analytics.FilterArgs:
    filters: analytics.FilterArgs = {
        "feedback": args.feedback,
        "has_text": args.has_text,
        "min_score": args.min_score,
        "max_score": args.max_score,
        "since": args.since,
        "until": args.until,
        "session_id": args.session,
        "metadata": dict(args.meta) if args.meta else None,
        "session_feedback": args.session_feedback,
        "hurting": args.hurting,
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


def _narrowed(args: argparse.Namespace, *but: str) -> bool:
    """Whether a filter narrows the query (the filters ``but`` names aside)."""
    names = ("feedback", "has_text", "min_score", "max_score", "since", "until", "meta", "user",
             "no_user", "session", "session_feedback", "hurting")  # fmt: skip
    return any(getattr(args, name) not in (None, False) for name in names if name not in but)


def cmd_sessions(args: argparse.Namespace, store: SessionStore, out: Out) -> int:
    from .. import analytics

    table = analytics.sessions(store, limit=args.limit, **filter_args(args))
    if out.as_json:
        out.json(table.to_dicts())
        return EXIT_OK
    if not table:
        out.note("no sessions match" if _narrowed(args) else "no sessions")
        return EXIT_OK
    narrowed = _narrowed(args)
    commented = any(s.session_text is not None for s in table)
    headers = ["LAST ACTIVE", "USER", "SESSION", "TURNS", "RATED", "+", "-", "MEAN"]
    if narrowed:
        headers.append("MATCH")
    headers += ["RATING", "FIRST QUESTION"]
    if commented:
        headers.append("RATING COMMENT")
    rows = []
    for s in table:
        row = [
            fmt_time(s.last_time), fmt_user(s.user_id), cell(s.session_id, 36), str(s.turns),
            str(s.rated), str(s.positive), str(s.negative), fmt_num(s.mean_score, 1),
        ]  # fmt: skip
        if narrowed:
            row.append(str(s.matching))
        row += [_score_text(s.session_score), cell(s.first_question, 48)]
        if commented:
            row.append(cell(s.session_text, 30))
        rows.append(row)
    right = set(range(3, 9 if narrowed else 8))
    out.print(render_table(headers, rows, right))
    out.print(f"{len(table)} session{'s' if len(table) != 1 else ''}")
    return EXIT_OK


def _score_text(score: int | None) -> str:
    """A score with its word: ``5 +`` (positive), ``1 -`` (negative), ``3``, or ``-``."""
    if score is None:
        return "-"
    if is_positive(score):
        return f"{score} +"
    if is_negative(score):
        return f"{score} -"
    return str(score)


def cmd_entries(args: argparse.Namespace, store: SessionStore, out: Out) -> int:
    from .. import analytics

    if args.hurting:
        return _hurting(args, store, out)
    table = analytics.entries(store, **filter_args(args)).head(args.limit)
    if out.as_json:
        out.json([e.model_dump(mode="json") for e in table])
        return EXIT_OK
    if not table:
        out.note("no turns match" if _narrowed(args) else "no turns")
        return EXIT_OK
    headers = ["TIME", "USER", "SESSION", "SCORE", "QUESTION", "ANSWER", "COMMENT"]
    rows = [
        [
            fmt_time(e.time), fmt_user(e.user_id), cell(e.session_id, 24),
            _score_text(e.feedback_score), cell(e.question, 40), cell(e.answer, 40),
            cell(e.feedback_text, 30),
        ]
        for e in table
    ]  # fmt: skip
    out.print(render_table(headers, rows, set()))
    more = f" (the first {len(table)}; --limit N for more)" if table.more else ""
    out.print(f"{len(table)} turn{'s' if len(table) != 1 else ''}{more}")
    return EXIT_OK


def _hurting(args: argparse.Namespace, store: SessionStore, out: Out) -> int:
    """``entries --hurting``: the memories that hurt, worst first."""
    from .. import analytics

    found = analytics.memories_that_hurt(store, **filter_args(args))
    shown = found[: args.limit]
    if out.as_json:
        out.json([e.model_dump(mode="json") for e in shown])
        return EXIT_OK
    if not shown:
        out.note(
            "no memories that hurt match" if _narrowed(args, "hurting") else "no memories hurt"
        )
        return EXIT_OK
    headers = ["USER", "SESSION", "QA_ID", "SCORE", "FED -", "FED +", "QUESTION"]
    rows = []
    for e in shown:
        negative, positive = analytics.fed_counts(e)
        rows.append(
            [
                fmt_user(e.user_id), cell(e.session_id, 24), cell(e.qa_id, 36),
                _score_text(e.feedback_score), str(negative), str(positive),
                cell(e.question, 48),
            ]
        )  # fmt: skip
    out.print(render_table(headers, rows, {4, 5}))
    more = f" (the first {len(shown)}; --limit N for more)" if len(found) > len(shown) else ""
    noun = "memory that hurts" if len(shown) == 1 else "memories that hurt"
    out.print(f"{len(shown)} {noun}{more}")
    out.print(
        f"FED -/+: answers it fed, rated negative / positive (hurts: at least {HURT_MIN_NEGATIVE} "
        "negative, more than positive)"
    )
    return EXIT_OK


def cmd_show(args: argparse.Namespace, store: SessionStore, out: Out) -> int:
    from .. import analytics
    from ..models import check_user

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
    owner = "" if user is None else f" (user {cell(user)})"
    out.print(
        f"session {cell(args.session)}{owner}: {len(turns)} turn{'s' if len(turns) != 1 else ''}"
    )
    rating = store.get_session_feedback(args.session, user=user)
    if rating is not None:
        line = f"session rating: {_score_text(rating.feedback_score)}"
        if rating.feedback_text is not None:
            line += f"  comment: {clean(rating.feedback_text, lines=True)}"
        out.print(line)
    for number, e in enumerate(turns, 1):
        out.print()
        head = f"[{number}] {e.time.strftime('%Y-%m-%d %H:%M:%S')}  qa_id {cell(e.qa_id)}"
        if e.feedback_score is not None:
            head += f"  score {_score_text(e.feedback_score)}"
        out.print(head)
        out.print(f"  Q: {clean(e.question, lines=True)}")
        out.print(f"  A: {clean(e.answer, lines=True)}")
        if e.correction is not None:
            out.print(f"  correction: {clean(e.correction, lines=True)}")
        if e.feedback_text is not None:
            out.print(f"  comment: {clean(e.feedback_text, lines=True)}")
        if e.context:
            out.print(f"  context: {len(e.context)} document{'s' if len(e.context) != 1 else ''}")
        if e.metadata:
            meta = json.dumps(e.metadata, ensure_ascii=False, default=str)
            out.print(f"  metadata: {cell(meta, 200)}")
        if e.memory_ids:
            n = len(e.memory_ids)
            ids = cell(", ".join(e.memory_ids), 200)
            out.print(f"  memory: {n} remembered turn{'s' if n != 1 else ''}: {ids}")
        if e.fed_outcomes:
            negative, positive = analytics.fed_counts(e)
            hurts = "; hurts: out of memory until rated again" if e.hurts else ""
            answers = "answer" if negative == 1 else "answers"
            out.print(f"  fed: {negative} {answers} rated negative, {positive} positive{hurts}")
    return EXIT_OK


def cmd_stats(args: argparse.Namespace, store: SessionStore, out: Out) -> int:
    from .. import analytics

    metrics = analytics.stats(store, by=args.by, **filter_args(args))
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
            cell(g.label if args.by else "all", 30), str(g.turns), str(g.rated),
            fmt_num(g.mean_score), fmt_pct(g.positive_rate),
            f"{g.ci_low:.1%} - {g.ci_high:.1%}" if g.rated else "-",
            str(g.sessions), fmt_num(g.turns_per_session, 1), fmt_pct(g.negative_session_share),
        ]
        for g in metrics
    ]  # fmt: skip
    out.print(render_table(headers, rows, {1, 2, 3, 4, 5, 6, 7, 8}))
    out.print(
        f"positive: score >= {POSITIVE_MIN_SCORE} among rated turns; "
        f"NEG. SESSIONS: share of sessions with a score <= {NEGATIVE_MAX_SCORE}"
    )
    if any(g.rated_sessions for g in metrics):
        out.print()
        out.print("session ratings (whole conversations rated):")
        headers = [
            (args.by or "GROUP").upper(), "SESSIONS", "RATED SESSIONS", "POSITIVE", "95% CI",
        ]  # fmt: skip
        rows = [
            [
                cell(g.label if args.by else "all", 30), str(g.sessions), str(g.rated_sessions),
                fmt_pct(g.session_positive_rate),
                f"{g.session_ci_low:.1%} - {g.session_ci_high:.1%}" if g.rated_sessions else "-",
            ]
            for g in metrics
        ]  # fmt: skip
        out.print(render_table(headers, rows, {1, 2, 3, 4}))
        out.print(
            f"positive: score >= {POSITIVE_MIN_SCORE} among rated sessions; "
            "a session counts in every group it has a turn in"
        )
    return EXIT_OK


def cmd_export(args: argparse.Namespace, store: SessionStore, out: Out) -> int:
    import tempfile

    from .. import analytics

    filters = filter_args(args)
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


def cmd_import(args: argparse.Namespace, store: SessionStore, out: Out) -> int:
    from .. import analytics

    # Standard input as bytes, so a line that is not UTF-8 is named like in a file.
    source = getattr(sys.stdin, "buffer", sys.stdin) if args.file == "-" else args.file
    try:
        imported = analytics.import_jsonl(store, source, progress=args.progress)
    except analytics.ImportFormatError as exc:  # a bad line: a file error, not bad arguments
        raise CliError(str(exc)) from exc
    if out.as_json:
        out.json(
            {"imported": imported, "store": store.shown_location, "namespace": store.namespace}
        )
    else:
        out.print(
            f"imported {imported} turn{'s' if imported != 1 else ''} into {store.shown_location}"
        )
    return EXIT_OK


READERS: dict[str, Callable[[argparse.Namespace, SessionStore, Out], int]] = {
    "sessions": cmd_sessions,
    "entries": cmd_entries,
    "show": cmd_show,
    "stats": cmd_stats,
    "export": cmd_export,
}
