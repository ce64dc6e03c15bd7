"""A LlamaIndex memory block that recalls procedures and learns workflows from tool calls.

:class:`ProceduralMemoryBlock` plugs procmem into ``llama_index.core.memory.Memory``:

* **recall** (``_aget``): before each LLM call the block searches the procedures relevant to the
  latest user request and predicts the next tool calls from those already made in the current
  turn; both are rendered as text inside the memory's ``<memory>`` system block, within the
  block's token budget (``max_tokens``, and :meth:`ProceduralMemoryBlock.atruncate` when the
  ``Memory`` itself is over its limit).
* **learning** (``_aput``): the messages the ``Memory`` flushes out of short-term memory are
  cut into turns (one per user message); each turn's tool calls become a trajectory of actions
  (``tool_name(arg='value')`` or just ``tool_name``) with an outcome, learned with
  ``ProceduralMemory.alearn_session`` (which mines recurring successful trajectories into stored
  ``workflow`` procedures).

``Memory`` only flushes messages once the chat history exceeds
``token_limit * chat_history_token_ratio``, and it always keeps the latest complete turn; a turn
is therefore learned when a later user message pushes it out. To learn a run as soon as it ends,
call :meth:`ProceduralMemoryBlock.alearn` with the run's messages
(``await block.alearn(await memory.aget_all())``); a turn learned twice is stored once.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

from llama_index.core.async_utils import asyncio_run
from llama_index.core.base.llms.types import ChatMessage, MessageRole, TextBlock, ToolCallBlock
from llama_index.core.bridge.pydantic import BaseModel, ConfigDict, Field, PrivateAttr
from llama_index.core.memory.memory import BaseMemoryBlock
from llama_index.core.utils import get_tokenizer

from procmem import ProceduralMemory
from procmem.types import Prediction, SearchResult, SessionRecord

__all__ = [
    "ProceduralMemoryBlock",
    "ToolCallRecord",
    "Trajectory",
    "is_error_message",
    "trajectories_from_messages",
]

ActionFormat = Literal["call", "name"]

_ERROR_PREFIX = re.compile(
    r"^\s*(?:encountered error\b|error\b|exception\b|traceback \(most recent call last\)|tool \S+ not found\b)",
    re.IGNORECASE,
)


class ToolCallRecord(BaseModel):
    """One tool call of a trajectory and its result.

    Attributes:
        tool_name: Name of the called tool.
        tool_kwargs: Arguments of the call (a dict; a raw string when they were not JSON).
        tool_call_id: Id the LLM gave the call, if any; links it to its result message.
        result: Text of the tool's result message, or None when no result was seen.
        is_error: Whether the result was marked as an error.
    """

    model_config = ConfigDict(extra="forbid")

    tool_name: str
    tool_kwargs: dict[str, Any] | str = Field(default_factory=dict)
    tool_call_id: str | None = None
    result: str | None = None
    is_error: bool = False

    def action(self, action_format: ActionFormat = "call") -> str:
        """Render the call as an action: ``tool_name(arg='value', n=3)`` or ``tool_name``.

        Args:
            action_format: ``"call"`` for the name with its arguments (in the order given, values
                as Python literals, so procmem's normaliser turns them into placeholders such as
                ``'<STR>'``), ``"name"`` for the tool name only.
        """
        if action_format == "name":
            return self.tool_name
        if isinstance(self.tool_kwargs, str):
            return f"{self.tool_name}({self.tool_kwargs})"
        args = ", ".join(f"{k}={v!r}" for k, v in self.tool_kwargs.items())
        return f"{self.tool_name}({args})"


class Trajectory(BaseModel):
    """One turn of a conversation: the user's request and the tool calls that served it.

    Attributes:
        task: Text of the user message that opened the turn (None if the turn started earlier).
        tool_calls: The tool calls in order, with their results.
        messages: The turn's messages, user message first.
        session_id: Id of the LlamaIndex ``Memory`` session the messages came from, if known.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    task: str | None = None
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    messages: list[ChatMessage] = Field(default_factory=list)
    session_id: str | None = None

    @property
    def failed(self) -> bool:
        """Whether any tool result of the turn was marked as an error."""
        return any(c.is_error for c in self.tool_calls)

    def actions(self, action_format: ActionFormat = "call") -> list[str]:
        """The tool calls as actions, in order (see :meth:`ToolCallRecord.action`)."""
        return [c.action(action_format) for c in self.tool_calls]


