"""The one exception tree of procmem.

Every error procmem raises on purpose derives from :class:`ProcMemError`. Leaves also derive
from the matching builtin, so ``except KeyError`` or ``except ValueError`` keeps working::

    ProcMemError(Exception)
    ├── ConfigurationError(ProcMemError, ValueError)
    ├── ValidationError(ProcMemError, ValueError)
    │   ├── InvalidProcedureError
    │   ├── InvalidSessionError
    │   └── ImportFormatError          (a history or JSONL file that cannot be read)
    ├── NotFoundError(ProcMemError, KeyError)
    │   ├── ProcedureNotFoundError
    │   ├── VersionNotFoundError
    │   └── ToolNotFoundError          (a step names a function that is not registered)
    ├── StorageError(ProcMemError)
    │   ├── CorruptStoreError          (corrupt or foreign database file; never replaced)
    │   ├── SchemaVersionError         (file written by a newer procmem)
    │   └── VectorStoreError           (the Chroma backend)
    ├── RetrievalError(ProcMemError)
    ├── ConsolidationError(ProcMemError)
    ├── EmbeddingError(ProcMemError)
    │   └── EmbeddingDimensionError(EmbeddingError, ValueError)
    ├── ExecutionError(ProcMemError)   (a procedure step raised; carries the step index)
    └── LearningError(ProcMemError)

The storage / retrieval / consolidation / embedding branches follow the Coda memory API
(seed 003); the builtin mix-ins follow httpx's ``_exceptions.py``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigurationError",
    "ConsolidationError",
    "CorruptStoreError",
    "EmbeddingDimensionError",
    "EmbeddingError",
    "ExecutionError",
    "ImportFormatError",
    "InvalidProcedureError",
    "InvalidSessionError",
    "LearningError",
    "NotFoundError",
    "ProcMemError",
    "ProcedureNotFoundError",
    "RetrievalError",
    "SchemaVersionError",
    "StorageError",
    "ToolNotFoundError",
    "ValidationError",
    "VectorStoreError",
    "VersionNotFoundError",
]


class ProcMemError(Exception):
    """Root of every error procmem raises on purpose."""


class ConfigurationError(ProcMemError, ValueError):
    """An option passed to a constructor or command is invalid."""


class ValidationError(ProcMemError, ValueError):
    """Input failed validation; the message names the field and the value.

    Args:
        message: Human-readable explanation.
        field: Name of the offending field, if known.
        value: The offending value (shortened in the message).
    """

    def __init__(self, message: str, *, field: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.field = field
        self.value = value


class InvalidProcedureError(ValidationError):
    """A procedure record (or one of its fields) is invalid."""


class InvalidSessionError(ValidationError):
    """A session of actions is invalid (empty, wrong types, mismatched timestamps)."""


class ImportFormatError(ValidationError):
    """A history or sessions file cannot be parsed; names the file and line."""


class NotFoundError(ProcMemError, KeyError):
    """Something looked up by id or name does not exist."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class ProcedureNotFoundError(NotFoundError):
    """No procedure with this id exists in the namespace."""


class VersionNotFoundError(NotFoundError):
    """The procedure exists but the requested version is not kept."""


class ToolNotFoundError(NotFoundError):
    """A step names a function that is not registered in this process."""


class StorageError(ProcMemError):
    """The backing store failed to read or write."""


class CorruptStoreError(StorageError):
    """The database file is corrupt or not a procmem store; it is left untouched."""


class SchemaVersionError(StorageError):
    """The database was written by a newer procmem whose schema this one cannot read."""


class VectorStoreError(StorageError):
    """The vector-store backend (Chroma) failed."""


class RetrievalError(ProcMemError):
    """A search could not be answered.

    procmem's own retriever raises the more specific cause instead (:class:`EmbeddingError`
    for the query's embedding, :class:`StorageError` for the store); this class is the branch of
    seed 003's tree for custom stores, retrievers and integrations to raise, and the HTTP
    service answers it with 503.
    """


class ConsolidationError(ProcMemError):
    """Consolidating near-duplicate procedures failed; nothing was changed."""


class EmbeddingError(ProcMemError):
    """An embedder failed to load or to embed."""


class EmbeddingDimensionError(EmbeddingError, ValueError):
    """Vectors of a different dimension than the store holds."""


class ExecutionError(ProcMemError):
    """A step of a procedure raised while executing.

    Args:
        message: Human-readable explanation.
        step_index: Zero-based index of the failing step, if known.
    """

    def __init__(self, message: str, *, step_index: int | None = None) -> None:
        super().__init__(message)
        self.step_index = step_index


class LearningError(ProcMemError):
    """Learning from sessions failed; what was learned before is unchanged.

    procmem's own learner raises the more specific cause instead (:class:`InvalidSessionError`
    for a bad session, :class:`StorageError` when it cannot be stored); this class is for
    custom learners and integrations to raise, and the HTTP service answers it with 500.
    """


def pydantic_error(exc: Any, cls: type[ValidationError], what: str) -> ValidationError:
    """Turn a pydantic ``ValidationError`` into ``cls``, naming its first failing field and value.

    Args:
        exc: The pydantic error.
        cls: The procmem error class to raise (``ValidationError`` or a subclass).
        what: What was being validated ("procedure", "usage 3"...), the field when none is named.
    """
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err.get("loc", ())) or what
    value = err.get("input")
    try:
        shown = repr(value)
    except (RecursionError, ValueError):
        shown = f"<unprintable {type(value).__name__}>"
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return cls(f"invalid {what}: field {field!r}: {err.get('msg')} (got {shown})", field=field, value=value)
