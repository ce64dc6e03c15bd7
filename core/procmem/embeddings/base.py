"""The embedder protocol every embedding backend satisfies."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["Embedder", "normalize_rows"]


@runtime_checkable
class Embedder(Protocol):
    """Turns text into unit-length float32 vectors.

    Implementations return L2-normalised vectors so a dot product is the cosine similarity.

    Attributes:
        dim: Dimension of the vectors.
        name: Identifier of the model (stored with the vectors; a store refuses vectors from a
            different model).
    """

    dim: int
    name: str

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed documents.

        Args:
            texts: n texts.

        Returns:
            ``(n, dim)`` float32 array of unit vectors.

        Raises:
            EmbeddingError: The model failed.
        """
        ...

    def embed_query(self, text: str) -> np.ndarray:
        """Embed one query.

        Args:
            text: The query text.

        Returns:
            ``(dim,)`` float32 unit vector.

        Raises:
            EmbeddingError: The model failed.
        """
        ...


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Return ``x`` as float32 with each row scaled to unit L2 norm (zero rows stay zero).

    Args:
        x: ``(n, dim)`` or ``(dim,)`` array.

    Returns:
        Array of the same shape, float32.
    """
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    norms[norms == 0] = 1.0
    return (x / norms).astype(np.float32, copy=False)