def _text(message: ChatMessage) -> str:
    return "\n".join(b.text for b in message.blocks if isinstance(b, TextBlock)).strip()


def is_error_message(message: ChatMessage) -> bool:
    """Tell whether a tool result message reports an error.

    ``FunctionAgent`` keeps a tool's ``ToolOutput.is_error`` out of the message it stores, so
    besides an explicit ``additional_kwargs["is_error"]`` (or ``"error"``) this looks at the
    text: results starting with ``Error``, ``Exception``, ``Encountered error`` (LlamaIndex's
    ``call_tool``), a traceback, or ``Tool <name> not found`` (an unknown tool) count as errors.
    Tools whose exceptions should count as failures can raise with a message starting with
    ``Error``; otherwise pass your own detector as ``ProceduralMemoryBlock(error_detector=...)``.

    Args:
        message: A ``role="tool"`` message.

    Returns:
        True when the message reports an error.
    """
    kw = message.additional_kwargs
    if kw.get("is_error") or kw.get("error"):
        return True
    return bool(_ERROR_PREFIX.match(_text(message)))


def _parse_kwargs(raw: Any) -> dict[str, Any] | str:
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return dict(raw)
    if isinstance(raw, str):
        if not raw.strip():
            return {}
        try:
            parsed = json.loads(raw)
        except ValueError:
            return raw
        return parsed if isinstance(parsed, dict) else raw
    return str(raw)


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def _tool_call_from_kwarg(item: Any) -> ToolCallRecord | None:
    """Read one entry of ``additional_kwargs["tool_calls"]`` in any of the shapes integrations use."""
    function = _get(item, "function")
    if function is not None:  # OpenAI: {"id", "type": "function", "function": {"name", "arguments"}}
        name, raw, call_id = _get(function, "name"), _get(function, "arguments"), _get(item, "id")
    else:  # ToolSelection / ToolCallBlock, or Anthropic-like {"id", "name", "input"}
        name = _get(item, "tool_name") or _get(item, "name")
        raw = _get(item, "tool_kwargs")
        for key in ("arguments", "args", "input"):
            if raw is None:
                raw = _get(item, key)
        call_id = _get(item, "tool_id") or _get(item, "tool_call_id") or _get(item, "id")
    if not isinstance(name, str) or not name:
        return None
    return ToolCallRecord(
        tool_name=name, tool_kwargs=_parse_kwargs(raw), tool_call_id=str(call_id) if call_id else None
    )


def _tool_calls_of(message: ChatMessage) -> list[ToolCallRecord]:
    calls = [
        ToolCallRecord(tool_name=b.tool_name, tool_kwargs=_parse_kwargs(b.tool_kwargs), tool_call_id=b.tool_call_id)
        for b in message.blocks
        if isinstance(b, ToolCallBlock)
    ]
    seen = {c.tool_call_id for c in calls if c.tool_call_id}
    for item in message.additional_kwargs.get("tool_calls") or []:
        call = _tool_call_from_kwarg(item)
        if call is not None and (call.tool_call_id is None or call.tool_call_id not in seen):
            calls.append(call)
            if call.tool_call_id:
                seen.add(call.tool_call_id)
    return calls


