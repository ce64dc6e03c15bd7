"""A LlamaIndex FunctionAgent, driven offline by a scripted LLM, learns a workflow and recalls it.

The agent runs with real FunctionTools and a ``Memory`` holding a ProceduralMemoryBlock. The
LLM is ``MockFunctionCallingLLM`` with a response generator that plays a script of tool calls
and records every message list it receives, so the tests can look at the context the block put
in front of the model.
"""

import pytest
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.memory import Memory
from llama_index.core.tools import FunctionTool

from llamaindex_procmem import ProceduralMemoryBlock, ProceduralMemoryToolSpec
from procmem import MiningConfig, ProceduralMemory
from procmem.embeddings import HashingEmbedder

pytestmark = pytest.mark.integration


def search_flights(origin: str, destination: str) -> str:
    """Search flights between two airports."""
    return f"Flight UA1 from {origin} to {destination} at 9:00"


def book_flight(flight: str) -> str:
    """Book a flight by its number."""
    return f"Booked {flight}, confirmation ABC123"


def send_confirmation(email: str) -> str:
    """Email the booking confirmation."""
    return f"Confirmation sent to {email}"


TOOLS = [FunctionTool.from_defaults(fn) for fn in (search_flights, book_flight, send_confirmation)]


def booking(origin, destination, email):
    return [
        ("search_flights", {"origin": origin, "destination": destination}),
        ("book_flight", {"flight": "UA1"}),
        ("send_confirmation", {"email": email}),
    ]


class ScriptedLLM:
    """Plays, for each user request, a list of tool calls and then a final answer."""

    def __init__(self, scripts):
        self.scripts = scripts
        self.calls: list[list[ChatMessage]] = []
        self.llm = MockFunctionCallingLLM(response_generator=self.respond)

    def respond(self, messages, **kwargs):
        self.calls.append([m.model_copy(deep=True) for m in messages])
        start = max(i for i, m in enumerate(messages) if m.role == MessageRole.USER)
        request = messages[start].content
        plan = next(calls for key, calls in self.scripts.items() if key in request)
        done = sum(1 for m in messages[start:] if m.role == MessageRole.TOOL)
        if done < len(plan):
            name, kwargs = plan[done]
            call = ToolCallBlock(tool_call_id=f"call-{len(self.calls)}", tool_name=name, tool_kwargs=kwargs)
            return ChatMessage(role="assistant", blocks=[call])
        return ChatMessage(role="assistant", content=f"Done: {request}")


@pytest.fixture
def pm(tmp_path):
    memory = ProceduralMemory(
        path=tmp_path / "m.sqlite3", embedder=HashingEmbedder(), mining=MiningConfig(min_support=1)
    )
    yield memory
    memory.close()


FIRST = "Book a flight from SFO to JFK for alice@example.com"
SECOND = "Book a flight from LAX to BOS for bob@example.com"
SCRIPTS = {
    "SFO to JFK": booking("SFO", "JFK", "alice@example.com"),
    "LAX to BOS": booking("LAX", "BOS", "bob@example.com"),
}


def memory_block_text(messages):
    """The block's text inside the memory's system message (after the agent's own system prompt, if any)."""
    (text,) = [
        m.content for m in messages if m.role == MessageRole.SYSTEM and "<procedural_memory>" in (m.content or "")
    ]
    return text.split("<procedural_memory>", 1)[1].split("</procedural_memory>", 1)[0]


