"""Next-action prediction at scale: 10,000,000 learned transitions, and their persistence.

Part 1, the predictor in memory: synthetic shell-like sessions (below) totalling
``--transitions`` learned transitions (a transition is one action following the one before it
in a session: a session of n actions holds n - 1) are learned by bulk replay,
:meth:`procmem.prediction.NextActionPredictor.learn_sessions`, with no embedder, so every
figure is the predictor's own cost. Reported: learning throughput (actions/s, progress printed
every ``--progress`` transitions), resident memory (VmRSS) per transition, and the latency of
``predict(context, top_k=3)`` and ``rank(context, k=10)`` (p50, p99, ms) over ``--queries``
contexts taken from held-out sessions.

Part 2, persistence: the learned state persists as the sessions themselves, stored by
:class:`procmem.ProceduralMemory` and replayed into a fresh predictor when a memory is opened
and first asked to predict. ``--persist-transitions`` transitions of the same sessions are
written through ``ProceduralMemory.learn_sessions`` into a SQLite file (hashing embedder,
workflow mining off: mining is its own cost); reported: write throughput, disk bytes per
transition (database, WAL and shared-memory files after closing), and the time to reopen the
memory and rebuild its predictor (the replay), with the resident memory it adds. Writing is
fast; the replay is part 1's ``learn_sessions`` plus reading the JSON rows, so it runs at
part 1's learning rate, and reopening a 10,000,000-transition memory takes about as long as
part 1's learning. The default persistence size (1,000,000) keeps the run short;
``--persist-transitions 10000000`` runs it at full size.

Synthetic sessions: a vocabulary of ``--vocab`` shell commands (program, subcommand,
argument: ``git checkout feature-12``), drawn Zipf-distributed (s = 1.1); 10 to 50 actions per
session; with probability ``--procedure-share`` the next stretch of a session is one of
``--procedures`` recurring multi-step procedures (3 to 8 commands each, themselves
Zipf-popular), so that there is structure to learn; 80% of sessions succeed. All from one
seeded generator (``--seed``).

Targets: the issue asks for these figures and sets none at this size. For reference, the
README's bulk replay of real sessions (sea, kypo) reaches 36,000-79,000 actions/s, and its store
searches aim at p50 <= 5 ms.

Run: ``.venv/bin/python benchmarks/scale_predictor.py [--transitions 10000000]
[--persist-transitions 1000000] [--queries 300]``.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scale import _rss_bytes, work_dir  # benchmarks/scale.py, beside this script

from procmem import MiningConfig, ProceduralMemory
from procmem.embeddings import HashingEmbedder
from procmem.prediction import PEERS, NextActionPredictor
from procmem.types import SessionRecord

_PROGRAMS = {
    "git": ["status", "add", "commit -m", "checkout", "pull", "push origin", "diff", "log", "rebase", "merge"],
    "docker": ["build -t", "run", "ps", "logs", "exec -it", "compose up", "compose down", "pull", "push", "stop"],
    "kubectl": ["get pods -n", "describe pod", "logs", "apply -f", "delete pod", "rollout status", "scale", "exec"],
    "make": ["build", "test", "deploy", "clean", "lint", "release", "docs", "bench"],
    "python": ["-m pytest", "manage.py migrate", "setup.py sdist", "-m pip install", "train.py --config", "-m venv"],
    "npm": ["install", "run build", "run test", "run lint", "publish", "ci", "audit"],
    "ls": ["-la", "-lh", "-R", "-t"],
    "cd": ["", "..", "~"],
    "cat": ["", "-n"],
    "grep": ["-rn", "-i", "-l", "-c"],
    "vim": [""],
    "ssh": ["", "-i key.pem"],
    "curl": ["-s", "-X POST", "-I", "-o out.json"],
    "tail": ["-f", "-n 100"],
    "psql": ["-h", "-c", "-f"],
    "terraform": ["init", "plan", "apply", "destroy", "fmt"],
    "aws": ["s3 ls", "s3 cp", "ec2 describe-instances", "logs tail", "lambda invoke"],
    "systemctl": ["status", "restart", "stop", "start", "enable"],
    "cargo": ["build", "test", "run", "clippy", "fmt"],
    "go": ["build", "test", "run", "mod tidy", "vet"],
    "rm": ["-rf", "-f", ""],
    "mkdir": ["-p", ""],
    "cp": ["-r", ""],
    "tar": ["-xzf", "-czf"],
}
_ARGS = [
    "src",
    "tests",
    "README.md",
    "main.py",
    "app",
    "config.yaml",
    "feature-12",
    "main",
    "develop",
    "web",
    "api",
    "db",
    "worker",
    "prod",
    "staging",
    "localhost",
    "server-1",
    "server-2",
    "logs",
    "build",
    "dist",
    "deploy.yaml",
    "Dockerfile",
    "requirements.txt",
    "data.csv",
    "notes.txt",
    "ingress",
    "redis",
    "postgres",
    "nginx",
    "auth",
    "billing",
    "search",
    "frontend",
    "backend",
    "v1.2.0",
    "v1.3.0",
    "hotfix-7",
]


def _zipf_cdf(n: int, s: float = 1.1) -> np.ndarray:
    p = np.arange(1, n + 1, dtype=np.float64) ** -s
    return np.cumsum(p / p.sum())


class Sessions:
    """Seeded synthetic shell sessions: Zipf-distributed commands and recurring procedures.

    Args:
        vocab: Distinct commands.
        procedures: Recurring multi-step procedures (3-8 commands each).
        procedure_share: Probability in [0, 1] that the next stretch of a session is a procedure.
        seed: Seed of the generator.
    """

    def __init__(
        self, *, vocab: int = 3_000, procedures: int = 300, procedure_share: float = 0.4, seed: int = 0
    ) -> None:
        self.rng = np.random.default_rng(seed)
        commands: set[str] = set()
        programs = sorted(_PROGRAMS)
        while len(commands) < vocab:
            prog = programs[int(self.rng.integers(len(programs)))]
            sub = _PROGRAMS[prog][int(self.rng.integers(len(_PROGRAMS[prog])))]
            arg = _ARGS[int(self.rng.integers(len(_ARGS)))]
            suffix = f" {int(self.rng.integers(1, 40))}" if self.rng.random() < 0.5 else ""
            commands.add(" ".join(w for w in (prog, sub, arg + suffix) if w))
        self.commands = sorted(commands)
        self.rng.shuffle(self.commands)  # popularity independent of spelling
        self.cdf = _zipf_cdf(len(self.commands))
        self.procedures = [
            [self.commands[i] for i in self._draw(int(self.rng.integers(3, 9)))] for _ in range(procedures)
        ]
        self.proc_cdf = _zipf_cdf(procedures)
        self.procedure_share = procedure_share
        self.n = 0

    def _draw(self, n: int) -> np.ndarray:
        return np.minimum(np.searchsorted(self.cdf, self.rng.random(n)), len(self.cdf) - 1)

    def session(self) -> dict:
        """One session: ``{"session_id", "actions", "outcome"}``."""
        length = int(self.rng.integers(10, 51))
        actions: list[str] = []
        pool = self._draw(length)
        j = 0
        while len(actions) < length:
            if self.rng.random() < self.procedure_share:
                k = min(int(np.searchsorted(self.proc_cdf, self.rng.random())), len(self.procedures) - 1)
                actions.extend(self.procedures[k])
            else:
                actions.append(self.commands[pool[j % length]])
                j += 1
        del actions[length:]
        self.n += 1
        return {
            "session_id": f"s{self.n}",
            "actions": actions,
            "outcome": "success" if self.rng.random() < 0.8 else "failure",
        }

    def until(self, transitions: int) -> Iterator[dict]:
        """Sessions until they hold ``transitions`` transitions (the last one is cut to fit)."""
        left = transitions
        while left > 0:
            s = self.session()
            if len(s["actions"]) - 1 > left:
                s["actions"] = s["actions"][: left + 1]
            left -= len(s["actions"]) - 1
            yield s


def _percentiles(ms: Sequence[float]) -> tuple[float, float]:
    a = np.asarray(ms, dtype=np.float64)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def _table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join(("-" * (w + 1) + ":") if i else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|")
    for r in rows:
        print(
            "| "
            + " | ".join(
                (str(x).rjust(w) if i else str(x).ljust(w)) for i, (x, w) in enumerate(zip(r, widths, strict=True))
            )
            + " |"
        )


def _contexts(gen: Sessions, n: int) -> list[list[str]]:
    """``n`` held-out contexts: prefixes (1-10 actions) of fresh sessions."""
    out = []
    while len(out) < n:
        s = gen.session()["actions"]
        cut = int(gen.rng.integers(1, min(10, len(s) - 1) + 1))
        out.append(s[:cut])
    return out


def _time_queries(pred: Any, contexts: Sequence[list[str]]) -> dict[str, list[float]]:
    """Latencies (ms) of ``predict(top_k=3)`` (procmem only: the peers have no confidences) and ``rank(k=10)``."""
    has_predict = hasattr(pred, "predict")
    if has_predict:
        pred.predict(contexts[0], top_k=3)  # warm caches
    pred.rank(contexts[0], k=10)
    out: dict[str, list[float]] = {"predict top_k=3": [], "rank k=10": []}
    for ctx in contexts:
        if has_predict:
            t0 = time.perf_counter()
            pred.predict(ctx, top_k=3)
            out["predict top_k=3"].append((time.perf_counter() - t0) * 1000.0)
        t0 = time.perf_counter()
        pred.rank(ctx, k=10)
        out["rank k=10"].append((time.perf_counter() - t0) * 1000.0)
    return out


def _top1(pred: Any, gen: Sessions, n: int) -> float:
    """Top-1 accuracy on ``n`` held-out (context, next action) pairs: a sanity check that it learned."""
    hits = 0
    for _ in range(n):
        s = gen.session()["actions"]
        cut = int(gen.rng.integers(1, len(s)))
        got = pred.rank(s[:cut], k=1)
        hits += bool(got) and got[0] == s[cut]
    return hits / n


def _learn(pred: Any, chunk: list[dict]) -> None:
    if isinstance(pred, NextActionPredictor):
        pred.learn_sessions(chunk)
        return
    for s in chunk:  # a peer: the same sessions, one by one
        pred.learn_session(s["actions"], outcome=s.get("outcome"), session_id=s.get("session_id"))


def bench_memory(args: argparse.Namespace, model: str = "procmem") -> None:
    """Learn ``args.transitions`` transitions with ``model`` ("procmem" or a peer name) and time it."""
    gen = Sessions(vocab=args.vocab, procedures=args.procedures, procedure_share=args.procedure_share, seed=args.seed)
    held_out = Sessions(
        vocab=args.vocab, procedures=args.procedures, procedure_share=args.procedure_share, seed=args.seed
    )
    held_out.rng = np.random.default_rng(args.seed + 1)  # same commands and procedures, other sessions
    contexts = _contexts(held_out, args.queries)
    pred: Any = NextActionPredictor() if model == "procmem" else PEERS[model]()
    gc.collect()
    rss0 = _rss_bytes()
    done = {"transitions": 0, "actions": 0, "sessions": 0}
    next_report = args.progress
    t_learn = 0.0
    t_start = time.perf_counter()

    def counted(stream: Iterator[dict]) -> Iterator[dict]:
        for s in stream:
            done["transitions"] += len(s["actions"]) - 1
            done["actions"] += len(s["actions"])
            done["sessions"] += 1
            yield s

    print(f"{model}: learning {args.transitions:,} transitions (no embedder)", flush=True)
    stream = counted(gen.until(args.transitions))
    while True:
        chunk = []
        for s in stream:
            chunk.append(s)
            if done["transitions"] >= next_report:
                break
        if not chunk:
            break
        t0 = time.perf_counter()
        _learn(pred, chunk)
        t_learn += time.perf_counter() - t0
        rss = _rss_bytes()
        print(
            f"  {done['transitions']:>12,} transitions  {done['sessions']:>9,} sessions  "
            f"learning {done['actions'] / t_learn:>8,.0f} actions/s  "
            f"RSS {rss / 2**30:5.2f} GiB ({(rss - rss0) / done['transitions']:,.0f} B/transition)  "
            f"wall {time.perf_counter() - t_start:,.0f} s",
            flush=True,
        )
        if rss > args.max_rss_gib * 2**30:
            print(f"  stopping: RSS above --max-rss-gib {args.max_rss_gib}", flush=True)
            break
        next_report += args.progress
    gc.collect()
    rss = _rss_bytes()
    lat = _time_queries(pred, contexts)
    top1 = _top1(pred, held_out, args.queries)
    if hasattr(pred, "stats"):
        stats = {k: v for k, v in pred.stats().items() if k != "weights"}
        print(f"  predictor: {stats}", flush=True)
    rows = [
        [
            model,
            f"{done['transitions']:,}",
            f"{done['sessions']:,}",
            f"{done['actions'] / t_learn:,.0f}",
            f"{t_learn:,.0f}",
            f"{(rss - rss0) / 2**30:.2f}",
            f"{(rss - rss0) / done['transitions']:,.0f}",
            *(f"{x:.2f}" if lat[name] else "-" for name in lat for x in _percentiles(lat[name] or [0.0])),
            f"{top1:.3f}",
        ]
    ]
    _table(
        f"{model} in memory: bulk replay (learn_session[s]), no embedder, {len(contexts)} held-out"
        f" contexts, vocabulary {len(gen.commands):,} commands",
        [
            "model",
            "transitions",
            "sessions",
            "learn actions/s",
            "learn s",
            "RSS GiB",
            "RSS B/transition",
            "predict p50 ms",
            "predict p99 ms",
            "rank p50 ms",
            "rank p99 ms",
            "top-1",
        ],
        rows,
    )


def _disk_bytes(path: Path) -> int:
    return sum(
        Path(f"{path}{suffix}").stat().st_size for suffix in ("", "-wal", "-shm") if Path(f"{path}{suffix}").exists()
    )


def bench_persistence(args: argparse.Namespace, tmp: Path) -> None:
    gen = Sessions(vocab=args.vocab, procedures=args.procedures, procedure_share=args.procedure_share, seed=args.seed)
    db = tmp / "sessions.sqlite3"
    embedder = HashingEmbedder()
    memory = ProceduralMemory(path=db, embedder=embedder, mining=MiningConfig(enabled=False))
    n = args.persist_transitions
    print(f"\nPersisting {n:,} transitions through ProceduralMemory (SQLite, hashing embedder, mining off)", flush=True)
    t0 = time.perf_counter()
    n_sessions = n_actions = 0
    next_report = args.progress
    done = 0
    batch: list[SessionRecord] = []
    for s in gen.until(n):
        batch.append(SessionRecord(session_id=s["session_id"], actions=s["actions"], outcome=s["outcome"]))
        done += len(s["actions"]) - 1
        n_actions += len(s["actions"])
        if len(batch) >= 2_000:
            n_sessions += memory.learn_sessions(batch)
            batch = []
        if done >= next_report:
            print(
                f"  {done:>12,} transitions written  {n_actions / (time.perf_counter() - t0):,.0f} actions/s",
                flush=True,
            )
            next_report += args.progress
    n_sessions += memory.learn_sessions(batch)
    t_write = time.perf_counter() - t0
    memory.close()
    disk = _disk_bytes(db)
    gc.collect()
    rss0 = _rss_bytes()
    t0 = time.perf_counter()
    memory = ProceduralMemory(path=db, embedder=embedder, mining=MiningConfig(enabled=False))
    pred = memory.predictor()
    t_open = time.perf_counter() - t0
    rss = _rss_bytes()
    learned = {k: v for k, v in pred.stats().items() if k != "weights"}
    memory.close()
    print(f"  reopened predictor: {learned}", flush=True)
    _table(
        f"Persistence: ProceduralMemory over a SQLite file, {n_sessions:,} sessions",
        [
            "transitions",
            "actions",
            "write actions/s",
            "write s",
            "disk B/transition",
            "disk MiB",
            "reopen + replay s",
            "replay actions/s",
            "RSS added GiB",
        ],
        [
            [
                f"{done:,}",
                f"{n_actions:,}",
                f"{n_actions / t_write:,.0f}",
                f"{t_write:,.0f}",
                f"{disk / done:,.0f}",
                f"{disk / 2**20:,.0f}",
                f"{t_open:,.1f}",
                f"{n_actions / t_open:,.0f}",
                f"{(rss - rss0) / 2**30:.2f}",
            ]
        ],
    )


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its tables; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["all", "memory", "peers", "persistence"], default="all")
    parser.add_argument("--peers", default="ppm5,markov1", help="comma-separated peers measured in the same run")
    parser.add_argument("--transitions", type=int, default=10_000_000, help="transitions learned in memory")
    parser.add_argument(
        "--persist-transitions",
        type=int,
        default=1_000_000,
        help="transitions written through ProceduralMemory and replayed",
    )
    parser.add_argument("--queries", type=int, default=300, help="held-out contexts timed")
    parser.add_argument("--vocab", type=int, default=3_000, help="distinct commands")
    parser.add_argument("--procedures", type=int, default=300, help="recurring multi-step procedures")
    parser.add_argument(
        "--procedure-share",
        type=float,
        default=0.4,
        help="probability that the next stretch of a session is a procedure",
    )
    parser.add_argument("--progress", type=int, default=1_000_000, help="print progress every this many transitions")
    parser.add_argument("--max-rss-gib", type=float, default=12.0, help="stop learning above this resident memory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", default=None, help="directory to keep the SQLite file in (default: a temp dir)")
    args = parser.parse_args(argv)
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        parser.error(f"unknown peers {unknown}; known: {', '.join(PEERS)}")
    # Each part runs in a fresh process, so that its resident-memory figures start clean.
    spawn = multiprocessing.get_context("spawn")
    with work_dir(args.keep, "procmem-scale-predictor-") as tmp:
        for part, target, part_args in (
            ("memory", bench_memory, (args,)),
            *(("peers", bench_memory, (args, peer)) for peer in peers),
            ("persistence", bench_persistence, (args, tmp)),
        ):
            if args.part in ("all", part):
                proc = spawn.Process(target=target, args=part_args)
                proc.start()
                proc.join()
                if proc.exitcode:
                    return proc.exitcode
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
