"""``ProceduralMemoryMiddleware``: procedural memory for ``langchain.agents.create_agent``.

The middleware closes the loop between an agent and its procedural memory:

1. ``before_agent``: starts the run's record (its id, the user's request as the task).
2. ``before_model``: searches the memory with the latest user message and asks the next-action
   predictor what usually follows the tool calls made so far; the rendered text is kept in the
   agent state (``procmem_context``).
3. ``wrap_model_call``: appends that text to the system message of each model call.
4. ``wrap_tool_call``: times each tool call and appends a :class:`ToolCallRecord` (tool,
   arguments, success or error, duration in seconds) to the run's trajectory in the agent
   state (``procmem_trajectory``), through the ``Command`` the tool node applies.
5. ``after_agent``: learns the trajectory as a session (actions ``tool(arg=value, ...)`` in
   call order) with the outcome given by ``judge``; workflow mining then promotes recurring
   successful sequences into stored workflows, which step 2 shows on the next similar request.
   Procedures the run followed get a usage (so retrieval learns the request) and an outcome.

Every hook has its async twin. Per-run data lives in the agent state, so one middleware
instance serves concurrent runs and threads safely, and a checkpointed run can resume.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from langchain.agents.middleware.types import (
    AgentMiddleware,
    AgentState,
    ModelRequest,
    ModelResponse,
    OmitFromInput,
    PrivateStateAttr,
    ResponseT,
)
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables.config import run_in_executor
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.runtime import Runtime
from langgraph.types import Command
from langgraph.typing import ContextT
from typing_extensions import NotRequired, TypedDict

from procmem import Prediction, ProceduralMemory, Procedure, SearchResult
from procmem.errors import ConfigurationError, ProcMemError

__all__ = [
    "ProceduralMemoryMiddleware",
    "ProceduralMemoryState",
    "ToolCallRecord",
    "format_tool_call",
]

logger = logging.getLogger(__name__)

_RESET = "__procmem_reset__"


class ToolCallRecord(TypedDict):
    """One tool call of a run, as recorded by :class:`ProceduralMemoryMiddleware`.

    Attributes:
        tool: The tool's name.
        args: The arguments the model passed (JSON-safe).
        tool_call_id: The id of the model's tool call.
        success: False when the tool reported an error (a ``ToolMessage`` with status error).
        error: The error text of a failed call (shortened), else None.
        duration: Wall time of the call, in seconds.
        started_at: When the call started, ISO 8601 UTC.
    """

    tool: str
    args: dict[str, Any]
    tool_call_id: str | None
    success: bool
    error: str | None
    duration: float
    started_at: str


def _add_records(left: list[dict[str, Any]] | None, right: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Reducer of ``procmem_trajectory``: append, where a reset marker clears what came before."""
    out = list(left or [])
    for item in right or []:
        if isinstance(item, Mapping) and item.get(_RESET):
            out = []
        else:
            out.append(item)
    return out


class ProceduralMemoryState(AgentState[ResponseT]):
    """Agent state with the run's procedural-memory records.

    Attributes:
        procmem_trajectory: The run's tool calls in order (:class:`ToolCallRecord`); part of
            the agent's output, so ``agent.invoke(...)["procmem_trajectory"]`` shows them.
        procmem_run: The run's id (also the learned session's id), task and start time.
        procmem_context: What the model was last shown: the query, the ids of the procedures
            shown and the rendered text.
    """

    procmem_trajectory: NotRequired[Annotated[list[ToolCallRecord], OmitFromInput, _add_records]]
    procmem_run: NotRequired[Annotated[dict[str, Any], PrivateStateAttr]]
    procmem_context: NotRequired[Annotated[dict[str, Any], PrivateStateAttr]]


