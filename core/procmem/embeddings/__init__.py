"""Embedding backends: the protocol, the default sentence-transformers model, MLX, hashing."""

from procmem.embeddings.base import Embedder, normalize_rows
from procmem.embeddings.hashing import HashingEmbedder
from procmem.embeddings.sentence_transformers import DEFAULT_MODEL, SentenceTransformerEmbedder

__all__ = [
    "DEFAULT_MODEL",
    "Embedder",
    "HashingEmbedder",
    "SentenceTransformerEmbedder",
    "normalize_rows",
]
