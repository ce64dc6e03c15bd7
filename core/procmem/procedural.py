"""Seed 000's procedural components (MemoRizz): ``Persona``, ``Toolbox`` and ``Workflow``.

Each is a thin view over :class:`~procmem.memory.ProceduralMemory`: personas, tools and
workflows are stored as procedures of kind ``persona``, ``tool`` and ``workflow``, so they are
versioned, searchable and counted like every other procedure. Where MemoRizz took a MongoDB
``memory_provider``, these take the ``ProceduralMemory``, as ``memory`` or under seed 000's
keyword ``memory_provider``.
"""

from __future__ import annotations

import functools
import inspect
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import docstring_parser
import pydantic

from procmem.errors import ConfigurationError, InvalidProcedureError, ToolNotFoundError, ValidationError
from procmem.types import ExecutionResult, Procedure, SearchResult, Step

__all__ = ["Persona", "RegisteredTool", "ToolResult", "Toolbox", "Workflow"]


def _memory(owner: str, memory: Any, memory_provider: Any) -> Any:
    """The ``ProceduralMemory`` given as ``memory`` or as seed 000's ``memory_provider``.

    Raises:
        ConfigurationError: Both or neither were given.
    """
    if memory is not None and memory_provider is not None:
        raise ConfigurationError(f"{owner}: pass memory or memory_provider (seed 000's name for it), not both")
    if memory is None and memory_provider is None:
        raise ConfigurationError(f"{owner} needs memory=ProceduralMemory(...) (or memory_provider=)")
    return memory if memory is not None else memory_provider


class Persona(pydantic.BaseModel):
    """A behavioural procedure: who the agent is and how it acts (seed 000).

    Attributes:
        name: Persona name.
        role: Its role (``"Customer Support Specialist"``).
        goals: What it tries to achieve.
        background: Its background and expertise.
        id: Stored procedure id, set by :meth:`store_persona`.
    """

    model_config = pydantic.ConfigDict(extra="forbid")

    name: str = pydantic.Field(min_length=1)
    role: str = pydantic.Field(min_length=1)
    goals: str = ""
    background: str = ""
    id: str | None = None

    def generate_system_prompt_input(self) -> str:
        """Render the persona as system-prompt text."""
        lines = [f"You are {self.name}, {self.role}."]
        if self.goals:
            lines.append(f"Your goals: {self.goals}")
        if self.background:
            lines.append(f"Your background: {self.background}")
        return "\n".join(lines)

    def to_procedure(self, namespace: str = "default") -> Procedure:
        """Return the persona as a ``persona`` procedure."""
        data = self.model_dump(exclude={"id"})
        kwargs: dict[str, Any] = {"id": self.id} if self.id else {}
        return Procedure(
            kind="persona",
            name=self.name,
            namespace=namespace,
            description=f"{self.role}. {self.goals} {self.background}".strip(),
            metadata={"persona": data},
            **kwargs,
        )

    def store_persona(self, memory: Any = None, *, memory_provider: Any = None) -> str:
        """Store (or version) the persona in a ``ProceduralMemory``; returns its id.

        Args:
            memory: The ``ProceduralMemory``.
            memory_provider: The same, under seed 000's name.

        Raises:
            ConfigurationError: Both or neither memory given.
        """
        memory = _memory("store_persona", memory, memory_provider)
        proc = memory.add(self.to_procedure(memory.namespace))
        self.id = proc.id
        return proc.id

    @classmethod
    def retrieve_persona(cls, persona_id: str, memory: Any = None, *, memory_provider: Any = None) -> Persona:
        """Load a stored persona.

        Args:
            persona_id: Its id.
            memory: The ``ProceduralMemory``.
            memory_provider: The same, under seed 000's name.

        Raises:
            ProcedureNotFoundError: Unknown id.
            InvalidProcedureError: The procedure is not a persona.
            ConfigurationError: Both or neither memory given.
        """
        proc = _memory("retrieve_persona", memory, memory_provider).get(persona_id)
        if proc.kind.value != "persona" or "persona" not in proc.metadata:
            raise InvalidProcedureError(
                f"procedure {persona_id!r} is a {proc.kind.value}, not a persona", field="kind", value=proc.kind.value
            )
        return cls(**proc.metadata["persona"], id=proc.id)


class ToolResult(pydantic.BaseModel):
    """Result of :meth:`Toolbox.execute_tool`: the output, or the captured error.

    Attributes:
        tool: Tool name.
        success: Whether the call returned without raising.
        output: The return value.
        error: ``"ExceptionType: message"`` of a failure (invalid arguments included).
        duration: Wall time in seconds.
    """

    tool: str
    success: bool
    output: Any = None
    error: str | None = None
    duration: float = 0.0


