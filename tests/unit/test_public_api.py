"""The public API is pinned: a change here is a deliberate, reviewed change."""

import doctest

import procmem
import procmem.embeddings.hashing
import procmem.execution
import procmem.learning.mining
import procmem.memory


def test_procmem_all_is_sorted_and_pinned():
    assert procmem.__all__ == sorted(procmem.__all__, key=str)
    assert set(procmem.__all__) >= {
        "ProceduralMemory", "Procedure", "Step", "ProcedureVersion", "ExecutionStats", "Outcome",
        "SearchResult", "Prediction", "SQLiteStore", "InMemoryStore", "ProcedureStore", "Persona",
        "Toolbox", "Workflow", "ProcMemError", "ProcedureNotFoundError",
    }
    for name in procmem.__all__:
        assert hasattr(procmem, name), name


def test_docstring_examples_run():
    for module in (procmem.memory, procmem.execution, procmem.embeddings.hashing, procmem.learning.mining):
        failures, tried = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert failures == 0, module.__name__
        assert tried > 0, module.__name__


def test_core_never_imports_a_framework_or_pickle():
    import pathlib
    import re

    src = pathlib.Path(procmem.__file__).parent
    pattern = re.compile(r"^\s*(import|from)\s+(langchain\w*|llama_index\w*|pickle|dill|cloudpickle)\b", re.M)
    offenders = [str(p) for p in src.rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []
