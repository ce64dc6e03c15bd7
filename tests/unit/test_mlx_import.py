"""Without mlx, importing the MLX embedder fails with an ImportError that names the extra."""

from __future__ import annotations

import importlib
import sys

import pytest


def test_import_without_mlx_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "procmem.embeddings.mlx", raising=False)
    monkeypatch.setitem(sys.modules, "mlx", None)  # None in sys.modules makes the import fail
    monkeypatch.setitem(sys.modules, "mlx.core", None)
    with pytest.raises(ImportError, match=r"pip install 'procmem\[mlx\]'.*mlx\[cpu\]"):
        importlib.import_module("procmem.embeddings.mlx")
