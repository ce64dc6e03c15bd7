"""Records procmem stores and returns: pydantic v2 models.

All timestamps are timezone-aware UTC datetimes; durations are seconds; probabilities, success
rates and importances are floats in [0, 1].
"""

from __future__ import annotations

import json
import math
import re
import uuid
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

__all__ = [
    "ConsolidationReport",
    "ExecutionResult",
    "ExecutionStats",
    "Outcome",
    "Prediction",
    "Procedure",
    "ProcedureKind",
    "ProcedureVersion",
    "SearchResult",
    "SessionRecord",
    "Step",
    "Usage",
    "utcnow",
]


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def utcnow() -> datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return datetime.now(timezone.utc)


def new_id() -> str:
    """Return a new random procedure id (32 hex characters)."""
    return uuid.uuid4().hex


class ProcedureKind(str, Enum):
    """What a procedure is: the four kinds of procedural memory in the seeds."""

    SKILL = "skill"
    WORKFLOW = "workflow"
    TOOL = "tool"
    PERSONA = "persona"


def _finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return value


def _nested(obj: Any) -> Any:
    # Nested records validate themselves; dates serialise as ISO strings.
    if isinstance(obj, (BaseModel, datetime)):
        return None
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _json_safe(value: Any, info: ValidationInfo) -> Any:
    """Refuse values a JSON store cannot hold: lone surrogates, NaN, objects, runaway nesting."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{info.field_name} contains characters that are not valid Unicode") from None
    elif isinstance(value, (dict, list, tuple)) and value:
        try:
            json.dumps(value, allow_nan=False, ensure_ascii=False, default=_nested).encode("utf-8")
        except RecursionError:
            raise ValueError(f"{info.field_name} is nested too deeply to store") from None
        except (TypeError, ValueError, UnicodeEncodeError) as exc:
            raise ValueError(f"{info.field_name} must hold only JSON values (finite numbers, text): {exc}") from None
    return value


#: Validation context of records read back from a store's own JSON: every other check runs, but
#: not :func:`_json_safe`, whose ``json.dumps`` of each list and dict field was a tenth of a
#: search's time at 100,000 procedures, and which such text passed when it was written.
STORED = {"stored": True}


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_enum_values=False)

    @field_validator("*", mode="after")
    @classmethod
    def _storable(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, (str, dict, list, tuple)) and info.context is not STORED:
            return _json_safe(value, info)
        return value


class Step(_Record):
    """One step of a procedure.

    Attributes:
        action: What to do, as text or a command line (``"git add ."``, ``"Acknowledge the
            customer"``). Must not be empty.
        parameters: Arguments of the step; passed to ``function`` when executed.
        expected_outcome: What should hold after the step, if known.
        function: Name of a callable registered with the memory's function registry; executing
            the procedure calls it. Never imported or evaluated from this string.
        condition: Name of a registered predicate or a parameter name; the step runs only when
            it is truthy (seed 000's conditional workflow steps).
        name: Short label of the step (seed 000's ``"step"`` key).
    """

    action: str = Field(min_length=1)
    parameters: dict[str, Any] = Field(default_factory=dict)
    expected_outcome: str | None = None
    function: str | None = None
    condition: str | None = None
    name: str | None = None

    @field_validator("action")
    @classmethod
    def _strip(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("action must not be blank")
        return v


class ExecutionStats(_Record):
    """Execution statistics of a procedure (seed 002's ``execution_stats``).

    Attributes:
        successes: Number of successful executions or reported successes.
        failures: Number of failed executions or reported failures.
        mean_duration: Mean duration of timed executions, in seconds.
        last_execution: When it was last executed or reported, UTC.
    """

    successes: int = Field(default=0, ge=0)
    failures: int = Field(default=0, ge=0)
    mean_duration: float = Field(default=0.0, ge=0.0)
    timed_executions: int = Field(default=0, ge=0)
    last_execution: datetime | None = None

    @property
    def executions(self) -> int:
        """Total number of recorded executions."""
        return self.successes + self.failures

    @property
    def success_rate(self) -> float:
        """Laplace-smoothed success rate in [0, 1]; 0.5 when never executed."""
        return (self.successes + 1) / (self.executions + 2)

    def record(self, success: bool, duration: float | None = None, when: datetime | None = None) -> ExecutionStats:
        """Return new stats with one more execution counted.

        Args:
            success: Whether the execution succeeded.
            duration: Its duration in seconds, if timed.
            when: When it happened (default now, UTC).
        """
        data = self.model_dump()
        if success:
            data["successes"] += 1
        else:
            data["failures"] += 1
        if duration is not None:
            _finite("duration", duration)
            if duration < 0:
                raise ValueError(f"duration must be >= 0 seconds, got {duration!r}")
            n = data["timed_executions"] + 1
            data["mean_duration"] = data["mean_duration"] + (duration - data["mean_duration"]) / n
            data["timed_executions"] = n
        data["last_execution"] = when or utcnow()
        return ExecutionStats(**data)


class Procedure(_Record):
    """A stored procedure: a skill, workflow, tool or persona.

    Attributes:
        id: Stable identifier (seed 002's ``procedure_id``); generated when omitted.
        kind: One of skill, workflow, tool, persona.
        name: Human-readable name; must not be blank.
        description: What it does and when to use it; used for retrieval.
        steps: Ordered steps.
        parameters: Default parameters (workflows, skills) or the JSON schema of a tool's
            arguments (tools).
        triggers: Phrases or situations that should bring it to mind (seed 004).
        tags: Free labels for filtering.
        namespace: Whose memory it is (an agent, a user); searches are scoped by it.
        metadata: Free JSON-serialisable data; ``metadata["category"]`` is seed 002's category.
        importance: Importance in [0, 1] (seed 003).
        access_count: How many times it was retrieved or read.
        last_accessed: When it was last retrieved or read, UTC.
        stats: Execution statistics.
        version: Current version number, starting at 1.
        created_at: Creation time, UTC.
        updated_at: Time of the latest version, UTC.
    """

    id: str = Field(default_factory=new_id, min_length=1, max_length=512)
    kind: ProcedureKind = ProcedureKind.SKILL
    name: str = Field(min_length=1, max_length=1024)
    description: str = ""
    steps: list[Step] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    triggers: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    namespace: str = Field(default="default", min_length=1, max_length=512)
    metadata: dict[str, Any] = Field(default_factory=dict)
    importance: float = Field(default=0.5, ge=0.0, le=1.0)
    access_count: int = Field(default=0, ge=0)
    last_accessed: datetime | None = None
    stats: ExecutionStats = Field(default_factory=ExecutionStats)
    version: int = Field(default=1, ge=1)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    @field_validator("name", "id", "namespace")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v

    @field_validator("importance")
    @classmethod
    def _finite_importance(cls, v: float) -> float:
        return _finite("importance", v)

    @field_validator("steps", mode="before")
    @classmethod
    def _coerce_steps(cls, v: Any) -> Any:
        if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)):
            raise ValueError(f"steps must be a list of steps, got {type(v).__name__}")
        out = []
        for item in v:
            if isinstance(item, str):
                out.append({"action": item})
            elif isinstance(item, dict):
                # Seed 000 ({"step", "action"}) and seed 002 ({"function", "parameters"}) shapes.
                d = dict(item)
                if "step" in d and "name" not in d:
                    d["name"] = d.pop("step")
                if d.get("function") and "action" not in d:
                    d["action"] = d["function"]
                out.append(d)
            else:
                out.append(item)
        return out

    @property
    def success_rate(self) -> float:
        """Smoothed success rate in [0, 1] (see :class:`ExecutionStats`)."""
        return self.stats.success_rate

    def content_fields(self) -> dict[str, Any]:
        """Return the fields a new version replaces (everything but identity and counters)."""
        return self.model_dump(
            include={"kind", "name", "description", "steps", "parameters", "triggers", "tags", "metadata", "importance"}
        )

    @property
    def readable_name(self) -> str:
        """The name split on underscores and camelCase: ``"HouseRentingTool"`` → ``"House Renting Tool"``."""
        return " ".join(_CAMEL.sub(" ", self.name.replace("_", " ")).split())

    def text(self) -> str:
        """Render the procedure as the text that is embedded for dense search.

        The :attr:`readable_name` (``"HouseRentingTool"`` → ``"House Renting Tool"``) is
        joined to the description with a colon, which a sentence encoder
        reads as one sentence (+3 points hit@1 for all-MiniLM-L6-v2 on MetaTool, see
        ``benchmarks/retrieval.py``); triggers and steps follow.
        """
        name = self.readable_name
        parts = [f"{name}: {self.description}" if self.description else name]
        if self.triggers:
            parts.append("When: " + "; ".join(self.triggers))
        if self.steps:
            parts.append("Steps: " + "; ".join(s.action for s in self.steps))
        return "\n".join(parts)

    def render(self) -> str:
        """Render the procedure for a prompt: name, kind, description, numbered steps, stats."""
        lines = [f"{self.name} ({self.kind.value}, v{self.version})"]
        if self.description:
            lines.append(self.description)
        if self.triggers:
            lines.append("Use when: " + "; ".join(self.triggers))
        for i, s in enumerate(self.steps, 1):
            line = f"{i}. {s.action}"
            if s.parameters:
                line += " " + ", ".join(f"{k}={v!r}" for k, v in s.parameters.items())
            if s.expected_outcome:
                line += f" -> {s.expected_outcome}"
            lines.append(line)
        if self.stats.executions:
            lines.append(
                f"Success rate {self.stats.successes}/{self.stats.executions}"
                f" ({self.stats.successes / self.stats.executions:.0%})"
            )
        return "\n".join(lines)


class ProcedureVersion(_Record):
    """One kept version of a procedure.

    Attributes:
        procedure_id: The procedure's id.
        version: Version number (1 is the first).
        procedure: The full procedure as it was at this version.
        created_at: When this version was written, UTC.
        note: Why it was written (``"created"``, ``"updated"``, ``"rollback to v2"``,
            ``"promoted"``, ``"demoted"``...).
    """

    procedure_id: str
    version: int = Field(ge=1)
    procedure: Procedure
    created_at: datetime = Field(default_factory=utcnow)
    note: str = ""


class Outcome(_Record):
    """The outcome of one execution or use of a procedure.

    Attributes:
        procedure_id: Which procedure.
        success: Whether it worked.
        duration: How long it took, in seconds, if known.
        error: Error message of a failure.
        details: Free data about the outcome (seed 002's ``outcome_data``).
        timestamp: When, UTC.
    """

    procedure_id: str
    success: bool
    duration: float | None = Field(default=None, ge=0.0)
    error: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    timestamp: datetime = Field(default_factory=utcnow)

    @field_validator("duration")
    @classmethod
    def _finite_duration(cls, v: float | None) -> float | None:
        return None if v is None else _finite("duration", v)


class ExecutionResult(BaseModel):
    """What executing a procedure returned (seed 002's ``execute_procedure`` result).

    Attributes:
        success: Whether every step ran without raising.
        results: The return value of each executed step.
        skipped: Indices of steps skipped because their condition was false.
        error: The error of the failing step, if any.
        failed_step: Index of the failing step, if any.
        duration: Wall time in seconds.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    success: bool
    results: list[Any] = Field(default_factory=list)
    skipped: list[int] = Field(default_factory=list)
    error: str | None = None
    failed_step: int | None = None
    duration: float = 0.0


class SearchResult(_Record):
    """A procedure found by a search, with its score and why it matched.

    Attributes:
        procedure: The procedure.
        score: Fused relevance score; higher is better (not a probability).
        dense: Cosine similarity of query and procedure in [-1, 1], if computed.
        lexical: Normalised BM25 score in [0, 1], if the procedure matched lexically.
        experience: Evidence from similar past requests this procedure served, in [0, 1].
        reason: Short human-readable explanation.
    """

    procedure: Procedure
    score: float
    dense: float | None = None
    lexical: float | None = None
    experience: float | None = None
    reason: str = ""


class Prediction(_Record):
    """A predicted next action (seed 001's prediction, with a calibrated confidence).

    Attributes:
        action: The concrete action to run next (placeholders filled from history).
        confidence: Probability in [0, 1] that this is the next action.
        reason: Which evidence produced it (the context matched, a workflow, similar tasks).
        suggestions: Follow-up actions likely after this one (seed 001's auto-suggestions).
        pattern: The normalised form of the action.
        workflow_id: The mined workflow this prediction continues, if any.
        success_rate: Observed success rate, in [0, 1], of the past sessions with a known
            outcome that took this action after the same previous action (``successes /
            (successes + failures)``, not smoothed); None when none has a known outcome.
    """

    action: str
    confidence: float = Field(ge=0.0, le=1.0)
    reason: str = ""
    suggestions: list[str] = Field(default_factory=list)
    pattern: str | None = None
    workflow_id: str | None = None
    success_rate: float | None = Field(default=None, ge=0.0, le=1.0)

    @property
    def next_command(self) -> str:
        """Seed 001's name for :attr:`action` (``pred.next_command``); not a stored field."""
        return self.action

    @property
    def auto_suggestions(self) -> list[str]:
        """Seed 001's name for :attr:`suggestions` (``pred.auto_suggestions``); not a stored field."""
        return self.suggestions


class Usage(_Record):
    """A past request and the procedure that served it (learned by ``record_usage``).

    Attributes:
        query: The request text.
        procedure_id: The procedure that served it.
        success: Whether it worked.
        namespace: Whose memory.
        timestamp: When, UTC.
    """

    query: str = Field(min_length=1)
    procedure_id: str = Field(min_length=1)
    success: bool = True
    namespace: str = "default"
    timestamp: datetime = Field(default_factory=utcnow)


class SessionRecord(_Record):
    """A logged session of actions and its outcome (the sessions JSONL format).

    Attributes:
        session_id: Identifier of the session.
        actions: The actions in order; at least one.
        outcome: ``"success"``, ``"failure"`` or None when unknown.
        task: The task text (instructions), if any.
        instructions: The user's instruction of each turn, for a multi-turn session (its
            ``task`` is then their concatenation).
        turns: For each action, the index in ``instructions`` of the turn it answers (the
            shared format's ``turn``); requires ``instructions``.
        user_id: Who ran it.
        group: A group of sessions solving the same task or scenario.
        timestamps: One UTC time per action, if known.
        namespace: Whose memory.
    """

    session_id: str = Field(default_factory=new_id, min_length=1)
    actions: list[str] = Field(min_length=1)
    outcome: str | None = None
    task: str | None = None
    instructions: list[str] | None = None
    turns: list[int] | None = None
    user_id: str | None = None
    group: str | None = None
    timestamps: list[datetime] | None = None
    namespace: str = "default"

    def task_at(self, index: int) -> str | None:
        """Return the task text in force at action ``index``: its turn's instruction, else ``task``."""
        if self.turns is not None and self.instructions:
            return self.instructions[self.turns[index]]
        return self.task

    @field_validator("actions")
    @classmethod
    def _actions_text(cls, v: list[str]) -> list[str]:
        for i, a in enumerate(v):
            if not isinstance(a, str) or not a.strip():
                raise ValueError(f"actions[{i}] must be a non-blank string, got {a!r}")
        return v

    @field_validator("outcome", mode="before")
    @classmethod
    def _outcome(cls, v: Any) -> Any:
        if v is None:
            return None
        if isinstance(v, bool):
            return "success" if v else "failure"
        if isinstance(v, str) and v.lower() in {"success", "failure", "ok", "failed", "fail", "error"}:
            return "success" if v.lower() in {"success", "ok"} else "failure"
        raise ValueError(f"outcome must be 'success', 'failure', a bool or None, got {v!r}")

    @field_validator("turns")
    @classmethod
    def _turns(cls, v: list[int] | None, info: ValidationInfo) -> list[int] | None:
        # ``actions`` and ``instructions`` are declared (so validated) before ``turns``.
        if v is None:
            return v
        instructions = info.data.get("instructions")
        if not instructions:
            raise ValueError("turns needs a list of instructions to index into")
        actions = info.data.get("actions")
        if actions is not None and len(v) != len(actions):
            raise ValueError(f"turns has {len(v)} items but actions has {len(actions)}")
        bad = next((t for t in v if not 0 <= t < len(instructions)), None)
        if bad is not None:
            raise ValueError(f"turns contains {bad}, not an index of the {len(instructions)} instructions")
        return v

    @model_validator(mode="after")
    def _stamps(self) -> SessionRecord:
        if self.timestamps is not None and len(self.timestamps) != len(self.actions):
            raise ValueError(f"timestamps has {len(self.timestamps)} items but actions has {len(self.actions)}")
        return self

    @property
    def succeeded(self) -> bool | None:
        """True for success, False for failure, None when the outcome is unknown."""
        return None if self.outcome is None else self.outcome == "success"


class ConsolidationReport(_Record):
    """What :meth:`ProceduralMemory.consolidate` merged.

    Attributes:
        merged: One entry per group: ``{"kept": id, "merged": [ids], "similarity": float}``.
        examined: How many procedures were compared.
        threshold: The cosine similarity threshold used.
        dry_run: True when nothing was changed.
    """

    merged: list[dict[str, Any]] = Field(default_factory=list)
    examined: int = 0
    threshold: float = 0.0
    dry_run: bool = False
