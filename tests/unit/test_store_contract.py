"""The store contract: every backend must pass this suite."""

import asyncio
import sqlite3

import numpy as np
import pytest

from procmem.errors import (
    ConfigurationError,
    CorruptStoreError,
    EmbeddingDimensionError,
    InvalidProcedureError,
    ProcedureNotFoundError,
    SchemaVersionError,
)
from procmem.stores import InMemoryStore, ProcedureStore, SQLiteStore
from procmem.types import Outcome, Procedure, ProcedureKind, SessionRecord, Usage

BACKENDS = ["memory", "sqlite", "sqlite-tantivy"]


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path):
    if request.param == "memory":
        s = InMemoryStore()
    elif request.param == "sqlite-tantivy":  # lexical search through the tantivy index from one procedure
        s = SQLiteStore(tmp_path / "store.sqlite3", lexical_min_rows=1)
    else:
        s = SQLiteStore(tmp_path / "store.sqlite3")
    yield s
    s.close()


def _procs(embedder, *specs):
    procs = [Procedure(**spec) for spec in specs]
    return procs, embedder.embed_documents([p.text() for p in procs])


def test_put_get_roundtrip_and_versions(store, embedder):
    procs, vecs = _procs(embedder, {"name": "deploy", "description": "ship it", "steps": ["build", "push"]})
    stored = store.put(procs, vecs)
    assert stored[0].version == 1
    got = store.get(procs[0].id)
    assert [s.action for s in got.steps] == ["build", "push"]
    updated = got.model_copy(update={"description": "ship it carefully"})
    v2 = store.put([updated])[0]
    assert v2.version == 2
    history = store.versions(procs[0].id)
    assert [v.version for v in history] == [1, 2]
    assert history[0].procedure.description == "ship it"
    assert history[1].note == "updated"


def test_get_unknown_raises_keyerror(store):
    with pytest.raises(ProcedureNotFoundError) as info:
        store.get("nope")
    assert isinstance(info.value, KeyError)
    assert "nope" in str(info.value)


def test_max_versions_trims_oldest(tmp_path, embedder):
    s = SQLiteStore(tmp_path / "s.sqlite3", max_versions=2)
    p = Procedure(name="x")
    s.put([p], embedder.embed_documents([p.text()]))
    for i in range(4):
        s.put([p.model_copy(update={"description": f"d{i}"})])
    assert [v.version for v in s.versions(p.id)] == [4, 5]


def test_vector_and_lexical_search_with_filters(store, embedder):
    procs, vecs = _procs(
        embedder,
        {"name": "git commit", "description": "commit staged changes", "tags": ["git"], "kind": "skill"},
        {"name": "deploy app", "description": "deploy the application", "kind": "workflow", "namespace": "ops"},
        {"name": "run tests", "description": "run the unit tests", "kind": "tool"},
    )
    store.put(procs, vecs)
    hits = store.vector_search(embedder.embed_query("commit changes"), k=3)
    assert hits[0][0] == procs[0].id
    assert hits == sorted(hits, key=lambda h: -h[1])
    assert store.vector_search(embedder.embed_query("deploy"), k=3, namespace="ops") == [
        (procs[1].id, pytest.approx(store.vector_search(embedder.embed_query("deploy"), k=1, namespace="ops")[0][1]))
    ]
    assert [h[0] for h in store.vector_search(embedder.embed_query("x"), k=5, kinds=["tool"])] == [procs[2].id]
    assert [h[0] for h in store.vector_search(embedder.embed_query("x"), k=5, tags=["git"])] == [procs[0].id]
    lex = store.lexical_search("deploy application", k=3)
    assert lex[0][0] == procs[1].id and lex[0][1] > 0
    assert store.lexical_search("deploy", k=3, namespace="default") == []
    assert store.lexical_search('"; DROP TABLE procedures; --', k=3) == []  # hostile text is just words
    assert store.count() == 3


