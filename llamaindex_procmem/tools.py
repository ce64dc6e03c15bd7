"""LlamaIndex tools over procmem: search, save, record outcomes, predict the next action.

This module deliberately has no ``from __future__ import annotations``: ``FunctionTool`` builds
each tool's argument schema from the methods' runtime annotations, and the argument
descriptions from their ``name (type): description`` docstring lines.
"""

import asyncio

from llama_index.core.tools.tool_spec.base import BaseToolSpec

from procmem import ProceduralMemory
from procmem.errors import ConfigurationError, ProcedureNotFoundError
from procmem.types import Prediction, SearchResult

__all__ = ["ProceduralMemoryToolSpec"]


def _render_results(query: str, results: list[SearchResult]) -> str:
    if not results:
        return f"No stored procedure matches {query!r}."
    blocks = []
    for i, r in enumerate(results, 1):
        head = f"[{i}] id={r.procedure.id} score={r.score:.3f}"
        if r.reason:
            head += f" ({r.reason})"
        blocks.append(f"{head}\n{r.procedure.render()}")
    return "\n\n".join(blocks)


def _render_predictions(predictions: list[Prediction]) -> str:
    if not predictions:
        return "No prediction: nothing similar has been learned yet."
    lines = []
    for p in predictions:
        line = f"- {p.action} (confidence {p.confidence:.2f})"
        if p.reason:
            line += f": {p.reason}"
        lines.append(line)
    return "\n".join(lines)


