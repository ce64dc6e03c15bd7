"""Child-process entry points and the store verifier shared by the reliability tests and benchmark.

Writers acknowledge a write only after the call returned, by appending one JSON line to an ack
file (``O_APPEND`` + ``fsync``): a write that was acknowledged must survive any later SIGKILL. A
write in flight when the child was killed may or may not have landed, but never halfway.

Every procedure these workers write carries, in its metadata, a checksum of the content written
with it (``digest(steps, description)``) and the step count; a reader or the verifier that finds a
record whose checksum does not match its steps has seen a torn write.

Ack lines::

    {"op": "add" | "update" | "rollback", "id": ..., "v": version, "d": digest}
    {"op": "learn", "sid": session_id}
    {"op": "outcome", "id": ...}
    {"op": "read", "n": records validated}          (readers)
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VERSION_OPS = ("add", "update", "rollback")
MINING = os.environ.get("PROCMEM_RELIABILITY_MINING", "1") == "1"
"""Crash writers mine workflows after each learned session (``PROCMEM_RELIABILITY_MINING=0``: off)."""
_WORDS = "build test deploy lint fetch merge pull push backup restore index migrate compile package".split()


def digest(actions: Iterable[str], description: str) -> str:
    """Return the checksum of a procedure's content (its step actions and description)."""
    payload = json.dumps([list(actions), description], ensure_ascii=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def content(rng: random.Random, tag: str) -> dict[str, Any]:
    """Return random procedure content whose metadata carries its own checksum."""
    n = rng.randint(1, 6)
    steps = [f"{rng.choice(_WORDS)} {tag} {rng.randrange(10**6)} #{i}" for i in range(n)]
    description = f"{rng.choice(_WORDS)} things for {tag} ({rng.randrange(10**9)})"
    return {
        "steps": steps,
        "description": description,
        "metadata": {"checksum": digest(steps, description), "nsteps": n, "writer": tag},
    }


def record_is_whole(proc: Any) -> bool:
    """Whether a procedure read back is consistent with the checksum written with it."""
    meta = proc.metadata
    if "checksum" not in meta:
        return True  # not written by these workers (e.g. a mined workflow)
    actions = [s.action for s in proc.steps]
    return meta["checksum"] == digest(actions, proc.description) and meta["nsteps"] == len(actions)


class Acks:
    """Append-only acknowledgement file: one JSON line per completed call, synced to disk."""

    def __init__(self, path: str | os.PathLike[str], *, sync: bool = True) -> None:
        self.fd = os.open(os.fspath(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.sync = sync
        self._lock = threading.Lock()

    def __call__(self, **entry: Any) -> None:
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        with self._lock:
            os.write(self.fd, line)  # one write() of < PIPE_BUF bytes: never interleaved
            if self.sync:
                os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def read_acks(*paths: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read acknowledgement lines; a line without its newline was cut by a kill and is ignored."""
    out: list[dict[str, Any]] = []
    for path in paths:
        p = Path(path)
        if not p.exists():
            continue
        for line in p.read_bytes().split(b"\n")[:-1]:
            out.append(json.loads(line))
    return out


def open_memory(db: str, *, max_versions: int | None = None, busy_timeout: float = 60.0, mining: bool = False) -> Any:
    """Open the store the way an application would, with the test embedder."""
    from procmem.embeddings import HashingEmbedder
    from procmem.memory import MiningConfig, ProceduralMemory
    from procmem.stores.sqlite import SQLiteStore

    embedder = HashingEmbedder(dim=64)
    store = SQLiteStore(db, max_versions=max_versions, busy_timeout=busy_timeout, embedding_model=embedder.name)
    config = MiningConfig(enabled=mining, min_support=2, min_length=2)
    return ProceduralMemory(store=store, embedder=embedder, mining=config)


# --------------------------------------------------------------------------- writers


def _one_op(memory: Any, rng: random.Random, tag: str, counter: int, ids: list[str], ack: Acks,
            *, ops: tuple[str, ...]) -> None:
    op = rng.choice(ops)
    if op in ("update", "rollback", "outcome") and not ids:
        op = "add"
    if op == "add":
        pid = f"{tag}-{counter}"
        c = content(rng, tag)
        rec = memory.add({"id": pid, "name": f"procedure {pid}", **c})
        ids.append(pid)
        ack(op="add", id=pid, v=rec.version, d=c["metadata"]["checksum"])
    elif op == "update":
        pid = rng.choice(ids)
        c = content(rng, tag)
        rec = memory.update(pid, **c)
        ack(op="update", id=pid, v=rec.version, d=c["metadata"]["checksum"])
    elif op == "rollback":
        pid = rng.choice(ids)
        kept = memory.versions(pid)
        target = rng.choice(kept)
        d = digest([s.action for s in target.procedure.steps], target.procedure.description)
        rec = memory.rollback(pid, target.version)
        ack(op="rollback", id=pid, v=rec.version, d=d)
    elif op == "learn":
        sid = f"{tag}-s{counter}"
        actions = [rng.choice(_WORDS[:5]) for _ in range(rng.randint(1, 5))]
        memory.learn_session(actions, rng.choice(["success", "failure", None]), session_id=sid)
        ack(op="learn", sid=sid)
    elif op == "outcome":
        pid = rng.choice(ids)
        memory.record_outcome(pid, rng.random() < 0.7, duration=rng.random())
        ack(op="outcome", id=pid)
    else:  # pragma: no cover
        raise ValueError(op)


def crash_writer(db: str, ack_path: str, seed: int, tag: str, max_versions: int | None = None) -> None:
    """Write procedures, versions, rollbacks, outcomes and sessions until killed."""
    rng = random.Random(seed)
    ack = Acks(ack_path)
    memory = open_memory(db, max_versions=max_versions, mining=MINING)
    ids = [p.id for p in memory.list() if "checksum" in p.metadata]
    counter = 0
    while True:
        counter += 1
        _one_op(memory, rng, tag, counter, ids, ack,
                ops=("add", "update", "update", "rollback", "learn", "outcome"))


def concurrent_writer(db: str, ack_path: str, seed: int, tag: str, n_ops: int, shared: list[str],
                      memory: Any = None) -> None:
    """Write ``n_ops`` operations, half of them on ids every writer shares, then return.

    With ``memory``, write through that object (shared with other threads) and leave it open.
    """
    rng = random.Random(seed)
    ack = Acks(ack_path, sync=False)
    own_memory = memory is None
    memory = open_memory(db) if own_memory else memory
    own: list[str] = []
    for counter in range(1, n_ops + 1):
        ids = shared if rng.random() < 0.5 else own
        _one_op(memory, rng, tag, counter, ids, ack,
                ops=("add", "update", "update", "rollback", "learn", "outcome") if ids is own
                else ("update", "rollback", "outcome"))
    if own_memory:
        memory.close()
    ack.close()


def reader(db: str, ack_path: str, stop_path: str, seed: int) -> None:
    """Read, search and list until ``stop_path`` exists, validating every record read.

    Acks ``{"op": "read", "n": ...}`` with the records validated, or ``{"op": "torn", ...}``
    naming a record whose content does not match the checksum written with it.
    """
    rng = random.Random(seed)
    ack = Acks(ack_path, sync=False)
    memory = open_memory(db)
    n = 0

    def check(proc: Any, where: str) -> None:
        nonlocal n
        n += 1
        if not record_is_whole(proc):
            ack(op="torn", id=proc.id, v=proc.version, where=where)

    while not os.path.exists(stop_path):
        what = rng.random()
        if what < 0.3:
            for p in memory.list():
                check(p, "list")
        elif what < 0.6:
            for r in memory.search(f"{rng.choice(_WORDS)} things", k=5):
                check(r.procedure, "search")
        else:
            procs = memory.list(limit=20, offset=rng.randrange(0, 40))
            if procs:
                pid = rng.choice(procs).id
                for v in memory.versions(pid):
                    check(v.procedure, "versions")
                check(memory.get(pid, touch=False), "get")
    ack(op="read", n=n)
    memory.close()
    ack.close()


# --------------------------------------------------------------------------- verification


@dataclass
class Report:
    """What one verification checked."""

    procedures: int = 0
    versions: int = 0
    acked_writes: int = 0
    acked_sessions: int = 0
    acked_outcomes: int = 0
    unacked_versions: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def checked(self) -> int:
        """Acknowledged writes found intact (versions, sessions and outcomes)."""
        return self.acked_writes + self.acked_sessions + self.acked_outcomes


def verify(db: str, acks: list[dict[str, Any]], *, in_flight: int, max_versions: int | None = None) -> Report:
    """Check a store against the writes acknowledged to it.

    Args:
        db: The store file.
        acks: Acknowledgement lines of every writer that wrote to it.
        in_flight: How many calls may have been cut by a kill (each may have landed or not).
        max_versions: The ``max_versions`` the writers used (older versions were trimmed).

    Returns:
        A report; ``report.problems`` is empty when nothing was lost or torn.
    """
    from procmem.stores.sqlite import SQLiteStore

    rep = Report()
    bad = rep.problems.append
    store = SQLiteStore(db)
    try:
        ic = store.integrity_check()
        if ic != "ok":
            bad(f"integrity_check: {ic}")
        by_id = defaultdict(list)
        outcome_acks: Counter[str] = Counter()
        sessions = []
        for a in acks:
            if a["op"] in VERSION_OPS:
                by_id[a["id"]].append(a)
            elif a["op"] == "outcome":
                outcome_acks[a["id"]] += 1
            elif a["op"] == "learn":
                sessions.append(a["sid"])
        created = 0
        for proc in store.list():
            rep.procedures += 1
            versions = store.versions(proc.id)
            nums = [v.version for v in versions]
            rep.versions += len(nums)
            if not nums or nums != list(range(nums[0], nums[-1] + 1)) or nums[-1] != proc.version:
                bad(f"{proc.id}: versions {nums} not contiguous up to current v{proc.version}")
                continue
            expected_first = 1 if max_versions is None else max(1, proc.version - max_versions + 1)
            if nums[0] != expected_first:
                bad(f"{proc.id}: first kept version is {nums[0]}, expected {expected_first}")
            for v in versions:
                if v.procedure.version != v.version or v.procedure.id != proc.id:
                    bad(f"{proc.id} v{v.version}: record says {v.procedure.id} v{v.procedure.version}")
                if not record_is_whole(v.procedure):
                    bad(f"{proc.id} v{v.version}: torn record (checksum does not match its steps)")
            # update_counters may rewrite metadata/importance in place (mined workflows' support
            # counts), by design; records written here carry a checksum and must match whole.
            skip = set() if "checksum" in proc.metadata else {"metadata", "importance"}
            current = {k: v for k, v in proc.content_fields().items() if k not in skip}
            latest = {k: v for k, v in versions[-1].procedure.content_fields().items() if k not in skip}
            if current != latest:
                bad(f"{proc.id}: current record differs from its latest version")
            if not record_is_whole(proc):
                bad(f"{proc.id}: current record torn")
            if "checksum" in proc.metadata:
                created += proc.version
            kept = {v.version: v for v in versions}
            claimed = Counter(a["v"] for a in by_id.get(proc.id, []))
            for v, n in claimed.items():
                if n > 1:
                    bad(f"{proc.id}: {n} acknowledged writes all returned v{v}")
            for a in by_id.pop(proc.id, []):
                if a["v"] > proc.version:
                    bad(f"{proc.id}: acknowledged v{a['v']} but the store is at v{proc.version}")
                elif a["v"] in kept:
                    got = kept[a["v"]].procedure
                    if digest([s.action for s in got.steps], got.description) != a["d"]:
                        bad(f"{proc.id} v{a['v']}: content differs from what was acknowledged")
                    else:
                        rep.acked_writes += 1
                elif a["v"] >= expected_first:
                    bad(f"{proc.id} v{a['v']}: acknowledged version missing")
                else:
                    rep.acked_writes += 1  # trimmed by max_versions, as configured
            n_out = len(store.outcomes(proc.id))
            acked = outcome_acks.pop(proc.id, 0)
            if not acked <= n_out <= acked + in_flight:
                bad(f"{proc.id}: {n_out} outcomes stored, {acked} acknowledged")
            if n_out != proc.stats.executions:
                bad(f"{proc.id}: {n_out} outcomes logged but stats count {proc.stats.executions} executions")
            rep.acked_outcomes += acked
        for pid, lost in by_id.items():
            bad(f"{pid}: {len(lost)} acknowledged writes, procedure missing")
        for pid, n in outcome_acks.items():
            bad(f"{pid}: {n} acknowledged outcomes, procedure missing")
        acked_versions = sum(1 for a in acks if a["op"] in VERSION_OPS)
        rep.unacked_versions = created - acked_versions
        if not 0 <= rep.unacked_versions <= in_flight:
            bad(f"{created} versions written by the workers but {acked_versions} acknowledged "
                f"(at most {in_flight} calls were in flight)")
        missing = [sid for sid in sessions if not store.has_session(sid)]
        if missing:
            bad(f"{len(missing)} acknowledged sessions missing, e.g. {missing[:3]}")
        rep.acked_sessions = len(sessions) - len(missing)
        n_sessions = store.count_sessions()
        if not len(sessions) <= n_sessions <= len(sessions) + in_flight:
            bad(f"{n_sessions} sessions stored, {len(sessions)} acknowledged")
    finally:
        store.close()
    return rep


# --------------------------------------------------------------------------- the kill loop


@dataclass
class CrashRun:
    """Totals of :func:`kill_loop`."""

    kills: int = 0
    acked: int = 0
    checked: int = 0
    unacked_landed: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def kill_loop(db: str, ack_path: str, *, kills: int, seed: int, max_versions: int | None = None,
              max_acks: int = 6, verify_every: int = 1) -> CrashRun:
    """Start a crash writer, SIGKILL it at a random point, verify the store; ``kills`` times.

    Children come from a forkserver that has procmem imported, so a start costs milliseconds
    and kills land mid-write rather than mid-import. Most kills wait for a random number of
    acknowledgements (up to ``max_acks``) plus a random delay; one in eight comes before the
    first one, while the child opens the store.
    """
    import multiprocessing as mp

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["procmem.memory", "procmem.retrieval", "procmem.stores.sqlite",
                                "procmem.learning.mining", "procmem.prediction", __name__])
    rng = random.Random(seed)
    run = CrashRun()
    start = time.perf_counter()
    for i in range(kills):
        before = len(read_acks(ack_path))
        child = ctx.Process(target=crash_writer, args=(db, ack_path, seed * 1000 + i, f"r{i}", max_versions))
        child.start()
        if rng.random() < 0.125:
            time.sleep(rng.uniform(0, 0.05))
        else:
            want = before + rng.randint(1, max_acks)
            deadline = time.monotonic() + 20
            while len(read_acks(ack_path)) < want and time.monotonic() < deadline and child.is_alive():
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.02))
        child.kill()
        child.join()
        if child.exitcode != -signal.SIGKILL:  # pragma: no cover - the writer crashed by itself
            run.problems.append(f"kill {i}: writer died by itself with exit code {child.exitcode}")
        run.kills += 1
        if (i + 1) % verify_every == 0 or i == kills - 1:
            rep = verify(db, read_acks(ack_path), in_flight=run.kills, max_versions=max_versions)
            run.problems += [f"after kill {i + 1}: {p}" for p in rep.problems]
            run.checked = rep.checked
            run.unacked_landed = rep.unacked_versions
            if run.problems:
                break
    run.acked = len(read_acks(ack_path))
    run.seconds = time.perf_counter() - start
    return run


@dataclass
class ConcurrencyRun:
    """Totals of :func:`concurrency_run`."""

    writers: int = 0
    readers: int = 0
    acked: int = 0
    checked: int = 0
    records_read: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


def concurrency_run(workdir: str, *, n_ops: int, seed: int = 0, processes: int = 2, threads: int = 2,
                    shared_ids: int = 4) -> ConcurrencyRun:
    """Write, roll back, record outcomes and search one store from processes and threads at once.

    ``processes`` writer processes and ``threads`` writer threads (sharing one ``ProceduralMemory``,
    plus one more thread with its own) each do ``n_ops`` operations, half of them on
    ``shared_ids`` procedures every writer updates; a reader process and a reader thread validate
    every record they see until the writers are done. Then every acknowledged write is checked.
    """
    import multiprocessing as mp

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["procmem.memory", "procmem.retrieval", "procmem.stores.sqlite", __name__])
    wd = Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    db = str(wd / "store.sqlite3")
    stop = str(wd / "stop")
    rng = random.Random(seed)
    memory = open_memory(db)
    parent_ack = Acks(wd / "acks-parent", sync=False)
    shared = []
    for i in range(shared_ids):
        c = content(rng, "shared")
        rec = memory.add({"id": f"shared-{i}", "name": f"shared {i}", **c})
        parent_ack(op="add", id=rec.id, v=rec.version, d=c["metadata"]["checksum"])
        shared.append(rec.id)
    run = ConcurrencyRun()
    errors: list[str] = []

    def guarded(fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except BaseException as exc:  # pragma: no cover - reported as a problem
            errors.append(f"{fn.__name__}{args[2:4]}: {type(exc).__name__}: {exc}")

    start = time.perf_counter()
    procs = [ctx.Process(target=concurrent_writer, args=(db, str(wd / f"acks-p{i}"), seed * 100 + i, f"p{i}",
                                                         n_ops, shared)) for i in range(processes)]
    procs.append(ctx.Process(target=reader, args=(db, str(wd / "acks-rp"), stop, seed * 100 + 50)))
    ths = [threading.Thread(target=guarded, args=(concurrent_writer, db, str(wd / f"acks-t{i}"), seed * 100 + 60 + i,
                                                   f"t{i}", n_ops, shared, memory)) for i in range(threads)]
    ths.append(threading.Thread(target=guarded, args=(concurrent_writer, db, str(wd / "acks-tx"), seed * 100 + 70,
                                                      "tx", n_ops, shared)))
    reader_thread = threading.Thread(target=guarded, args=(reader, db, str(wd / "acks-rt"), stop, seed * 100 + 80))
    for p in procs:
        p.start()
    for t in [*ths, reader_thread]:
        t.start()
    for p in procs[:-1]:
        p.join()
    for t in ths:
        t.join()
    Path(stop).touch()
    procs[-1].join()
    reader_thread.join()
    run.seconds = time.perf_counter() - start
    memory.close()
    parent_ack.close()
    run.writers = processes + threads + 1
    run.readers = 2
    run.problems += errors
    run.problems += [f"process {p.name} exited with {p.exitcode}" for p in procs if p.exitcode != 0]
    acks = read_acks(*sorted(wd.glob("acks-*")))
    run.acked = sum(1 for a in acks if a["op"] not in ("read", "torn"))
    expected = shared_ids + run.writers * n_ops
    if run.acked != expected:
        run.problems.append(f"{run.acked} operations acknowledged, {expected} expected")
    run.problems += [f"reader saw a torn record: {a}" for a in acks if a["op"] == "torn"]
    reads = [a["n"] for a in acks if a["op"] == "read"]
    run.records_read = sum(reads)
    if len(reads) != run.readers or min(reads, default=0) == 0:
        run.problems.append(f"readers validated {reads} records; expected two readers that read something")
    rep = verify(db, acks, in_flight=0)
    run.checked = rep.checked
    run.problems += rep.problems
    return run
