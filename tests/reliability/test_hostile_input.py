"""Hostile input: importers, records, the facade, the CLI and ``load`` given garbage.

* ``procmem.io.load_history`` on arbitrary bytes and crafted files raises only
  ``ImportFormatError`` (or returns sessions that the store can hold).
* ``Procedure`` / ``SessionRecord`` from arbitrary data raise only pydantic's ``ValidationError``.
* The facade's writes given garbage raise only ``ProcMemError`` and leave the store exactly as
  it was (a snapshot of every procedure, version, outcome, session and usage).
* The CLI given garbage exits non-zero with a message, never a traceback.
* ``ProceduralMemory.load`` of corrupt or hostile export files changes nothing.
* A corrupt or foreign store file is refused with ``CorruptStoreError`` and left byte for byte.

Known bugs are pinned by ``xfail(strict=True)`` tests at the end of each section.
"""

import json
import math
import os
import pickle
import subprocess
import sys

import pydantic
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from procmem.errors import CorruptStoreError, ImportFormatError, ProcMemError, StorageError
from procmem.io import FORMATS, load_history
from procmem.memory import MiningConfig, ProceduralMemory
from procmem.stores.sqlite import SQLiteStore
from procmem.types import Procedure, SessionRecord

FUZZ = {"deadline": None, "database": None,
        "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]}
FIELDS = sorted(Procedure.model_fields)
SESSION_KEYS = ["session_id", "actions", "outcome", "instructions", "task", "timestamps", "user_id", "group",
                "namespace"]


def _nested(depth):
    out = cur = []
    for _ in range(depth):
        nxt = []
        cur.append(nxt)
        cur = nxt
    return out


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Garbage a caller might pass: wrong types, NaN, inf, huge ints, empty and huge strings.
garbage = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([10**400, -(10**30), 2**63, -1, 0]),
    st.floats(),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0]),
    st.text(max_size=30),
    st.sampled_from(["", " ", "\x00", "x" * 100_000, "\n\t", "../../etc/passwd", "1e999"]),
    st.binary(max_size=8),
    st.lists(st.text(max_size=8) | st.integers(), max_size=4),
    st.dictionaries(st.text(max_size=6), json_values, max_size=4),
)


def _memory(path):
    return ProceduralMemory(path=path, embedder=_embedder(), mining=MiningConfig(enabled=False))


def _embedder():
    from procmem.embeddings import HashingEmbedder

    return HashingEmbedder(dim=64)


def snapshot(memory):
    """Everything the store holds, as JSON text."""
    s = memory.store
    procs = s.list()
    return (
        [p.model_dump_json() for p in procs],
        {p.id: [v.model_dump_json() for v in s.versions(p.id)] for p in procs},
        {p.id: [o.model_dump_json() for o in s.outcomes(p.id)] for p in procs},
        [r.model_dump_json() for r in s.iter_sessions()],
        s.count_usages(),
    )


# --------------------------------------------------------------------------- importers


def _load_any(path, **kwargs):
    """load_history may return or raise ImportFormatError; anything else fails the test."""
    try:
        result = load_history(path, **kwargs)
    except ImportFormatError as exc:
        assert str(exc)  # names the file / line
        return None
    store = SQLiteStore(":memory:")
    sessions = [s.model_copy(update={"namespace": "default"}) for s in result.sessions]
    for s in sessions:  # every session read is one the store can hold and give back
        assert s.actions and all(a.strip() for a in s.actions)
    assert store.add_sessions(sessions) == len({s.session_id for s in sessions})
    assert store.count_sessions() == len({s.session_id for s in sessions})
    store.close()
    return result


@settings(max_examples=120, **FUZZ)
@given(data=st.binary(max_size=4096), fmt=st.sampled_from([None, *FORMATS]))
def test_load_history_on_arbitrary_bytes(tmp_path, data, fmt):
    path = tmp_path / "history"
    path.write_bytes(data)
    _load_any(path, format=fmt)


text_lines = st.lists(
    st.one_of(
        st.text(max_size=60),
        st.sampled_from(["#1700000000", "#99999999999999999999", ": 1700000000:0;git status", ": 9999999999999:0;x",
                         "- cmd: git push", "  when: 1700000000", "  when: -1e400", "  paths:", "\\", "- cmd:",
                         "#", ": :;", "\x00\x00", "\ufeff", "\r"]),
    ),
    max_size=30,
)


