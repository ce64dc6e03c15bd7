"""Crash safety: a writer SIGKILLed at random points never loses an acknowledged write.

A child process writes procedures, new versions, rollbacks, outcomes and learned sessions in a
loop and acknowledges each call (an fsync'd line) only after it returned. The parent kills it
with SIGKILL at random points, over and over; after every kill the store must open, pass
``PRAGMA integrity_check``, and hold every acknowledged write with its exact version history
(see ``_workers.verify``). ``benchmarks/reliability.py`` runs the same loop hundreds of times.
"""

import multiprocessing as mp
import random
import shutil
import signal
import sqlite3
import time

import pytest

from . import _workers

pytestmark = pytest.mark.slow


def _check(run):
    assert not run.problems, "\n".join(run.problems)


def test_acknowledged_writes_survive_random_sigkills(tmp_path):
    run = _workers.kill_loop(str(tmp_path / "store.sqlite3"), str(tmp_path / "acks"), kills=20, seed=20240501)
    _check(run)
    assert run.kills == 20
    assert run.acked >= 20 and run.checked == run.acked  # every acknowledged call was found intact


def test_sigkills_with_trimmed_history_keep_the_last_versions(tmp_path):
    run = _workers.kill_loop(
        str(tmp_path / "store.sqlite3"), str(tmp_path / "acks"), kills=8, seed=7, max_versions=3, max_acks=12
    )
    _check(run)
    assert run.checked == run.acked


def _damage(db, sql):
    con = sqlite3.connect(db)
    con.execute(sql)
    con.commit()
    con.close()


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        # a lost version: the history has a hole
        ("DELETE FROM versions WHERE version = 2 AND procedure_id IN"
         " (SELECT procedure_id FROM versions WHERE version = 3)", "not contiguous"),
        # the newest write lost entirely (row and history rolled back by one)
        ("DELETE FROM versions WHERE (procedure_id, version) IN (SELECT id, version FROM procedures"
         " WHERE version > 1 LIMIT 1)", "not contiguous"),
        # a torn record: steps changed without the checksum written with them
        ("UPDATE versions SET record = json_set(record, '$.steps[0].action', 'torn') WHERE rowid ="
         " (SELECT min(rowid) FROM versions)", "torn"),
        # an acknowledged session lost
        ("DELETE FROM sessions WHERE rowid = (SELECT min(rowid) FROM sessions)", "sessions"),
        # an acknowledged outcome lost
        ("DELETE FROM outcomes WHERE rowid = (SELECT min(rowid) FROM outcomes)", "outcomes"),
    ],
)
def test_the_verifier_catches_lost_and_torn_writes(tmp_path, sql, expected):
    """The crash test is only as good as its verifier: each kind of damage must be reported."""
    db, acks = str(tmp_path / "store.sqlite3"), str(tmp_path / "acks")
    pristine = _workers.kill_loop(db, acks, kills=2, seed=3, max_acks=25)
    _check(pristine)
    ops = {a["op"] for a in _workers.read_acks(acks)}
    assert {"add", "update", "rollback", "learn", "outcome"} <= ops
    before = _workers.verify(db, _workers.read_acks(acks), in_flight=2)
    assert not before.problems
    _damage(db, sql)
    after = _workers.verify(db, _workers.read_acks(acks), in_flight=2)
    assert any(expected in p for p in after.problems), after.problems


def _save_forever(db, path):
    memory = _workers.open_memory(db)
    while True:
        memory.save(path)


def test_sigkill_during_save_never_leaves_a_partial_export(tmp_path):
    """``save`` writes a temporary file and renames it: the export is the old one or the new one."""
    db = str(tmp_path / "store.sqlite3")
    memory = _workers.open_memory(db)
    rng = random.Random(5)
    for i in range(60):
        memory.add({"id": f"p{i}", "name": f"p{i}", **_workers.content(rng, "save")})
        memory.learn_session([f"step {i}", "next"], "success", session_id=f"s{i}")
    export = tmp_path / "out" / "export.jsonl"
    memory.save(export)
    expected = export.read_bytes().count(b"\n") - 1
    memory.close()
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["procmem.memory", "procmem.retrieval", _workers.__name__])
    for i in range(10):
        child = ctx.Process(target=_save_forever, args=(db, str(export)))
        child.start()
        time.sleep(0.05 + rng.uniform(0, 0.15))
        child.kill()
        child.join()
        assert child.exitcode == -signal.SIGKILL
        fresh = _workers.open_memory(str(tmp_path / f"fresh{i}.sqlite3"))
        loaded = fresh.load(export)
        assert loaded["procedures"] + loaded["sessions"] == expected
        fresh.close()
    stranded = [p.name for p in export.parent.iterdir() if p.name != "export.jsonl"]
    assert all(name.startswith(".procmem-") for name in stranded)  # a kill may strand a temp file, never cut the target


def test_kill_loop_leaves_a_store_the_next_process_reuses(tmp_path):
    """After the kills the file is still the same store: a copy opens, passes the checks, takes writes."""
    db = tmp_path / "store.sqlite3"
    _check(_workers.kill_loop(str(db), str(tmp_path / "acks"), kills=3, seed=11))
    copy = tmp_path / "copy.sqlite3"
    for suffix in ("", "-wal"):
        if (tmp_path / f"store.sqlite3{suffix}").exists():
            shutil.copy(tmp_path / f"store.sqlite3{suffix}", tmp_path / f"copy.sqlite3{suffix}")
    memory = _workers.open_memory(str(copy))
    n = len(memory.list())
    memory.add({"name": "after the crash", "steps": ["check"]})
    assert len(memory.list()) == n + 1
    assert memory.store.integrity_check() == "ok"
    memory.close()
