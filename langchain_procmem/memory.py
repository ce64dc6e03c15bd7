"""``ProceduralMemoryBuffer``: procmem as a ``langchain_classic`` memory for legacy chains.

``load_memory_variables`` puts the procedures relevant to the chain's input into the prompt
(under ``"procedures"`` by default); ``save_context`` learns the run: the tool calls of an
``AgentExecutor`` run with ``return_intermediate_steps=True`` (or a list of actions under
``actions_key``) become a session, which trains the next-action predictor and workflow mining.
Legacy chains call ``save_context`` only after a run completed, so its outcome defaults to
success; pass ``judge`` to decide otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain_classic.base_memory import BaseMemory
from langchain_core.documents import Document
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict, Field

from langchain_procmem.middleware import format_tool_call
from langchain_procmem.retrievers import result_to_document
from procmem import ProceduralMemory

__all__ = ["ProceduralMemoryBuffer"]


def _action_of(step: Any, max_arg_chars: int) -> str | None:
    """The action of one intermediate step: an ``(AgentAction, observation)`` pair or an action."""
    action = step[0] if isinstance(step, (tuple, list)) and step else step
    tool = getattr(action, "tool", None)
    if tool is None:
        return action if isinstance(action, str) and action.strip() else None
    tool_input = getattr(action, "tool_input", None)
    if isinstance(tool_input, Mapping):
        return format_tool_call(tool, tool_input, max_arg_chars=max_arg_chars)
    if tool_input in (None, ""):
        return f"{tool}()"
    return format_tool_call(tool, {"input": tool_input}, max_arg_chars=max_arg_chars)


class ProceduralMemoryBuffer(BaseMemory):
    """Procedural memory for legacy LangChain chains (``langchain_classic``).

    Setup:
        Install the LangChain extra::

            pip install 'procmem[langchain]'

    Args:
        memory: The procedural memory to read and learn into.
        memory_key: The prompt variable the procedures are put under.
        input_key: The chain input holding the request; default: the only input that is
            not a memory variable.
        k: How many procedures to load.
        kinds: Only these kinds (``skill``, ``workflow``, ``tool``, ``persona``).
        procedure_tags: Only procedures carrying all these tags.
        namespace: Whose memory (default: the memory's own); ``clear()`` empties it.
        min_score: Drop procedures whose fused score is below this.
        return_docs: Load a list of documents instead of one text.
        intermediate_steps_key: Output key of an ``AgentExecutor``'s intermediate steps.
        actions_key: Output key of a plain list of actions, for chains that log their own.
        judge: ``judge(inputs, outputs) -> bool | None`` deciding the outcome; default success.
        max_arg_chars: Argument values longer than this are cut in learned actions.

    Example:
        >>> from procmem import ProceduralMemory
        >>> from procmem.embeddings import HashingEmbedder
        >>> from langchain_procmem import ProceduralMemoryBuffer
        >>> memory = ProceduralMemory(path=":memory:", embedder=HashingEmbedder())
        >>> _ = memory.store_procedure("deploy", ["git pull", "make deploy"], description="Deploy the app")
        >>> buffer = ProceduralMemoryBuffer(memory=memory, k=1)
        >>> buffer.memory_variables
        ['procedures']
        >>> print(buffer.load_memory_variables({"input": "deploy the app"})["procedures"].splitlines()[0])
        deploy (workflow, v1)
        >>> buffer.save_context({"input": "ship it"}, {"output": "done", "actions": ["git pull", "make deploy"]})
        >>> memory.stats()["sessions"]
        1
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    memory: ProceduralMemory = Field(repr=False, exclude=True)
    memory_key: str = "procedures"
    input_key: str | None = None
    k: int = Field(default=3, ge=1)
    kinds: list[str] | None = None
    procedure_tags: list[str] | None = None
    namespace: str | None = None
    min_score: float | None = None
    return_docs: bool = False
    intermediate_steps_key: str = "intermediate_steps"
    actions_key: str = "actions"
    judge: Callable[[dict[str, Any], dict[str, Any]], bool | None] | None = None
    max_arg_chars: int = 80

    @property
    def memory_variables(self) -> list[str]:
        """The one prompt variable this memory fills (``memory_key``)."""
        return [self.memory_key]

    def _query(self, inputs: Mapping[str, Any]) -> str:
        if self.input_key is not None:
            return str(inputs.get(self.input_key) or "")
        keys = [k for k in inputs if k not in (self.memory_key, "stop")]
        if len(keys) == 1:
            return str(inputs[keys[0]] or "")
        for key in ("input", "question", "query", "task"):
            if key in inputs:
                return str(inputs[key] or "")
        raise ValueError(f"cannot tell which input is the request among {sorted(keys)}; set input_key")

    def _ns(self) -> str:
        return self.namespace or self.memory.namespace

    def _loaded(self, docs: list[Document]) -> dict[str, Any]:
        if self.return_docs:
            return {self.memory_key: docs}
        return {self.memory_key: "\n\n".join(d.page_content for d in docs)}

    def _search_options(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "kinds": self.kinds,
            "tags": self.procedure_tags,
            "namespace": self._ns(),
            "min_score": self.min_score,
        }

    def load_memory_variables(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Return the procedures relevant to the chain's request, rendered for a prompt."""
        query = self._query(inputs)
        results = self.memory.search(query, **self._search_options()) if query.strip() else []
        return self._loaded([result_to_document(r) for r in results])

    async def aload_memory_variables(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Async twin of :meth:`load_memory_variables`."""
        query = self._query(inputs)
        results = await self.memory.asearch(query, **self._search_options()) if query.strip() else []
        return self._loaded([result_to_document(r) for r in results])

    def _session(self, inputs: dict[str, Any], outputs: dict[str, Any]) -> tuple[list[str], Any, str | None] | None:
        raw: Sequence[Any] = outputs.get(self.intermediate_steps_key) or outputs.get(self.actions_key) or []
        if isinstance(raw, str):
            raw = [raw]
        actions = [a for a in (_action_of(step, self.max_arg_chars) for step in raw) if a]
        if not actions:
            return None
        outcome = True if self.judge is None else self.judge(inputs, outputs)
        task = self._query(inputs) or None
        return actions, outcome, task

    def save_context(self, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
        """Learn the run's actions (if the outputs carry any) as a session."""
        session = self._session(inputs, outputs)
        if session is not None:
            self.memory.learn_session(*session, namespace=self._ns())

    async def asave_context(self, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
        """Async twin of :meth:`save_context`."""
        session = self._session(inputs, outputs)
        if session is not None:
            await self.memory.alearn_session(*session, namespace=self._ns())

    def clear(self) -> None:
        """Delete every procedure, usage and session of this memory's namespace."""
        self.memory.clear(self._ns())

    async def aclear(self) -> None:
        """Async twin of :meth:`clear`."""
        await run_in_executor(None, self.memory.clear, self._ns())
