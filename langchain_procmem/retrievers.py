"""``ProceduralMemoryRetriever``: procedures as LangChain documents, for RAG chains and agents."""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from procmem import ProceduralMemory, SearchResult

__all__ = ["ProceduralMemoryRetriever", "result_to_document"]

_SEARCH_OPTIONS = ("k", "kinds", "tags", "namespace", "min_score")


def result_to_document(result: SearchResult) -> Document:
    """Turn a search result into a document: the rendered procedure plus its record.

    Args:
        result: One result of :meth:`procmem.ProceduralMemory.search`.

    Returns:
        A document whose ``page_content`` is ``Procedure.render()`` and whose metadata holds
        ``id``, ``name``, ``kind``, ``version``, ``namespace``, ``tags``, ``score`` (fused
        relevance, higher is better), ``success_rate`` (smoothed, in [0, 1]) and ``reason``.
    """
    proc = result.procedure
    return Document(
        id=proc.id,
        page_content=proc.render(),
        metadata={
            "id": proc.id,
            "name": proc.name,
            "kind": proc.kind.value,
            "version": proc.version,
            "namespace": proc.namespace,
            "tags": list(proc.tags),
            "score": float(result.score),
            "success_rate": float(proc.success_rate),
            "reason": result.reason,
        },
    )


class ProceduralMemoryRetriever(BaseRetriever):
    """Retrieve procedures (skills, workflows, tools, personas) from a procmem memory.

    Each document's ``page_content`` is the procedure rendered for a prompt (name, kind,
    description, numbered steps, success rate); metadata carries ``id``, ``kind``, ``version``,
    ``score``, ``success_rate`` and ``reason``. Search options given to ``invoke`` (``k``,
    ``kinds``, ``tags``, ``namespace``, ``min_score``) override the retriever's for that call.

    Setup:
        Install the LangChain extra::

            pip install 'procmem[langchain]'

    Args:
        memory: The procedural memory to search.
        k: How many procedures to return.
        kinds: Only these kinds (``skill``, ``workflow``, ``tool``, ``persona``).
        procedure_tags: Only procedures carrying all these tags (``tags`` is taken: on a
            LangChain retriever it labels callbacks). Per call, pass ``tags=`` to ``invoke``.
        namespace: Whose memory (default: the memory's own namespace).
        min_score: Drop results scoring below this fused score.

    Example:
        >>> from procmem import ProceduralMemory
        >>> from procmem.embeddings import HashingEmbedder
        >>> from langchain_procmem import ProceduralMemoryRetriever
        >>> memory = ProceduralMemory(path=":memory:", embedder=HashingEmbedder())
        >>> _ = memory.store_procedure(
        ...     "deploy", ["git pull", "make build", "make deploy"], description="Deploy the web app"
        ... )
        >>> retriever = ProceduralMemoryRetriever(memory=memory, k=1)
        >>> docs = retriever.invoke("how do I deploy the web app?")
        >>> docs[0].metadata["id"], docs[0].metadata["kind"]
        ('deploy', 'workflow')
        >>> print(docs[0].page_content.splitlines()[0])
        deploy (workflow, v1)
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    memory: ProceduralMemory = Field(repr=False, exclude=True)
    k: int = Field(default=4, ge=1)
    kinds: list[str] | None = None
    procedure_tags: list[str] | None = None
    namespace: str | None = None
    min_score: float | None = None

    def _options(self, overrides: dict[str, Any]) -> dict[str, Any]:
        unknown = set(overrides) - set(_SEARCH_OPTIONS)
        if unknown:
            raise TypeError(f"unknown search option(s) {sorted(unknown)}; expected some of {list(_SEARCH_OPTIONS)}")
        opts: dict[str, Any] = {
            "k": self.k,
            "kinds": self.kinds,
            "tags": self.procedure_tags,
            "namespace": self.namespace,
            "min_score": self.min_score,
        }
        opts.update(overrides)
        return opts

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        results = self.memory.search(query, **self._options(kwargs))
        return [result_to_document(r) for r in results]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        results = await self.memory.asearch(query, **self._options(kwargs))
        return [result_to_document(r) for r in results]
