"""Tools that let an agent use its procedural memory: search, save, record outcomes, predict.

:func:`create_procmem_tools` (or :class:`ProceduralMemoryToolkit`) returns four ready tools:

==================== ================================================================
``search_procedures`` find procedures for a request (rendered, with ids and scores)
``save_procedure``    store a procedure by name (the same name again: a new version), or revise one by id
``record_outcome``    report whether following a procedure worked (updates its stats)
``predict_next_action`` rank the likely next actions after the recent ones
==================== ================================================================

Each answers with readable text for the model and a structured artifact
(``response_format="content_and_artifact"``). Recoverable mistakes (an unknown id, an invalid
field) raise :class:`~langchain_core.tools.ToolException` with the message, and the tools are
built with ``handle_tool_error=True`` so the model sees it and can try again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun
from langchain_core.runnables.config import run_in_executor
from langchain_core.tools import BaseTool, BaseToolkit, ToolException
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from procmem import Prediction, ProceduralMemory, Procedure, SearchResult
from procmem.errors import ConfigurationError, NotFoundError
from procmem.errors import ValidationError as ProcMemValidationError

__all__ = [
    "PredictNextActionInput",
    "PredictNextActionTool",
    "ProceduralMemoryToolkit",
    "RecordOutcomeInput",
    "RecordOutcomeTool",
    "SaveProcedureInput",
    "SaveProcedureTool",
    "SearchProceduresInput",
    "SearchProceduresTool",
    "TOOL_NAMES",
    "create_procmem_tools",
]

ProcedureKindName = Literal["skill", "workflow", "tool", "persona"]


def _validation_message(exc: ValidationError | Any) -> str:
    """Say which argument is wrong and why, so the model can fix the call."""
    try:
        problems = [
            f"{'.'.join(str(p) for p in err.get('loc', ())) or 'input'}: {err.get('msg')}" for err in exc.errors()
        ]
    except Exception:  # pydantic v1 errors or anything else: fall back to the message
        return f"Invalid arguments: {exc}"
    return "Invalid arguments: " + "; ".join(problems) + ". Fix them and call the tool again."


@contextmanager
def _recoverable() -> Iterator[None]:
    """Turn procmem's unknown-id and invalid-field errors into ``ToolException``."""
    try:
        yield
    except NotFoundError as exc:
        msg = exc.args[0] if exc.args else str(exc)
        raise ToolException(f"{msg}. Use search_procedures to find valid ids.") from exc
    except ProcMemValidationError as exc:
        raise ToolException(str(exc)) from exc


class _ProcMemTool(BaseTool):
    """Shared fields of the procmem tools."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    memory: ProceduralMemory = Field(repr=False, exclude=True)
    """The procedural memory the tool reads and writes."""
    namespace: str | None = None
    """Whose memory (an agent or user id); default: the memory's own namespace."""
    response_format: Literal["content", "content_and_artifact"] = "content_and_artifact"
    handle_tool_error: bool | str | Callable[[ToolException], Any] | None = True
    handle_validation_error: bool | str | Callable[[Any], str] | None = _validation_message

    @property
    def _ns(self) -> str:
        return self.namespace or self.memory.namespace

    def _owned(self, procedure_id: str) -> Procedure:
        """Return the procedure if it exists in this tool's namespace, else raise ``ToolException``."""
        with _recoverable():
            proc = self.memory.get(procedure_id, touch=False)
        if proc.namespace != self._ns:
            raise ToolException(
                f"unknown procedure id {procedure_id!r} in namespace {self._ns!r}. "
                "Use search_procedures to find valid ids."
            )
        return proc


# ---------------------------------------------------------------------- search_procedures
class SearchProceduresInput(BaseModel):
    """Arguments of ``search_procedures``."""

    query: str = Field(min_length=1, description="The task or situation, in plain words.")
    k: int = Field(default=3, ge=1, le=20, description="How many procedures to return.")
    kinds: list[ProcedureKindName] | None = Field(
        default=None, description="Only these kinds: skill, workflow, tool, persona."
    )
    tags: list[str] | None = Field(default=None, description="Only procedures carrying all these tags.")


