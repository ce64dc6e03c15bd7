"""Behaviour of the hybrid retriever users depend on (HashingEmbedder + InMemoryStore, no network)."""

from __future__ import annotations

import asyncio
import json
import math

import numpy as np
import pytest

from procmem.embeddings import HashingEmbedder
from procmem.errors import ImportFormatError, ProcedureNotFoundError, ValidationError
from procmem.evaluation_retrieval import (
    evaluate_retrieval,
    read_queries_jsonl,
    read_tools_jsonl,
    read_usages_jsonl,
)
from procmem.retrieval import (
    HybridRetriever,
    RetrievalConfig,
    _centred,
    _lexical_query,
    clause_texts,
    embed_procedures,
    retrieval_text,
)
from procmem.stores import InMemoryStore
from procmem.types import Procedure

TOOLS = [
    ("WeatherTool", "Get the weather forecast: rain, temperature and wind for a city."),
    ("FlightBooker", "Search and book airline flights between airports."),
    ("RecipeFinder", "Find cooking recipes from the ingredients you have."),
    ("StockQuotes", "Look up stock prices and market quotes for a ticker symbol."),
    ("TranslateText", "Translate text between languages."),
    ("git_commit", "Record staged changes to the repository with a message."),
]


@pytest.fixture()
def retriever() -> HybridRetriever:
    r = HybridRetriever(InMemoryStore(), HashingEmbedder(dim=512))
    r.add_procedures([Procedure(kind="tool", name=n, description=d, tags=["demo"]) for n, d in TOOLS])
    return r


def ids(r: HybridRetriever) -> dict[str, str]:
    return {p.name: p.id for p in r.store.list()}


def names(results) -> list[str]:
    return [x.procedure.name for x in results]


def test_dense_finds_paraphrase(retriever):
    # No shared word with the description's name; overlap of word pieces only.
    res = retriever.search("cooking something with the ingredients in my fridge", k=3)
    assert names(res)[0] == "RecipeFinder"
    assert res[0].dense is not None and -1.0 <= res[0].dense <= 1.0


def test_lexical_finds_exact_name(retriever):
    res = retriever.search("git commit", k=3)
    assert names(res)[0] == "git_commit"
    assert res[0].lexical == pytest.approx(1.0)
    assert "name/description match" in res[0].reason


def test_usages_move_the_right_tool_to_the_top(retriever):
    query = "what should I wear to the beach on saturday"
    before = names(retriever.search(query, k=6))
    assert before[0] != "WeatherTool"
    wid = ids(retriever)["WeatherTool"]
    retriever.record_usage("what should I wear to the park on sunday", wid)
    retriever.record_usage("what should I wear to the beach tomorrow", wid)
    res = retriever.search(query, k=3)
    assert names(res)[0] == "WeatherTool"
    assert res[0].experience is not None and res[0].experience > 0.5
    assert "similar to past request" in res[0].reason


def test_failures_push_down(retriever):
    query = "translate my stock report into german"
    first = names(retriever.search(query, k=6))[0]
    fid = ids(retriever)[first]
    for q in ("translate my stock report into french", "translate the stock report to german please"):
        retriever.record_usage(q, fid, success=False)
    res = retriever.search(query, k=6)
    assert names(res)[0] != first
    assert names(res).index(first) > 0


def test_batched_usages_and_unknown_id(retriever):
    wid = ids(retriever)["WeatherTool"]
    n = retriever.record_usages([("is it windy in Oslo", wid), {"query": "rain in Rome?", "procedure_id": wid}])
    assert n == 2
    assert retriever.store.count_usages() == 2
    with pytest.raises(ProcedureNotFoundError):
        retriever.record_usage("anything", "no-such-id")
    with pytest.raises(ValidationError) as exc:
        retriever.record_usages([("", wid)])
    assert exc.value.field == "query"


def test_experience_index_rebuilt_from_store(retriever):
    wid = ids(retriever)["WeatherTool"]
    retriever.record_usages([("what should I wear to the beach tomorrow", wid)] * 3)
    fresh = HybridRetriever(retriever.store, retriever.embedder)  # e.g. a new process on the same file
    res = fresh.search("what should I wear to the beach on saturday", k=1)
    assert names(res) == ["WeatherTool"]


