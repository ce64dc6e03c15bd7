"""A LlamaIndex retriever over procmem: procedures as scored text nodes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.callbacks import CallbackManager
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from procmem import ProceduralMemory
from procmem.errors import ConfigurationError
from procmem.types import SearchResult

__all__ = ["ProceduralMemoryRetriever"]

_METADATA_KEYS = ["id", "kind", "name", "version", "success_rate", "reason"]


class ProceduralMemoryRetriever(BaseRetriever):
    """Retrieve procedures for a query as ``NodeWithScore`` text nodes.

    Each node's text is ``Procedure.render()`` (name, kind, description, numbered steps,
    success rate); its metadata holds ``id``, ``kind``, ``name``, ``version``,
    ``success_rate`` (smoothed, in [0, 1]) and ``reason`` (why it matched); its score is
    procmem's fused hybrid score (dense + BM25 + past experience; higher is better, not a
    probability). ``_aretrieve`` is native async, so query engines and agents on the event loop
    do not block it. Metadata is kept out of the embedding text; of it the LLM sees only
    ``success_rate`` (the rendered text already names the kind and version).

    Setup:
        Install the adapter:

        .. code-block:: bash

            pip install 'procmem[llamaindex]'

    Args:
        memory: The procedural memory to search.
        k: Procedures per query (top-k).
        kinds: Only these kinds (skill, workflow, tool, persona).
        tags: Only procedures carrying all these tags.
        namespace: Whose procedures (default: the memory's namespace).
        min_score: Drop procedures scoring below this.
        callback_manager: LlamaIndex callback manager.
        verbose: Print retrieval progress.

    Example:
        >>> from procmem import ProceduralMemory
        >>> from procmem.embeddings import HashingEmbedder
        >>> from llamaindex_procmem import ProceduralMemoryRetriever
        >>> pm = ProceduralMemory(path=":memory:", embedder=HashingEmbedder())
        >>> _ = pm.store_procedure("deploy", ["git pull", "make build", "make deploy"],
        ...                        description="Deploy the web app")
        >>> retriever = ProceduralMemoryRetriever(memory=pm, k=1)
        >>> node = retriever.retrieve("how do I deploy the web app?")[0]
        >>> node.metadata["id"], node.metadata["kind"]
        ('deploy', 'workflow')
        >>> "1. git pull" in node.text
        True
    """

    def __init__(
        self,
        *,
        memory: ProceduralMemory,
        k: int = 4,
        kinds: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        namespace: str | None = None,
        min_score: float | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        if not isinstance(memory, ProceduralMemory):
            raise ConfigurationError(f"memory must be a ProceduralMemory, got {type(memory).__name__}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigurationError(f"k must be an int >= 1, got {k!r}")
        self.memory = memory
        self.k = k
        self.kinds = list(kinds) if kinds is not None else None
        self.tags = list(tags) if tags is not None else None
        self.namespace = namespace
        self.min_score = min_score
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    def _search_kwargs(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "kinds": self.kinds,
            "tags": self.tags,
            "namespace": self.namespace,
            "min_score": self.min_score,
        }

    @staticmethod
    def _to_node(result: SearchResult) -> NodeWithScore:
        proc = result.procedure
        node = TextNode(
            id_=proc.id,
            text=proc.render(),
            metadata={
                "id": proc.id,
                "kind": proc.kind.value,
                "name": proc.name,
                "version": proc.version,
                "success_rate": round(proc.success_rate, 4),
                "reason": result.reason,
            },
            excluded_embed_metadata_keys=list(_METADATA_KEYS),
            excluded_llm_metadata_keys=["id", "kind", "name", "version", "reason"],
        )
        return NodeWithScore(node=node, score=float(result.score))

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        """Search procmem for ``query_bundle.query_str``."""
        results = self.memory.search(query_bundle.query_str, **self._search_kwargs())
        return [self._to_node(r) for r in results]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        """Async twin of :meth:`_retrieve` (the search runs in a worker thread)."""
        results = await self.memory.asearch(query_bundle.query_str, **self._search_kwargs())
        return [self._to_node(r) for r in results]