def _format_results(query: str, results: Sequence[SearchResult]) -> tuple[str, list[dict[str, Any]]]:
    if not results:
        return f"No stored procedure matches {query!r}.", []
    blocks = [f"{len(results)} procedure(s) for {query!r}, best first:"]
    artifact = []
    for i, r in enumerate(results, 1):
        p = r.procedure
        head = f"[{i}] id={p.id} score={r.score:.3f}" + (f" ({r.reason})" if r.reason else "")
        blocks.append(head + "\n" + p.render())
        artifact.append(
            {
                "id": p.id,
                "name": p.name,
                "kind": p.kind.value,
                "version": p.version,
                "score": float(r.score),
                "success_rate": float(p.success_rate),
                "reason": r.reason,
            }
        )
    return "\n\n".join(blocks), artifact


class SearchProceduresTool(_ProcMemTool):
    """Find stored procedures (skills, workflows, tools, personas) for a task.

    Setup:
        Install the LangChain extra::

            pip install 'procmem[langchain]'

    Args:
        memory: The procedural memory to search.
        namespace: Whose memory (default: the memory's own).
        min_score: Drop results scoring below this fused score.

    Example:
        >>> from procmem import ProceduralMemory
        >>> from procmem.embeddings import HashingEmbedder
        >>> from langchain_procmem import SearchProceduresTool
        >>> memory = ProceduralMemory(path=":memory:", embedder=HashingEmbedder())
        >>> _ = memory.store_procedure("deploy", ["git pull", "make deploy"], description="Deploy the app")
        >>> tool = SearchProceduresTool(memory=memory)
        >>> print(tool.invoke({"query": "deploy the app", "k": 1}).splitlines()[2].split()[1])
        id=deploy
    """

    name: str = "search_procedures"
    description: str = (
        "Search procedural memory for procedures (skills, workflows, tools, personas) that fit a task. "
        "Returns each procedure's steps, id and score; follow the best one if it fits."
    )
    args_schema: type[BaseModel] = SearchProceduresInput
    min_score: float | None = None

    def _run(
        self,
        query: str,
        k: int = 3,
        kinds: list[str] | None = None,
        tags: list[str] | None = None,
        run_manager: CallbackManagerForToolRun | None = None,
    ) -> tuple[str, list[dict[str, Any]]]:
        with _recoverable():
            results = self.memory.search(
                query, k=k, kinds=kinds, tags=tags, namespace=self._ns, min_score=self.min_score
            )
        return _format_results(query, results)

    async def _arun(
        self,
        query: str,
        k: int = 3,
        kinds: list[str] | None = None,
        tags: list[str] | None = None,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
    ) -> tuple[str, list[dict[str, Any]]]:
        with _recoverable():
            results = await self.memory.asearch(
                query, k=k, kinds=kinds, tags=tags, namespace=self._ns, min_score=self.min_score
            )
        return _format_results(query, results)


# ---------------------------------------------------------------------- save_procedure
class SaveProcedureInput(BaseModel):
    """Arguments of ``save_procedure``."""

    name: str = Field(min_length=1, max_length=1024, description="Short name of the procedure.")
    steps: list[str] = Field(min_length=1, description="The steps in order, one action each.")
    description: str = Field(default="", description="What it achieves and when to use it.")
    kind: ProcedureKindName = Field(default="workflow", description="skill, workflow, tool or persona.")
    triggers: list[str] = Field(default_factory=list, description="Situations that should bring it to mind.")
    tags: list[str] = Field(default_factory=list, description="Labels for filtering.")
    procedure_id: str | None = Field(
        default=None,
        description="Id of a stored procedure to revise (saved as a new version); omit to save by name.",
    )


def _saved(proc: Procedure, created: bool) -> tuple[str, dict[str, Any]]:
    verb = "Saved new" if created else "Revised"
    text = f"{verb} procedure {proc.name!r} (id: {proc.id}, version {proc.version}, {len(proc.steps)} steps)."
    return text, {"id": proc.id, "name": proc.name, "kind": proc.kind.value, "version": proc.version}


