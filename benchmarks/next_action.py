"""Next-action prediction benchmark: procmem vs its peers, prequential protocol, same run.

Runs :func:`procmem.evaluation.evaluate_next_action` on the shared data (sea: scope user, kypo:
scope group, bfcl: scope global with instructions) with our :class:`NextActionPredictor` and
the peers of ``shared/data/README.md`` (first-order Markov, IPAM, PPM order 5), and prints one
table. Task texts are embedded with all-MiniLM-L6-v2 (``SentenceTransformerEmbedder``) for data
with instructions.

    .venv/bin/python benchmarks/next_action.py [--data DIR] [--only sea,kypo] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from procmem.evaluation import evaluate_next_action, load_sessions_jsonl
from procmem.prediction import PEERS, NextActionPredictor

DATASETS = {"sea": "user", "kypo": "group", "bfcl": "global"}
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with sea/, kypo/, bfcl/")
    ap.add_argument("--only", default=",".join(DATASETS), help="comma-separated datasets")
    ap.add_argument("--limit", type=int, default=None, help="keep the first N actions of each session")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    head = (f"{'data':5} {'scope':6} {'model':8} {'top1':>6} {'top3':>6} {'mrr10':>6} {'prog1':>6} "
            f"{'prog3':>6} {'ECE':>6} {'p50 ms':>7} {'p99 ms':>7}  learn actions/s: streaming "
            f"(observe) | bulk replay (learn_sessions) | counting only")
    print(head)
    print("-" * len(head), flush=True)
    for name in names:
        if name not in DATASETS:
            ap.error(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
        sessions = load_sessions_jsonl(args.data / name / "sessions.jsonl")
        if args.limit:
            sessions = [s.model_copy(update={"actions": s.actions[: args.limit], "timestamps": None})
                        for s in sessions]
        embedder = None
        if any(s.task for s in sessions):
            import torch

            from procmem.embeddings import SentenceTransformerEmbedder

            torch.set_num_threads(1)
            embedder = SentenceTransformerEmbedder()
            embedder.embed_query("warm up")  # load the model outside the timed region

        # Learning throughput of bulk replay (learn_sessions: counting + the ranker on every
        # replay_stride-th action), as when a memory is reopened; separately timed.
        bulk = NextActionPredictor(embedder=embedder)
        t0 = time.perf_counter()
        bulk.learn_sessions(sessions)
        learn_rate = sum(len(s.actions) for s in sessions) / (time.perf_counter() - t0)
        counting = NextActionPredictor(embedder=embedder, online=False)
        t0 = time.perf_counter()
        counting.learn_sessions(sessions)
        count_rate = sum(len(s.actions) for s in sessions) / (time.perf_counter() - t0)

        report = evaluate_next_action(
            sessions, scope=DATASETS[name],
            model_factory=lambda e=embedder: NextActionPredictor(embedder=e),
            peers=list(PEERS),
        )
        for m in report.models:
            extra = f"{m.learn_actions_per_s:,.0f}"
            if m.name == "procmem":
                extra += f" | {learn_rate:,.0f} | {count_rate:,.0f}"
            ece = f"{m.ece:.3f}" if m.ece is not None else "-"
            print(f"{name:5} {DATASETS[name]:6} {m.name:8} {m.top1:6.3f} {m.top3:6.3f} "
                  f"{m.mrr10:6.3f} {m.program_top1:6.3f} {m.program_top3:6.3f} {ece:>6} "
                  f"{m.latency_p50_ms:7.3f} {m.latency_p99_ms:7.2f}  {extra}", flush=True)
        print(f"{name}: {report.sessions} sessions, {report.targets} targets, "
              f"{report.seconds:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
