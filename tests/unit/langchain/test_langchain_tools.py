"""The procmem tools: readable results, artifacts, recoverable errors as ToolException, namespaces."""

from __future__ import annotations

import pytest
from langchain_core.messages import ToolMessage
from langchain_core.tools import BaseTool, ToolException
from procmem.errors import ConfigurationError

from langchain_procmem import (
    PredictNextActionTool,
    ProceduralMemoryToolkit,
    RecordOutcomeTool,
    SaveProcedureTool,
    SearchProceduresTool,
    create_procmem_tools,
)
from langchain_procmem.tools import TOOL_NAMES


def _call(tool: BaseTool, args: dict, call_id: str = "c1") -> ToolMessage:
    return tool.invoke({"name": tool.name, "args": args, "id": call_id, "type": "tool_call"})


def test_factory_builds_all_four_in_order(memory):
    tools = create_procmem_tools(memory)
    assert (
        [t.name for t in tools]
        == list(TOOL_NAMES)
        == [
            "search_procedures",
            "save_procedure",
            "record_outcome",
            "predict_next_action",
        ]
    )
    for t in tools:
        assert t.handle_tool_error is True
        assert t.response_format == "content_and_artifact"
        assert t.description
        assert t.get_input_schema().model_json_schema()["properties"]


def test_factory_include_and_namespace(memory):
    tools = create_procmem_tools(memory, include=["predict_next_action", "search_procedures"], namespace="agent-7")
    assert [t.name for t in tools] == ["predict_next_action", "search_procedures"]
    assert all(t.namespace == "agent-7" for t in tools)
    with pytest.raises(ConfigurationError, match="unknown procmem tool name"):
        create_procmem_tools(memory, include=["search_procedures", "delete_everything"])
    with pytest.raises(ConfigurationError, match="list of tool names"):
        create_procmem_tools(memory, include="search_procedures")


def test_toolkit(memory):
    toolkit = ProceduralMemoryToolkit(memory=memory, include=["save_procedure"], namespace="ns")
    (tool,) = toolkit.get_tools()
    assert isinstance(tool, SaveProcedureTool) and tool.namespace == "ns"


def test_search_returns_text_and_artifact(seeded):
    msg = _call(SearchProceduresTool(memory=seeded), {"query": "deploy the web app to production", "k": 2})
    assert isinstance(msg, ToolMessage) and msg.status == "success"
    assert "id=deploy" in msg.content and "1. git pull" in msg.content
    assert [a["id"] for a in msg.artifact][0] == "deploy"
    assert set(msg.artifact[0]) == {"id", "name", "kind", "version", "score", "success_rate", "reason"}


def test_search_filters_and_empty(seeded):
    tool = SearchProceduresTool(memory=seeded)
    content = tool.invoke({"query": "customer", "k": 5, "tags": ["support"]})
    assert "id=refund" in content and "id=deploy" not in content
    assert "No stored procedure" in tool.invoke({"query": "deploy", "kinds": ["persona"]})


def test_invalid_arguments_come_back_as_a_message_naming_the_field(seeded):
    msg = _call(SearchProceduresTool(memory=seeded), {"query": "deploy", "k": 0})
    assert "k" in msg.content and "greater than or equal to 1" in msg.content
    msg = _call(SearchProceduresTool(memory=seeded), {"query": "deploy", "kinds": ["spell"]})
    assert "kinds" in msg.content


def test_save_creates_then_revises(memory):
    tool = SaveProcedureTool(memory=memory)
    msg = _call(tool, {"name": "rotate logs", "steps": ["gzip logs", "rm old logs"], "tags": ["ops"]})
    assert msg.content.startswith("Saved new procedure 'rotate logs'")
    pid = msg.artifact["id"]
    proc = memory.get(pid)
    assert [s.action for s in proc.steps] == ["gzip logs", "rm old logs"]
    assert proc.kind.value == "workflow" and proc.tags == ["ops"]

    msg = _call(
        tool, {"name": "rotate logs", "steps": ["gzip logs", "rm logs older than 30 days"], "procedure_id": pid}
    )
    assert msg.content.startswith("Revised procedure") and msg.artifact["version"] == 2
    assert memory.get(pid).tags == ["ops"]  # kept when not given
    assert [v.version for v in memory.versions(pid)] == [1, 2]


def test_saving_the_same_name_again_revises_it_not_a_duplicate(seeded):
    # Without procedure_id every save was a new procedure with a random id: an agent saving
    # "Rotate logs" after each success piled up copies. The id is now the core's slug of the name.
    tool = SaveProcedureTool(memory=seeded)
    first = _call(tool, {"name": "Rotate logs", "steps": ["gzip logs"], "tags": ["ops"]})
    assert first.content.startswith("Saved new procedure") and first.artifact["id"] == "rotate-logs"
    again = _call(tool, {"name": "rotate logs!", "steps": ["gzip logs", "rm old logs"], "kind": "skill"})
    assert again.content.startswith("Revised procedure 'rotate logs!' (id: rotate-logs, version 2")
    assert [v.version for v in seeded.versions("rotate-logs")] == [1, 2]
    proc = seeded.get("rotate-logs", touch=False)
    assert proc.kind.value == "skill" and proc.tags == ["ops"] and len(seeded.list(tags=["ops"])) == 3
    # A name whose slug is a stored procedure's id in this namespace revises that procedure.
    msg = _call(tool, {"name": "Deploy", "steps": ["git pull", "make deploy"]})
    assert msg.content.startswith("Revised") and msg.artifact == {
        "id": "deploy", "name": "Deploy", "kind": "workflow", "version": 2,
    }
    assert seeded.get("deploy", touch=False).description == "Deploy the web app to production"  # kept


