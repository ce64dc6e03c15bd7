"""Tool retrieval on MetaTool: procmem's hybrid retriever against its peers, in one run.

Data: ``shared/data/metatool`` (MetaTool / ToolE, Huang et al., ICLR 2024, MIT): 199 tools and
10,307 past requests with the tool that served each. The usages are shuffled with ``--seed`` and
split: the first ``--split`` share is learned, the rest are the queries (gold = their tool).

Rows, all measured here on the same queries:

* ``procmem hybrid + usages``: :class:`procmem.retrieval.HybridRetriever` after learning the
  learn split with ``record_usages``;
* ``procmem hybrid, no usages``: the same retriever with nothing learned;
* ``BM25 (FTS5)``: the store's lexical search alone (Robertson & Zaragoza 2009);
* ``MiniLM name+description``: all-MiniLM-L6-v2 cosine to ``Procedure.text()`` alone;
* ``MiniLM + nearest past query``: each tool scored by the higher of its description cosine and
  the cosine of its most similar successful past request (the README's third peer).

With ``--all-requests`` it then ranks every request with nothing learned (procmem without usages,
BM25 and MiniLM): no split is needed there, and 10,307 queries settle a no-usage figure that one
split's 2,061 leave a few queries either side of its target.

With ``--online`` it then plays the agent at work: every request in the ``--seed`` order is
answered, then its tool's success is recorded (``record_usage``), so each answer uses only the
requests before it, as in the prequential protocol of the next-action benchmark. It prints
hit@1 and recall@5 per stretch of requests (the first 100, up to 1,000, up to 5,000, the rest)
for procmem and for MiniLM + nearest past query fed the same way; MiniLM alone learns nothing.
Query embeddings are computed once up front for every row, so its latencies exclude them.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/retrieval.py [--seed 0] [--split 0.8] [--limit N]
[--all-requests] [--online]``.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from procmem.embeddings import SentenceTransformerEmbedder
from procmem.evaluation_retrieval import evaluate_retrieval, read_tools_jsonl, read_usages_jsonl
from procmem.retrieval import HybridRetriever
from procmem.stores import InMemoryStore
from procmem.types import Procedure, Usage

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "metatool"


def _metrics(rankings: Sequence[Sequence[str]], gold: Sequence[str], latencies: Sequence[float]) -> dict[str, float]:
    h1 = r5 = r10 = mrr = 0.0
    for names, g in zip(rankings, gold, strict=True):
        h1 += float(bool(names) and names[0] == g)
        r5 += float(g in names[:5])
        r10 += float(g in names[:10])
        mrr += next((1.0 / (i + 1) for i, n in enumerate(names[:10]) if n == g), 0.0)
    n = max(len(gold), 1)
    lat = np.asarray(latencies, dtype=np.float64)
    return {"hit@1": h1 / n, "recall@5": r5 / n, "recall@10": r10 / n, "mrr@10": mrr / n,
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}


def _run_peer(queries: Sequence[str], rank: Callable[[str], list[str]]) -> tuple[list[list[str]], list[float]]:
    out, lat = [], []
    for q in queries:
        t0 = time.perf_counter()
        out.append(rank(q))
        lat.append((time.perf_counter() - t0) * 1000.0)
    return out, lat


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the table; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DATA, help="folder with tools.jsonl and usages.jsonl")
    ap.add_argument("--seed", type=int, default=0, help="seed of the learn/query split")
    ap.add_argument("--split", type=float, default=0.8, help="share of usages learned (the rest are queries)")
    ap.add_argument("--limit", type=int, default=None, help="answer at most this many queries")
    ap.add_argument("--all-requests", action="store_true",
                    help="also rank every request with nothing learned (procmem without usages and the "
                         "description-only peers), a larger sample for the no-usage target than one split")
    ap.add_argument("--online", action="store_true",
                    help="also answer every request in turn and record its tool's success after each")
    args = ap.parse_args(argv)
    if not 0.0 < args.split < 1.0:
        ap.error(f"--split must be in (0, 1), got {args.split}")

    tools = read_tools_jsonl(args.data / "tools.jsonl")
    usages = read_usages_jsonl(args.data / "usages.jsonl")
    order = list(range(len(usages)))
    random.Random(args.seed).shuffle(order)
    cut = int(round(args.split * len(usages)))
    learn = [usages[i] for i in order[:cut]]
    held = [usages[i] for i in order[cut:]][: args.limit]
    queries = [{"query": u["query"], "tools": [u["tool"]]} for u in held]
    gold = [u["tool"] for u in held]
    texts = [u["query"] for u in held]
    print(f"MetaTool: {len(tools)} tools, {len(learn)} usages learned, {len(held)} queries "
          f"(seed {args.seed}, split {args.split})", flush=True)

    embedder = SentenceTransformerEmbedder()
    embedder.embed_query("warm up")
    rows: dict[str, dict[str, float]] = {}

    for label, learned in (("procmem hybrid + usages", learn), ("procmem hybrid, no usages", ())):
        t0 = time.perf_counter()
        rep = evaluate_retrieval(tools, queries, usages=learned, embedder=embedder)
        rows[label] = {"hit@1": rep.hit_at_1, "recall@5": rep.recall_at_5, "recall@10": rep.recall_at_10,
                       "mrr@10": rep.mrr_at_10, "p50_ms": rep.latency_p50_ms, "p99_ms": rep.latency_p99_ms}
        print(f"  {label}: {time.perf_counter() - t0:.0f} s (learning {rep.learn_seconds:.0f} s)", flush=True)

    # Peers on a plain store: Procedure.text() embeddings (name + description), FTS5 BM25.
    store = InMemoryStore()
    procs = [Procedure(kind="tool", name=t["name"], description=t["description"]) for t in tools]
    store.put(procs, embedder.embed_documents([p.text() for p in procs]))
    name_of = {p.id: p.name for p in procs}
    id_of = {p.name: p.id for p in procs}
    learned_usages = [Usage(query=u["query"], procedure_id=id_of[u["tool"]], success=u["success"]) for u in learn]
    store.add_usages(learned_usages, embedder.embed_documents([u.query for u in learned_usages]))

    def bm25(q: str) -> list[str]:
        return [name_of[i] for i, _ in store.lexical_search(q, k=10)]

    def dense(q: str) -> list[str]:
        return [name_of[i] for i, _ in store.vector_search(embedder.embed_query(q), k=10)]

    def dense_past(q: str) -> list[str]:
        v = embedder.embed_query(q)
        score = dict(store.vector_search(v, k=len(procs)))
        for u, s in store.usage_search(v, k=50):
            if u.success and s > score.get(u.procedure_id, -1.0):
                score[u.procedure_id] = s
        return [name_of[i] for i, _ in sorted(score.items(), key=lambda t: -t[1])[:10]]

    for label, fn in (("BM25 (FTS5)", bm25), ("MiniLM name+description", dense),
                      ("MiniLM + nearest past query", dense_past)):
        ranks, lat = _run_peer(texts, fn)
        rows[label] = _metrics(ranks, gold, lat)
    _table(rows)

    if args.all_requests:
        # Nothing is learned, so every request is a fair query (no split needed).
        every = [{"query": u["query"], "tools": [u["tool"]]} for u in usages]
        rep = evaluate_retrieval(tools, every, embedder=embedder)
        rows = {"procmem hybrid, no usages": {
            "hit@1": rep.hit_at_1, "recall@5": rep.recall_at_5, "recall@10": rep.recall_at_10,
            "mrr@10": rep.mrr_at_10, "p50_ms": rep.latency_p50_ms, "p99_ms": rep.latency_p99_ms}}
        for label, fn in (("BM25 (FTS5)", bm25), ("MiniLM name+description", dense)):
            ranks, lat = _run_peer([u["query"] for u in usages], fn)
            rows[label] = _metrics(ranks, [u["tool"] for u in usages], lat)
        print(f"\nEvery request ({len(usages)}), nothing learned:")
        _table(rows)
    if args.online:
        _online(tools, [usages[i] for i in order][: args.limit], embedder)
    return 0


class _Precomputed:
    """An embedder that answers from vectors computed up front (falls back to the real one)."""

    def __init__(self, embedder: SentenceTransformerEmbedder, texts: Sequence[str]) -> None:
        self.inner, self.dim = embedder, embedder.dim
        self.name = getattr(embedder, "name", "minilm")
        self.cache = dict(zip(texts, embedder.embed_documents(list(texts)), strict=True))

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            self.cache.update(zip(missing, self.inner.embed_documents(missing), strict=True))
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed_documents([text])[0]


def _online(tools: Sequence[dict], stream: Sequence[dict], embedder: SentenceTransformerEmbedder) -> None:
    """Answer each request, then record its tool's success (see the module docstring)."""
    t0 = time.perf_counter()
    emb = _Precomputed(embedder, [u["query"] for u in stream])
    print(f"\nOnline: {len(stream)} requests answered in turn, each learned after its answer "
          f"(embedded up front in {time.perf_counter() - t0:.0f} s)", flush=True)
    retriever = HybridRetriever(InMemoryStore(), emb)
    procs = retriever.add_procedures([Procedure(kind="tool", name=t["name"], description=t["description"])
                                      for t in tools])
    id_of = {p.name: p.id for p in procs}
    name_of = {p.id: p.name for p in procs}
    peer = InMemoryStore()  # MiniLM + nearest past query, fed the same usages
    peer.put(procs, emb.embed_documents([p.text() for p in procs]))
    ranks: dict[str, list[list[str]]] = {"procmem hybrid": [], "MiniLM + nearest past query": [],
                                         "MiniLM name+description": []}
    lat: dict[str, list[float]] = {k: [] for k in ranks}
    for i, u in enumerate(stream):
        q, v = u["query"], emb.embed_query(u["query"])
        start = time.perf_counter()
        ranks["procmem hybrid"].append([name_of[r.procedure.id] for r in retriever.search(q, k=10, touch=False)])
        lat["procmem hybrid"].append((time.perf_counter() - start) * 1000.0)
        start = time.perf_counter()
        score = dict(peer.vector_search(v, k=len(procs)))
        ranks["MiniLM name+description"].append([name_of[p] for p, _ in sorted(score.items(),
                                                                               key=lambda t: -t[1])[:10]])
        lat["MiniLM name+description"].append((time.perf_counter() - start) * 1000.0)
        for past, s in peer.usage_search(v, k=50):
            if past.success and s > score.get(past.procedure_id, -1.0):
                score[past.procedure_id] = s
        ranks["MiniLM + nearest past query"].append([name_of[p] for p, _ in sorted(score.items(),
                                                                                   key=lambda t: -t[1])[:10]])
        lat["MiniLM + nearest past query"].append((time.perf_counter() - start) * 1000.0)
        retriever.record_usage(q, id_of[u["tool"]], bool(u.get("success", True)))
        peer.add_usages([Usage(query=q, procedure_id=id_of[u["tool"]], success=bool(u.get("success", True)))],
                        v[None, :])
        if (i + 1) % 1000 == 0:
            print(f"  {i + 1} requests, {time.perf_counter() - t0:.0f} s", flush=True)
    gold = [u["tool"] for u in stream]
    stretches = [(0, 100), (100, 1_000), (1_000, 5_000), (5_000, len(stream))]
    stretches = [(a, min(b, len(stream))) for a, b in stretches if a < len(stream)]
    head = " | ".join(f"{a + 1}-{b} hit@1 / r@5" for a, b in stretches)
    print(f"\n| {'method':<28} | all hit@1 / r@5 | {head} | p50_ms |")
    print(f"|{'-' * 30}|{'-' * 17}|" + "|".join("-" * (len(f"{a + 1}-{b} hit@1 / r@5") + 2)
                                                for a, b in stretches) + "|--------|")
    for label, rk in ranks.items():
        cells = []
        for a, b in [(0, len(stream)), *stretches]:
            m = _metrics(rk[a:b], gold[a:b], lat[label][a:b])
            cells.append(f"{m['hit@1']:.4f} / {m['recall@5']:.4f}")
        p50 = float(np.percentile(lat[label], 50))
        print(f"| {label:<28} | " + " | ".join(cells) + f" | {p50:6.2f} |")


def _table(rows: dict[str, dict[str, float]]) -> None:
    cols = ["hit@1", "recall@5", "recall@10", "mrr@10", "p50_ms", "p99_ms"]
    print()
    print(f"| {'method':<28} | " + " | ".join(f"{c:>9}" for c in cols) + " |")
    print(f"|{'-' * 30}|" + "|".join("-" * 11 for _ in cols) + "|")
    for label, m in rows.items():
        vals = [f"{m[c]:9.4f}" if not c.endswith("ms") else f"{m[c]:9.2f}" for c in cols]
        print(f"| {label:<28} | " + " | ".join(vals) + " |")


if __name__ == "__main__":
    sys.exit(main())
