"""``ProceduralMemoryRetriever``: documents, filters, per-call options, LCEL."""

from __future__ import annotations

import pytest
from langchain_core.documents import Document
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import PromptTemplate
from langchain_core.runnables import RunnablePassthrough

from langchain_procmem import ProceduralMemoryRetriever


def test_documents_carry_the_rendered_procedure_and_its_record(seeded):
    docs = ProceduralMemoryRetriever(memory=seeded, k=2).invoke("deploy the web app to production")
    assert len(docs) == 2
    top = docs[0]
    assert isinstance(top, Document)
    assert top.id == "deploy" == top.metadata["id"]
    assert top.page_content == seeded.get("deploy").render()
    assert top.metadata["kind"] == "workflow"
    assert top.metadata["version"] == 1
    assert 0.0 <= top.metadata["success_rate"] <= 1.0
    assert isinstance(top.metadata["score"], float)
    assert isinstance(top.metadata["reason"], str)
    assert top.metadata["tags"] == ["ops"]
    assert docs[0].metadata["score"] >= docs[1].metadata["score"]


def test_k_and_filters(seeded):
    retriever = ProceduralMemoryRetriever(memory=seeded, k=10, procedure_tags=["support"])
    assert {d.metadata["id"] for d in retriever.invoke("customer")} == {"refund", "onboard"}
    assert len(ProceduralMemoryRetriever(memory=seeded, k=1).invoke("customer")) == 1
    assert ProceduralMemoryRetriever(memory=seeded, kinds=["skill"]).invoke("deploy") == []
    assert ProceduralMemoryRetriever(memory=seeded, min_score=1e9).invoke("deploy") == []
    assert ProceduralMemoryRetriever(memory=seeded, namespace="someone-else").invoke("deploy") == []


def test_per_call_options_override_the_retriever(seeded):
    retriever = ProceduralMemoryRetriever(memory=seeded, k=4)
    docs = retriever.invoke("customer", k=1, tags=["support"])
    assert len(docs) == 1 and docs[0].metadata["id"] in {"refund", "onboard"}
    with pytest.raises(TypeError, match="unknown search option"):
        retriever.invoke("deploy", top_k=2)


async def test_async_matches_sync(seeded):
    retriever = ProceduralMemoryRetriever(memory=seeded, k=3)
    sync_ids = [d.id for d in retriever.invoke("roll back the deploy")]
    async_ids = [d.id for d in await retriever.ainvoke("roll back the deploy")]
    assert sync_ids == async_ids and len(sync_ids) == 3


def test_works_in_an_lcel_rag_chain(seeded):
    retriever = ProceduralMemoryRetriever(memory=seeded, k=1)
    prompt = PromptTemplate.from_template("Procedures:\n{procedures}\n\nTask: {task}\nAnswer:")
    seen: list[str] = []

    def format_docs(docs: list[Document]) -> str:
        text = "\n\n".join(d.page_content for d in docs)
        seen.append(text)
        return text

    chain = (
        {"procedures": retriever | format_docs, "task": RunnablePassthrough()}
        | prompt
        | FakeListLLM(responses=["Run git pull, make build, make deploy."])
        | StrOutputParser()
    )
    assert chain.invoke("deploy the web app") == "Run git pull, make build, make deploy."
    assert seen == [seeded.get("deploy").render()]


def test_memory_is_not_serialised(seeded):
    retriever = ProceduralMemoryRetriever(memory=seeded)
    assert "memory" not in retriever.model_dump()
    assert "memory=" not in repr(retriever)
