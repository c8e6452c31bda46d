"""PostgreSQL under the rest of the library: analytics, export / import, the CLI, the REST app.

The backend contract (``tests/contract/``) checks the store's own calls on
PostgreSQL; these tests check what users build on them gives the same
answers there as on diskcache: the hand-counted turns of
``tests/test_analytics.py`` analysed on both, a raw export moved between the
two backends in both directions with every field intact, the
``feedback-plugin`` command with ``--store postgresql://…``, and the REST
app and the demo chat serving a PostgreSQL store (recorded, rated, found in
memory, also by a second worker's store).

Each test uses namespaces of its own (``test-<uuid>-…``) on the test server
(``tests/_postgres.py``), deleted at teardown; without a server the tests
are skipped (failed under CI).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from _postgres import POSTGRES_URL, require_postgres
from test_analytics import TURNS, seed
from test_cli import Run

from feedback_plugin import PositiveMemoryRetriever, SessionQAEntry, SessionStore, analytics


class Stores:
    """Opens PostgreSQL stores in namespaces of this test, and diskcache stores in
    ``tmp_path``; closes them all, and deletes the PostgreSQL namespaces, at teardown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.prefix = f"test-{uuid.uuid4().hex}"
        self._opened: list[SessionStore] = []

    def namespace(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def postgres(self, name: str = "main", url: str = POSTGRES_URL) -> SessionStore:
        return self._keep(SessionStore(url, namespace=self.namespace(name)))

    def disk(self, name: str = "main") -> SessionStore:
        return self._keep(SessionStore(str(self.root / name)))

    def cli_args(self, name: str = "main") -> list[str]:
        """``--store`` and ``--namespace`` of the PostgreSQL store ``name``."""
        self.postgres(name)  # so that teardown deletes what the command writes
        return ["--store", POSTGRES_URL, "--namespace", self.namespace(name)]

    def _keep(self, store: SessionStore) -> SessionStore:
        self._opened.append(store)
        return store

    def close(self) -> None:
        for store in self._opened:
            store.close()
            if store.location.startswith("postgresql://"):
                store.backend.drop()  # type: ignore[attr-defined]
                store.backend.close()


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Stores]:
    require_postgres("PostgreSQL integration")
    factory = Stores(tmp_path)
    yield factory
    factory.close()


def sessions_of(store: SessionStore) -> dict[tuple[str | None, str], list[dict[str, Any]]]:
    """Every session of the users of ``TURNS`` and the odd ones, each turn whole, in order."""
    users = {e.user_id for e in TURNS} | {e.user_id for e in odd_entries()}
    return {
        (user, session_id): [e.model_dump() for e in store.get_session(session_id, user=user)]
        for user in users
        for session_id in store.list_sessions(user=user)
    }


def by_turn(
    entries: Iterable[SessionQAEntry], but: str = ""
) -> dict[tuple[str | None, str, str], Any]:
    """Each turn's fields (all ``but`` one), by (user, session, qa_id): equal whatever order
    the turns came in."""
    return {(e.user_id, e.session_id, e.qa_id): e.model_dump(exclude={but}) for e in entries}


