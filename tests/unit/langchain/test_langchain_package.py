"""The public API of ``langchain_procmem``: pinned ``__all__``, docstring examples, friendly ImportError."""

from __future__ import annotations

import doctest
import importlib
import subprocess
import sys
import textwrap

import pytest

import langchain_procmem

EXPECTED_ALL = [
    "PredictNextActionTool",
    "ProceduralMemoryBuffer",
    "ProceduralMemoryMiddleware",
    "ProceduralMemoryRetriever",
    "ProceduralMemoryState",
    "ProceduralMemoryToolkit",
    "RecordOutcomeTool",
    "SaveProcedureTool",
    "SearchProceduresTool",
    "ToolCallRecord",
    "create_procmem_tools",
]


def test_all_is_pinned_and_sorted():
    assert langchain_procmem.__all__ == EXPECTED_ALL
    assert sorted(langchain_procmem.__all__) == langchain_procmem.__all__
    for name in EXPECTED_ALL:
        assert getattr(langchain_procmem, name) is not None


@pytest.mark.parametrize("module", ["memory", "middleware", "retrievers", "tools"])
def test_module_all_is_sorted_and_exists(module):
    mod = importlib.import_module(f"langchain_procmem.{module}")
    assert sorted(mod.__all__) == mod.__all__
    for name in mod.__all__:
        assert hasattr(mod, name)


def test_py_typed_is_shipped():
    from pathlib import Path

    assert (Path(langchain_procmem.__file__).parent / "py.typed").exists()


PUBLIC_CLASSES = [name for name in EXPECTED_ALL if name[0].isupper() and name not in {"ToolCallRecord"}]
PUBLIC_CLASSES.remove("ProceduralMemoryState")


@pytest.mark.parametrize("name", PUBLIC_CLASSES)
def test_public_class_docstring_has_setup_and_example_that_run(name):
    obj = getattr(langchain_procmem, name)
    doc = obj.__doc__ or ""
    assert "Setup:" in doc and "Example:" in doc, f"{name} lacks a Setup: or Example: section"
    tests = [t for t in doctest.DocTestFinder(recurse=False).find(obj, name) if t.examples]
    assert tests, f"{name}'s Example: has no runnable lines"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{name}'s Example: failed ({result.failed} of {result.attempted})"


def test_missing_langchain_names_the_extra():
    # A fresh interpreter where importing langchain_core fails, as without the extra.
    code = textwrap.dedent(
        """
        import sys
        sys.modules["langchain_core"] = None
        try:
            import langchain_procmem
        except ImportError as exc:
            print(exc)
        else:
            print("imported")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install 'procmem[langchain]'" in out


def test_core_does_not_import_langchain():
    code = "import sys, procmem; print(sorted(m for m in sys.modules if m.split('.')[0].startswith('langchain')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
