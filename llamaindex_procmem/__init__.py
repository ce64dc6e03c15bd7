"""LlamaIndex adapters for procmem: a memory block, a retriever and a tool spec.

* :class:`ProceduralMemoryBlock`: a ``BaseMemoryBlock`` for ``Memory.from_defaults(memory_blocks=[...])``
  that recalls relevant procedures and predicted next tool calls, and learns workflows from the
  tool calls of past turns.
* :class:`ProceduralMemoryRetriever`: a ``BaseRetriever`` returning procedures as scored text nodes.
* :class:`ProceduralMemoryToolSpec`: a ``BaseToolSpec`` with search / save / record-outcome /
  predict tools (sync and async).

Needs ``llama-index-core``: ``pip install 'procmem[llamaindex]'``.
"""

try:
    import llama_index.core  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by a test that hides the package
    raise ImportError(
        "llamaindex_procmem needs llama-index-core: pip install 'procmem[llamaindex]'"
    ) from exc

from llamaindex_procmem.memory_blocks import (
    ProceduralMemoryBlock,
    ToolCallRecord,
    Trajectory,
    is_error_message,
    trajectories_from_messages,
)
from llamaindex_procmem.retrievers import ProceduralMemoryRetriever
from llamaindex_procmem.tools import ProceduralMemoryToolSpec

__all__ = [
    "ProceduralMemoryBlock",
    "ProceduralMemoryRetriever",
    "ProceduralMemoryToolSpec",
    "ToolCallRecord",
    "Trajectory",
    "is_error_message",
    "trajectories_from_messages",
]
