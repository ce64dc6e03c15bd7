"""``ProceduralMemoryBuffer``: a langchain_classic memory that loads procedures and learns runs."""

from __future__ import annotations

import pytest
from langchain_core.agents import AgentAction
from langchain_core.documents import Document

from langchain_procmem import ProceduralMemoryBuffer


def test_loads_relevant_procedures_under_the_key(seeded):
    buffer = ProceduralMemoryBuffer(memory=seeded, k=1)
    assert buffer.memory_variables == ["procedures"]
    loaded = buffer.load_memory_variables({"input": "roll back a bad deploy"})
    assert loaded == {"procedures": seeded.get("rollback").render()}
    assert ProceduralMemoryBuffer(memory=seeded, memory_key="skills").memory_variables == ["skills"]


def test_input_key_and_docs(seeded):
    buffer = ProceduralMemoryBuffer(
        memory=seeded, k=2, input_key="question", return_docs=True, procedure_tags=["support"]
    )
    docs = buffer.load_memory_variables({"question": "customer", "history": "ignored"})["procedures"]
    assert all(isinstance(d, Document) for d in docs) and {d.id for d in docs} == {"refund", "onboard"}
    with pytest.raises(ValueError, match="input_key"):
        ProceduralMemoryBuffer(memory=seeded).load_memory_variables({"a": "x", "b": "y"})
    assert ProceduralMemoryBuffer(memory=seeded).load_memory_variables({"input": "  "}) == {"procedures": ""}


def test_save_context_learns_agent_executor_steps(memory):
    buffer = ProceduralMemoryBuffer(memory=memory)
    steps = [
        (AgentAction("look_up_order", {"order_id": 42}, ""), "2 items"),
        (AgentAction("issue_refund", "42", ""), "ok"),
        (AgentAction("close_ticket", "", ""), "closed"),
    ]
    buffer.save_context({"input": "Refund order 42"}, {"output": "Refunded.", "intermediate_steps": steps})
    (session,) = memory.store.iter_sessions()
    assert session.actions == ["look_up_order(order_id=42)", "issue_refund(input='42')", "close_ticket()"]
    assert session.task == "Refund order 42" and session.outcome == "success"


def test_save_context_with_actions_judge_and_nothing_to_learn(memory):
    buffer = ProceduralMemoryBuffer(memory=memory, judge=lambda inputs, outputs: "sorry" not in outputs["output"])
    buffer.save_context({"input": "deploy"}, {"output": "sorry, failed", "actions": ["git pull", "make deploy"]})
    buffer.save_context({"input": "chat"}, {"output": "hello"})  # no actions: nothing learned
    (session,) = memory.store.iter_sessions()
    assert session.outcome == "failure" and session.actions == ["git pull", "make deploy"]


def test_clear_empties_only_its_namespace(seeded):
    seeded.store_procedure("x", ["a"])
    other = ProceduralMemoryBuffer(memory=seeded, namespace="elsewhere")
    other.clear()
    assert len(seeded.list()) == 5
    ProceduralMemoryBuffer(memory=seeded).clear()
    assert seeded.list() == []


async def test_async_twins(seeded):
    buffer = ProceduralMemoryBuffer(memory=seeded, k=1)
    assert (await buffer.aload_memory_variables({"input": "deploy the web app"}))["procedures"].startswith("deploy")
    await buffer.asave_context({"input": "deploy"}, {"output": "ok", "actions": ["git pull", "make deploy"]})
    assert len(list(seeded.store.iter_sessions())) == 1
    await buffer.aclear()
    assert seeded.list() == []


def test_in_a_legacy_llm_chain(seeded):
    from langchain_classic.chains import LLMChain
    from langchain_core.language_models.fake import FakeListLLM
    from langchain_core.prompts import PromptTemplate

    prompt = PromptTemplate.from_template("Known procedures:\n{procedures}\n\nRequest: {input}\nAnswer:")
    llm = FakeListLLM(responses=["git pull, make build, make deploy"])
    chain = LLMChain(llm=llm, prompt=prompt, memory=ProceduralMemoryBuffer(memory=seeded, k=1))
    result = chain.invoke({"input": "deploy the web app to production"})
    assert result["text"] == "git pull, make build, make deploy"
    assert result["procedures"] == seeded.get("deploy").render()