def test_filters_kind_tag_namespace():
    r = HybridRetriever(InMemoryStore(), HashingEmbedder(dim=512))
    r.add_procedures([
        Procedure(kind="tool", name="deploy_app", description="deploy the app", tags=["prod"]),
        Procedure(kind="workflow", name="deploy_flow", description="deploy the app step by step", tags=["prod"]),
        Procedure(kind="tool", name="deploy_staging", description="deploy the app to staging", tags=["staging"]),
        Procedure(kind="tool", name="deploy_other", description="deploy the app", namespace="other"),
    ])
    assert set(names(r.search("deploy the app", k=10, kinds=["workflow"]))) == {"deploy_flow"}
    assert set(names(r.search("deploy the app", k=10, tags=["staging"]))) == {"deploy_staging"}
    assert set(names(r.search("deploy the app", k=10, namespace="other"))) == {"deploy_other"}
    assert "deploy_other" not in names(r.search("deploy the app", k=10, namespace="default"))
    # A usage voting for a procedure outside the filter does not leak it in.
    other = next(p for p in r.store.list() if p.name == "deploy_flow")
    r.record_usage("deploy the app now", other.id)
    assert set(names(r.search("deploy the app now", k=10, kinds=["tool"]))) <= {
        "deploy_app", "deploy_staging", "deploy_other"}


def test_a_usage_stored_across_namespaces_never_leaks_a_procedure(tmp_path):
    # record_usage refuses a usage whose procedure is in another namespace, but a store written
    # by an older procmem (or by hand) may hold one: the namespace filter must still hold.
    from procmem.stores import SQLiteStore
    from procmem.types import Usage

    emb = HashingEmbedder(dim=512)
    r = HybridRetriever(SQLiteStore(tmp_path / "s.sqlite3"), emb)
    [mine, theirs] = r.add_procedures([
        Procedure(kind="tool", name="backup_db", description="back up the database"),
        Procedure(kind="tool", name="drop_db", description="drop every table", namespace="other"),
    ])
    for q in ("wipe the database", "wipe the database now", "wipe the database please"):
        r.record_usage(q, mine.id)
        stray = Usage(query=q, procedure_id=theirs.id, namespace="default")
        r.store.add_usages([stray], emb.embed_documents([q]))
    r.invalidate()
    found = names(r.search("wipe the database", k=10, namespace="default"))
    assert "backup_db" in found and "drop_db" not in found


def test_vote_only_candidates_that_fail_the_namespace_never_take_a_results_place(tmp_path):
    # Procedures voted for by past requests but deleted (the in-memory past requests follow the
    # store within refresh_interval) or of another namespace (a stray usage) are left out before
    # scoring: in the head they left fewer than k results, none at all here.
    from procmem.types import Usage

    emb = HashingEmbedder(dim=256)
    r = HybridRetriever(InMemoryStore(), emb)
    procs = r.add_procedures([Procedure(kind="tool", name=f"tool_{i}", description=f"handle job {i} deploy")
                              for i in range(20)])
    theirs = r.add_procedures([Procedure(kind="tool", name=f"theirs_{i}", description="drop a table",
                                         namespace="other") for i in range(8)])
    for p, t in zip(procs[:8], theirs, strict=True):
        for q in ("deploy the service", "deploy the service now", "please deploy the service"):
            r.record_usage(q, p.id)
            r.store.add_usages([Usage(query=q, procedure_id=t.id, namespace="default")], emb.embed_documents([q]))
    r.invalidate()
    r.search("warm up", namespace="default")  # the past requests are in memory
    for p in procs[:8]:
        r.store.delete(p.id)
    for k in (1, 3):
        found = r.search("deploy the service", k=k, namespace="default")
        assert len(found) == k and {x.procedure.namespace for x in found} == {"default"}


