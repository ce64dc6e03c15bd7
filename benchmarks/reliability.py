"""Reliability report: kills survived, writes checked, inputs tried, failures.

Runs, at a larger scale than CI, the same harness as ``tests/reliability``:

* crash safety: a writer SIGKILLed at random points ``--kills`` times (plain and with
  ``max_versions=3``), every acknowledged write checked after each kill;
* concurrency: writer processes and threads plus readers on one file, ``--rounds`` times;
* hostile input: ``--inputs`` random byte strings and hostile JSONL files through
  ``load_history``, and damaged exports through ``ProceduralMemory.load``.

Usage::

    python benchmarks/reliability.py                 # ~300 kills, a few minutes on 2 cores
    python benchmarks/reliability.py --kills 40 --rounds 2 --inputs 300   # quick
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from reliability import _workers  # noqa: E402

from procmem.errors import ImportFormatError, ProcMemError  # noqa: E402
from procmem.io import load_history  # noqa: E402


def crash(kills: int, seed: int) -> dict:
    out = {"kills": 0, "acked": 0, "checked": 0, "unacked_landed": 0, "seconds": 0.0, "failures": []}
    for max_versions, share in ((None, 0.75), (3, 0.25)):
        with tempfile.TemporaryDirectory() as d:
            n = max(1, int(kills * share))
            run = _workers.kill_loop(f"{d}/store.sqlite3", f"{d}/acks", kills=n, seed=seed, max_versions=max_versions,
                                     max_acks=8, verify_every=5)
            out["kills"] += run.kills
            out["acked"] += run.acked
            out["checked"] += run.checked
            out["unacked_landed"] += run.unacked_landed
            out["seconds"] += run.seconds
            out["failures"] += run.problems
    return out


def concurrency(rounds: int, n_ops: int, seed: int) -> dict:
    out = {"rounds": 0, "acked": 0, "checked": 0, "records_read": 0, "seconds": 0.0, "failures": [],
           "known_stats_race": 0}
    for r in range(rounds):
        with tempfile.TemporaryDirectory() as d:
            run = _workers.concurrency_run(d, n_ops=n_ops, seed=seed + r)
        out["rounds"] += 1
        out["acked"] += run.acked
        out["checked"] += run.checked
        out["records_read"] += run.records_read
        out["seconds"] += run.seconds
        # Known bug (tests/reliability/test_concurrency.py::STATS_RACE): counted, not a new failure.
        race = [p for p in run.problems if "stats count" in p]
        out["known_stats_race"] += len(race)
        out["failures"] += [p for p in run.problems if p not in race]
    return out


def hostile(inputs: int, seed: int) -> dict:
    rng = random.Random(seed)
    out = {"inputs": 0, "refused": 0, "accepted": 0, "seconds": 0.0, "failures": []}
    start = time.perf_counter()
    keys = ["session_id", "actions", "outcome", "instructions", "timestamps", "user_id", "group"]
    values = [None, True, 0, -1, 10**30, 1e308, "", "x", "git status", [], ["a"], [1], {}, {"a": 1}, "2024-01-01"]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "input"
        for i in range(inputs):
            kind = i % 3
            if kind == 0:
                data = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 2048)))
            elif kind == 1:
                lines = [json.dumps({rng.choice(keys): rng.choice(values) for _ in range(rng.randint(0, 5))})
                         for _ in range(rng.randint(1, 8))]
                data = "\n".join(lines).encode()
            else:
                words = ["git", "#1700000000", ": 1700000000:0;", "- cmd:", "  when: 1", "\\", "\x00", "\t", "é"]
                data = "\n".join(" ".join(rng.choices(words, k=rng.randint(0, 5)))
                                 for _ in range(rng.randint(0, 30))).encode()
            path.write_bytes(data)
            for fmt in (None, "jsonl") if kind == 1 else (None,):
                out["inputs"] += 1
                try:
                    result = load_history(path, format=fmt)
                    out["accepted"] += 1
                    for s in result.sessions:
                        s.model_dump_json()  # what the store would write
                except ImportFormatError:
                    out["refused"] += 1
                except Exception as exc:  # noqa: BLE001 - a failure to report
                    out["failures"].append(f"load_history input {i}: {type(exc).__name__}: {exc}"[:200])
        # damaged exports through load: all or nothing
        memory = _workers.open_memory(f"{d}/src.sqlite3")
        for j in range(20):
            memory.add({"id": f"e{j}", "name": f"export {j}", **_workers.content(rng, "e")})
        export = Path(d) / "export.jsonl"
        memory.save(export)
        memory.close()
        raw = export.read_bytes()
        target = _workers.open_memory(f"{d}/target.sqlite3")
        for i in range(max(1, inputs // 5)):
            damaged = bytearray(raw)
            pos = rng.randrange(len(damaged))
            if i % 2:
                damaged[pos] ^= rng.randint(1, 255)
            else:
                damaged = damaged[:pos]
            export.write_bytes(bytes(damaged))
            before = [p.model_dump_json() for p in target.store.list()]
            out["inputs"] += 1
            try:
                target.load(export)
                out["accepted"] += 1
            except ProcMemError:
                out["refused"] += 1
                if [p.model_dump_json() for p in target.store.list()] != before:
                    out["failures"].append(f"damaged export {i}: refused but the store changed")
            except Exception as exc:  # noqa: BLE001
                out["failures"].append(f"damaged export {i}: {type(exc).__name__}: {exc}"[:200])
        target.close()
    out["seconds"] = time.perf_counter() - start
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ops", type=int, default=80, help="operations per writer per concurrency round")
    parser.add_argument("--inputs", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()

    c = crash(args.kills, args.seed)
    print(f"crash safety : {c['kills']} SIGKILLs survived, {c['checked']} acknowledged writes checked "
          f"({c['unacked_landed']} in-flight writes landed whole), {len(c['failures'])} failures "
          f"[{c['seconds']:.1f} s]")
    k = concurrency(args.rounds, args.ops, args.seed)
    print(f"concurrency  : {k['rounds']} rounds x 5 writers + 2 readers, {k['checked']} acknowledged writes "
          f"checked, {k['records_read']} records read mid-write, {len(k['failures'])} failures "
          f"[{k['seconds']:.1f} s]; known stats lost-update bug seen on {k['known_stats_race']} procedures")
    h = hostile(args.inputs, args.seed)
    print(f"hostile input: {h['inputs']} inputs tried ({h['refused']} refused as ImportFormatError/ProcMemError, "
          f"{h['accepted']} accepted), {len(h['failures'])} failures [{h['seconds']:.1f} s]")
    failures = c["failures"] + k["failures"] + h["failures"]
    for f in failures[:20]:
        print("  FAILURE:", f)
    print(f"failures     : {len(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
