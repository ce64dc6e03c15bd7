"""VectorIndex: the exact index equals brute force, with namespace codes and id subsets."""

from __future__ import annotations

import logging

import numpy as np
import pytest

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


# ---------------------------------------------------------------------- HNSW graph (usearch)
def _clustered(rng: np.random.Generator, n: int, centres: int = 20) -> np.ndarray:
    """Unit vectors around a few centres: the neighbourhood structure real embeddings have."""
    c = _unit(rng, centres)
    x = c[rng.integers(0, centres, n)] + 0.3 * rng.standard_normal((n, DIM)).astype(np.float32) / np.sqrt(DIM)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _graph_index(rng: np.random.Generator, n: int = 600) -> tuple[VectorIndex, np.ndarray, list[str]]:
    pytest.importorskip("usearch")
    mat = _clustered(rng, n)
    ids = [f"p{i}" for i in range(n)]
    index = VectorIndex(DIM, ann_min_rows=200)
    index.upsert(ids, mat, [i % 3 for i in range(n)])
    assert index.wait_for_ann(timeout=60)
    return index, mat, ids


def test_graph_search_has_exact_cosines_high_recall_and_respects_codes() -> None:
    rng = np.random.default_rng(2)
    index, mat, ids = _graph_index(rng)
    assert index.ann_ready
    recall = []
    for q in _clustered(rng, 30):
        hits = index.search(q, 5)
        truth = _brute(mat, ids, q, 5)
        recall.append(len({h[0] for h in hits} & set(truth)) / 5)
        for pid, cos in hits:  # scores are the float32 matrix's, not the graph's half floats
            assert cos == pytest.approx(float(mat[int(pid[1:])] @ q), abs=1e-6)
        assert [h[1] for h in hits] == sorted((h[1] for h in hits), reverse=True)
        assert all(int(pid[1:]) % 3 == 1 for pid, _ in index.search(q, 5, codes=[1]))
    assert np.mean(recall) >= 0.95
    assert index.ann_ready  # its audits (the first 8 searches, then every 32nd) found it good


def test_graph_follows_writes_and_removals() -> None:
    rng = np.random.default_rng(3)
    index, mat, ids = _graph_index(rng)
    new = _clustered(rng, 5)
    index.upsert([f"n{i}" for i in range(5)], new, [0] * 5)
    for i in range(5):
        assert index.search(new[i], 1)[0][0] == f"n{i}"
    index.upsert(["p7"], new[:1], [0])  # p7 moves to n0's place
    assert {h[0] for h in index.search(new[0], 2)} == {"n0", "p7"}
    index.remove(["n0", "p7"])
    assert all(h[0] not in {"n0", "p7"} for h in index.search(new[0], 20))


def test_writes_during_a_background_build_are_not_lost() -> None:
    pytest.importorskip("usearch")
    rng = np.random.default_rng(4)
    mat = _clustered(rng, 3_000)
    index = VectorIndex(DIM, ann_min_rows=1_000)
    index.upsert([f"p{i}" for i in range(3_000)], mat, [0] * 3_000)  # the build starts here
    late = _clustered(rng, 20)
    index.upsert([f"late{i}" for i in range(20)], late, [0] * 20)  # most likely while building
    index.remove([f"p{i}" for i in range(10)])
    assert index.wait_for_ann(timeout=120)
    for i in range(20):
        assert index.search(late[i], 1)[0][0] == f"late{i}"
    for i in range(10):
        assert all(h[0] != f"p{i}" for h in index.search(mat[i], 10))


def test_without_usearch_the_scan_stays_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    from procmem.stores import _vectors

    monkeypatch.setattr(_vectors, "_usearch_index", lambda dim: None)
    rng = np.random.default_rng(5)
    mat = _clustered(rng, 400)
    ids = [f"p{i}" for i in range(400)]
    index = VectorIndex(DIM, ann_min_rows=100)
    index.upsert(ids, mat, [0] * 400)
    assert not index.wait_for_ann(timeout=1) and not index.ann_ready
    q = _clustered(rng, 1)[0]
    assert [h[0] for h in index.search(q, 5)] == _brute(mat, ids, q, 5)