def test_tag_filter_follows_tag_changes_and_combines_with_other_filters(store, embedder):
    procs, vecs = _procs(
        embedder,
        {"name": "lint", "tags": ["ci", "python"], "kind": "tool"},
        {"name": "test", "tags": ["ci"], "kind": "skill"},
        {"name": "ship", "tags": ["ci", "python"], "kind": "tool", "namespace": "ops"},
    )
    store.put(procs, vecs)
    q = embedder.embed_query("lint")

    def ids(**filters):
        return {h[0] for h in store.vector_search(q, k=10, **filters)}

    assert ids(tags=["ci"]) == {p.id for p in procs}
    assert ids(tags=["ci", "python"]) == {procs[0].id, procs[2].id}
    assert ids(tags=["ci", "python"], namespace="default") == {procs[0].id}
    assert ids(tags=["ci"], kinds=["skill"]) == {procs[1].id}
    assert ids(tags=["nope"]) == set()
    # A new version with other tags and no new vector moves the row between tags.
    store.put([procs[0].model_copy(update={"tags": ["docs"]})])
    assert ids(tags=["python"]) == {procs[2].id}
    assert ids(tags=["docs"]) == {procs[0].id}
    store.delete(procs[2].id)
    assert ids(tags=["python"]) == set()
    assert ids(tags=["ci"]) == {procs[1].id}


def test_search_sees_updates_and_deletes(store, embedder):
    procs, vecs = _procs(embedder, {"name": "alpha"}, {"name": "beta"})
    store.put(procs, vecs)
    store.vector_search(embedder.embed_query("alpha"), k=1)  # warm the cache
    store.put([procs[0].model_copy(update={"name": "gamma"})], embedder.embed_documents(["gamma"]))
    assert store.vector_search(embedder.embed_query("gamma"), k=1)[0][0] == procs[0].id
    assert store.lexical_search("gamma", k=2)[0][0] == procs[0].id
    assert store.delete(procs[0].id) is True
    assert store.delete(procs[0].id) is False
    assert all(h[0] != procs[0].id for h in store.vector_search(embedder.embed_query("gamma"), k=5))
    assert store.lexical_search("gamma", k=2) == []


def test_existing_ids_follow_writes_deletes_and_namespaces(store, embedder):
    procs, vecs = _procs(embedder, {"name": "alpha"}, {"name": "beta"}, {"name": "gamma", "namespace": "other"})
    store.put(procs, vecs)
    a, b, g = (p.id for p in procs)
    assert store.existing_ids([a, b, g, "nope"]) == {a, b, g}
    assert store.existing_ids([a, b, g, "nope"], namespace="default") == {a, b}
    assert store.existing_ids([a, g], namespace="other") == {g}
    store.delete(a)
    assert store.existing_ids([a, b], namespace="default") == {b}
    assert store.existing_ids([]) == set()


def test_embedding_dimension_mismatch_refused_and_nothing_written(store, embedder):
    procs, vecs = _procs(embedder, {"name": "a"})
    store.put(procs, vecs)
    bad = [Procedure(name="b")]
    with pytest.raises(EmbeddingDimensionError):
        store.put(bad, np.ones((1, 7), dtype=np.float32))
    with pytest.raises(EmbeddingDimensionError):
        store.put(bad, np.full((1, vecs.shape[1]), np.nan, dtype=np.float32))
    assert store.count() == 1


def test_usages_search_and_reassign(store, embedder):
    procs, vecs = _procs(embedder, {"name": "a"}, {"name": "b"})
    store.put(procs, vecs)
    queries = ["book a flight to paris", "weather tomorrow"]
    store.add_usages(
        [
            Usage(query=queries[0], procedure_id=procs[0].id),
            Usage(query=queries[1], procedure_id=procs[1].id, success=False),
        ],
        embedder.embed_documents(queries),
    )
    hits = store.usage_search(embedder.embed_query("flight to paris"), k=1)
    assert hits[0][0].procedure_id == procs[0].id and hits[0][0].success
    assert store.count_usages() == 2
    assert store.reassign_usages([procs[1].id], procs[0].id) == 1
    assert {u.procedure_id for u, _ in store.usage_search(embedder.embed_query("x"), k=5)} == {procs[0].id}


def test_outcomes_update_stats_atomically(store, embedder):
    procs, vecs = _procs(embedder, {"name": "a"})
    store.put(procs, vecs)
    store.record_outcome(Outcome(procedure_id=procs[0].id, success=True, duration=2.0))
    rec = store.record_outcome(Outcome(procedure_id=procs[0].id, success=False, duration=4.0, error="boom"))
    assert (rec.stats.successes, rec.stats.failures) == (1, 1)
    assert rec.stats.mean_duration == pytest.approx(3.0)
    assert store.get(procs[0].id).version == 1  # stats are not a new version
    assert [o.error for o in store.outcomes(procs[0].id)] == ["boom", None]
    with pytest.raises(ProcedureNotFoundError):
        store.record_outcome(Outcome(procedure_id="missing", success=True))


