"""The SQLite store's tantivy index for lexical search in large stores (the ``lexical`` extra)."""

import threading

import pytest

import procmem.stores.sqlite as sqlite_mod
from procmem.errors import ConfigurationError, InvalidProcedureError
from procmem.stores import InMemoryStore, SQLiteStore
from procmem.types import Procedure

DESCRIPTIONS = {
    "deploy": "deploy the web app to the cluster",
    "backup": "back up the database to cold storage",
    "rotate": "rotate the logs of a service",
    "report": "write the weekly report for the team",
}


def _put(store, embedder, specs):
    procs = [Procedure(**spec) for spec in specs]
    store.put(procs, embedder.embed_documents([p.text() for p in procs]))
    return procs


def _fill(store, embedder):
    return _put(store, embedder, [{"name": n, "description": d, "tags": [n[0]]} for n, d in DESCRIPTIONS.items()])


def _ids(hits):
    return [pid for pid, _ in hits]


def test_small_store_ranks_through_tantivy_like_fts5(tmp_path, embedder):
    fts = SQLiteStore(tmp_path / "fts.sqlite3", lexical_min_rows=None)
    tan = SQLiteStore(tmp_path / "tan.sqlite3", lexical_min_rows=1)
    procs_fts, procs_tan = _fill(fts, embedder), _fill(tan, embedder)
    names = {p.id: p.name for p in procs_fts + procs_tan}
    for query in ("deploy my app", "rotating logs", "backup of the database", "weekly team reports"):
        assert [names[i] for i in _ids(tan.lexical_search(query, k=2))][:1] == \
            [names[i] for i in _ids(fts.lexical_search(query, k=2))][:1], query
    assert tan._lexical is not None and fts._lexical is None  # the tantivy index answered
    # Filters: namespace, kind (any of) and tags (all of).
    assert _ids(tan.lexical_search("deploy", k=3, namespace="elsewhere")) == []
    assert _ids(tan.lexical_search("deploy", k=3, kinds=["tool"])) == []
    assert _ids(tan.lexical_search("deploy backup", k=3, kinds=["skill", "tool"], tags=["b"])) == [procs_tan[1].id]
    assert _ids(tan.lexical_search("deploy backup", k=3, tags=["b", "d"])) == []
    assert tan.lexical_search('"; DROP TABLE procedures; --', k=3) == []
    fts.close()
    tan.close()


def test_tantivy_index_follows_updates_deletes_and_other_processes(tmp_path, embedder):
    path = tmp_path / "s.sqlite3"
    store = SQLiteStore(path, lexical_min_rows=1)
    procs = _fill(store, embedder)
    assert _ids(store.lexical_search("volcano", k=3)) == []
    store.put([procs[0].model_copy(update={"description": "watch the volcano"})])
    assert _ids(store.lexical_search("volcano", k=3)) == [procs[0].id]
    assert _ids(store.lexical_search("cluster", k=3)) == []  # the old text is gone
    store.delete(procs[0].id)
    assert _ids(store.lexical_search("volcano", k=3)) == []
    # Another connection (as another process would) writes: the index is rebuilt from the file.
    other = SQLiteStore(path, lexical_min_rows=None)
    new = _put(other, embedder, [{"name": "erupt", "description": "volcano eruption alert"}])
    assert _ids(store.lexical_search("volcano", k=3)) == [new[0].id]
    other.delete(procs[1].id)
    assert _ids(store.lexical_search("database", k=3)) == []
    other.close()
    store.close()


def test_replaced_rows_never_let_another_namespace_in(tmp_path, embedder):
    # tantivy's doc_freq still counts replaced rows until a merge: a namespace whose procedures
    # were updated looked as if it held every procedure, and its filter was dropped.
    store = SQLiteStore(tmp_path / "s.sqlite3", lexical_min_rows=1)
    mine = _put(store, embedder, [{"name": f"rotate{i}", "description": "rotate the logs"} for i in range(3)])
    [theirs] = _put(store, embedder, [{"name": "theirs", "description": "rotate the logs", "namespace": "other"}])
    assert theirs.id not in _ids(store.lexical_search("rotate logs", k=10, namespace="default"))
    store.put([p.model_copy(update={"description": "rotate the logs daily"}) for p in mine])
    found = _ids(store.lexical_search("rotate logs", k=10, namespace="default"))
    assert store._lexical is not None and sorted(found) == sorted(p.id for p in mine)
    assert _ids(store.lexical_search("rotate logs", k=10, namespace="other")) == [theirs.id]
    store.close()