def parsed_lines(path: Path) -> list[Any]:
    """A JSON Lines file's objects, in order (equal whatever the key order of each line)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def odd_entries() -> list[SessionQAEntry]:
    """Entries with what PostgreSQL cannot hold as given: U+0000 and lone surrogates in
    ids and texts, numbers in exponent form, and time zones, nested metadata, long text."""
    base = datetime(2024, 6, 1, 8, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    return [
        SessionQAEntry(
            qa_id="odd\x00id\ud800",
            session_id="sess ☃ \x01x",
            question="a NUL \x00 and a lone surrogate \udfff in the question?",
            answer="answer with a trailing NUL\x00",
            context=["doc \x00 one", "日本語 🎉"],
            time=base,
            feedback_score=4,
            feedback_text="half a pair \ud83d",
            feedback_time=base + timedelta(minutes=1),
            user_id="ü\x00ser",
            metadata={
                "big": 1e300,
                "small": 1.5e-7,
                "int": 10**20,
                "nested": {"list": [1, 2.5, None, True, "x\x00"], "empty": {}},
            },
            correction="a correction \x00 too",
        ),
        SessionQAEntry(
            qa_id="plain",
            session_id="sess ☃ \x01x",
            question="How do I export notes as PDF?",
            answer="File > Export > PDF. " * 300,  # about 6 KB
            context=[],
            time=base + timedelta(seconds=5),
            user_id="ü\x00ser",
            metadata={"prompt_version": "v9", "temperature": 0.7},
        ),
        SessionQAEntry(
            qa_id="\x01looks-escaped",
            session_id="s1",
            question="an id that starts with U+0001",
            answer="kept as it is",
            time=base + timedelta(seconds=9),
            feedback_score=2,
            feedback_time=base + timedelta(seconds=10),
        ),
    ]


# -- analytics -------------------------------------------------------------------------------

GROUPINGS: list[dict[str, Any]] = [
    {},
    {"by": "prompt_version"},
    {"by": "model"},
    {"by": "temperature", "session_id": "s1", "user": None},
    {"user": "alice"},
    {"by": "model", "since": datetime(2024, 5, 2, tzinfo=timezone.utc)},
    {"feedback": "positive"},
    {"by": "prompt_version", "feedback": "rated", "has_text": True},
    {"metadata": {"prompt_version": "v2"}},
    {"user": "nobody"},
]


def test_analytics_give_the_same_answers_as_on_diskcache(stores: Stores) -> None:
    disk, pg = seed(stores.disk()), seed(stores.postgres())
    # a rating changed after the import, on each backend
    for store in (disk, pg):
        assert store.add_feedback("s2", "b2", "late", 4)
        assert store.delete_feedback("s1", "a3")
    for options in GROUPINGS:
        expected = list(analytics.stats(disk, **options))
        assert list(analytics.stats(pg, **options)) == expected, options
    (overall,) = analytics.stats(pg)
    assert (overall.turns, overall.rated, overall.positive, overall.negative) == (13, 9, 6, 1)

    for options in ({}, {"feedback": "negative"}, {"user": "alice"}, {"limit": 2}):
        assert list(analytics.sessions(pg, **options)) == list(analytics.sessions(disk, **options))
    for options in ({}, {"feedback": "positive"}, {"has_text": True}, {"min_score": 4}):
        found = by_turn(analytics.entries(pg, **options), but="feedback_time")
        assert found == by_turn(analytics.entries(disk, **options), but="feedback_time"), options
    # the raw export: the same entries in the same order (the late ratings' times aside)
    raw = [json.loads(payload) | {"feedback_time": 0} for payload in analytics.raw_records(pg)]
    assert raw == [
        json.loads(payload) | {"feedback_time": 0} for payload in analytics.raw_records(disk)
    ]
    chat = sorted(json.dumps(r, sort_keys=True) for r in analytics.chat_records(pg))
    assert chat == sorted(json.dumps(r, sort_keys=True) for r in analytics.chat_records(disk))
    evals = sorted(json.dumps(r, sort_keys=True) for r in analytics.eval_records(pg))
    assert evals == sorted(json.dumps(r, sort_keys=True) for r in analytics.eval_records(disk))


# -- export / import between the backends ---------------------------------------------------


@pytest.mark.parametrize("direction", ["diskcache to PostgreSQL", "PostgreSQL to diskcache"])
def test_raw_export_moves_every_field_between_the_backends(
    stores: Stores, tmp_path: Path, direction: str
) -> None:
    to_postgres = direction == "diskcache to PostgreSQL"
    source = stores.disk("source") if to_postgres else stores.postgres("source")
    target = stores.postgres("target") if to_postgres else stores.disk("target")
    entries = [*TURNS, *odd_entries()]
    assert source.import_entries(entries) == len(entries)
    # feedback given on the source after the import, and a turn recorded live
    assert source.add_feedback("sess ☃ \x01x", "plain", "liked it", 5, user="ü\x00ser")
    live = source.record("s9", "Is there a dark mode?", "Settings > Theme.", user="bob")
    assert source.thumbs("s9", live.qa_id, up=True, user="bob")

    exported = tmp_path / "raw.jsonl"
    assert analytics.export_jsonl(source, exported, "raw") == len(entries) + 1
    assert analytics.import_jsonl(target, exported) == len(entries) + 1

    assert sessions_of(target) == sessions_of(source)
    assert by_turn(target.iter_entries()) == by_turn(source.iter_entries())
    odd = target.get_entry("sess ☃ \x01x", "odd\x00id\ud800", user="ü\x00ser")
    assert odd is not None and odd.model_dump() == odd_entries()[0].model_dump()
    assert odd.metadata["big"] == 1e300 and odd.metadata["int"] == 10**20
    assert odd.time == datetime(2024, 6, 1, 6, 30, 15, 123456, tzinfo=timezone.utc)
    # the target's export holds the same entries, in the same order
    again = tmp_path / "again.jsonl"
    analytics.export_jsonl(target, again, "raw")
    assert parsed_lines(again) == parsed_lines(exported)
    # and the imported ratings are memory on the target
    found = analytics.entries(target, feedback="positive", user="bob")
    assert [e.qa_id for e in found] == [live.qa_id]
    hits = PositiveMemoryRetriever(store=target, user="bob").invoke("dark mode")
    assert [doc.metadata["qa_id"] for doc in hits] == [live.qa_id]


# -- the command line -----------------------------------------------------------------------


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Run:
    return Run(capsys)


def test_cli_reads_and_writes_a_postgresql_store(run: Run, stores: Stores, tmp_path: Path) -> None:
    seed(stores.disk())
    seed(stores.postgres())
    disk = ["--store", str(tmp_path / "main")]
    pg = stores.cli_args()
    for command in (
        ["stats", "--by", "prompt_version"],
        ["stats", "--user", "alice"],
        ["sessions"],
        ["sessions", "--feedback", "negative", "--since", "2024-05-01"],
        ["show", "s1"],
        ["show", "s3", "--user", "alice"],
    ):
        assert run.json(*pg, *command) == run.json(*disk, *command), command
    # entries come in each backend's own order
    entries = run.json(*pg, "entries", "--feedback", "rated")
    assert sorted(entries, key=lambda e: e["qa_id"]) == sorted(
        run.json(*disk, "entries", "--feedback", "rated"), key=lambda e: e["qa_id"]
    )
    assert len(entries) == 9
    code, out, _ = run(*pg, "stats", "--by", "prompt_version")
    assert code == 0 and out == run(*disk, "stats", "--by", "prompt_version")[1]
    assert out.splitlines()[2].split()[:4] == ["v1", "6", "4", "3.50"]

    # export from PostgreSQL, import into another namespace by the command, export again
    raw = tmp_path / "raw.jsonl"
    code, out, _ = run(*pg, "export", "--format", "raw", "-o", str(raw))
    assert (code, out) == (0, f"wrote 13 raw records to {raw}\n")
    assert parsed_lines(raw) == [json.loads(p) for p in analytics.raw_records(stores.disk())]
    copy = stores.cli_args("copy")
    code, out, _ = run(*copy, "import", str(raw))
    assert (code, out) == (0, f"imported 13 turns into {POSTGRES_URL}\n")
    again = tmp_path / "again.jsonl"
    assert run(*copy, "export", "--format", "raw", "-o", str(again))[0] == 0
    assert again.read_bytes() == raw.read_bytes()  # PostgreSQL to PostgreSQL: the same file
    chat = tmp_path / "chat.jsonl"
    assert run(*copy, "export", "--format", "chat", "-o", str(chat))[0] == 0
    answers = sorted(json.loads(x)["messages"][1]["content"] for x in chat.read_text().splitlines())
    assert answers == ["Better.", "answer a1.", "answer a2.", "answer c1.", "answer c2.", "fixed"]

    # a namespace with no rows is an empty store, not an error
    assert run(*stores.cli_args("empty"), "stats") == (0, "", "no turns\n")

    # the global options may follow the command, as on the other backends
    assert run.json("stats", *copy) == run.json(*disk, "stats")


def test_cli_reports_a_postgresql_server_that_is_down_in_one_line(run: Run) -> None:
    location = "postgresql://postgres@127.0.0.1:1/test"
    code, out, err = run("--store", location, "--namespace", "app", "stats")
    assert (code, out) == (1, "")
    assert err.startswith(f"feedback-plugin: error: scan failed on {location}: ")
    assert "Connection refused" in err and err.count("\n") == 1


def test_cli_refuses_a_bad_postgresql_option(run: Run) -> None:
    code, out, err = run("--store", f"{POSTGRES_URL}?pool_size=none", "stats")
    assert (code, out) == (2, "")
    assert "bad pool option" in err and err.count("\n") == 1


# -- libpq parameters in the URL ------------------------------------------------------------


def test_libpq_options_in_the_url_reach_the_session(stores: Stores) -> None:
    """``options=-c<name>%3D<value>`` sets a server setting for the store's connections."""
    store = stores.postgres(url=f"{POSTGRES_URL}?options=-csynchronous_commit%3Doff&pool_size=2")
    turn = store.record("s1", "q", "a", wait=True)
    assert store.get_entry("s1", turn.qa_id) is not None
    assert store.backend._run("SHOW synchronous_commit") == [("off",)]  # type: ignore[attr-defined]