def test_touch_counts_access(store, embedder):
    procs, vecs = _procs(embedder, {"name": "a"})
    store.put(procs, vecs)
    store.touch([procs[0].id, procs[0].id, "missing"])
    rec = store.get(procs[0].id)
    assert rec.access_count == 1 and rec.last_accessed is not None


def test_sessions_append_skip_duplicates_and_order(store):
    s1 = SessionRecord(session_id="s1", actions=["a", "b"], outcome="success")
    s2 = SessionRecord(session_id="s2", actions=["c"], namespace="other")
    assert store.add_sessions([s1, s2, s1]) == 2
    assert store.add_sessions([s1]) == 0
    assert [s.session_id for s in store.iter_sessions()] == ["s1", "s2"]
    assert [s.session_id for s in store.iter_sessions(namespace="other")] == ["s2"]
    assert store.has_session("s1") and not store.has_session("s1", namespace="other")


def test_clear_is_scoped_to_namespace(store, embedder):
    procs, vecs = _procs(embedder, {"name": "a", "namespace": "u1"}, {"name": "b", "namespace": "u2"})
    store.put(procs, vecs)
    store.add_sessions([SessionRecord(actions=["x"], namespace="u1")])
    assert store.clear("u1") == 1
    assert [p.name for p in store.list()] == ["b"]
    assert store.count_sessions(namespace="u1") == 0
    with pytest.raises(ConfigurationError):
        store.clear("")


def test_async_twins(store, embedder):
    procs, vecs = _procs(embedder, {"name": "a"})

    async def go():
        await store.aput(procs, vecs)
        got = await store.aget(procs[0].id)
        hits = await store.avector_search(embedder.embed_query("a"), k=1)
        return got, hits

    got, hits = asyncio.run(go())
    assert got.name == "a" and hits[0][0] == procs[0].id


def test_failed_transaction_leaves_store_unchanged(store, embedder):
    procs, vecs = _procs(embedder, {"name": "a"}, {"name": "b"})
    with pytest.raises(EmbeddingDimensionError):
        store.put(procs, vecs[:1])
    assert store.count() == 0


# ---------------------------------------------------------------- SQLite file specifics


def test_persistence_survives_reopen(tmp_path, embedder):
    path = tmp_path / "p.sqlite3"
    s = SQLiteStore(path)
    procs, vecs = _procs(embedder, {"name": "persist me", "description": "durable"})
    s.put(procs, vecs)
    s.put([procs[0].model_copy(update={"description": "v2"})])
    s.close()
    s2 = SQLiteStore(path)
    assert s2.get(procs[0].id).description == "v2"
    assert len(s2.versions(procs[0].id)) == 2
    assert s2.vector_search(embedder.embed_query("persist me"), k=1)[0][0] == procs[0].id
    assert s2.integrity_check() == "ok"


def test_garbage_file_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "garbage.sqlite3"
    payload = b"not a database at all " * 200
    path.write_bytes(payload)
    with pytest.raises(CorruptStoreError):
        SQLiteStore(path)
    assert path.read_bytes() == payload


