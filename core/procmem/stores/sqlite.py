"""The embedded default store: one SQLite file (WAL, FTS5, forward migrations).

* Every write runs in one ``BEGIN IMMEDIATE`` transaction: all of it lands or none of it.
* WAL journal and a busy timeout let several threads and processes share one file.
* ``PRAGMA application_id`` marks the file as procmem's and ``PRAGMA user_version`` holds the
  schema version; older files are migrated forward in a transaction, newer ones are refused.
* A corrupt or foreign file raises :class:`~procmem.errors.CorruptStoreError` and is left
  untouched (seed 002 silently fell back to an empty store, which loses data on the next save).
* Lexical search uses SQLite's FTS5 ``bm25()``; dense search an exact in-memory matrix that is
  loaded lazily and refreshed when another connection commits (``PRAGMA data_version``).
* From ``_PRUNE_MIN_ROWS`` procedures, a lexical query leaves out the words that occur in at least
  half of them (keeping the rarest word that occurs anywhere): FTS5's
  Robertson/Sparck Jones idf ``ln((N - n + 0.5) / (n + 0.5))`` is <= 0 for them and ``bm25()``
  clamps it to 1e-6, so they hardly change any score but make FTS5 score every procedure that
  contains them ("the", "to", "you" in a natural-language store). Their document frequencies are
  counted by FTS5 itself (same tokenizer and stemmer) and reused for ``_DF_TTL`` seconds.
* From ``lexical_min_rows`` procedures (10,000 by default), with the ``lexical`` extra installed,
  lexical search goes through a derived in-memory tantivy index whose top-k search does not
  score every matching row (see :mod:`procmem.stores._lexical`); FTS5 answers until it is built.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from procmem.errors import (
    ConfigurationError,
    CorruptStoreError,
    EmbeddingDimensionError,
    InvalidProcedureError,
    ProcedureNotFoundError,
    SchemaVersionError,
    StorageError,
    ValidationError,
)
from procmem.stores._lexical import LEXICAL_MIN_ROWS, LexicalIndex, LexicalRow, tantivy_available
from procmem.stores._vectors import ANN_MIN_ROWS, VectorIndex, check_ann_min_rows
from procmem.stores.base import ProcedureStore, read_record, with_counters
from procmem.types import Outcome, Procedure, ProcedureKind, ProcedureVersion, SessionRecord, Usage, utcnow

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "SQLiteStore"]

APPLICATION_ID = 0x50524D4D  # "PRMM"
SCHEMA_VERSION = 1

_MIGRATIONS: dict[int, str] = {
    # version -> SQL that brings a store from version-1 to version
    1: """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE procedures (
        rowid INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        namespace TEXT NOT NULL,
        kind TEXT NOT NULL,
        category TEXT,
        version INTEGER NOT NULL,
        record TEXT NOT NULL,
        embedding BLOB,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX procedures_ns ON procedures(namespace, kind);
    CREATE TABLE procedure_tags (
        procedure_rowid INTEGER NOT NULL REFERENCES procedures(rowid) ON DELETE CASCADE,
        tag TEXT NOT NULL,
        PRIMARY KEY (procedure_rowid, tag)
    );
    CREATE INDEX procedure_tags_tag ON procedure_tags(tag);
    CREATE TABLE versions (
        procedure_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        record TEXT NOT NULL,
        note TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (procedure_id, version)
    );
    CREATE VIRTUAL TABLE procedures_fts USING fts5(
        name, description, triggers, steps, tags, tokenize = 'porter unicode61'
    );
    CREATE TABLE usages (
        rowid INTEGER PRIMARY KEY,
        namespace TEXT NOT NULL,
        query TEXT NOT NULL,
        procedure_id TEXT NOT NULL,
        success INTEGER NOT NULL,
        timestamp TEXT NOT NULL,
        embedding BLOB NOT NULL
    );
    CREATE INDEX usages_proc ON usages(procedure_id);
    CREATE TABLE outcomes (
        rowid INTEGER PRIMARY KEY,
        procedure_id TEXT NOT NULL,
        record TEXT NOT NULL
    );
    CREATE INDEX outcomes_proc ON outcomes(procedure_id);
    CREATE TABLE sessions (
        rowid INTEGER PRIMARY KEY,
        namespace TEXT NOT NULL,
        session_id TEXT NOT NULL,
        record TEXT NOT NULL,
        UNIQUE (namespace, session_id)
    );
    """,
}

_FTS_TOKEN = re.compile(r"\w+", re.UNICODE)
#: Seconds the document frequencies of query words (and the row count) are reused for.
_DF_TTL = 60.0
#: Procedures from which a lexical query leaves out its common words; below, ranking every
#: procedure that contains one costs about a millisecond or less, and results stay exactly FTS5's.
_PRUNE_MIN_ROWS = 1_000
#: Page cache of each read connection of the lexical search, in KiB (SQLite's default is
#: 2,000): the FTS5 index and its document lengths, about 11 MB at 100,000 procedures.
_READ_CACHE_KIB = 65_536
_KINDS = tuple(k.value for k in ProcedureKind)
_LEXICAL_BUILD_CHUNK = 4_096  # rows read per step of a tantivy index build
_log = logging.getLogger("procmem")
# Running tantivy builds (thread -> store), stopped at exit like the HNSW builds.
_lexical_builds: dict[threading.Thread, SQLiteStore] = {}
_lexical_builds_lock = threading.Lock()


@atexit.register
def _stop_lexical_builds() -> None:
    """Stop tantivy builds before the interpreter exits (each ends after its current chunk)."""
    with _lexical_builds_lock:
        pending = list(_lexical_builds.items())
    for thread, store in pending:
        store._lexical_generation += 1
        thread.join(timeout=60)


def _default_path() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("procmem", appauthor=False)) / "procmem.sqlite3"


def _blob(vec: np.ndarray) -> bytes:
    return np.asarray(vec, dtype=np.float32).tobytes()


class SQLiteStore(ProcedureStore):
    """Procedures, versions, usages, outcomes and sessions in one SQLite file.

    Args:
        path: The database file; None for the default under the platform data dir
            (e.g. ``~/.local/share/procmem/procmem.sqlite3``); ``":memory:"`` for a private
            in-memory database. Parent directories are created.
        max_versions: Versions kept per procedure (None keeps all, the default).
        busy_timeout: Seconds to wait for another writer's lock before failing.
        embedding_model: Name of the model whose vectors this store holds; recorded on first
            write, and a different name later raises :class:`ConfigurationError`.
        ann_min_rows: Vectors (procedures, or past requests) from which vector search goes
            through an HNSW graph with exact re-scoring instead of an exact scan, when the
            ``ann`` extra (usearch) is installed; the graph is built in the background and not
            stored. None always scans exactly. See ``benchmarks/scale.py`` for speed and recall.
        lexical_min_rows: Procedures from which lexical search ranks through an in-memory
            tantivy index (built in the background, not stored) instead of SQLite FTS5, when the
            ``lexical`` extra is installed. None always uses FTS5. Both rank by BM25; see
            :mod:`procmem.stores._lexical` for how their scores differ.

    Raises:
        ConfigurationError: ``max_versions``, ``ann_min_rows`` or ``lexical_min_rows`` is not
            None or an int >= 1.
        CorruptStoreError: The file is not a SQLite database, or not a procmem store.
        SchemaVersionError: The file was written by a newer procmem.
    """

    #: Reads from several threads may run at once (the vector scan holds only the vector
    #: index's lock, SQL reads the connection's), so the retriever overlaps them.
    concurrent_reads = True

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        max_versions: int | None = None,
        busy_timeout: float = 30.0,
        embedding_model: str | None = None,
        ann_min_rows: int | None = ANN_MIN_ROWS,
        lexical_min_rows: int | None = LEXICAL_MIN_ROWS,
    ) -> None:
        self.ann_min_rows = check_ann_min_rows(ann_min_rows)
        self.lexical_min_rows = check_ann_min_rows(lexical_min_rows, "lexical_min_rows")
        if max_versions is not None and (not isinstance(max_versions, int) or max_versions < 1):
            raise ConfigurationError(f"max_versions must be None or an int >= 1, got {max_versions!r}")
        if path is None:
            path = _default_path()
        self.path = str(path)
        self.max_versions = max_versions
        self._lock = threading.RLock()
        self._revision = 0  # this store's committed writes to procedures (see revision())
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open store at {self.path!r}: {exc}") from exc
        self._conn.row_factory = sqlite3.Row
        self._busy_timeout = busy_timeout
        self._open(busy_timeout)
        self._wal = self.path != ":memory:" and str(self._pragma("journal_mode")).lower() == "wal"
        self._side = threading.local()  # per-thread read connections (see _read's side=True)
        self._side_conns: list[sqlite3.Connection] = []
        self._side_lock = threading.Lock()
        self._vectors: VectorIndex | None = None
        self._usage_vectors: VectorIndex | None = None
        self._usage_rows: dict[str, tuple[str, str, int, str, str]] = {}
        self._ns_codes: dict[str, int] = {}
        self._data_version = self._pragma("data_version")
        self._embedding_model = embedding_model
        if embedding_model is not None:
            self._check_model(embedding_model)
        self._df_lock = threading.Lock()
        self._df: dict[str, int] = {}  # query word -> procedures containing it (see _common_words)
        self._df_rows = -1  # procedures (FTS5 rows) when self._df was started; -1: not counted
        self._df_since = -_DF_TTL  # time.monotonic() of that start
        self._lexical: LexicalIndex | None = None  # tantivy index once built (see lexical_min_rows)
        self._lexical_thread: threading.Thread | None = None
        self._lexical_queue: list[tuple[str, Any]] | None = None  # writes made during a build
        self._lexical_generation = 0  # bumped to abandon a build (close, another process's write)
        self._indexes_touched = False

    # ------------------------------------------------------------------ opening
    def _pragma(self, name: str) -> Any:
        return self._conn.execute(f"PRAGMA {name}").fetchone()[0]

    def _open(self, busy_timeout: float) -> None:
        try:
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            app_id = self._pragma("application_id")
            version = self._pragma("user_version")
            tables = self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            self._conn.execute("SELECT name, sql FROM sqlite_master").fetchall()
        except (sqlite3.DatabaseError, UnicodeDecodeError) as exc:
            raise CorruptStoreError(
                f"{self.path!r} is not a readable SQLite database ({exc}); it was left untouched"
            ) from exc
        if tables and app_id != APPLICATION_ID:
            raise CorruptStoreError(
                f"{self.path!r} is a SQLite database but not a procmem store "
                f"(application_id {app_id:#x}); it was left untouched"
            )
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{self.path!r} has schema version {version}, newer than this procmem "
                f"supports ({SCHEMA_VERSION}); upgrade procmem"
            )
        try:
            if self.path != ":memory:":
                mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":  # pragma: no cover - e.g. network filesystems
                    self._conn.execute("PRAGMA journal_mode = DELETE")
            self._conn.execute(
                "PRAGMA synchronous = NORMAL" if self.path == ":memory:" else "PRAGMA synchronous = FULL"
            )
            self._conn.execute("PRAGMA foreign_keys = ON")
            if version < SCHEMA_VERSION:
                self._migrate(version)
        except sqlite3.DatabaseError as exc:
            raise CorruptStoreError(f"{self.path!r} could not be opened: {exc}") from exc

    def _migrate(self, from_version: int) -> None:
        with self._tx() as cur:
            # Re-check under the write lock: another process may have migrated meanwhile.
            current = cur.execute("PRAGMA user_version").fetchone()[0]
            for v in range(current + 1, SCHEMA_VERSION + 1):
                for stmt in _MIGRATIONS[v].split(";"):
                    if stmt.strip():
                        cur.execute(stmt)
            cur.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            cur.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _tx(self, *, procedures: bool = True) -> Iterator[sqlite3.Cursor]:
        """One write transaction.

        ``procedures=False`` marks writes that leave procedures' content as it was (access
        counts, usages, sessions): they do not advance :meth:`revision`.
        """
        with self._lock:
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StorageError(f"could not start a write on {self.path!r}: {exc}") from exc
            self._indexes_touched = False  # set when this write updates an in-memory index
            try:
                yield cur
            except sqlite3.Error as exc:
                self._rollback()
                raise self._db_error(exc, "write failed") from exc
            except BaseException:
                self._rollback()
                raise
            else:
                try:
                    cur.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._rollback()
                    raise StorageError(f"commit failed on {self.path!r}: {exc}") from exc
                if procedures:
                    self._revision += 1
            finally:
                cur.close()

    def revision(self) -> tuple[int, int]:
        """Changes whenever a procedure may have changed: by this store or another connection.

        ``(PRAGMA data_version, this store's procedure writes)``: SQLite advances the first when
        another connection (another process) commits to the file; the second counts this
        store's own writes to procedures (not access counts, usages or sessions).
        """
        with self._lock:
            return self._pragma("data_version"), self._revision

    def _db_error(self, exc: sqlite3.Error, what: str) -> StorageError:
        """The procmem error for a SQLite error: ``CorruptStoreError`` when the file is damaged."""
        if getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
            return CorruptStoreError(f"{what} on {self.path!r}: the database is corrupt ({exc})")
        return StorageError(f"{what} on {self.path!r}: {exc}")

    @contextmanager
    def _sql_errors(self, what: str) -> Iterator[None]:
        """Raise SQLite errors of the block as procmem's (see :meth:`_db_error`)."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise self._db_error(exc, what) from exc

    def _rollback(self) -> None:
        self._conn.rollback()
        if self._indexes_touched:
            # The in-memory indexes were updated for rows that did not land: rebuild them.
            self._drop_vector_caches()
            self._drop_lexical()

    def _side_conn(self) -> sqlite3.Connection | None:
        """This thread's own read connection (WAL files only; None for other journal modes)."""
        if not self._wal:
            return None
        conn = getattr(self._side, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None,
                                   check_same_thread=False)  # closed by close(), from any thread
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA cache_size = -{_READ_CACHE_KIB}")
            conn.execute("PRAGMA query_only = ON")
            self._side.conn = conn
            with self._side_lock:  # not the store's lock: a write in progress must not block this
                self._side_conns.append(conn)
        return conn

    def _read(self, sql: str, params: Sequence[Any] = (), *, side: bool = False) -> list[sqlite3.Row]:
        """Run a read query.

        Args:
            sql: The statement.
            params: Its parameters.
            side: Run it on this thread's own read connection, without the store's lock, so a
                long read (a BM25 ranking) overlaps other work; WAL readers see every committed
                write. Falls back to the shared connection when the file is not in WAL mode.
        """
        conn = self._side_conn() if side else None
        with self._lock if conn is None else contextlib.nullcontext():
            try:
                return (conn or self._conn).execute(sql, params).fetchall()
            except OverflowError as exc:
                raise ValidationError(f"a value is outside SQLite's integer range: {exc}") from exc
            except UnicodeDecodeError as exc:
                raise CorruptStoreError(f"{self.path!r} holds text that is not UTF-8: {exc}") from exc
            except sqlite3.DatabaseError as exc:
                raise self._db_error(exc, "read failed") from exc

    def _check_model(self, name: str) -> None:
        rows = self._read("SELECT value FROM meta WHERE key = 'embedding_model'")
        if rows and rows[0]["value"] != name:
            raise ConfigurationError(
                f"this store holds vectors of embedding model {rows[0]['value']!r}, "
                f"not {name!r}; open it with the same embedder or re-embed"
            )

    def close(self) -> None:
        """Close the connection (and stop a background vector-index build)."""
        with self._lock:
            self._drop_vector_caches()
            self._drop_lexical()
            with self._side_lock:
                for conn in self._side_conns:
                    conn.close()
                self._side_conns = []
            self._conn.close()

    def wait_for_ann(self, timeout: float | None = None) -> bool:
        """Load the vector indexes and wait for their background HNSW builds.

        Searches never need this (they scan exactly until a graph is ready); call it to make
        the first searches after opening a large store fast, e.g. when a service starts.

        Args:
            timeout: Seconds to wait at most for each index (None: no limit; 0 loads the
                indexes and returns at once, the graphs building on).

        Returns:
            Whether every index of at least ``ann_min_rows`` vectors now searches through its
            graph (False too when the ``ann`` extra is not installed).
        """
        ready = True
        for index in (self._proc_index(), self._usage_index()):
            if self.ann_min_rows is not None and len(index) >= self.ann_min_rows:
                ready = index.wait_for_ann(timeout) and ready
        return ready

    def vector_index_info(self) -> dict[str, dict[str, int | bool]]:
        """How this process's vector indexes search, without loading them.

        Returns:
            ``{"procedures": {...}, "usages": {...}}``, each ``{"loaded": False}`` when the
            index has not been loaded yet (the first search loads it), else
            ``{"loaded": True, "vectors": n, "hnsw": bool}``, ``hnsw`` telling whether a graph
            serves searches now (see ``ann_min_rows``).
        """
        return {
            name: {"loaded": False} if index is None
            else {"loaded": True, "vectors": len(index), "hnsw": index.ann_ready}
            for name, index in (("procedures", self._vectors), ("usages", self._usage_vectors))
        }

    # ------------------------------------------------------------------ caches
    def _code(self, namespace: str, kind: str) -> int:
        """Filter code of a procedure row: its namespace and its kind in one integer."""
        return self._ns_code(namespace) * len(_KINDS) + _KINDS.index(kind)

    def _ns_code(self, namespace: str) -> int:
        code = self._ns_codes.get(namespace)
        if code is None:
            code = len(self._ns_codes)
            self._ns_codes[namespace] = code
        return code

    def _refresh(self) -> None:
        """Drop in-memory vector caches when another connection committed."""
        dv = self._pragma("data_version")
        if dv != self._data_version:
            self._data_version = dv
            self._drop_vector_caches()
            self._drop_lexical()

    def _drop_vector_caches(self, *, procedures: bool = True) -> None:
        """Forget the in-memory vector indexes (they reload on next use)."""
        old = [self._usage_vectors, self._vectors] if procedures else [self._usage_vectors]
        self._usage_vectors = None
        if procedures:
            self._vectors = None
        for index in old:
            if index is not None:
                index.close()

    def _proc_index(self) -> VectorIndex:
        with self._lock, self._sql_errors("loading the vectors failed"):
            self._refresh()
            if self._vectors is None:
                dim = self._stored_dim()
                index = VectorIndex(dim, ann_min_rows=self.ann_min_rows)
                rows = self._conn.execute(
                    "SELECT rowid, id, namespace, kind, embedding FROM procedures WHERE embedding IS NOT NULL"
                ).fetchall()
                if rows:
                    tags: dict[int, list[str]] = {}
                    for rowid, tag in self._conn.execute("SELECT procedure_rowid, tag FROM procedure_tags"):
                        tags.setdefault(rowid, []).append(tag)
                    mat = np.frombuffer(b"".join(r["embedding"] for r in rows), dtype=np.float32)
                    index.upsert(
                        [r["id"] for r in rows],
                        mat.reshape(len(rows), -1),
                        [self._code(r["namespace"], r["kind"]) for r in rows],
                        [tags.get(r["rowid"], ()) for r in rows],
                    )
                self._vectors = index
            return self._vectors

    def _usage_index(self) -> VectorIndex:
        with self._lock, self._sql_errors("loading the usage vectors failed"):
            self._refresh()
            if self._usage_vectors is None:
                index = VectorIndex(self._stored_dim(), ann_min_rows=self.ann_min_rows)
                self._usage_rows = {}
                rows = self._conn.execute(
                    "SELECT rowid, namespace, query, procedure_id, success, timestamp, embedding FROM usages"
                ).fetchall()
                if rows:
                    mat = np.frombuffer(b"".join(r["embedding"] for r in rows), dtype=np.float32)
                    index.upsert(
                        [str(r["rowid"]) for r in rows],
                        mat.reshape(len(rows), -1),
                        [self._ns_code(r["namespace"]) for r in rows],
                    )
                    for r in rows:
                        self._usage_rows[str(r["rowid"])] = (
                            r["namespace"],
                            r["query"],
                            r["success"],
                            r["procedure_id"],
                            r["timestamp"],
                        )
                self._usage_vectors = index
            return self._usage_vectors

    def _stored_dim(self) -> int | None:
        rows = self._conn.execute("SELECT value FROM meta WHERE key = 'embedding_dim'").fetchall()
        return int(rows[0][0]) if rows else None

    def _ensure_dim(self, cur: sqlite3.Cursor, vectors: np.ndarray, n: int) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != n:
            raise EmbeddingDimensionError(f"embeddings must have shape ({n}, dim), got {tuple(vectors.shape)}")
        if not np.all(np.isfinite(vectors)):
            raise EmbeddingDimensionError("embeddings contain NaN or infinite values")
        row = cur.execute("SELECT value FROM meta WHERE key = 'embedding_dim'").fetchone()
        if row is None:
            cur.execute("INSERT INTO meta VALUES ('embedding_dim', ?)", (str(vectors.shape[1]),))
            if self._embedding_model:
                cur.execute("INSERT OR REPLACE INTO meta VALUES ('embedding_model', ?)", (self._embedding_model,))
        elif int(row[0]) != vectors.shape[1]:
            raise EmbeddingDimensionError(
                f"embeddings have dimension {vectors.shape[1]} but this store holds dimension {row[0]}"
            )
        return vectors

    # ------------------------------------------------------------------ procedures
    @staticmethod
    def _fts_row(p: Procedure) -> tuple[str, str, str, str, str]:
        return (
            p.name.replace("_", " "),
            p.description,
            " ; ".join(p.triggers),
            " ; ".join(s.action for s in p.steps),
            " ".join(p.tags),
        )

    def put(
        self,
        procedures: Sequence[Procedure],
        embeddings: np.ndarray | None = None,
        *,
        note: str = "",
        replace_counters: bool = False,
    ) -> list[Procedure]:
        """Insert or update procedures in one transaction; see :meth:`ProcedureStore.put`."""
        procedures = list(procedures)
        if not procedures:
            return []
        stored: list[Procedure] = []
        index_updates: list[tuple[str, np.ndarray | None, int, list[str]]] = []
        lexical_rows: list[LexicalRow] = []
        with self._tx() as cur:
            vecs = None if embeddings is None else self._ensure_dim(cur, embeddings, len(procedures))
            now = utcnow()
            for i, proc in enumerate(procedures):
                old = cur.execute(
                    "SELECT rowid, version, created_at, namespace, record FROM procedures WHERE id = ?", (proc.id,)
                ).fetchone()
                if old is not None and old["namespace"] != proc.namespace:
                    raise InvalidProcedureError(
                        f"procedure id {proc.id!r} already belongs to namespace {old['namespace']!r}; "
                        f"a write from namespace {proc.namespace!r} cannot replace it",
                        field="id",
                        value=proc.id,
                    )
                if old is None:
                    rec = proc.model_copy(update={"version": 1, "updated_at": now})
                    rec = with_counters(rec)
                    cur.execute(
                        "INSERT INTO procedures (id, namespace, kind, category, version, record, embedding,"
                        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            rec.id,
                            rec.namespace,
                            rec.kind.value,
                            _category(rec),
                            1,
                            rec.model_dump_json(),
                            None if vecs is None else _blob(vecs[i]),
                            rec.created_at.isoformat(),
                            rec.updated_at.isoformat(),
                        ),
                    )
                    rowid = cur.lastrowid
                    version_note = note or "created"
                else:
                    rowid = old["rowid"]
                    update: dict[str, Any] = {
                        "version": old["version"] + 1,
                        "updated_at": now,
                        "created_at": datetime.fromisoformat(old["created_at"]),
                    }
                    if not replace_counters:
                        # Counters are bookkeeping, not content: take them from the row as it is
                        # inside this transaction, so an outcome recorded meanwhile is not lost.
                        stored_rec = read_record(Procedure, old["record"], source=repr(self.path))
                        update.update(
                            stats=stored_rec.stats,
                            access_count=stored_rec.access_count,
                            last_accessed=stored_rec.last_accessed,
                        )
                    rec = proc.model_copy(update=update)
                    rec = with_counters(rec)
                    if vecs is None:
                        cur.execute(
                            "UPDATE procedures SET namespace=?, kind=?, category=?, version=?, record=?,"
                            " updated_at=? WHERE rowid=?",
                            (
                                rec.namespace,
                                rec.kind.value,
                                _category(rec),
                                rec.version,
                                rec.model_dump_json(),
                                rec.updated_at.isoformat(),
                                rowid,
                            ),
                        )
                    else:
                        cur.execute(
                            "UPDATE procedures SET namespace=?, kind=?, category=?, version=?, record=?,"
                            " embedding=?, updated_at=? WHERE rowid=?",
                            (
                                rec.namespace,
                                rec.kind.value,
                                _category(rec),
                                rec.version,
                                rec.model_dump_json(),
                                _blob(vecs[i]),
                                rec.updated_at.isoformat(),
                                rowid,
                            ),
                        )
                    cur.execute("DELETE FROM procedures_fts WHERE rowid = ?", (rowid,))
                    cur.execute("DELETE FROM procedure_tags WHERE procedure_rowid = ?", (rowid,))
                    version_note = note or "updated"
                texts = self._fts_row(rec)
                cur.execute(
                    "INSERT INTO procedures_fts (rowid, name, description, triggers, steps, tags)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (rowid, *texts),
                )
                cur.executemany("INSERT OR IGNORE INTO procedure_tags VALUES (?, ?)", [(rowid, t) for t in rec.tags])
                lexical_rows.append((rowid, rec.namespace, rec.kind.value, rec.tags, texts))
                cur.execute(
                    "INSERT OR REPLACE INTO versions VALUES (?, ?, ?, ?, ?)",
                    (rec.id, rec.version, rec.model_dump_json(), version_note, now.isoformat()),
                )
                if self.max_versions is not None:
                    cur.execute(
                        "DELETE FROM versions WHERE procedure_id = ? AND version <= ?",
                        (rec.id, rec.version - self.max_versions),
                    )
                index_updates.append(
                    (rec.id, None if vecs is None else vecs[i], self._code(rec.namespace, rec.kind.value), rec.tags)
                )
                stored.append(rec)
            self._data_version_after_write(index_updates)
            self._lexical_write("upsert", lexical_rows)
        return stored

    def _data_version_after_write(self, updates: list[tuple[str, np.ndarray | None, int, list[str]]]) -> None:
        # Our own commits do not change PRAGMA data_version, so keep the cache in step by hand;
        # a row written without a new vector keeps its vector but may have a new filter code.
        index = self._vectors
        if index is None or not updates:
            return
        self._indexes_touched = True
        known = [u for u in updates if u[1] is not None or u[0] in index]
        if known:
            vectors = [u[1] if u[1] is not None else index.get([u[0]])[0] for u in known]
            index.upsert([u[0] for u in known], np.stack(vectors), [u[2] for u in known], [u[3] for u in known])

    def get(self, procedure_id: str) -> Procedure:
        """Return the current version; see :meth:`ProcedureStore.get`."""
        rows = self._read("SELECT record FROM procedures WHERE id = ?", (procedure_id,))
        if not rows:
            raise ProcedureNotFoundError(f"no procedure with id {procedure_id!r}")
        return read_record(Procedure, rows[0]["record"], source=repr(self.path))

    def get_many(self, procedure_ids: Sequence[str]) -> dict[str, Procedure]:
        """Return the existing procedures among ``procedure_ids``, keyed by id."""
        out: dict[str, Procedure] = {}
        ids = list(dict.fromkeys(procedure_ids))
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for r in self._read(f"SELECT record FROM procedures WHERE id IN ({marks})", chunk):
                p = read_record(Procedure, r["record"], source=repr(self.path))
                out[p.id] = p
        return out

    def existing_ids(self, procedure_ids: Sequence[str], *, namespace: str | None = None) -> set[str]:
        """Return the ids among ``procedure_ids`` that exist (in ``namespace``, if given), without reading records."""
        out: set[str] = set()
        ids = list(dict.fromkeys(procedure_ids))
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            # The namespace is compared here: in SQL, the planner may scan the namespace index
            # (every row of a one-namespace store) instead of looking the ids up.
            rows = self._read(f"SELECT id, namespace FROM procedures WHERE id IN ({','.join('?' * len(chunk))})", chunk)
            out.update(r["id"] for r in rows if namespace is None or r["namespace"] == namespace)
        return out

    def _where(
        self,
        namespace: str | None,
        kinds: Sequence[str] | None,
        tags: Sequence[str] | None,
        category: str | None = None,
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if namespace is not None:
            clauses.append("p.namespace = ?")
            params.append(namespace)
        if kinds:
            kinds = [getattr(k, "value", k) for k in kinds]
            clauses.append(f"p.kind IN ({','.join('?' * len(kinds))})")
            params.extend(kinds)
        if category is not None:
            clauses.append("p.category = ?")
            params.append(category)
        for tag in tags or ():
            clauses.append("EXISTS (SELECT 1 FROM procedure_tags t WHERE t.procedure_rowid = p.rowid AND t.tag = ?)")
            params.append(tag)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def list(
        self,
        *,
        namespace: str | None = None,
        kinds: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        category: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Procedure]:
        """List procedures matching the filters, oldest first."""
        where, params = self._where(namespace, kinds, tags, category)
        sql = f"SELECT p.record FROM procedures p{where} ORDER BY p.rowid"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [int(limit), int(offset)]
        elif offset:
            sql += " LIMIT -1 OFFSET ?"
            params.append(int(offset))
        return [read_record(Procedure, r["record"], source=repr(self.path)) for r in self._read(sql, params)]

    def count(self, *, namespace: str | None = None) -> int:
        """Number of procedures (in a namespace, or in all)."""
        where, params = self._where(namespace, None, None)
        return int(self._read(f"SELECT count(*) FROM procedures p{where}", params)[0][0])

    def namespaces(self) -> list[str]:
        """Return the namespaces that hold procedures."""
        return [r[0] for r in self._read("SELECT DISTINCT namespace FROM procedures ORDER BY 1")]

    def _rewrite_record(self, cur: sqlite3.Cursor, rec: Procedure) -> None:
        cur.execute("UPDATE procedures SET record = ? WHERE id = ?", (rec.model_dump_json(), rec.id))

    def _load_for_update(self, cur: sqlite3.Cursor, procedure_id: str) -> Procedure:
        row = cur.execute("SELECT record FROM procedures WHERE id = ?", (procedure_id,)).fetchone()
        if row is None:
            raise ProcedureNotFoundError(f"no procedure with id {procedure_id!r}")
        return read_record(Procedure, row["record"], source=repr(self.path))

    def update_counters(
        self,
        procedure_id: str,
        *,
        access_count: int | None = None,
        last_accessed: Any = None,
        importance: float | None = None,
        metadata: dict[str, Any] | None = None,
        stats: Any = None,
    ) -> Procedure:
        """Update usage counters in place; see :meth:`ProcedureStore.update_counters`."""
        with self._tx() as cur:
            rec = self._load_for_update(cur, procedure_id)
            rec = with_counters(
                rec,
                access_count=access_count,
                last_accessed=last_accessed,
                importance=importance,
                metadata=metadata,
                stats=stats,
            )
            self._rewrite_record(cur, rec)
        return rec

    def touch(self, procedure_ids: Sequence[str]) -> None:
        """Count one access for each procedure."""
        if not procedure_ids:
            return
        now = utcnow()
        with self._tx(procedures=False) as cur:
            for pid in dict.fromkeys(procedure_ids):
                row = cur.execute("SELECT record FROM procedures WHERE id = ?", (pid,)).fetchone()
                if row is None:
                    continue
                rec = read_record(Procedure, row["record"], source=repr(self.path))
                rec = rec.model_copy(update={"access_count": rec.access_count + 1, "last_accessed": now})
                self._rewrite_record(cur, rec)

    def delete(self, procedure_id: str) -> bool:
        """Delete a procedure and everything attached to it."""
        with self._tx() as cur:
            row = cur.execute("SELECT rowid FROM procedures WHERE id = ?", (procedure_id,)).fetchone()
            if row is None:
                return False
            self._delete_rows(cur, [(row["rowid"], procedure_id)])
        return True

    def _delete_rows(self, cur: sqlite3.Cursor, rows: Sequence[tuple[int, str]]) -> None:
        self._lexical_write("remove", [rowid for rowid, _ in rows])
        for rowid, pid in rows:
            cur.execute("DELETE FROM procedures_fts WHERE rowid = ?", (rowid,))
            cur.execute("DELETE FROM procedure_tags WHERE procedure_rowid = ?", (rowid,))
            cur.execute("DELETE FROM procedures WHERE rowid = ?", (rowid,))
            cur.execute("DELETE FROM versions WHERE procedure_id = ?", (pid,))
            cur.execute("DELETE FROM usages WHERE procedure_id = ?", (pid,))
            cur.execute("DELETE FROM outcomes WHERE procedure_id = ?", (pid,))
        if self._vectors is not None:
            self._indexes_touched = True
            self._vectors.remove([pid for _, pid in rows])
        self._drop_vector_caches(procedures=False)

    def clear(self, namespace: str) -> int:
        """Delete everything in one namespace; see :meth:`ProcedureStore.clear`."""
        if not isinstance(namespace, str) or not namespace:
            raise ConfigurationError(f"clear needs a namespace (a non-empty str), got {namespace!r}")
        with self._tx() as cur:
            rows = [
                (r["rowid"], r["id"])
                for r in cur.execute("SELECT rowid, id FROM procedures WHERE namespace = ?", (namespace,))
            ]
            self._delete_rows(cur, rows)
            cur.execute("DELETE FROM usages WHERE namespace = ?", (namespace,))
            cur.execute("DELETE FROM sessions WHERE namespace = ?", (namespace,))
        return len(rows)

    def versions(self, procedure_id: str) -> list[ProcedureVersion]:
        """Return the kept versions, oldest first."""
        rows = self._read(
            "SELECT version, record, note, created_at FROM versions WHERE procedure_id = ? ORDER BY version",
            (procedure_id,),
        )
        if not rows:
            self.get(procedure_id)  # raises ProcedureNotFoundError
        return [
            ProcedureVersion(
                procedure_id=procedure_id,
                version=r["version"],
                procedure=read_record(Procedure, r["record"], source=repr(self.path)),
                note=r["note"],
                created_at=datetime.fromisoformat(r["created_at"]),
            )
            for r in rows
        ]

    def get_embeddings(self, procedure_ids: Sequence[str]) -> np.ndarray:
        """Return ``(n, dim)`` vectors of the procedures (zero rows where none)."""
        return self._proc_index().get(list(procedure_ids))

    # ------------------------------------------------------------------ search
    def vector_search(
        self,
        vector: np.ndarray,
        *,
        k: int = 10,
        namespace: str | None = None,
        kinds: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
    ) -> list[tuple[str, float]]:
        """Cosine search (exact scan, or HNSW candidates re-scored exactly from ``ann_min_rows`` on)."""
        index = self._proc_index()
        codes = self._filter_codes(namespace, kinds)
        if codes == []:
            return []
        # The scan holds only the index's own lock, so a lexical search can run meanwhile.
        return index.search(vector, k, codes=codes, tags=list(tags) if tags else None)

    def _filter_codes(self, namespace: str | None, kinds: Sequence[str] | None) -> list[int] | None:
        """The row codes a namespace and kind filter selects (None: no filter; empty: nothing).

        Namespace and kind filters are integer codes per row: no SQL, one masked scan.
        """
        if namespace is None and not kinds:
            return None
        with self._lock:
            spaces = [namespace] if namespace is not None else list(self._ns_codes)
            wanted = [getattr(kd, "value", kd) for kd in kinds] if kinds else list(_KINDS)
            return [self._code(ns, kd) for ns in spaces if ns in self._ns_codes for kd in wanted if kd in _KINDS]

    def mean_embedding(self, *, namespace: str | None = None) -> np.ndarray | None:
        """The mean of the procedure embeddings (in a namespace), from the in-memory vectors."""
        index = self._proc_index()
        codes = self._filter_codes(namespace, None)
        return None if codes == [] else index.mean(codes=codes)

    def _fts_stats(self) -> tuple[dict[str, int], int]:
        """The cached document frequencies of query words, and the number of procedures.

        Both are counted by FTS5 (a word's frequency is the number of rows its quoted phrase
        matches, as ``bm25()`` counts it) and reused for ``_DF_TTL`` seconds.
        """
        now = time.monotonic()
        with self._df_lock:
            if now - self._df_since > _DF_TTL or len(self._df) > 100_000:
                self._df, self._df_rows, self._df_since = {}, -1, now
            df, rows = self._df, self._df_rows
        if rows < 0:
            rows = int(self._read("SELECT count(*) FROM procedures_fts_docsize", side=True)[0][0])
            with self._df_lock:
                if self._df is df:
                    self._df_rows = rows
        return df, rows

    def _common_words(self, words: Sequence[str]) -> set[str]:
        """The words among ``words`` that occur in at least half the procedures (FTS5 idf <= 0).

        Empty below ``_PRUNE_MIN_ROWS`` procedures; see :func:`_common`.
        """
        df, rows = self._fts_stats()
        if rows < _PRUNE_MIN_ROWS:
            return set()
        missing = [w for w in words if w not in df]
        if missing:
            count = "SELECT ?, count(*) FROM procedures_fts WHERE procedures_fts MATCH ?"
            found = self._read(" UNION ALL ".join([count] * len(missing)),
                               [x for w in missing for x in (w, f'"{w}"')], side=True)
            df.update((r[0], int(r[1])) for r in found)
        return _common(words, df, rows)

    # ------------------------------------------------------------------ tantivy index
    def _drop_lexical(self) -> None:
        """Forget the tantivy index and abandon a build in progress (called under the lock)."""
        self._lexical = None
        self._lexical_queue = None
        self._lexical_generation += 1

    def _lexical_write(self, op: str, payload: Sequence[Any]) -> None:
        """Apply a committed write (``"upsert"`` rows or ``"remove"`` rowids) to the tantivy index.

        Called inside the write's transaction, under the store's lock; a build in progress
        queues it and replays it when its rows are in.
        """
        if not payload:
            return
        self._indexes_touched = True
        if self._lexical is not None:
            if op == "upsert":
                self._lexical.upsert(payload)
            else:
                self._lexical.remove(payload)
        elif self._lexical_queue is not None:
            self._lexical_queue.append((op, payload))

    def _lexical_index(self) -> LexicalIndex | None:
        """The tantivy index when it serves searches; starts its build when the store is large enough.

        Never waits for a write in progress (nor do FTS5 searches): another process's writes are
        looked for only when the store's lock is free. A store of at most
        ``_LEXICAL_BUILD_CHUNK`` procedures builds at once, larger ones on a background thread.
        """
        if self.lexical_min_rows is None:
            return None
        if self._lexical is not None or self._lexical_queue is not None:
            if self._lock.acquire(blocking=False):  # may drop the index (another process wrote)
                try:
                    self._refresh()
                finally:
                    self._lock.release()
            if self._lexical is not None or self._lexical_queue is not None:
                return self._lexical
        rows = self._fts_stats()[1]
        if rows < self.lexical_min_rows or not tantivy_available() or not self._lock.acquire(blocking=False):
            return None
        try:
            if self._lexical is not None or self._lexical_queue is not None:
                return self._lexical
            self._lexical_queue = []
            generation = self._lexical_generation
        finally:
            self._lock.release()
        if rows <= _LEXICAL_BUILD_CHUNK:
            self._build_lexical(generation)
            return self._lexical
        thread = threading.Thread(target=self._build_lexical, args=(generation,), name="procmem-lexical-build",
                                  daemon=True)
        self._lexical_thread = thread
        with _lexical_builds_lock:
            _lexical_builds[thread] = self
        thread.start()
        return None

    def wait_for_lexical(self, timeout: float | None = None) -> bool:
        """Start the tantivy index's build if the store is large enough, and wait for it.

        Searches never need this (FTS5 answers until the index is ready).

        Args:
            timeout: Seconds to wait at most (None: no limit).

        Returns:
            Whether lexical search now goes through the tantivy index (False below
            ``lexical_min_rows`` procedures, or without the ``lexical`` extra).
        """
        self._lexical_index()
        thread = self._lexical_thread
        if thread is not None:
            thread.join(timeout)
        return self._lexical_index() is not None

    def _build_lexical(self, generation: int) -> None:
        """Build the tantivy index from the FTS5 rows, in chunks (runs on a background thread)."""
        try:
            index = LexicalIndex()
            last = 0
            while generation == self._lexical_generation:
                rows = self._read(
                    "SELECT f.rowid, p.namespace, p.kind, f.name, f.description, f.triggers, f.steps, f.tags,"
                    " (SELECT group_concat(tag, char(31)) FROM procedure_tags t WHERE t.procedure_rowid = f.rowid)"
                    " FROM procedures_fts f JOIN procedures p ON p.rowid = f.rowid WHERE f.rowid > ?"
                    " ORDER BY f.rowid LIMIT ?",
                    (last, _LEXICAL_BUILD_CHUNK),
                    side=True,
                )
                if not rows:
                    break
                last = rows[-1][0]
                index.upsert(((r[0], r[1], r[2], r[8].split("\x1f") if r[8] else [], tuple(r[3:8])) for r in rows),
                             new=True)
            with self._lock:
                if generation != self._lexical_generation or self._lexical_queue is None:
                    return
                # Writes committed since the build began, in order: rows read after such a
                # write already hold it, and replaying it again is harmless.
                for op, payload in self._lexical_queue:
                    if op == "upsert":
                        index.upsert(payload)
                    else:
                        index.remove(payload)
                index.commit()
                self._lexical, self._lexical_queue = index, None
        except Exception:  # noqa: BLE001 - a failed build leaves FTS5 answering; say why
            _log.exception("building the tantivy lexical index of %s failed; FTS5 keeps answering", self.path)
            with self._lock:
                if generation == self._lexical_generation:
                    self._lexical_queue = None
                    self.lexical_min_rows = None
        finally:
            with _lexical_builds_lock:
                _lexical_builds.pop(threading.current_thread(), None)

    def lexical_search(
        self,
        text: str,
        *,
        k: int = 10,
        namespace: str | None = None,
        kinds: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
    ) -> list[tuple[str, float]]:
        """BM25 search over name, description, triggers, steps and tags (FTS5).

        Words in at least half the procedures are left out of the query (see the module notes).
        """
        words = _fts_words(text)
        if not words:
            return []
        index = self._lexical_index()
        if index is not None:
            return self._tantivy_search(index, words, k, namespace, kinds, tags)
        common = self._common_words(words)
        query = _fts_or([w for w in words if w not in common])
        weights = "bm25(procedures_fts, 4.0, 1.0, 2.0, 1.0, 2.0)"
        if namespace is None and not kinds and not tags:
            # Rank inside FTS first, then join only the top k (2x faster at 100k procedures).
            rows = self._read(
                f"SELECT p.id, s.score FROM (SELECT rowid, {weights} AS score FROM procedures_fts"
                " WHERE procedures_fts MATCH ? ORDER BY score LIMIT ?) s"
                " JOIN procedures p ON p.rowid = s.rowid ORDER BY s.score",
                [query, int(k)],
                side=True,
            )
            return [(r["id"], -float(r["score"])) for r in rows]
        where, params = self._where(namespace, kinds, tags)
        where = where.replace(" WHERE ", " AND ", 1)
        rows = self._read(
            f"SELECT p.id, {weights} AS score FROM procedures_fts"
            f" JOIN procedures p ON p.rowid = procedures_fts.rowid WHERE procedures_fts MATCH ?{where}"
            " ORDER BY score LIMIT ?",
            [query, *params, int(k)],
            side=True,
        )
        return [(r["id"], -float(r["score"])) for r in rows]

    def _tantivy_search(
        self,
        index: LexicalIndex,
        words: Sequence[str],
        k: int,
        namespace: str | None,
        kinds: Sequence[str] | None,
        tags: Sequence[str] | None,
    ) -> list[tuple[str, float]]:
        terms = index.terms(" ".join(words))
        rows = len(index)
        if rows >= _PRUNE_MIN_ROWS:
            common = _common(terms, {t: index.doc_freq(t) for t in terms}, rows)
            terms = [t for t in terms if t not in common]
        hits = index.search(terms, k, namespace=namespace, kinds=[getattr(kd, "value", kd) for kd in kinds or ()],
                            tags=tags)
        if not hits:
            return []
        found = self._read(f"SELECT rowid, id FROM procedures WHERE rowid IN ({','.join('?' * len(hits))})",
                           [r for r, _ in hits], side=True)
        ids = {r[0]: r[1] for r in found}
        return [(ids[r], score) for r, score in hits if r in ids]

    # ------------------------------------------------------------------ usages, outcomes
    def add_usages(self, usages: Sequence[Usage], embeddings: np.ndarray) -> None:
        """Store past requests with their query embeddings."""
        usages = list(usages)
        if not usages:
            return
        with self._tx(procedures=False) as cur:
            vecs = self._ensure_dim(cur, embeddings, len(usages))
            new_rows = []
            for u, v in zip(usages, vecs, strict=True):
                cur.execute(
                    "INSERT INTO usages (namespace, query, procedure_id, success, timestamp, embedding)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (u.namespace, u.query, u.procedure_id, int(u.success), u.timestamp.isoformat(), _blob(v)),
                )
                new_rows.append((str(cur.lastrowid), u, v))
            if self._usage_vectors is not None:
                self._indexes_touched = True
                self._usage_vectors.upsert(
                    [r[0] for r in new_rows],
                    np.stack([r[2] for r in new_rows]),
                    [self._ns_code(r[1].namespace) for r in new_rows],
                )
                for rid, u, _ in new_rows:
                    self._usage_rows[rid] = (
                        u.namespace,
                        u.query,
                        int(u.success),
                        u.procedure_id,
                        u.timestamp.isoformat(),
                    )

    def usage_search(
        self, vector: np.ndarray, *, k: int = 20, namespace: str | None = None
    ) -> list[tuple[Usage, float]]:
        """Return the most similar past requests; see :meth:`ProcedureStore.usage_search`."""
        index = self._usage_index()
        codes = None
        if namespace is not None:
            if namespace not in self._ns_codes:
                return []
            codes = [self._ns_codes[namespace]]
        with self._lock:
            hits = index.search(vector, k, codes=codes)
            out = []
            for rid, score in hits:
                ns, query, success, pid, ts = self._usage_rows[rid]
                out.append(
                    (
                        Usage(
                            query=query,
                            procedure_id=pid,
                            success=bool(success),
                            namespace=ns,
                            timestamp=datetime.fromisoformat(ts),
                        ),
                        score,
                    )
                )
        return out

    def reassign_usages(self, from_ids: Sequence[str], to_id: str) -> int:
        """Point the usages of ``from_ids`` at ``to_id``."""
        with self._tx() as cur:
            before = self._conn.total_changes
            cur.executemany("UPDATE usages SET procedure_id = ? WHERE procedure_id = ?", [(to_id, f) for f in from_ids])
            moved = self._conn.total_changes - before
        self._drop_vector_caches(procedures=False)
        return moved

    def count_usages(self, *, namespace: str | None = None) -> int:
        """Number of stored usages."""
        if namespace is None:
            return int(self._read("SELECT count(*) FROM usages")[0][0])
        return int(self._read("SELECT count(*) FROM usages WHERE namespace = ?", (namespace,))[0][0])

    def record_outcome(self, outcome: Outcome) -> Procedure:
        """Log an outcome and update the procedure's stats in one transaction."""
        with self._tx() as cur:
            rec = self._load_for_update(cur, outcome.procedure_id)
            stats = rec.stats.record(outcome.success, outcome.duration, outcome.timestamp)
            rec = rec.model_copy(update={"stats": stats})
            self._rewrite_record(cur, rec)
            cur.execute(
                "INSERT INTO outcomes (procedure_id, record) VALUES (?, ?)",
                (outcome.procedure_id, outcome.model_dump_json()),
            )
        return rec

    def outcomes(self, procedure_id: str, *, limit: int | None = None) -> list[Outcome]:
        """Return logged outcomes, newest first."""
        sql = "SELECT record FROM outcomes WHERE procedure_id = ? ORDER BY rowid DESC"
        params: list[Any] = [procedure_id]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return [read_record(Outcome, r["record"], source=repr(self.path)) for r in self._read(sql, params)]

    # ------------------------------------------------------------------ sessions
    def add_sessions(self, sessions: Sequence[SessionRecord]) -> int:
        """Append sessions, skipping ids already stored in their namespace."""
        sessions = list(sessions)
        if not sessions:
            return 0
        with self._tx(procedures=False) as cur:
            before = self._conn.total_changes
            cur.executemany(
                "INSERT OR IGNORE INTO sessions (namespace, session_id, record) VALUES (?, ?, ?)",
                [(s.namespace, s.session_id, s.model_dump_json()) for s in sessions],
            )
            return self._conn.total_changes - before

    def iter_sessions(self, *, namespace: str | None = None) -> Iterator[SessionRecord]:
        """Yield stored sessions in insertion order (read in pages of 1,000)."""
        last = 0
        while True:
            if namespace is None:
                rows = self._read(
                    "SELECT rowid, record FROM sessions WHERE rowid > ? ORDER BY rowid LIMIT 1000", (last,)
                )
            else:
                rows = self._read(
                    "SELECT rowid, record FROM sessions WHERE rowid > ? AND namespace = ? ORDER BY rowid LIMIT 1000",
                    (last, namespace),
                )
            if not rows:
                return
            for r in rows:
                yield read_record(SessionRecord, r["record"], source=repr(self.path))
            last = rows[-1]["rowid"]

    def count_sessions(self, *, namespace: str | None = None) -> int:
        """Number of stored sessions."""
        if namespace is None:
            return int(self._read("SELECT count(*) FROM sessions")[0][0])
        return int(self._read("SELECT count(*) FROM sessions WHERE namespace = ?", (namespace,))[0][0])

    def has_session(self, session_id: str, *, namespace: str = "default") -> bool:
        """Whether the session is stored."""
        return bool(
            self._read("SELECT 1 FROM sessions WHERE namespace = ? AND session_id = ?", (namespace, session_id))
        )

    def integrity_check(self) -> str:
        """Run SQLite's ``PRAGMA integrity_check``; returns ``"ok"`` when the file is sound."""
        return str(self._read("PRAGMA integrity_check")[0][0])


def _fts_words(text: str) -> list[str]:
    """The distinct lower-cased words of ``text`` (at most 64), in order."""
    return list(dict.fromkeys(w.lower() for w in _FTS_TOKEN.findall(text)))[:64]


def _common(words: Sequence[str], df: dict[str, int], rows: int) -> set[str]:
    """The words among ``words`` whose document frequency ``df[w]`` is at least half of ``rows``.

    Never every word that occurs: the rarest of those stays in the query.
    """
    present = [w for w in words if df[w] > 0]
    common = {w for w in present if 2 * df[w] >= rows}
    if common and len(common) == len(present):
        common.discard(min(present, key=lambda w: df[w]))
    return common


def _fts_or(words: Sequence[str]) -> str:
    """An FTS5 query matching any of ``words`` (each quoted: a phrase, never an operator)."""
    return " OR ".join(f'"{w}"' for w in words)


def _category(p: Procedure) -> str | None:
    cat = p.metadata.get("category")
    return None if cat is None else str(cat)