def test_a_precomputed_query_vector_gives_the_same_results(retriever):
    qv = retriever.embedder.embed_query("weather forecast")
    assert names(retriever.search("weather forecast", query_vector=qv)) == names(retriever.search("weather forecast"))
    with pytest.raises(ValidationError, match="query_vector"):
        retriever.search("weather forecast", query_vector=qv[:10])
    with pytest.raises(ValidationError, match="query_vector"):
        retriever.search("weather forecast", query_vector=np.full_like(qv, np.nan))


def test_min_score_and_k(retriever):
    res = retriever.search("weather forecast", k=6)
    assert len(res) <= 6 and res == sorted(res, key=lambda x: -x.score)
    cut = res[0].score
    kept = retriever.search("weather forecast", k=6, min_score=cut)
    assert names(kept) == names(res)[:1]
    assert retriever.search("weather forecast", k=6, min_score=cut + 1.0) == []
    assert len(retriever.search("weather forecast", k=2)) == 2


def test_reasons_and_fields_populated(retriever):
    for r in retriever.search("book a flight to Paris", k=3):
        assert r.reason
        assert r.dense is not None


def test_touch_counts_access(retriever):
    res = retriever.search("stock prices", k=1)
    pid = res[0].procedure.id
    assert retriever.store.get(pid).access_count == 1
    retriever.search("stock prices", k=1, touch=False)
    assert retriever.store.get(pid).access_count == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"query": ""}, "query"), ({"query": "   "}, "query"), ({"query": "x", "k": 0}, "k"),
     ({"query": "x", "k": 2.5}, "k"), ({"query": "x", "min_score": math.nan}, "min_score"),
     ({"query": "x", "min_score": math.inf}, "min_score"), ({"query": "x", "namespace": ""}, "namespace")],
)
def test_bad_input_names_field(retriever, kwargs, field):
    query = kwargs.pop("query")
    with pytest.raises(ValidationError) as exc:
        retriever.search(query, **kwargs)
    assert exc.value.field == field


def test_empty_store_returns_nothing():
    assert HybridRetriever(InMemoryStore(), HashingEmbedder()).search("anything") == []


def test_config_validation():
    with pytest.raises(ValueError):
        RetrievalConfig(vote_temperature=0.0)
    with pytest.raises(ValueError):
        RetrievalConfig(feedback_docs=-1)
    with pytest.raises(ValueError):
        RetrievalConfig(feedback_weight=-0.5)
    with pytest.raises(ValueError):
        RetrievalConfig(description_weight=math.nan)
    r = HybridRetriever(InMemoryStore(), HashingEmbedder(), config={"neighbours": 5})
    assert r.config.neighbours == 5


def test_async_twins(retriever):
    wid = ids(retriever)["WeatherTool"]

    async def go():
        await retriever.arecord_usage("umbrella needed in Leeds today?", wid)
        return await retriever.asearch("umbrella needed in York today?", k=1)

    res = asyncio.run(go())
    assert names(res) == ["WeatherTool"]


def test_retrieval_text_splits_names():
    p = Procedure(kind="tool", name="HouseRentingTool_v2", description="Find flats.")
    assert retrieval_text(p).startswith("House Renting Tool v2: Find flats.")


# ---------------------------------------------------------------------- evaluation
def test_evaluate_retrieval_writes_rankings(tmp_path):
    tools = [{"name": n, "description": d} for n, d in TOOLS]
    queries = [{"query": "rain tomorrow in Leeds?", "tools": ["WeatherTool"]},
               {"query": "git commit my staged changes", "tools": ["git_commit"]}]
    usages = [{"query": "will it rain in Leeds", "tool": "WeatherTool", "success": True}]
    out = tmp_path / "ranks.jsonl"
    seen = []
    rep = evaluate_retrieval(tools, queries, usages=usages, embedder=HashingEmbedder(dim=512), output=out,
                             progress=lambda done, total: seen.append((done, total)))
    assert rep.queries == 2 and rep.tools == 6 and rep.usages == 1
    assert seen == [(1, 2), (2, 2)]
    assert rep.hit_at_1 == 1.0 and rep.recall_at_5 == 1.0 and rep.mrr_at_10 == 1.0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["query_index"] for x in lines] == [0, 1]
    assert lines[0]["tools"][0] == "WeatherTool" and len(lines[0]["tools"]) == 6
    with pytest.raises(ValidationError) as exc:
        evaluate_retrieval(tools, queries, usages=[{"query": "q", "tool": "Nope"}], embedder=HashingEmbedder())
    assert exc.value.field == "tool"