@settings(max_examples=120, **FUZZ)
@given(lines=text_lines, fmt=st.sampled_from([None, "bash", "zsh", "fish"]), newline=st.sampled_from(["\n", "\r\n"]))
def test_load_history_on_history_like_text(tmp_path, lines, fmt, newline):
    path = tmp_path / "history"
    path.write_bytes(newline.join(lines).encode("utf-8", "surrogatepass"))
    _load_any(path, format=fmt)


session_lines = st.lists(
    st.one_of(
        st.dictionaries(st.sampled_from(SESSION_KEYS), json_values | garbage.filter(lambda v: not isinstance(v, bytes)),
                        max_size=6).map(lambda d: json.dumps(d, default=str)),
        st.fixed_dictionaries({"actions": st.lists(st.text(max_size=10), max_size=4)},
                              optional={"timestamps": st.lists(json_values, max_size=4),
                                        "outcome": json_values, "session_id": json_values}).map(json.dumps),
        json_values.map(json.dumps),
        st.text(max_size=40),
        st.sampled_from(["[" * 50_000, "{" * 20_000, '{"actions": ["a"], "timestamps": [1e999]}',
                         '{"actions": ["a"], "timestamps": [NaN]}', '{"actions": ["a"], "timestamps": [-1e20]}',
                         '{"actions": ["a\\u0000b"]}', "\x00" * 10]),
    ),
    max_size=12,
)


@settings(max_examples=150, **FUZZ)
@given(lines=session_lines, on_error=st.sampled_from(["raise", "skip"]), cut=st.booleans())
def test_load_history_on_hostile_sessions_jsonl(tmp_path, lines, on_error, cut):
    path = tmp_path / "sessions.jsonl"
    text = "\n".join(lines) + ("" if cut else "\n")
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    _load_any(path, format="jsonl", on_error=on_error)
    _load_any(path)



@pytest.mark.parametrize("line", [b'{"actions": ["\\ud800"]}', b'{"actions": ["a"], "instructions": ["\\udc80"]}'])
def test_jsonl_lone_surrogate_escapes_never_reach_the_store(tmp_path, line):
    path = tmp_path / "s.jsonl"
    path.write_bytes(line + b"\n")
    _load_any(path, format="jsonl")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\n\n\n",
        b"\x00" * 100,
        b"\xff\xfe" + "git status\n".encode("utf-16-le"),
        bytes(range(256)) * 4,
        b"\xed\xa0\x80 lone surrogate in CESU-8\n",
        b"git status\n" * 10 + b"\x00\x00 crash residue\n" + b"make test\n",
        b"a" * (64 * 1024 + 1) + b"\nls\n",  # a line longer than MAX_LINE_BYTES
        b"#1700000000\n" + b"x" * 200_000 + b"\n",
        b'{"actions": ["a"]}\n' + b"[" * 200_000 + b"\n",
        b'{"actions": ["a"]}\n' + b'{"actions": [' + b'"a",' * 300_000 + b'"b"]}\n',
        pickle.dumps({"actions": ["a"]}),
        b"\xef\xbb\xbf" + b'{"actions": ["git status"]}\n',
    ],
    ids=lambda c: repr(c[:20]),
)
def test_load_history_on_crafted_files(tmp_path, content):
    path = tmp_path / "crafted"
    path.write_bytes(content)
    for fmt in (None, *FORMATS):
        _load_any(path, format=fmt)


@pytest.mark.slow
def test_load_history_skips_a_jsonl_line_over_16_mib(tmp_path):
    path = tmp_path / "big.jsonl"
    with open(path, "wb") as f:
        f.write(b'{"actions": ["first"]}\n{"actions": ["')
        f.write(b"x" * (16 * 1024 * 1024 + 10))
        f.write(b'"]}\n{"actions": ["last"]}\n')
    result = load_history(path)
    assert [s.actions for s in result.sessions] == [["first"], ["last"]] and result.skipped_lines == 1


def test_load_history_on_a_missing_file_or_a_directory(tmp_path):
    for path in (tmp_path / "missing", tmp_path):
        with pytest.raises((ImportFormatError, OSError)):
            load_history(path)


