"""A deterministic, dependency-free embedder for tests and offline smoke runs.

It is a feature-hashing bag of words and character trigrams (Weinberger et al., "Feature
Hashing for Large Scale Multitask Learning", ICML 2009). It captures lexical overlap only, never
meaning, so procmem never picks it silently as a user's default.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from procmem.embeddings.base import normalize_rows
from procmem.errors import ConfigurationError

__all__ = ["HashingEmbedder"]

_TOKEN = re.compile(r"[a-z0-9]+")


class HashingEmbedder:
    """Feature-hashing embedder: words and character trigrams into ``dim`` buckets.

    Args:
        dim: Vector dimension (default 256); must be >= 8.

    Example:
        >>> e = HashingEmbedder(dim=64)
        >>> e.embed_documents(["git commit", "git push"]).shape
        (2, 64)
    """

    def __init__(self, dim: int = 256) -> None:
        if not isinstance(dim, int) or dim < 8:
            raise ConfigurationError(f"dim must be an int >= 8, got {dim!r}")
        self.dim = dim
        self.name = f"hashing-{dim}"

    def _features(self, text: str) -> list[str]:
        words = _TOKEN.findall(text.lower())
        feats = [f"w:{w}" for w in words]
        for w in words:
            padded = f"#{w}#"
            feats.extend(f"c:{padded[i : i + 3]}" for i in range(len(padded) - 2))
        return feats

    def _vector(self, text: str) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        for f in self._features(text):
            h = int.from_bytes(hashlib.blake2b(f.encode(), digest_size=8).digest(), "little")
            v[h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0
        return v

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed documents; see :class:`procmem.embeddings.Embedder`."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return normalize_rows(np.stack([self._vector(t) for t in texts]))

    def embed_query(self, text: str) -> np.ndarray:
        """Embed a query; see :class:`procmem.embeddings.Embedder`."""
        return normalize_rows(self._vector(text))