class SaveProcedureTool(_ProcMemTool):
    """Save a procedure that worked, or revise one (each revision is a new, reversible version).

    Without ``procedure_id`` the procedure is saved by name, under the id
    :meth:`~procmem.ProceduralMemory.procedure_id_for` gives (a slug of the name): saving the same
    name again in the namespace, in any case or punctuation, revises that procedure instead of
    adding a duplicate. With ``procedure_id`` that procedure of the namespace is revised.

    Setup:
        Install the LangChain extra::

            pip install 'procmem[langchain]'

    Args:
        memory: The procedural memory to write to.
        namespace: Whose memory (default: the memory's own).

    Example:
        >>> from procmem import ProceduralMemory
        >>> from procmem.embeddings import HashingEmbedder
        >>> from langchain_procmem import SaveProcedureTool
        >>> memory = ProceduralMemory(path=":memory:", embedder=HashingEmbedder())
        >>> tool = SaveProcedureTool(memory=memory)
        >>> steps = ["gzip old logs", "delete logs older than 30 days"]
        >>> print(tool.invoke({"name": "rotate logs", "steps": steps}))
        Saved new procedure 'rotate logs' (id: rotate-logs, version 1, 2 steps).
        >>> print(tool.invoke({"name": "Rotate logs!", "steps": ["gzip old logs", "delete logs older than 7 days"]}))
        Revised procedure 'Rotate logs!' (id: rotate-logs, version 2, 2 steps).
    """

    name: str = "save_procedure"
    description: str = (
        "Save a procedure (named steps) to procedural memory so it can be reused, e.g. after a task "
        "succeeded. Saving the same name again revises it (a new version); pass procedure_id to revise "
        "a stored procedure by id instead."
    )
    args_schema: type[BaseModel] = SaveProcedureInput

    def _save(
        self,
        name: str,
        steps: list[str],
        description: str,
        kind: str,
        triggers: list[str],
        tags: list[str],
        procedure_id: str | None,
    ) -> tuple[str, dict[str, Any]]:
        with _recoverable():
            if procedure_id is None:
                procedure_id = self.memory.procedure_id_for(name, namespace=self._ns)
                if not self.memory.store.get_many([procedure_id]):
                    data = {
                        "id": procedure_id,
                        "name": name,
                        "steps": steps,
                        "description": description,
                        "kind": kind,
                        "triggers": triggers,
                        "tags": tags,
                        "namespace": self._ns,
                    }
                    return _saved(self.memory.add(data), True)
            else:
                self._owned(procedure_id)
            changes: dict[str, Any] = {"name": name, "steps": steps, "kind": kind}
            if description:
                changes["description"] = description
            if triggers:
                changes["triggers"] = triggers
            if tags:
                changes["tags"] = tags
            return _saved(self.memory.update(procedure_id, note="revised by agent", **changes), False)

    def _run(
        self,
        name: str,
        steps: list[str],
        description: str = "",
        kind: str = "workflow",
        triggers: list[str] | None = None,
        tags: list[str] | None = None,
        procedure_id: str | None = None,
        run_manager: CallbackManagerForToolRun | None = None,
    ) -> tuple[str, dict[str, Any]]:
        return self._save(name, steps, description, kind, list(triggers or []), list(tags or []), procedure_id)

    async def _arun(
        self,
        name: str,
        steps: list[str],
        description: str = "",
        kind: str = "workflow",
        triggers: list[str] | None = None,
        tags: list[str] | None = None,
        procedure_id: str | None = None,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
    ) -> tuple[str, dict[str, Any]]:
        # Read-check-write in one worker thread: the facade's async twins run there too.
        return await run_in_executor(
            None, self._save, name, steps, description, kind, list(triggers or []), list(tags or []), procedure_id
        )


# ---------------------------------------------------------------------- record_outcome
class RecordOutcomeInput(BaseModel):
    """Arguments of ``record_outcome``."""

    procedure_id: str = Field(min_length=1, description="Id of the procedure that was followed.")
    success: bool = Field(description="Whether following it achieved the goal.")
    duration: float | None = Field(default=None, ge=0.0, description="How long it took, in seconds.")
    error: str | None = Field(default=None, description="What went wrong, if it failed.")
    notes: str | None = Field(default=None, description="Anything worth remembering about this use.")


