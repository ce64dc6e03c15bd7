"""The store contract every backend implements, after LangGraph's ``BaseStore``.

A backend implements the abstract methods below; their ``a``-prefixed async twins are provided
here and run the sync method in a worker thread, so they never block the event loop. One shared
contract test suite (``tests/unit/test_store_contract.py``) runs against every backend.

A store holds:

* procedures, with every kept version (``versions``) and an embedding per procedure;
* usages: past requests and the procedure that served them, with the request's embedding;
* outcomes: the log of executions and reported results;
* sessions: logged sessions of actions, from which the learner is rebuilt by replay.

Stores never compute embeddings: the caller (``ProceduralMemory``) passes them in, and the
store checks their dimension against the one it was created with.
"""

from __future__ import annotations

import asyncio
import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import numpy as np
import pydantic

from procmem.errors import CorruptStoreError, InvalidProcedureError
from procmem.types import STORED, Outcome, Procedure, ProcedureVersion, SessionRecord, Usage

__all__ = ["ProcedureStore", "SearchFilter", "read_record", "with_counters"]

T = TypeVar("T")
M = TypeVar("M", bound=pydantic.BaseModel)

#: Procedures read per page by the default :meth:`ProcedureStore.mean_embedding`.
_PAGE = 1_000


def with_counters(procedure: Procedure, **changes: Any) -> Procedure:
    """Return ``procedure`` with the given bookkeeping fields changed (None values are ignored).

    Shared by the backends' :meth:`ProcedureStore.update_counters` and, with no changes, by
    their writes to re-validate a record before it is stored.

    Raises:
        InvalidProcedureError: The result is not a valid procedure (names the field).
    """
    update = {k: v for k, v in changes.items() if v is not None}
    try:
        return Procedure.model_validate({**procedure.model_dump(), **update})
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err.get("loc", ())) or None
        raise InvalidProcedureError(f"procedure {procedure.id!r} cannot be stored: {where}: {err.get('msg')}",
                                    field=where, value=err.get("input")) from None


def read_record(model: type[M], raw: str | bytes, *, source: str) -> M:
    """Parse a record a store wrote as JSON (validated, but not re-checked for JSON safety).

    Args:
        model: The record class (``Procedure``, ``Outcome``, ``SessionRecord``...).
        raw: Its JSON text.
        source: The store, named in the error (its path or collection).

    Raises:
        CorruptStoreError: The stored text is not a valid record (edited or damaged by hand);
            the store is left untouched.
    """
    try:
        return model.model_validate_json(raw, context=STORED)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err.get("loc", ())) or "record"
        raise CorruptStoreError(
            f"{source} holds an invalid {model.__name__} record: {where}: {err.get('msg')}; it was left untouched"
        ) from None


class SearchFilter(dict):
    """Filters shared by ``list``, ``vector_search`` and ``lexical_search``.

    Keys (all optional): ``namespace`` (str), ``kinds`` (list of kind values), ``tags`` (list;
    a procedure matches when it has all of them), ``category`` (``metadata["category"]``).
    """


