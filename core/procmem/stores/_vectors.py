"""The embedded store's in-memory vector index: a float32 matrix, scanned exactly or through HNSW.

Below ``ann_min_rows`` live rows, a search scores every row with one BLAS matrix-vector
product: exact, and fast enough for the sizes most agents keep. From ``ann_min_rows`` rows on,
and when the optional ``usearch`` package is installed (``pip install procmem[ann]``), an HNSW
graph (Malkov & Yashunin, "Efficient and robust approximate nearest neighbor search using
Hierarchical Navigable Small World graphs", IEEE TPAMI 2020; the ``usearch`` library) proposes
candidates and the float32 matrix re-scores them exactly, so returned cosines are exact and only
a true neighbour missed by the graph can be lost (recall is measured in ``benchmarks/scale.py``).

The graph is derived data, never stored: it is built on a background thread when the index
reaches ``ann_min_rows`` (for example after a store is reopened), and searches scan exactly
until it is ready, so results never wait for it. Rows written meanwhile are applied when the
build finishes; after that, writes update the graph as they happen. The first 8 searches on a
new graph, then every 32nd, are also answered by the exact scan. When the graph's recall of the
exact top k over these audits falls below 0.95, the graph is searched twice as wide (efSearch
doubles, up to 1,024, as large graphs need) and audited afresh; when even the widest search
finds less than 0.9 (data without neighbourhood structure, such as random vectors, where no
graph works), the index logs a warning and goes back to exact scans.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from procmem.errors import ConfigurationError, EmbeddingDimensionError

_log = logging.getLogger("procmem")

#: Default size from which searches go through the HNSW graph (exact scan below it).
ANN_MIN_ROWS = 20_000
_ANN_CONNECTIVITY = 16  # HNSW M: links per node
_ANN_EXPANSION_ADD = 64  # efConstruction (128 recalls a little more, inserts twice as slowly)
_ANN_EXPANSION_SEARCH = 128  # efSearch (the candidate count, when larger, widens it)
_ANN_AUDIT_EVERY = 32  # every n-th graph search is also scanned exactly, to measure recall
_ANN_AUDIT_WINDOW = 16  # audits kept
_ANN_AUDIT_MIN = 8  # audits before the graph can be judged
_ANN_TARGET_RECALL = 0.95  # mean audited recall of the top k below which the search widens
_ANN_MAX_EXPANSION = 1_024  # widest efSearch tried
_ANN_MIN_RECALL = 0.9  # mean audited recall below which a graph searched at the widest is dropped
_ANN_BUILD_CHUNK = 4_096  # rows per add call of a background build (a stopped build ends after one)
_TALLY_CHUNK = 8_192  # rows summed at a time into the per-code sums behind ``mean``
_ann_missing_logged = False
# Running graph builds (thread -> its index), stopped at exit. The thread, not the index's
# current one: a dropped build (closed store, compaction) still runs until its chunk ends.
_building: dict[threading.Thread, VectorIndex] = {}
_building_lock = threading.Lock()


@atexit.register
def _stop_builds() -> None:
    """Stop background builds before the interpreter exits.

    usearch's worker threads must not be running when the process tears down (the C++
    runtime aborts the process), so each build is told to stop and joined; it ends after the
    chunk it is adding.
    """
    with _building_lock:
        pending = list(_building.items())
    for thread, index in pending:
        index._ann_generation += 1
        thread.join(timeout=60)


def check_ann_min_rows(value: object, name: str = "ann_min_rows") -> int | None:
    """Return ``value`` if it is None or an int >= 1.

    Raises:
        ConfigurationError: Otherwise (a ``ValueError``), naming the setting ``name``.
    """
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigurationError(f"{name} must be None or an int >= 1, got {value!r}")
    return value


def _usearch_index(dim: int) -> Any | None:
    """A new empty usearch HNSW index for inner products of unit vectors, or None without usearch."""
    global _ann_missing_logged
    try:
        from usearch.index import Index
    except ImportError:
        if not _ann_missing_logged:
            _ann_missing_logged = True
            _log.info("vector search scans every row; pip install 'procmem[ann]' for an HNSW index")
        return None
    return Index(
        ndim=dim,
        metric="ip",
        dtype="f16",
        connectivity=_ANN_CONNECTIVITY,
        expansion_add=_ANN_EXPANSION_ADD,
        expansion_search=_ANN_EXPANSION_SEARCH,
    )


class VectorIndex:
    """Rows of unit vectors keyed by string id, with an integer filter code and tags per row.

    Filters are resolved in memory: the code (e.g. namespace and kind in one integer) by a
    vectorised mask, tags through an inverted index of tag to rows, so a filtered search costs a
    scan of the matching rows, never a round trip to the database.

    Args:
        dim: Vector dimension, or None to take it from the first vectors added.
        ann_min_rows: Live rows from which searches use an HNSW graph (see the module
            docstring); None scans exactly at any size.

    Raises:
        ConfigurationError: If ``ann_min_rows`` is not None or an int >= 1.
    """

    def __init__(self, dim: int | None = None, *, ann_min_rows: int | None = ANN_MIN_ROWS) -> None:
        self.dim = dim
        self._ids: list[str] = []
        self._row: dict[str, int] = {}
        self._mat = np.zeros((0, dim or 0), dtype=np.float32)
        self._codes = np.zeros(0, dtype=np.int32)
        self._n = 0
        self._tags: list[frozenset[str]] = []  # per row
        self._tag_rows: dict[str, set[int]] = {}  # inverted: tag -> live rows
        self._lock = threading.RLock()
        self.ann_min_rows = check_ann_min_rows(ann_min_rows)
        self._ann: Any | None = None  # usearch index keyed by row, searched once ready
        self._ann_ready = False
        self._ann_pending: set[int] = set()  # rows changed while the graph was being built
        self._ann_thread: threading.Thread | None = None
        self._ann_generation = 0  # bumped to abandon a build (compaction, close)
        self._ann_unavailable = False
        self._ann_searches = 0
        self._ann_recall: deque[float] = deque(maxlen=_ANN_AUDIT_WINDOW)
        # Per filter code: the float64 sum of its live rows' vectors and their number (``mean``).
        self._code_sums = np.zeros((0, dim or 0), dtype=np.float64)
        self._code_rows = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, pid: object) -> bool:
        return pid in self._row

    def _check(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise EmbeddingDimensionError(f"embeddings must be a (n, dim) array, got shape {vectors.shape}")
        if self.dim is None:
            self.dim = int(vectors.shape[1])
            self._mat = np.zeros((0, self.dim), dtype=np.float32)
        if vectors.shape[1] != self.dim:
            raise EmbeddingDimensionError(
                f"embeddings have dimension {vectors.shape[1]} but this store holds dimension {self.dim}"
            )
        if not np.all(np.isfinite(vectors)):
            raise EmbeddingDimensionError("embeddings contain NaN or infinite values")
        return vectors

    def _upsert_unlocked(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        codes: Sequence[int],
        tags: Sequence[Iterable[str]] | None = None,
    ) -> None:
        """Insert or replace rows.

        Args:
            ids: n ids.
            vectors: ``(n, dim)`` float32 unit vectors.
            codes: n integer filter codes (e.g. a namespace code).
            tags: n collections of tags (None: no tags on these rows).
        """
        vectors = self._check(vectors)
        before = np.fromiter({self._row[pid] for pid in ids if pid in self._row}, dtype=np.int64)
        self._tally(before, -1)  # their old vectors and codes leave the sums
        need = self._n + len(ids)
        if need > self._mat.shape[0]:
            cap = max(need, int(self._mat.shape[0] * 1.5) + 64)
            mat = np.zeros((cap, self.dim or 0), dtype=np.float32)
            mat[: self._n] = self._mat[: self._n]
            codes_arr = np.full(cap, -1, dtype=np.int32)
            codes_arr[: self._n] = self._codes[: self._n]
            self._mat, self._codes = mat, codes_arr
        touched: list[int] = []
        for i, pid in enumerate(ids):
            row = self._row.get(pid)
            if row is None:
                row = self._n
                self._n += 1
                self._row[pid] = row
                self._ids.append(pid)
                self._tags.append(frozenset())
            self._mat[row] = vectors[i]
            self._codes[row] = codes[i]
            self._set_tags(row, frozenset(tags[i]) if tags is not None else frozenset())
            touched.append(row)
        self._tally(np.unique(np.asarray(touched, dtype=np.int64)), +1)
        self._ann_changed(touched)

    def _tally(self, rows: np.ndarray, sign: int) -> None:
        """Add (``sign`` +1) or take away (-1) the vectors of ``rows`` in their codes' sums."""
        codes = self._codes[rows]
        rows, codes = rows[codes >= 0], codes[codes >= 0]  # -1 marks a removed row
        if len(rows) == 0:
            return
        top = int(codes.max()) + 1
        if top > len(self._code_rows):
            sums = np.zeros((top, self.dim or 0), dtype=np.float64)
            if len(self._code_rows):
                sums[: len(self._code_rows)] = self._code_sums
            counts = np.zeros(top, dtype=np.int64)
            counts[: len(self._code_rows)] = self._code_rows
            self._code_sums, self._code_rows = sums, counts
        for code in np.unique(codes):
            picked = rows[codes == code]
            # In chunks, so loading a million rows never copies them all at once.
            for at in range(0, len(picked), _TALLY_CHUNK):
                chunk = picked[at:at + _TALLY_CHUNK]
                self._code_sums[code] += sign * self._mat[chunk].sum(axis=0, dtype=np.float64)
            self._code_rows[code] += sign * len(picked)

    def _set_tags(self, row: int, new: frozenset[str]) -> None:
        old = self._tags[row]
        if old == new:
            return
        for t in old - new:
            rows = self._tag_rows.get(t)
            if rows is not None:
                rows.discard(row)
                if not rows:
                    del self._tag_rows[t]
        for t in new - old:
            self._tag_rows.setdefault(t, set()).add(row)
        self._tags[row] = new

    def _remove_unlocked(self, ids: Sequence[str]) -> None:
        """Remove rows (their slots are masked out, then compacted when half are dead)."""
        removed: list[int] = []
        self._tally(np.fromiter({self._row[pid] for pid in ids if pid in self._row}, dtype=np.int64), -1)
        for pid in ids:
            row = self._row.pop(pid, None)
            if row is not None:
                self._codes[row] = -1
                self._mat[row] = 0.0
                self._set_tags(row, frozenset())
                removed.append(row)
        if self._n and len(self._row) < self._n // 2:
            self._compact()
        else:
            self._ann_changed(removed)

    def _compact(self) -> None:
        keep = [(pid, row) for pid, row in self._row.items()]
        keep.sort(key=lambda t: t[1])
        rows = np.array([r for _, r in keep], dtype=np.int64)
        self._mat = self._mat[rows].copy() if len(rows) else np.zeros((0, self.dim or 0), np.float32)
        self._codes = self._codes[rows].copy() if len(rows) else np.zeros(0, np.int32)
        self._tags = [self._tags[r] for _, r in keep]
        self._ids = [pid for pid, _ in keep]
        self._row = {pid: i for i, pid in enumerate(self._ids)}
        self._n = len(self._ids)
        self._tag_rows = {}
        for row, tags in enumerate(self._tags):
            for t in tags:
                self._tag_rows.setdefault(t, set()).add(row)
        # Rows were renumbered: the graph (keyed by row) is rebuilt.
        self._ann_drop()
        self._ann_maybe_build()

    # ------------------------------------------------------------------ HNSW graph
    def _ann_drop(self) -> None:
        """Forget the graph and abandon a build in progress."""
        self._ann_generation += 1
        self._ann = None
        self._ann_ready = False
        self._ann_thread = None
        self._ann_pending = set()
        self._ann_recall.clear()

    def _ann_changed(self, rows: Sequence[int]) -> None:
        """Bring the graph in step with rows just written or removed, or start building it."""
        if rows:
            if self._ann_ready:
                self._ann_apply(self._ann, rows)
            elif self._ann_thread is not None:
                self._ann_pending.update(rows)
        self._ann_maybe_build()

    def _ann_apply(self, index: Any, rows: Iterable[int]) -> None:
        """Replace the graph's entries for ``rows`` by their current vectors (live rows only)."""
        keys = np.unique(np.fromiter(rows, dtype=np.int64))
        index.remove(keys.astype(np.uint64))
        live = keys[self._codes[keys] >= 0]
        if len(live):
            index.add(live.astype(np.uint64), self._mat[live], threads=0)

    def _ann_maybe_build(self) -> None:
        if (
            self.ann_min_rows is None
            or self._ann_thread is not None
            or self._ann_unavailable
            or len(self._row) < self.ann_min_rows
        ):
            return
        index = _usearch_index(int(self.dim or 0))
        if index is None:
            self._ann_unavailable = True
            return
        rows = np.flatnonzero(self._codes[: self._n] >= 0)
        self._ann_pending = set()
        self._ann_thread = threading.Thread(
            target=self._ann_build,
            args=(index, self._mat, rows, self._ann_generation),
            name="procmem-hnsw-build",
            daemon=True,
        )
        with _building_lock:
            _building[self._ann_thread] = self
        self._ann_thread.start()

    def _ann_build(self, index: Any, mat: np.ndarray, rows: np.ndarray, generation: int) -> None:
        """Background thread: add ``rows`` of ``mat`` to ``index``, then apply writes made meanwhile."""
        try:
            for start in range(0, len(rows), _ANN_BUILD_CHUNK):
                if generation != self._ann_generation:
                    return
                chunk = rows[start : start + _ANN_BUILD_CHUNK]
                index.add(chunk.astype(np.uint64), mat[chunk], threads=0)
            with self._lock:
                if generation != self._ann_generation:
                    return
                if self._ann_pending:
                    self._ann_apply(index, self._ann_pending)
                    self._ann_pending = set()
                self._ann = index
                self._ann_ready = True
        except Exception:  # the exact scan stays in place; nothing stored depends on the graph
            _log.exception("building the HNSW index failed; vector search stays exact")
            with self._lock:
                if generation == self._ann_generation:
                    self._ann_drop()
                    self._ann_unavailable = True
        finally:
            with _building_lock:
                _building.pop(threading.current_thread(), None)

    def _ann_search(self, q: np.ndarray, k: int, codes: np.ndarray | None) -> list[tuple[str, float]] | None:
        """Top ``k`` through the graph, re-scored exactly; None when too few candidates pass the filter."""
        count = min(max(4 * k, 64), len(self._ann))
        keys = np.asarray(self._ann.search(q, count).keys, dtype=np.int64)
        keys = keys[np.isin(self._codes[keys], codes)] if codes is not None else keys[self._codes[keys] >= 0]
        if len(keys) < k:
            return None
        sub = self._mat[keys] @ q
        top = np.argsort(-sub, kind="stable")[:k]
        return [(self._ids[keys[i]], float(sub[i])) for i in top]

    def _ann_audit(self, hits: list[tuple[str, float]], exact: list[tuple[str, float]]) -> None:
        """Compare a graph search with the exact scan; widen the search, or drop the graph, if it misses.

        Below the target recall the graph is searched twice as wide (efSearch doubles, up to
        1,024) and audited afresh; at the widest, below 0.9, the index goes back to exact scans.
        """
        if not exact:
            return
        self._ann_recall.append(len({h[0] for h in hits} & {e[0] for e in exact}) / len(exact))
        if len(self._ann_recall) < _ANN_AUDIT_MIN:
            return
        recall = sum(self._ann_recall) / len(self._ann_recall)
        if recall >= _ANN_TARGET_RECALL:
            return
        width = int(self._ann.expansion_search)
        if width < _ANN_MAX_EXPANSION:
            self._ann.expansion_search = min(2 * width, _ANN_MAX_EXPANSION)
            self._ann_recall.clear()  # the next searches are audited again
            _log.info("the HNSW index found %.0f%% of the exact top k; searching it wider (efSearch %d)",
                      100 * recall, self._ann.expansion_search)
        elif recall < _ANN_MIN_RECALL:
            _log.warning(
                "the HNSW index found %.0f%% of the exact top k on its last %d audited searches; "
                "vector search goes back to the exact scan (vectors without neighbourhood structure?)",
                100 * recall, _ANN_AUDIT_MIN,
            )
            self._ann_drop()
            self._ann_unavailable = True

    @property
    def ann_ready(self) -> bool:
        """Whether searches currently go through the HNSW graph."""
        return self._ann_ready

    def wait_for_ann(self, timeout: float | None = None) -> bool:
        """Block until a background graph build finishes.

        Args:
            timeout: Seconds to wait at most (None: no limit).

        Returns:
            Whether searches now go through the graph.
        """
        thread = self._ann_thread
        if thread is not None:
            thread.join(timeout)
        return self._ann_ready

    def close(self) -> None:
        """Drop the graph and stop a background build (the index stays usable, scanning exactly)."""
        with self._lock:
            self._ann_drop()
            self._ann_unavailable = True

    def _get_unlocked(self, ids: Sequence[str]) -> np.ndarray:
        """Return ``(n, dim)`` vectors for ``ids``; zero rows for unknown ids."""
        out = np.zeros((len(ids), self.dim or 0), dtype=np.float32)
        for i, pid in enumerate(ids):
            row = self._row.get(pid)
            if row is not None:
                out[i] = self._mat[row]
        return out

    def _search_unlocked(
        self,
        vector: np.ndarray,
        k: int,
        *,
        codes: Sequence[int] | None = None,
        allowed: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
    ) -> list[tuple[str, float]]:
        """Return the ``k`` ids with the highest cosine to ``vector`` (see the module docstring).

        Tag and id filters scan their rows exactly; otherwise, once the HNSW graph is ready, its
        candidates are re-scored exactly, falling back to the full scan when fewer than ``k``
        of them pass the code filter.

        Args:
            vector: ``(dim,)`` float32 unit vector.
            k: How many.
            codes: Only rows whose filter code is in this set (None: all live rows).
            allowed: Only these ids (None: no restriction).
            tags: Only rows carrying all these tags (None or empty: no restriction).

        Returns:
            ``(id, cosine)`` pairs, best first.
        """
        if self._n == 0 or k <= 0 or not self._row:
            return []
        q = self._check(np.asarray(vector, dtype=np.float32).reshape(1, -1))[0]
        picked: set[int] | None = None
        if tags:
            sets = sorted((self._tag_rows.get(t, set()) for t in set(tags)), key=len)
            picked = set(sets[0]).intersection(*sets[1:])
        if allowed is not None:
            rows_allowed = {self._row[a] for a in allowed if a in self._row}
            picked = rows_allowed if picked is None else picked & rows_allowed
        if picked is not None:
            rows = np.fromiter(sorted(picked), dtype=np.int64, count=len(picked))
            if codes is not None and len(rows):
                rows = rows[np.isin(self._codes[rows], np.asarray(list(codes), dtype=np.int32))]
            if len(rows) == 0:
                return []
            sub = self._mat[rows] @ q
            m = min(k, len(rows))
            order = np.argpartition(-sub, m - 1)[:m] if m < len(rows) else np.arange(len(rows))
            order = order[np.argsort(-sub[order], kind="stable")]
            return [(self._ids[rows[i]], float(sub[i])) for i in order]
        code_arr = np.asarray(list(codes), dtype=np.int32) if codes is not None else None
        if self._ann_ready and 4 * k < len(self._row):
            hits = self._ann_search(q, k, code_arr)
            if hits is not None:
                self._ann_searches += 1
                # The first searches on a new graph are all audited, so a graph that cannot
                # find neighbours in this data is dropped at once; then every 32nd.
                if len(self._ann_recall) < _ANN_AUDIT_MIN or self._ann_searches % _ANN_AUDIT_EVERY == 0:
                    self._ann_audit(hits, self._scan(q, k, code_arr))
                return hits
        return self._scan(q, k, code_arr)

    def _scan(self, q: np.ndarray, k: int, code_arr: np.ndarray | None) -> list[tuple[str, float]]:
        """Exact top ``k`` over every live row (whose code is in ``code_arr``, if given)."""
        scores = self._mat[: self._n] @ q
        live = self._codes[: self._n] >= 0
        if code_arr is not None:
            live &= np.isin(self._codes[: self._n], code_arr)
        scores = np.where(live, scores, -np.inf)
        n_live = int(live.sum())
        k = min(k, n_live)
        if k == 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self._ids[i], float(scores[i])) for i in top if np.isfinite(scores[i])]

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, codes: Sequence[int],
               tags: Sequence[Iterable[str]] | None = None) -> None:
        """Insert or replace rows; see :meth:`_upsert_unlocked`."""
        with self._lock:
            self._upsert_unlocked(ids, vectors, codes, tags)

    def remove(self, ids: Sequence[str]) -> None:
        """Remove rows; see :meth:`_remove_unlocked`."""
        with self._lock:
            self._remove_unlocked(ids)

    def get(self, ids: Sequence[str]) -> np.ndarray:
        """Return ``(n, dim)`` vectors for ``ids``; zero rows for unknown ids."""
        with self._lock:
            return self._get_unlocked(ids)

    def mean(self, *, codes: Sequence[int] | None = None) -> np.ndarray | None:
        """Return the ``(dim,)`` float32 mean of the live rows (whose code is in ``codes``), or None if none.

        Read from per-code sums kept up to date by every write, so it costs nothing per row.
        """
        with self._lock:
            picked = np.arange(len(self._code_rows)) if codes is None else np.asarray(
                [c for c in set(codes) if 0 <= c < len(self._code_rows)], dtype=np.int64)
            n = int(self._code_rows[picked].sum()) if len(picked) else 0
            if n == 0:
                return None
            return (self._code_sums[picked].sum(axis=0) / n).astype(np.float32)

    def search(self, vector: np.ndarray, k: int, *, codes: Sequence[int] | None = None,
               allowed: Sequence[str] | None = None, tags: Sequence[str] | None = None) -> list[tuple[str, float]]:
        """Return the ``k`` ids with the highest cosine to ``vector``; see :meth:`_search_unlocked`."""
        with self._lock:
            return self._search_unlocked(vector, k, codes=codes, allowed=allowed, tags=tags)