def test_libpq_parameters_with_spaces_reach_libpq_unchanged(stores: Stores) -> None:
    """The libpq URL form ``options=-c%20synchronous_commit%3Doff`` (a space after -c), and
    an ``application_name`` with a space, arrive as written."""
    url = f"{POSTGRES_URL}?options=-c%20synchronous_commit%3Doff&application_name=my%20app"
    store = SessionStore(url, namespace=stores.namespace("spaces"))  # writes nothing
    backend: Any = store.backend
    try:
        assert backend._run("SHOW synchronous_commit") == [("off",)]
        assert backend._run("SHOW application_name") == [("my app",)]
    finally:
        store.close()
        backend.close()


@pytest.fixture
def dml_only_role(stores: Stores) -> Iterator[str]:
    """A login role that may read and write the store's tables, and create nothing: the
    usual rights of an application's role once the schema is in place."""
    import psycopg

    stores.postgres("setup").list_sessions()  # the schema exists, at this version
    role = f"fp_app_{uuid.uuid4().hex[:12]}"
    grants = (
        f"CREATE ROLE {role} LOGIN",
        f"GRANT USAGE ON SCHEMA feedback_plugin TO {role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA feedback_plugin TO {role}",
        f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA feedback_plugin TO {role}",
    )
    with psycopg.connect(POSTGRES_URL, autocommit=True) as con:
        for statement in grants:
            con.execute(statement)
    try:
        yield role
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as con:
            con.execute(f"DROP OWNED BY {role}")
            con.execute(f"DROP ROLE {role}")