# --------------------------------------------------------------------------- records


@settings(max_examples=200, **FUZZ)
@given(data=st.dictionaries(st.sampled_from([*FIELDS, "extra"]), json_values | garbage, max_size=8))
def test_procedure_from_arbitrary_dicts_raises_only_validation_errors(data):
    try:
        proc = Procedure.model_validate(data)
    except pydantic.ValidationError:
        return
    assert Procedure.model_validate_json(proc.model_dump_json()).id == proc.id


@settings(max_examples=200, **FUZZ)
@given(data=st.dictionaries(st.sampled_from([*SESSION_KEYS, "extra"]), json_values | garbage, max_size=6))
def test_session_record_from_arbitrary_dicts_raises_only_validation_errors(data):
    data.pop("instructions", None)
    try:
        rec = SessionRecord.model_validate(data)
    except pydantic.ValidationError:
        return
    assert SessionRecord.model_validate_json(rec.model_dump_json()).actions == rec.actions


@settings(max_examples=150, **FUZZ)
@given(text=st.text(max_size=200) | json_values.map(json.dumps))
def test_records_from_arbitrary_json_text_raise_only_validation_errors(text):
    for cls in (Procedure, SessionRecord):
        try:
            cls.model_validate_json(text)
        except pydantic.ValidationError:
            pass


# --------------------------------------------------------------------------- the facade


@pytest.fixture(scope="module")
def fuzz_memory(tmp_path_factory):
    memory = _memory(tmp_path_factory.mktemp("facade") / "store.sqlite3")
    memory.add({"id": "p0", "name": "p0", "steps": ["first"], "metadata": {"k": 1}})
    memory.update("p0", steps=["second"])
    memory.record_outcome("p0", True, duration=1.0)
    memory.learn_session(["a", "b"], "success", session_id="s0")
    yield memory
    memory.close()


def _must_raise_cleanly_or_succeed(memory, call):
    before = snapshot(memory)
    try:
        call()
    except ProcMemError:
        assert snapshot(memory) == before, "a refused call changed the store"


# Garbage without the inputs pinned by the xfail tests below (surrogates and unserialisable or
# too-deep values inside free-form dicts, a non-mapping ``details``).
def _jsonable(v):
    try:
        json.dumps(v).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError):
        return False
    return True


safe_garbage = garbage.filter(lambda v: not isinstance(v, bytes) and (not isinstance(v, (dict, list)) or _jsonable(v)))
# Ids: no int beyond SQLite's 64 bits (pinned by test_ids_that_are_not_strings_are_refused).
safe_ids = safe_garbage.filter(lambda v: not isinstance(v, int) or abs(v) < 2**63)
# store_procedure's parameters/metadata: mappings or None (pinned by test_store_procedure_*_types).
safe_maps = st.none() | st.dictionaries(st.text(max_size=6), json_values, max_size=4)


@settings(max_examples=150, **FUZZ)
@given(fields=st.dictionaries(st.sampled_from([*FIELDS, "extra"]), safe_garbage, max_size=6))
def test_add_with_garbage(fuzz_memory, fields):
    fields.pop("id", None)  # an id of another namespace's procedure: see the xfail below
    _must_raise_cleanly_or_succeed(fuzz_memory, lambda: fuzz_memory.add(fields))


@settings(max_examples=150, **FUZZ)
@given(pid=st.sampled_from(["p0", "missing"]) | safe_ids,
       changes=st.dictionaries(st.sampled_from([*FIELDS, "extra"]), safe_garbage, max_size=4))
def test_update_with_garbage(fuzz_memory, pid, changes):
    changes.pop("namespace", None)
    _must_raise_cleanly_or_succeed(fuzz_memory, lambda: fuzz_memory.update(pid, **changes))


@settings(max_examples=150, **FUZZ)
@given(pid=st.sampled_from(["p0", "sp"]) | safe_ids, steps=safe_garbage, params=safe_maps,
       meta=safe_maps, importance=safe_garbage, kind=safe_garbage)
def test_store_procedure_with_garbage(fuzz_memory, pid, steps, params, meta, importance, kind):
    _must_raise_cleanly_or_succeed(
        fuzz_memory,
        lambda: fuzz_memory.store_procedure(pid, steps, params, meta, importance=importance, kind=kind),
    )


