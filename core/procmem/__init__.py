"""procmem: procedural memory for AI agents.

Store procedures (skills, workflows, tools, personas) with versions and success statistics,
retrieve them with hybrid search that learns from use, learn workflows from logged sessions, and
predict the next action.
"""

from procmem.errors import (
    ConsolidationError,
    CorruptStoreError,
    EmbeddingError,
    ProcedureNotFoundError,
    ProcMemError,
    RetrievalError,
    StorageError,
    ValidationError,
    VersionNotFoundError,
)
from procmem.execution import FunctionRegistry
from procmem.memory import MiningConfig, ProceduralMemory
from procmem.procedural import Persona, Toolbox, Workflow
from procmem.stores import InMemoryStore, ProcedureStore, SQLiteStore
from procmem.types import (
    ConsolidationReport,
    ExecutionResult,
    ExecutionStats,
    Outcome,
    Prediction,
    Procedure,
    ProcedureKind,
    ProcedureVersion,
    SearchResult,
    SessionRecord,
    Step,
    Usage,
)

__version__ = "0.1.0"

__all__ = [
    "ConsolidationError",
    "ConsolidationReport",
    "CorruptStoreError",
    "EmbeddingError",
    "ExecutionResult",
    "ExecutionStats",
    "FunctionRegistry",
    "InMemoryStore",
    "MiningConfig",
    "Outcome",
    "Persona",
    "Prediction",
    "ProcMemError",
    "ProceduralMemory",
    "Procedure",
    "ProcedureKind",
    "ProcedureNotFoundError",
    "ProcedureStore",
    "ProcedureVersion",
    "RetrievalError",
    "SQLiteStore",
    "SearchResult",
    "SessionRecord",
    "Step",
    "StorageError",
    "Toolbox",
    "Usage",
    "ValidationError",
    "VersionNotFoundError",
    "Workflow",
    "__version__",
]