def test_foreign_sqlite_file_is_refused(tmp_path):
    path = tmp_path / "foreign.sqlite3"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE customers (id INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(CorruptStoreError, match="not a procmem store"):
        SQLiteStore(path)
    con = sqlite3.connect(path)
    assert con.execute("SELECT name FROM sqlite_master").fetchall() == [("customers",)]


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.sqlite3"
    SQLiteStore(path).close()
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version = 99")
    con.commit()
    con.close()
    with pytest.raises(SchemaVersionError):
        SQLiteStore(path)


def test_wal_mode_and_second_connection_sees_writes(tmp_path, embedder):
    path = tmp_path / "wal.sqlite3"
    a, b = SQLiteStore(path), SQLiteStore(path)
    assert a._pragma("journal_mode") == "wal"
    procs, vecs = _procs(embedder, {"name": "shared"})
    b.vector_search(embedder.embed_query("x"), k=1)  # b caches an empty index
    a.put(procs, vecs)
    assert b.get(procs[0].id).name == "shared"
    assert b.vector_search(embedder.embed_query("shared"), k=1)[0][0] == procs[0].id


def test_embedding_model_mismatch_is_refused(tmp_path, embedder):
    path = tmp_path / "m.sqlite3"
    s = SQLiteStore(path, embedding_model="model-a")
    procs, vecs = _procs(embedder, {"name": "a"})
    s.put(procs, vecs)
    s.close()
    with pytest.raises(ConfigurationError, match="model-a"):
        SQLiteStore(path, embedding_model="model-b")


def test_kind_filter_follows_a_kind_change(store, embedder):
    procs, vecs = _procs(embedder, {"name": "deploy", "kind": "skill"}, {"name": "deploy too", "kind": "tool"})
    store.put(procs, vecs)
    q = embedder.embed_query("deploy")
    assert [h[0] for h in store.vector_search(q, k=5, kinds=["skill"])] == [procs[0].id]
    store.put([procs[0].model_copy(update={"kind": ProcedureKind.WORKFLOW})])  # no new vector, new kind
    assert store.vector_search(q, k=5, kinds=["skill"]) == []
    assert [h[0] for h in store.vector_search(q, k=5, kinds=["workflow"])] == [procs[0].id]
    assert {h[0] for h in store.vector_search(q, k=5, kinds=["workflow", "tool"])} == {p.id for p in procs}


def test_tag_filter_after_reopen_and_from_another_connection(tmp_path, embedder):
    path = tmp_path / "tags.sqlite3"
    a = SQLiteStore(path)
    procs, vecs = _procs(embedder, {"name": "lint", "tags": ["ci"]}, {"name": "docs", "tags": ["web"]})
    a.put(procs, vecs)
    b = SQLiteStore(path)
    q = embedder.embed_query("lint")
    assert [h[0] for h in b.vector_search(q, k=5, tags=["ci"])] == [procs[0].id]
    a.put([procs[1].model_copy(update={"tags": ["ci", "web"]})])  # b reloads: another connection wrote
    assert {h[0] for h in b.vector_search(q, k=5, tags=["ci"])} == {procs[0].id, procs[1].id}
    a.close()
    b.close()
    c = SQLiteStore(path)
    assert {h[0] for h in c.vector_search(q, k=5, tags=["web"])} == {procs[1].id}
    c.close()


def test_unstorable_record_is_refused_with_a_named_field(store, embedder):
    procs, vecs = _procs(embedder, {"name": "ok"})
    store.put(procs, vecs)
    bad = procs[0].model_copy(update={"importance": float("nan")})  # model_copy skips validation
    with pytest.raises(InvalidProcedureError) as info:
        store.put([bad])
    assert info.value.field == "importance"
    assert store.get(procs[0].id).importance == procs[0].importance  # nothing stored changed


def _clustered(n, dim=64, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((12, dim)).astype(np.float32)
    x = centres[rng.integers(0, 12, n)] + 0.4 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_hnsw_search_agrees_with_the_exact_scan_and_follows_writes(tmp_path):
    pytest.importorskip("usearch")
    path = tmp_path / "hnsw.sqlite3"
    store = SQLiteStore(path, ann_min_rows=100)
    vecs = _clustered(400)
    procs = [Procedure(name=f"p{i}", kind="tool" if i % 2 else "skill", namespace="a" if i % 4 < 2 else "b")
             for i in range(400)]
    store.put(procs, vecs)
    assert store.wait_for_ann(timeout=60)
    assert store.vector_index_info()["procedures"] == {"loaded": True, "vectors": 400, "hnsw": True}
    exact = SQLiteStore(path, ann_min_rows=None)
    queries = _clustered(40, seed=1)
    by_id = {p.id: p for p in procs}
    agree = []
    for q in queries:
        for filters in ({}, {"namespace": "a"}, {"kinds": ["tool"]}):
            got = store.vector_search(q, k=5, **filters)
            want = exact.vector_search(q, k=5, **filters)
            agree.append(len({g[0] for g in got} & {w[0] for w in want}) / 5)
            if "namespace" in filters:
                assert all(by_id[g[0]].namespace == "a" for g in got)
            if "kinds" in filters:
                assert all(by_id[g[0]].kind.value == "tool" for g in got)
    assert np.mean(agree) >= 0.95
    new = Procedure(name="fresh", kind="tool")
    store.put([new], queries[:1])
    assert store.vector_search(queries[0], k=1)[0][0] == new.id
    store.delete(new.id)
    assert all(pid != new.id for pid, _ in store.vector_search(queries[0], k=10))
    assert exact.vector_index_info()["procedures"] == {"loaded": True, "vectors": 400, "hnsw": False}
    exact.close()
    store.close()


def test_ann_min_rows_is_checked(tmp_path):
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigurationError, match="ann_min_rows"):
            SQLiteStore(tmp_path / "x.sqlite3", ann_min_rows=bad)


def test_lexical_search_does_not_wait_for_a_write_in_progress(tmp_path, embedder):
    import threading

    store = SQLiteStore(tmp_path / "busy.sqlite3")
    procs, vecs = _procs(embedder, {"name": "deploy", "description": "deploy the web app"})
    store.put(procs, vecs)
    found = []
    with store._tx() as cur:  # another thread's long write: the store lock and SQLite's write lock held
        cur.execute("UPDATE meta SET value = value WHERE key = 'embedding_dim'")
        reader = threading.Thread(target=lambda: found.append(store.lexical_search("deploy", k=3)))
        reader.start()
        reader.join(10)
        assert not reader.is_alive(), "lexical_search waited for the write to finish"
    assert [pid for pid, _ in found[0]] == [procs[0].id]
    store.close()


@pytest.mark.parametrize("path", ["words.sqlite3", ":memory:"])
def test_lexical_search_leaves_out_words_in_half_the_procedures(tmp_path, embedder, monkeypatch, path):
    import procmem.stores.sqlite as sqlite_mod

    store = SQLiteStore(tmp_path / path if path != ":memory:" else path)
    procs, vecs = _procs(
        embedder,
        {"name": "deploy", "description": "deploy the web app to the cluster"},
        {"name": "backup", "description": "back up the database"},
        {"name": "rotate", "description": "rotate the logs of a service"},
        {"name": "report", "description": "write the weekly report"},
    )
    store.put(procs, vecs)
    # A small store ranks every procedure that contains a word, as FTS5 alone does.
    assert len(store.lexical_search("deploy the app", k=4)) == 4
    monkeypatch.setattr(sqlite_mod, "_PRUNE_MIN_ROWS", 1)
    monkeypatch.setattr(sqlite_mod, "_DF_TTL", -1.0)  # count afresh on every search
    # "the" is in every procedure (idf <= 0, clamped by FTS5): it no longer makes them all match,
    # and the scores barely change.
    assert [pid for pid, _ in store.lexical_search("deploy the app", k=4)] == [procs[0].id]
    assert store.lexical_search("deploy the app", k=4)[0][1] == pytest.approx(
        store.lexical_search("deploy app", k=4)[0][1], rel=1e-4)
    # A query of only common words keeps its rarest word that occurs, and still finds something.
    assert store._common_words(["the", "a", "deploys", "unknownword"]) == {"the"}  # stemmed as FTS5 does
    assert store._common_words(["the", "unknownword"]) == set()
    assert len(store.lexical_search("the", k=4)) == 4
    assert len(store.lexical_search("the unknownword", k=4)) == 4
    assert [pid for pid, _ in store.lexical_search("the logs the", k=4)] == [procs[2].id]
    # Frequencies follow writes once the cache has expired: "deploy" becomes common.
    more, more_vecs = _procs(embedder, *({"name": f"job{i}", "description": "deploying a service"} for i in range(4)))
    store.put(more, more_vecs)
    assert store._common_words(["deploy", "report"]) == {"deploy"}
    monkeypatch.setattr(sqlite_mod, "_DF_TTL", 60.0)
    store.put(*_procs(embedder, *({"name": f"other{i}", "description": "other"} for i in range(10))))
    assert store._common_words(["deploy", "report"]) == {"deploy"}  # cached for _DF_TTL seconds
    store.close()


def test_mean_embedding_is_the_centroid_per_namespace_and_follows_writes(store, embedder):
    assert store.mean_embedding() is None
    here, v_here = _procs(embedder, {"name": "alpha"}, {"name": "beta"}, {"name": "gamma"})
    there, v_there = _procs(embedder, {"name": "delta", "namespace": "other"})
    bare = Procedure(name="no vector")  # stored without an embedding: not part of the centroid
    store.put(here, v_here)
    store.put(there, v_there)
    store.put([bare])
    np.testing.assert_allclose(store.mean_embedding(namespace="default"), v_here.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(store.mean_embedding(), np.vstack([v_here, v_there]).mean(axis=0), atol=1e-6)
    assert store.mean_embedding(namespace="nowhere") is None
    store.delete(here[0].id)
    np.testing.assert_allclose(store.mean_embedding(namespace="default"), v_here[1:].mean(axis=0), atol=1e-6)
    # The contract's default (paging through list and get_embeddings) gives the same centroid.
    np.testing.assert_allclose(ProcedureStore.mean_embedding(store), store.mean_embedding(), atol=1e-6)