@settings(max_examples=150, **FUZZ)
@given(actions=safe_garbage | st.lists(safe_garbage, max_size=4), outcome=safe_garbage, task=safe_garbage,
       sid=st.none() | safe_garbage, stamps=st.none() | safe_garbage)
def test_learn_session_with_garbage(fuzz_memory, actions, outcome, task, sid, stamps):
    if isinstance(actions, list):
        assume(all(not isinstance(a, str) or a.encode("utf-8", "ignore").decode() == a for a in actions))
    _must_raise_cleanly_or_succeed(
        fuzz_memory,
        lambda: fuzz_memory.learn_session(actions, outcome, task, session_id=sid, timestamps=stamps),
    )


@settings(max_examples=100, **FUZZ)
@given(pid=st.sampled_from(["p0", "missing"]) | safe_ids, version=safe_garbage)
def test_rollback_with_garbage(fuzz_memory, pid, version):
    _must_raise_cleanly_or_succeed(fuzz_memory, lambda: fuzz_memory.rollback(pid, version))


@settings(max_examples=150, **FUZZ)
@given(pid=st.sampled_from(["p0", "missing"]) | safe_ids, success=safe_garbage, duration=safe_garbage,
       error=safe_garbage, details=st.none() | st.dictionaries(st.text(max_size=5), json_values, max_size=3))
def test_record_outcome_with_garbage(fuzz_memory, pid, success, duration, error, details):
    _must_raise_cleanly_or_succeed(
        fuzz_memory,
        lambda: fuzz_memory.record_outcome(pid, success, duration=duration, error=error, details=details),
    )



@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.add({"name": "x", "metadata": {"k": "\udcff"}}),
        lambda m: m.add({"name": "x", "parameters": {"k": _nested(5000)}}),
        lambda m: m.store_procedure("x", [{"action": "a", "parameters": {"p": "\ud800"}}]),
        lambda m: m.update("p0", metadata={"k": object()}),
        lambda m: m.learn_session(["\ud800 git status"], "success"),
        lambda m: m.record_outcome("p0", True, details={"x": object()}),
        lambda m: m.record_outcome("p0", True, details=["not", "a", "mapping"]),
    ],
    ids=["metadata-surrogate", "parameters-deep", "step-parameters-surrogate", "metadata-object",
         "session-surrogate", "details-object", "details-list"],
)
def test_unserialisable_values_are_refused_as_procmem_errors(tmp_path, call):
    memory = _memory(tmp_path / "s.sqlite3")
    memory.add({"id": "p0", "name": "p0", "steps": ["a"]})
    before = snapshot(memory)
    try:
        call(memory)
    except ProcMemError:
        pass
    except Exception as exc:
        assert snapshot(memory) == before  # the transaction did roll back ...
        raise AssertionError(f"{type(exc).__name__} escaped: {exc}") from exc  # ... but with the wrong error
    assert snapshot(memory) == before



@pytest.mark.parametrize("call", [lambda m: m.update(2**63, description="x"), lambda m: m.rollback(2**63, 1),
                                  lambda m: m.get(2**64), lambda m: m.versions(-(2**70))],
                         ids=["update", "rollback", "get", "versions"])
def test_ids_that_are_not_strings_are_refused(tmp_path, call):
    memory = _memory(tmp_path / "s.sqlite3")
    try:
        call(memory)
    except ProcMemError:
        pass
    except Exception as exc:
        raise AssertionError(f"{type(exc).__name__} escaped: {exc}") from exc



@pytest.mark.parametrize("kwargs", [{"parameters": "x"}, {"metadata": True}, {"parameters": 5},
                                    {"triggers": 7}, {"tags": 1.5}], ids=str)
def test_store_procedure_refuses_wrong_types(tmp_path, kwargs):
    memory = _memory(tmp_path / "s.sqlite3")
    try:
        memory.store_procedure("p", ["a"], **kwargs)
    except ProcMemError:
        pass
    except Exception as exc:
        raise AssertionError(f"{type(exc).__name__} escaped: {exc}") from exc



