"""Fixtures of the LangChain adapter tests: a SQLite memory with the hashing embedder, a scripted chat model."""

from __future__ import annotations

from typing import Any

import pytest
from fakes import ScriptedChatModel

from procmem import MiningConfig, ProceduralMemory
from procmem.embeddings import HashingEmbedder

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