# A NumPy-style section header over a dashed underline. docstring_parser reads one only when the
# underline is exactly as long as the title and the title has no colon; MemoRizz's examples
# write "Parameters:" over 11 dashes, which it would leave in the description.
_SECTION = re.compile(r"^([ \t]*)([A-Za-z][A-Za-z ]*?):?[ \t]*\n[ \t]*-{3,}[ \t]*$", re.MULTILINE)


def _docstring(fn: Callable[..., Any]) -> docstring_parser.Docstring:
    text = _SECTION.sub(lambda m: f"{m[1]}{m[2]}\n{m[1]}{'-' * len(m[2])}", inspect.getdoc(fn) or "")
    return docstring_parser.parse(text)


def _signature_model(fn: Callable[..., Any], name: str) -> tuple[type[pydantic.BaseModel], str]:
    doc = _docstring(fn)
    described = {p.arg_name: (p.description or "") for p in doc.params}
    fields: dict[str, Any] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in {"self", "context"}:
            continue
        ann = Any if p.annotation is inspect.Parameter.empty else p.annotation
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[p.name] = (ann, pydantic.Field(default, description=described.get(p.name) or None))
    model = pydantic.create_model(f"{name}_arguments", **fields)
    description = " ".join(x for x in (doc.short_description, doc.long_description) if x) or name
    return model, description


class RegisteredTool:
    """A function registered in a :class:`Toolbox`; calling it calls the function.

    Attributes:
        id: Stored procedure id.
        name: Tool name.
        description: From the docstring.
        args_model: pydantic model of the arguments (validation).
        schema: JSON schema of the arguments.
    """

    def __init__(self, fn: Callable[..., Any], proc: Procedure, args_model: type[pydantic.BaseModel]) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.id = proc.id
        self.name = proc.name
        self.description = proc.description
        self.args_model = args_model
        self.schema = proc.parameters

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function directly (no validation, no outcome recorded)."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"RegisteredTool(name={self.name!r}, id={self.id!r})"


class Toolbox:
    """Skill procedures: Python functions an agent can discover and call (seed 000).

    Registering a function stores a ``tool`` procedure whose ``parameters`` hold the JSON
    schema derived from its signature and docstring, and registers the callable in the
    memory's function registry (only registered functions can ever run).

    Args:
        memory: The ``ProceduralMemory`` to store tools in.
        memory_provider: The same, under seed 000's name.

    Raises:
        ConfigurationError: Both or neither memory given.

    Example:
        >>> toolbox = Toolbox(memory)  # doctest: +SKIP
        >>> @toolbox.register_tool
        ... def get_order_status(order_id: str) -> str:
        ...     '''Retrieve the status of an order.'''
        ...     return "shipped"
    """

    def __init__(self, memory: Any = None, *, memory_provider: Any = None) -> None:
        self.memory = _memory("Toolbox", memory, memory_provider)
        self._tools: dict[str, RegisteredTool] = {}

    def register_tool(
        self,
        func: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        tags: Sequence[str] = (),
    ) -> Any:
        """Register a function as a tool; usable as ``@register_tool`` or ``register_tool(fn)``.

        Args:
            func: The function.
            name: Tool name (default: the function's name).
            description: Overrides the docstring's description.
            tags: Labels.

        Returns:
            A :class:`RegisteredTool` (callable like the function; ``.id`` is the stored id).

        Raises:
            ConfigurationError: ``func`` is not callable, or its signature cannot be described.
        """
        if func is None:
            return lambda f: self.register_tool(f, name=name, description=description, tags=tags)
        if not callable(func):
            raise ConfigurationError(f"register_tool needs a callable, got {type(func).__name__}")
        tool_name = name or getattr(func, "__name__", "")
        if not tool_name.isidentifier():
            raise ConfigurationError(f"tool name must be an identifier, got {tool_name!r}")
        try:
            model, doc_description = _signature_model(func, tool_name)
            schema = model.model_json_schema()
        except Exception as exc:
            raise ConfigurationError(f"cannot derive a JSON schema for {tool_name!r}: {exc}") from exc
        proc = self.memory.add(
            Procedure(
                id=f"tool:{self.memory.namespace}:{tool_name}",
                kind="tool",
                name=tool_name,
                description=description or doc_description,
                parameters=schema,
                tags=list(tags),
                steps=[Step(action=f"call {tool_name}", function=tool_name)],
                namespace=self.memory.namespace,
            )
        )
        self.memory.registry.register(func, name=tool_name)
        tool = RegisteredTool(func, proc, model)
        self._tools[tool_name] = tool
        return tool

    def list_tools(self) -> list[Procedure]:
        """All stored tools of the memory's namespace."""
        return self.memory.list(kind="tool")

    def get_tool(self, name_or_id: str) -> RegisteredTool:
        """Return a tool registered in this process, by name or id.

        Raises:
            ToolNotFoundError: Not registered here (a stored tool without its function cannot run).
        """
        for tool in self._tools.values():
            if name_or_id in (tool.name, tool.id):
                return tool
        raise ToolNotFoundError(f"tool {name_or_id!r} is not registered in this process")

    def search_tools(self, query: str, k: int = 5) -> list[SearchResult]:
        """Semantic tool discovery: the stored tools most relevant to ``query``."""
        return self.memory.search(query, k=k, kinds=["tool"])

    def execute_tool(self, name_or_id: str, arguments: Mapping[str, Any] | None = None, **kwargs: Any) -> ToolResult:
        """Validate arguments against the tool's schema, call it, capture errors, record the outcome.

        Args:
            name_or_id: Tool name or id.
            arguments: Arguments as a mapping (as a model's tool call gives them).
            **kwargs: Arguments as keywords.

        Returns:
            The output, or the captured error (invalid arguments included); never raises for a
            failing call.

        Raises:
            ToolNotFoundError: The tool is not registered in this process.
        """
        tool = self.get_tool(name_or_id)
        args = {**(arguments or {}), **kwargs}
        start = time.perf_counter()
        try:
            validated = tool.args_model.model_validate(args)
            call_args = {k: getattr(validated, k) for k in type(validated).model_fields}
            output = tool.fn(**call_args)
            result = ToolResult(tool=tool.name, success=True, output=output)
        except pydantic.ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(x) for x in err["loc"])
            result = ToolResult(
                tool=tool.name, success=False, error=f"ValidationError: argument {field!r}: {err['msg']}"
            )
        except Exception as exc:
            result = ToolResult(tool=tool.name, success=False, error=f"{type(exc).__name__}: {exc}")
        result.duration = time.perf_counter() - start
        self.memory.record_outcome(tool.id, result.success, duration=result.duration, error=result.error)
        return result


