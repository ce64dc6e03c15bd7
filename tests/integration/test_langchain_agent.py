"""End to end: ``create_agent`` + ``ProceduralMemoryMiddleware`` with a scripted chat model.

The first run calls three real tools; the middleware records them and learns the run as a
session, and workflow mining (``min_support=1``) promotes it into a stored workflow. The second
run on a similar request must show that workflow in the system message the model receives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from fakes import ScriptedChatModel
from langchain.agents import create_agent
from langchain_core.messages import BaseMessage, SystemMessage
from langchain_core.tools import tool

from langchain_procmem import ProceduralMemoryMiddleware
from procmem import MiningConfig, ProceduralMemory
from procmem.embeddings import HashingEmbedder

pytestmark = pytest.mark.integration


def _system_text(messages: Sequence[BaseMessage]) -> str:
    return "\n".join(str(m.text) for m in messages if isinstance(m, SystemMessage))


@pytest.fixture
def booked() -> list[str]:
    return []


@pytest.fixture
def travel_tools(booked):
    @tool
    def search_flights(destination: str) -> str:
        """Search flights to a destination."""
        booked.append(f"search {destination}")
        return f"Flight AF{len(destination)} to {destination} at 09:00"

    @tool
    def book_flight(flight: str) -> str:
        """Book a flight by its number."""
        booked.append(f"book {flight}")
        return f"Booked {flight}"

    @tool
    def send_confirmation(email: str) -> str:
        """Email the booking confirmation."""
        booked.append(f"email {email}")
        return f"Sent to {email}"

    return [search_flights, book_flight, send_confirmation]


def _script(city: str) -> list[list[tuple[str, dict[str, Any]]]]:
    return [
        [("search_flights", {"destination": city})],
        [("book_flight", {"flight": f"AF{len(city)}"})],
        [("send_confirmation", {"email": "ada@example.com"})],
    ]


@pytest.fixture
def memory(tmp_path):
    mem = ProceduralMemory(path=tmp_path / "m.sqlite3", embedder=HashingEmbedder(), mining=MiningConfig(min_support=1))
    yield mem
    mem.close()


def _assert_learned(memory: ProceduralMemory, first_model: ScriptedChatModel, second_model: ScriptedChatModel):
    sessions = list(memory.store.iter_sessions())
    assert len(sessions) == 2
    first = sessions[0]
    assert first.outcome == "success"
    assert first.task == "Book me a flight to Paris and email the confirmation"
    assert first.actions == [
        "search_flights(destination='Paris')",
        "book_flight(flight='AF5')",
        "send_confirmation(email='ada@example.com')",
    ]
    workflows = memory.list(kind="workflow", tags=["learned"])
    assert workflows, "the first run should have been promoted to a learned workflow"
    workflow = workflows[0]
    # The first run's first model call had nothing to show.
    assert "## Procedural memory" not in _system_text(first_model.seen[0])
    # The second run's first model call is shown the workflow learned from the first run.
    shown = _system_text(second_model.seen[0])
    assert "## Procedural memory" in shown
    assert f"[id: {workflow.id}]" in shown
    assert workflow.name in shown
    for i, step in enumerate(workflow.steps, 1):
        assert f"{i}. {step.action}" in shown
    assert [s.action.split("(")[0] for s in workflow.steps] == ["search_flights", "book_flight", "send_confirmation"]
    # Retrieval learned that this kind of request is served by the workflow.
    assert memory.store.count_usages() >= 1


def test_second_run_is_shown_the_workflow_learned_from_the_first(memory, travel_tools, booked):
    middleware = ProceduralMemoryMiddleware(memory=memory)
    first_model = ScriptedChatModel(script=_script("Paris"))
    agent = create_agent(
        first_model, tools=travel_tools, system_prompt="You are a travel agent.", middleware=[middleware]
    )
    result = agent.invoke({"messages": [("user", "Book me a flight to Paris and email the confirmation")]})

    assert booked == ["search Paris", "book AF5", "email ada@example.com"]
    trajectory = result["procmem_trajectory"]
    assert [r["tool"] for r in trajectory] == ["search_flights", "book_flight", "send_confirmation"]
    assert all(r["success"] and r["duration"] >= 0 for r in trajectory)
    assert trajectory[0]["args"] == {"destination": "Paris"}
    assert "You are a travel agent." in _system_text(first_model.seen[0])

    second_model = ScriptedChatModel(script=_script("Rome"))
    agent2 = create_agent(
        second_model, tools=travel_tools, system_prompt="You are a travel agent.", middleware=[middleware]
    )
    agent2.invoke({"messages": [("user", "Book me a flight to Rome and email the confirmation")]})

    _assert_learned(memory, first_model, second_model)
    assert _system_text(second_model.seen[0]).startswith("You are a travel agent.")
    # Mid-run, the predictor knows what followed search_flights last time.
    assert "Likely next tool calls" in _system_text(second_model.seen[1])
    assert "book_flight" in _system_text(second_model.seen[1]).split("Likely next tool calls", 1)[1]


async def test_second_run_is_shown_the_workflow_learned_from_the_first_async(memory, travel_tools, booked):
    middleware = ProceduralMemoryMiddleware(memory=memory)
    first_model = ScriptedChatModel(script=_script("Paris"))
    agent = create_agent(first_model, tools=travel_tools, middleware=[middleware])
    result = await agent.ainvoke({"messages": [("user", "Book me a flight to Paris and email the confirmation")]})
    assert [r["tool"] for r in result["procmem_trajectory"]] == ["search_flights", "book_flight", "send_confirmation"]

    second_model = ScriptedChatModel(script=_script("Rome"))
    agent2 = create_agent(second_model, tools=travel_tools, middleware=[middleware])
    await agent2.ainvoke({"messages": [("user", "Book me a flight to Rome and email the confirmation")]})

    _assert_learned(memory, first_model, second_model)