def _recorded(proc: Procedure, success: bool) -> tuple[str, dict[str, Any]]:
    st = proc.stats
    text = (
        f"Recorded {'success' if success else 'failure'} for {proc.name!r} (id: {proc.id}): "
        f"{st.successes}/{st.executions} successful so far."
    )
    return text, {
        "id": proc.id,
        "successes": st.successes,
        "failures": st.failures,
        "success_rate": float(proc.success_rate),
    }


class RecordOutcomeTool(_ProcMemTool):
    """Report whether following a procedure worked; its success statistics are updated.

    Setup:
        Install the LangChain extra::

            pip install 'procmem[langchain]'

    Args:
        memory: The procedural memory to write to.
        namespace: Whose memory (default: the memory's own).

    Example:
        >>> from procmem import ProceduralMemory
        >>> from procmem.embeddings import HashingEmbedder
        >>> from langchain_procmem import RecordOutcomeTool
        >>> memory = ProceduralMemory(path=":memory:", embedder=HashingEmbedder())
        >>> _ = memory.store_procedure("deploy", ["git pull", "make deploy"])
        >>> tool = RecordOutcomeTool(memory=memory)
        >>> tool.invoke({"procedure_id": "deploy", "success": True, "duration": 12.5})
        "Recorded success for 'deploy' (id: deploy): 1/1 successful so far."
        >>> tool.invoke({"procedure_id": "nope", "success": True})[:32]
        "no procedure with id 'nope'. Use"
    """

    name: str = "record_outcome"
    description: str = (
        "Record whether following a stored procedure worked (by its id), with the duration in seconds "
        "and the error if it failed. This is how procedural memory learns which procedures work."
    )
    args_schema: type[BaseModel] = RecordOutcomeInput

    def _record(
        self, procedure_id: str, success: bool, duration: float | None, error: str | None, notes: str | None
    ) -> tuple[str, dict[str, Any]]:
        self._owned(procedure_id)
        details = {"source": "tool"} | ({"notes": notes} if notes else {})
        with _recoverable():
            proc = self.memory.record_outcome(procedure_id, success, duration=duration, error=error, details=details)
        return _recorded(proc, success)

    def _run(
        self,
        procedure_id: str,
        success: bool,
        duration: float | None = None,
        error: str | None = None,
        notes: str | None = None,
        run_manager: CallbackManagerForToolRun | None = None,
    ) -> tuple[str, dict[str, Any]]:
        return self._record(procedure_id, success, duration, error, notes)

    async def _arun(
        self,
        procedure_id: str,
        success: bool,
        duration: float | None = None,
        error: str | None = None,
        notes: str | None = None,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
    ) -> tuple[str, dict[str, Any]]:
        return await run_in_executor(None, self._record, procedure_id, success, duration, error, notes)


# ---------------------------------------------------------------------- predict_next_action
class PredictNextActionInput(BaseModel):
    """Arguments of ``predict_next_action``."""

    recent_actions: list[str] = Field(
        default_factory=list, description="The latest actions or tool calls, oldest first (may be empty)."
    )
    task: str | None = Field(default=None, description="The task being worked on, in plain words.")
    top_k: int = Field(default=3, ge=1, le=10, description="How many predictions.")


def _format_predictions(preds: Sequence[Prediction]) -> tuple[str, list[dict[str, Any]]]:
    if not preds:
        return "No prediction: nothing similar has been learned yet.", []
    lines = ["Likely next actions, best first:"]
    for i, p in enumerate(preds, 1):
        line = f"{i}. {p.action} (confidence {p.confidence:.2f})"
        if p.reason:
            line += f": {p.reason}"
        lines.append(line)
    return "\n".join(lines), [p.model_dump(mode="json") for p in preds]