def test_loaders_name_file_and_line(tmp_path):
    good = tmp_path / "tools.jsonl"
    good.write_text('{"name": "a", "description": "x"}\n\n{"name": "b", "description": "y"}\n')
    assert [t["name"] for t in read_tools_jsonl(good)] == ["a", "b"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"name": "a", "description": "x"}\n{"name": "a", "description": "y"}\n')
    with pytest.raises(ImportFormatError, match=r"bad.jsonl:2: duplicate tool name"):
        read_tools_jsonl(bad)
    bad.write_text('{"query": "q", "tool": "a"}\nnot json\n')
    with pytest.raises(ImportFormatError, match=r"bad.jsonl:2: not valid JSON"):
        read_usages_jsonl(bad)
    bad.write_text('{"query": "q", "tool": "a", "success": "yes"}\n')
    with pytest.raises(ImportFormatError) as exc:
        read_usages_jsonl(bad)
    assert exc.value.field == "success"
    bad.write_text('{"query": "q", "tools": []}\n')
    with pytest.raises(ImportFormatError) as exc:
        read_queries_jsonl(bad)
    assert exc.value.field == "tools"
    bad.write_text('{"query": "q", "tool": "a"}\n')
    assert read_queries_jsonl(bad) == [{"query": "q", "tools": ["a"]}]
    with pytest.raises(ImportFormatError, match="cannot read"):
        read_tools_jsonl(tmp_path / "missing.jsonl")


CLASSIFIER_ONLY = {"vote_weight": 0.0, "prototype_weight": 0.0, "lexical_vote_weight": 0.0,
                   "description_weight": 0.0, "prior_weight": 0.0, "lexical_share": 0.0,
                   "classifier_min_usages": 1}


def test_a_few_usages_make_their_requests_rank_higher_not_lower(retriever):
    # The first usages arrive one at a time while the agent works. Single SGD steps on them once
    # tied shared words ("the") to the last procedure used, so a request asked again after its
    # success scored 0.05 instead of near 1; until the classifier has enough requests to learn
    # from, the kNN votes and prototypes speak for them.
    tools = ids(retriever)
    served = [("will the rain stop in oslo tomorrow", "WeatherTool"),
              ("book the cheapest flight to rome", "FlightBooker"),
              ("what can I cook with the leftover rice", "RecipeFinder")]
    retriever.search("weather", k=1)  # the experience index exists: usages then update it online
    for q, name in served:
        retriever.record_usage(q, tools[name], success=True)
    for q, name in served:
        after = retriever.search(q, k=6, touch=False)
        assert names(after)[0] == name
        assert after[0].score >= 0.5, (q, after[0].score)


@pytest.mark.parametrize("reopen", [False, True])
def test_classifier_separates_near_duplicate_tools(reopen):
    # Two tools with the same description: only what they were used for tells them apart.
    r = HybridRetriever(InMemoryStore(), HashingEmbedder(dim=512), config=CLASSIFIER_ONLY)
    a, b = r.add_procedures([Procedure(kind="tool", name=n, description="Find research papers for a topic.")
                             for n in ("ResearchFinder", "ResearchHelper")])
    r.record_usages([(f"physics papers about {w}", a.id) for w in ("quarks", "lasers", "optics", "gravity")]
                    + [(f"biology papers about {w}", b.id) for w in ("cells", "genes", "enzymes", "proteins")])
    if reopen:  # a new process on the same store trains from the stored usages
        r = HybridRetriever(r.store, r.embedder, config=CLASSIFIER_ONLY)
    assert names(r.search("recent physics papers", k=2)) == ["ResearchFinder", "ResearchHelper"]
    assert names(r.search("recent biology papers", k=2)) == ["ResearchHelper", "ResearchFinder"]
    off = HybridRetriever(r.store, r.embedder, config={**CLASSIFIER_ONLY, "classifier_weight": 0.0})
    scores = [x.score for x in off.search("recent physics papers", k=2)]
    assert scores[0] == pytest.approx(scores[1])  # without the classifier they tie


