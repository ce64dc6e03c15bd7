"""Concurrency: processes and threads writing, rolling back and searching one store file at once.

Two writer processes, two writer threads sharing one ``ProceduralMemory`` and a third thread
with its own write their own procedures and, half of the time, the same shared ones, while a
reader process and a reader thread list, search, get and read versions without pause and check
every record they see against the checksum written with it. Afterwards every acknowledged
operation must be in the store with its content at the version the call returned, every
history contiguous, and no reader may have seen a half-written procedure.
"""

import threading

import pytest

from procmem.memory import ProceduralMemory

from . import _workers


@pytest.mark.slow
def test_concurrent_writers_and_readers_lose_and_tear_nothing(tmp_path):
    run = _workers.concurrency_run(str(tmp_path), n_ops=40, seed=1)
    assert not run.problems, "\n".join(run.problems)
    assert run.writers == 5 and run.acked == 4 + 5 * 40 and run.checked == run.acked
    assert run.records_read > 0


def test_threads_sharing_one_memory_get_distinct_versions(tmp_path, embedder):
    """Eight threads updating one procedure through one object: versions 1..n+1, none reused."""
    memory = ProceduralMemory(path=tmp_path / "s.sqlite3", embedder=embedder)
    memory.add({"id": "p", "name": "p", "steps": ["v1"]})
    returned: list[int] = []
    lock = threading.Lock()

    def work(t):
        for i in range(15):
            rec = memory.update("p", steps=[f"thread {t} write {i}"])
            with lock:
                returned.append(rec.version)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(returned) == list(range(2, 2 + 8 * 15))
    versions = memory.versions("p")
    assert [v.version for v in versions] == list(range(1, 2 + 8 * 15))
    by_version = {v.version: v.procedure.steps[0].action for v in versions}
    assert len(set(by_version.values())) == len(by_version)  # each version holds its own write


def _race(memory, other, op):
    """Run ``op`` on ``memory`` while ``other`` records an outcome right after op read the procedure."""
    real_get = memory.store.get
    fired = []

    def get_then_race(pid):
        proc = real_get(pid)
        if not fired:
            fired.append(True)
            other.record_outcome(pid, True, duration=1.0)
        return proc

    memory.store.get = get_then_race
    try:
        op()
    finally:
        memory.store.get = real_get


@pytest.mark.parametrize("op", ["update", "rollback"])
def test_an_outcome_recorded_during_an_update_is_counted(tmp_path, embedder, op):
    db = tmp_path / "s.sqlite3"
    memory = ProceduralMemory(path=db, embedder=embedder)
    other = ProceduralMemory(path=db, embedder=embedder)  # another process, in effect
    memory.add({"id": "p", "name": "p", "steps": ["a"]})
    memory.update("p", steps=["b"])
    if op == "update":
        _race(memory, other, lambda: memory.update("p", steps=["c"]))
    else:
        _race(memory, other, lambda: memory.rollback("p", 1))
    proc = memory.store.get("p")
    assert len(memory.store.outcomes("p")) == 1
    assert proc.stats.executions == 1  # fails: the outcome's count was overwritten by the stale copy
