"""Fixtures of the LlamaIndex adapter tests."""

import pytest

from procmem import MiningConfig, ProceduralMemory
from procmem.embeddings import HashingEmbedder


@pytest.fixture
def pm(tmp_path):
    memory = ProceduralMemory(
        path=tmp_path / "m.sqlite3", embedder=HashingEmbedder(), mining=MiningConfig(min_support=1)
    )
    yield memory
    memory.close()
