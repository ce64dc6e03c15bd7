"""What learning one more session costs as a memory's history grows.

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

Run: ``.venv/bin/python benchmarks/learn_session.py [--sizes 200,1000,5000] [--probes 20]``.
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