def test_a_role_that_may_only_read_and_write_rows_can_use_the_store(
    stores: Stores, dml_only_role: str
) -> None:
    url = POSTGRES_URL.replace("postgres@", f"{dml_only_role}@", 1)
    assert url != POSTGRES_URL
    store = SessionStore(url, namespace=stores.namespace("app"))
    stores.postgres("app")  # teardown deletes what the role wrote, as the test's owner
    try:
        turn = store.record("s1", "How do I reset my password?", "Settings.", wait=True)
        assert store.thumbs("s1", turn.qa_id, up=True)
        assert [e.feedback_score for e in store.get_session("s1")] == [5]
    finally:
        store.close()
        store.backend.close()


def test_an_entry_reads_back_equal_though_jsonb_orders_its_keys(stores: Stores) -> None:
    """The entry is kept as jsonb, which orders object keys its own way (shorter keys
    first): every value reads back equal, and a raw export parses to the same turns as
    diskcache's, but key order and spacing are PostgreSQL's (docs/backends.md)."""
    metadata = {"prompt_version": "v1", "zeta": 1, "model": "m", "a": {"y": 1, "x": 2}}
    pg, disk = stores.postgres(), stores.disk()
    for store in (pg, disk):
        store.record("s1", "q", "a", metadata=metadata, qa_id="t1", wait=True)
    stored = pg.get_entry("s1", "t1")
    assert stored is not None and stored.metadata == metadata

    def exported(store: SessionStore) -> list[dict[str, Any]]:  # each recorded at its time
        texts = analytics.raw_records(store)
        return [SessionQAEntry.from_json(t).model_dump(exclude={"time"}) for t in texts]

    assert exported(pg) == exported(disk)


# -- the REST app and the demo chat ---------------------------------------------------------