def test_a_write_in_one_namespace_never_changes_another(tmp_path):
    memory = _memory(tmp_path / "s.sqlite3")
    memory.add({"id": "deploy", "name": "deploy", "steps": ["make deploy"], "namespace": "alice"})
    before = snapshot(memory)
    try:
        memory.add({"id": "deploy", "name": "mine now", "steps": ["curl evil | sh"], "namespace": "mallory"})
    except ProcMemError:
        pass
    assert memory.store.get("deploy").namespace == "alice"
    assert snapshot(memory)[1]["deploy"] == before[1]["deploy"]


def test_loading_one_namespaces_export_into_another_copies_it(tmp_path):
    """A copy of a's memory loaded into b must leave a's procedures in a (today they move)."""
    memory = _memory(tmp_path / "s.sqlite3")
    memory.add({"id": "deploy", "name": "deploy", "steps": ["make deploy"], "namespace": "a"})
    memory.save(tmp_path / "a.jsonl", namespace="a")
    memory.load(tmp_path / "a.jsonl", namespace="b")
    assert [p.id for p in memory.list(namespace="a")] == ["deploy"]


# --------------------------------------------------------------------------- load of exports


@pytest.fixture
def exported(tmp_path):
    memory = _memory(tmp_path / "src.sqlite3")
    for i in range(3):
        memory.add({"id": f"e{i}", "name": f"export {i}", "steps": [f"step {i}"], "metadata": {"i": i}})
    memory.update("e0", steps=["changed"])
    memory.learn_session(["a", "b"], "success", session_id="es")
    path = tmp_path / "export.jsonl"
    memory.save(path)
    memory.close()
    return path


def _hostile_load(tmp_path, content):
    target = _memory(tmp_path / "target.sqlite3")
    target.add({"id": "keep", "name": "keep", "steps": ["x"]})
    target.learn_session(["a"], "success", session_id="keep-s")
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(content)
    before = snapshot(target)
    try:
        target.load(path)
        refused = False
    except ImportFormatError as exc:
        assert str(exc)
        refused = True
    if refused:
        assert snapshot(target) == before
    target.close()
    return refused


HEADER = json.dumps({"format": "procmem-export", "version": 1}).encode()


@pytest.mark.parametrize(
    "content",
    [
        pickle.dumps({"format": "procmem-export"}),
        b"\x80\x04\x95" + os.urandom(64),
        b"not json at all\n",
        b'{"format": "something-else"}\n',
        b'{"format": "procmem-export", "version": 99}\n',
        b"[1, 2, 3]\n",
        HEADER + b"\n" + b'{"type": "procedure"}\n',
        HEADER + b"\n" + b'{"type": "procedure", "current": []}\n',
        HEADER + b"\n" + b'{"type": "procedure", "current": "x"}\n',
        HEADER + b"\n" + b'{"type": "procedure", "current": {"name": ""}}\n',
        HEADER + b"\n" + b'{"type": "procedure", "current": {"name": "n", "importance": NaN}}\n',
        HEADER + b"\n" + b'{"type": "session", "session": {"actions": []}}\n',
        HEADER + b"\n" + b'{"type": "pickle", "data": "gASV"}\n',
        HEADER + b"\n" + b"\xff\xfe invalid utf-8\n",
        HEADER + b"\n" + b'{"type": "procedure", "current": {"name": "ok"}}\n' + b'{"type": "bad"}\n',
    ],
    ids=lambda c: repr(c[:24]),
)
def test_load_refuses_hostile_exports_and_changes_nothing(tmp_path, content):
    assert _hostile_load(tmp_path, content)


@settings(max_examples=60, **FUZZ)
@given(data=st.data())
def test_load_of_a_damaged_export_is_all_or_nothing(tmp_path, exported, data):
    raw = bytearray(exported.read_bytes())
    how = data.draw(st.sampled_from(["cut", "flip", "insert"]))
    pos = data.draw(st.integers(0, len(raw) - 1))
    if how == "cut":
        raw = raw[:pos]
    elif how == "flip":
        raw[pos] ^= data.draw(st.integers(1, 255))
    else:
        raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    try:
        _hostile_load(tmp_path, bytes(raw))
    except ProcMemError:
        pass  # a damaged file that still parses may be refused by the store: fine, as a ProcMemError



