"""An exact in-memory vector index: a float32 matrix and a brute-force dot product.

This is not an approximate index: it scores every row with one BLAS matrix-vector product, which
is exact and fast enough for the sizes an embedded store serves (see ``benchmarks/scale.py``).
Backends that need more use a vector database (``ChromaStore``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

import numpy as np

from procmem.errors import EmbeddingDimensionError


class VectorIndex:
    """Rows of unit vectors keyed by string id, with an integer filter code and tags per row.

    Filters are resolved in memory: the code (e.g. namespace and kind in one integer) by a
    vectorised mask, tags through an inverted index of tag to rows, so a filtered search costs a
    scan of the matching rows, never a round trip to the database.

    Args:
        dim: Vector dimension, or None to take it from the first vectors added.
    """

    def __init__(self, dim: int | None = None) -> None:
        self.dim = dim
        self._ids: list[str] = []
        self._row: dict[str, int] = {}
        self._mat = np.zeros((0, dim or 0), dtype=np.float32)
        self._codes = np.zeros(0, dtype=np.int32)
        self._n = 0
        self._tags: list[frozenset[str]] = []  # per row
        self._tag_rows: dict[str, set[int]] = {}  # inverted: tag -> live rows
        self._lock = threading.RLock()

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
        need = self._n + len(ids)
        if need > self._mat.shape[0]:
            cap = max(need, int(self._mat.shape[0] * 1.5) + 64)
            mat = np.zeros((cap, self.dim or 0), dtype=np.float32)
            mat[: self._n] = self._mat[: self._n]
            codes_arr = np.full(cap, -1, dtype=np.int32)
            codes_arr[: self._n] = self._codes[: self._n]
            self._mat, self._codes = mat, codes_arr
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
        for pid in ids:
            row = self._row.pop(pid, None)
            if row is not None:
                self._codes[row] = -1
                self._mat[row] = 0.0
                self._set_tags(row, frozenset())
        if self._n and len(self._row) < self._n // 2:
            self._compact()

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
        """Return the ``k`` ids with the highest cosine to ``vector``.

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
        scores = self._mat[: self._n] @ q
        live = self._codes[: self._n] >= 0
        if codes is not None:
            live &= np.isin(self._codes[: self._n], np.asarray(list(codes), dtype=np.int32))
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

    def search(self, vector: np.ndarray, k: int, *, codes: Sequence[int] | None = None,
               allowed: Sequence[str] | None = None, tags: Sequence[str] | None = None) -> list[tuple[str, float]]:
        """Return the ``k`` ids with the highest cosine to ``vector``; see :meth:`_search_unlocked`."""
        with self._lock:
            return self._search_unlocked(vector, k, codes=codes, allowed=allowed, tags=tags)
