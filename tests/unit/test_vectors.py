"""VectorIndex: the exact index equals brute force, with namespace codes and id subsets."""

from __future__ import annotations

import numpy as np

from procmem.stores._vectors import VectorIndex

DIM = 64


def _unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute(mat: np.ndarray, ids: list[str], q: np.ndarray, k: int) -> list[str]:
    s = mat @ q
    return [ids[i] for i in np.argsort(-s, kind="stable")[:k]]


def test_exact_mode_equals_brute_force() -> None:
    rng = np.random.default_rng(1)
    mat = _unit(rng, 500)
    ids = [f"p{i}" for i in range(500)]
    codes = [i % 3 for i in range(500)]
    index = VectorIndex(DIM)
    index.upsert(ids, mat, codes)
    for q in _unit(rng, 10):
        hits = index.search(q, 7)
        assert [h[0] for h in hits] == _brute(mat, ids, q, 7)
        assert np.allclose([h[1] for h in hits], np.sort(mat @ q)[::-1][:7], atol=1e-6)
        sel = [i for i in range(500) if codes[i] == 2]
        hits = index.search(q, 5, codes=[2])
        assert [h[0] for h in hits] == _brute(mat[sel], [ids[i] for i in sel], q, 5)
        allowed = ids[:40]
        hits = index.search(q, 3, allowed=allowed)
        assert [h[0] for h in hits] == _brute(mat[:40], allowed, q, 3)