class _ConstantEmbedder:
    """Every text gets the same vector: only words can tell requests apart."""

    dim = 8
    name = "constant"

    def embed_documents(self, texts):
        return np.tile(np.eye(1, self.dim, dtype=np.float32), (len(texts), 1))

    def embed_query(self, text):
        return np.eye(1, self.dim, dtype=np.float32)[0]


@pytest.mark.parametrize("reopen", [False, True])
def test_classifier_learns_words_the_embedding_cannot_see(reopen):
    r = HybridRetriever(InMemoryStore(), _ConstantEmbedder(), config=CLASSIFIER_ONLY)
    a, b = r.add_procedures([Procedure(kind="tool", name=n, description="Find research papers for a topic.")
                             for n in ("ResearchFinder", "ResearchHelper")])
    r.record_usages([(f"physics papers about {w}", a.id) for w in ("quarks", "lasers", "optics", "gravity")]
                    + [(f"biology papers about {w}", b.id) for w in ("cells", "genes", "enzymes", "proteins")])
    if reopen:
        r = HybridRetriever(r.store, r.embedder, config=CLASSIFIER_ONLY)
    assert names(r.search("recent physics papers", k=2)) == ["ResearchFinder", "ResearchHelper"]
    assert names(r.search("recent biology papers", k=2)) == ["ResearchHelper", "ResearchFinder"]
    off = HybridRetriever(r.store, r.embedder, config={**CLASSIFIER_ONLY, "classifier_lexical_rate": 0.0})
    scores = [x.score for x in off.search("recent physics papers", k=2)]
    assert scores[0] == pytest.approx(scores[1])  # the embedding part alone cannot separate them


def test_classifier_turns_off_past_max_classes(retriever):
    cfg = {**CLASSIFIER_ONLY, "classifier_max_classes": 1}
    r = HybridRetriever(retriever.store, retriever.embedder, config=cfg)
    tools = ids(r)
    r.record_usages([("rain tomorrow in oslo", tools["WeatherTool"]), ("flights to oslo", tools["FlightBooker"])])
    res = r.search("flights to oslo", k=6)  # still answers, from the description evidence alone
    assert len(res) == 6
    assert r._experience().classifier is None


