"""``ProceduralMemory``: the one object users meet first.

It composes a store (SQLite by default), an embedder (all-MiniLM-L6-v2 by default), the hybrid
retriever, the function registry, the next-action predictor and the workflow miner, and speaks
the procedure APIs of the five design seeds under one set of names:

* seed 002 (TAAT): ``store_procedure``, ``retrieve_procedure``, ``list_procedures``,
  ``execute_procedure``, ``rollback_procedure``, ``learn_from_outcome``, ``delete_procedure``,
  ``clear``;
* seed 004 (Agent Memory Framework): ``record_skill``, ``find_applicable_skills``,
  ``record_skill_usage``;
* seed 000 (MemoRizz): ``Persona``, ``Toolbox``, ``Workflow`` in :mod:`procmem.procedural`;
* seed 003 (Coda): ``update``, ``delete``, importance with decay, ``consolidate``, ``stats``;
* seed 001 (OmniMemory): ``learn_session`` (``learn_workflow``), ``predict_next_action``,
  ``patterns``, ``save`` / ``load``.

Every method has an ``a``-prefixed async twin that runs it in a worker thread, apart from
``current_importance`` (a pure function of a record) and ``predictor`` (an accessor).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib.util
import json
import math
import os
import re
import tempfile
import threading
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pydantic

from procmem.embeddings.base import Embedder
from procmem.errors import (
    ConfigurationError,
    ConsolidationError,
    ImportFormatError,
    InvalidProcedureError,
    InvalidSessionError,
    ValidationError,
    VersionNotFoundError,
    pydantic_error,
)
from procmem.execution import FunctionRegistry, execute_steps
from procmem.learning.mining import PatternCounter
from procmem.stores.base import ProcedureStore
from procmem.types import (
    ConsolidationReport,
    ExecutionResult,
    Outcome,
    Prediction,
    Procedure,
    ProcedureKind,
    ProcedureVersion,
    SearchResult,
    SessionRecord,
    Step,
    Usage,
    utcnow,
)

__all__ = ["MiningConfig", "ProceduralMemory"]

EXPORT_FORMAT = "procmem-export"
EXPORT_VERSION = 1


def _is_unicode(text: str) -> bool:
    """Whether ``text`` encodes to UTF-8 (lone surrogates do not, and SQLite cannot store them)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_SLUG_MAX_CHARS = 64  # longest slug ProceduralMemory.procedure_id_for makes of a name or a namespace
# Invisible marks that only choose how the character before them is drawn (emoji or text style,
# glyph variants): the variation selectors and the combining grapheme joiner.
_PRESENTATION_MARKS = re.compile("[\u034f\ufe00-\ufe0f\U000e0100-\U000e01ef]")


def _slug(text: str) -> str:
    """``text`` NFKC-normalised and case-folded, its words (letters, digits, combining marks) joined by ``-``.

    A combining mark belongs to the letter or digit before it: one with none (after an emoji or a
    space) is not a word, and presentation selectors (``_PRESENTATION_MARKS``) are dropped, so
    ``"✔️ Deploy"`` gives ``deploy``, not an invisible mark followed by ``-deploy``. A slug longer
    than ``_SLUG_MAX_CHARS`` is cut after a whole word and ends with 8 hex digits of the SHA-256
    of the whole slug, so two long names sharing a beginning keep apart. Empty when ``text`` has
    no letter or digit.
    """
    folded = _PRESENTATION_MARKS.sub("", unicodedata.normalize("NFKC", text).casefold())
    chars: list[str] = []
    for c in folded:
        in_word = c.isalnum() or (unicodedata.category(c)[0] == "M" and bool(chars) and chars[-1] != " ")
        chars.append(c if in_word else " ")
    slug = "-".join("".join(chars).split())
    if len(slug) > _SLUG_MAX_CHARS:
        digest = hashlib.sha256(slug.encode("utf-8")).hexdigest()[:8]
        head = slug[: _SLUG_MAX_CHARS - 9]
        if slug[len(head)] != "-" and "-" in head:  # end on a whole word
            head = head.rsplit("-", 1)[0]
        slug = f"{head}-{digest}"
    return slug


def _default_embedder() -> Embedder:
    if importlib.util.find_spec("sentence_transformers") is None:
        raise ImportError(
            "the default embedder needs sentence-transformers: pip install 'procmem[embeddings]' "
            "(or pass embedder=... , e.g. procmem.embeddings.HashingEmbedder() for tests)"
        )
    from procmem.embeddings.sentence_transformers import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder()


class MiningConfig(pydantic.BaseModel):
    """When a recurring sequence of actions becomes a stored workflow.

    Attributes:
        enabled: Mine after every learn call.
        min_support: Distinct sessions the sequence must occur in.
        min_success_rate: Success rate in [0, 1] of those sessions needed to promote; a promoted
            workflow whose rate falls below it is demoted (a new version, visible in history).
            Sessions with no recorded outcome (shell histories) count as successes here; the
            stored ``metadata["success_rate"]`` is the observed rate of the sessions with a
            known outcome, None when none has one.
        min_length: Fewest steps of a workflow.
        max_length: Most steps of a workflow.
        max_workflows: Most promoted workflows per namespace; the most useful (support ×
            steps) are promoted first.
    """

    model_config = pydantic.ConfigDict(extra="forbid")

    enabled: bool = True
    min_support: int = pydantic.Field(default=3, ge=1)
    min_success_rate: float = pydantic.Field(default=0.7, ge=0.0, le=1.0)
    min_length: int = pydantic.Field(default=3, ge=2)
    max_length: int = pydantic.Field(default=8, ge=2)
    max_workflows: int = pydantic.Field(default=200, ge=0)


