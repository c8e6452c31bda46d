"""The PostgreSQL backend's tables, and the migrations that create and move them forward.

Layout (in one PostgreSQL schema, ``feedback_plugin`` unless the URL says
``?schema=``; every namespace shares its tables)::

    turns        one row per turn
      seq          bigint identity: the recording order, and the row's id
      namespace    text ('' for none); owner text ('' for no user); session_id, qa_id text
      doc          jsonb: the entry (the layout of :mod:`feedback_plugin.codec`)
      raw          text: the entry exactly as written, kept only when jsonb would
                   change it (U+0000, a lone surrogate, a number in exponent form)
      expires_at   timestamptz: the ttl's end (NULL: never); reads skip expired rows
      score, corrected, words   generated from doc: the 1-5 score, whether the
                   turn has a correction, and for rated or corrected turns only a
                   tsvector of the question (weight A) and best answer (weight B)
      UNIQUE (namespace, owner, session_id, qa_id)
    vectors      one vector per remembered turn and embedding model (float32,
                 normalised, bytea); dropped with its turn, and when the turn's
                 text changes or it leaves memory (trigger)
    embed_queue  turns waiting for a vector (filled by the same trigger in a
                 namespace where a process embeds), leased by the embedder
                 threads of every process
    meta         key/value: ``schema_version``; ``embeddings:<namespace>``, the
                 model a namespace's turns are embedded with

Where the database has the ``vector`` extension (pgvector; ``CREATE EXTENSION
vector`` is the database owner's to run), ``vectors`` also gets an
``embedding vector`` column and, per model, a partial HNSW index (cosine) of
it: the server then ranks by meaning too (:mod:`.postgres_memory`).

Indexes: ``(namespace, owner, session_id, seq)`` for a session's turns and a
user's session list; a GIN index on ``words`` and a btree on ``(namespace,
owner, seq)``, both partial (``WHERE words IS NOT NULL``: rated or corrected
turns only) for memory; ``(namespace, expires_at)`` where a ttl is set.

Migrations: :data:`MIGRATIONS` lists, for each schema version, the SQL that
moves a database from the version before to it. The first process that uses
a database takes a transaction-level advisory lock, reads
``meta.schema_version`` and runs the missing steps in that one transaction
(so a crash leaves the database at the old version, and two processes never
migrate at once), then records the new version. A database newer than this
library is refused with :class:`~feedback_plugin.errors.ConfigurationError`.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from ..errors import ConfigurationError

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "check_schema_name",
    "ensure_hnsw",
    "ensure_schema",
]

_REMEMBERED = (
    "(jsonb_typeof(doc->'feedback_score') = 'number' OR jsonb_typeof(doc->'correction') = 'string')"
)

MIGRATIONS: list[list[str]] = [
    # 1: the first layout
    [
        """
        CREATE TABLE {s}.turns (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            namespace text NOT NULL,
            owner text NOT NULL,
            session_id text NOT NULL,
            qa_id text NOT NULL,
            doc jsonb NOT NULL,
            raw text,
            expires_at timestamptz,
            score smallint GENERATED ALWAYS AS (
                CASE WHEN jsonb_typeof(doc->'feedback_score') = 'number'
                      AND doc->'feedback_score' BETWEEN '-32768'::jsonb AND '32767'::jsonb
                THEN trunc((doc->>'feedback_score')::numeric)::smallint END
            ) STORED,
            corrected boolean GENERATED ALWAYS AS (
                coalesce(jsonb_typeof(doc->'correction') = 'string', false)
            ) STORED,
            words tsvector GENERATED ALWAYS AS (
                CASE WHEN """
        + _REMEMBERED
        + """ THEN
                    setweight(to_tsvector('english'::regconfig,
                                          coalesce(doc->>'question', '')), 'A')
                    || setweight(to_tsvector('english'::regconfig,
                                 coalesce(doc->>'correction', doc->>'answer', '')), 'B')
                END
            ) STORED,
            UNIQUE (namespace, owner, session_id, qa_id)
        )
        """,
        "CREATE INDEX turns_session ON {s}.turns (namespace, owner, session_id, seq)",
        "CREATE INDEX turns_remembered ON {s}.turns (namespace, owner, seq)"
        " WHERE words IS NOT NULL",
        # fastupdate off: a pending list (on by default) is scanned by every query until
        # vacuum merges it: milliseconds per query after a bulk rating
        "CREATE INDEX turns_words ON {s}.turns USING gin (words) WITH (fastupdate = off)"
        " WHERE words IS NOT NULL",
        "CREATE INDEX turns_expiry ON {s}.turns (namespace, expires_at)"
        " WHERE expires_at IS NOT NULL",
        """
        CREATE TABLE {s}.vectors (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            turn_seq bigint NOT NULL REFERENCES {s}.turns (seq) ON DELETE CASCADE,
            namespace text NOT NULL,
            owner text NOT NULL,
            model text NOT NULL,
            vec bytea NOT NULL,
            UNIQUE (turn_seq, model)
        )
        """,
        "CREATE INDEX vectors_owner ON {s}.vectors (namespace, owner, model, id)",
        """
        CREATE TABLE {s}.embed_queue (
            turn_seq bigint PRIMARY KEY REFERENCES {s}.turns (seq) ON DELETE CASCADE,
            namespace text NOT NULL,
            lease double precision NOT NULL DEFAULT 0
        )
        """,
        "CREATE INDEX embed_queue_lease ON {s}.embed_queue (namespace, lease)",
        """
        CREATE FUNCTION {s}.queue_embedding() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'UPDATE' THEN  -- a new text, or out of memory: the vector is stale
                DELETE FROM {s}.vectors WHERE turn_seq = NEW.seq;
            END IF;
            IF NEW.words IS NULL THEN
                DELETE FROM {s}.embed_queue WHERE turn_seq = NEW.seq;
            ELSIF EXISTS (SELECT 1 FROM {s}.meta WHERE key = 'embeddings:' || NEW.namespace)
            THEN  -- only where a process embeds (use_embeddings queues the rest itself)
                INSERT INTO {s}.embed_queue (turn_seq, namespace) VALUES (NEW.seq, NEW.namespace)
                ON CONFLICT (turn_seq) DO UPDATE SET lease = 0;
            END IF;
            RETURN NULL;
        END $$
        """,
        "CREATE TRIGGER turns_embed_ai AFTER INSERT ON {s}.turns FOR EACH ROW"
        " WHEN (NEW.words IS NOT NULL) EXECUTE FUNCTION {s}.queue_embedding()",
        "CREATE TRIGGER turns_embed_au AFTER UPDATE OF doc ON {s}.turns FOR EACH ROW"
        " WHEN (NEW.words IS DISTINCT FROM OLD.words) EXECUTE FUNCTION {s}.queue_embedding()",
    ],
]

SCHEMA_VERSION = len(MIGRATIONS)
"""The schema version this library writes."""

_LOCK_KEY = 0x66656564  # pg_advisory_xact_lock key: "feed"


def check_schema_name(name: str) -> str:
    """``name`` if it is a plain lower-case PostgreSQL identifier, else ConfigurationError."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ConfigurationError(
            f"schema must be a lower-case identifier (letters, digits, _), got {name!r}"
        )
    return name


