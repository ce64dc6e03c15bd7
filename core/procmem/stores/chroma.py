"""The Chroma backend: procedures, versions, usages, outcomes and sessions in Chroma collections.

One store is six collections named ``<prefix>_<name>``:

=============  ==========================  ===============================================
collection     vector                      record
=============  ==========================  ===============================================
procedures     the procedure's embedding   document: its lower-cased words;
                                           metadata: namespace, kind, category, version,
                                           tags (a string array), record (JSON), ...
versions       dummy ``[1.0]``             metadata: procedure_id, version, note, record
usages         the request's embedding     metadata: namespace, query, procedure_id, ...
outcomes       dummy ``[1.0]``             metadata: procedure_id, seq, record
sessions       dummy ``[1.0]``             metadata: namespace, session_id, seq, record
meta           dummy ``[1.0]``             one record: embedding dim and model, BM25 stats
=============  ==========================  ===============================================

Chroma requires an embedding for every record and has no way to store a record without one, so
the collections that are not searched by vector hold the fixed one-dimensional vector ``[1.0]``
(cheap to index, never queried). A procedure inserted without an embedding gets a placeholder
vector and ``has_vec = False``, which vector search filters out.

Every collection is created with ``embedding_function=None`` (Chroma never downloads or runs its
default model: procmem always passes its own vectors) and cosine space.

**Lexical search.** Chroma's local server has no BM25 (its sparse-vector ``Search`` API runs
only on distributed and hosted Chroma), so :meth:`ChromaStore.lexical_search` lists the ids of
the documents that contain a query word (``where_document`` ``$contains " word "``; documents
are stored as their lower-cased words between single spaces, so this matches whole words),
then reads and ranks them with Okapi BM25 (Robertson & Zaragoza, "The Probabilistic Relevance
Framework: BM25 and Beyond", 2009; ``k1 = 1.2``, ``b = 0.75``, the non-negative idf
``ln(1 + (N - df + 0.5) / (df + 0.5))``). Document frequencies are exact up to
``max_lexical_candidates`` and, as in SQLite FTS5, counted over the whole collection even when
a filter narrows the ranking; ``N`` is the collection's count; the mean document length comes
from a stats record in the ``meta`` collection, updated by each write (concurrent writers in
several processes may let it drift slightly, which only changes length normalisation;
:meth:`ChromaStore.rebuild_stats` recomputes it). Reading documents is the slow part, so
candidates are read in order of an upper bound on their score, and reading stops when no unread
candidate can enter the top k (MaxScore; Turtle & Flood, "Query evaluation: strategies and
optimizations", 1995): a common word no longer means reading every document that contains it,
and the ranking is the same as scoring them all. Unlike the SQLite store, words are not
stemmed and fields are not weighted.

**Writes.** Chroma has no transaction spanning collections. Inputs are validated (shapes,
dimensions, finiteness) before anything is written, so a refused write changes nothing. Writes
are ordered so that a crash between two of them never leaves a procedure without its version:
``put`` writes the versions first and the current records second; a crash in between leaves a
version newer than the current record, which the next write of that id overwrites. ``delete``
removes the current record first, so a crash leaves invisible leftovers rather than a half-
deleted procedure. ``record_outcome`` appends the outcome, then updates the statistics.
Read-modify-write operations (``record_outcome``, ``touch``, ``update_counters``) are serialised
within one process; two processes updating the same procedure's counters at once may lose one
update (use the SQLite store, or one writer process, when counters must be exact).
"""

from __future__ import annotations

import hashlib
import heapq
import math
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from procmem.errors import (
    ConfigurationError,
    EmbeddingDimensionError,
    InvalidProcedureError,
    ProcedureNotFoundError,
    ProcMemError,
    VectorStoreError,
)
from procmem.stores.base import ProcedureStore, read_record, with_counters
from procmem.types import Outcome, Procedure, ProcedureVersion, SessionRecord, Usage, utcnow

__all__ = ["BM25_B", "BM25_K1", "ChromaStore"]

BM25_K1 = 1.2
"""BM25 term-frequency saturation (Robertson & Zaragoza 2009)."""
BM25_B = 0.75
"""BM25 length normalisation (Robertson & Zaragoza 2009)."""

_DUMMY = [1.0]
_META_ID = "meta"
_TOKEN = re.compile(r"\w+", re.UNICODE)
_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,400}$")
_COLLECTIONS = ("procedures", "versions", "usages", "outcomes", "sessions", "meta")
_PAGE = 5000
#: A centroid over at least this many vectors is reused for up to ``_MEAN_TTL`` seconds after
#: the collection changes: recomputing it reads every vector.
_MEAN_LARGE = 1_000
_MEAN_TTL = 30.0


def _default_path() -> Path:
    from platformdirs import user_data_dir

    return Path(user_data_dir("procmem", appauthor=False)) / "chroma"


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def _document(p: Procedure) -> str:
    """Searchable text: the lower-cased words of name, description, triggers, steps and tags.

    Words are joined by single spaces with a space at both ends, so ``$contains " word "``
    matches whole words only.
    """
    parts = [p.name.replace("_", " "), p.description, *p.triggers, *(s.action for s in p.steps), *p.tags]
    return " " + " ".join(_tokens(" ".join(parts))) + " "


def _contains(term: str) -> dict[str, str]:
    return {"$contains": f" {term} "}


def _version_id(procedure_id: str, version: int) -> str:
    return f"{procedure_id}@v{version}"


def _session_key(namespace: str, session_id: str) -> str:
    return hashlib.sha256(f"{namespace}\x00{session_id}".encode()).hexdigest()