class ProceduralMemory:
    """Procedural memory for an agent: store, retrieve, execute, learn and predict procedures.

    Args:
        path: SQLite file to open (created if absent). Default: ``procmem.sqlite3`` under the
            platform data dir. Ignored when ``store`` is given.
        store: Any :class:`~procmem.stores.ProcedureStore` backend.
        embedder: Any :class:`~procmem.embeddings.Embedder`; default all-MiniLM-L6-v2
            (needs ``procmem[embeddings]``).
        namespace: Default namespace (an agent or user id) of reads and writes.
        max_versions: Versions kept per procedure when procmem opens the store (None: all).
        registry: Functions that stored steps may call; a new empty one by default.
        mining: Workflow mining thresholds.
        importance_half_life: Days after which an unused procedure's importance halves (seed
            003's decay), in days.
        retrieval_config: Options of the hybrid retriever.
        predictor_options: Keyword options of :class:`~procmem.prediction.NextActionPredictor`.

    Raises:
        ImportError: The default embedder's extra is missing (names ``procmem[embeddings]``).
        CorruptStoreError: The file is corrupt or not a procmem store (it is left untouched).

    Example:
        >>> from procmem import ProceduralMemory
        >>> from procmem.embeddings import HashingEmbedder
        >>> memory = ProceduralMemory(path=":memory:", embedder=HashingEmbedder())
        >>> pid = memory.store_procedure("deploy", ["git pull", "make build", "make deploy"])
        >>> memory.search("deploy the app", k=1)[0].procedure.id == pid
        True
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        store: ProcedureStore | None = None,
        embedder: Embedder | None = None,
        namespace: str = "default",
        max_versions: int | None = None,
        registry: FunctionRegistry | None = None,
        mining: MiningConfig | None = None,
        importance_half_life: float = 30.0,
        retrieval_config: Any = None,
        predictor_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(namespace, str) or not namespace.strip():
            raise ConfigurationError(f"namespace must be a non-empty str, got {namespace!r}")
        if not (
            isinstance(importance_half_life, (int, float))
            and math.isfinite(importance_half_life)
            and importance_half_life > 0
        ):
            raise ConfigurationError(
                f"importance_half_life must be a positive number of days, got {importance_half_life!r}"
            )
        self.embedder = embedder if embedder is not None else _default_embedder()
        if store is None:
            from procmem.stores.sqlite import SQLiteStore

            store = SQLiteStore(path, max_versions=max_versions, embedding_model=getattr(self.embedder, "name", None))
        self.store = store
        self.namespace = namespace
        self.registry = registry or FunctionRegistry()
        self.mining = mining or MiningConfig()
        self.importance_half_life = float(importance_half_life)
        self._predictor_options = dict(predictor_options or {})
        self._predictors: dict[str, Any] = {}
        self._miners: dict[str, PatternCounter] = {}  # per namespace, updated as sessions are learned
        self._mining_deferred: dict[str, bool] = {}  # the last mining left a workflow out for want of room
        # What the last mining decided on besides the counts: its thresholds and the learned
        # workflows it left in the store (id -> version). Any other change means a full re-examination.
        self._mining_basis: dict[str, tuple[Any, ...]] = {}
        self._workflow_indexes: dict[str, tuple[Any, dict[str, Procedure]]] = {}  # see _workflow_index
        self._mining_lock = threading.Lock()  # one mining at a time: its writes follow its counts' order
        self._predictor_lock = threading.RLock()
        from procmem.retrieval import HybridRetriever

        self.retriever = HybridRetriever(self.store, self.embedder, config=retrieval_config)

    # ------------------------------------------------------------------ helpers
    def _ns(self, namespace: str | None) -> str:
        if namespace is None:
            return self.namespace
        if not isinstance(namespace, str) or not namespace.strip() or not _is_unicode(namespace):
            raise ValidationError(f"namespace must be a non-empty str of valid Unicode, got {namespace!r}",
                                  field="namespace", value=namespace)
        return namespace

    @staticmethod
    def _id(procedure_id: Any, field: str = "procedure_id", error: type[ValidationError] = ValidationError) -> str:
        if not isinstance(procedure_id, str) or not procedure_id.strip() or not _is_unicode(procedure_id):
            raise error(f"{field} must be a non-empty str of valid Unicode, got {procedure_id!r}", field=field,
                        value=procedure_id)
        return procedure_id

    def _embed(self, procedures: Sequence[Procedure]) -> np.ndarray:
        from procmem.retrieval import embed_procedures

        return embed_procedures(self.embedder, procedures)

    def _build(self, data: Procedure | Mapping[str, Any]) -> Procedure:
        if isinstance(data, Procedure):
            return data
        if not isinstance(data, Mapping):
            raise InvalidProcedureError(
                f"procedure must be a Procedure or a mapping, got {type(data).__name__}",
                field="procedure",
                value=data,
            )
        payload = dict(data)
        payload.setdefault("namespace", self.namespace)
        try:
            return Procedure.model_validate(payload)
        except pydantic.ValidationError as exc:
            raise pydantic_error(exc, InvalidProcedureError, "procedure") from None

    def close(self) -> None:
        """Close the store."""
        self.store.close()

    def __enter__(self) -> ProceduralMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> ProceduralMemory:
        """``async with ProceduralMemory(...) as memory`` (seed 004's async-first usage)."""
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ CRUD
    def add(self, procedure: Procedure | Mapping[str, Any]) -> Procedure:
        """Store a procedure (a new one, or a new version of an existing id).

        Args:
            procedure: A :class:`Procedure` or a mapping of its fields.

        Returns:
            The stored procedure with its version number.

        Raises:
            InvalidProcedureError: A field is invalid (the message names it).
        """
        return self.add_many([procedure])[0]

    def add_many(self, procedures: Iterable[Procedure | Mapping[str, Any]], *, note: str = "") -> list[Procedure]:
        """Store several procedures in one transaction, embedding them in one batch."""
        recs = [self._build(p) for p in procedures]
        if not recs:
            return []
        return self.store.put(recs, self._embed(recs), note=note)

    def get(self, procedure_id: str, *, touch: bool = True) -> Procedure:
        """Return a procedure by id, counting one access.

        Raises:
            ProcedureNotFoundError: Unknown id.
        """
        self._id(procedure_id)
        proc = self.store.get(procedure_id)
        if touch:
            self.store.touch([procedure_id])
        return proc

    def update(self, procedure_id: str, *, note: str = "updated", **changes: Any) -> Procedure:
        """Write a new version of a procedure with some fields changed; the old one is kept.

        Args:
            procedure_id: Which procedure.
            note: Why (kept in the version history).
            **changes: Fields to change (``steps``, ``description``, ``parameters``, ``metadata``...).

        Raises:
            ProcedureNotFoundError: Unknown id.
            InvalidProcedureError: A changed field is invalid; nothing is written.
        """
        self._id(procedure_id)
        allowed = set(Procedure.model_fields) - {"id", "version", "created_at", "updated_at"}
        unknown = set(changes) - allowed
        if unknown:
            raise InvalidProcedureError(
                f"cannot update field(s) {sorted(unknown)}", field=sorted(unknown)[0], value=changes[sorted(unknown)[0]]
            )
        current = self.store.get(procedure_id)
        data = current.model_dump()
        data.update(changes)
        new = self._build(data)
        return self.store.put([new], self._embed([new]), note=note)[0]

    def delete(self, procedure_id: str) -> bool:
        """Delete a procedure and its history; returns whether it existed."""
        self._id(procedure_id)
        return self.store.delete(procedure_id)

    def clear(self, namespace: str | None = None) -> int:
        """Delete every procedure, usage and session of one namespace (default: this memory's).

        Returns:
            Number of procedures deleted.
        """
        ns = self._ns(namespace)
        n = self.store.clear(ns)
        with self._predictor_lock:
            self._predictors.pop(ns, None)
            self._miners.pop(ns, None)
        return n

    def list(
        self,
        *,
        kind: str | ProcedureKind | None = None,
        tags: Sequence[str] | None = None,
        category: str | None = None,
        namespace: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Procedure]:
        """List procedures of a namespace, optionally by kind, tags and category.

        Args:
            kind: Only this kind.
            tags: Only procedures carrying all these tags.
            category: Only this ``metadata["category"]``.
            namespace: Whose (default: this memory's).
            limit: At most this many (None: all).
            offset: Skip this many first.

        Raises:
            ValidationError: ``kind`` is not one of skill, workflow, tool, persona; ``tags`` is not
                a list of str; ``limit`` or ``offset`` is not an int >= 0.
        """
        from procmem.retrieval import check_tags

        try:
            kinds = None if kind is None else [ProcedureKind(kind).value]
        except ValueError:
            raise ValidationError(
                f"kind must be one of {[k.value for k in ProcedureKind]}, got {kind!r}", field="kind", value=kind
            ) from None
        check_tags(tags)
        for field, value in (("limit", limit), ("offset", offset)):
            if (value is not None or field == "offset") and (
                    isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValidationError(f"{field} must be an int >= 0, got {value!r}", field=field, value=value)
        return self.store.list(
            namespace=self._ns(namespace), kinds=kinds, tags=tags, category=category, limit=limit, offset=offset
        )

    def versions(self, procedure_id: str) -> list[ProcedureVersion]:
        """Return the kept versions of a procedure, oldest first."""
        self._id(procedure_id)
        return self.store.versions(procedure_id)

    def rollback(self, procedure_id: str, version: int) -> Procedure:
        """Restore a kept version as a new version (so the rollback itself can be undone).

        Args:
            procedure_id: Which procedure.
            version: The version number to restore (see :meth:`versions`).

        Raises:
            ProcedureNotFoundError: Unknown id.
            VersionNotFoundError: That version is not kept (or out of range).
        """
        self._id(procedure_id)
        if isinstance(version, bool) or not isinstance(version, int):
            raise ValidationError(f"version must be an int, got {version!r}", field="version", value=version)
        kept = {v.version: v for v in self.store.versions(procedure_id)}
        if version not in kept:
            raise VersionNotFoundError(
                f"procedure {procedure_id!r} has no kept version {version} (kept: {sorted(kept)})"
            )
        current = self.store.get(procedure_id)
        restored = Procedure.model_validate({**current.model_dump(), **kept[version].procedure.content_fields()})
        return self.store.put([restored], self._embed([restored]), note=f"rollback to v{version}")[0]

    def procedure_id_for(self, name: str, *, namespace: str | None = None) -> str:
        """Return the id a procedure saved by name has: a readable slug of the name.

        This is the one id policy of the agent tools that save by name (``save_procedure`` of
        ``langchain_procmem`` and ``llamaindex_procmem``): saving the same name again in a
        namespace gets the same id, hence a new version of that procedure (see :meth:`versions`,
        :meth:`rollback`), not a duplicate. Nothing is written.

        * The slug is the name NFKC-normalised and case-folded, its words (runs of letters,
          digits and combining marks, in any script) joined by ``-``: ``"Deploy the web app!"``
          gives ``deploy-the-web-app``, so names differing only in case or punctuation share an
          id. A slug over 64 characters is cut after a word and ends with 8 hex digits of its
          SHA-256, so long names stay apart and ids stay short.
        * Ids are unique in the store and a namespace never takes another's procedure, so the
          candidates are the slug, then the slug qualified by the namespace's slug
          (``deploy-agent-b``), then by 8 hex digits of the namespace's SHA-256. The first
          candidate this namespace already holds is returned, else the first free one: the id
          stays the same while that procedure exists, whichever namespace saved first.
        * The kind is not part of the id: a name saved again with another kind revises that
          procedure's kind too (a new version, which :meth:`rollback` can undo), as an agent
          saving the same name means the same procedure.

        Args:
            name: The procedure's name, as the agent wrote it.
            namespace: Whose procedure; default this memory's namespace.

        Returns:
            The id of this namespace's procedure saved under that name if there is one, else a
            free id for it.

        Raises:
            InvalidProcedureError: ``name`` is not a str of valid Unicode or has no letter or
                digit, or every candidate id belongs to another namespace.
            ValidationError: ``namespace`` is not a non-empty str.

        Example:
            >>> from procmem.embeddings import HashingEmbedder
            >>> memory = ProceduralMemory(path=":memory:", embedder=HashingEmbedder())
            >>> memory.procedure_id_for("Deploy the web app!")
            'deploy-the-web-app'
            >>> _ = memory.store_procedure("deploy", ["git pull", "make deploy"])
            >>> memory.procedure_id_for("DEPLOY"), memory.procedure_id_for("Deploy", namespace="agent-b")
            ('deploy', 'deploy-agent-b')
        """
        ns = self._ns(namespace)
        if not isinstance(name, str) or not _is_unicode(name):
            raise InvalidProcedureError(f"name must be a str of valid Unicode, got {name!r}", field="name", value=name)
        base = _slug(name)
        if not base:
            raise InvalidProcedureError(
                f"name must contain a letter or digit, got {name!r}", field="name", value=name
            )
        ns_hash = hashlib.sha256(ns.encode("utf-8")).hexdigest()[:8]
        candidates = list(dict.fromkeys([base, f"{base}-{_slug(ns) or ns_hash}", f"{base}-{ns_hash}"]))
        owners = {pid: proc.namespace for pid, proc in self.store.get_many(candidates).items()}
        for pid in candidates:
            if owners.get(pid) == ns:
                return pid
        for pid in candidates:
            if pid not in owners:
                return pid
        raise InvalidProcedureError(
            f"every id for name {name!r} ({', '.join(candidates)}) belongs to another namespace than {ns!r}; "
            "choose another name", field="name", value=name,
        )

    # ------------------------------------------------------------------ retrieval
    def search(
        self,
        query: str,
        *,
        k: int = 5,
        kinds: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        namespace: str | None = None,
        min_score: float | None = None,
        min_importance: float | None = None,
    ) -> list[SearchResult]:
        """Find procedures for a request: dense + BM25 + past experience, fused.

        Args:
            query: The request or situation, as text.
            k: How many results.
            kinds: Only these kinds (skill, workflow, tool, persona).
            tags: Only procedures carrying all these tags.
            namespace: Whose memory (default: this memory's).
            min_score: Drop results scoring below this.
            min_importance: Only procedures whose importance after decay
                (:meth:`current_importance`) is at least this, in [0, 1] (seed 003's
                ``retrieve_memories(..., min_importance=)``). The ranking is searched deeper (4
                times as many results each round, the query embedded at most twice) until ``k``
                pass or none is left, so a high threshold over a large store can cost a scan of it.

        Returns:
            Results best first, each with its score and why it matched. Only the returned
            procedures count an access.

        Raises:
            ValidationError: An argument is invalid (the message names it).
        """
        ns = self._ns(namespace)
        if min_importance is None:
            return self.retriever.search(query, k=k, kinds=kinds, tags=tags, namespace=ns, min_score=min_score)
        if (isinstance(min_importance, bool) or not isinstance(min_importance, (int, float))
                or not 0.0 <= min_importance <= 1.0):
            raise ValidationError(f"min_importance must be a number in [0, 1] or None, got {min_importance!r}",
                                  field="min_importance", value=min_importance)
        now = utcnow()
        depth = k
        qv = None
        while True:
            hits = self.retriever.search(
                query, k=depth, kinds=kinds, tags=tags, namespace=ns, min_score=min_score, touch=False,
                query_vector=qv,
            )
            kept = [r for r in hits if self.current_importance(r.procedure, now=now) >= min_importance][:k]
            if len(kept) == k or len(hits) < depth:
                break
            depth *= 4
            if qv is None:  # embedded once more here, then reused by every deeper search
                qv = self.embedder.embed_query(query)
        if kept:
            self.store.touch([r.procedure.id for r in kept])
        return kept

    def keyword_search(
        self,
        query: str,
        *,
        k: int = 5,
        kinds: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        namespace: str | None = None,
    ) -> list[SearchResult]:
        """Find procedures by their words alone (BM25): no embedding model, no past experience.

        The fallback seed 003 recommends when embedding fails; procmem never switches to it
        silently, so a broken model install is not hidden::

            try:
                hits = memory.search(query)
            except EmbeddingError:
                hits = memory.keyword_search(query)

        Args:
            query: The request or situation, as text.
            k: How many results (at most).
            kinds: Only these kinds.
            tags: Only procedures carrying all these tags.
            namespace: Whose memory (default: this memory's).

        Returns:
            Results best first, scored by BM25 divided by the best, in (0, 1]; empty when no
            procedure shares a word with the query. Returned procedures count an access.

        Raises:
            ValidationError: An argument is invalid (the message names it).
        """
        return self.retriever.keyword_search(query, k=k, kinds=kinds, tags=tags, namespace=self._ns(namespace))

    def record_usage(
        self, query: str, procedure_id: str, success: bool = True, *, namespace: str | None = None
    ) -> None:
        """Remember that ``procedure_id`` served ``query`` (and whether it worked).

        Later searches for similar requests rank it accordingly, so retrieval improves as the
        agent works.

        Raises:
            ProcedureNotFoundError: No procedure of the namespace has this id (a usage never
                points at another namespace's procedure).
        """
        self._id(procedure_id)
        self.retriever.record_usage(query, procedure_id, success, namespace=self._ns(namespace))

    def record_usages(
        self,
        items: Iterable[Usage | tuple[Any, ...] | Mapping[str, Any]],
        *,
        namespace: str | None = None,
        batch_size: int = 256,
    ) -> int:
        """Remember many served requests at once (a log of past requests, one run's credits).

        Each distinct request text of a batch is embedded once, so a request credited to
        several procedures costs one embedding.

        Args:
            items: ``(query, procedure_id[, success[, namespace]])`` tuples, mappings with
                those keys, or :class:`Usage` records.
            namespace: The namespace of tuples and mappings that name none (default: this
                memory's).
            batch_size: Usages written per batch; each batch is one transaction.

        Returns:
            How many usages were recorded.

        Raises:
            ValidationError: An item is malformed (names the item index and field).
            ProcedureNotFoundError: An id is unknown, or names a procedure of another namespace
                than the usage's; nothing of that batch was written.
        """
        return self.retriever.record_usages(items, namespace=self._ns(namespace), batch_size=batch_size)

    def record_outcome(
        self,
        procedure_id: str,
        success: bool,
        *,
        duration: float | None = None,
        error: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> Procedure:
        """Record one execution or use of a procedure and update its statistics.

        Args:
            procedure_id: Which procedure.
            success: Whether it worked.
            duration: How long it took, in seconds.
            error: Error message of a failure.
            details: Free data about the outcome.

        Raises:
            ProcedureNotFoundError: Unknown id.
            ValidationError: ``success`` is not a bool, or ``duration`` is negative or not finite.
        """
        self._id(procedure_id)
        if not isinstance(success, bool):
            raise ValidationError(f"success must be a bool, got {success!r}", field="success", value=success)
        if details is not None and not isinstance(details, Mapping):
            raise ValidationError(
                f"details must be a mapping or None, got {type(details).__name__}", field="details", value=details
            )
        try:
            outcome = Outcome(
                procedure_id=procedure_id, success=success, duration=duration, error=error, details=dict(details or {})
            )
        except pydantic.ValidationError as exc:
            raise pydantic_error(exc, ValidationError, "outcome") from None
        return self.store.record_outcome(outcome)

    # ------------------------------------------------------------------ importance (seed 003)
    def current_importance(self, procedure: Procedure, *, now: datetime | None = None) -> float:
        """Importance after decay: halves every ``importance_half_life`` days without access.

        Each access adds a small boost (``0.05 * log1p(access_count)``), capped at 1.

        Returns:
            Importance in [0, 1].
        """
        now = now or utcnow()
        last = procedure.last_accessed or procedure.updated_at
        days = max(0.0, (now - last).total_seconds() / 86400.0)
        decayed = procedure.importance * 0.5 ** (days / self.importance_half_life)
        return float(min(1.0, decayed + 0.05 * math.log1p(procedure.access_count)))

    def forget(self, *, min_importance: float, namespace: str | None = None, dry_run: bool = False) -> list[str]:
        """Delete procedures of a namespace whose decayed importance fell below a threshold.

        Args:
            min_importance: Threshold in [0, 1].
            namespace: Whose memory (default: this memory's); forgetting is always scoped.
            dry_run: Only report what would be deleted.

        Returns:
            Ids deleted (or that would be).
        """
        if not (isinstance(min_importance, (int, float)) and 0.0 <= min_importance <= 1.0):
            raise ValidationError(
                f"min_importance must be in [0, 1], got {min_importance!r}",
                field="min_importance",
                value=min_importance,
            )
        now = utcnow()
        doomed = [
            p.id
            for p in self.store.list(namespace=self._ns(namespace))
            if self.current_importance(p, now=now) < min_importance
        ]
        if not dry_run:
            for pid in doomed:
                self.store.delete(pid)
        return doomed

    # ------------------------------------------------------------------ consolidation (seed 003)
    def consolidate(
        self, *, threshold: float = 0.85, namespace: str | None = None, dry_run: bool = False
    ) -> ConsolidationReport:
        """Merge near-duplicate procedures of the same kind whose cosine >= ``threshold``.

        In each group the procedure with the most successes (then importance, then accesses)
        is kept; it gains the others' triggers, tags, statistics and access counts in a new
        version noted ``consolidated``, and their full records under
        ``metadata["merged_from"]`` so nothing is lost; their usages move to it.

        Args:
            threshold: Cosine similarity in [-1, 1] above which two procedures are duplicates.
            namespace: Whose memory (default: this memory's).
            dry_run: Report the groups without changing anything.

        Raises:
            ConsolidationError: A merge failed. Groups merged before it stay merged; the failed
                group's writes are separate transactions (the merged version, then moving the
                usages, then deleting the duplicates), so it may be left with the merged version
                written and the duplicates still in place: nothing is lost, but their statistics
                then count twice until the duplicates are deleted.
        """
        if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and -1 <= threshold <= 1):
            raise ValidationError(
                f"threshold must be a cosine in [-1, 1], got {threshold!r}", field="threshold", value=threshold
            )
        procs = self.store.list(namespace=self._ns(namespace))
        report = ConsolidationReport(examined=len(procs), threshold=float(threshold), dry_run=dry_run)
        if len(procs) < 2:
            return report
        vecs = self.store.get_embeddings([p.id for p in procs])
        sims = vecs @ vecs.T
        parent = list(range(len(procs)))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for i in range(len(procs)):
            for j in np.nonzero(sims[i, i + 1 :] >= threshold)[0] + i + 1:
                if procs[i].kind == procs[int(j)].kind:
                    parent[find(int(j))] = find(i)
        groups: dict[int, list[int]] = {}
        for i in range(len(procs)):
            groups.setdefault(find(i), []).append(i)
        for members in groups.values():
            if len(members) < 2:
                continue
            ranked = sorted(
                members,
                key=lambda m: (procs[m].stats.successes, procs[m].importance, procs[m].access_count),
                reverse=True,
            )
            keep, others = procs[ranked[0]], [procs[m] for m in ranked[1:]]
            sim = float(min(sims[ranked[0], m] for m in ranked[1:]))
            report.merged.append({"kept": keep.id, "merged": [o.id for o in others], "similarity": sim})
            if dry_run:
                continue
            try:
                self._merge(keep, others)
            except Exception as exc:
                raise ConsolidationError(f"merging {[o.id for o in others]} into {keep.id!r} failed: {exc}") from exc
        return report

    def _merge(self, keep: Procedure, others: Sequence[Procedure]) -> None:
        stats = keep.stats.model_copy()
        triggers, tags = list(keep.triggers), list(keep.tags)
        merged_from = list(keep.metadata.get("merged_from", []))
        access = keep.access_count
        for o in others:
            triggers += [t for t in o.triggers if t not in triggers]
            tags += [t for t in o.tags if t not in tags]
            n_timed = stats.timed_executions + o.stats.timed_executions
            mean = (
                (
                    (stats.mean_duration * stats.timed_executions + o.stats.mean_duration * o.stats.timed_executions)
                    / n_timed
                )
                if n_timed
                else 0.0
            )
            last = max([d for d in (stats.last_execution, o.stats.last_execution) if d], default=None)
            stats = stats.model_copy(
                update={
                    "successes": stats.successes + o.stats.successes,
                    "failures": stats.failures + o.stats.failures,
                    "timed_executions": n_timed,
                    "mean_duration": mean,
                    "last_execution": last,
                }
            )
            access += o.access_count
            merged_from.append(json.loads(o.model_dump_json()))
        new = keep.model_copy(
            update={
                "triggers": triggers,
                "tags": tags,
                "stats": stats,
                "access_count": access,
                "importance": max([keep.importance] + [o.importance for o in others]),
                "metadata": {**keep.metadata, "merged_from": merged_from},
            }
        )
        new = Procedure.model_validate(new.model_dump())
        self.store.put([new], self._embed([new]), note="consolidated", replace_counters=True)
        self.store.reassign_usages([o.id for o in others], keep.id)
        self.retriever.invalidate()
        for o in others:
            self.store.delete(o.id)

    # ------------------------------------------------------------------ statistics
    def stats(self, *, namespace: str | None = None) -> dict[str, Any]:
        """Counts and averages of a namespace (seed 003's memory and retrieval statistics).

        Args:
            namespace: The namespace to describe (default: this memory's).

        Returns:
            A dict: ``namespace``; ``procedures`` and ``by_kind`` (counts per kind);
            ``usages`` (recorded requests) and ``sessions`` (logged sessions); ``executions``
            (recorded outcomes) and ``mean_success_rate`` (mean over executed procedures, in
            [0, 1], None if none ran); ``accesses`` (retrievals and reads counted by
            ``touch``, summed over procedures); ``mean_importance`` (stored importance, in
            [0, 1], None when empty); ``learned_workflows`` (mined ones); ``embedder``,
            ``store`` and ``path``; ``vector_index`` (what the store has loaded, when it reports
            it); ``learner`` (the next-action learner's counts, once it is loaded).
        """
        ns = self._ns(namespace)
        procs = self.store.list(namespace=ns)
        by_kind: dict[str, int] = {k.value: 0 for k in ProcedureKind}
        for p in procs:
            by_kind[p.kind.value] += 1
        executed = [p for p in procs if p.stats.executions]
        out: dict[str, Any] = {
            "namespace": ns,
            "procedures": len(procs),
            "by_kind": by_kind,
            "usages": self.store.count_usages(namespace=ns),
            "sessions": self.store.count_sessions(namespace=ns),
            "executions": sum(p.stats.executions for p in procs),
            "mean_success_rate": (sum(p.stats.successes / p.stats.executions for p in executed) / len(executed))
            if executed
            else None,
            "accesses": sum(p.access_count for p in procs),
            "mean_importance": (sum(p.importance for p in procs) / len(procs)) if procs else None,
            "learned_workflows": sum(1 for p in procs if p.metadata.get("learned")),
            "embedder": getattr(self.embedder, "name", type(self.embedder).__name__),
            "store": type(self.store).__name__,
            "path": getattr(self.store, "path", None),
        }
        index_info = getattr(self.store, "vector_index_info", None)
        if index_info is not None:
            out["vector_index"] = index_info()  # sizes, and whether an HNSW graph serves each
        predictor = self._predictors.get(ns)
        if predictor is not None:
            out["learner"] = predictor.stats()
        return out

    # ------------------------------------------------------------------ seed 002 (TAAT)
    def store_procedure(
        self,
        procedure_id: str,
        steps: Sequence[Any],
        parameters: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        description: str = "",
        kind: str = "workflow",
        triggers: Sequence[str] = (),
        tags: Sequence[str] = (),
        importance: float | None = None,
    ) -> str:
        """Store a new procedure or a new version of ``procedure_id`` (seed 002).

        On update, parameters and metadata given as None keep their stored values.

        Args:
            procedure_id: Stable id chosen by the caller.
            steps: Steps: strings, :class:`Step`, or dicts (``{"function", "parameters"}`` as in
                seed 002, ``{"step", "action"}`` as in seed 000).
            parameters: Default parameters passed to the steps' functions.
            metadata: Free data; ``metadata["category"]`` is what :meth:`list_procedures` filters.
            name: Display name (default: the id).
            description: What it does, for retrieval.
            kind: skill, workflow, tool or persona.
            triggers: Situations that should bring it to mind.
            tags: Labels.
            importance: In [0, 1].

        Returns:
            The procedure id.

        Raises:
            InvalidProcedureError: A field is invalid, or ``procedure_id`` is taken by a
                procedure of another namespace (another agent's; ids are unique in the store);
                nothing is stored.
        """
        self._id(procedure_id, error=InvalidProcedureError)
        for field, value in (("parameters", parameters), ("metadata", metadata)):
            if value is not None and not isinstance(value, Mapping):
                raise InvalidProcedureError(
                    f"{field} must be a mapping or None, got {type(value).__name__}", field=field, value=value
                )
        for field, value in (("triggers", triggers), ("tags", tags)):
            if (
                isinstance(value, (str, bytes))
                or not isinstance(value, Sequence)
                or not all(isinstance(x, str) for x in value)
            ):
                raise InvalidProcedureError(f"{field} must be a list of str, got {value!r}", field=field, value=value)
        if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence):
            raise InvalidProcedureError(f"steps must be a list, got {type(steps).__name__}", field="steps", value=steps)
        try:
            existing = self.store.get(procedure_id)
        except KeyError:
            existing = None
        if existing is not None and existing.namespace != self.namespace:
            raise InvalidProcedureError(
                f"procedure_id {procedure_id!r} belongs to namespace {existing.namespace!r}, not this memory's "
                f"{self.namespace!r}; choose another id", field="procedure_id", value=procedure_id,
            )
        data: dict[str, Any] = (
            existing.model_dump()
            if existing
            else {
                "id": procedure_id,
                "name": name or procedure_id,
                "namespace": self.namespace,
            }
        )
        data["steps"] = steps
        data["kind"] = kind
        if name is not None:
            data["name"] = name
        if description or not existing:
            data["description"] = description
        if parameters is not None or not existing:
            data["parameters"] = dict(parameters or {})
        if metadata is not None or not existing:
            data["metadata"] = dict(metadata or {})
        if triggers or not existing:
            data["triggers"] = list(triggers)
        if tags or not existing:
            data["tags"] = list(tags)
        if importance is not None:
            data["importance"] = importance
        return self.add(data).id

    def retrieve_procedure(self, procedure_id: str) -> Procedure:
        """Return a procedure by id (seed 002); raises ``ProcedureNotFoundError`` if unknown."""
        return self.get(procedure_id)

    def list_procedures(self, category: str | None = None) -> list[Procedure]:
        """List this namespace's procedures, optionally of one ``metadata["category"]`` (seed 002)."""
        return self.list(category=category)

    def execute_procedure(
        self,
        procedure_id: str,
        context: Any = None,
        parameters: Mapping[str, Any] | None = None,
        *,
        handler: Callable[[Step, dict[str, Any]], Any] | None = None,
    ) -> ExecutionResult:
        """Run a procedure's steps against the registry and record the outcome (seed 002).

        Each step names a function registered in :attr:`registry`; parameters merge the
        procedure's defaults with ``parameters``. A failing step stops the run and is reported
        in the result (never raised); the outcome and duration update the statistics.

        Raises:
            ProcedureNotFoundError: Unknown id.
        """
        self._id(procedure_id)
        proc = self.get(procedure_id)
        result = execute_steps(proc, self.registry, parameters=parameters, context=context, handler=handler)
        self.store.record_outcome(
            Outcome(
                procedure_id=procedure_id,
                success=result.success,
                duration=result.duration,
                error=result.error,
                details={"failed_step": result.failed_step},
            )
        )
        return result

    def rollback_procedure(self, procedure_id: str, version_index: int = 0) -> Procedure:
        """Roll back to a previous version (seed 002): 0 is the one before the current.

        Raises:
            VersionNotFoundError: ``version_index`` is out of range.
        """
        self._id(procedure_id)
        if isinstance(version_index, bool) or not isinstance(version_index, int) or version_index < 0:
            raise ValidationError(
                f"version_index must be an int >= 0, got {version_index!r}", field="version_index", value=version_index
            )
        previous = [v.version for v in reversed(self.store.versions(procedure_id))][1:]
        if version_index >= len(previous):
            raise VersionNotFoundError(
                f"procedure {procedure_id!r} has {len(previous)} previous version(s); "
                f"version_index {version_index} is out of range"
            )
        return self.rollback(procedure_id, previous[version_index])

    def learn_from_outcome(
        self, procedure_id: str, outcome_data: Mapping[str, Any], update_procedure: bool = True
    ) -> Procedure:
        """Learn from an execution outcome (seed 002).

        ``outcome_data["success"]`` (bool, required) and ``duration`` (seconds) update the
        statistics and the outcome log. With ``update_procedure``, revised ``steps`` or
        ``parameters`` in ``outcome_data`` become a new version (noted with the outcome), and a
        procedure whose last three outcomes failed after a revision is rolled back to the
        version before it.

        Raises:
            ProcedureNotFoundError: Unknown id.
            ValidationError: ``outcome_data`` lacks a bool ``success``.
        """
        self._id(procedure_id)
        if not isinstance(outcome_data, Mapping) or not isinstance(outcome_data.get("success"), bool):
            raise ValidationError(
                "outcome_data must be a mapping with a bool 'success'", field="outcome_data.success", value=outcome_data
            )
        details = {k: v for k, v in outcome_data.items() if k not in {"success", "duration", "error"}}
        proc = self.record_outcome(
            procedure_id,
            outcome_data["success"],
            duration=outcome_data.get("duration"),
            error=outcome_data.get("error"),
            details=json.loads(json.dumps(details, default=str)),
        )
        if update_procedure:
            changes = {k: outcome_data[k] for k in ("steps", "parameters") if k in outcome_data}
            if changes:
                return self.update(procedure_id, note="learned from outcome", **changes)
            recent = self.store.outcomes(procedure_id, limit=3)
            history = self.store.versions(procedure_id)
            revised_at = history[-1].created_at if len(history) > 1 else None
            if (
                revised_at
                and len(recent) == 3
                and not any(o.success for o in recent)
                and all(o.timestamp >= revised_at for o in recent)
                and history[-1].note == "learned from outcome"
            ):
                return self.rollback(procedure_id, history[-2].version)
        return proc

    def delete_procedure(self, procedure_id: str) -> bool:
        """Delete a procedure (seed 002); returns whether it existed."""
        return self.delete(procedure_id)

    # ------------------------------------------------------------------ seed 004
    def record_skill(
        self,
        name: str,
        pattern: str,
        triggers: Sequence[str] | None = None,
        *,
        tags: Sequence[str] = (),
        importance: float = 0.5,
    ) -> Procedure:
        """Record a skill: a named pattern of behaviour and the situations that trigger it (seed 004).

        Args:
            name: Skill name (its id within the namespace, so recording it again versions it).
            pattern: How to do it (``"When API returns 429, retry with exponential backoff"``).
            triggers: Situations or phrases that call for it.
            tags: Labels.
            importance: In [0, 1].
        """
        if not isinstance(name, str) or not name.strip():
            raise InvalidProcedureError(f"name must be a non-empty str, got {name!r}", field="name", value=name)
        if not isinstance(pattern, str) or not pattern.strip():
            raise InvalidProcedureError(
                f"pattern must be a non-empty str, got {pattern!r}", field="pattern", value=pattern
            )
        if triggers is not None and (isinstance(triggers, str) or not all(isinstance(t, str) for t in triggers)):
            raise InvalidProcedureError(
                f"triggers must be a list of str, got {triggers!r}", field="triggers", value=triggers
            )
        skill_id = f"skill:{self.namespace}:{name}"
        data: dict[str, Any] = {
            "id": skill_id,
            "kind": "skill",
            "name": name,
            "description": pattern,
            "steps": [pattern],
            "triggers": list(triggers or []),
            "tags": list(tags),
            "importance": importance,
            "namespace": self.namespace,
        }
        try:
            existing = self.store.get(skill_id)
            data = {**existing.model_dump(), **data}
        except KeyError:
            pass
        return self.add(data)

    def find_applicable_skills(
        self, situation: str, limit: int = 5, *, min_score: float | None = None
    ) -> list[SearchResult]:
        """Skills that apply to a situation, best first (seed 004)."""
        return self.search(situation, k=limit, kinds=["skill"], min_score=min_score)

    def record_skill_usage(
        self, skill_id: str, success: bool = True, *, situation: str | None = None, duration: float | None = None
    ) -> Procedure:
        """Record that a skill was used, and whether it worked (seed 004).

        With ``situation``, the request is also remembered as a usage, so similar situations
        retrieve this skill more readily.
        """
        self._id(skill_id, "skill_id")
        proc = self.record_outcome(skill_id, success, duration=duration)
        if situation:
            self.record_usage(situation, skill_id, success)
        return proc

    # ------------------------------------------------------------------ learning and prediction
    def predictor(self, namespace: str | None = None) -> Any:
        """The next-action predictor of a namespace, rebuilt from its stored sessions on first use."""
        ns = self._ns(namespace)
        with self._predictor_lock:
            pred = self._predictors.get(ns)
            if pred is None:
                from procmem.prediction import NextActionPredictor

                pred = NextActionPredictor(embedder=self.embedder, **self._predictor_options)
                pred.learn_sessions(self.store.iter_sessions(namespace=ns))
                self._predictors[ns] = pred
            return pred

    def refresh(self, namespace: str | None = None) -> None:
        """Forget the cached predictor and mining counts of a namespace; both are rebuilt from the store.

        Use it when another process (a second server worker, a CLI run) learned sessions into
        the same store, or cleared the namespace. The mining counts notice on their own when
        the store holds another number of the namespace's sessions than they counted; only a
        clear followed by as many new sessions as there were goes unnoticed without this call.
        """
        ns = self._ns(namespace)
        with self._predictor_lock:
            self._predictors.pop(ns, None)
            self._miners.pop(ns, None)

    def _session(
        self,
        actions: Any,
        outcome: Any,
        task: Any,
        session_id: str | None,
        timestamps: Any,
        namespace: str,
        user_id: str | None = None,
        group: str | None = None,
        turns: Sequence[int] | None = None,
    ) -> SessionRecord:
        if isinstance(actions, (str, bytes)) or not isinstance(actions, Sequence):
            raise InvalidSessionError(
                f"actions must be a list of str, got {type(actions).__name__}", field="actions", value=actions
            )
        # Seed 001 passes [{"command": "git status"}, ...].
        actions = [a.get("command", a.get("action")) if isinstance(a, Mapping) else a for a in actions]
        instructions = None
        if turns is not None:
            if not isinstance(task, (list, tuple)):
                raise InvalidSessionError(f"turns needs task as a list of instructions, got {task!r}"[:200],
                                          field="task", value=task)
            instructions = list(task)
        if isinstance(task, (list, tuple)):
            task = " ".join(str(t) for t in task)
        data = {
            "actions": list(actions),
            "outcome": outcome,
            "task": task,
            "instructions": instructions,
            "turns": list(turns) if turns is not None else None,
            "timestamps": timestamps,
            "namespace": namespace,
            "user_id": user_id,
            "group": group,
        }
        if session_id is not None:
            data["session_id"] = session_id
        try:
            return SessionRecord.model_validate(data)
        except pydantic.ValidationError as exc:
            raise pydantic_error(exc, InvalidSessionError, "session") from None

    def learn_session(
        self,
        actions: Sequence[str] | Sequence[Mapping[str, str]],
        outcome: Any = None,
        task: str | Sequence[str] | None = None,
        *,
        session_id: str | None = None,
        timestamps: Sequence[Any] | None = None,
        namespace: str | None = None,
        turns: Sequence[int] | None = None,
    ) -> SessionRecord:
        """Learn one logged session of actions and its outcome (seed 001's ``learn_workflow``).

        The session is stored (so the learner survives restarts), the predictor learns it, and
        workflow mining runs: a recurring successful sequence becomes a stored workflow.

        Args:
            actions: The actions in order: strings, or seed 001's ``{"command": ...}`` dicts.
            outcome: ``"success"``, ``"failure"``, a bool, or None when unknown.
            task: The task text (instructions), if any.
            session_id: Id of the session; re-learning a stored id is a no-op.
            timestamps: One time per action, if known.
            namespace: Whose memory (default: this memory's).
            turns: For a multi-turn session, one index into ``task`` (then a list of the
                turns' instructions) per action: each action is learned with its turn's
                instruction.

        Returns:
            The stored session record.

        Raises:
            InvalidSessionError: Empty or non-text actions, bad outcome, mismatched timestamps
                or turns.
        """
        ns = self._ns(namespace)
        record = self._session(actions, outcome, task, session_id, timestamps, ns, turns=turns)
        self.learn_sessions([record])
        return record

    # Seed 001's name.
    def learn_workflow(self, session_commands: Sequence[Any], session_outcome: Any = None) -> str:
        """Seed 001's name for :meth:`learn_session`; returns the session id."""
        return self.learn_session(session_commands, session_outcome).session_id

    def learn_sessions(
        self, sessions: Iterable[SessionRecord], *, progress: Callable[[int], None] | None = None, batch_size: int = 500
    ) -> int:
        """Learn many sessions: store the new ones, replay them into the predictor, then mine.

        Args:
            sessions: Session records (their ``namespace`` decides whose memory learns them).
            progress: Called with the number of sessions processed so far, after each batch.
            batch_size: Sessions stored per transaction.

        Returns:
            How many sessions were new (already stored ids are skipped).
        """
        added = 0
        touched: set[str] = set()
        batch: list[SessionRecord] = []
        seen = 0

        def flush() -> None:
            nonlocal added
            fresh = [s for s in batch if not self.store.has_session(s.session_id, namespace=s.namespace)]
            if fresh:
                with self._predictor_lock:
                    loaded = {s.namespace for s in fresh if s.namespace in self._predictors}
                    self.store.add_sessions(fresh)
                    for s in fresh:
                        self._count_sessions(s.namespace, [s])
                        if s.namespace in loaded:
                            self._predictors[s.namespace].learn_session(
                                s.actions,
                                outcome=s.outcome,
                                task=s.task,
                                timestamps=s.timestamps,
                                session_id=s.session_id,
                            )
                added += len(fresh)
                touched.update(s.namespace for s in fresh)
            batch.clear()

        for s in sessions:
            if not isinstance(s, SessionRecord):
                raise InvalidSessionError(
                    f"sessions must be SessionRecord, got {type(s).__name__}", field="sessions", value=s
                )
            batch.append(s)
            seen += 1
            if len(batch) >= batch_size:
                flush()
                if progress:
                    progress(seen)
        flush()
        if progress:
            progress(seen)
        if self.mining.enabled:
            for ns in touched:
                self.mine_workflows(namespace=ns)
        return added

    def observe(self, action: str, *, session_id: str, task: str | None = None, namespace: str | None = None) -> None:
        """Learn one action of a running session as it happens (within-session learning).

        Call :meth:`end_session` when the session ends to store it with its outcome.
        """
        if not isinstance(action, str) or not action.strip():
            raise InvalidSessionError(f"action must be a non-blank str, got {action!r}", field="action", value=action)
        if not isinstance(session_id, str) or not session_id:
            raise InvalidSessionError(
                f"session_id must be a non-empty str, got {session_id!r}", field="session_id", value=session_id
            )
        self.predictor(namespace).observe(action, session_id=session_id, task=task)

    def end_session(
        self, session_id: str, outcome: Any = None, *, namespace: str | None = None
    ) -> SessionRecord | None:
        """Close a session fed by :meth:`observe`: store it with its outcome and mine workflows.

        Returns:
            The stored record, or None if no action was observed under this id.
        """
        ns = self._ns(namespace)
        record = self.predictor(ns).end_session(session_id, outcome=outcome)
        if record is None:
            return None
        record = record.model_copy(update={"namespace": ns})
        with self._predictor_lock:
            if self.store.add_sessions([record]):
                self._count_sessions(ns, [record])
        if self.mining.enabled:
            self.mine_workflows(namespace=ns)
        return record

    def predict_next_action(
        self, context: Sequence[str] | None = None, task: str | None = None, top_k: int = 3, *,
        namespace: str | None = None, current_context: Sequence[str] | None = None,
    ) -> list[Prediction]:
        """Rank what comes next after ``context`` (seed 001's ``predict_next_action``).

        Args:
            context: The latest actions, oldest first.
            task: The task text, if known (helps for contexts never seen).
            top_k: How many predictions.
            namespace: Whose memory (default: this memory's).
            current_context: Seed 001's name for ``context`` (as in its ``POST /predict`` body),
                so ``predict_next_action(current_context=[...], top_k=3)`` works as written
                there; give one of the two.

        Returns:
            Predictions best first: concrete action, calibrated confidence in [0, 1], reason,
            follow-up suggestions.

        Raises:
            ValidationError: Neither or both of ``context`` and ``current_context`` given, a
                context that is not a list of str, or ``top_k`` not an int >= 1.
        """
        name = "context"
        if current_context is not None:
            if context is not None:
                raise ValidationError("give context or current_context, not both", field="current_context",
                                      value=current_context)
            context, name = current_context, "current_context"
        elif context is None:
            raise ValidationError("context is required: the latest actions, oldest first (a list of str)",
                                  field="context", value=None)
        if isinstance(context, (str, bytes)) or not isinstance(context, Sequence):
            raise ValidationError(
                f"{name} must be a list of str, got {type(context).__name__}", field=name, value=context
            )
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1:
            raise ValidationError(f"top_k must be an int >= 1, got {top_k!r}", field="top_k", value=top_k)
        for i, a in enumerate(context):
            if not isinstance(a, str):
                raise ValidationError(f"{name}[{i}] must be a str, got {a!r}", field=f"{name}[{i}]", value=a)
        preds = self.predictor(namespace).predict(list(context), task=task, top_k=top_k)
        workflows = self._workflow_index(self._ns(namespace))
        out = []
        for p in preds:
            wf = workflows.get(p.pattern or "")
            if wf is not None and p.workflow_id is None:
                p = p.model_copy(
                    update={"workflow_id": wf.id, "reason": f"{p.reason}; step of learned workflow {wf.name!r}"}
                )
            out.append(p)
        return out

    def _workflow_index(self, namespace: str) -> dict[str, Procedure]:
        """Promoted learned workflows by each of their steps after the first, to name in reasons.

        Kept until the store's :meth:`~procmem.stores.base.ProcedureStore.revision` changes
        (reading every learned workflow cost 9 ms per prediction with 200 of them).
        """
        revision = self.store.revision()  # read first: a write meanwhile makes the kept index stale
        kept = self._workflow_indexes.get(namespace)
        if revision is not None and kept is not None and kept[0] == revision:
            return kept[1]
        index: dict[str, Procedure] = {}
        for wf in self.store.list(namespace=namespace, kinds=["workflow"], tags=["learned"]):
            if wf.metadata.get("status") != "promoted":
                continue
            for template in wf.metadata.get("templates", [])[1:]:
                index.setdefault(template, wf)
        if revision is not None:
            self._workflow_indexes[namespace] = (revision, index)
        return index

    def patterns(
        self, *, min_count: int = 2, limit: int | None = 50, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        """Learned patterns (action n-grams) with counts and success rates."""
        return self.predictor(namespace).patterns(min_count=min_count, limit=limit)

    def causal_chains(self, action: str, *, namespace: str | None = None) -> dict[str, Any]:
        """What followed an action and how the sessions that took it ended (seed 001's causal chains).

        Args:
            action: A concrete action (``"git push origin main"``) or its normalised template.
            namespace: Whose memory (default: this memory's).

        Returns:
            ``{"action": template, "sessions": n, "outcomes": {"success", "failure", "unknown"},
            "next": {template: count}}``, the followers most frequent first; zero counts for an
            action never seen.

        Raises:
            ValidationError: ``action`` is not a non-blank str.
        """
        return self.predictor(namespace).causal_chains(action)

    def workflow_graph(self, *, namespace: str | None = None) -> Any:
        """The learned transition graph (a ``networkx.DiGraph`` over normalised actions)."""
        return self.predictor(namespace).graph

    def _count_sessions(self, namespace: str, sessions: Sequence[SessionRecord]) -> None:
        """Add newly stored sessions to the namespace's n-gram counts, if kept.

        While mining is disabled the counts are dropped instead of grown (they are recounted
        from the store when mining next runs). Call with ``_predictor_lock`` held.
        """
        if not self.mining.enabled:
            self._miners.pop(namespace, None)
        elif (miner := self._miners.get(namespace)) is not None:
            miner.add(sessions)

    def _miner(self, namespace: str) -> tuple[PatternCounter, bool]:
        """The namespace's n-gram counts, and whether they were just recounted from the store.

        They are recounted on first use, when the mining lengths changed, and when the store
        holds another number of the namespace's sessions than were counted (another process
        learned into the same file, or sessions were loaded or cleared): learning a session in
        this process adds its n-grams instead (see :meth:`learn_sessions`). Call with
        ``_predictor_lock`` held.
        """
        cfg = self.mining
        miner = self._miners.get(namespace)
        if (miner is not None and (miner.min_length, miner.max_length) == (cfg.min_length, cfg.max_length)
                and miner.sessions == self.store.count_sessions(namespace=namespace)):
            return miner, False
        self._miners.pop(namespace, None)
        miner = PatternCounter(min_length=cfg.min_length, max_length=cfg.max_length, track_changes=True)
        miner.add(self.store.iter_sessions(namespace=namespace))
        miner.changed.clear()
        self._miners[namespace] = miner
        return miner, True

    def mine_workflows(self, *, namespace: str | None = None) -> list[Procedure]:
        """Promote recurring successful sequences into stored workflows; demote failing ones.

        A candidate becomes a ``workflow`` procedure tagged ``learned`` with id ``wf-<key>`` in
        the ``default`` namespace and ``wf-<namespace>-<key>`` in others (ids are unique in the
        store, and two namespaces may learn the same workflow), or a further qualified one when
        another procedure already holds that id (see :meth:`_workflow_id`), version 1, note
        ``promoted``.
        When its success rate later falls below ``mining.min_success_rate`` a new version with
        ``metadata["status"] = "demoted"`` is written (note ``demoted``), so the change is
        visible in :meth:`versions`; if it recovers it is promoted again.

        Returns:
            The workflows whose record changed.
        """
        from procmem.learning.mining import workflow_key

        ns = self._ns(namespace)
        cfg = self.mining

        def key_of(wf: Procedure) -> str:
            templates = wf.metadata.get("templates")
            ok = isinstance(templates, list) and templates and all(isinstance(t, str) for t in templates)
            return workflow_key(templates) if ok else wf.id

        # Minings run one at a time, so a later one's counts are never overwritten by an earlier one's.
        with self._mining_lock:
            # This namespace's learned workflows by the key of their steps (whatever their id).
            existing = {key_of(p): p for p in self.store.list(namespace=ns, kinds=["workflow"], tags=["learned"])}
            room = cfg.max_workflows - sum(1 for p in existing.values() if p.metadata.get("status") == "promoted")
            with self._predictor_lock:
                # Only patterns of sessions learned since the last mining can change status, so
                # only they are examined; every pattern is when the counts were just rebuilt, when
                # the thresholds or the learned workflows changed otherwise than by the last mining
                # (a workflow deleted, forgotten or edited), or when the last mining left a
                # promotable pattern out for want of room and room has come free.
                miner, rebuilt = self._miner(ns)
                basis = (cfg.min_support, cfg.min_success_rate, {p.id: p.version for p in existing.values()})
                full = (rebuilt or basis != self._mining_basis.get(ns)
                        or (room > 0 and self._mining_deferred.get(ns, False)))
                among = None if full else set(miner.changed)
                miner.changed.clear()
                candidates = miner.candidates(min_support=cfg.min_support, min_success_rate=0.0, among=among)
            try:
                changed = self._apply_mined(ns, candidates, existing, room, full)
                basis[2].update((p.id, p.version) for p in changed)
                self._mining_basis[ns] = basis
                return changed
            except BaseException:
                with self._predictor_lock:  # the changes taken above were not applied: recount next time
                    self._miners.pop(ns, None)
                raise

    def _workflow_id(self, namespace: str, key: str) -> str | None:
        """A free id for a newly mined workflow: ``wf-<key>`` (default namespace) or ``wf-<namespace>-<key>``.

        Ids are unique in the store and anyone may choose one, so an id already held by another
        procedure (another namespace's, or one of this namespace's own that is not this learned
        workflow) is never taken over: the namespace-qualified id is tried next, then one
        qualified by a hash of the namespace; None when all three are held (the candidate is
        skipped, and mining goes on).
        """
        digest = hashlib.sha256(namespace.encode("utf-8")).hexdigest()[:8]
        ids = list(dict.fromkeys([f"wf-{key}" if namespace == "default" else f"wf-{namespace}-{key}",
                                  f"wf-{namespace}-{key}", f"wf-{digest}-{key}"]))
        held = self.store.get_many(ids)
        return next((i for i in ids if i not in held), None)

    def _apply_mined(self, ns: str, candidates: Sequence[Any], existing: dict[str, Procedure], room: int,
                     full: bool) -> list[Procedure]:
        """Write :meth:`mine_workflows`' promotions, demotions and updated counters; return the changed."""
        from procmem.learning.mining import outcome_summary

        cfg = self.mining
        deferred = False if full else self._mining_deferred.get(ns, False)
        writes: dict[str, list[Procedure]] = {}
        for cand in candidates:
            rate = cand.promotion_rate()  # sessions without an outcome count as successes here
            ok = rate >= cfg.min_success_rate
            old = existing.get(cand.key)
            if old is None and (not ok or room <= 0):
                deferred = deferred or ok
                continue
            wid = old.id if old is not None else self._workflow_id(ns, cand.key)
            if wid is None:
                continue  # every id it could have is another procedure's (see _workflow_id)
            status = "promoted" if ok else "demoted"
            meta = {
                "learned": True,
                "status": status,
                "templates": list(cand.steps),
                "support": cand.support,
                "successes": cand.successes,
                "failures": cand.failures,
                "unknown": cand.unknown,
                "success_rate": None if cand.success_rate is None else round(cand.success_rate, 4),
            }
            if old is not None and old.metadata.get("status") == status:
                if any(old.metadata.get(k) != meta[k] for k in ("support", "successes", "failures", "unknown")):
                    self.store.update_counters(wid, metadata={**old.metadata, **meta})
                continue
            if old is None:
                room -= 1
            name = " → ".join(cand.steps[:4]) + (" …" if len(cand.steps) > 4 else "")
            data = {
                "id": wid,
                "kind": "workflow",
                "name": f"workflow: {name}",
                "namespace": ns,
                "description": (
                    f"Learned workflow of {len(cand.steps)} steps, seen in {cand.support} sessions,"
                    f" {outcome_summary(cand.successes, cand.failures, cand.unknown)}: "
                    + "; ".join(cand.examples)
                ),
                "steps": [{"action": a} for a in cand.examples],
                "tags": ["learned"],
                "metadata": meta,
                "importance": 0.6 if ok else 0.2,
            }
            if old is not None:
                data["stats"] = old.stats.model_dump()
            note = "promoted" if ok else f"demoted: success rate {rate:.2f} < {cfg.min_success_rate:.2f}"
            writes.setdefault(note, []).append(self._build(data))
        changed: list[Procedure] = []
        for note, procs in writes.items():
            changed.extend(self.store.put(procs, self._embed(procs), note=note))
        self._mining_deferred[ns] = deferred
        return changed

    # ------------------------------------------------------------------ save / load
    def save(self, path: str | os.PathLike[str], *, namespace: str | None = None) -> int:
        """Export a namespace's procedures (with versions) and sessions to a JSON Lines file.

        The format (``procmem-export`` v1): a header line
        ``{"format": "procmem-export", "version": 1, "namespace": ..., "exported_at": ...}``,
        then one line per record: ``{"type": "procedure", "versions": [...]}`` (every kept
        version, oldest first) or ``{"type": "session", "session": {...}}``. It is written to a
        temporary file and renamed, so a crash never leaves half a file. Never pickle.

        Returns:
            Number of records written.

        Raises:
            ValidationError: ``path`` names the store's own database (its SQLite file with its
                ``-wal``, ``-shm`` or ``-journal`` companions, or a file in a Chroma directory):
                replacing it would destroy the store.
        """
        ns = self._ns(namespace)
        target = Path(path)
        self._refuse_store_file(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        n = 0
        fd, tmp = tempfile.mkstemp(prefix=".procmem-", suffix=".jsonl", dir=str(target.parent))
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(
                    json.dumps(
                        {
                            "format": EXPORT_FORMAT,
                            "version": EXPORT_VERSION,
                            "namespace": ns,
                            "exported_at": datetime.now(timezone.utc).isoformat(),
                        }
                    )
                    + "\n"
                )
                for p in self.store.list(namespace=ns):
                    versions = [json.loads(v.model_dump_json()) for v in self.store.versions(p.id)]
                    fh.write(
                        json.dumps(
                            {"type": "procedure", "current": json.loads(p.model_dump_json()), "versions": versions}
                        )
                        + "\n"
                    )
                    n += 1
                for s in self.store.iter_sessions(namespace=ns):
                    fh.write(json.dumps({"type": "session", "session": json.loads(s.model_dump_json())}) + "\n")
                    n += 1
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return n

    def _refuse_store_file(self, target: Path) -> None:
        """Raise ``ValidationError`` if writing ``target`` would replace the store's own files."""
        store_path = getattr(self.store, "path", None)
        if not store_path or store_path == ":memory:":
            return
        base, resolved = Path(store_path).resolve(), target.resolve()
        if base.is_dir():
            hit = resolved.is_relative_to(base)
        else:
            hit = resolved in {base, *(Path(f"{base}{suffix}") for suffix in ("-wal", "-shm", "-journal"))}
        if hit:
            raise ValidationError(
                f"cannot save to {str(target)!r}: it is the store's own database ({store_path!r}); "
                "choose another file", field="path", value=str(target),
            )

    def load(self, path: str | os.PathLike[str], *, namespace: str | None = None) -> dict[str, int]:
        """Import a file written by :meth:`save` into a namespace (default: this memory's).

        The whole file is validated before anything is written; procedures already stored
        are updated as new versions, sessions already stored are skipped.

        Returns:
            ``{"procedures": n, "sessions": m}`` imported.

        Raises:
            ImportFormatError: The file is not a procmem export, or a line is malformed (names
                the line); nothing is imported.
        """
        ns = self._ns(namespace)
        procs: list[Procedure] = []
        sessions: list[SessionRecord] = []
        header_seen = False
        try:
            fh = open(path, encoding="utf-8")
        except OSError as exc:
            raise ImportFormatError(f"cannot read {str(path)!r}: {exc}", field="path", value=str(path)) from exc
        with fh:
            try:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ImportFormatError(
                            f"{path}:{lineno}: not JSON ({exc.msg})", field="line", value=lineno
                        ) from None
                    except RecursionError:
                        raise ImportFormatError(
                            f"{path}:{lineno}: JSON nested too deeply", field="line", value=lineno
                        ) from None
                    if not header_seen:
                        self._check_export_header(obj, path)
                        header_seen = True
                        continue
                    kind = obj.get("type") if isinstance(obj, dict) else None
                    try:
                        if kind == "procedure":
                            procs.append(Procedure.model_validate({**obj["current"], "namespace": ns}))
                        elif kind == "session":
                            sessions.append(SessionRecord.model_validate({**obj["session"], "namespace": ns}))
                        else:
                            raise ImportFormatError(
                                f"{path}:{lineno}: unknown record type {kind!r}", field="type", value=kind
                            )
                    except (pydantic.ValidationError, KeyError, TypeError, RecursionError) as exc:
                        raise ImportFormatError(
                            f"{path}:{lineno}: invalid {kind} record: {exc}", field="line", value=lineno
                        ) from None
            except UnicodeDecodeError as exc:
                raise ImportFormatError(f"{path}: not UTF-8 text ({exc})", field="encoding", value=None) from None
        if not header_seen:
            raise ImportFormatError(f"{path}: empty file, not a procmem export", field="format", value=None)
        # Ids are global: a procedure of another namespace is copied under a namespaced id, never moved.
        taken = self.store.get_many([p.id for p in procs])
        procs = [
            p.model_copy(update={"id": f"{ns}:{p.id}"}) if p.id in taken and taken[p.id].namespace != ns else p
            for p in procs
        ]
        if procs:
            self.store.put(procs, self._embed(procs), note="loaded")
        added = self.learn_sessions(sessions) if sessions else 0
        return {"procedures": len(procs), "sessions": added}

    @staticmethod
    def _check_export_header(obj: Any, path: Any) -> None:
        if not isinstance(obj, dict) or obj.get("format") != EXPORT_FORMAT:
            raise ImportFormatError(
                f"{path}: not a procmem export (no {EXPORT_FORMAT!r} header on the first line)",
                field="format",
                value=obj.get("format") if isinstance(obj, dict) else None,
            )
        version = obj.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ImportFormatError(
                f"{path}: export header version must be an int >= 1, got {version!r}", field="version", value=version
            )
        if version > EXPORT_VERSION:
            raise ImportFormatError(
                f"{path}: export version {version} is newer than this procmem reads ({EXPORT_VERSION})",
                field="version",
                value=version,
            )

    # ------------------------------------------------------------------ async twins
    async def _run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args, **kwargs))

    async def aadd(self, procedure: Procedure | Mapping[str, Any]) -> Procedure:
        """Async twin of :meth:`add`."""
        return await self._run(self.add, procedure)

    async def aget(self, procedure_id: str) -> Procedure:
        """Async twin of :meth:`get`."""
        return await self._run(self.get, procedure_id)

    async def aupdate(self, procedure_id: str, **changes: Any) -> Procedure:
        """Async twin of :meth:`update`."""
        return await self._run(self.update, procedure_id, **changes)

    async def adelete(self, procedure_id: str) -> bool:
        """Async twin of :meth:`delete`."""
        return await self._run(self.delete, procedure_id)

    async def aprocedure_id_for(self, name: str, *, namespace: str | None = None) -> str:
        """Async twin of :meth:`procedure_id_for`."""
        return await self._run(self.procedure_id_for, name, namespace=namespace)

    async def asearch(self, query: str, **kwargs: Any) -> list[SearchResult]:
        """Async twin of :meth:`search`."""
        return await self._run(self.search, query, **kwargs)

    async def akeyword_search(self, query: str, **kwargs: Any) -> list[SearchResult]:
        """Async twin of :meth:`keyword_search`."""
        return await self._run(self.keyword_search, query, **kwargs)

    async def arecord_usage(self, query: str, procedure_id: str, success: bool = True, **kwargs: Any) -> None:
        """Async twin of :meth:`record_usage`."""
        return await self._run(self.record_usage, query, procedure_id, success, **kwargs)

    async def arecord_usages(self, items: Iterable[Any], **kwargs: Any) -> int:
        """Async twin of :meth:`record_usages`."""
        return await self._run(self.record_usages, list(items), **kwargs)

    async def arecord_outcome(self, procedure_id: str, success: bool, **kwargs: Any) -> Procedure:
        """Async twin of :meth:`record_outcome`."""
        return await self._run(self.record_outcome, procedure_id, success, **kwargs)

    async def arollback(self, procedure_id: str, version: int) -> Procedure:
        """Async twin of :meth:`rollback`."""
        return await self._run(self.rollback, procedure_id, version)

    async def astore_procedure(self, procedure_id: str, steps: Sequence[Any], *args: Any, **kwargs: Any) -> str:
        """Async twin of :meth:`store_procedure`."""
        return await self._run(self.store_procedure, procedure_id, steps, *args, **kwargs)

    async def aexecute_procedure(self, procedure_id: str, *args: Any, **kwargs: Any) -> ExecutionResult:
        """Async twin of :meth:`execute_procedure`."""
        return await self._run(self.execute_procedure, procedure_id, *args, **kwargs)

    async def arecord_skill(
        self, name: str, pattern: str, triggers: Sequence[str] | None = None, **kwargs: Any
    ) -> Procedure:
        """Async twin of :meth:`record_skill`."""
        return await self._run(self.record_skill, name, pattern, triggers, **kwargs)

    async def afind_applicable_skills(self, situation: str, limit: int = 5, **kwargs: Any) -> list[SearchResult]:
        """Async twin of :meth:`find_applicable_skills`."""
        return await self._run(self.find_applicable_skills, situation, limit, **kwargs)

    async def arecord_skill_usage(self, skill_id: str, success: bool = True, **kwargs: Any) -> Procedure:
        """Async twin of :meth:`record_skill_usage`."""
        return await self._run(self.record_skill_usage, skill_id, success, **kwargs)

    async def alearn_session(
        self, actions: Sequence[str], outcome: Any = None, task: Any = None, **kwargs: Any
    ) -> SessionRecord:
        """Async twin of :meth:`learn_session`."""
        return await self._run(self.learn_session, actions, outcome, task, **kwargs)

    async def apredict_next_action(
        self, context: Sequence[str] | None = None, task: str | None = None, top_k: int = 3, **kwargs: Any
    ) -> list[Prediction]:
        """Async twin of :meth:`predict_next_action`."""
        return await self._run(self.predict_next_action, context, task, top_k, **kwargs)

    async def aconsolidate(self, **kwargs: Any) -> ConsolidationReport:
        """Async twin of :meth:`consolidate`."""
        return await self._run(self.consolidate, **kwargs)

    async def aadd_many(self, procedures: Iterable[Procedure | Mapping[str, Any]], *,
                        note: str = "") -> list[Procedure]:
        """Async twin of :meth:`add_many`."""
        return await self._run(self.add_many, list(procedures), note=note)

    async def alist(self, **kwargs: Any) -> list[Procedure]:
        """Async twin of :meth:`list`."""
        return await self._run(self.list, **kwargs)

    async def aversions(self, procedure_id: str) -> list[ProcedureVersion]:
        """Async twin of :meth:`versions`."""
        return await self._run(self.versions, procedure_id)

    async def aclear(self, namespace: str | None = None) -> int:
        """Async twin of :meth:`clear`."""
        return await self._run(self.clear, namespace)

    async def aforget(self, *, min_importance: float, namespace: str | None = None,
                      dry_run: bool = False) -> list[str]:
        """Async twin of :meth:`forget`."""
        return await self._run(self.forget, min_importance=min_importance, namespace=namespace, dry_run=dry_run)

    async def astats(self, *, namespace: str | None = None) -> dict[str, Any]:
        """Async twin of :meth:`stats`."""
        return await self._run(self.stats, namespace=namespace)

    async def aretrieve_procedure(self, procedure_id: str) -> Procedure:
        """Async twin of :meth:`retrieve_procedure`."""
        return await self._run(self.retrieve_procedure, procedure_id)

    async def alist_procedures(self, category: str | None = None) -> list[Procedure]:
        """Async twin of :meth:`list_procedures`."""
        return await self._run(self.list_procedures, category)

    async def arollback_procedure(self, procedure_id: str, version_index: int = 0) -> Procedure:
        """Async twin of :meth:`rollback_procedure`."""
        return await self._run(self.rollback_procedure, procedure_id, version_index)

    async def alearn_from_outcome(self, procedure_id: str, outcome_data: Mapping[str, Any],
                                  update_procedure: bool = True) -> Procedure:
        """Async twin of :meth:`learn_from_outcome`."""
        return await self._run(self.learn_from_outcome, procedure_id, outcome_data, update_procedure)

    async def adelete_procedure(self, procedure_id: str) -> bool:
        """Async twin of :meth:`delete_procedure`."""
        return await self._run(self.delete_procedure, procedure_id)

    async def alearn_sessions(self, sessions: Iterable[SessionRecord], *,
                              progress: Callable[[int], None] | None = None, batch_size: int = 500) -> int:
        """Async twin of :meth:`learn_sessions`; ``progress`` is called from the worker thread."""
        return await self._run(self.learn_sessions, sessions, progress=progress, batch_size=batch_size)

    async def alearn_workflow(self, session_commands: Sequence[Any], session_outcome: Any = None) -> str:
        """Async twin of :meth:`learn_workflow`."""
        return await self._run(self.learn_workflow, session_commands, session_outcome)

    async def aobserve(self, action: str, *, session_id: str, task: str | None = None,
                       namespace: str | None = None) -> None:
        """Async twin of :meth:`observe`."""
        return await self._run(self.observe, action, session_id=session_id, task=task, namespace=namespace)

    async def aend_session(self, session_id: str, outcome: Any = None, *,
                           namespace: str | None = None) -> SessionRecord | None:
        """Async twin of :meth:`end_session`."""
        return await self._run(self.end_session, session_id, outcome, namespace=namespace)

    async def amine_workflows(self, *, namespace: str | None = None) -> list[Procedure]:
        """Async twin of :meth:`mine_workflows`."""
        return await self._run(self.mine_workflows, namespace=namespace)

    async def apatterns(self, *, min_count: int = 2, limit: int | None = 50,
                        namespace: str | None = None) -> list[dict[str, Any]]:
        """Async twin of :meth:`patterns`."""
        return await self._run(self.patterns, min_count=min_count, limit=limit, namespace=namespace)

    async def acausal_chains(self, action: str, *, namespace: str | None = None) -> dict[str, Any]:
        """Async twin of :meth:`causal_chains`."""
        return await self._run(self.causal_chains, action, namespace=namespace)

    async def aworkflow_graph(self, *, namespace: str | None = None) -> Any:
        """Async twin of :meth:`workflow_graph`."""
        return await self._run(self.workflow_graph, namespace=namespace)

    async def arefresh(self, namespace: str | None = None) -> None:
        """Async twin of :meth:`refresh`."""
        return await self._run(self.refresh, namespace)

    async def asave(self, path: str | os.PathLike[str], *, namespace: str | None = None) -> int:
        """Async twin of :meth:`save`."""
        return await self._run(self.save, path, namespace=namespace)

    async def aload(self, path: str | os.PathLike[str], *, namespace: str | None = None) -> dict[str, int]:
        """Async twin of :meth:`load`."""
        return await self._run(self.load, path, namespace=namespace)

    async def aclose(self) -> None:
        """Async twin of :meth:`close`."""
        return await self._run(self.close)