def trajectories_from_messages(
    messages: Sequence[ChatMessage],
    *,
    error_detector: Callable[[ChatMessage], bool] = is_error_message,
) -> list[Trajectory]:
    """Cut messages into turns and collect each turn's tool calls with their results.

    A turn starts at each user message; assistant messages contribute their tool calls (from
    ``ToolCallBlock`` content or ``additional_kwargs["tool_calls"]`` in the OpenAI, Anthropic or
    ``ToolSelection`` shapes), and ``role="tool"`` messages are matched to their call by
    ``additional_kwargs["tool_call_id"]`` (else to the oldest call still without a result).

    Args:
        messages: Chat messages, oldest first.
        error_detector: Tells whether a tool result message reports an error.

    Returns:
        The turns in order, including those without tool calls.
    """
    turns: list[Trajectory] = []
    current: Trajectory | None = None
    for message in messages:
        if message.role == MessageRole.USER or current is None:
            current = Trajectory(
                task=(_text(message) or None) if message.role == MessageRole.USER else None,
                session_id=message.additional_kwargs.get("session_id"),
            )
            turns.append(current)
        current.messages.append(message)
        if message.role == MessageRole.ASSISTANT:
            current.tool_calls.extend(_tool_calls_of(message))
        elif message.role in (MessageRole.TOOL, MessageRole.FUNCTION):
            call_id = message.additional_kwargs.get("tool_call_id")
            pending = [c for c in current.tool_calls if c.result is None]
            match = next((c for c in pending if call_id and c.tool_call_id == call_id), None)
            if match is None and pending and not (call_id and any(c.tool_call_id for c in pending)):
                match = pending[0]
            if match is not None:
                match.result = _text(message)
                match.is_error = bool(error_detector(message))
    return turns


Judge = Callable[[Trajectory], Any]