def test_save_by_name_odd_names(memory):
    tool = SaveProcedureTool(memory=memory)
    msg = _call(tool, {"name": "!!!", "steps": ["a"]})
    assert msg.status == "error" and "name" in msg.content and "letter or digit" in msg.content
    long_name = "clean up " * 110  # 990 characters
    pid = _call(tool, {"name": long_name, "steps": ["a"]}).artifact["id"]
    assert len(pid) <= 64 and pid.startswith("clean-up-clean-up")
    assert _call(tool, {"name": long_name.upper(), "steps": ["b"]}).artifact == {
        "id": pid, "name": long_name.upper(), "kind": "workflow", "version": 2,
    }


def test_namespaces_sharing_a_store_save_the_same_name_apart(seeded):
    mine = SaveProcedureTool(memory=seeded)
    theirs = SaveProcedureTool(memory=seeded, namespace="agent-b")
    assert _call(theirs, {"name": "Deploy", "steps": ["rm -rf build"]}).artifact["id"] == "deploy-agent-b"
    msg = _call(theirs, {"name": "deploy", "steps": ["make clean"]})
    assert msg.content.startswith("Revised") and msg.artifact["version"] == 2
    assert _call(mine, {"name": "Deploy", "steps": ["git pull"]}).artifact == {
        "id": "deploy", "name": "Deploy", "kind": "workflow", "version": 2,
    }
    assert seeded.get("deploy-agent-b", touch=False).namespace == "agent-b"
    assert [s.action for s in seeded.get("deploy-agent-b", touch=False).steps] == ["make clean"]


def test_save_unknown_id_and_invalid_fields_are_recoverable(memory):
    tool = SaveProcedureTool(memory=memory)
    msg = _call(tool, {"name": "x", "steps": ["a"], "procedure_id": "missing"})
    assert msg.status == "error" and "missing" in msg.content and "search_procedures" in msg.content
    msg = _call(tool, {"name": "x", "steps": []})
    assert "steps" in msg.content
    msg = _call(tool, {"name": "x", "steps": ["   "]})
    assert msg.status == "error" and "steps" in msg.content
    with pytest.raises(ToolException):
        SaveProcedureTool(memory=memory, handle_tool_error=False).invoke({"name": "x", "steps": ["  "]})


def test_record_outcome_updates_stats(seeded):
    tool = RecordOutcomeTool(memory=seeded)
    msg = _call(tool, {"procedure_id": "deploy", "success": True, "duration": 4.0, "notes": "smooth"})
    assert "1/1 successful" in msg.content
    msg = _call(tool, {"procedure_id": "deploy", "success": False, "error": "build broke"})
    assert "Recorded failure" in msg.content and "1/2 successful" in msg.content
    assert msg.artifact == {"id": "deploy", "successes": 1, "failures": 1, "success_rate": 0.5}
    outcomes = seeded.store.outcomes("deploy")
    assert {o.error for o in outcomes} == {None, "build broke"}


def test_record_outcome_unknown_id_is_recoverable(seeded):
    msg = _call(RecordOutcomeTool(memory=seeded), {"procedure_id": "nope", "success": True})
    assert msg.status == "error" and "'nope'" in msg.content
    msg = _call(RecordOutcomeTool(memory=seeded), {"procedure_id": "deploy", "success": True, "duration": -1})
    assert "duration" in msg.content


def test_namespaces_are_isolated(seeded):
    other = RecordOutcomeTool(memory=seeded, namespace="other-agent")
    msg = _call(other, {"procedure_id": "deploy", "success": True})
    assert msg.status == "error" and "other-agent" in msg.content
    assert seeded.get("deploy").stats.executions == 0
    save = SaveProcedureTool(memory=seeded, namespace="other-agent")
    pid = _call(save, {"name": "mine", "steps": ["a", "b"]}).artifact["id"]
    assert seeded.get(pid).namespace == "other-agent"
    assert "id=deploy" not in SearchProceduresTool(memory=seeded, namespace="other-agent").invoke({"query": "deploy"})


def test_predict_next_action(memory_factory):
    mem = memory_factory("pred")
    tool = PredictNextActionTool(memory=mem)
    assert "No prediction" in tool.invoke({"recent_actions": []})
    for _ in range(3):
        mem.learn_session(["git add .", "git commit -m 'x'", "git push"], "success")
    msg = _call(tool, {"recent_actions": ["git add .", "git commit -m 'y'"], "top_k": 2})
    assert msg.content.splitlines()[1].startswith("1. git push (confidence ")
    assert msg.artifact[0]["action"] == "git push"
    assert 0.0 <= msg.artifact[0]["confidence"] <= 1.0


async def test_async_tools(seeded):
    tools = {t.name: t for t in create_procmem_tools(seeded)}
    found = await tools["search_procedures"].ainvoke({"query": "deploy the web app"})
    assert "id=deploy" in found
    saved = await tools["save_procedure"].ainvoke({"name": "async one", "steps": ["a", "b"]})
    assert saved.startswith("Saved new procedure")
    saved = await tools["save_procedure"].ainvoke({"name": "Async one", "steps": ["a", "b", "c"]})
    assert saved.startswith("Revised procedure 'Async one' (id: async-one, version 2")
    recorded = await tools["record_outcome"].ainvoke({"procedure_id": "deploy", "success": True})
    assert "1/1" in recorded
    msg = await tools["record_outcome"].ainvoke(
        {"name": "record_outcome", "args": {"procedure_id": "nope", "success": True}, "id": "c", "type": "tool_call"}
    )
    assert msg.status == "error"
    predicted = await tools["predict_next_action"].ainvoke({"recent_actions": []})
    assert isinstance(predicted, str)
