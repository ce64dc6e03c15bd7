"""The shared store contract against ChromaStore: embedded, and a real ``chroma run`` server.

The generic tests of ``tests/unit/test_store_contract.py`` (those taking the ``store`` fixture)
are imported and run here with this module's ``store`` fixture; the SQLite-file tests of that
module are not part of the contract and are left out.
"""

from __future__ import annotations

import importlib.util
import inspect
import uuid
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("chromadb")

from procmem.errors import ConfigurationError, EmbeddingDimensionError, VectorStoreError  # noqa: E402
from procmem.stores.chroma import ChromaStore  # noqa: E402
from procmem.types import Procedure  # noqa: E402

pytestmark = pytest.mark.integration

_CONTRACT_FILE = Path(__file__).resolve().parents[1] / "unit" / "test_store_contract.py"
_spec = importlib.util.spec_from_file_location("_procmem_store_contract", _CONTRACT_FILE)
_contract = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_contract)

CONTRACT_TESTS = sorted(
    name
    for name, fn in vars(_contract).items()
    if name.startswith("test_") and callable(fn) and "store" in inspect.signature(fn).parameters
)
for _name in CONTRACT_TESTS:
    globals()[_name] = getattr(_contract, _name)


@pytest.fixture(params=["embedded", "server"])
def store(request, tmp_path):
    if request.param == "embedded":
        s = ChromaStore(path=tmp_path / "chroma")
        yield s
    else:
        host, port = request.getfixturevalue("chroma_server")
        s = ChromaStore(host=host, port=port, prefix=f"t{uuid.uuid4().hex[:12]}")
        yield s
        s.drop()
    s.close()


def test_contract_tests_were_collected():
    assert len(CONTRACT_TESTS) >= 12
    assert "test_max_versions_trims_oldest" not in CONTRACT_TESTS  # SQLite-specific


# ---------------------------------------------------------------- Chroma specifics


def test_max_versions_trims_oldest(tmp_path, embedder):
    s = ChromaStore(path=tmp_path / "c", max_versions=2)
    p = Procedure(name="x")
    s.put([p], embedder.embed_documents([p.text()]))
    for i in range(4):
        s.put([p.model_copy(update={"description": f"d{i}"})])
    assert [v.version for v in s.versions(p.id)] == [4, 5]


def test_persistence_survives_reopen(tmp_path, embedder):
    path = tmp_path / "c"
    s = ChromaStore(path=path)
    p = Procedure(name="persist me", description="durable", tags=["a"])
    s.put([p], embedder.embed_documents([p.text()]))
    s.put([p.model_copy(update={"description": "v2", "tags": []})])
    s.close()
    s2 = ChromaStore(path=path)
    assert s2.get(p.id).description == "v2"
    assert len(s2.versions(p.id)) == 2
    assert s2.vector_search(embedder.embed_query("persist me"), k=1)[0][0] == p.id
    assert s2.list(tags=["a"]) == []  # a removed tag no longer matches
    assert s2.lexical_search("durable", k=3) == []


def test_no_chroma_default_embedding_function(tmp_path):
    s = ChromaStore(path=tmp_path / "c")
    for col in s._cols.values():
        assert col.configuration.get("embedding_function") is None
        assert col.configuration["hnsw"]["space"] == "cosine"


def test_embedding_model_mismatch_is_refused(tmp_path, embedder):
    path = tmp_path / "m"
    s = ChromaStore(path=path, embedding_model="model-a")
    p = Procedure(name="a")
    s.put([p], embedder.embed_documents([p.text()]))
    with pytest.raises(ConfigurationError, match="model-a"):
        ChromaStore(path=path, embedding_model="model-b")


def test_first_insert_without_embeddings_is_refused(tmp_path):
    s = ChromaStore(path=tmp_path / "c")
    with pytest.raises(EmbeddingDimensionError, match="need embeddings"):
        s.put([Procedure(name="a")])
    assert s.count() == 0


def test_insert_without_embedding_is_not_vector_searchable(tmp_path, embedder):
    s = ChromaStore(path=tmp_path / "c")
    a, b = Procedure(name="alpha"), Procedure(name="beta")
    s.put([a], embedder.embed_documents([a.text()]))
    s.put([b])
    assert [h[0] for h in s.vector_search(embedder.embed_query("beta"), k=5)] == [a.id]
    assert s.lexical_search("beta", k=5)[0][0] == b.id
    assert not s.get_embeddings([b.id]).any()