class Workflow:
    """A process procedure: a named sequence of steps, executed step by step (seed 000).

    Args:
        name: Workflow name.
        description: What it is for.
        memory: The ``ProceduralMemory`` to store it in.
        memory_provider: The same, under seed 000's name
            (``Workflow(name=..., description=..., memory_provider=...)``).
        workflow_id: Id of a stored workflow to bind to (see :meth:`retrieve_workflow`).

    Raises:
        ValidationError: ``name`` is empty.
        ConfigurationError: Both or neither memory given.
    """

    def __init__(self, name: str, description: str = "", memory: Any = None, *, memory_provider: Any = None,
                 workflow_id: str | None = None) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ValidationError(f"name must be a non-empty str, got {name!r}", field="name", value=name)
        self.name = name
        self.description = description
        self.memory = _memory("Workflow", memory, memory_provider)
        self.id = workflow_id

    def create_workflow(
        self,
        steps: Sequence[Any],
        *,
        parameters: Mapping[str, Any] | None = None,
        triggers: Sequence[str] = (),
        tags: Sequence[str] = (),
    ) -> str:
        """Store the workflow from its steps (a new version if it exists); returns its id.

        Args:
            steps: ``{"step": label, "action": text}`` dicts (seed 000), :class:`Step` objects,
                strings, or ``{"function", "parameters", "condition"}`` dicts to run code.
            parameters: Default parameters.
            triggers: Situations it is for.
            tags: Labels.
        """
        wid = self.id or f"workflow:{self.memory.namespace}:{self.name}"
        self.id = self.memory.store_procedure(
            wid,
            list(steps),
            parameters=parameters,
            name=self.name,
            description=self.description,
            kind="workflow",
            triggers=triggers,
            tags=tags,
        )
        return self.id

    @classmethod
    def retrieve_workflow(cls, workflow_id: str, memory: Any = None, *, memory_provider: Any = None) -> Workflow:
        """Bind to a stored workflow.

        Args:
            workflow_id: Its id.
            memory: The ``ProceduralMemory``.
            memory_provider: The same, under seed 000's name.

        Raises:
            ProcedureNotFoundError: Unknown id.
            ConfigurationError: Both or neither memory given.
        """
        memory = _memory("retrieve_workflow", memory, memory_provider)
        proc = memory.get(workflow_id)
        return cls(proc.name, proc.description, memory, workflow_id=proc.id)

    @property
    def steps(self) -> list[Step]:
        """The stored steps."""
        if self.id is None:
            return []
        return self.memory.get(self.id, touch=False).steps

    def execute(
        self,
        parameters: Mapping[str, Any] | None = None,
        *,
        context: Any = None,
        handler: Callable[[Step, dict[str, Any]], Any] | None = None,
    ) -> ExecutionResult:
        """Execute step by step, honouring each step's condition; the outcome is recorded.

        Args:
            parameters: Call-time parameters.
            context: Passed to step functions that accept ``context``.
            handler: Runs steps that name no function, as ``handler(step, state)``.

        Raises:
            ConfigurationError: The workflow was never created.
        """
        if self.id is None:
            raise ConfigurationError(f"workflow {self.name!r} has not been created; call create_workflow")
        return self.memory.execute_procedure(self.id, context, parameters, handler=handler)