def _and(clauses: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _where(
    namespace: str | None = None,
    kinds: Sequence[str] | None = None,
    tags: Sequence[str] | None = None,
    category: str | None = None,
    *,
    vectors_only: bool = False,
) -> dict[str, Any] | None:
    clauses: list[dict[str, Any]] = []
    if namespace is not None:
        clauses.append({"namespace": namespace})
    if kinds:
        values = [str(getattr(k, "value", k)) for k in kinds]
        clauses.append({"kind": {"$in": values}})
    if category is not None:
        clauses.append({"category": category})
    for tag in tags or ():
        clauses.append({"tags": {"$contains": tag}})
    if vectors_only:
        clauses.append({"has_vec": True})
    return _and(clauses)


def _keep(
    namespace: str | None = None,
    kinds: Sequence[str] | None = None,
    tags: Sequence[str] | None = None,
    *,
    vectors_only: bool = False,
) -> Callable[[dict[str, Any]], bool]:
    """The Python twin of :func:`_where`: whether a procedure's metadata passes the filters."""
    kind_set = None if not kinds else {str(getattr(x, "value", x)) for x in kinds}
    tag_list = list(tags or ())

    def keep(m: dict[str, Any]) -> bool:
        return (
            (not vectors_only or bool(m.get("has_vec")))
            and (namespace is None or m.get("namespace") == namespace)
            and (kind_set is None or m.get("kind") in kind_set)
            and all(t in (m.get("tags") or ()) for t in tag_list)
        )

    return keep


class ChromaStore(ProcedureStore):
    """Procedures in Chroma: embedded (a local directory) or client/server (a Chroma server).

    Give exactly one of ``path``, ``host`` or ``client``; with none, the store opens the default
    directory under the platform data dir (e.g. ``~/.local/share/procmem/chroma``).

    Args:
        path: Directory of an embedded ``chromadb.PersistentClient`` (created if absent).
        host: Host name of a Chroma server (``chroma run``); used with ``port``.
        port: TCP port of the Chroma server.
        client: An existing Chroma client (``PersistentClient``, ``HttpClient``, ``EphemeralClient``).
        prefix: Prefix of the collection names (several stores can share one server); 1-400
            characters from ``[A-Za-z0-9._-]``, starting with a letter or digit.
        max_versions: Versions kept per procedure (None keeps all).
        embedding_model: Name of the model whose vectors this store holds; recorded on first
            write, and a different name later raises :class:`ConfigurationError`.
        ssl: Use HTTPS to reach the server.
        headers: Extra HTTP headers for the server (e.g. an auth token).
        hnsw: Extra HNSW options of new collections (``ef_search``, ``ef_construction``,
            ``max_neighbors``); the space is always cosine.
        max_lexical_candidates: Most documents listed per word of a lexical search; a word that
            occurs in more documents counts as occurring in this many (its document frequency
            is capped) and only the first this many are ranked.

    Raises:
        ConfigurationError: Invalid or conflicting options, or another embedding model.
        ImportError: chromadb is not installed (names the ``procmem[chroma]`` extra).
        VectorStoreError: The server cannot be reached or a collection cannot be opened.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        host: str | None = None,
        port: int = 8000,
        client: Any = None,
        prefix: str = "procmem",
        max_versions: int | None = None,
        embedding_model: str | None = None,
        ssl: bool = False,
        headers: dict[str, str] | None = None,
        hnsw: dict[str, Any] | None = None,
        max_lexical_candidates: int = 50_000,
    ) -> None:
        if sum(x is not None for x in (path, host, client)) > 1:
            raise ConfigurationError("give only one of path, host or client")
        if max_versions is not None and (not isinstance(max_versions, int) or max_versions < 1):
            raise ConfigurationError(f"max_versions must be None or an int >= 1, got {max_versions!r}")
        if not isinstance(prefix, str) or not _PREFIX.match(prefix) or not prefix[-1].isalnum():
            raise ConfigurationError(
                f"prefix must be 1-400 characters from [A-Za-z0-9._-], starting and ending with a letter or digit,"
                f" got {prefix!r}"
            )
        if not isinstance(max_lexical_candidates, int) or max_lexical_candidates < 1:
            raise ConfigurationError(f"max_lexical_candidates must be an int >= 1, got {max_lexical_candidates!r}")
        try:
            import chromadb
            from chromadb.config import Settings
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("ChromaStore needs chromadb: pip install 'procmem[chroma]'") from exc

        self.max_versions = max_versions
        self.prefix = prefix
        self.max_lexical_candidates = max_lexical_candidates
        self._embedding_model = embedding_model
        self._lock = threading.RLock()
        self._seq_lock = threading.Lock()
        self._last_seq = 0
        self._dim: int | None = None
        # namespace -> (collection size, time, centroid, vectors in it); see mean_embedding.
        self._means: dict[str | None, tuple[int, float, np.ndarray | None, int]] = {}
        settings = Settings(anonymized_telemetry=False)
        if client is not None:
            self._client = client
            self.location = f"client {type(client).__name__}"
            self.path: str | None = None
        elif host is not None:
            self.location = f"{'https' if ssl else 'http'}://{host}:{port}"
            self.path = None
            try:
                self._client = chromadb.HttpClient(
                    host=host, port=int(port), ssl=ssl, headers=headers or {}, settings=settings
                )
            except Exception as exc:
                raise VectorStoreError(f"cannot reach the Chroma server at {self.location}: {exc}") from exc
        else:
            target = Path(path) if path is not None else _default_path()
            target.mkdir(parents=True, exist_ok=True)
            self.path = str(target)
            self.location = self.path
            try:
                self._client = chromadb.PersistentClient(path=self.path, settings=settings)
            except Exception as exc:
                raise VectorStoreError(f"cannot open the Chroma directory {self.path!r}: {exc}") from exc
        configuration = {"hnsw": {**(hnsw or {}), "space": "cosine"}}
        self._cols: dict[str, Any] = {}
        with self._op("open collections"):
            self._batch = int(self._client.get_max_batch_size())
            for name in _COLLECTIONS:
                self._cols[name] = self._client.get_or_create_collection(
                    f"{prefix}_{name}", embedding_function=None, configuration=configuration
                )
        meta = self._meta()
        if embedding_model is not None and meta.get("embedding_model") not in (None, embedding_model):
            raise ConfigurationError(
                f"this store holds vectors of embedding model {meta['embedding_model']!r}, "
                f"not {embedding_model!r}; open it with the same embedder or re-embed"
            )
        if meta.get("embedding_dim") is not None:
            self._dim = int(meta["embedding_dim"])

    # ------------------------------------------------------------------ plumbing
    @contextmanager
    def _op(self, operation: str) -> Iterator[None]:
        """Wrap Chroma failures in :class:`VectorStoreError` naming the operation."""
        try:
            yield
        except ProcMemError:
            raise
        except Exception as exc:
            text = str(exc)
            if "expecting embedding with dimension" in text:
                raise EmbeddingDimensionError(f"Chroma {operation}: {text}") from exc
            raise VectorStoreError(
                f"Chroma {operation} failed on {self.location}: {type(exc).__name__}: {text}"
            ) from exc

    def _col(self, name: str) -> Any:
        return self._cols[name]

    @property
    def _source(self) -> str:
        """This store in error messages."""
        return f"Chroma store {self.prefix!r} at {self.location}"

    def _chunks(self, items: Sequence[Any], size: int | None = None) -> Iterator[Sequence[Any]]:
        size = size or self._batch
        for start in range(0, len(items), size):
            yield items[start : start + size]

    def _seq(self, n: int = 1) -> int:
        """Return the first of ``n`` increasing sequence numbers (nanoseconds since the epoch)."""
        with self._seq_lock:
            first = max(time.time_ns(), self._last_seq + 1)
            self._last_seq = first + n - 1
            return first

    def _get_all(
        self, collection: str, *, where: dict[str, Any] | None = None, include: Sequence[str] = (), operation: str
    ) -> dict[str, list[Any]]:
        """Read every matching record in pages; returns ``{"ids": [...], <include>: [...]}``."""
        out: dict[str, list[Any]] = {"ids": [], **{k: [] for k in include}}
        col = self._col(collection)
        offset = 0
        with self._op(operation):
            while True:
                page = col.get(where=where, include=list(include), limit=_PAGE, offset=offset)
                out["ids"].extend(page["ids"])
                for k in include:
                    values = page.get(k)
                    out[k].extend(list(values) if values is not None else [None] * len(page["ids"]))
                if len(page["ids"]) < _PAGE:
                    return out
                offset += _PAGE

    def _get_ids(
        self, collection: str, ids: Sequence[str], include: Sequence[str], operation: str
    ) -> dict[str, dict[str, Any]]:
        """Read records by id; returns ``{id: {<include>: value}}`` for those that exist."""
        out: dict[str, dict[str, Any]] = {}
        col = self._col(collection)
        unique = list(dict.fromkeys(ids))
        with self._op(operation):
            for chunk in self._chunks(unique):
                page = col.get(ids=list(chunk), include=list(include))
                for i, rid in enumerate(page["ids"]):
                    out[rid] = {k: (page[k][i] if page.get(k) is not None else None) for k in include}
        return out

    def _meta(self) -> dict[str, Any]:
        got = self._get_ids("meta", [_META_ID], ["metadatas"], "read meta")
        return dict(got[_META_ID]["metadatas"] or {}) if got else {}

    def _write_meta(self, **values: Any) -> None:
        with self._op("write meta"):
            self._col("meta").upsert(ids=[_META_ID], embeddings=[_DUMMY], metadatas=[values])

    def drop(self) -> None:
        """Delete this store's collections from Chroma (everything under its prefix)."""
        with self._op("drop collections"):
            for name in _COLLECTIONS:
                try:
                    self._client.delete_collection(f"{self.prefix}_{name}")
                except Exception as exc:  # a collection already gone is fine
                    if "does not exist" not in str(exc):
                        raise

    # ------------------------------------------------------------------ vectors
    def _check_vectors(self, vectors: np.ndarray, n: int) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != n:
            raise EmbeddingDimensionError(f"embeddings must have shape ({n}, dim), got {tuple(vectors.shape)}")
        if not np.all(np.isfinite(vectors)):
            raise EmbeddingDimensionError("embeddings contain NaN or infinite values")
        if self._dim is None:
            stored = self._meta().get("embedding_dim")
            self._dim = None if stored is None else int(stored)
        if self._dim is not None and vectors.shape[1] != self._dim:
            raise EmbeddingDimensionError(
                f"embeddings have dimension {vectors.shape[1]} but this store holds dimension {self._dim}"
            )
        return vectors

    def _claim_dim(self, dim: int) -> None:
        """Record the embedding dimension (and model) on the first write of vectors."""
        if self._dim is not None:
            return
        meta = self._meta()
        if meta.get("embedding_dim") is not None:
            self._dim = int(meta["embedding_dim"])
            if self._dim != dim:
                raise EmbeddingDimensionError(
                    f"embeddings have dimension {dim} but this store holds dimension {self._dim}"
                )
            return
        meta["embedding_dim"] = int(dim)
        if self._embedding_model:
            meta["embedding_model"] = self._embedding_model
        self._write_meta(**meta)
        self._dim = int(dim)

    def _adjust_stats(self, delta_len: int) -> None:
        if not delta_len:
            return
        meta = self._meta()
        meta["bm25_total_len"] = max(0, int(meta.get("bm25_total_len", 0)) + int(delta_len))
        self._write_meta(**meta)

    def rebuild_stats(self) -> int:
        """Recompute the BM25 corpus statistics from the stored documents.

        Returns:
            The total number of tokens in all procedure documents.
        """
        with self._lock:
            docs = self._get_all("procedures", include=["documents"], operation="rebuild stats")
            total = sum(len(_tokens(d or "")) for d in docs["documents"])
            meta = self._meta()
            meta["bm25_total_len"] = total
            self._write_meta(**meta)
            return total

    # ------------------------------------------------------------------ procedures
    @staticmethod
    def _metadata(rec: Procedure, *, has_vec: bool, seq: int, doclen: int) -> dict[str, Any]:
        cat = rec.metadata.get("category")
        return {
            "namespace": rec.namespace,
            "kind": rec.kind.value,
            "category": None if cat is None else str(cat),
            "version": rec.version,
            "tags": list(dict.fromkeys(rec.tags)) or None,  # Chroma refuses empty arrays
            "has_vec": has_vec,
            "seq": seq,
            "doclen": doclen,
            "record": rec.model_dump_json(),
        }

    def put(
        self,
        procedures: Sequence[Procedure],
        embeddings: np.ndarray | None = None,
        *,
        note: str = "",
        replace_counters: bool = False,
    ) -> list[Procedure]:
        """Insert or update procedures; see :meth:`ProcedureStore.put` and the module notes on order.

        Counters of an existing procedure are taken from the stored record read at the start of
        the write (under this process's lock; another process's outcome recorded between that
        read and the write can be lost, see the module notes), unless ``replace_counters``.

        Raises:
            InvalidProcedureError: An id already belongs to another namespace; nothing written.
            EmbeddingDimensionError: The vectors have the wrong shape or dimension; nothing written.
            VectorStoreError: Chroma failed; versions may have been written without their record.
        """
        procedures = list(procedures)
        if not procedures:
            return []
        with self._lock:
            vecs = None if embeddings is None else self._check_vectors(embeddings, len(procedures))
            ids = [p.id for p in procedures]
            old = self._get_ids("procedures", ids, ["metadatas", "embeddings"], "read procedures")
            if vecs is None and self._dim is None and any(i not in old for i in ids):
                raise EmbeddingDimensionError(
                    "the first procedures written to an empty Chroma store need embeddings (its dimension is unknown)"
                )
            now = utcnow()
            state: dict[str, dict[str, Any]] = {}
            for pid, row in old.items():
                meta = row["metadatas"] or {}
                emb = row["embeddings"]
                stored_rec = read_record(Procedure, meta["record"], source=self._source)
                state[pid] = {
                    "record": stored_rec,
                    "version": int(meta.get("version", 0)),
                    "created_at": stored_rec.created_at,
                    "seq": int(meta.get("seq", 0)),
                    "has_vec": bool(meta.get("has_vec", False)),
                    "doclen": int(meta.get("doclen", 0)),
                    "vector": None if emb is None else np.asarray(emb, dtype=np.float32),
                }
            for proc in procedures:
                prev = state.get(proc.id)
                if prev is not None and prev["record"].namespace != proc.namespace:
                    raise InvalidProcedureError(
                        f"procedure id {proc.id!r} already belongs to namespace {prev['record'].namespace!r}; "
                        f"a write from namespace {proc.namespace!r} cannot replace it",
                        field="id",
                        value=proc.id,
                    )
            first_seq = self._seq(len(procedures))
            stored: list[Procedure] = []
            version_rows: list[tuple[str, dict[str, Any]]] = []
            rows: dict[str, tuple[list[float], str, dict[str, Any]]] = {}
            delta_len = 0
            for i, proc in enumerate(procedures):
                prev = state.get(proc.id)
                if prev is None:
                    rec = proc.model_copy(update={"version": 1, "updated_at": now})
                    version_note = note or "created"
                    seq, prev_len = first_seq + i, 0
                else:
                    update: dict[str, Any] = {
                        "version": prev["version"] + 1,
                        "updated_at": now,
                        "created_at": prev["created_at"],
                    }
                    if not replace_counters:  # counters are bookkeeping: keep the stored ones
                        update.update(
                            stats=prev["record"].stats,
                            access_count=prev["record"].access_count,
                            last_accessed=prev["record"].last_accessed,
                        )
                    rec = proc.model_copy(update=update)
                    version_note = note or "updated"
                    seq, prev_len = prev["seq"], prev["doclen"]
                rec = with_counters(rec)
                if vecs is not None:
                    vector, has_vec = vecs[i], True
                elif prev is not None and prev["vector"] is not None:
                    vector, has_vec = prev["vector"], prev["has_vec"]
                else:
                    vector = np.zeros(self._dim or 1, dtype=np.float32)
                    vector[0] = 1.0  # placeholder, filtered out of vector search
                    has_vec = False
                doc = _document(rec)
                doclen = len(_tokens(doc))
                delta_len += doclen - prev_len
                state[proc.id] = {
                    "record": rec,
                    "version": rec.version,
                    "created_at": rec.created_at,
                    "seq": seq,
                    "has_vec": has_vec,
                    "doclen": doclen,
                    "vector": vector,
                }
                version_rows.append(
                    (
                        _version_id(rec.id, rec.version),
                        {
                            "procedure_id": rec.id,
                            "namespace": rec.namespace,
                            "version": rec.version,
                            "note": version_note,
                            "created_at": now.isoformat(),
                            "record": rec.model_dump_json(),
                        },
                    )
                )
                rows[rec.id] = (
                    np.asarray(vector, dtype=np.float32).tolist(),
                    doc,
                    self._metadata(rec, has_vec=has_vec, seq=seq, doclen=doclen),
                )
                stored.append(rec)
            if vecs is not None:
                self._claim_dim(int(vecs.shape[1]))
            # 1. versions first: a crash after this leaves a version the next write overwrites.
            with self._op("write versions"):
                for chunk in self._chunks(version_rows):
                    self._col("versions").upsert(
                        ids=[r[0] for r in chunk], embeddings=[_DUMMY] * len(chunk), metadatas=[r[1] for r in chunk]
                    )
            # 2. the current records.
            items = list(rows.items())
            with self._op("write procedures"):
                for chunk in self._chunks(items):
                    self._col("procedures").upsert(
                        ids=[pid for pid, _ in chunk],
                        embeddings=[r[0] for _, r in chunk],
                        documents=[r[1] for _, r in chunk],
                        metadatas=[r[2] for _, r in chunk],
                    )
            # 3. trim old versions, then the corpus statistics.
            if self.max_versions is not None:
                with self._op("trim versions"):
                    for pid, st in state.items():
                        if pid in rows and st["version"] > self.max_versions:
                            self._col("versions").delete(
                                where={
                                    "$and": [
                                        {"procedure_id": pid},
                                        {"version": {"$lte": st["version"] - self.max_versions}},
                                    ]
                                }
                            )
            self._adjust_stats(delta_len)
        return stored

    def _record(self, meta: dict[str, Any] | None) -> Procedure:
        return read_record(Procedure, (meta or {})["record"], source=self._source)

    def get(self, procedure_id: str) -> Procedure:
        """Return the current version; see :meth:`ProcedureStore.get`."""
        got = self._get_ids("procedures", [procedure_id], ["metadatas"], "get procedure")
        if procedure_id not in got:
            raise ProcedureNotFoundError(f"no procedure with id {procedure_id!r}")
        return self._record(got[procedure_id]["metadatas"])

    def get_many(self, procedure_ids: Sequence[str]) -> dict[str, Procedure]:
        """Return the existing procedures among ``procedure_ids``, keyed by id."""
        got = self._get_ids("procedures", list(procedure_ids), ["metadatas"], "get procedures")
        return {pid: self._record(row["metadatas"]) for pid, row in got.items()}

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
        """List procedures matching the filters, oldest first (by creation order)."""
        rows = self._get_all(
            "procedures", where=_where(namespace, kinds, tags, category), include=["metadatas"], operation="list"
        )
        metas = sorted((m or {} for m in rows["metadatas"]), key=lambda m: int(m.get("seq", 0)))
        end = None if limit is None else int(offset) + int(limit)
        return [self._record(m) for m in metas[int(offset) : end]]

    def count(self, *, namespace: str | None = None) -> int:
        """Number of procedures (in a namespace, or in all)."""
        if namespace is None:
            with self._op("count"):
                return int(self._col("procedures").count())
        return len(self._get_all("procedures", where=_where(namespace), operation="count")["ids"])

    def namespaces(self) -> list[str]:
        """Return the namespaces that hold procedures."""
        rows = self._get_all("procedures", include=["metadatas"], operation="namespaces")
        return sorted({(m or {}).get("namespace", "default") for m in rows["metadatas"]})

    def _rewrite(self, recs: Sequence[Procedure], operation: str) -> None:
        """Replace the stored JSON of records in place (counters and stats; no new version)."""
        with self._op(operation):
            for chunk in self._chunks(list(recs)):
                self._col("procedures").update(
                    ids=[r.id for r in chunk], metadatas=[{"record": r.model_dump_json()} for r in chunk]
                )

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
        """Update counters, statistics or metadata in place; see :meth:`ProcedureStore.update_counters`."""
        with self._lock:
            rec = self.get(procedure_id)
            rec = with_counters(
                rec,
                access_count=access_count,
                last_accessed=last_accessed,
                importance=importance,
                metadata=metadata,
                stats=stats,
            )
            if metadata is not None:
                cat = rec.metadata.get("category")
                with self._op("update counters"):
                    self._col("procedures").update(
                        ids=[rec.id],
                        metadatas=[{"record": rec.model_dump_json(), "category": None if cat is None else str(cat)}],
                    )
            else:
                self._rewrite([rec], "update counters")
            return rec

    def touch(self, procedure_ids: Sequence[str]) -> None:
        """Count one access for each procedure (unknown ids are skipped)."""
        if not procedure_ids:
            return
        now = utcnow()
        with self._lock:
            recs = self.get_many(list(dict.fromkeys(procedure_ids)))
            touched = [
                r.model_copy(update={"access_count": r.access_count + 1, "last_accessed": now}) for r in recs.values()
            ]
            self._rewrite(touched, "touch")

    def _delete_attached(self, ids: Sequence[str], operation: str) -> None:
        with self._op(operation):
            for chunk in self._chunks(list(ids), 500):
                where = {"procedure_id": {"$in": list(chunk)}}
                self._col("versions").delete(where=where)
                self._col("usages").delete(where=where)
                self._col("outcomes").delete(where=where)

    def delete(self, procedure_id: str) -> bool:
        """Delete a procedure, then its versions, usages and outcomes."""
        with self._lock:
            got = self._get_ids("procedures", [procedure_id], ["metadatas"], "delete procedure")
            if procedure_id not in got:
                return False
            doclen = int((got[procedure_id]["metadatas"] or {}).get("doclen", 0))
            with self._op("delete procedure"):
                self._col("procedures").delete(ids=[procedure_id])
            self._delete_attached([procedure_id], "delete procedure")
            self._adjust_stats(-doclen)
        return True

    def clear(self, namespace: str) -> int:
        """Delete everything in one namespace; see :meth:`ProcedureStore.clear`."""
        if not isinstance(namespace, str) or not namespace:
            raise ConfigurationError(f"clear needs a namespace (a non-empty str), got {namespace!r}")
        with self._lock:
            rows = self._get_all("procedures", where={"namespace": namespace}, include=["metadatas"], operation="clear")
            ids = rows["ids"]
            doclen = sum(int((m or {}).get("doclen", 0)) for m in rows["metadatas"])
            with self._op("clear"):
                for chunk in self._chunks(ids):
                    self._col("procedures").delete(ids=list(chunk))
            self._delete_attached(ids, "clear")
            with self._op("clear"):
                self._col("usages").delete(where={"namespace": namespace})
                self._col("sessions").delete(where={"namespace": namespace})
            self._adjust_stats(-doclen)
        return len(ids)

    def versions(self, procedure_id: str) -> list[ProcedureVersion]:
        """Return the kept versions, oldest first.

        Raises:
            ProcedureNotFoundError: No procedure has this id.
        """
        current = self.get(procedure_id)
        rows = self._get_all(
            "versions", where={"procedure_id": procedure_id}, include=["metadatas"], operation="versions"
        )
        out = [
            ProcedureVersion(
                procedure_id=procedure_id,
                version=int(m["version"]),
                procedure=read_record(Procedure, m["record"], source=self._source),
                note=m.get("note", ""),
                created_at=datetime.fromisoformat(m["created_at"]),
            )
            for m in rows["metadatas"]
            if m and int(m["version"]) <= current.version  # hide a version written by a crashed put
        ]
        return sorted(out, key=lambda v: v.version)

    def get_embeddings(self, procedure_ids: Sequence[str]) -> np.ndarray:
        """Return ``(n, dim)`` float32 vectors of the procedures, zero rows where none is stored."""
        ids = list(procedure_ids)
        got = self._get_ids("procedures", ids, ["metadatas", "embeddings"], "get embeddings")
        dim = self._dim
        if dim is None:
            dim = next((len(r["embeddings"]) for r in got.values() if r["embeddings"] is not None), 0)
        out = np.zeros((len(ids), dim), dtype=np.float32)
        for i, pid in enumerate(ids):
            row = got.get(pid)
            if row is not None and (row["metadatas"] or {}).get("has_vec") and row["embeddings"] is not None:
                out[i] = np.asarray(row["embeddings"], dtype=np.float32)
        return out

    def mean_embedding(self, *, namespace: str | None = None) -> np.ndarray | None:
        """The mean of the procedure embeddings (in a namespace); see :meth:`ProcedureStore.mean_embedding`.

        Computing it reads every vector, so it is cached: recomputed when the collection's size
        changes (any process's insert or delete), except that a centroid of ``_MEAN_LARGE`` or
        more vectors is kept for up to ``_MEAN_TTL`` seconds, where one write moves it little.
        An update that keeps the size is seen when the size next changes.
        """
        with self._op("count"):
            size = int(self._col("procedures").count())
        now = time.monotonic()
        cached = self._means.get(namespace)
        if cached is not None and (cached[0] == size or (cached[3] >= _MEAN_LARGE and now - cached[1] < _MEAN_TTL)):
            return cached[2]
        rows = self._get_all("procedures", where=_where(namespace, vectors_only=True), include=["embeddings"],
                             operation="mean embedding")
        vecs = [e for e in rows["embeddings"] if e is not None]
        mean = np.asarray(vecs, dtype=np.float32).mean(axis=0) if vecs else None
        self._means[namespace] = (size, now, mean, len(vecs))
        return mean

    # ------------------------------------------------------------------ search
    def _query(
        self, collection: str, vector: np.ndarray, k: int, where: dict[str, Any] | None, operation: str
    ) -> tuple[list[str], list[float], list[dict[str, Any]]]:
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        if self._dim is not None and q.shape[0] != self._dim:
            raise EmbeddingDimensionError(
                f"query vector has dimension {q.shape[0]} but this store holds dimension {self._dim}"
            )
        if not np.all(np.isfinite(q)):
            raise EmbeddingDimensionError("query vector contains NaN or infinite values")
        with self._op(operation):
            res = self._col(collection).query(
                query_embeddings=[q.tolist()], n_results=int(k), where=where, include=["distances", "metadatas"]
            )
        return res["ids"][0], [1.0 - float(d) for d in res["distances"][0]], [m or {} for m in res["metadatas"][0]]

    def _nearest(
        self,
        collection: str,
        vector: np.ndarray,
        k: int,
        keep: Callable[[dict[str, Any]], bool],
        where: dict[str, Any] | None,
        operation: str,
    ) -> list[tuple[str, float, dict[str, Any]]]:
        """Top ``k`` by cosine among records that pass ``keep`` (the Python twin of ``where``).

        Chroma answers a filtered query by listing every record the filter admits first, which
        is slow when the filter admits most of the collection (one namespace, say). So the
        unfiltered index is asked for a few more than ``k`` and filtered here; only when too few
        pass is Chroma asked to filter.
        """
        n = k + 16 if where is None else max(4 * k, k + 32)
        ids, scores, metas = self._query(collection, vector, n, None, operation)
        hits = [(i, s, m) for i, s, m in zip(ids, scores, metas, strict=True) if keep(m)]
        if len(hits) >= k or len(ids) < n or where is None:
            return hits[:k]
        ids, scores, metas = self._query(collection, vector, k, where, operation)
        return [(i, s, m) for i, s, m in zip(ids, scores, metas, strict=True) if keep(m)][:k]

    def vector_search(
        self,
        vector: np.ndarray,
        *,
        k: int = 10,
        namespace: str | None = None,
        kinds: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
    ) -> list[tuple[str, float]]:
        """Nearest procedures by cosine similarity (Chroma's HNSW index: approximate at scale).

        Returns:
            ``(procedure_id, cosine)`` pairs, best first; cosine = 1 - Chroma's cosine distance.
        """
        if k <= 0:
            return []
        where = _where(namespace, kinds, tags, vectors_only=True)
        hits = self._nearest(
            "procedures", vector, k, _keep(namespace, kinds, tags, vectors_only=True), where, "vector search"
        )
        return [(pid, score) for pid, score, _ in hits]

    def lexical_search(
        self,
        text: str,
        *,
        k: int = 10,
        namespace: str | None = None,
        kinds: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
    ) -> list[tuple[str, float]]:
        """BM25 over the procedure documents (see the module notes: candidates from Chroma, scored here).

        Returns:
            ``(procedure_id, bm25)`` pairs, best first; bm25 > 0, higher is better.
        """
        terms = list(dict.fromkeys(_tokens(text)))[:32]
        if not terms or k <= 0:
            return []
        col = self._col("procedures")
        limit = self.max_lexical_candidates
        where = _where(namespace, kinds, tags)
        with self._op("lexical search"):
            n_docs = int(col.count())
            # One ids-only query per word: its document frequency (whole collection, as in
            # SQLite FTS5) and the candidates. Reading documents by id afterwards is much faster
            # than asking Chroma for them together with a where_document filter.
            matches = {t: col.get(where_document=_contains(t), include=[], limit=limit)["ids"] for t in terms}
        df = {t: len(ids) for t, ids in matches.items() if ids}
        if not df:
            return []
        total = int(self._meta().get("bm25_total_len", 0))
        if total <= 0 or not n_docs:
            return self._bm25_all(matches, df, n_docs, k, namespace, kinds, tags)
        avgdl = total / n_docs
        n_docs = max(n_docs, len({pid for ids in matches.values() for pid in ids}))
        idf = {t: math.log(1.0 + (n_docs - f + 0.5) / (f + 0.5)) for t, f in df.items()}
        # MaxScore (Turtle & Flood 1995): a word adds less than idf * (k1 + 1) to a document's
        # score, so the sum over the words a candidate contains bounds its score. Candidates are
        # read best bound first, and reading stops once the k-th best score found (among those
        # that pass the filters) beats the next bound: the result is the same as scoring all.
        # A word listed only up to ``limit`` may occur in any candidate: it counts in every bound.
        capped = sum(idf[t] * (BM25_K1 + 1.0) for t, ids in matches.items() if len(ids) >= limit)
        bound = dict.fromkeys((pid for ids in matches.values() for pid in ids), capped)
        for t, ids in matches.items():
            if len(ids) < limit:
                for pid in ids:
                    bound[pid] += idf[t] * (BM25_K1 + 1.0)
        order = sorted(bound, key=lambda pid: (-bound[pid], pid))
        keep = _keep(namespace, kinds, tags)
        scores: dict[str, float] = {}
        passes: dict[str, bool] = {}
        top: list[tuple[str, float]] = []
        start, step = 0, 256
        while start < len(order) and not (len(top) >= k and top[-1][1] > bound[order[start]]):
            chunk = order[start : start + step]
            start, step = start + len(chunk), min(2 * step, 4096)
            docs = self._get_ids("procedures", chunk, ["documents"], "lexical search")
            for pid, row in docs.items():
                score = self._bm25(row["documents"] or "", idf, avgdl)
                if score > 0.0:
                    scores[pid] = score
            top = self._top_passing(scores, passes, k, None if where is None else keep)
        return top

    @staticmethod
    def _bm25(document: str, idf: dict[str, float], avgdl: float) -> float:
        """Okapi BM25 of one stored document for the query words in ``idf`` (0.0 if none occurs)."""
        toks = document.split()
        tf = Counter(t for t in toks if t in idf)
        if not tf:
            return 0.0
        norm = BM25_K1 * (1.0 - BM25_B + BM25_B * len(toks) / max(avgdl, 1e-9))
        return sum(idf[t] * f * (BM25_K1 + 1.0) / (f + norm) for t, f in tf.items())

    def _top_passing(
        self,
        scores: dict[str, float],
        passes: dict[str, bool],
        k: int,
        keep: Callable[[dict[str, Any]], bool] | None,
    ) -> list[tuple[str, float]]:
        """The best ``k`` scored candidates that pass ``keep``, reading metadata only as far as needed.

        ``passes`` caches the verdicts across calls, so a candidate's metadata is read at most once.
        """

        def order(x: tuple[str, float]) -> tuple[float, str]:
            return -x[1], x[0]

        if keep is None:
            return heapq.nsmallest(k, scores.items(), key=order)
        m = max(2 * k, 32)
        while True:
            best = heapq.nsmallest(m, ((p, s) for p, s in scores.items() if passes.get(p, True)), key=order)
            unknown = [pid for pid, _ in best if pid not in passes]
            if unknown:
                got = self._get_ids("procedures", unknown, ["metadatas"], "lexical search")
                for pid in unknown:
                    row = got.get(pid)
                    passes[pid] = row is not None and keep(row["metadatas"] or {})
            top = [(pid, score) for pid, score in best if passes[pid]]
            if len(top) >= k or len(best) < m:
                return top[:k]
            m *= 2

    def _bm25_all(
        self,
        matches: dict[str, list[str]],
        df: dict[str, int],
        n_docs: int,
        k: int,
        namespace: str | None,
        kinds: Sequence[str] | None,
        tags: Sequence[str] | None,
    ) -> list[tuple[str, float]]:
        """Score every candidate: the path for a store without corpus statistics (mean length unknown)."""
        candidates = list(dict.fromkeys(pid for ids in matches.values() for pid in ids))
        where = _where(namespace, kinds, tags)
        # Filters are applied here: Chroma's get(ids=..., where=...) is far slower than a read by id.
        include = ["documents"] if where is None else ["documents", "metadatas"]
        docs = self._get_ids("procedures", candidates, include, "lexical search")
        keep = _keep(namespace, kinds, tags)
        lengths: dict[str, int] = {}
        for pid, row in docs.items():
            if where is not None and not keep(row["metadatas"] or {}):
                continue
            toks = (row["documents"] or "").split()
            if any(t in df for t in toks):
                lengths[pid] = len(toks)
        if not lengths:
            return []
        avgdl = sum(lengths.values()) / len(lengths)
        n_docs = max(n_docs, len(lengths))
        idf = {t: math.log(1.0 + (n_docs - f + 0.5) / (f + 0.5)) for t, f in df.items()}
        scores = {pid: self._bm25(docs[pid]["documents"] or "", idf, avgdl) for pid in lengths}
        return sorted(scores.items(), key=lambda x: (-x[1], x[0]))[:k]

    # ------------------------------------------------------------------ usages, outcomes
    def add_usages(self, usages: Sequence[Usage], embeddings: np.ndarray) -> None:
        """Store past requests with their ``(n, dim)`` query embeddings."""
        usages = list(usages)
        if not usages:
            return
        with self._lock:
            vecs = self._check_vectors(embeddings, len(usages))
            self._claim_dim(int(vecs.shape[1]))
            seq = self._seq(len(usages))
            rows = [
                (
                    uuid.uuid4().hex,
                    v.tolist(),
                    {
                        "namespace": u.namespace,
                        "query": u.query,
                        "procedure_id": u.procedure_id,
                        "success": bool(u.success),
                        "timestamp": u.timestamp.isoformat(),
                        "seq": seq + i,
                    },
                )
                for i, (u, v) in enumerate(zip(usages, vecs, strict=True))
            ]
            with self._op("add usages"):
                for chunk in self._chunks(rows):
                    self._col("usages").add(
                        ids=[r[0] for r in chunk], embeddings=[r[1] for r in chunk], metadatas=[r[2] for r in chunk]
                    )

    @staticmethod
    def _usage(meta: dict[str, Any]) -> Usage:
        return Usage(
            query=meta["query"],
            procedure_id=meta["procedure_id"],
            success=bool(meta["success"]),
            namespace=meta["namespace"],
            timestamp=datetime.fromisoformat(meta["timestamp"]),
        )

    def usage_search(
        self, vector: np.ndarray, *, k: int = 20, namespace: str | None = None
    ) -> list[tuple[Usage, float]]:
        """Return the ``k`` past requests most similar to ``vector``: ``(usage, cosine)``."""
        if k <= 0:
            return []
        where = None if namespace is None else {"namespace": namespace}
        hits = self._nearest(
            "usages", vector, k, lambda m: namespace is None or m.get("namespace") == namespace, where, "usage search"
        )
        return [(self._usage(m), score) for _, score, m in hits]

    def iter_usages(self) -> Iterator[tuple[Usage, np.ndarray]]:
        """Yield every stored usage with its ``(dim,)`` float32 query vector, oldest first."""
        rows = self._get_all("usages", include=["metadatas", "embeddings"], operation="iterate usages")
        order = sorted(range(len(rows["ids"])), key=lambda i: int(rows["metadatas"][i].get("seq", 0)))
        for i in order:
            yield self._usage(rows["metadatas"][i]), np.asarray(rows["embeddings"][i], dtype=np.float32)

    def reassign_usages(self, from_ids: Sequence[str], to_id: str) -> int:
        """Point the usages of ``from_ids`` at ``to_id``; returns how many moved."""
        from_ids = [f for f in dict.fromkeys(from_ids) if f != to_id]
        if not from_ids:
            return 0
        moved = 0
        with self._lock:
            for chunk in self._chunks(from_ids, 500):
                rows = self._get_all(
                    "usages", where={"procedure_id": {"$in": list(chunk)}}, operation="reassign usages"
                )
                with self._op("reassign usages"):
                    for ids in self._chunks(rows["ids"]):
                        self._col("usages").update(ids=list(ids), metadatas=[{"procedure_id": to_id}] * len(ids))
                moved += len(rows["ids"])
        return moved

    def count_usages(self, *, namespace: str | None = None) -> int:
        """Number of stored usages."""
        if namespace is None:
            with self._op("count usages"):
                return int(self._col("usages").count())
        return len(self._get_all("usages", where={"namespace": namespace}, operation="count usages")["ids"])

    def record_outcome(self, outcome: Outcome) -> Procedure:
        """Append an outcome to the log, then update the procedure's stats.

        Raises:
            ProcedureNotFoundError: No procedure has this id.
        """
        with self._lock:
            rec = self.get(outcome.procedure_id)
            stats = rec.stats.record(outcome.success, outcome.duration, outcome.timestamp)
            rec = rec.model_copy(update={"stats": stats})
            with self._op("record outcome"):
                self._col("outcomes").add(
                    ids=[uuid.uuid4().hex],
                    embeddings=[_DUMMY],
                    metadatas=[
                        {"procedure_id": outcome.procedure_id, "seq": self._seq(), "record": outcome.model_dump_json()}
                    ],
                )
            self._rewrite([rec], "record outcome")
        return rec

    def outcomes(self, procedure_id: str, *, limit: int | None = None) -> list[Outcome]:
        """Return the logged outcomes of a procedure, newest first."""
        rows = self._get_all(
            "outcomes", where={"procedure_id": procedure_id}, include=["metadatas"], operation="outcomes"
        )
        metas = sorted(rows["metadatas"], key=lambda m: -int(m.get("seq", 0)))
        if limit is not None:
            metas = metas[: int(limit)]
        return [read_record(Outcome, m["record"], source=self._source) for m in metas]

    # ------------------------------------------------------------------ sessions
    def add_sessions(self, sessions: Sequence[SessionRecord]) -> int:
        """Append sessions, skipping those whose (namespace, session_id) is stored already."""
        fresh: dict[str, SessionRecord] = {}
        for s in sessions:
            fresh.setdefault(_session_key(s.namespace, s.session_id), s)
        if not fresh:
            return 0
        with self._lock:
            stored = self._get_ids("sessions", list(fresh), [], "add sessions")
            new = [(key, s) for key, s in fresh.items() if key not in stored]
            seq = self._seq(len(new))
            with self._op("add sessions"):
                for chunk in self._chunks(new):
                    self._col("sessions").add(
                        ids=[key for key, _ in chunk],
                        embeddings=[_DUMMY] * len(chunk),
                        metadatas=[
                            {
                                "namespace": s.namespace,
                                "session_id": s.session_id,
                                "seq": seq + i,
                                "record": s.model_dump_json(),
                            }
                            for i, (_, s) in enumerate(chunk)
                        ],
                    )
                    seq += len(chunk)
        return len(new)

    def iter_sessions(self, *, namespace: str | None = None) -> Iterator[SessionRecord]:
        """Yield stored sessions in the order they were added (all are read, then sorted)."""
        where = None if namespace is None else {"namespace": namespace}
        rows = self._get_all("sessions", where=where, include=["metadatas"], operation="iterate sessions")
        for m in sorted(rows["metadatas"], key=lambda m: int(m.get("seq", 0))):
            yield read_record(SessionRecord, m["record"], source=self._source)

    def count_sessions(self, *, namespace: str | None = None) -> int:
        """Number of stored sessions."""
        if namespace is None:
            with self._op("count sessions"):
                return int(self._col("sessions").count())
        return len(self._get_all("sessions", where={"namespace": namespace}, operation="count sessions")["ids"])

    def has_session(self, session_id: str, *, namespace: str = "default") -> bool:
        """Whether a session with this id is stored in the namespace."""
        return bool(self._get_ids("sessions", [_session_key(namespace, session_id)], [], "has session"))