class ProceduralMemoryBlock(BaseMemoryBlock[str]):
    """Memory block that recalls relevant procedures and learns workflows from tool calls.

    Recall: for the latest user message it searches ``memory`` (top ``k``) and renders each
    procedure with ``Procedure.render()``, then lists the ``top_k_predictions`` most likely next
    tool calls given the tool calls of the current turn (``predict_next_action``). Learning:
    turns flushed out of the ``Memory``'s short-term history (or passed to :meth:`alearn`)
    become sessions ``memory.alearn_session(actions, outcome, task=user_request)``. The outcome
    is ``"failure"`` when a tool result reports an error (see ``error_detector``), else
    ``"success"``; a ``judge`` overrides it.

    Setup:
        Install the adapter, then give the block to the agent's ``Memory``. A turn is learned
        when ``Memory`` flushes it out of short-term history, i.e. once the history exceeds
        ``token_limit * chat_history_token_ratio`` (a small ratio learns each turn as soon as
        the next request arrives), or at once with
        ``await block.alearn(await memory.aget_all())`` at the end of a run:

        .. code-block:: bash

            pip install 'procmem[llamaindex]'

        .. code-block:: python

            memory = Memory.from_defaults(
                session_id="user-1", token_limit=4000, chat_history_token_ratio=0.05,
                memory_blocks=[ProceduralMemoryBlock(memory=pm)],
            )
            agent = FunctionAgent(tools=tools, llm=llm)
            await agent.run("Book a flight from SFO to JFK", memory=memory)

    Args:
        memory: The procedural memory to read and teach.
        name: Name of the block (its tag inside the ``<memory>`` system block).
        priority: Truncation priority in ``Memory`` (0 never truncates; higher is kept longer).
        k: Procedures recalled per request.
        kinds: Only procedures of these kinds (skill, workflow, tool, persona).
        tags: Only procedures carrying all these tags.
        namespace: Whose procedures (default: the memory's namespace).
        min_score: Drop procedures scoring below this (fused score, higher is better).
        top_k_predictions: Next tool calls predicted; 0 turns prediction off.
        min_confidence: Drop predictions below this probability in [0, 1].
        context_window: Latest tool calls of the turn used as the prediction context.
        max_tokens: Token budget of the block's text (None: no budget of its own); the
            lowest-ranked items are dropped first.
        action_format: ``"call"`` learns ``tool_name(arg='value')`` actions, ``"name"`` the
            tool names only.
        judge: ``judge(trajectory) -> bool | str | None`` (or a coroutine function) deciding a
            turn's outcome: True/``"success"``, False/``"failure"``, None unknown.
        error_detector: Tells whether a tool result message reports an error.
        learning: Learn from flushed messages (False keeps the block read-only).
        tokenizer_fn: Tokenizer counting the budget (default LlamaIndex's, as ``Memory``).

    Example:
        >>> from llama_index.core.llms import ChatMessage
        >>> from llama_index.core.memory import Memory
        >>> from procmem import ProceduralMemory
        >>> from procmem.embeddings import HashingEmbedder
        >>> from llamaindex_procmem import ProceduralMemoryBlock
        >>> pm = ProceduralMemory(path=":memory:", embedder=HashingEmbedder())
        >>> _ = pm.store_procedure("deploy", ["git pull", "make build", "make deploy"],
        ...                        description="Deploy the web app")
        >>> block = ProceduralMemoryBlock(memory=pm, top_k_predictions=0)
        >>> memory = Memory.from_defaults(session_id="s1", memory_blocks=[block])
        >>> memory.put(ChatMessage(role="user", content="please deploy the web app"))
        >>> "1. git pull" in memory.get()[0].content
        True
    """

    name: str = Field(default="procedural_memory", description="The name of the memory block.")
    description: str | None = Field(
        default="Procedures that worked before and the likely next tool calls.",
        description="A description of the memory block.",
    )
    priority: int = Field(default=1, description="Truncation priority (0 = never truncate).")
    memory: ProceduralMemory = Field(description="The procedural memory to read and teach.", exclude=True)
    k: int = Field(default=3, ge=1, description="Procedures recalled per request.")
    kinds: list[str] | None = Field(default=None, description="Only procedures of these kinds.")
    tags: list[str] | None = Field(default=None, description="Only procedures carrying all these tags.")
    namespace: str | None = Field(default=None, description="Whose procedures (default: the memory's).")
    min_score: float | None = Field(default=None, description="Drop procedures scoring below this.")
    top_k_predictions: int = Field(default=3, ge=0, description="Next tool calls predicted (0: off).")
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0, description="Drop predictions below this.")
    context_window: int = Field(default=5, ge=1, description="Latest tool calls used as prediction context.")
    max_tokens: int | None = Field(default=None, ge=1, description="Token budget of the block's text.")
    action_format: ActionFormat = Field(default="call", description="'call' or 'name' actions.")
    judge: Judge | None = Field(default=None, exclude=True, description="Decides a turn's outcome.")
    error_detector: Callable[[ChatMessage], bool] = Field(
        default=is_error_message, exclude=True, description="Tells whether a tool result reports an error."
    )
    learning: bool = Field(default=True, description="Learn from messages flushed out of short-term memory.")
    tokenizer_fn: Callable[[str], list] = Field(default_factory=get_tokenizer, exclude=True)

    # Parts of the texts last returned by _aget, in truncation order (kept first to dropped first).
    _parts: dict[str, tuple[list[str], list[str]]] = PrivateAttr(default_factory=dict)

    # ------------------------------------------------------------------ recall
    async def _aget(self, messages: list[ChatMessage] | None = None, **block_kwargs: Any) -> str:
        """Return the procedures relevant to the latest user message and the predicted next tool calls."""
        turns = trajectories_from_messages(messages or [], error_detector=self.error_detector)
        task = next((t.task for t in reversed(turns) if t.task), None)
        if not task:
            return ""
        search = self.memory.asearch(
            task, k=self.k, kinds=self.kinds, tags=self.tags, namespace=self.namespace, min_score=self.min_score
        )
        results: list[SearchResult]
        predictions: list[Prediction] = []
        if self.top_k_predictions:
            context = turns[-1].actions(self.action_format)[-self.context_window :]
            results, predictions = await asyncio.gather(
                search,
                self.memory.apredict_next_action(context, task, self.top_k_predictions, namespace=self.namespace),
            )
            predictions = [p for p in predictions if p.confidence >= self.min_confidence]
        else:
            results = await search
        procedures = [self._render_result(i, r) for i, r in enumerate(results, 1)]
        predicted = [self._render_prediction(p) for p in predictions]
        text = self._compose(procedures, predicted)
        if self.max_tokens is not None:
            text = self._fit(procedures, predicted, self.max_tokens)
        return text

    @staticmethod
    def _render_result(rank: int, result: SearchResult) -> str:
        proc = result.procedure
        head = f"[{rank}] id={proc.id} score={result.score:.3f}"
        if result.reason:
            head += f" ({result.reason})"
        return f"{head}\n{proc.render()}"

    @staticmethod
    def _render_prediction(prediction: Prediction) -> str:
        line = f"- {prediction.action} (confidence {prediction.confidence:.2f})"
        if prediction.reason:
            line += f": {prediction.reason}"
        return line

    def _compose(self, procedures: list[str], predicted: list[str]) -> str:
        sections = []
        if procedures:
            sections.append("Procedures that worked before for similar requests:\n\n" + "\n\n".join(procedures))
        if predicted:
            sections.append("Likely next tool calls:\n" + "\n".join(predicted))
        text = "\n\n".join(sections)
        if text:
            if len(self._parts) >= 16:
                self._parts.pop(next(iter(self._parts)))
            self._parts[text] = (procedures, predicted)
        return text

    def _tokens(self, text: str) -> int:
        return len(self.tokenizer_fn(text)) if text else 0

    def _fit(self, procedures: list[str], predicted: list[str], budget: int) -> str:
        """Drop the lowest-ranked items (predictions, then procedures) until the text fits ``budget`` tokens."""
        procedures, predicted = list(procedures), list(predicted)
        text = self._compose(procedures, predicted)
        while text and self._tokens(text) > budget:
            if predicted:
                predicted.pop()
            elif procedures:
                procedures.pop()
            text = self._compose(procedures, predicted)
        return text

    async def atruncate(self, content: str, tokens_to_truncate: int) -> str | None:
        """Shorten the block's text by about ``tokens_to_truncate`` tokens, dropping whole items.

        Predictions go first (least confident first), then procedures (lowest-ranked first); the
        result is None when nothing is left. Text this block did not produce is cut by lines from
        the end.

        Args:
            content: Text previously returned by this block.
            tokens_to_truncate: Tokens the ``Memory`` asks to save.

        Returns:
            The shortened text, or None when it is completely truncated.
        """
        if not content or tokens_to_truncate <= 0:
            return content or None
        target = self._tokens(content) - tokens_to_truncate
        if target <= 0:
            return None
        parts = self._parts.get(content)
        if parts is not None:
            return self._fit(parts[0], parts[1], target) or None
        lines = content.splitlines()
        while lines and self._tokens("\n".join(lines)) > target:
            lines.pop()
        return "\n".join(lines).strip() or None

    # ------------------------------------------------------------------ learning
    async def _aput(self, messages: list[ChatMessage]) -> None:
        """Learn the turns flushed out of short-term memory."""
        if self.learning:
            await self.alearn(messages)

    async def _outcome(self, trajectory: Trajectory) -> str | None:
        if self.judge is None:
            return "failure" if trajectory.failed else "success"
        verdict = self.judge(trajectory)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        if verdict is None:
            return None
        if isinstance(verdict, bool):
            return "success" if verdict else "failure"
        return str(verdict)

    @staticmethod
    def _session_id(trajectory: Trajectory, actions: list[str]) -> str:
        ids = [c.tool_call_id or "" for c in trajectory.tool_calls]
        key = json.dumps([trajectory.session_id, trajectory.task, actions, ids], default=str)
        return "llamaindex-" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:24]

    async def alearn(
        self, messages: Sequence[ChatMessage], *, task: str | None = None, outcome: Any = None
    ) -> list[SessionRecord]:
        """Learn the tool calls of ``messages``: one session per turn that made tool calls.

        The session id is derived from the memory session, the request, the actions and the
        LLM's tool call ids, so learning the same turn again (here and when ``Memory`` flushes
        it later) stores it once.

        Args:
            messages: Chat messages, oldest first (e.g. ``await memory.aget_all()``).
            task: Task text to use instead of each turn's user message.
            outcome: Outcome of every turn (``"success"``, ``"failure"``, a bool); None lets
                the judge or the tool results decide.

        Returns:
            The sessions learned (already learned turns included).
        """
        learned: list[SessionRecord] = []
        for trajectory in trajectories_from_messages(messages, error_detector=self.error_detector):
            actions = trajectory.actions(self.action_format)
            if not actions:
                continue
            verdict = outcome if outcome is not None else await self._outcome(trajectory)
            record = await self.memory.alearn_session(
                actions,
                verdict,
                task if task is not None else trajectory.task,
                session_id=self._session_id(trajectory, actions),
                namespace=self.namespace,
            )
            learned.append(record)
        return learned

    def learn(
        self, messages: Sequence[ChatMessage], *, task: str | None = None, outcome: Any = None
    ) -> list[SessionRecord]:
        """Sync twin of :meth:`alearn` (not callable from inside a running event loop's thread)."""
        return asyncio_run(self.alearn(messages, task=task, outcome=outcome))