def test_ann_min_rows_must_be_a_positive_int() -> None:
    for bad in (0, -5, 1.5, True, "100"):
        with pytest.raises(ValueError, match="ann_min_rows"):
            VectorIndex(DIM, ann_min_rows=bad)  # type: ignore[arg-type]


def test_a_graph_that_misses_neighbours_is_dropped_for_the_exact_scan(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(6)
    index, mat, ids = _graph_index(rng)
    # Change the vectors behind the graph's back: its candidates are now unrelated to the truth,
    # as when a graph cannot find neighbours in the data.
    fresh = _clustered(np.random.default_rng(7), len(ids))
    index._mat[: len(ids)] = fresh
    caplog.set_level(logging.INFO, logger="procmem")
    queries = _clustered(rng, 32)
    for q in queries[:8]:  # the first 8 searches on a graph are audited: it is searched wider
        index.search(q, 5)
    assert index.ann_ready and "searching it wider (efSearch 256)" in caplog.text
    for q in queries[8:]:  # 512, 1,024, and then, still missing, it is dropped
        index.search(q, 5)
    assert not index.ann_ready
    assert "goes back to the exact scan" in caplog.text
    for q in queries[:10]:
        assert [h[0] for h in index.search(q, 5)] == _brute(fresh, ids, q, 5)


def test_exiting_during_a_background_build_is_clean() -> None:
    """A short-lived process (a CLI call) may exit while graphs are still building.

    usearch's worker threads must be done before the process tears down, or the C++ runtime
    aborts it (exit status 134): before the exit hook, 3 of 13 runs of such scripts aborted.
    """
    pytest.importorskip("usearch")
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import time
        import numpy as np
        from procmem.stores._vectors import VectorIndex
        rng = np.random.default_rng(0)
        indexes = []
        for n in (60_000, 20_000):  # like a store's procedures and usages
            x = rng.standard_normal((n, 384)).astype(np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            index = VectorIndex(384, ann_min_rows=1_000)
            index.upsert([str(i) for i in range(n)], x, [0] * n)
            indexes.append(index)
        print(indexes[0].search(x[0], 1)[0][0] is not None)
        time.sleep(1.0)  # the builds' worker threads are running now
        print(any(not i.ann_ready for i in indexes))  # and still are as the interpreter exits
        indexes[0].close()  # a closed store's index: its dropped build runs on to its chunk's end
        """
    )
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["True", "True"]


def test_mean_follows_upserts_code_changes_removals_and_compaction():
    rng = np.random.default_rng(3)
    index = VectorIndex(8, ann_min_rows=None)
    live: dict[str, tuple[np.ndarray, int]] = {}
    for step in range(60):
        if step % 3 == 2 and live:  # remove a few (enough, over time, to trigger compaction)
            gone = list(rng.choice(sorted(live), size=min(len(live), 4), replace=False))
            index.remove(gone + ["never-there"])
            for pid in gone:
                live.pop(pid)
        else:  # insert or replace, with a repeated id inside one batch and changing codes
            ids = [f"p{int(i)}" for i in rng.integers(0, 40, size=6)]
            vecs = rng.normal(size=(6, 8)).astype(np.float32)
            codes = [int(c) for c in rng.integers(0, 3, size=6)]
            index.upsert(ids, vecs, codes)
            for pid, v, c in zip(ids, vecs, codes, strict=True):
                live[pid] = (v, c)
        for codes in (None, [0], [1, 2], [5]):
            rows = [v for v, c in live.values() if codes is None or c in codes]
            got = index.mean(codes=codes)
            if rows:
                np.testing.assert_allclose(got, np.mean(rows, axis=0), atol=1e-5)
            else:
                assert got is None
