"""A LangChain agent that learns a workflow from its own runs and is shown it next time.

    python cookbook/langchain_agent.py                        # offline: scripted model, hashing embedder
    python cookbook/langchain_agent.py --model openai:gpt-4o-mini --real-embeddings

The agent (``langchain.agents.create_agent``) books trips with three tools. The
``ProceduralMemoryMiddleware`` records every tool call, learns each run as a session when the
agent finishes, and workflow mining promotes the sequence once it has succeeded in
``--min-support`` runs. From then on, each model call's system message carries the learned
workflow and the predicted next tool calls. Offline, a scripted chat model plays the agent;
``--model provider:name`` uses a real one through ``init_chat_model``.
"""

from __future__ import annotations

import argparse
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool
from procmem import MiningConfig, ProceduralMemory

from langchain_procmem import ProceduralMemoryMiddleware

REQUESTS = [
    ("Paris", "Book me a flight to Paris and email the confirmation to ada@example.com"),
    ("Rome", "Book me a flight to Rome and email the confirmation to ada@example.com"),
    ("Tokyo", "Book me a flight to Tokyo and email the confirmation to ada@example.com"),
]


@tool
def search_flights(destination: str) -> str:
    """Search flights to a destination; returns the best flight number."""
    return f"Best flight: AF{100 + len(destination)} to {destination}, 09:00"


@tool
def book_flight(flight: str) -> str:
    """Book a flight by its number; returns the booking reference."""
    return f"Booked {flight}, reference {uuid.uuid4().hex[:6].upper()}"


@tool
def send_confirmation(email: str) -> str:
    """Email the booking confirmation."""
    return f"Confirmation sent to {email}"


TOOLS = [search_flights, book_flight, send_confirmation]


class ScriptedChatModel(BaseChatModel):
    """An offline stand-in for a chat model: plays a fixed sequence of tool calls per run."""

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any):
        last_user = max(i for i, m in enumerate(messages) if isinstance(m, HumanMessage))
        request = str(messages[last_user].text)
        city = next((c for c, r in REQUESTS if r == request), "Paris")
        step = sum(isinstance(m, AIMessage) for m in messages[last_user:])
        script = [
            ("search_flights", {"destination": city}),
            ("book_flight", {"flight": f"AF{100 + len(city)}"}),
            ("send_confirmation", {"email": "ada@example.com"}),
        ]
        if step < len(script):
            name, args = script[step]
            call = {"name": name, "args": args, "id": f"call_{uuid.uuid4().hex[:8]}", "type": "tool_call"}
            message = AIMessage(content="", tool_calls=[call])
        else:
            message = AIMessage(content=f"Your flight to {city} is booked and the confirmation is sent.")
        return ChatResult(generations=[ChatGeneration(message=message)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="provider:name for init_chat_model (default: offline scripted model)")
    parser.add_argument("--real-embeddings", action="store_true", help="use all-MiniLM-L6-v2 (procmem[embeddings])")
    parser.add_argument("--min-support", type=int, default=2, help="successful runs before a workflow is learned")
    args = parser.parse_args(argv)

    if args.model:
        from langchain.chat_models import init_chat_model

        model: BaseChatModel = init_chat_model(args.model)
    else:
        model = ScriptedChatModel()
    if args.real_embeddings:
        embedder = None  # the default: sentence-transformers all-MiniLM-L6-v2
    else:
        from procmem.embeddings import HashingEmbedder

        embedder = HashingEmbedder()

    with tempfile.TemporaryDirectory() as tmp:
        memory = ProceduralMemory(
            path=Path(tmp) / "agent.sqlite3", embedder=embedder, mining=MiningConfig(min_support=args.min_support)
        )
        middleware = ProceduralMemoryMiddleware(memory=memory)
        agent = create_agent(
            model, tools=TOOLS, system_prompt="You are a travel assistant. Use the tools.", middleware=[middleware]
        )
        for i, (_, request) in enumerate(REQUESTS, 1):
            print(f"=== Run {i}: {request}")
            shown = middleware.build_prompt(request)
            print("System message gains:" if shown else "System message gains: (nothing yet)")
            for line in shown.splitlines():
                print(f"    {line}")
            result = agent.invoke({"messages": [HumanMessage(request)]})
            for record in result["procmem_trajectory"]:
                status = "ok" if record["success"] else f"FAILED: {record['error']}"
                print(f"  tool {middleware.action(record)}  [{record['duration'] * 1000:.1f} ms, {status}]")
            print(f"  answer: {result['messages'][-1].text}")
        workflows = memory.list(kind="workflow", tags=["learned"])
        stats = memory.stats()
        print(f"=== Memory: {stats['sessions']} sessions, {len(workflows)} learned workflow(s)")
        for wf in workflows:
            print(f"learned workflow {wf.id}: {wf.name}")
        memory.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
