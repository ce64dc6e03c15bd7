"""LangChain adapters for procmem: middleware, retriever, tools and a legacy chain memory.

Thin adapters over :class:`procmem.ProceduralMemory`:

* :class:`ProceduralMemoryMiddleware` for ``langchain.agents.create_agent``: shows relevant
  procedures and predicted next tool calls to the model, records each tool call, and learns the
  run's trajectory as a session when the agent finishes;
* :class:`ProceduralMemoryRetriever`: a ``BaseRetriever`` returning procedures as documents;
* :func:`create_procmem_tools` / :class:`ProceduralMemoryToolkit`: ``search_procedures``,
  ``save_procedure``, ``record_outcome``, ``predict_next_action``;
* :class:`ProceduralMemoryBuffer`: a ``langchain_classic`` ``BaseMemory`` for legacy chains.

Needs the ``langchain`` extra: ``pip install 'procmem[langchain]'``.
"""

from __future__ import annotations

try:
    import langchain.agents  # noqa: F401
    import langchain_classic  # noqa: F401
    import langchain_core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by the import test with a patched finder
    raise ImportError(
        f"langchain_procmem needs LangChain ({exc.name or exc} is missing): pip install 'procmem[langchain]'"
    ) from exc

from langchain_procmem.memory import ProceduralMemoryBuffer
from langchain_procmem.middleware import ProceduralMemoryMiddleware, ProceduralMemoryState, ToolCallRecord
from langchain_procmem.retrievers import ProceduralMemoryRetriever
from langchain_procmem.tools import (
    PredictNextActionTool,
    ProceduralMemoryToolkit,
    RecordOutcomeTool,
    SaveProcedureTool,
    SearchProceduresTool,
    create_procmem_tools,
)

__all__ = [
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