class PredictNextActionTool(_ProcMemTool):
    """Predict the next actions from the recent ones, as learned from past sessions.

    Setup:
        Install the LangChain extra::

            pip install 'procmem[langchain]'

    Args:
        memory: The procedural memory whose learned sessions drive the prediction.
        namespace: Whose memory (default: the memory's own).

    Example:
        >>> from procmem import ProceduralMemory
        >>> from procmem.embeddings import HashingEmbedder
        >>> from langchain_procmem import PredictNextActionTool
        >>> memory = ProceduralMemory(path=":memory:", embedder=HashingEmbedder())
        >>> for _ in range(3):
        ...     _ = memory.learn_session(["git add .", "git commit", "git push"], "success")
        >>> tool = PredictNextActionTool(memory=memory)
        >>> print(tool.invoke({"recent_actions": ["git add .", "git commit"], "top_k": 1}).splitlines()[1][:13])
        1. git push (
    """

    name: str = "predict_next_action"
    description: str = (
        "Predict the most likely next actions given the recent ones (oldest first) and the task, "
        "from sessions learned before. Each prediction has a confidence in [0, 1]."
    )
    args_schema: type[BaseModel] = PredictNextActionInput

    def _run(
        self,
        recent_actions: list[str] | None = None,
        task: str | None = None,
        top_k: int = 3,
        run_manager: CallbackManagerForToolRun | None = None,
    ) -> tuple[str, list[dict[str, Any]]]:
        with _recoverable():
            preds = self.memory.predict_next_action(list(recent_actions or []), task, top_k, namespace=self._ns)
        return _format_predictions(preds)

    async def _arun(
        self,
        recent_actions: list[str] | None = None,
        task: str | None = None,
        top_k: int = 3,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
    ) -> tuple[str, list[dict[str, Any]]]:
        with _recoverable():
            preds = await self.memory.apredict_next_action(list(recent_actions or []), task, top_k, namespace=self._ns)
        return _format_predictions(preds)


# ---------------------------------------------------------------------- factory and toolkit
_TOOLS: dict[str, type[_ProcMemTool]] = {
    "search_procedures": SearchProceduresTool,
    "save_procedure": SaveProcedureTool,
    "record_outcome": RecordOutcomeTool,
    "predict_next_action": PredictNextActionTool,
}
TOOL_NAMES: tuple[str, ...] = tuple(_TOOLS)
"""Names of the tools :func:`create_procmem_tools` can build, in its order."""


def create_procmem_tools(
    memory: ProceduralMemory,
    *,
    include: Sequence[str] | None = None,
    namespace: str | None = None,
) -> list[BaseTool]:
    """Build the procedural-memory tools for an agent.

    Args:
        memory: The procedural memory the tools use.
        include: Names of the tools to build (see :data:`TOOL_NAMES`); default all four, in
            the order ``search_procedures``, ``save_procedure``, ``record_outcome``,
            ``predict_next_action``.
        namespace: Whose memory (an agent or user id); default the memory's own.

    Returns:
        The tools, in the order of ``include`` (or the default order).

    Raises:
        ConfigurationError: ``include`` names an unknown tool (the message lists the valid ones).
    """
    if isinstance(include, str):
        raise ConfigurationError(f"include must be a list of tool names, got the str {include!r}")
    names = list(TOOL_NAMES if include is None else include)
    unknown = [n for n in names if n not in _TOOLS]
    if unknown:
        raise ConfigurationError(f"unknown procmem tool name(s) {unknown}; choose from {list(TOOL_NAMES)}")
    return [_TOOLS[n](memory=memory, namespace=namespace) for n in dict.fromkeys(names)]


class ProceduralMemoryToolkit(BaseToolkit):
    """The procedural-memory tools as a LangChain toolkit.

    Setup:
        Install the LangChain extra::

            pip install 'procmem[langchain]'

    Args:
        memory: The procedural memory the tools use.
        include: Names of the tools to build; default all four.
        namespace: Whose memory; default the memory's own.

    Example:
        >>> from procmem import ProceduralMemory
        >>> from procmem.embeddings import HashingEmbedder
        >>> from langchain_procmem import ProceduralMemoryToolkit
        >>> memory = ProceduralMemory(path=":memory:", embedder=HashingEmbedder())
        >>> [t.name for t in ProceduralMemoryToolkit(memory=memory).get_tools()]
        ['search_procedures', 'save_procedure', 'record_outcome', 'predict_next_action']
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    memory: ProceduralMemory = Field(repr=False, exclude=True)
    include: list[str] | None = None
    namespace: str | None = None

    def get_tools(self) -> list[BaseTool]:
        """Return the tools (see :func:`create_procmem_tools`)."""
        return create_procmem_tools(self.memory, include=self.include, namespace=self.namespace)