def test_bm25_prefers_rarer_and_more_frequent_terms(tmp_path, embedder):
    s = ChromaStore(path=tmp_path / "c")
    procs = [
        Procedure(name="deploy deploy service", description="deploy"),
        Procedure(name="deploy", description="rollout of the service with many other words here"),
        Procedure(name="restart service", description="service"),
    ]
    s.put(procs, embedder.embed_documents([p.text() for p in procs]))
    hits = s.lexical_search("deploy", k=3)
    assert [h[0] for h in hits] == [procs[0].id, procs[1].id]
    assert all(score > 0 for _, score in hits)
    assert s.lexical_search("DEPLOY", k=1)[0][0] == procs[0].id  # case-insensitive
    assert s.lexical_search("dep", k=3) == []  # substrings are candidates, not matches
    assert s.rebuild_stats() > 0


def test_unreachable_server_raises_vector_store_error(free_port):
    with pytest.raises(VectorStoreError, match=str(free_port)):
        ChromaStore(host="127.0.0.1", port=free_port)


def test_invalid_options():
    with pytest.raises(ConfigurationError):
        ChromaStore(path="x", host="y")
    with pytest.raises(ConfigurationError):
        ChromaStore(path="x", prefix="bad prefix!")


def test_query_dimension_checked(tmp_path, embedder):
    s = ChromaStore(path=tmp_path / "c")
    p = Procedure(name="a")
    s.put([p], embedder.embed_documents([p.text()]))
    with pytest.raises(EmbeddingDimensionError):
        s.vector_search(np.ones(3, dtype=np.float32), k=1)


def test_memory_facade_on_chroma(tmp_path, embedder):
    from procmem import MiningConfig, ProceduralMemory

    mining = MiningConfig(enabled=False)  # the miner is exercised by its own tests
    memory = ProceduralMemory(store=ChromaStore(path=tmp_path / "c"), embedder=embedder, mining=mining)
    pid = memory.store_procedure("deploy", ["git pull", "make build", "make deploy"], description="ship the app")
    assert memory.search("deploy the app", k=1)[0].procedure.id == pid
    memory.update(pid, description="ship the app safely")
    assert memory.rollback(pid, 1).description == "ship the app"
    for _ in range(3):
        memory.learn_session(["git status", "git add .", "git commit -m x"], "success")
    preds = memory.predict_next_action(["git status", "git add ."], top_k=1)
    assert preds and preds[0].action.startswith("git commit")
    out = tmp_path / "export.jsonl"
    assert memory.save(out) >= 1
    other = ProceduralMemory(store=ChromaStore(path=tmp_path / "c2"), embedder=embedder, mining=mining)
    assert other.load(out)["procedures"] >= 1


def test_lexical_search_equals_scoring_every_document(tmp_path):
    # The early-stopping (MaxScore) search must return the k best BM25 scores of the whole
    # collection: checked against BM25 computed here over every stored document.
    import math
    from collections import Counter

    rng = np.random.default_rng(7)
    vocab = [f"w{i}" for i in range(25)]  # few words: every one is common
    store = ChromaStore(path=tmp_path / "chroma")
    procs = [Procedure(kind="tool", name=f"p{i}", namespace="a" if i % 2 else "b",
                       description=" ".join(rng.choice(vocab, size=int(rng.integers(3, 12)))))
             for i in range(700)]
    vecs = rng.standard_normal((len(procs), 8)).astype(np.float32)
    store.put(procs, vecs / np.linalg.norm(vecs, axis=1, keepdims=True))
    got = store._col("procedures").get(include=["documents", "metadatas"])
    rows = zip(got["ids"], got["documents"], got["metadatas"], strict=True)
    docs = {pid: (doc.split(), meta) for pid, doc, meta in rows}
    avgdl = store._meta()["bm25_total_len"] / len(docs)

    def oracle(query: str, namespace: str | None) -> list[float]:
        words = set(query.split())
        df = {w: sum(w in toks for toks, _ in docs.values()) for w in words}
        idf = {w: math.log(1 + (len(docs) - f + 0.5) / (f + 0.5)) for w, f in df.items() if f}
        scores = []
        for toks, meta in docs.values():
            if namespace is not None and meta.get("namespace") != namespace:
                continue
            tf = Counter(t for t in toks if t in idf)
            norm = 1.2 * (1 - 0.75 + 0.75 * len(toks) / avgdl)
            s = sum(idf[w] * f * 2.2 / (f + norm) for w, f in tf.items())
            if s > 0:
                scores.append(s)
        return sorted(scores, reverse=True)[:10]

    for q in ("w1 w2 w3", "w4", "w5 w5 w9 w20", "w7 w11"):
        for ns in (None, "a"):
            hits = store.lexical_search(q, k=10, namespace=ns)
            assert len(hits) == 10
            assert [s for _, s in hits] == pytest.approx(oracle(q, ns)), (q, ns)
    store.close()
