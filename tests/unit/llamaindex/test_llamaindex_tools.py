"""ProceduralMemoryToolSpec: FunctionTool schemas, sync and async calls, errors."""

import pytest
from llama_index.core.tools import FunctionTool
from llamaindex_helpers import BOOKING

from llamaindex_procmem import ProceduralMemoryToolSpec
from procmem.errors import ConfigurationError, ProcedureNotFoundError, ValidationError

NAMES = ["search_procedures", "save_procedure", "record_outcome", "predict_next_action"]


@pytest.fixture
def spec(pm):
    return ProceduralMemoryToolSpec(memory=pm)


@pytest.fixture
def tools(spec):
    return {t.metadata.name: t for t in spec.to_tool_list()}


def props(tool):
    return tool.metadata.get_parameters_dict()


def test_tool_list_has_sync_and_async_functions(spec, tools):
    assert list(tools) == NAMES
    for name, tool in tools.items():
        assert isinstance(tool, FunctionTool)
        assert tool.real_fn.__name__ == name
        assert tool.async_fn.__name__ == "a" + name  # native async, not a wrapped sync function


@pytest.mark.parametrize(
    ("name", "expected", "required"),
    [
        ("search_procedures", {"query": "string", "k": "integer", "kind": "string"}, ["query"]),
        (
            "save_procedure",
            {"name": "string", "steps": "array", "description": "string", "triggers": "array", "kind": "string"},
            ["name", "steps"],
        ),
        (
            "record_outcome",
            {
                "procedure_id": "string",
                "success": "boolean",
                "query": "string",
                "error": "string",
                "duration": "number",
            },
            ["procedure_id", "success"],
        ),
        ("predict_next_action", {"recent_actions": "array", "task": "string", "top_k": "integer"}, ["recent_actions"]),
    ],
)
def test_schemas_name_type_and_describe_every_argument(tools, name, expected, required):
    schema = props(tools[name])
    assert sorted(schema["required"]) == sorted(required)
    assert list(schema["properties"]) == list(expected)
    for arg, json_type in expected.items():
        prop = schema["properties"][arg]
        types = {prop.get("type")} | {alt.get("type") for alt in prop.get("anyOf", [])}
        assert json_type in types, (arg, prop)
        assert prop.get("description"), (name, arg)
    if "steps" in expected:
        assert schema["properties"]["steps"]["items"] == {"type": "string"}
    description = tools[name].metadata.description
    assert description.startswith(name + "(")
    assert len(description) < 1024  # OpenAI's limit on function descriptions


def test_save_search_record_predict(pm, tools):
    out = tools["save_procedure"](
        name="Deploy web app",
        steps=["git pull", "make build", "make deploy"],
        description="Deploy the web application",
        triggers=["ship it"],
    ).content
    assert out == "Saved procedure 'Deploy web app' (id=deploy-web-app, version 1)."
    again = tools["save_procedure"](name="Deploy web app", steps=["git pull", "make deploy"]).content
    assert again.endswith("version 2).")

    found = tools["search_procedures"](query="deploy the web application").content
    assert found.startswith("[1] id=deploy-web-app")
    assert "1. git pull\n2. make deploy" in found
    assert tools["search_procedures"](query="deploy", kind="skill").content.startswith("No stored procedure")

    recorded = tools["record_outcome"](procedure_id="deploy-web-app", success=True, query="ship the site").content
    assert recorded == "Recorded success of deploy-web-app: 1/1 successful so far."
    assert pm.store.count_usages(namespace=pm.namespace) == 1

    assert tools["predict_next_action"](recent_actions=[]).content.startswith("No prediction")
    pm.learn_session([f"{n}()" for n, _ in BOOKING], "success", "book a flight")
    predicted = tools["predict_next_action"](recent_actions=["search_flights()"], task="book a flight").content
    assert predicted.splitlines()[0].startswith("- book_flight() (confidence ")


async def test_async_calls(pm, tools):
    out = await tools["save_procedure"].acall(name="Onboard", steps=["create account", "send welcome email"])
    assert "id=onboard" in out.content
    found = await tools["search_procedures"].acall(query="onboard a new employee", k=1)
    assert found.content.startswith("[1] id=onboard")
    failed = await tools["record_outcome"].acall(procedure_id="onboard", success=False, error="no email", duration=2.5)
    assert failed.content == "Recorded failure of onboard: 0/1 successful so far."
    assert pm.get("onboard", touch=False).stats.mean_duration == 2.5
    pm.learn_session([f"{n}()" for n, _ in BOOKING], "success", "book a flight")
    predicted = await tools["predict_next_action"].acall(recent_actions=["search_flights()"])
    assert "book_flight()" in predicted.content