@pytest.mark.parametrize(
    "content",
    [
        b'{"format": "procmem-export", "version": "2"}\n',
        b'{"format": "procmem-export", "version": null}\n',
        HEADER + b"\n" + b"[" * 100_000 + b"\n",
        b"\n" + b'{"type": "procedure", "current": {"id": "no-header", "name": "imported"}}\n',
        b"",
    ],
    ids=["version-str", "version-null", "deep-nesting", "blank-first-line", "empty-file"],
)
def test_load_refuses_malformed_headers_and_nesting(tmp_path, content):
    assert _hostile_load(tmp_path, content)


# --------------------------------------------------------------------------- store files


@pytest.mark.parametrize(
    "content",
    [b"garbage" * 100, b"SQLite format 3\x00" + os.urandom(4000), os.urandom(8192), b"\x00" * 4096],
    ids=["text", "bad-header", "random", "zeros"],
)
def test_a_corrupt_store_file_is_refused_and_left_untouched(tmp_path, content):
    path = tmp_path / "store.sqlite3"
    path.write_bytes(content)
    try:
        SQLiteStore(path).close()
    except CorruptStoreError:
        pass
    else:  # only an all-zero file may read as an empty database; then it must be a sound store
        assert content == b"\x00" * 4096
        return
    assert path.read_bytes() == content
    with pytest.raises(CorruptStoreError):
        _memory(path)


def test_a_foreign_sqlite_database_is_refused_and_left_untouched(tmp_path):
    import sqlite3

    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE accounts (id INTEGER, balance REAL)")
    con.execute("INSERT INTO accounts VALUES (1, 100.0)")
    con.commit()
    con.close()
    before = path.read_bytes()
    with pytest.raises(CorruptStoreError):
        SQLiteStore(path)
    assert path.read_bytes() == before


