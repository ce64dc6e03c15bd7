"""Fixtures of the LangChain adapter tests: a SQLite memory with the hashing embedder, a scripted chat model."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from procmem import MiningConfig, ProceduralMemory
from procmem.embeddings import HashingEmbedder
from pydantic import Field

PROCEDURES = [
    ("deploy", ["git pull", "make build", "make deploy"], "Deploy the web app to production", ["ops"]),
    ("rollback", ["git revert HEAD", "make deploy"], "Roll back a bad deploy of the web app", ["ops"]),
    ("refund", ["look_up_order", "issue_refund", "email_customer"], "Refund a customer's order", ["support"]),
    ("onboard", ["create_account", "send_welcome_email"], "Onboard a new customer", ["support"]),
]


def make_memory(path, **kwargs: Any) -> ProceduralMemory:
    kwargs.setdefault("mining", MiningConfig(enabled=False))
    return ProceduralMemory(path=path, embedder=HashingEmbedder(), **kwargs)


def seed(memory: ProceduralMemory) -> ProceduralMemory:
    for pid, steps, description, tags in PROCEDURES:
        memory.store_procedure(pid, steps, description=description, tags=tags)
    return memory


@pytest.fixture
def memory(tmp_path):
    mem = make_memory(tmp_path / "m.sqlite3")
    yield mem
    mem.close()


@pytest.fixture
def seeded(memory):
    return seed(memory)


class ScriptedChatModel(BaseChatModel):
    """Emits ``script[i]`` as tool calls at step i of a run (i = AI messages since the last user message).

    Every list of messages received is kept in ``seen``.
    """

    script: list[list[tuple[str, dict[str, Any]]]] = Field(default_factory=list)
    final: str = "Done."
    seen: list[list[BaseMessage]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any):
        self.seen.append(list(messages))
        last_user = max(i for i, m in enumerate(messages) if isinstance(m, HumanMessage))
        step = sum(isinstance(m, AIMessage) for m in messages[last_user:])
        if step < len(self.script):
            calls = [
                {"name": name, "args": args, "id": f"call_{uuid.uuid4().hex[:8]}", "type": "tool_call"}
                for name, args in self.script[step]
            ]
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content="", tool_calls=calls))])
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=self.final))])


@pytest.fixture
def scripted():
    """The scripted chat model class (test modules cannot import from conftest)."""
    return ScriptedChatModel


@pytest.fixture
def memory_factory(tmp_path):
    """Make extra memories: ``memory_factory(name, **options)``."""
    made: list[ProceduralMemory] = []

    def factory(name: str = "extra", **kwargs: Any) -> ProceduralMemory:
        made.append(make_memory(tmp_path / f"{name}.sqlite3", **kwargs))
        return made[-1]

    yield factory
    for mem in made:
        mem.close()
