"""A LlamaIndex FunctionAgent that learns a workflow from its own tool calls and recalls it.

Runs offline by default: a scripted function-calling LLM, procmem's HashingEmbedder and a
temporary SQLite file. Three booking requests go through one ``Memory`` that holds a
``ProceduralMemoryBlock``:

1. the first two runs book flights with three tool calls each; every new request pushes the
   previous turn out of the small short-term memory, and the block learns it as a session;
2. after two successful sessions the sequence is mined into a ``workflow`` procedure;
3. before the third run the block shows the model that workflow and the predicted first tool
   call, which a real model would follow.

Then a ``RetrieverQueryEngine`` over ``ProceduralMemoryRetriever`` answers a question from
the stored procedures.

    python cookbook/llamaindex_agent.py                 # offline, scripted LLM
    python cookbook/llamaindex_agent.py --openai gpt-4o-mini   # a real model (needs
        llama-index-llms-openai and OPENAI_API_KEY)
    python cookbook/llamaindex_agent.py --db procmem.sqlite3   # keep the memory file
"""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
from pathlib import Path

from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.llms import MockLLM
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.memory import Memory
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.tools import FunctionTool

from llamaindex_procmem import ProceduralMemoryBlock, ProceduralMemoryRetriever
from procmem import MiningConfig, ProceduralMemory
from procmem.embeddings import HashingEmbedder

REQUESTS = [
    "Book a flight from SFO to JFK for alice@example.com",
    "Book a flight from SEA to ORD for carol@example.com",
    "Book a flight from LAX to BOS for bob@example.com",
]


# ---------------------------------------------------------------- the agent's tools
def search_flights(origin: str, destination: str) -> str:
    """Search flights between two airports (IATA codes)."""
    return f"Flight UA1 from {origin} to {destination}, departing 09:00"


def book_flight(flight: str) -> str:
    """Book a flight by its flight number."""
    return f"Booked {flight}; confirmation ABC123"


def send_confirmation(email: str) -> str:
    """Email the booking confirmation to the traveller."""
    return f"Confirmation sent to {email}"


TOOLS = [FunctionTool.from_defaults(fn) for fn in (search_flights, book_flight, send_confirmation)]


# ---------------------------------------------------------------- an offline, scripted LLM
def scripted_llm(seen: list[list[ChatMessage]]) -> MockFunctionCallingLLM:
    """A function-calling LLM that books the requested flight with three tool calls."""

    def respond(messages, **kwargs):
        seen.append(list(messages))
        start = max(i for i, m in enumerate(messages) if m.role == MessageRole.USER)
        request = messages[start].content or ""
        origin, destination = re.search(r"from (\w+) to (\w+)", request).groups()
        email = re.search(r"\S+@\S+", request).group(0)
        plan = [
            ("search_flights", {"origin": origin, "destination": destination}),
            ("book_flight", {"flight": "UA1"}),
            ("send_confirmation", {"email": email}),
        ]
        done = sum(1 for m in messages[start:] if m.role == MessageRole.TOOL)
        if done < len(plan):
            name, args = plan[done]
            call = ToolCallBlock(tool_call_id=f"call-{len(seen)}", tool_name=name, tool_kwargs=args)
            return ChatMessage(role="assistant", blocks=[call])
        return ChatMessage(role="assistant", content=f"Booked {origin}->{destination} and emailed {email}.")

    return MockFunctionCallingLLM(response_generator=respond)


def block_text(messages: list[ChatMessage]) -> str:
    """The procedural memory block's text inside the system message, if any."""
    for message in messages:
        content = message.content or ""
        if message.role == MessageRole.SYSTEM and "<procedural_memory>" in content:
            return content.split("<procedural_memory>", 1)[1].split("</procedural_memory>", 1)[0].strip()
    return "(empty)"


async def main(db: Path, openai_model: str | None) -> None:
    """Run the three requests, then query the stored procedures."""
    pm = ProceduralMemory(path=db, embedder=HashingEmbedder(), mining=MiningConfig(min_support=2))
    block = ProceduralMemoryBlock(memory=pm, k=2)
    # A small short-term budget, so each finished turn is flushed into the block (and learned)
    # when the next request arrives.
    memory = Memory.from_defaults(
        session_id="travel-desk", token_limit=4000, chat_history_token_ratio=0.02, memory_blocks=[block]
    )
    seen: list[list[ChatMessage]] = []
    if openai_model:
        from llama_index.llms.openai import OpenAI  # needs llama-index-llms-openai

        llm = OpenAI(model=openai_model)
    else:
        llm = scripted_llm(seen)
    agent = FunctionAgent(tools=TOOLS, llm=llm, system_prompt="You are a travel desk. Use the tools.")

    for i, request in enumerate(REQUESTS, 1):
        n = len(seen)
        result = await agent.run(request, memory=memory)
        print(f"=== run {i}: {request}")
        if seen:
            print("procedural memory shown to the model:")
            print("  " + block_text(seen[n]).replace("\n", "\n  "))
        print("tool calls:", ", ".join(t.tool_name for t in result.tool_calls))
        print("answer:", result)
        print()

    workflows = pm.list(kind="workflow", tags=["learned"])
    print(f"learned workflows: {len(workflows)}")
    for wf in workflows:
        print("  " + wf.render().replace("\n", "\n  "))
    print()

    engine = RetrieverQueryEngine.from_args(ProceduralMemoryRetriever(memory=pm, k=1), llm=MockLLM())
    response = await engine.aquery("How do I book a flight?")
    top = response.source_nodes[0]
    print(f"query engine source: {top.node.metadata['id']} (score {top.score:.3f})")
    pm.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="SQLite file of the procedural memory (default: a temp file)")
    parser.add_argument("--openai", metavar="MODEL", help="use an OpenAI model instead of the scripted LLM")
    args = parser.parse_args()
    if args.db:
        asyncio.run(main(args.db, args.openai))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(main(Path(tmp) / "procmem.sqlite3", args.openai))
