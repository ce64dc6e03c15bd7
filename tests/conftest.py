import pytest

from procmem.embeddings import HashingEmbedder


@pytest.fixture
def embedder():
    return HashingEmbedder(dim=256)