@settings(max_examples=25, **FUZZ)
@given(data=st.data())
def test_a_damaged_store_file_raises_only_storage_errors(tmp_path_factory, data):
    src = tmp_path_factory.mktemp("damaged") / "store.sqlite3"
    memory = _memory(src)
    for i in range(20):
        memory.add({"id": f"d{i}", "name": f"damaged {i}", "steps": [f"step {i}"] * 5})
    memory.store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    memory.close()
    raw = bytearray(src.read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    src.write_bytes(bytes(raw))
    try:
        store = SQLiteStore(src)
        try:
            store.integrity_check()
            for p in store.list():
                store.versions(p.id)
            store.lexical_search("step")
        finally:
            store.close()
    except StorageError:
        pass
    except pydantic.ValidationError:
        pass  # a flipped byte inside a JSON record: the record no longer parses
    except UnicodeDecodeError:
        pass  # pinned by test_a_store_with_invalid_utf8_text_is_refused_as_corrupt (xfail)


def test_a_damaged_page_makes_searches_and_writes_raise_storage_errors(tmp_path):
    # The vector load and the body of a write transaction let sqlite3.DatabaseError through raw.
    src = tmp_path / "store.sqlite3"
    memory = _memory(src)
    memory.add_many([{"id": f"d{i}", "name": f"damaged {i}", "description": "desc " * 50,
                      "steps": ["a" * 200, "b"]} for i in range(50)])
    memory.store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    memory.close()
    raw = src.read_bytes()
    page = 4096
    raised = set()
    for start in range(2 * page, len(raw), 4 * page):
        damaged = tmp_path / f"damaged-{start}.sqlite3"
        damaged.write_bytes(raw[:start] + bytes(range(256)) * (page // 256) + raw[start + page:])
        try:
            m = _memory(damaged)
        except StorageError:
            continue
        for op, args in ((m.search, ("desc",)), (m.store_procedure, ("d1", ["x"])), (m.clear, ()),
                         (m.record_outcome, ("d2", True)), (m.delete, ("d3",))):
            try:
                op(*args)
            except ProcMemError as exc:  # never a raw sqlite3 error
                raised.add(type(exc).__name__)
        m.close()
    assert "CorruptStoreError" in raised  # the damage was seen, and reported as procmem's error


STORE_UTF8 = (
    "a store file whose text (schema or records) holds invalid UTF-8 makes sqlite3 raise "
    "UnicodeDecodeError, which SQLiteStore._open and _read do not catch (they catch "
    "sqlite3.DatabaseError only): it should be CorruptStoreError / StorageError"
)


def test_a_store_with_invalid_utf8_text_is_refused_as_corrupt(tmp_path):
    path = tmp_path / "store.sqlite3"
    memory = _memory(path)
    memory.store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    memory.close()
    raw = path.read_bytes()
    at = raw.index(b"CREATE TABLE meta")
    path.write_bytes(raw[: at + 7] + b"\x80" + raw[at + 8 :])
    try:
        SQLiteStore(path).close()
    except StorageError:
        pass
    except Exception as exc:
        raise AssertionError(f"{type(exc).__name__} escaped: {exc}") from exc


def test_a_record_edited_into_an_invalid_one_is_reported_as_corrupt(tmp_path):
    import sqlite3

    path = tmp_path / "store.sqlite3"
    memory = _memory(path)
    pid = memory.store_procedure("deploy", ["git pull", "make deploy"])
    memory.close()
    con = sqlite3.connect(path)
    record = json.loads(con.execute("SELECT record FROM procedures").fetchone()[0])
    record["importance"] = 7  # out of [0, 1]
    con.execute("UPDATE procedures SET record = ?", (json.dumps(record),))
    con.commit()
    con.close()
    before = path.read_bytes()
    store = SQLiteStore(path)
    with pytest.raises(CorruptStoreError, match="importance"):
        store.get(pid)
    store.close()
    assert path.read_bytes() == before


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    monkeypatch.setenv("PROCMEM_DB", str(tmp_path / "cli.sqlite3"))
    monkeypatch.setenv("PROCMEM_EMBEDDER", "hashing")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HISTFILE", raising=False)
    (tmp_path / "home").mkdir()
    return tmp_path


def _cli(args):
    from procmem.cli import app

    result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result


@pytest.mark.parametrize(
    ("content", "fmt"),
    [
        (b"\x00\x01\x02" * 1000, None),
        (pickle.dumps(["git status"]), None),
        (b'{"actions": []}\n', "jsonl"),
        (b"not json\n", "jsonl"),
        (b"[" * 100_000 + b"\n", "jsonl"),
        (b'{"actions": ["a"], "timestamps": ["yesterday"]}\n', "jsonl"),
    ],
    ids=["binary", "pickle", "empty-actions", "not-json", "deep", "bad-timestamp"],
)
def test_cli_learn_refuses_garbage_with_a_message(cli_env, content, fmt):
    path = cli_env / "garbage"
    path.write_bytes(content)
    result = _cli(["learn", str(path)] + (["--format", fmt] if fmt else []))
    assert result.exit_code != 0
    assert "error" in result.output.lower() and "garbage" in result.output


def test_cli_learn_missing_file_and_bad_format(cli_env):
    assert _cli(["learn", str(cli_env / "missing")]).exit_code != 0
    assert _cli(["learn", str(cli_env), "--format", "bash"]).exit_code != 0
    (cli_env / "h").write_text("ls\n")
    assert _cli(["learn", str(cli_env / "h"), "--format", "pickle"]).exit_code != 0


@settings(max_examples=40, **FUZZ)
@given(data=st.binary(max_size=2048))
def test_cli_learn_on_arbitrary_bytes_never_tracebacks(cli_env, data):
    path = cli_env / "fuzz"
    path.write_bytes(data)
    result = _cli(["learn", str(path)])
    assert result.exit_code in (0, 1)
    if result.exit_code:
        assert "error" in result.output.lower()


@pytest.mark.slow
@pytest.mark.parametrize("content", [b"garbage" * 500, b"SQLite format 3\x00" + b"\x07" * 4000])
def test_cli_on_a_corrupt_database_exits_1_without_traceback(tmp_path, content):
    """Through the real entry point (``python -m procmem.cli``), as a user runs it."""
    db = tmp_path / "bad.sqlite3"
    db.write_bytes(content)
    env = {**os.environ, "PROCMEM_DB": str(db), "PROCMEM_EMBEDDER": "hashing", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "procmem.cli", "stats"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "error" in proc.stderr.lower() and "Traceback" not in proc.stderr + proc.stdout
    assert db.read_bytes() == content
