"""Scale of the embedded store: write throughput, search latency, memory and disk per procedure.

Synthetic procedures (random names and descriptions from a 5,000-word vocabulary) with random
unit vectors of dimension 384 (all-MiniLM-L6-v2's) are written in batches into a
:class:`procmem.stores.SQLiteStore` file; then ``--queries`` searches are timed at the full size
for the store's vector search, its lexical (FTS5 BM25) search and the fused
:class:`procmem.retrieval.HybridRetriever` search. Query embedding is excluded: the retriever gets
an embedder that returns a precomputed random vector, so the figures are the store's and the
fusion's own cost.

Targets: writes >= 2,000 procedures/s; search p50 <= 5 ms at 100,000 procedures.

Run: ``.venv/bin/python benchmarks/scale.py [--n 100000] [--usages 20000] [--queries 200]``;
``--profile`` prints where the fused search spends its time (cProfile).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from procmem.retrieval import HybridRetriever
from procmem.stores import SQLiteStore
from procmem.types import Procedure, Usage

DIM = 384


def _rss_bytes() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


@contextlib.contextmanager
def work_dir(keep: str | Path | None, prefix: str) -> Iterator[Path]:
    """A folder for a benchmark's files: ``keep`` (created, kept), else a temporary one removed after."""
    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix=prefix))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class _FixedEmbedder:
    """Returns queued vectors for queries: embedding time stays out of the measurement."""

    dim = DIM
    name = "random-384"

    def __init__(self) -> None:
        self.next: np.ndarray = np.zeros(DIM, np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self.next

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return np.tile(self.next, (len(texts), 1))


def _time(fn: Callable[[int], object], n: int) -> tuple[float, float]:
    lat = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        lat.append((time.perf_counter() - t0) * 1000.0)
    a = np.asarray(lat)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its figures; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="procedures")
    ap.add_argument("--usages", type=int, default=20_000, help="past requests (for the fused search)")
    ap.add_argument("--queries", type=int, default=200, help="timed searches per kind")
    ap.add_argument("--batch", type=int, default=1_000, help="procedures per write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", type=Path, default=None, help="where to put the database (default: a temp dir)")
    ap.add_argument("--profile", action="store_true", help="profile the fused search")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    vocab = [f"w{i}" for i in range(5_000)]
    words = rng.integers(0, len(vocab), size=(args.n, 14))
    tmp = tempfile.TemporaryDirectory() if args.dir is None else None
    folder = Path(tmp.name) if tmp else args.dir
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "scale.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)

    rss0 = _rss_bytes()
    store = SQLiteStore(path, embedding_model="random-384")
    t0 = time.perf_counter()
    ids: list[str] = []
    for start in range(0, args.n, args.batch):
        stop = min(start + args.batch, args.n)
        procs = [
            Procedure(kind="tool", name="_".join(vocab[w] for w in words[i, :2]) + f"_{i}",
                      description=" ".join(vocab[w] for w in words[i, 2:]), tags=[f"t{i % 10}"])
            for i in range(start, stop)
        ]
        store.put(procs, _unit(rng, stop - start))
        ids.extend(p.id for p in procs)
    write_s = time.perf_counter() - t0
    print(f"writes: {args.n:,} procedures in {write_s:.1f} s = {args.n / write_s:,.0f} procedures/s "
          f"(batches of {args.batch:,})", flush=True)

    t0 = time.perf_counter()
    if args.usages:
        pick = rng.integers(0, args.n, size=args.usages)
        uw = rng.integers(0, len(vocab), size=(args.usages, 10))
        usages = [Usage(query=" ".join(vocab[w] for w in uw[j]), procedure_id=ids[pick[j]])
                  for j in range(args.usages)]
        for start in range(0, args.usages, 5_000):
            store.add_usages(usages[start:start + 5_000], _unit(rng, len(usages[start:start + 5_000])))
    usage_s = time.perf_counter() - t0
    if args.usages:
        print(f"usages: {args.usages:,} in {usage_s:.1f} s = {args.usages / usage_s:,.0f} usages/s", flush=True)

    embedder = _FixedEmbedder()
    retriever = HybridRetriever(store, embedder)
    qv = _unit(rng, args.queries)
    qw = rng.integers(0, len(vocab), size=(args.queries, 8))
    qtext = [" ".join(vocab[w] for w in qw[i]) for i in range(args.queries)]
    # Warm the caches (the vector matrices load lazily on first search).
    t0 = time.perf_counter()
    store.vector_search(qv[0], k=5)
    store.usage_search(qv[0], k=5)
    cold_s = time.perf_counter() - t0
    embedder.next = qv[0]
    t0 = time.perf_counter()
    retriever.search(qtext[0], k=5, touch=False)
    index_s = time.perf_counter() - t0
    rss1 = _rss_bytes()

    def fused(i: int, touch: bool = False) -> object:
        embedder.next = qv[i]
        return retriever.search(qtext[i], k=5, touch=touch)

    rows = {
        "vector_search (k=5)": _time(lambda i: store.vector_search(qv[i], k=5), args.queries),
        "vector_search ns+tag filter": _time(lambda i: store.vector_search(qv[i], k=5, namespace="default",
                                                                           tags=["t3"]), args.queries),
        "lexical_search FTS5 (k=5)": _time(lambda i: store.lexical_search(qtext[i], k=5), args.queries),
        "usage_search (k=20)": _time(lambda i: store.usage_search(qv[i], k=20), args.queries),
        "HybridRetriever.search": _time(fused, args.queries),
        "HybridRetriever.search touch": _time(lambda i: fused(i, True), min(args.queries, 50)),
    }
    store.close()
    disk = sum(Path(str(path) + s).stat().st_size for s in ("", "-wal") if Path(str(path) + s).exists())

    print(f"first search loads the vector matrices: {cold_s * 1000:.0f} ms; "
          f"retriever's experience index: {index_s * 1000:.0f} ms")
    print()
    print(f"| search at {args.n:,} procedures, {args.usages:,} usages | p50 ms | p99 ms |")
    print("|---|---:|---:|")
    for label, (p50, p99) in rows.items():
        print(f"| {label} | {p50:.2f} | {p99:.2f} |")
    print()
    print(f"RSS: {(rss1 - rss0) / 1e6:.0f} MB for the loaded store = {(rss1 - rss0) / args.n:,.0f} bytes/procedure "
          f"(raw vector alone {DIM * 4:,} bytes; includes usages)")
    print(f"disk: {disk / 1e6:.0f} MB = {disk / args.n:,.0f} bytes/procedure (includes usages)")

    if args.profile:
        store = SQLiteStore(path, embedding_model="random-384")
        retriever = HybridRetriever(store, embedder)
        fused(0)
        prof = cProfile.Profile()
        prof.enable()
        for i in range(args.queries):
            embedder.next = qv[i]
            retriever.search(qtext[i], k=5, touch=False)
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(25)
        print(out.getvalue())
        store.close()
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