def format_tool_call(name: str, args: Mapping[str, Any] | None = None, *, max_arg_chars: int = 80) -> str:
    """Write a tool call as an action: ``tool_name(arg='value', n=2)``, arguments in call order.

    Args:
        name: The tool's name.
        args: Its arguments.
        max_arg_chars: Longer argument values are cut to this many characters (plus ``...``).

    Returns:
        The action text; procmem's normaliser turns the quoted values and numbers into
        placeholders, so calls differing only in values are one step of a workflow.
    """
    parts = []
    for key, value in (args or {}).items():
        if isinstance(value, str) and len(value) > max_arg_chars:
            value = value[: max(0, max_arg_chars - 3)] + "..."
        text = repr(value)
        if not isinstance(value, str) and len(text) > max_arg_chars:
            text = text[: max(0, max_arg_chars - 3)] + "..."
        parts.append(f"{key}={text}")
    return f"{name}({', '.join(parts)})"


_STEP_TOOL = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(?:\(.*\))?\s*$", re.DOTALL)


def _step_tool(action: str) -> str | None:
    """The tool a step calls, when it is written as ``tool(...)`` or a bare tool name."""
    m = _STEP_TOOL.match(action)
    return m.group(1) if m else None


def _follows(procedure: Procedure, tool_names: Sequence[str]) -> bool:
    """Whether the run called the procedure's tool steps in order (a subsequence of its calls)."""
    steps = [_step_tool(s.action) for s in procedure.steps]
    if not steps or any(s is None for s in steps):
        return False
    it = iter(tool_names)
    return all(any(name == step for name in it) for step in steps)


def _message_text(message: AnyMessage) -> str:
    return str(message.text).strip()