def test_classifier_config_validation():
    for bad in ({"classifier_temperature": 0.0}, {"classifier_learning_rate": -1.0}, {"classifier_epochs": -1},
                {"classifier_weight": math.inf}, {"classifier_lexical_rate": -1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            RetrievalConfig(**bad)


def test_overlapped_searches_rank_like_sequential_ones(tmp_path, monkeypatch):
    from procmem.stores import SQLiteStore

    r = HybridRetriever(SQLiteStore(tmp_path / "s.sqlite3"), HashingEmbedder(dim=512))
    r.add_procedures([Procedure(kind="tool", name=n, description=d, tags=["demo"]) for n, d in TOOLS])
    r.record_usages([("will it rain in oslo", ids(r)["WeatherTool"])])
    queries = ["weather in oslo", "book a flight", "translate to french", "commit my changes"]
    assert r._pool() is not None  # SQLite allows concurrent reads: lexical search runs in a worker
    overlapped = [[(x.procedure.id, x.score) for x in r.search(q, k=4, touch=False)] for q in queries]
    monkeypatch.setattr(SQLiteStore, "concurrent_reads", False)
    r2 = HybridRetriever(r.store, r.embedder)
    assert r2._pool() is None
    assert [[(x.procedure.id, x.score) for x in r2.search(q, k=4, touch=False)] for q in queries] == overlapped


def test_embed_procedures_mixes_in_the_description_clauses() -> None:
    emb = HashingEmbedder()
    multi = Procedure(kind="tool", name="TripTool",
                      description="Offers hotel bookings, travel planning and image editing.")
    single = Procedure(kind="tool", name="git_commit", description="Record changes")
    assert clause_texts(multi) == ["Trip Tool: Offers hotel bookings", "Trip Tool: travel planning",
                                   "Trip Tool: image editing."]
    assert clause_texts(single) == []
    vecs = embed_procedures(emb, [multi, single])
    assert vecs.shape == (2, emb.dim)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    # Without clauses the vector is that of the whole text; with clauses it moves towards them.
    np.testing.assert_allclose(vecs[1], emb.embed_documents([retrieval_text(single)])[0], rtol=1e-5, atol=1e-6)
    whole = emb.embed_documents([retrieval_text(multi)])[0]
    clause = emb.embed_documents(clause_texts(multi)).mean(axis=0)
    assert float(vecs[0] @ clause) > float(whole @ clause)
    assert embed_procedures(emb, []).shape == (0, emb.dim)


def test_stop_words_do_not_make_a_lexical_match(retriever):
    assert _lexical_query("Can you tell me the weather in Oslo?") == "tell weather Oslo"
    assert _lexical_query("who am I") == "who am I"  # all stop words: searched as written
    notes = Procedure(kind="tool", name="Notes", description="What you can do with it is up to you.")
    retriever.add_procedures([notes])
    res = retriever.search("can you give me the weather for Oslo", k=3)
    assert names(res)[0] == "WeatherTool"
    assert all(r.lexical is None for r in res if r.procedure.name == "Notes")


def test_feedback_favours_a_candidate_like_the_other_good_matches() -> None:
    # An isolated vector a bit closer to the query than the members of a group of similar ones.
    q = np.array([1.0, 0.0, 0.0, 0.0], np.float32)
    isolated = np.array([0.6, 0.8, 0.0, 0.0], np.float32)
    group = np.array([[0.55, 0.0, 0.835, 0.0], [0.5, 0.0, 0.8, 0.33], [0.5, 0.0, 0.85, -0.17]], np.float32)
    far = np.array([[0.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]], np.float32)
    vecs = np.vstack([isolated, group / np.linalg.norm(group, axis=1, keepdims=True), far])
    first = vecs @ q
    assert int(np.argmax(first)) == 0
    r = HybridRetriever(InMemoryStore(), HashingEmbedder(dim=8), config={"feedback_docs": 3, "feedback_weight": 0.5})
    moved = r._feedback(q, vecs, first, np.zeros(7), None)
    assert int(np.argmax(moved)) == 1
    # The lexical share is added back unchanged.
    np.testing.assert_allclose(r._feedback(q, vecs, first, np.full(7, 0.25), None), moved + 0.25, rtol=1e-6)


def test_feedback_only_without_experience(retriever):
    off = HybridRetriever(retriever.store, retriever.embedder, config={"feedback_docs": 0})
    query = "will it rain in oslo tomorrow"

    def scores(r):
        return [(x.procedure.id, x.score) for x in r.search(query, k=6, touch=False)]

    assert scores(retriever) != scores(off)  # no past requests: feedback re-scores the description evidence
    retriever.record_usage("umbrella needed in Leeds today?", ids(retriever)["WeatherTool"])
    off.invalidate()
    assert scores(retriever) == scores(off)


def test_centred_scores_rank_as_cosines_to_the_centred_vectors() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        vecs = rng.normal(size=(30, 16)) + 2.0  # a shared component, as sentence embeddings have
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        q = vecs[:5].mean(axis=0) + rng.normal(scale=0.3, size=16)
        q /= np.linalg.norm(q)
        m = vecs.mean(axis=0)
        got = _centred(vecs @ q, q, vecs, m)
        centred = vecs - m
        want = centred @ q / np.linalg.norm(centred, axis=1)
        assert list(np.argsort(-got)) == list(np.argsort(-want))
        # A candidate at the typical (root-mean-square) distance from the centroid keeps its cosine.
        unit_dirs = centred / np.linalg.norm(centred, axis=1, keepdims=True)
        at_typical = m + math.sqrt(1.0 - float(m @ m)) * unit_dirs
        np.testing.assert_allclose(_centred(at_typical @ q, q, at_typical, m), at_typical @ q, atol=1e-9)


class _FixedQuery:
    """An embedder whose every query is one given vector (the procedures' vectors are put directly)."""

    def __init__(self, q: np.ndarray) -> None:
        self.q, self.dim = q.astype(np.float32), len(q)

    def embed_query(self, text: str) -> np.ndarray:
        return self.q

    def embed_documents(self, texts):
        return np.tile(self.q, (len(texts), 1))


def test_centering_lifts_a_generic_procedure_over_a_specific_one_sharing_the_topic() -> None:
    def unit(x):
        return np.asarray(x, np.float32) / np.linalg.norm(x)

    e = np.eye(6)
    generic = unit(e[0] + 0.2 * e[5])  # close to the centroid of the procedures
    specific = [unit(0.3 * e[0] + e[i]) for i in (1, 2, 3, 4)]
    q = unit(0.62 * e[0] + 0.45 * e[1])  # plain cosine: specific[0] 0.795 > generic 0.794
    store = InMemoryStore()
    procs = [Procedure(kind="tool", name=f"t{i}", description="x") for i in range(5)]
    r = HybridRetriever(store, _FixedQuery(q))
    store.put(procs[:1], generic[None, :])
    assert names(r.search("zzz", k=1, touch=False)) == ["t0"]
    store.put(procs[1:], np.vstack(specific))  # the centroid follows at once (no stale one from above)
    for centering, top, vec in ((True, "t0", generic), (False, "t1", specific[0])):
        r = HybridRetriever(store, _FixedQuery(q), config={"description_centering": centering, "feedback_docs": 0})
        best = r.search("zzz", k=1, touch=False)[0]
        assert best.procedure.name == top
        assert best.dense == pytest.approx(float(q @ vec), abs=1e-6)  # the reported cosine stays plain


def test_past_requests_recorded_after_a_search_are_found_without_a_rebuild():
    from procmem.retrieval import _Experience
    from procmem.types import Usage

    def usages(texts, pid):
        return [Usage(query=t, procedure_id=pid) for t in texts]

    first = usages([f"book a table for {n} at the bistro" for n in range(2, 12)], "restaurant")
    later = usages(["reserve a hotel room in Lisbon", "book the cheapest hotel near the station"], "hotel")
    online = _Experience(1.2, 0.75)
    online.add(first, np.zeros((len(first), 4), np.float32))
    assert online.lexical("hotel in Lisbon", 5, None) == []  # builds the postings
    built = online._arrays
    online.add(later, np.zeros((len(later), 4), np.float32))
    hits = online.lexical("hotel in Lisbon", 5, None)
    assert online._arrays is built  # extended in place, not rebuilt
    fresh = _Experience(1.2, 0.75)
    fresh.add(first + later, np.zeros((len(first) + len(later), 4), np.float32))
    expected = fresh.lexical("hotel in Lisbon", 5, None)
    assert [row for row, _ in hits] == [row for row, _ in expected] == [10, 11]
    assert [s for _, s in hits] == pytest.approx([s for _, s in expected], rel=0.05)


def test_a_procedure_never_used_keeps_its_place_after_others_were_used(retriever):
    # With a few usages, the experience sources once gave every procedure that had served
    # nothing no share at all, so in the geometric pool any used procedure outranked a perfect
    # description match (an agent at work scored 0.24 hit@1 on its first 300 MetaTool requests).
    tools = ids(retriever)
    for q in ("will it rain in oslo", "weather forecast for bergen", "is it windy in tromso"):
        retriever.record_usage(q, tools["WeatherTool"], success=True)
    for query, name in [("book a flight from oslo to rome", "FlightBooker"),
                        ("translate this text into french", "TranslateText"),
                        ("stock price of the ticker ACME", "StockQuotes")]:
        top = retriever.search(query, k=3, touch=False)[0]
        assert top.procedure.name == name, query
        assert top.experience is None  # it has served nothing: no experience to report
