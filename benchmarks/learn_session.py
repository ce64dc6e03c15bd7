"""What learning one more session, and predicting through the facade, cost as a memory's history grows.

An agent learns each finished task (``learn_session``, the LangChain middleware's end of run, the
HTTP ``/learn``): the session is stored, the predictor learns it, and workflow mining runs. This
script grows a memory's history to each of ``--sizes`` sessions (real sessions of
``../shared/data/kypo``, typed by trainees in cyber-security trainings, cycled with fresh ids;
learned in bulk with ``learn_sessions``, mining on), then times ``--probes`` single
``learn_session`` calls of sessions not yet learned.

Peer, in the same run: a full recount, :func:`procmem.learning.mine_workflows` over every
stored session, which is what each ``learn_session`` ran before round 9 (it then also wrote the
same workflows, so the recount alone is a lower bound of that cost). procmem now keeps the
n-gram counts of each namespace (:class:`procmem.learning.PatternCounter`) and examines only
the patterns of the new session.

The hashing embedder is used so the figures are procmem's own cost (a promoted workflow is
embedded once, by whatever embedder the memory has).

Then ``--predictions`` next-action predictions are timed through the facade
(``ProceduralMemory.predict_next_action``, which also names the learned workflow a predicted step
belongs to) and through the predictor alone, the peer that shows the facade's own cost; the
issue's target is p50 <= 1 ms when no embedding is needed.

Run: ``.venv/bin/python benchmarks/learn_session.py [--sizes 200,1000,5000] [--probes 20]
[--predictions 300]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from procmem import ProceduralMemory
from procmem.embeddings import HashingEmbedder
from procmem.learning import PatternCounter, mine_workflows
from procmem.types import SessionRecord

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with kypo/sessions.jsonl")
    ap.add_argument("--sizes", default="200,1000,5000", help="history sizes, in sessions, ascending")
    ap.add_argument("--probes", type=int, default=20, help="single learn_session calls timed per size")
    ap.add_argument("--predictions", type=int, default=300, help="predict_next_action calls timed at the end")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    if sizes != sorted(sizes) or sizes[0] < 1 or args.probes < 1:
        ap.error("--sizes must be ascending positive integers and --probes >= 1")
    path = args.data / "kypo" / "sessions.jsonl"
    with path.open(encoding="utf-8") as f:
        base = [json.loads(line)["actions"] for line in f if line.strip()]

    counter = iter(range(10**9))

    def next_sessions(n: int) -> list[tuple[str, list[str]]]:
        out = []
        for _ in range(n):
            i = next(counter)
            out.append((f"s{i}", base[i % len(base)]))
        return out

    rows = []
    with tempfile.TemporaryDirectory(prefix="procmem-learn-") as tmp:
        memory = ProceduralMemory(path=Path(tmp) / "m.sqlite3", embedder=HashingEmbedder())
        learned = 0
        actions = 0
        for size in sizes:
            bulk = next_sessions(max(0, size - learned))
            memory.learn_sessions([SessionRecord(session_id=sid, actions=a) for sid, a in bulk])
            learned += len(bulk)
            actions += sum(len(a) for _, a in bulk)
            ours, peer = [], []
            for sid, a in next_sessions(args.probes):
                t = time.perf_counter()
                memory.learn_session(a, session_id=sid)
                ours.append((time.perf_counter() - t) * 1000)
                learned += 1
                actions += len(a)
            for _ in range(min(3, args.probes)):  # the recount is slow and steady: a few runs suffice
                t = time.perf_counter()
                mine_workflows(memory.store.iter_sessions(namespace="default"), min_support=memory.mining.min_support,
                               min_success_rate=0.0, min_length=memory.mining.min_length,
                               max_length=memory.mining.max_length)
                peer.append((time.perf_counter() - t) * 1000)
            rows.append((size, actions, np.percentile(ours, 50), np.percentile(ours, 99), np.median(peer)))
            print(f"history of {size:,} sessions measured", flush=True)
        # Predicting through the facade (what an agent calls) against the predictor alone.
        contexts = [a[max(0, i - 3):i] for a in base[:60] for i in range(1, len(a), 7)][:args.predictions]
        workflows = sum(1 for p in memory.store.list(kinds=["workflow"]) if p.metadata.get("status") == "promoted")
        predictor = memory.predictor()
        timings = {}
        for label, fn in (("ProceduralMemory.predict_next_action", memory.predict_next_action),
                          ("NextActionPredictor.predict (the model alone)", predictor.predict)):
            fn(contexts[0], top_k=3)
            ms = []
            for c in contexts:
                t = time.perf_counter()
                fn(c, top_k=3)
                ms.append((time.perf_counter() - t) * 1000)
            timings[label] = (np.percentile(ms, 50), np.percentile(ms, 99))
        memory.close()

    # What the kept counts cost: kypo's own sessions counted once (cycled copies add no pattern).
    tracemalloc.start()
    kept = PatternCounter(min_length=memory.mining.min_length, max_length=memory.mining.max_length)
    kept.add(base)
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(f"\npattern counts of kypo's {len(base)} sessions ({sum(map(len, base)):,} actions): "
          f"{len(kept):,} patterns, {held / 1e6:.1f} MB ({held / max(1, len(kept)):.0f} B each)")
    print(f"\nlearn_session with a growing history ({path}, cycled; hashing embedder)")
    print("| history (sessions) | actions stored | procmem p50 ms | procmem p99 ms | full recount (peer) ms |")
    print("|---:|---:|---:|---:|---:|")
    for size, n_actions, p50, p99, rec in rows:
        print(f"| {size:,} | {n_actions:,} | {p50:.1f} | {p99:.1f} | {rec:.0f} |")
    print(f"\nnext-action prediction, top 3, {len(contexts)} contexts of kypo, {learned:,} sessions and "
          f"{workflows} promoted workflows learned (no embedding needed: contexts seen before)")
    print("| call | p50 ms | p99 ms |")
    print("|---|---:|---:|")
    for label, (p50, p99) in timings.items():
        print(f"| {label} | {p50:.2f} | {p99:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