async def test_second_run_sees_the_workflow_learned_in_the_first(pm):
    block = ProceduralMemoryBlock(memory=pm)
    # A small short-term budget: the first run's turn is flushed into the block (and learned)
    # as soon as the second request arrives, before the memory is read for the second run.
    memory = Memory.from_defaults(
        session_id="trip-planner", token_limit=4000, chat_history_token_ratio=0.02, memory_blocks=[block]
    )
    script = ScriptedLLM(SCRIPTS)
    agent = FunctionAgent(tools=TOOLS, llm=script.llm, system_prompt="You book flights.")

    first = await agent.run(FIRST, memory=memory)
    assert str(first) == f"Done: {FIRST}"
    assert [t.tool_name for t in first.tool_calls] == ["search_flights", "book_flight", "send_confirmation"]
    assert not any("<procedural_memory>" in (m.content or "") for m in script.calls[0])  # nothing learned yet
    assert pm.list(kind="workflow") == []  # Memory keeps the latest turn until the next request

    n = len(script.calls)
    second = await agent.run(SECOND, memory=memory)
    assert str(second) == f"Done: {SECOND}"

    (session,) = pm.store.iter_sessions(namespace=pm.namespace)
    assert session.task == FIRST
    assert session.outcome == "success"
    assert session.actions[0] == "search_flights(origin='SFO', destination='JFK')"
    (workflow,) = pm.list(kind="workflow", tags=["learned"])

    context = memory_block_text(script.calls[n])  # what the LLM saw on its first call of run 2
    assert f"id={workflow.id}" in context
    assert workflow.render() in context
    assert "1. search_flights(origin='SFO', destination='JFK')" in context
    assert "3. send_confirmation(email='alice@example.com')" in context
    predicted = context.split("Likely next tool calls:\n", 1)[1].splitlines()
    assert predicted[0].startswith("- search_flights(")
    assert script.calls[n][0].content == "You book flights."


async def test_learning_at_the_end_of_a_run_with_a_default_memory(pm):
    block = ProceduralMemoryBlock(memory=pm)
    memory = Memory.from_defaults(session_id="s", memory_blocks=[block])  # 30k tokens: nothing is flushed
    script = ScriptedLLM(SCRIPTS)
    agent = FunctionAgent(tools=TOOLS, llm=script.llm)

    await agent.run(FIRST, memory=memory)
    learned = await block.alearn(await memory.aget_all())
    assert len(learned) == 1
    assert len(pm.list(kind="workflow", tags=["learned"])) == 1

    n = len(script.calls)
    await agent.run(SECOND, memory=memory)
    context = memory_block_text(script.calls[n])
    assert "1. search_flights(origin='SFO', destination='JFK')" in context

    await block.alearn(await memory.aget_all())  # both turns again: the first is not stored twice
    assert pm.store.count_sessions(namespace=pm.namespace) == 2


async def test_a_turn_with_a_failing_tool_is_learned_as_a_failure(pm):
    block = ProceduralMemoryBlock(memory=pm)
    memory = Memory.from_defaults(session_id="s", memory_blocks=[block])
    plan = booking("SFO", "JFK", "alice@example.com")
    plan[1] = ("book_hotel", {"city": "New York"})  # not a tool: the agent answers "Tool book_hotel not found"
    agent = FunctionAgent(tools=TOOLS, llm=ScriptedLLM({"SFO to JFK": plan}).llm)

    result = await agent.run(FIRST, memory=memory)
    assert any(t.tool_output.is_error for t in result.tool_calls)
    (record,) = await block.alearn(await memory.aget_all())
    assert record.outcome == "failure"
    assert record.actions[1] == "book_hotel(city='New York')"
    assert pm.list(kind="workflow", tags=["learned"]) == []


async def test_agent_uses_the_tool_spec(pm):
    tools = ProceduralMemoryToolSpec(memory=pm).to_tool_list()
    plan = [
        ("save_procedure", {"name": "Book a flight", "steps": ["search flights", "book", "send confirmation"]}),
        ("search_procedures", {"query": "book a flight"}),
        ("record_outcome", {"procedure_id": "book-a-flight", "success": True, "query": "book a flight to Boston"}),
    ]
    agent = FunctionAgent(tools=tools, llm=ScriptedLLM({"remember": plan}).llm)
    result = await agent.run("remember how to book a flight")
    outputs = [t.tool_output for t in result.tool_calls]
    assert not any(o.is_error for o in outputs)
    assert outputs[0].content == "Saved procedure 'Book a flight' (id=book-a-flight, version 1)."
    assert outputs[1].content.startswith("[1] id=book-a-flight")
    assert outputs[2].content == "Recorded success of book-a-flight: 1/1 successful so far."
    assert pm.get("book-a-flight", touch=False).stats.successes == 1
