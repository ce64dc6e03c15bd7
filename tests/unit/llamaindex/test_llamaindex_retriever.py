"""ProceduralMemoryRetriever: procedures as scored text nodes, sync and async, inside a query engine."""

import pytest
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from llamaindex_procmem import ProceduralMemoryRetriever
from procmem.errors import ConfigurationError


@pytest.fixture
def stored(pm):
    pm.store_procedure("deploy", ["git pull", "make build", "make deploy"], description="Deploy the web app")
    pm.store_procedure("rollback", ["git revert HEAD", "make deploy"], description="Roll back a bad release")
    pm.record_skill("retry-429", "When an API returns 429, retry with exponential backoff", triggers=["rate limited"])
    pm.record_outcome("deploy", True)
    return pm


def test_retrieve_returns_rendered_procedures_with_metadata(stored):
    nodes = ProceduralMemoryRetriever(memory=stored, k=2).retrieve("how do I deploy the web app?")
    assert len(nodes) == 2
    assert all(isinstance(n, NodeWithScore) for n in nodes)
    top = nodes[0]
    proc = stored.get("deploy", touch=False)
    assert top.node.text == proc.render()
    assert top.node.node_id == "deploy"
    assert top.node.metadata == {
        "id": "deploy",
        "kind": "workflow",
        "name": "deploy",
        "version": 1,
        "success_rate": round(proc.success_rate, 4),
        "reason": top.node.metadata["reason"],
    }
    assert top.node.metadata["reason"]
    assert top.score >= nodes[1].score
    assert "Success rate 1/1" in top.node.get_content(metadata_mode=MetadataMode.LLM)
    assert "reason" not in top.node.get_content(metadata_mode=MetadataMode.LLM)
    assert top.node.get_content(metadata_mode=MetadataMode.EMBED) == proc.render()


async def test_aretrieve_is_native_and_matches_retrieve(stored, monkeypatch):
    retriever = ProceduralMemoryRetriever(memory=stored, k=3)
    expected = [(n.node.node_id, n.score) for n in retriever.retrieve("roll back a bad release")]

    def no_sync(*a, **k):
        raise AssertionError("aretrieve must not fall back to the sync _retrieve")

    monkeypatch.setattr(retriever, "_retrieve", no_sync)
    got = await retriever.aretrieve(QueryBundle("roll back a bad release"))
    assert [(n.node.node_id, n.score) for n in got] == expected
    assert got[0].node.node_id == "rollback"


def test_filters_are_passed_to_the_search(stored):
    nodes = ProceduralMemoryRetriever(memory=stored, k=5, kinds=["skill"]).retrieve("rate limited by the API")
    assert [n.node.metadata["kind"] for n in nodes] == ["skill"]
    assert ProceduralMemoryRetriever(memory=stored, namespace="nobody").retrieve("deploy") == []
    assert ProceduralMemoryRetriever(memory=stored, min_score=1e9).retrieve("deploy") == []


def test_invalid_options_raise(stored):
    with pytest.raises(ConfigurationError, match="k must be"):
        ProceduralMemoryRetriever(memory=stored, k=0)
    with pytest.raises(ConfigurationError, match="ProceduralMemory"):
        ProceduralMemoryRetriever(memory=object())


def test_retriever_inside_a_query_engine(stored):
    # MockLLM echoes its prompt, so the answer shows the context the engine built.
    engine = RetrieverQueryEngine.from_args(ProceduralMemoryRetriever(memory=stored, k=1), llm=MockLLM())
    response = engine.query("How do I deploy the web app?")
    assert [n.node.node_id for n in response.source_nodes] == ["deploy"]
    assert "1. git pull" in str(response)
    assert "How do I deploy the web app?" in str(response)


async def test_retriever_inside_an_async_query_engine(stored):
    engine = RetrieverQueryEngine.from_args(ProceduralMemoryRetriever(memory=stored, k=1), llm=MockLLM())
    response = await engine.aquery("roll back a bad release")
    assert [n.node.node_id for n in response.source_nodes] == ["rollback"]
    assert "1. git revert HEAD" in str(response)