def web() -> Any:
    """The web extra's TestClient (the test is skipped without FastAPI and httpx)."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    return TestClient


LOCAL = "http://localhost"  # a host the apps answer to
ALICE = {"Authorization": "Bearer alice-key"}
BOB = {"Authorization": "Bearer bob-key"}
KEYS = {"alice-key": "alice", "bob-key": "bob"}


def feedback_url(qa_id: str) -> str:
    return f"/api/turns/{qa_id}/feedback"


def test_rest_app_on_postgresql_rates_and_finds_in_memory_across_workers(
    stores: Stores,
) -> None:
    """Two workers (two stores on one namespace, as two processes would have): a thumbs up
    given through one is in the other's memory at once, and so is taking it back."""
    first, second = (
        stores.postgres(),
        SessionStore(POSTGRES_URL, namespace=stores.namespace("main")),
    )
    stores._keep(second)
    liked = first.record("s1", "How do I reset my password?", "Settings > Security.", user="alice")
    other = first.record("s2", "Password rules?", "Any.", user="alice")
    bobs = first.record("s1", "password reset", "bob's answer", user="bob")
    TestClient = web()
    from feedback_plugin.integrations.rest import ApiKeyAuth, create_app

    auth = ApiKeyAuth(KEYS)
    with (
        TestClient(create_app(first, auth=auth), base_url=LOCAL) as a,
        TestClient(create_app(second, auth=auth), base_url=LOCAL) as b,
    ):
        r = a.put(
            feedback_url(liked.qa_id),
            params={"session_id": "s1"},
            json={"thumbs": "up"},
            headers=ALICE,
        )
        assert r.status_code == 200 and r.json()["feedback_score"] == 5
        r = a.put(
            feedback_url(other.qa_id),
            params={"session_id": "s2"},
            json={"thumbs": "down"},
            headers=ALICE,
        )
        assert r.status_code == 200
        b.put(feedback_url(bobs.qa_id), params={"session_id": "s1"}, json={"score": 4}, headers=BOB)

        for client in (a, b):
            r = client.get("/api/memory", params={"q": "reset my password"}, headers=ALICE)
            assert r.status_code == 200
            assert [h["qa_id"] for h in r.json()] == [liked.qa_id]  # not the thumbs down, not bob's
            hit = r.json()[0]
            assert (hit["answer"], hit["session_id"], hit["feedback_score"]) == (
                "Settings > Security.",
                "s1",
                5,
            )
            assert isinstance(hit["relevance"], float) and hit["relevance"] > 0
        r = b.get("/api/turns", params={"session_id": "s1"}, headers=ALICE)
        assert [(t["qa_id"], t["feedback_score"]) for t in r.json()] == [(liked.qa_id, 5)]
        assert [
            h["qa_id"] for h in b.get("/api/memory", params={"q": "password"}, headers=BOB).json()
        ] == [bobs.qa_id]

        # a correction through the second worker is what the first one's memory answers
        r = b.put(
            feedback_url(other.qa_id),
            params={"session_id": "s2"},
            json={"score": 4, "correction": "12+ characters."},
            headers=ALICE,
        )
        assert r.status_code == 200
        hits = {
            h["qa_id"]: h["answer"]
            for h in a.get("/api/memory", params={"q": "password"}, headers=ALICE).json()
        }
        assert hits == {liked.qa_id: "Settings > Security.", other.qa_id: "12+ characters."}

        # clearing the rating through one worker takes it out of the other's memory
        assert (
            a.delete(
                feedback_url(liked.qa_id), params={"session_id": "s1"}, headers=ALICE
            ).status_code
            == 200
        )
        r = b.get("/api/memory", params={"q": "reset my password"}, headers=ALICE)
        assert [h["qa_id"] for h in r.json()] == [other.qa_id]


def test_demo_chat_on_postgresql_records_and_remembers(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    TestClient = web()
    from feedback_plugin.integrations.webapp import create_demo_app

    monkeypatch.delenv("FEEDBACK_PLUGIN_CHAT_MODEL", raising=False)
    store = stores.postgres()
    question = "How do I reset my password?"
    with TestClient(create_demo_app(store, embeddings=None), base_url=LOCAL) as client:
        r = client.post("/api/chat", json={"session_id": "monday", "question": question})
        assert r.status_code == 200, r.text
        first = r.json()
        assert first["recorded"] is True and first["memories"] == []
        entry = store.get_entry("monday", first["qa_id"])
        assert entry is not None and (entry.question, entry.answer) == (question, first["answer"])

        r = client.put(
            feedback_url(first["qa_id"]), params={"session_id": "monday"}, json={"thumbs": "up"}
        )
        assert r.status_code == 200 and r.json()["feedback_score"] == 5

        r = client.get("/api/memory", params={"q": "forgot password reset"})
        assert r.status_code == 200
        assert [(h["qa_id"], h["answer"]) for h in r.json()] == [(first["qa_id"], first["answer"])]

        r = client.post(
            "/api/chat",
            json={"session_id": "tuesday", "question": "I forgot my password, how do I reset it?"},
        )
        later = r.json()
        assert [m["qa_id"] for m in later["memories"]] == [first["qa_id"]]
        assert [s for s in store.list_sessions()] == ["monday", "tuesday"]