class ProcedureStore(ABC):
    """Abstract store of procedures, usages, outcomes and sessions.

    Args:
        max_versions: How many versions to keep per procedure (None keeps all).
    """

    max_versions: int | None = None

    # ------------------------------------------------------------------ procedures
    @abstractmethod
    def put(
        self,
        procedures: Sequence[Procedure],
        embeddings: np.ndarray | None = None,
        *,
        note: str = "",
        replace_counters: bool = False,
    ) -> list[Procedure]:
        """Insert or update procedures in one transaction.

        A procedure whose id exists becomes a new version (its version number is the stored
        one plus one) and the previous version is kept; a new id starts at version 1. Counters
        (``stats``, ``access_count``, ``last_accessed``) of an existing procedure are kept from
        the stored row, read inside the transaction, so a concurrent ``record_outcome`` is never
        overwritten; ``replace_counters=True`` writes the caller's (used when merging).

        Args:
            procedures: The records to write.
            embeddings: ``(n, dim)`` float32 unit vectors, one per procedure, or None to keep
                the stored vectors (updates) / store none (inserts).
            note: Why the versions were written (``"created"``, ``"updated"``...).
            replace_counters: Write the given counters instead of keeping the stored ones.

        Returns:
            The records as stored, with their version numbers.

        Raises:
            InvalidProcedureError: An id already belongs to another namespace (ids are global;
                one namespace can never overwrite another's procedure).
            EmbeddingDimensionError: The vectors have the wrong shape.
            StorageError: The write failed; nothing was written.
        """

    @abstractmethod
    def get(self, procedure_id: str) -> Procedure:
        """Return the current version of a procedure.

        Raises:
            ProcedureNotFoundError: No procedure has this id.
        """

    @abstractmethod
    def get_many(self, procedure_ids: Sequence[str]) -> dict[str, Procedure]:
        """Return the procedures that exist among ``procedure_ids``, keyed by id."""

    def existing_ids(self, procedure_ids: Sequence[str], *, namespace: str | None = None) -> set[str]:
        """Return the ids among ``procedure_ids`` that exist (in ``namespace``, if given).

        A cheaper check than :meth:`get_many` where the records themselves are not needed;
        backends that can answer without reading records override it.
        """
        return {pid for pid, p in self.get_many(procedure_ids).items() if namespace is None or p.namespace == namespace}

    @abstractmethod
    def list(
        self,
        *,
        namespace: str | None = None,
        kinds: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        category: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Procedure]:
        """List procedures matching the filters, oldest first."""

    @abstractmethod
    def count(self, *, namespace: str | None = None) -> int:
        """Number of procedures (in a namespace, or in all)."""

    @abstractmethod
    def update_counters(
        self,
        procedure_id: str,
        *,
        access_count: int | None = None,
        last_accessed: Any = None,
        importance: float | None = None,
        metadata: dict[str, Any] | None = None,
        stats: Any = None,
    ) -> Procedure:
        """Update counters, statistics or metadata in place, without writing a new version.

        Used for bookkeeping (access counts, learned-workflow support counts); content
        changes go through :meth:`put`, which versions them.

        Raises:
            ProcedureNotFoundError: No procedure has this id.
        """

    @abstractmethod
    def touch(self, procedure_ids: Sequence[str]) -> None:
        """Count one access for each procedure (access count + 1, last accessed = now)."""

    @abstractmethod
    def delete(self, procedure_id: str) -> bool:
        """Delete a procedure, its versions, embedding, usages and outcomes.

        Returns:
            True if it existed.
        """

    @abstractmethod
    def clear(self, namespace: str) -> int:
        """Delete everything stored in one namespace (procedures, usages, sessions).

        Args:
            namespace: The namespace to clear; required, so clearing is always scoped.

        Returns:
            Number of procedures deleted.
        """

    @abstractmethod
    def versions(self, procedure_id: str) -> list[ProcedureVersion]:
        """Return the kept versions of a procedure, oldest first.

        Raises:
            ProcedureNotFoundError: No procedure has this id.
        """

    @abstractmethod
    def get_embeddings(self, procedure_ids: Sequence[str]) -> np.ndarray:
        """Return ``(n, dim)`` float32 vectors of the procedures, zero rows where none is stored."""

    def mean_embedding(self, *, namespace: str | None = None) -> np.ndarray | None:
        """The centroid of the procedure embeddings: their mean, in a namespace or in all.

        The retriever measures description similarity from it (see
        ``RetrievalConfig.description_centering``). This default pages through :meth:`list` and
        :meth:`get_embeddings` (procedures without a vector are left out); the SQLite stores
        override it with sums kept up to date by each write, and Chroma with a cached pass.

        Args:
            namespace: Only this namespace (None: all).

        Returns:
            A ``(dim,)`` float32 vector (not normalised), or None when no procedure has one.
        """
        total: np.ndarray | None = None
        n = offset = 0
        while page := self.list(namespace=namespace, limit=_PAGE, offset=offset):
            offset += len(page)
            vecs = np.asarray(self.get_embeddings([p.id for p in page]), dtype=np.float64)
            vecs = vecs[np.any(vecs != 0.0, axis=1)]
            if len(vecs):
                total = vecs.sum(axis=0) if total is None else total + vecs.sum(axis=0)
                n += len(vecs)
        return None if total is None else (total / n).astype(np.float32)

    # ------------------------------------------------------------------ search
    @abstractmethod
    def vector_search(
        self,
        vector: np.ndarray,
        *,
        k: int = 10,
        namespace: str | None = None,
        kinds: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
    ) -> list[tuple[str, float]]:
        """Nearest procedures by cosine similarity.

        Cosines are exact; a backend may find the candidates through an approximate index
        (HNSW) on large stores, so a true neighbour is missed with a small probability.

        Args:
            vector: ``(dim,)`` float32 unit query vector.
            k: How many to return.
            namespace: Only this namespace (None: all).
            kinds: Only these kinds.
            tags: Only procedures carrying all these tags.

        Returns:
            ``(procedure_id, cosine)`` pairs, best first.
        """

    @abstractmethod
    def lexical_search(
        self,
        text: str,
        *,
        k: int = 10,
        namespace: str | None = None,
        kinds: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
    ) -> list[tuple[str, float]]:
        """Lexical search ranked by BM25 (Robertson & Zaragoza 2009).

        Returns:
            ``(procedure_id, bm25)`` pairs, best first; bm25 > 0, higher is better.
        """

    def revision(self) -> Hashable | None:
        """A value that changes whenever a stored procedure may have changed (by anyone).

        Lets callers keep what they derive from procedures until it changes. None, the default,
        means the backend cannot tell: derive afresh every time.
        """
        return None

    # ------------------------------------------------------------------ usages, outcomes
    @abstractmethod
    def add_usages(self, usages: Sequence[Usage], embeddings: np.ndarray) -> None:
        """Store past requests with their ``(n, dim)`` query embeddings."""

    @abstractmethod
    def usage_search(
        self, vector: np.ndarray, *, k: int = 20, namespace: str | None = None
    ) -> list[tuple[Usage, float]]:
        """Return the ``k`` past requests most similar to ``vector``: ``(usage, cosine)``."""

    @abstractmethod
    def reassign_usages(self, from_ids: Sequence[str], to_id: str) -> int:
        """Point the usages of ``from_ids`` at ``to_id`` (used when merging duplicates).

        Returns:
            How many usages moved.
        """

    @abstractmethod
    def count_usages(self, *, namespace: str | None = None) -> int:
        """Number of stored usages."""

    @abstractmethod
    def record_outcome(self, outcome: Outcome) -> Procedure:
        """Append an outcome to the log and update the procedure's stats, atomically.

        Raises:
            ProcedureNotFoundError: No procedure has this id.
        """

    @abstractmethod
    def outcomes(self, procedure_id: str, *, limit: int | None = None) -> list[Outcome]:
        """Return the logged outcomes of a procedure, newest first."""

    # ------------------------------------------------------------------ sessions
    @abstractmethod
    def add_sessions(self, sessions: Sequence[SessionRecord]) -> int:
        """Append sessions; one whose (namespace, session_id) is stored already is skipped.

        Returns:
            How many were added.
        """

    @abstractmethod
    def iter_sessions(self, *, namespace: str | None = None) -> Iterator[SessionRecord]:
        """Yield stored sessions in the order they were added."""

    @abstractmethod
    def count_sessions(self, *, namespace: str | None = None) -> int:
        """Number of stored sessions."""

    @abstractmethod
    def has_session(self, session_id: str, *, namespace: str = "default") -> bool:
        """Whether a session with this id is stored in the namespace."""

    # ------------------------------------------------------------------ lifecycle
    def namespaces(self) -> list[str]:
        """Return the namespaces that hold procedures."""
        return sorted({p.namespace for p in self.list()})

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (connections, clients)."""

    def __enter__(self) -> ProcedureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ async twins
    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(fn, *args, **kwargs))

    async def aput(
        self,
        procedures: Sequence[Procedure],
        embeddings: np.ndarray | None = None,
        *,
        note: str = "",
        replace_counters: bool = False,
    ) -> list[Procedure]:
        """Async twin of :meth:`put`."""
        return await self._run(self.put, procedures, embeddings, note=note, replace_counters=replace_counters)

    async def aget(self, procedure_id: str) -> Procedure:
        """Async twin of :meth:`get`."""
        return await self._run(self.get, procedure_id)

    async def alist(self, **filters: Any) -> list[Procedure]:
        """Async twin of :meth:`list`."""
        return await self._run(self.list, **filters)

    async def adelete(self, procedure_id: str) -> bool:
        """Async twin of :meth:`delete`."""
        return await self._run(self.delete, procedure_id)

    async def aclear(self, namespace: str) -> int:
        """Async twin of :meth:`clear`."""
        return await self._run(self.clear, namespace)

    async def aversions(self, procedure_id: str) -> list[ProcedureVersion]:
        """Async twin of :meth:`versions`."""
        return await self._run(self.versions, procedure_id)

    async def avector_search(self, vector: np.ndarray, **kwargs: Any) -> list[tuple[str, float]]:
        """Async twin of :meth:`vector_search`."""
        return await self._run(self.vector_search, vector, **kwargs)

    async def alexical_search(self, text: str, **kwargs: Any) -> list[tuple[str, float]]:
        """Async twin of :meth:`lexical_search`."""
        return await self._run(self.lexical_search, text, **kwargs)

    async def arecord_outcome(self, outcome: Outcome) -> Procedure:
        """Async twin of :meth:`record_outcome`."""
        return await self._run(self.record_outcome, outcome)

    async def aadd_sessions(self, sessions: Iterable[SessionRecord]) -> int:
        """Async twin of :meth:`add_sessions`."""
        return await self._run(self.add_sessions, list(sessions))