def _current(con: Any, s: str) -> bool | None:
    """Whether the database has pgvector, when ``s`` is at this version with everything
    in place (one statement, no DDL: an application role needs no CREATE right);
    ``None`` when it must be created or migrated."""
    row = con.execute(
        "SELECT to_regclass(%s) IS NOT NULL,"
        " EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector'),"
        " EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s)"
        " AND attname = 'embedding' AND NOT attisdropped)",
        (f"{s}.meta", f"{s}.vectors"),
    ).fetchone()
    has_meta, server, column = row
    if not has_meta or (server and not column):
        return None
    if _version(con, s) < SCHEMA_VERSION:
        return None
    return bool(server)


def _version(con: Any, s: str) -> int:
    """The schema version ``s``'s ``meta`` records (0: none); a version newer than this
    library's is refused."""
    row = con.execute(f"SELECT value FROM {s}.meta WHERE key = 'schema_version'").fetchone()
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise ConfigurationError(
            f"the database's feedback_plugin schema {s} is at version {version}; "
            f"this library knows up to {SCHEMA_VERSION}: upgrade feedback-plugin"
        )
    return version


def ensure_schema(con: Any, schema: str) -> bool:
    """Create or migrate ``schema`` to :data:`SCHEMA_VERSION` (one transaction on ``con``);
    whether the database has the ``vector`` extension, whose ``vectors.embedding``
    column is then added (see :func:`ensure_hnsw`). A schema already current costs one
    read and no DDL."""
    s = f'"{check_schema_name(schema)}"'
    current = _current(con, s)
    if current is not None:
        return current
    with con.transaction():
        con.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {s}.meta (key text PRIMARY KEY, value text NOT NULL)"
        )
        version = _version(con, s)
        for steps in MIGRATIONS[version:]:
            for statement in steps:
                con.execute(statement.replace("{s}", s))
        if version < SCHEMA_VERSION:
            con.execute(
                f"INSERT INTO {s}.meta VALUES ('schema_version', %s)"
                " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (str(SCHEMA_VERSION),),
            )
        server = con.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone()
        if server is not None:
            con.execute(f"ALTER TABLE {s}.vectors ADD COLUMN IF NOT EXISTS embedding vector")
        return server is not None


def hnsw_index_name(model: str, dims: int) -> str:
    """The name of the HNSW index of one model's vectors (a hash: any model id fits)."""
    return "vectors_hnsw_" + hashlib.sha1(f"{dims}/{model}".encode()).hexdigest()[:16]


def ensure_hnsw(con: Any, schema: str, model: str, dims: int) -> None:
    """With the ``vector`` extension: an HNSW index (cosine) of ``model``'s vectors, partial
    on the model and cast to its ``dims`` (built once; later vectors join it as written)."""
    from psycopg import sql

    s = f'"{check_schema_name(schema)}"'
    name = hnsw_index_name(model, dims)
    if con.execute("SELECT to_regclass(%s)", (f'{s}."{name}"',)).fetchone()[0] is not None:
        return  # built: no DDL (an application role may lack the right)
    with con.transaction():
        con.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        con.execute(
            sql.SQL(
                "CREATE INDEX IF NOT EXISTS {name} ON {s}.vectors USING hnsw"
                " ((embedding::vector({dims})) vector_cosine_ops) WHERE model = {model}"
            ).format(
                name=sql.Identifier(name),
                s=sql.SQL(s),
                dims=sql.Literal(int(dims)),
                model=sql.Literal(model),
            )
        )