def test_background_build_replays_writes_made_meanwhile(tmp_path, embedder, monkeypatch):
    monkeypatch.setattr(sqlite_mod, "_LEXICAL_BUILD_CHUNK", 2)  # 4 procedures: a background build
    store = SQLiteStore(tmp_path / "s.sqlite3", lexical_min_rows=3)
    procs = _fill(store, embedder)
    started, release = threading.Event(), threading.Event()
    upsert = sqlite_mod.LexicalIndex.upsert

    def slow_upsert(self, rows, *, new=False):
        started.set()
        assert release.wait(10)
        return upsert(self, rows, new=new)

    monkeypatch.setattr(sqlite_mod.LexicalIndex, "upsert", slow_upsert)
    # FTS5 answers while the index builds; the search does not wait for it.
    assert _ids(store.lexical_search("database", k=3)) == [procs[1].id]
    assert started.wait(10) and store._lexical is None
    added = _put(store, embedder, [{"name": "erupt", "description": "volcano eruption alert"}])
    store.put([procs[2].model_copy(update={"description": "rotate the volcano logs"})])
    store.delete(procs[1].id)
    monkeypatch.setattr(sqlite_mod.LexicalIndex, "upsert", upsert)
    release.set()
    assert store.wait_for_lexical(timeout=30)
    assert sorted(_ids(store.lexical_search("volcano", k=3))) == sorted([added[0].id, procs[2].id])
    assert _ids(store.lexical_search("database", k=3)) == []
    assert len(store._lexical) == 4
    store.close()


def test_common_words_are_left_out_as_with_fts5(tmp_path, embedder, monkeypatch):
    monkeypatch.setattr(sqlite_mod, "_PRUNE_MIN_ROWS", 1)
    store = SQLiteStore(tmp_path / "s.sqlite3", lexical_min_rows=1)
    procs = _fill(store, embedder)
    # "the" is in every procedure: it does not make them all match.
    assert _ids(store.lexical_search("deploy the app", k=4)) == [procs[0].id]
    assert len(store.lexical_search("the", k=4)) == 4  # the rarest word that occurs is kept
    assert store._lexical is not None
    store.close()


def test_without_tantivy_fts5_answers_and_a_failed_build_falls_back(tmp_path, embedder, monkeypatch, caplog):
    monkeypatch.setattr(sqlite_mod, "tantivy_available", lambda: False)
    store = SQLiteStore(tmp_path / "s.sqlite3", lexical_min_rows=1)
    procs = _fill(store, embedder)
    assert _ids(store.lexical_search("database", k=3)) == [procs[1].id]
    assert store._lexical is None and not store.wait_for_lexical(0)
    monkeypatch.undo()

    def broken(self, rows, *, new=False):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sqlite_mod.LexicalIndex, "upsert", broken)
    store2 = SQLiteStore(tmp_path / "s.sqlite3", lexical_min_rows=1)
    with caplog.at_level("ERROR", logger="procmem"):
        assert _ids(store2.lexical_search("database", k=3)) == [procs[1].id]
    assert "FTS5 keeps answering" in caplog.text and store2.lexical_min_rows is None
    store.close()
    store2.close()


def test_lexical_min_rows_is_checked(tmp_path):
    for bad in (0, -1, 2.5, True, "10"):
        with pytest.raises(ConfigurationError, match="lexical_min_rows"):
            SQLiteStore(tmp_path / "x.sqlite3", lexical_min_rows=bad)
        with pytest.raises(ConfigurationError, match="lexical_min_rows"):
            InMemoryStore(lexical_min_rows=bad)
        with pytest.raises(ConfigurationError, match="ann_min_rows"):
            InMemoryStore(ann_min_rows=bad)


def test_in_memory_store_takes_the_index_thresholds(embedder):
    store = InMemoryStore(lexical_min_rows=1, ann_min_rows=None)
    procs = _fill(store, embedder)
    assert _ids(store.lexical_search("volcano", k=3)) == []
    assert store.lexical_search("deploy", k=1)[0][0] == procs[0].id
    assert store._lexical is not None and store.ann_min_rows is None  # tantivy answered; exact vector scans
    store.close()


def test_a_write_that_rolls_back_leaves_the_index_right(tmp_path, embedder):
    store = SQLiteStore(tmp_path / "s.sqlite3", lexical_min_rows=1)
    procs = _fill(store, embedder)
    assert _ids(store.lexical_search("database", k=3)) == [procs[1].id]
    index = store._lexical
    # Refused input: nothing reached the index, which is kept.
    with pytest.raises(InvalidProcedureError):
        store.put([procs[1].model_copy(update={"namespace": "other", "description": "volcano"})])
    assert store._lexical is index
    # A write that fails after updating the index: the index is rebuilt from what landed.
    rowid = store._read("SELECT rowid FROM procedures WHERE id = ?", (procs[1].id,))[0][0]
    with pytest.raises(RuntimeError), store._tx() as cur:
        cur.execute("DELETE FROM procedures_fts WHERE rowid = ?", (rowid,))
        store._lexical_write("remove", [rowid])
        raise RuntimeError("crash before commit")
    assert _ids(store.lexical_search("database", k=3)) == [procs[1].id]
    assert store._lexical is not index
    store.close()
