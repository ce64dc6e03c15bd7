"""The adapter's public API is pinned, its docstring examples run, and a missing framework names the extra."""

import doctest
import importlib
import pathlib
import sys

import pytest

import llamaindex_procmem
import llamaindex_procmem.memory_blocks
import llamaindex_procmem.retrievers
import llamaindex_procmem.tools


def test_all_is_sorted_and_pinned():
    assert llamaindex_procmem.__all__ == sorted(llamaindex_procmem.__all__, key=str)
    assert llamaindex_procmem.__all__ == [
        "ProceduralMemoryBlock",
        "ProceduralMemoryRetriever",
        "ProceduralMemoryToolSpec",
        "ToolCallRecord",
        "Trajectory",
        "is_error_message",
        "trajectories_from_messages",
    ]
    for name in llamaindex_procmem.__all__:
        assert hasattr(llamaindex_procmem, name), name


def test_py_typed_is_shipped():
    assert (pathlib.Path(llamaindex_procmem.__file__).parent / "py.typed").exists()


@pytest.mark.parametrize(
    "module",
    [llamaindex_procmem.memory_blocks, llamaindex_procmem.retrievers, llamaindex_procmem.tools],
    ids=lambda m: m.__name__,
)
def test_docstring_examples_run(module):
    failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert tried > 0
    assert failures == 0


@pytest.mark.parametrize("cls_name", ["ProceduralMemoryBlock", "ProceduralMemoryRetriever", "ProceduralMemoryToolSpec"])
def test_adapter_docstrings_have_setup_and_example(cls_name):
    doc = getattr(llamaindex_procmem, cls_name).__doc__
    assert "Setup:" in doc
    assert "Example:" in doc
    assert "pip install 'procmem[llamaindex]'" in doc


def test_missing_llama_index_names_the_extra(monkeypatch):
    for name in list(sys.modules):
        if name == "llamaindex_procmem" or name.startswith("llamaindex_procmem."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "llama_index", None)
    monkeypatch.setitem(sys.modules, "llama_index.core", None)
    with pytest.raises(ImportError, match=r"pip install 'procmem\[llamaindex\]'"):
        importlib.import_module("llamaindex_procmem")