def _latest_user_text(messages: Sequence[AnyMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return _message_text(message)
    return ""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _append_system(system: SystemMessage | None, text: str) -> SystemMessage:
    if system is None:
        return SystemMessage(content=text)
    if isinstance(system.content, str):
        content: Any = f"{system.content}\n\n{text}" if system.content else text
    else:
        content = [*system.content, {"type": "text", "text": text}]
    return SystemMessage(content=content, additional_kwargs=system.additional_kwargs, id=system.id)


def _default_judge(state: Mapping[str, Any], trajectory: Sequence[ToolCallRecord]) -> bool:
    """A run succeeded when no tool call failed."""
    return all(r["success"] for r in trajectory)


Judge = Callable[[Mapping[str, Any], list[ToolCallRecord]], "bool | None"]


class ProceduralMemoryMiddleware(AgentMiddleware[ProceduralMemoryState[ResponseT], ContextT, ResponseT]):
    """Give a ``create_agent`` agent procedural memory: show what worked, learn what it does.

    Before each model call the system message gains the procedures relevant to the latest user
    message (``Procedure.render()``) and the predicted next tool calls with their confidence.
    Each tool call is recorded (tool, arguments, success or error, duration in seconds); when
    the agent finishes, the run's calls are learned as a session whose outcome ``judge``
    decides. With workflow mining on (the memory's ``MiningConfig``), a sequence of calls
    repeated in enough successful runs becomes a stored workflow that later runs are shown.

    Setup:
        Install the LangChain extra::

            pip install 'procmem[langchain]'

    Args:
        memory: The procedural memory to read and learn into.
        k: How many procedures to show.
        kinds: Only show these kinds (``skill``, ``workflow``, ``tool``, ``persona``).
        tags: Only show procedures carrying all these tags.
        min_score: Do not show procedures whose fused score is below this.
        namespace: Whose memory: a str, or a callable ``(runtime) -> str | None`` choosing it
            per run (from ``runtime.context``, e.g. a user id); None means the memory's own.
        predict: Show predicted next tool calls.
        top_k_predictions: How many predictions to show.
        min_confidence: Do not show predictions below this confidence, in [0, 1].
        learn: Learn each run's tool calls as a session when the agent finishes.
        action_format: How a tool call becomes an action of the session: ``"call"`` for
            ``tool(arg='value', ...)``, ``"name"`` for the tool name only, or a callable
            taking the :class:`ToolCallRecord`.
        max_arg_chars: Argument values longer than this are cut in ``"call"`` actions.
        judge: ``judge(state, trajectory) -> bool | None`` deciding the run's outcome (None:
            unknown); default: success when no tool call failed. Called in a worker thread
            by the async hooks.
        record_usage: Which procedures count as having served the request: ``"followed"``
            (those whose tool steps the run called in order, including learned workflows),
            ``"shown"`` (all shown ones) or ``"off"``. They get a usage (so retrieval ranks
            them for similar requests).
        record_outcomes: With ``record_usage="followed"``, also record the run's outcome and
            total tool time (seconds) on the procedures it followed (their success rate).
        header: Title of the procedures section of the system message.
        raise_errors: Raise procmem errors from the hooks instead of logging them and letting
            the agent carry on without memory.

    Example:
        >>> from langchain.agents import create_agent
        >>> from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
        >>> from langchain_core.messages import AIMessage
        >>> from procmem import ProceduralMemory
        >>> from procmem.embeddings import HashingEmbedder
        >>> from langchain_procmem import ProceduralMemoryMiddleware
        >>> memory = ProceduralMemory(path=":memory:", embedder=HashingEmbedder())
        >>> _ = memory.store_procedure(
        ...     "refund", ["look_up_order(order_id)", "issue_refund(order_id)", "email_customer(order_id)"],
        ...     description="Refund a customer's order",
        ... )
        >>> middleware = ProceduralMemoryMiddleware(memory=memory, k=1)
        >>> print(middleware.build_prompt("please refund order 42").splitlines()[2])
        [1] refund (workflow, v1) [id: refund]
        >>> model = GenericFakeChatModel(messages=iter([AIMessage("Refunded.")]))
        >>> agent = create_agent(model, tools=[], middleware=[middleware])
        >>> agent.invoke({"messages": [("user", "please refund order 42")]})["messages"][-1].content
        'Refunded.'
    """

    state_schema = ProceduralMemoryState  # type: ignore[assignment]

    def __init__(
        self,
        memory: ProceduralMemory,
        *,
        k: int = 3,
        kinds: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        min_score: float | None = None,
        namespace: str | Callable[[Runtime[Any]], str | None] | None = None,
        predict: bool = True,
        top_k_predictions: int = 3,
        min_confidence: float = 0.0,
        learn: bool = True,
        action_format: Literal["call", "name"] | Callable[[ToolCallRecord], str] = "call",
        max_arg_chars: int = 80,
        judge: Judge | None = None,
        record_usage: Literal["followed", "shown", "off"] = "followed",
        record_outcomes: bool = True,
        header: str = "## Procedural memory",
        raise_errors: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(memory, ProceduralMemory):
            raise ConfigurationError(f"memory must be a procmem.ProceduralMemory, got {type(memory).__name__}")
        if not isinstance(k, int) or isinstance(k, bool) or k < 0:
            raise ConfigurationError(f"k must be an int >= 0, got {k!r}")
        if not isinstance(top_k_predictions, int) or isinstance(top_k_predictions, bool) or top_k_predictions < 1:
            raise ConfigurationError(f"top_k_predictions must be an int >= 1, got {top_k_predictions!r}")
        if not 0.0 <= float(min_confidence) <= 1.0:
            raise ConfigurationError(f"min_confidence must be in [0, 1], got {min_confidence!r}")
        if action_format not in ("call", "name") and not callable(action_format):
            raise ConfigurationError(f"action_format must be 'call', 'name' or a callable, got {action_format!r}")
        if record_usage not in ("followed", "shown", "off"):
            raise ConfigurationError(f"record_usage must be 'followed', 'shown' or 'off', got {record_usage!r}")
        if judge is not None and not callable(judge):
            raise ConfigurationError(f"judge must be callable, got {judge!r}")
        self.memory = memory
        self.k = k
        self.kinds = list(kinds) if kinds is not None else None
        self.tags = list(tags) if tags is not None else None
        self.min_score = min_score
        self.namespace = namespace
        self.predict = predict
        self.top_k_predictions = top_k_predictions
        self.min_confidence = float(min_confidence)
        self.learn = learn
        self.action_format = action_format
        self.max_arg_chars = max_arg_chars
        self.judge: Judge = judge or _default_judge
        self.record_usage = record_usage
        self.record_outcomes = record_outcomes
        self.header = header
        self.raise_errors = raise_errors
        self.tools = []

    # ------------------------------------------------------------------ helpers
    def _namespace(self, runtime: Runtime[Any] | None) -> str:
        ns = self.namespace(runtime) if callable(self.namespace) else self.namespace
        return ns or self.memory.namespace

    def action(self, record: ToolCallRecord) -> str:
        """The action a recorded tool call becomes in the learned session (see ``action_format``)."""
        if callable(self.action_format):
            return self.action_format(record)
        if self.action_format == "name":
            return record["tool"]
        return format_tool_call(record["tool"], record["args"], max_arg_chars=self.max_arg_chars)

    def _failed(self, what: str, exc: ProcMemError) -> None:
        if self.raise_errors:
            raise exc
        logger.warning("procmem middleware: %s failed, carrying on without it: %s", what, exc)

    @staticmethod
    def _procedures_text(results: Sequence[SearchResult]) -> str:
        if not results:
            return ""
        lines = ["Procedures that worked for similar requests before; follow one when it fits:"]
        for i, r in enumerate(results, 1):
            first, _, rest = r.procedure.render().partition("\n")
            lines.append(f"[{i}] {first} [id: {r.procedure.id}]" + (f"\n{rest}" if rest else ""))
        return "\n".join(lines)

    @staticmethod
    def _predictions_text(predictions: Sequence[Prediction]) -> str:
        if not predictions:
            return ""
        lines = ["Likely next tool calls (learned from past runs; confidence in [0, 1]):"]
        for i, p in enumerate(predictions, 1):
            lines.append(f"{i}. {p.action} (confidence {p.confidence:.2f})" + (f": {p.reason}" if p.reason else ""))
        return "\n".join(lines)

    def _compose(self, procedures_text: str, predictions_text: str) -> str:
        body = "\n\n".join(t for t in (procedures_text, predictions_text) if t)
        return f"{self.header}\n{body}" if body else ""

    def _search(self, query: str, namespace: str) -> list[SearchResult]:
        if not query or self.k == 0:
            return []
        return self.memory.search(
            query, k=self.k, kinds=self.kinds, tags=self.tags, namespace=namespace, min_score=self.min_score
        )

    def _predict(self, actions: Sequence[str], task: str | None, namespace: str) -> list[Prediction]:
        if not self.predict:
            return []
        preds = self.memory.predict_next_action(
            list(actions), task or None, self.top_k_predictions, namespace=namespace
        )
        return [p for p in preds if p.confidence >= self.min_confidence]

    def build_prompt(
        self, query: str, actions: Sequence[str] = (), *, task: str | None = None, namespace: str | None = None
    ) -> str:
        """Render what the model is shown for a request: relevant procedures and predictions.

        Args:
            query: The latest user message.
            actions: The run's actions so far, oldest first.
            task: The run's task (default: ``query``).
            namespace: Whose memory (default: the middleware's).

        Returns:
            The text appended to the system message ("" when there is nothing to show).
        """
        ns = namespace or self._namespace(None)
        return self._compose(
            self._procedures_text(self._search(query, ns)),
            self._predictions_text(self._predict(actions, task or query, ns)),
        )

    def _trajectory(self, state: Mapping[str, Any]) -> list[ToolCallRecord]:
        """The run's records, in the order the model asked for the calls."""
        records = [r for r in state.get("procmem_trajectory") or [] if not r.get(_RESET)]
        order: dict[str, int] = {}
        for message in state.get("messages") or []:
            if isinstance(message, AIMessage):
                for call in message.tool_calls:
                    if call.get("id") and call["id"] not in order:
                        order[call["id"]] = len(order)
        indexed = list(enumerate(records))
        indexed.sort(key=lambda ir: (order.get(ir[1].get("tool_call_id") or "", len(order) + ir[0]), ir[0]))
        return [r for _, r in indexed]

    def _record(self, request: ToolCallRequest, result: Any, started: float, started_at: str) -> Any:
        duration = max(0.0, time.perf_counter() - started)
        call = request.tool_call
        failed = isinstance(result, ToolMessage) and result.status == "error"
        record: ToolCallRecord = {
            "tool": call["name"],
            "args": _json_safe(call.get("args") or {}),
            "tool_call_id": call.get("id"),
            "success": not failed,
            "error": _message_text(result)[:500] if failed else None,
            "duration": duration,
            "started_at": started_at,
        }
        update = {"procmem_trajectory": [record]}
        if isinstance(result, ToolMessage):
            return Command(update={"messages": [result], **update})
        if isinstance(result, Command) and result.graph is None:
            if result.update is None:
                return replace(result, update=update)
            if isinstance(result.update, dict):
                merged = dict(result.update)
                merged["procmem_trajectory"] = [*merged.get("procmem_trajectory", []), record]
                return replace(result, update=merged)
        if isinstance(result, list):
            return [*result, Command(update=update)]
        return result  # a Command to the parent graph: leave it untouched

    # ------------------------------------------------------------------ hooks
    def before_agent(self, state: ProceduralMemoryState[ResponseT], runtime: Runtime[ContextT]) -> dict[str, Any]:
        """Start the run's record: a new id, the user's request as the task, an empty trajectory."""
        messages = state.get("messages") or []
        run = {"id": uuid.uuid4().hex, "task": _latest_user_text(messages), "started_at": _now()}
        return {"procmem_run": run, "procmem_trajectory": [{_RESET: True}], "procmem_context": {}}

    async def abefore_agent(
        self, state: ProceduralMemoryState[ResponseT], runtime: Runtime[ContextT]
    ) -> dict[str, Any]:
        """Async twin of :meth:`before_agent` (no I/O)."""
        return self.before_agent(state, runtime)

    def before_model(
        self, state: ProceduralMemoryState[ResponseT], runtime: Runtime[ContextT]
    ) -> dict[str, Any] | None:
        """Search the memory for the latest user message and predict the next tool calls."""
        messages = state.get("messages") or []
        query = _latest_user_text(messages)
        run = state.get("procmem_run") or {}
        task = run.get("task") or query
        ns = self._namespace(runtime)
        previous = state.get("procmem_context") or {}
        results: list[SearchResult] = []
        shown: list[str] = list(previous.get("shown", []))
        procedures_text = previous.get("procedures", "")
        if previous.get("query") != query:
            try:
                results = self._search(query, ns)
            except ProcMemError as exc:
                self._failed("search", exc)
            shown = [r.procedure.id for r in results]
            procedures_text = self._procedures_text(results)
        predictions: list[Prediction] = []
        try:
            predictions = self._predict([self.action(r) for r in self._trajectory(state)], task, ns)
        except ProcMemError as exc:
            self._failed("next-action prediction", exc)
        text = self._compose(procedures_text, self._predictions_text(predictions))
        context = {"query": query, "shown": shown, "procedures": procedures_text, "text": text}
        return None if context == previous else {"procmem_context": context}

    async def abefore_model(
        self, state: ProceduralMemoryState[ResponseT], runtime: Runtime[ContextT]
    ) -> dict[str, Any] | None:
        """Async twin of :meth:`before_model`: the memory calls run in a worker thread."""
        return await run_in_executor(None, self.before_model, state, runtime)

    def _prompted(self, request: ModelRequest[ContextT]) -> ModelRequest[ContextT]:
        text = (request.state.get("procmem_context") or {}).get("text", "")
        if not text:
            return request
        return request.override(system_message=_append_system(request.system_message, text))

    def wrap_model_call(
        self,
        request: ModelRequest[ContextT],
        handler: Callable[[ModelRequest[ContextT]], ModelResponse[ResponseT]],
    ) -> ModelResponse[ResponseT]:
        """Append the procedures and predictions to the system message, then call the model."""
        return handler(self._prompted(request))

    async def awrap_model_call(
        self,
        request: ModelRequest[ContextT],
        handler: Callable[[ModelRequest[ContextT]], Awaitable[ModelResponse[ResponseT]]],
    ) -> ModelResponse[ResponseT]:
        """Async twin of :meth:`wrap_model_call`."""
        return await handler(self._prompted(request))

    def wrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], ToolMessage | Command[Any]],
    ) -> ToolMessage | Command[Any]:
        """Run the tool, timing it, and append its record to the run's trajectory.

        An exception raised by the tool propagates unrecorded (the run fails, or an outer
        middleware turns it into a message); a ``ToolMessage`` with status error is recorded
        as a failed call.
        """
        started_at, started = _now(), time.perf_counter()
        result = handler(request)
        return self._record(request, result, started, started_at)

    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolMessage | Command[Any]]],
    ) -> ToolMessage | Command[Any]:
        """Async twin of :meth:`wrap_tool_call`."""
        started_at, started = _now(), time.perf_counter()
        result = await handler(request)
        return self._record(request, result, started, started_at)

    def after_agent(self, state: ProceduralMemoryState[ResponseT], runtime: Runtime[ContextT]) -> None:
        """Learn the run's tool calls as a session, and credit the procedures it followed."""
        if not self.learn:
            return None
        trajectory = self._trajectory(state)
        if not trajectory:
            return None
        run = state.get("procmem_run") or {}
        task = run.get("task") or _latest_user_text(state.get("messages") or []) or None
        ns = self._namespace(runtime)
        verdict = self.judge(state, trajectory)
        if inspect.isawaitable(verdict):
            raise ConfigurationError("judge must be a plain function returning bool or None, not a coroutine")
        outcome = None if verdict is None else bool(verdict)
        try:
            self.memory.learn_session(
                [self.action(r) for r in trajectory],
                outcome,
                task,
                session_id=run.get("id"),
                timestamps=[r["started_at"] for r in trajectory],
                namespace=ns,
            )
        except ProcMemError as exc:
            self._failed("learning the session", exc)
            return None
        if outcome is None or self.record_usage == "off" or not task:
            return None
        try:
            self._credit(state, trajectory, task, outcome, ns, run.get("id"))
        except ProcMemError as exc:
            self._failed("recording usage", exc)
        return None

    def _credit(
        self,
        state: Mapping[str, Any],
        trajectory: Sequence[ToolCallRecord],
        task: str,
        success: bool,
        namespace: str,
        session_id: str | None,
    ) -> None:
        shown = list((state.get("procmem_context") or {}).get("shown", []))
        if self.record_usage == "shown":
            credited = shown
        else:
            tool_names = [r["tool"] for r in trajectory]
            candidates = {p.id: p for p in self.memory.store.get_many(shown).values()} if shown else {}
            for wf in self.memory.list(kind="workflow", tags=["learned"], namespace=namespace):
                candidates.setdefault(wf.id, wf)
            credited = [pid for pid, p in candidates.items() if _follows(p, tool_names)]
        duration = sum(r["duration"] for r in trajectory)
        # One call: the task is embedded once however many procedures it credits.
        self.memory.record_usages([(task, pid, success) for pid in credited], namespace=namespace)
        for pid in credited:
            if self.record_outcomes and self.record_usage == "followed":
                self.memory.record_outcome(
                    pid,
                    success,
                    duration=duration,
                    details={"source": "langchain_procmem", "session_id": session_id, "task": task},
                )

    async def aafter_agent(self, state: ProceduralMemoryState[ResponseT], runtime: Runtime[ContextT]) -> None:
        """Async twin of :meth:`after_agent`: learning runs in a worker thread."""
        await run_in_executor(None, self.after_agent, state, runtime)
