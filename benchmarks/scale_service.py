"""The HTTP service under load, and ChromaStore against SQLiteStore at scale, in one run.

Part 1, the service: ``python -m procmem.server`` runs in its own process on loopback over a
SQLite store seeded with ``--service-procedures`` procedures and ``--service-sessions`` learned
sessions; this process is the load generator: ``--clients`` concurrent closed-loop httpx clients
send requests for ``--seconds`` seconds to ``/predict``, then to ``/search``. Reported per
endpoint: requests/s, p50 and p99 latency (ms, client side, including HTTP), errors.

Part 2, the stores: ``--procedures`` synthetic procedures (Zipf-distributed words, random unit
vectors of ``--dim`` dimensions: embedding time is excluded, so this measures the stores) are
written to a :class:`SQLiteStore` and to an embedded :class:`ChromaStore` in batches of
``--batch``; then, once SQLiteStore's HNSW graph and tantivy index are built (the steady state),
up to ``--queries`` vector searches and lexical searches (k = 10, namespace filter as the facade
sends it; at most ``--query-seconds`` per kind) are timed. Reported per
store: write throughput (procedures/s), search p50 and p99 (ms), queries timed (vector/BM25),
disk bytes per procedure (all files of the store after closing).

Defaults run in a few minutes on two cores (hashing embedder for the service, so the numbers
are the service's and not a model's). For the large run:
``.venv/bin/python benchmarks/scale_service.py --procedures 1000000``.

Run: ``.venv/bin/python benchmarks/scale_service.py [--procedures 100000] [--clients 8] [--seconds 10]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import numpy as np
from scale import work_dir  # benchmarks/scale.py, beside this script

from procmem import MiningConfig, ProceduralMemory
from procmem.embeddings import HashingEmbedder
from procmem.stores import SQLiteStore
from procmem.types import Procedure, SessionRecord

# ---------------------------------------------------------------------------- synthetic data
_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "di", "fe", "go", "hu", "ja"]


def _vocabulary(n: int, rng: np.random.Generator) -> list[str]:
    words: set[str] = set()
    while len(words) < n:
        k = int(rng.integers(2, 5))
        words.add("".join(rng.choice(_SYLLABLES, size=k)))
    return sorted(words)


class Corpus:
    """Zipf-distributed words (s = 1.1) over a fixed vocabulary, and random unit vectors."""

    def __init__(self, dim: int, seed: int = 0, vocab: int = 20_000) -> None:
        self.rng = np.random.default_rng(seed)
        self.words = _vocabulary(vocab, self.rng)
        ranks = np.arange(1, vocab + 1, dtype=np.float64)
        p = ranks**-1.1
        self.cdf = np.cumsum(p / p.sum())
        self.dim = dim

    def text(self, n: int) -> str:
        idx = np.minimum(np.searchsorted(self.cdf, self.rng.random(n)), len(self.words) - 1)
        return " ".join(self.words[i] for i in idx)

    def procedures(self, n: int, start: int = 0, namespaces: int = 1) -> list[Procedure]:
        return [
            Procedure(
                id=f"p{start + i}",
                name=self.text(3),
                description=self.text(12),
                steps=[self.text(3) for _ in range(3)],
                tags=[f"t{(start + i) % 50}"],
                namespace=f"ns{(start + i) % namespaces}" if namespaces > 1 else "default",
            )
            for i in range(n)
        ]

    def vectors(self, n: int) -> np.ndarray:
        v = self.rng.standard_normal((n, self.dim)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def _percentiles(ms: Sequence[float]) -> tuple[float, float]:
    if not ms:
        return float("nan"), float("nan")
    a = np.asarray(ms, dtype=np.float64)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def _disk_bytes(paths: Sequence[Path]) -> int:
    total = 0
    for p in paths:
        if p.is_file():
            total += p.stat().st_size
        elif p.is_dir():
            total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return total


def _table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    print("  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(
            "  ".join(str(x).rjust(w) if i else str(x).ljust(w) for i, (x, w) in enumerate(zip(r, widths, strict=True)))
        )


# ---------------------------------------------------------------------------- part 1: service
def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _seed_service_store(db: Path, n_procs: int, n_sessions: int, corpus: Corpus) -> list[list[str]]:
    memory = ProceduralMemory(path=db, embedder=HashingEmbedder(), mining=MiningConfig(enabled=False))
    for start in range(0, n_procs, 500):
        memory.add_many(corpus.procedures(min(500, n_procs - start), start=start))
    tools = [corpus.text(1) for _ in range(40)]
    sessions = []
    for i in range(n_sessions):
        length = int(corpus.rng.integers(3, 8))
        actions = [f"{tools[int(corpus.rng.integers(0, len(tools)))]} {corpus.text(1)}" for _ in range(length)]
        sessions.append(SessionRecord(session_id=f"s{i}", actions=actions, outcome="success"))
    memory.learn_sessions(sessions)
    memory.close()
    return [s.actions for s in sessions]


async def _load(
    url: str, clients: int, seconds: float, make_request: Callable[[int], tuple[str, dict]]
) -> tuple[int, int, list[float], float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal errors
        i = w
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            while time.perf_counter() < deadline:
                path, body = make_request(i)
                i += clients
                t0 = time.perf_counter()
                try:
                    r = await c.post(path, json=body)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - t0) * 1000.0)
                errors += not ok

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(clients)))
    return len(latencies), errors, latencies, time.perf_counter() - t0


def bench_service(args: argparse.Namespace, tmp: Path) -> None:
    corpus = Corpus(dim=256, seed=args.seed)
    db = tmp / "service.sqlite3"
    t0 = time.perf_counter()
    sessions = _seed_service_store(db, args.service_procedures, args.service_sessions, corpus)
    print(
        f"seeded the service store: {args.service_procedures} procedures, {len(sessions)} sessions"
        f" in {time.perf_counter() - t0:.1f} s"
    )
    port = _free_port()
    env = {**os.environ, "PROCMEM_EMBEDDER": "hashing", "PROCMEM_DB": str(db), "PROCMEM_DATA_DIR": str(tmp)}
    env.pop("PROCMEM_API_KEY", None)
    cmd = [sys.executable, "-m", "procmem.server", "--port", str(port), "--log-level", "warning"]
    if args.workers > 1:
        cmd += ["--workers", str(args.workers)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"server exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server did not start within 120 s")
            time.sleep(0.2)
        # warm up: the predictor is rebuilt from the stored sessions on first use
        httpx.post(f"{url}/predict", json={"current_context": sessions[0][:2]}, timeout=300)
        httpx.post(f"{url}/search", json={"query": "warm up"}, timeout=300)
        queries = [corpus.text(3) for _ in range(1000)]

        def predict_req(i: int) -> tuple[str, dict]:
            s = sessions[i % len(sessions)]
            return "/predict", {"current_context": s[: 1 + i % (len(s) - 1)], "top_k": 3}

        def search_req(i: int) -> tuple[str, dict]:
            return "/search", {"query": queries[i % len(queries)], "k": 5}

        rows = []
        for name, make in (("/predict", predict_req), ("/search", search_req)):
            n, errors, lat, wall = asyncio.run(_load(url, args.clients, args.seconds, make))
            p50, p99 = _percentiles(lat)
            rows.append([name, str(args.clients), f"{n / wall:.1f}", f"{p50:.1f}", f"{p99:.1f}", str(errors), str(n)])
        _table(
            f"Service on loopback: {args.workers} worker(s), SQLite store, hashing embedder, "
            f"{args.service_procedures} procedures, {len(sessions)} sessions, {args.seconds:.0f} s per endpoint",
            ["endpoint", "clients", "req/s", "p50 ms", "p99 ms", "errors", "requests"],
            rows,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------- part 2: stores
def _bench_store(name: str, store, paths: Sequence[Path], args: argparse.Namespace) -> list[str]:
    corpus = Corpus(dim=args.dim, seed=args.seed)
    n = args.procedures
    t_write = 0.0
    for start in range(0, n, args.batch):
        procs = corpus.procedures(min(args.batch, n - start), start=start, namespaces=args.namespaces)
        vecs = corpus.vectors(len(procs))
        t0 = time.perf_counter()
        store.put(procs, vecs)
        t_write += time.perf_counter() - t0
        if (start // args.batch) % 20 == 0:
            print(f"  {name}: {start + len(procs):,} / {n:,} written ({(start + len(procs)) / t_write:,.0f}/s)")
    qvecs = corpus.vectors(args.queries)
    qtexts = [corpus.text(3) for _ in range(args.queries)]
    ns = "default" if args.namespaces == 1 else "ns0"
    store.vector_search(qvecs[0], k=10, namespace=ns)  # warm caches
    store.lexical_search(qtexts[0], k=10, namespace=ns)
    if hasattr(store, "wait_for_ann"):  # the steady state: HNSW graph and tantivy index built
        store.wait_for_ann()
        store.wait_for_lexical()
    vec_ms: list[float] = []
    lex_ms: list[float] = []
    for timings, queries, search in (
        (vec_ms, qvecs, store.vector_search),
        (lex_ms, qtexts, store.lexical_search),
    ):
        budget = time.perf_counter() + args.query_seconds
        for q in queries:
            t0 = time.perf_counter()
            search(q, k=10, namespace=ns)
            timings.append((time.perf_counter() - t0) * 1000.0)
            if t0 > budget:
                break
    store.close()
    disk = _disk_bytes(paths)
    v50, v99 = _percentiles(vec_ms)
    l50, l99 = _percentiles(lex_ms)
    return [
        name,
        f"{n:,}",
        f"{n / t_write:,.0f}",
        f"{v50:.1f}",
        f"{v99:.1f}",
        f"{l50:.1f}",
        f"{l99:.1f}",
        f"{len(vec_ms)}/{len(lex_ms)}",
        f"{disk / n:,.0f}",
    ]


def bench_stores(args: argparse.Namespace, tmp: Path) -> None:
    rows = []
    if "sqlite" in args.stores:
        path = tmp / "scale.sqlite3"
        print(f"SQLiteStore: writing {args.procedures:,} procedures")
        rows.append(
            _bench_store(
                "SQLiteStore",
                SQLiteStore(path),
                [path, Path(f"{path}-wal"), Path(f"{path}-shm")],
                args,
            )
        )
    if "chroma" in args.stores:
        from procmem.stores.chroma import ChromaStore

        path = tmp / "chroma"
        print(f"ChromaStore (embedded): writing {args.procedures:,} procedures")
        rows.append(_bench_store("ChromaStore (embedded)", ChromaStore(path=path), [path], args))
    _table(
        f"Stores at {args.procedures:,} procedures, dim {args.dim}, {args.namespaces} namespace(s),"
        f" batches of {args.batch}, k = 10",
        [
            "store",
            "procedures",
            "writes/s",
            "vector p50 ms",
            "vector p99 ms",
            "BM25 p50 ms",
            "BM25 p99 ms",
            "queries",
            "disk B/item",
        ],
        rows,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["all", "service", "stores"], default="all")
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients")
    parser.add_argument("--seconds", type=float, default=10.0, help="load duration per endpoint, seconds")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes of the service")
    parser.add_argument("--service-procedures", type=int, default=1_000)
    parser.add_argument("--service-sessions", type=int, default=500)
    parser.add_argument(
        "--procedures", type=int, default=100_000, help="procedures per store (1000000 for the large run)"
    )
    parser.add_argument("--dim", type=int, default=384, help="vector dimension (384 = all-MiniLM-L6-v2)")
    parser.add_argument("--batch", type=int, default=1_000, help="procedures per put")
    parser.add_argument("--queries", type=int, default=200, help="timed searches per kind")
    parser.add_argument("--query-seconds", type=float, default=30.0, help="time budget per search kind and store")
    parser.add_argument("--namespaces", type=int, default=1)
    parser.add_argument("--stores", default="sqlite,chroma", help="comma-separated: sqlite, chroma")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", default=None, help="directory to keep the stores in (default: a temp dir)")
    args = parser.parse_args(argv)
    args.stores = {s.strip() for s in args.stores.split(",") if s.strip()}
    with work_dir(args.keep, "procmem-scale-") as tmp:
        if args.part in ("all", "service"):
            bench_service(args, tmp)
        if args.part in ("all", "stores"):
            bench_stores(args, tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
