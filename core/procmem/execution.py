"""Executing stored procedures against a registry of real Python callables.

A stored step names a function (``Step.function``); executing the procedure looks that name up
in a :class:`FunctionRegistry` populated by the running process. Nothing is ever imported,
evaluated or unpickled from stored data: a name that is not registered raises
:class:`~procmem.errors.ToolNotFoundError` (seed 002 used a placeholder resolver that returned
a dummy lambda for any name).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

from procmem.errors import ConfigurationError, ExecutionError, ToolNotFoundError, ValidationError
from procmem.types import ExecutionResult, Procedure, Step

__all__ = ["FunctionRegistry", "execute_steps"]

F = TypeVar("F", bound=Callable[..., Any])


class FunctionRegistry:
    """Names mapped to the callables stored steps may run, in this process only.

    Example:
        >>> registry = FunctionRegistry()
        >>> @registry.register
        ... def greet(name: str) -> str:
        ...     return f"hello {name}"
        >>> registry.get("greet")("Ada")
        'hello Ada'
    """

    def __init__(self) -> None:
        self._functions: dict[str, Callable[..., Any]] = {}

    @overload
    def register(self, fn: F, *, name: str | None = None) -> F: ...

    @overload
    def register(self, fn: None = None, *, name: str | None = None) -> Callable[[F], F]: ...

    def register(self, fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
        """Register a callable under ``name`` (default: its ``__name__``); usable as a decorator.

        Raises:
            ConfigurationError: ``fn`` is not callable or the name is empty.
        """
        if fn is None:
            return lambda f: self.register(f, name=name)
        if not callable(fn):
            raise ConfigurationError(f"fn must be callable, got {type(fn).__name__}")
        key = name or getattr(fn, "__name__", None)
        if not key or not isinstance(key, str):
            raise ConfigurationError(f"a registered function needs a non-empty name, got {key!r}")
        self._functions[key] = fn
        return fn

    def unregister(self, name: str) -> None:
        """Remove a registered function (no error if absent)."""
        self._functions.pop(name, None)

    def get(self, name: str) -> Callable[..., Any]:
        """Return the callable registered under ``name``.

        Raises:
            ToolNotFoundError: Nothing is registered under this name.
        """
        try:
            return self._functions[name]
        except KeyError:
            known = ", ".join(sorted(self._functions)) or "none"
            raise ToolNotFoundError(
                f"function {name!r} is not registered in this process (registered: {known})"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._functions

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._functions)


def _accepts(fn: Callable[..., Any]) -> tuple[set[str], bool]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return set(), True
    names = {p.name for p in sig.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    return names, var_kw


def _resolve(value: Any, state: Mapping[str, Any]) -> Any:
    """Replace a string of the exact form ``"{name}"`` by ``state[name]``."""
    if isinstance(value, str) and len(value) > 2 and value[0] == "{" and value[-1] == "}":
        key = value[1:-1]
        if key.isidentifier() and key in state:
            return state[key]
    if isinstance(value, dict):
        return {k: _resolve(v, state) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, state) for v in value]
    return value


def _condition_holds(step: Step, registry: FunctionRegistry, state: dict[str, Any], context: Any) -> bool:
    cond = (step.condition or "").strip()
    if not cond:
        return True
    negate = cond.startswith("not ")
    name = cond[4:].strip() if negate else cond
    if name in registry:
        result = bool(_call(registry.get(name), {}, state, context))
    elif name in state:
        result = bool(state[name])
    else:
        raise ValidationError(
            f"step condition {cond!r} names neither a registered predicate nor a parameter",
            field="condition",
            value=cond,
        )
    return not result if negate else result


def _call(fn: Callable[..., Any], step_params: Mapping[str, Any], state: Mapping[str, Any], context: Any) -> Any:
    names, var_kw = _accepts(fn)
    kwargs: dict[str, Any] = {}
    # Procedure-wide parameters and earlier step outputs go to functions that accept them.
    for key, value in state.items():
        if var_kw or key in names:
            kwargs[key] = value
    kwargs.update(step_params)
    if "context" in names or var_kw:
        kwargs.setdefault("context", context)
    if not var_kw:
        unknown = set(kwargs) - names
        if unknown & set(step_params):
            raise ValidationError(
                f"{getattr(fn, '__name__', fn)!r} does not accept parameter(s) {sorted(unknown & set(step_params))}",
                field="parameters",
                value=sorted(unknown),
            )
        kwargs = {k: v for k, v in kwargs.items() if k in names}
    return fn(**kwargs)


def execute_steps(
    procedure: Procedure,
    registry: FunctionRegistry,
    *,
    parameters: Mapping[str, Any] | None = None,
    context: Any = None,
    handler: Callable[[Step, dict[str, Any]], Any] | None = None,
) -> ExecutionResult:
    """Run a procedure's steps in order, passing parameters; never raises for a failing step.

    Parameters merge the procedure's defaults with ``parameters``. Each step's own parameters
    may refer to them (or to an earlier step's output) as ``"{name}"``. A step's return value
    is stored under the step's ``name`` (and, when it is a dict, its keys are added) for later
    steps. A step with a ``condition`` runs only when the named registered predicate or
    parameter is truthy (``"not name"`` negates).

    Args:
        procedure: The procedure to run.
        registry: Where step function names are looked up.
        parameters: Call-time parameters overriding the procedure's defaults.
        context: Passed as ``context=`` to functions that accept it.
        handler: Called as ``handler(step, state)`` for steps that name no function (text
            workflows); without it such a step fails.

    Returns:
        The per-step results, skipped steps, and the first error with its step index.
    """
    state: dict[str, Any] = dict(procedure.parameters)
    state.update(parameters or {})
    results: list[Any] = []
    skipped: list[int] = []
    start = time.perf_counter()
    for i, step in enumerate(procedure.steps):
        try:
            if not _condition_holds(step, registry, state, context):
                skipped.append(i)
                continue
            params = _resolve(step.parameters, state)
            if step.function:
                value = _call(registry.get(step.function), params, state, context)
            elif handler is not None:
                value = handler(step, state)
            else:
                raise ExecutionError(
                    f"step {i} ({step.action!r}) names no function; register one and set "
                    "Step.function, or pass handler=",
                    step_index=i,
                )
        except Exception as exc:  # captured: a failing step fails the execution, not the caller
            return ExecutionResult(
                success=False,
                results=results,
                skipped=skipped,
                error=f"{type(exc).__name__}: {exc}",
                failed_step=i,
                duration=time.perf_counter() - start,
            )
        results.append(value)
        if step.name:
            state[step.name] = value
        if isinstance(value, dict):
            state.update({k: v for k, v in value.items() if isinstance(k, str)})
    return ExecutionResult(success=True, results=results, skipped=skipped, duration=time.perf_counter() - start)