class ProceduralMemoryToolSpec(BaseToolSpec):
    """Tools that let an agent search, save and grade procedures and predict its next action.

    ``to_tool_list()`` gives four ``FunctionTool`` s, each with a sync and a native async
    function: ``search_procedures``, ``save_procedure``, ``record_outcome`` and
    ``predict_next_action``. They return text for the model; invalid arguments raise procmem's
    errors (``ValidationError``, ``ProcedureNotFoundError``), which agents such as
    ``FunctionAgent`` hand back to the model as an error result so it can try again. Reads and
    writes go to the memory's namespace.

    Setup:
        Install the adapter:

        .. code-block:: bash

            pip install 'procmem[llamaindex]'

    Args:
        memory: The procedural memory the tools read and write.
        k: Default number of procedures ``search_procedures`` returns.

    Example:
        >>> from procmem import ProceduralMemory
        >>> from procmem.embeddings import HashingEmbedder
        >>> from llamaindex_procmem import ProceduralMemoryToolSpec
        >>> pm = ProceduralMemory(path=":memory:", embedder=HashingEmbedder())
        >>> tools = ProceduralMemoryToolSpec(memory=pm).to_tool_list()
        >>> [t.metadata.name for t in tools]
        ['search_procedures', 'save_procedure', 'record_outcome', 'predict_next_action']
        >>> save = tools[1]
        >>> print(save(name="Deploy web app", steps=["git pull", "make deploy"]).content)
        Saved procedure 'Deploy web app' (id=deploy-web-app, version 1).
        >>> print(save(name="deploy web app!", steps=["git pull", "make build", "make deploy"]).content)
        Saved procedure 'deploy web app!' (id=deploy-web-app, version 2).
    """

    spec_functions = [
        ("search_procedures", "asearch_procedures"),
        ("save_procedure", "asave_procedure"),
        ("record_outcome", "arecord_outcome"),
        ("predict_next_action", "apredict_next_action"),
    ]

    def __init__(self, memory: ProceduralMemory, *, k: int = 3) -> None:
        if not isinstance(memory, ProceduralMemory):
            raise ConfigurationError(f"memory must be a ProceduralMemory, got {type(memory).__name__}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigurationError(f"k must be an int >= 1, got {k!r}")
        self.memory = memory
        self.k = k

    # ------------------------------------------------------------------ search
    def search_procedures(self, query: str, k: int | None = None, kind: str | None = None) -> str:
        """Find stored procedures (skills, workflows) that fit a request, best first.

        Args:
            query (str): The request or situation to find a procedure for, in plain words.
            k (int | None): How many procedures to return.
            kind (str | None): Only procedures of this kind: skill, workflow, tool or persona.
        """
        results = self.memory.search(query, k=k or self.k, kinds=[kind] if kind else None)
        return _render_results(query, results)

    async def asearch_procedures(self, query: str, k: int | None = None, kind: str | None = None) -> str:
        """Async twin of :meth:`search_procedures`."""
        results = await self.memory.asearch(query, k=k or self.k, kinds=[kind] if kind else None)
        return _render_results(query, results)

    # ------------------------------------------------------------------ save
    def _saved(self, name: str, pid: str) -> str:
        proc = self.memory.get(pid, touch=False)
        return f"Saved procedure {name!r} (id={pid}, version {proc.version})."

    def save_procedure(
        self,
        name: str,
        steps: list[str],
        description: str = "",
        triggers: list[str] | None = None,
        kind: str = "workflow",
    ) -> str:
        """Save a procedure that worked, so it can be found and reused later; saving a name again versions it.

        Args:
            name (str): Short name, e.g. 'Deploy the web app'; saving the same name again makes a new version.
            steps (list[str]): The steps in order, one action or tool call per item.
            description (str): What the procedure achieves and when to use it.
            triggers (list[str] | None): Requests or situations that should bring it to mind.
            kind (str): skill, workflow, tool or persona (default workflow).
        """
        # The id policy (slug of the name, namespace-qualified if another namespace holds it) is the core's.
        pid = self.memory.store_procedure(
            self.memory.procedure_id_for(name), steps, name=name, description=description, kind=kind,
            triggers=triggers or (),
        )
        return self._saved(name, pid)

    async def asave_procedure(
        self,
        name: str,
        steps: list[str],
        description: str = "",
        triggers: list[str] | None = None,
        kind: str = "workflow",
    ) -> str:
        """Async twin of :meth:`save_procedure`."""
        return await asyncio.to_thread(self.save_procedure, name, steps, description, triggers, kind)

    # ------------------------------------------------------------------ outcomes
    def record_outcome(
        self,
        procedure_id: str,
        success: bool,
        query: str | None = None,
        error: str | None = None,
        duration: float | None = None,
    ) -> str:
        """Report whether following a stored procedure worked, so better procedures rank higher.

        Args:
            procedure_id (str): The id of the procedure followed, as shown by search_procedures.
            success (bool): True if following it achieved the goal, False if it failed.
            query (str | None): The request it was used for; similar requests will find it more readily.
            error (str | None): What went wrong, when it failed.
            duration (float | None): How long it took, in seconds.
        """
        # Ids are unique in the store: grade only this memory's namespace's procedures.
        if self.memory.get(procedure_id, touch=False).namespace != self.memory.namespace:
            raise ProcedureNotFoundError(
                f"no procedure with id {procedure_id!r} in namespace {self.memory.namespace!r}"
            )
        proc = self.memory.record_outcome(procedure_id, success, duration=duration, error=error)
        if query:
            self.memory.record_usage(query, procedure_id, success)
        return self._recorded(proc.id, success, proc.stats.successes, proc.stats.executions)

    async def arecord_outcome(
        self,
        procedure_id: str,
        success: bool,
        query: str | None = None,
        error: str | None = None,
        duration: float | None = None,
    ) -> str:
        """Async twin of :meth:`record_outcome`."""
        return await asyncio.to_thread(self.record_outcome, procedure_id, success, query, error, duration)

    @staticmethod
    def _recorded(pid: str, success: bool, successes: int, executions: int) -> str:
        return (
            f"Recorded {'success' if success else 'failure'} of {pid}: "
            f"{successes}/{executions} successful so far."
        )

    # ------------------------------------------------------------------ prediction
    def predict_next_action(self, recent_actions: list[str], task: str | None = None, top_k: int = 3) -> str:
        """Predict the most likely next actions from the actions taken so far, learned from past sessions.

        Args:
            recent_actions (list[str]): The actions or tool calls taken so far, oldest first (may be empty).
            task (str | None): The task being worked on, in plain words.
            top_k (int): How many predictions to return.
        """
        return _render_predictions(self.memory.predict_next_action(recent_actions, task, top_k))

    async def apredict_next_action(
        self, recent_actions: list[str], task: str | None = None, top_k: int = 3
    ) -> str:
        """Async twin of :meth:`predict_next_action`."""
        return _render_predictions(await self.memory.apredict_next_action(recent_actions, task, top_k))
