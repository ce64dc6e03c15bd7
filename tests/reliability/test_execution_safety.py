"""Execution safety: stored data never names its way into running code.

A stored step's ``function`` is looked up in the process's :class:`FunctionRegistry` and nowhere
else: a step naming ``os.system``, ``builtins.eval``, ``__import__``, ``subprocess.run``, a dotted
path or a lambda's source never runs anything (a sentinel file is never created and monkeypatched
dangerous functions are never called), whether the procedure was stored directly, loaded from an
export, or reached through ``Workflow`` / ``Toolbox``. Stored data is never unpickled.
"""

import builtins
import contextlib
import importlib
import json
import os
import pickle
import subprocess

import pytest

from procmem.errors import ImportFormatError, ToolNotFoundError
from procmem.execution import FunctionRegistry
from procmem.memory import MiningConfig, ProceduralMemory
from procmem.procedural import Toolbox, Workflow


@pytest.fixture
def sentinel(tmp_path):
    return tmp_path / "PWNED"


class Tripwires:
    """Dangerous callables replaced by recorders while armed; any call is a failure."""

    TARGETS = [(os, "system"), (os, "popen"), (os, "execv"), (os, "execvp"), (os, "fork"), (subprocess, "run"),
               (subprocess, "Popen"), (subprocess, "call"), (subprocess, "check_output"), (builtins, "eval"),
               (builtins, "exec"), (pickle, "loads"), (pickle, "load"), (importlib, "import_module")]

    def __init__(self):
        self.calls = []

    def _trip(self, name):
        def recorder(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            raise PermissionError(f"tripwire: {name} was called")

        return recorder

    @contextlib.contextmanager
    def armed(self):
        saved = [(mod, attr, getattr(mod, attr)) for mod, attr in self.TARGETS]
        for mod, attr, _ in saved:
            setattr(mod, attr, self._trip(f"{mod.__name__}.{attr}"))
        try:
            yield self
        finally:
            for mod, attr, fn in saved:
                setattr(mod, attr, fn)


@pytest.fixture
def tripwires():
    return Tripwires()


def _memory(path, registry=None):
    from procmem.embeddings import HashingEmbedder

    return ProceduralMemory(path=path, embedder=HashingEmbedder(dim=64), registry=registry,
                            mining=MiningConfig(enabled=False))


def _payloads(sentinel):
    cmd = f"touch {sentinel}"
    src = f"open({str(sentinel)!r}, 'w').write('x')"
    return [
        {"function": "os.system", "parameters": {"command": cmd}},
        {"function": "system", "parameters": {"command": cmd}},
        {"function": "posix.system", "parameters": {"command": cmd}},
        {"function": "subprocess.run", "parameters": {"args": ["touch", str(sentinel)]}},
        {"function": "subprocess.Popen", "parameters": {"args": ["touch", str(sentinel)]}},
        {"function": "builtins.eval", "parameters": {"source": src}},
        {"function": "eval", "parameters": {"source": src}},
        {"function": "exec", "parameters": {"source": src}},
        {"function": "__import__", "parameters": {"name": "os"}},
        {"function": "__import__('os').system", "parameters": {"command": cmd}},
        {"function": f"lambda: {src}"},
        {"function": f"(lambda: {src})()"},
        {"function": "importlib.import_module", "parameters": {"name": "os"}},
        {"function": "pickle.loads", "parameters": {"data": "gASVAAAA"}},
        {"function": "os.path.join.__globals__['os'].system", "parameters": {"command": cmd}},
        {"function": "procmem.memory.os.system", "parameters": {"command": cmd}},
        {"function": "getattr", "parameters": {"o": "os", "name": "system"}},
        {"function": "registered.__class__", "parameters": {}},
        {"function": "../../bin/sh", "parameters": {"c": cmd}},
        {"function": "safe", "condition": "os.system", "parameters": {}},
        {"function": "safe", "condition": f"__import__('os').system('touch {sentinel}')", "parameters": {}},
        {"function": "safe", "parameters": {"x": "{__import__}"}},
        {"function": "safe", "parameters": {"x": "{os.system}"}},
    ]


def _registry(log):
    registry = FunctionRegistry()

    @registry.register
    def safe(**kwargs):
        log.append(kwargs)
        return "ok"

    @registry.register
    def registered():
        return "registered"

    return registry


def test_stored_steps_naming_dangerous_callables_never_run(tmp_path, sentinel, tripwires):
    log = []
    memory = _memory(tmp_path / "s.sqlite3", registry=_registry(log))
    for i, step in enumerate(_payloads(sentinel)):
        pid = memory.store_procedure(f"evil-{i}", [{"action": "do it", **step}])
        with tripwires.armed():
            result = memory.execute_procedure(pid)
        if step["function"] == "safe" and "condition" not in step:
            # "{__import__}" is a placeholder only for a parameter of that name; it stays text
            assert result.success and log[-1]["x"] == step["parameters"]["x"]
        else:
            assert not result.success and result.failed_step == 0, (step, result)
            assert "not registered" in result.error or "condition" in result.error, result.error
    assert not sentinel.exists()
    assert tripwires.calls == []
    assert all(v == "do it" or not isinstance(v, str) or "touch" not in v for entry in log for v in entry.values())


def test_only_the_registry_of_this_memory_runs(tmp_path, sentinel, tripwires):
    """A function registered in one memory's registry is not reachable from another's."""
    log = []
    db = tmp_path / "s.sqlite3"
    owner = _memory(db, registry=_registry(log))
    owner.store_procedure("p", [{"action": "a", "function": "safe"}])
    with tripwires.armed():
        assert owner.execute_procedure("p").success and len(log) == 1
        stranger = _memory(db)  # same store, empty registry
        result = stranger.execute_procedure("p")
    assert not result.success and "not registered" in result.error and len(log) == 1
    with pytest.raises(ToolNotFoundError):
        stranger.registry.get("safe")


def test_dangerous_steps_arriving_in_an_export_never_run(tmp_path, sentinel, tripwires):
    export = tmp_path / "evil.jsonl"
    lines = [json.dumps({"format": "procmem-export", "version": 1})]
    for i, step in enumerate(_payloads(sentinel)):
        if step["function"] == "safe":
            continue
        current = {"id": f"x{i}", "name": f"helpful {i}", "kind": "workflow", "steps": [{"action": "go", **step}]}
        lines.append(json.dumps({"type": "procedure", "current": current, "versions": []}))
    export.write_text("\n".join(lines) + "\n")
    memory = _memory(tmp_path / "s.sqlite3")
    with tripwires.armed():
        loaded = memory.load(export)
        results = [memory.execute_procedure(p.id) for p in memory.list()]
        results += [Workflow.retrieve_workflow(p.id, memory).execute() for p in memory.list()]
    assert loaded["procedures"] == len(lines) - 1
    assert all(not r.success and "not registered" in r.error for r in results)
    assert not sentinel.exists() and tripwires.calls == []


def test_a_stored_tool_without_its_function_cannot_run(tmp_path, sentinel, tripwires):
    memory = _memory(tmp_path / "s.sqlite3")
    memory.add({"id": "tool-sh", "name": "os.system", "kind": "tool", "steps": [{"action": "run", "function":
                "os.system", "parameters": {"command": f"touch {sentinel}"}}]})
    toolbox = Toolbox(memory)
    for name in ("os.system", "tool-sh", "system"):
        with pytest.raises(ToolNotFoundError), tripwires.armed():
            toolbox.execute_tool(name, {"command": f"touch {sentinel}"})
    assert not sentinel.exists() and tripwires.calls == []


def test_a_pickle_payload_given_to_load_is_refused(tmp_path, sentinel, tripwires):
    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {sentinel}",))

    payload = pickle.dumps(Boom())
    memory = _memory(tmp_path / "s.sqlite3")
    header = json.dumps({"format": "procmem-export", "version": 1}).encode() + b"\n"
    for name, data in [("raw.pkl", payload), ("export.jsonl", payload), ("hdr.jsonl", header + payload)]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ImportFormatError), tripwires.armed():
            memory.load(path)
    assert not sentinel.exists() and tripwires.calls == []
    assert memory.list() == []


def test_placeholders_resolve_only_from_parameters_never_from_code(tmp_path, tripwires):
    seen = []
    registry = FunctionRegistry()
    registry.register(lambda value: seen.append(value) or value, name="echo")
    memory = _memory(tmp_path / "s.sqlite3", registry=registry)
    memory.store_procedure("p", [
        {"action": "a", "function": "echo", "parameters": {"value": "{__builtins__}"}},
        {"action": "b", "function": "echo", "parameters": {"value": "{os}"}},
        {"action": "c", "function": "echo", "parameters": {"value": "{name}"}},
        {"action": "d", "function": "echo", "parameters": {"value": "{__class__.__mro__}"}},
    ], parameters={"name": "from parameters"})
    with tripwires.armed():
        result = memory.execute_procedure("p")
    assert result.success
    assert seen == ["{__builtins__}", "{os}", "from parameters", "{__class__.__mro__}"]
    assert tripwires.calls == []
