"""``ProceduralMemoryMiddleware``: hooks one by one, then whole ``create_agent`` runs (scripted model)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import ModelRequest, ModelResponse
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import ToolException, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command
from procmem import Procedure
from procmem.errors import ConfigurationError, RetrievalError

from langchain_procmem import ProceduralMemoryMiddleware
from langchain_procmem.middleware import _RESET, _add_records, _follows, format_tool_call

# ---------------------------------------------------------------------- pure helpers


def test_format_tool_call_keeps_argument_order_and_cuts_long_values():
    assert format_tool_call("book", {"flight": "AF5", "seats": 2}) == "book(flight='AF5', seats=2)"
    assert format_tool_call("ping") == "ping()"
    long = format_tool_call("email", {"body": "x" * 500, "ids": list(range(100))}, max_arg_chars=20)
    assert long == "email(body='" + "x" * 17 + "...', ids=" + repr(list(range(100)))[:17] + "...)"


def test_follows_is_an_in_order_subsequence_of_tool_steps():
    proc = Procedure(name="p", steps=["search(q='<STR>')", "book", "email(to='a')"])
    assert _follows(proc, ["search", "look", "book", "email"])
    assert not _follows(proc, ["book", "search", "email"])
    assert not _follows(Procedure(name="prose", steps=["Apologise to the customer"]), ["Apologise"])
    assert not _follows(Procedure(name="empty"), ["search"])


def test_trajectory_reducer_appends_and_resets():
    assert _add_records(None, [{"tool": "a"}]) == [{"tool": "a"}]
    assert _add_records([{"tool": "a"}], [{"tool": "b"}]) == [{"tool": "a"}, {"tool": "b"}]
    assert _add_records([{"tool": "a"}], [{_RESET: True}, {"tool": "c"}]) == [{"tool": "c"}]


def test_options_are_validated(memory):
    with pytest.raises(ConfigurationError, match="memory"):
        ProceduralMemoryMiddleware(memory="not a memory")
    for bad in ({"k": -1}, {"top_k_predictions": 0}, {"min_confidence": 2}, {"action_format": "json"}):
        with pytest.raises(ConfigurationError):
            ProceduralMemoryMiddleware(memory=memory, **bad)
    with pytest.raises(ConfigurationError, match="record_usage"):
        ProceduralMemoryMiddleware(memory=memory, record_usage="always")


# ---------------------------------------------------------------------- hooks one by one


def test_before_agent_starts_a_run(memory):
    mw = ProceduralMemoryMiddleware(memory=memory)
    update = mw.before_agent({"messages": [HumanMessage("first"), AIMessage("hi"), HumanMessage("refund 42")]}, None)
    assert update["procmem_run"]["task"] == "refund 42"
    assert len(update["procmem_run"]["id"]) == 32
    assert update["procmem_trajectory"] == [{_RESET: True}]


def test_build_prompt(seeded, memory_factory):
    assert ProceduralMemoryMiddleware(memory=memory_factory("empty")).build_prompt("anything") == ""
    text = ProceduralMemoryMiddleware(memory=seeded, k=1, header="# Memory").build_prompt("refund a customer's order")
    lines = text.splitlines()
    assert lines[0] == "# Memory"
    assert lines[2] == "[1] refund (workflow, v1) [id: refund]"
    assert "1. look_up_order" in text
    assert ProceduralMemoryMiddleware(memory=seeded, k=0, predict=False).build_prompt("refund") == ""


def test_before_model_caches_the_search_per_query(seeded, monkeypatch):
    mw = ProceduralMemoryMiddleware(memory=seeded, k=2, predict=False)
    state = {"messages": [HumanMessage("deploy the web app")], "procmem_run": {"task": "deploy the web app"}}
    update = mw.before_model(state, None)
    ctx = update["procmem_context"]
    assert ctx["query"] == "deploy the web app" and ctx["shown"][0] == "deploy"
    assert ctx["text"].startswith("## Procedural memory\n")
    calls = []
    monkeypatch.setattr(seeded, "search", lambda *a, **k: calls.append(a) or [])
    assert mw.before_model({**state, "procmem_context": ctx}, None) is None  # nothing changed, no search
    assert calls == []


def _request(system: SystemMessage | None, text: str) -> ModelRequest:
    return ModelRequest(
        model=None,
        messages=[HumanMessage("hi")],
        system_message=system,
        state={"messages": [], "procmem_context": {"text": text}},
    )


@pytest.mark.parametrize(
    ("system", "expected"),
    [
        (None, "MEMORY"),
        (SystemMessage("Be brief."), "Be brief.\n\nMEMORY"),
        (SystemMessage(content=[{"type": "text", "text": "Be brief."}]), "Be brief.MEMORY"),
    ],
)
def test_wrap_model_call_appends_to_the_system_message(memory, system, expected):
    mw = ProceduralMemoryMiddleware(memory=memory)
    got = []
    mw.wrap_model_call(_request(system, "MEMORY"), lambda r: got.append(r) or ModelResponse(result=[AIMessage("ok")]))
    assert str(got[0].system_message.text) == expected
    # No memory text: the request passes through untouched.
    request = _request(system, "")
    mw.wrap_model_call(request, lambda r: got.append(r) or ModelResponse(result=[]))
    assert got[-1] is request


async def test_awrap_model_call(memory):
    mw = ProceduralMemoryMiddleware(memory=memory)
    got = []

    async def handler(r):
        got.append(r)
        return ModelResponse(result=[AIMessage("ok")])

    await mw.awrap_model_call(_request(SystemMessage("S"), "M"), handler)
    assert str(got[0].system_message.text) == "S\n\nM"


def _tool_request(name="book", args=None, call_id="call_1") -> ToolCallRequest:
    call = {"name": name, "args": args or {"flight": "AF5"}, "id": call_id, "type": "tool_call"}
    return ToolCallRequest(tool_call=call, tool=None, state={}, runtime=None)


def test_wrap_tool_call_records_success_and_failure(memory):
    mw = ProceduralMemoryMiddleware(memory=memory)
    ok = mw.wrap_tool_call(_tool_request(), lambda r: ToolMessage("Booked", tool_call_id="call_1"))
    assert isinstance(ok, Command)
    assert ok.update["messages"][0].content == "Booked"
    (record,) = ok.update["procmem_trajectory"]
    assert record["tool"] == "book" and record["args"] == {"flight": "AF5"} and record["tool_call_id"] == "call_1"
    assert record["success"] is True and record["error"] is None and record["duration"] >= 0

    failed = mw.wrap_tool_call(
        _tool_request(), lambda r: ToolMessage("Error: sold out", tool_call_id="call_1", status="error")
    )
    (record,) = failed.update["procmem_trajectory"]
    assert record["success"] is False and record["error"] == "Error: sold out"


def test_wrap_tool_call_merges_into_a_tool_command(memory):
    mw = ProceduralMemoryMiddleware(memory=memory)
    command = Command(update={"messages": [ToolMessage("x", tool_call_id="call_1")], "other": 1})
    out = mw.wrap_tool_call(_tool_request(), lambda r: command)
    assert out.update["other"] == 1 and len(out.update["procmem_trajectory"]) == 1
    parent = Command(graph=Command.PARENT, goto="elsewhere")
    assert mw.wrap_tool_call(_tool_request(), lambda r: parent) is parent
    listed = mw.wrap_tool_call(_tool_request(), lambda r: [ToolMessage("x", tool_call_id="call_1")])
    assert isinstance(listed[-1], Command) and listed[-1].update["procmem_trajectory"][0]["tool"] == "book"


async def test_awrap_tool_call(memory):
    mw = ProceduralMemoryMiddleware(memory=memory)

    async def handler(r):
        await asyncio.sleep(0.01)
        return ToolMessage("ok", tool_call_id="call_1")

    out = await mw.awrap_tool_call(_tool_request(), handler)
    assert out.update["procmem_trajectory"][0]["duration"] >= 0.01


def test_wrap_tool_call_lets_exceptions_through(memory):
    mw = ProceduralMemoryMiddleware(memory=memory)

    def boom(r):
        raise RuntimeError("tool crashed")

    with pytest.raises(RuntimeError, match="tool crashed"):
        mw.wrap_tool_call(_tool_request(), boom)


# ---------------------------------------------------------------------- whole runs


@pytest.fixture
def calls():
    return []


@pytest.fixture
def tools(calls):
    @tool
    def look_up_order(order_id: int) -> str:
        """Look up an order."""
        calls.append(("look_up_order", order_id))
        return f"order {order_id}: 2 items"

    @tool
    def issue_refund(order_id: int) -> str:
        """Refund an order."""
        calls.append(("issue_refund", order_id))
        if order_id == 13:
            raise ToolException("refund window closed")
        return f"refunded {order_id}"

    issue_refund.handle_tool_error = True

    @tool
    def email_customer(order_id: int, message: str) -> str:
        """Email the customer about an order."""
        calls.append(("email_customer", order_id))
        return "sent"

    return [look_up_order, issue_refund, email_customer]


def refund_script(order_id: int):
    return [
        [("look_up_order", {"order_id": order_id})],
        [("issue_refund", {"order_id": order_id})],
        [("email_customer", {"order_id": order_id, "message": "Your refund is on its way"})],
    ]


def test_run_is_learned_as_a_session(memory, scripted, tools, calls):
    agent = create_agent(
        scripted(script=refund_script(42)), tools=tools, middleware=[ProceduralMemoryMiddleware(memory=memory)]
    )
    result = agent.invoke({"messages": [("user", "Refund order 42")]})
    assert [c[0] for c in calls] == ["look_up_order", "issue_refund", "email_customer"]
    assert [r["tool"] for r in result["procmem_trajectory"]] == [c[0] for c in calls]
    (session,) = memory.store.iter_sessions()
    assert session.outcome == "success" and session.task == "Refund order 42"
    assert session.actions == [
        "look_up_order(order_id=42)",
        "issue_refund(order_id=42)",
        "email_customer(order_id=42, message='Your refund is on its way')",
    ]
    assert session.timestamps is not None and len(session.timestamps) == 3
    assert len(session.session_id) == 32 and "procmem_run" not in result  # private to the middleware


def test_failed_tool_makes_a_failed_session(memory, scripted, tools):
    agent = create_agent(
        scripted(script=refund_script(13)), tools=tools, middleware=[ProceduralMemoryMiddleware(memory=memory)]
    )
    result = agent.invoke({"messages": [("user", "Refund order 13")]})
    failed = [r for r in result["procmem_trajectory"] if not r["success"]]
    assert [r["tool"] for r in failed] == ["issue_refund"] and "refund window closed" in failed[0]["error"]
    (session,) = memory.store.iter_sessions()
    assert session.outcome == "failure"


def test_judge_action_format_and_learn_off(memory_factory, scripted, tools):
    seen = []

    def judge(state, trajectory):
        seen.append((len(state["messages"]), [r["tool"] for r in trajectory]))
        return None  # unknown

    mem = memory_factory("judge")
    mw = ProceduralMemoryMiddleware(memory=mem, judge=judge, action_format="name")
    create_agent(scripted(script=refund_script(42)), tools=tools, middleware=[mw]).invoke({"messages": [("user", "r")]})
    assert seen == [(8, ["look_up_order", "issue_refund", "email_customer"])]
    (session,) = mem.store.iter_sessions()
    assert session.actions == ["look_up_order", "issue_refund", "email_customer"] and session.outcome is None

    custom = ProceduralMemoryMiddleware(memory=mem, action_format=lambda r: r["tool"].upper())
    assert custom.action({"tool": "x", "args": {}}) == "X"

    off = memory_factory("off")
    mw = ProceduralMemoryMiddleware(memory=off, learn=False)
    create_agent(scripted(script=refund_script(42)), tools=tools, middleware=[mw]).invoke({"messages": [("user", "r")]})
    assert list(off.store.iter_sessions()) == []


def test_followed_procedure_gets_usage_and_outcome(seeded, scripted, tools):
    mw = ProceduralMemoryMiddleware(memory=seeded)
    create_agent(scripted(script=refund_script(42)), tools=tools, middleware=[mw]).invoke(
        {"messages": [("user", "Refund a customer's order 42")]}
    )
    assert seeded.store.count_usages() == 1  # "refund" was shown and followed; the others were not
    refund = seeded.get("refund")
    assert refund.stats.successes == 1 and refund.stats.timed_executions == 1
    assert seeded.get("deploy").stats.executions == 0


def test_shown_and_off_usage_policies(seeded, scripted, tools):
    embedded: list[str] = []
    embed = seeded.embedder.embed_documents
    seeded.embedder.embed_documents = lambda texts: embedded.extend(texts) or embed(texts)
    shown = ProceduralMemoryMiddleware(memory=seeded, k=2, record_usage="shown")
    create_agent(scripted(script=refund_script(42)), tools=tools, middleware=[shown]).invoke(
        {"messages": [("user", "Refund a customer's order 42")]}
    )
    assert seeded.store.count_usages() == 2
    assert embedded == ["Refund a customer's order 42"]  # one embedding for both credits
    assert seeded.get("refund").stats.executions == 0  # outcomes only for followed procedures

    off = ProceduralMemoryMiddleware(memory=seeded, record_usage="off")
    create_agent(scripted(script=refund_script(42)), tools=tools, middleware=[off]).invoke(
        {"messages": [("user", "Refund a customer's order 42")]}
    )
    assert seeded.store.count_usages() == 2


def test_namespace_from_runtime_context(memory, scripted, tools):
    @dataclass
    class Context:
        user_id: str

    mw = ProceduralMemoryMiddleware(memory=memory, namespace=lambda runtime: f"user-{runtime.context.user_id}")
    agent = create_agent(scripted(script=refund_script(42)), tools=tools, middleware=[mw], context_schema=Context)
    agent.invoke({"messages": [("user", "Refund order 42")]}, context=Context(user_id="ada"))
    assert list(memory.store.iter_sessions(namespace="default")) == []
    assert len(list(memory.store.iter_sessions(namespace="user-ada"))) == 1


async def test_concurrent_runs_keep_their_own_trajectories(memory, scripted, tools):
    mw = ProceduralMemoryMiddleware(memory=memory)
    agents = [create_agent(scripted(script=refund_script(n)), tools=tools, middleware=[mw]) for n in (1, 2, 3, 4)]
    results = await asyncio.gather(
        *(a.ainvoke({"messages": [("user", f"Refund order {n}")]}) for a, n in zip(agents, (1, 2, 3, 4), strict=True))
    )
    for n, result in zip((1, 2, 3, 4), results, strict=True):
        assert {r["args"]["order_id"] for r in result["procmem_trajectory"]} == {n}
    sessions = {s.task: s.actions for s in memory.store.iter_sessions()}
    assert len(sessions) == 4
    for n in (1, 2, 3, 4):
        assert sessions[f"Refund order {n}"][0] == f"look_up_order(order_id={n})"


def test_checkpointed_thread_starts_each_run_with_an_empty_trajectory(memory, scripted, tools):
    mw = ProceduralMemoryMiddleware(memory=memory)
    agent = create_agent(scripted(script=refund_script(7)), tools=tools, middleware=[mw], checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t1"}}
    agent.invoke({"messages": [("user", "Refund order 7")]}, config)
    second = agent.invoke({"messages": [("user", "Refund order 7 again")]}, config)
    assert len(second["procmem_trajectory"]) == 3
    sessions = list(memory.store.iter_sessions())
    assert len(sessions) == 2 and all(len(s.actions) == 3 for s in sessions)
    assert len({s.session_id for s in sessions}) == 2


def test_memory_errors_are_logged_not_raised(memory, scripted, tools, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RetrievalError("index unavailable")

    monkeypatch.setattr(memory, "search", broken)
    mw = ProceduralMemoryMiddleware(memory=memory)
    agent = create_agent(scripted(script=refund_script(42)), tools=tools, middleware=[mw])
    with caplog.at_level(logging.WARNING, logger="langchain_procmem.middleware"):
        result = agent.invoke({"messages": [("user", "Refund order 42")]})
    assert result["messages"][-1].content == "Done."
    assert "index unavailable" in caplog.text
    assert len(list(memory.store.iter_sessions())) == 1

    strict = ProceduralMemoryMiddleware(memory=memory, raise_errors=True)
    agent = create_agent(scripted(script=refund_script(42)), tools=tools, middleware=[strict])
    with pytest.raises(RetrievalError):
        agent.invoke({"messages": [("user", "Refund order 42")]})


async def test_async_run_is_learned(memory, scripted, tools):
    model = scripted(script=refund_script(42))
    agent = create_agent(
        model, tools=tools, system_prompt="Be kind.", middleware=[ProceduralMemoryMiddleware(memory=memory)]
    )
    await agent.ainvoke({"messages": [("user", "Refund order 42")]})
    (session,) = memory.store.iter_sessions()
    assert session.actions[0] == "look_up_order(order_id=42)"
    # Mid-run, the model was shown next-tool-call predictions after its first call.
    assert any("Likely next tool calls" in str(m.text) for m in model.seen[1] if isinstance(m, SystemMessage))


def test_parallel_tool_calls_are_learned_in_the_order_the_model_asked(memory, scripted, tools):
    script = [
        [("look_up_order", {"order_id": 1}), ("look_up_order", {"order_id": 2}), ("look_up_order", {"order_id": 3})],
        [("issue_refund", {"order_id": 2})],
    ]
    agent = create_agent(scripted(script=script), tools=tools, middleware=[ProceduralMemoryMiddleware(memory=memory)])
    agent.invoke({"messages": [("user", "Refund the order with two items")]})
    (session,) = memory.store.iter_sessions()
    assert session.actions == [
        "look_up_order(order_id=1)",
        "look_up_order(order_id=2)",
        "look_up_order(order_id=3)",
        "issue_refund(order_id=2)",
    ]