async def test_mistakes_raise_procmem_errors(tools):
    with pytest.raises(ProcedureNotFoundError, match="nope"):
        tools["record_outcome"](procedure_id="nope", success=True)
    with pytest.raises(ProcedureNotFoundError):
        await tools["record_outcome"].acall(procedure_id="nope", success=True)
    with pytest.raises(ValidationError):
        tools["save_procedure"](name="x", steps=[""])
    with pytest.raises(ValidationError, match="top_k"):
        tools["predict_next_action"](recent_actions=["a"], top_k=0)


def test_invalid_options_raise(pm):
    with pytest.raises(ConfigurationError, match="k must be"):
        ProceduralMemoryToolSpec(memory=pm, k=0)
    with pytest.raises(ConfigurationError, match="ProceduralMemory"):
        ProceduralMemoryToolSpec(memory="not a memory")


def test_agents_sharing_a_store_save_the_same_name_apart(pm):
    from procmem import ProceduralMemory

    other = ProceduralMemory(store=pm.store, embedder=pm.embedder, namespace="agent-b")
    mine, theirs = ProceduralMemoryToolSpec(memory=pm), ProceduralMemoryToolSpec(memory=other)
    assert "id=deploy," in mine.save_procedure(name="Deploy", steps=["git pull", "make deploy"])
    assert "id=deploy-agent-b, version 1" in theirs.save_procedure(name="Deploy", steps=["rm -rf build"])
    assert "id=deploy-agent-b, version 2" in theirs.save_procedure(name="Deploy", steps=["make clean"])
    kept = pm.get("deploy", touch=False)
    assert kept.version == 1 and [s.action for s in kept.steps] == ["git pull", "make deploy"]
    assert other.get("deploy-agent-b", touch=False).namespace == "agent-b"


def test_an_agents_id_stays_its_own_when_the_bare_slug_is_freed(pm):
    # The namespace-qualified id was chosen only while the bare slug was taken: once the other
    # agent deleted "deploy", the next save of "Deploy" started a new procedure.
    from procmem import ProceduralMemory

    theirs = ProceduralMemoryToolSpec(memory=ProceduralMemory(store=pm.store, embedder=pm.embedder,
                                                              namespace="agent-b"))
    mine = ProceduralMemoryToolSpec(memory=pm)
    mine.save_procedure(name="Deploy", steps=["git pull"])
    assert "id=deploy-agent-b, version 1" in theirs.save_procedure(name="Deploy", steps=["rm -rf build"])
    pm.delete("deploy")
    assert "id=deploy-agent-b, version 2" in theirs.save_procedure(name="Deploy", steps=["make clean"])
    # Its qualified id taken by another namespace: a third, hash-qualified id, not an error.
    mine.save_procedure(name="Deploy", steps=["git pull"])
    mine.save_procedure(name="Deploy ops", steps=["make ops"])
    ops = ProceduralMemoryToolSpec(memory=ProceduralMemory(store=pm.store, embedder=pm.embedder, namespace="ops"))
    out = ops.save_procedure(name="Deploy", steps=["ansible-playbook site.yml"])
    assert "version 1" in out and "id=deploy," not in out and "id=deploy-ops," not in out


def test_odd_names(pm):
    spec = ProceduralMemoryToolSpec(memory=pm)
    # Every name without an ASCII letter or digit was one procedure, "procedure".
    first = spec.save_procedure(name="部署应用", steps=["git pull", "make deploy"])
    second = spec.save_procedure(name="回滚部署", steps=["git revert HEAD"])
    assert "version 1" in first and "version 1" in second and len(pm.list()) == 2
    with pytest.raises(ValidationError, match="letter or digit"):
        spec.save_procedure(name="!!!", steps=["a"])
    long_name = "clean up " * 110  # its slug was longer than an id may be
    assert "version 1" in spec.save_procedure(name=long_name, steps=["a"])
    assert "version 2" in spec.save_procedure(name=long_name.title(), steps=["b"])


async def test_record_outcome_grades_only_this_namespaces_procedures(pm):
    # The tool recorded outcomes (and usages) on another agent's procedure given its id.
    from procmem import ProceduralMemory

    pm.store_procedure("deploy", ["git pull", "make deploy"])
    other = ProceduralMemoryToolSpec(memory=ProceduralMemory(store=pm.store, embedder=pm.embedder,
                                                             namespace="agent-b"))
    with pytest.raises(ProcedureNotFoundError, match="agent-b"):
        other.record_outcome("deploy", False, query="ship it")
    with pytest.raises(ProcedureNotFoundError, match="agent-b"):
        await other.arecord_outcome("deploy", False)
    kept = pm.get("deploy", touch=False)
    assert kept.stats.executions == 0 and pm.store.count_usages() == 0
    assert "1/1" in ProceduralMemoryToolSpec(memory=pm).record_outcome("deploy", True, query="ship it")
