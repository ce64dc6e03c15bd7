"""Tool calls and their results are read from LlamaIndex messages in every shape integrations use."""

import json

from llama_index.core.base.llms.types import ChatMessage, ToolCallBlock
from llama_index.core.llms.llm import ToolSelection
from llamaindex_helpers import BOOKING, tool_turn

from llamaindex_procmem import ToolCallRecord, is_error_message, trajectories_from_messages


def test_tool_call_blocks_and_results_make_one_trajectory_per_turn():
    messages = tool_turn("Book SFO to JFK", BOOKING) + tool_turn("Book LAX to BOS", BOOKING[:1], prefix="d")
    turns = trajectories_from_messages(messages)
    assert [t.task for t in turns] == ["Book SFO to JFK", "Book LAX to BOS"]
    assert turns[0].actions() == [
        "search_flights(origin='SFO', destination='JFK')",
        "book_flight(flight='UA1')",
        "send_confirmation(email='alice@example.com')",
    ]
    assert turns[0].actions("name") == ["search_flights", "book_flight", "send_confirmation"]
    assert [c.result for c in turns[0].tool_calls] == ["search_flights ok", "book_flight ok", "send_confirmation ok"]
    assert not turns[0].failed
    assert turns[1].actions("name") == ["search_flights"]
    assert len(turns[0].messages) == 8


def test_openai_shaped_additional_kwargs_with_json_arguments():
    assistant = ChatMessage(
        role="assistant",
        content="",
        additional_kwargs={
            "tool_calls": [
                {"id": "a", "type": "function", "function": {"name": "grep", "arguments": json.dumps({"n": 3})}},
                {"id": "b", "type": "function", "function": {"name": "ls", "arguments": "not json"}},
            ]
        },
    )
    turns = trajectories_from_messages(
        [
            ChatMessage(role="user", content="find it"),
            assistant,
            # results may arrive out of order: they are matched by tool_call_id
            ChatMessage(role="tool", content="listing", additional_kwargs={"tool_call_id": "b"}),
            ChatMessage(role="tool", content="3 hits", additional_kwargs={"tool_call_id": "a"}),
        ]
    )
    (turn,) = turns
    assert turn.actions() == ["grep(n=3)", "ls(not json)"]
    assert [c.result for c in turn.tool_calls] == ["3 hits", "listing"]


def test_tool_selection_and_anthropic_shapes_and_no_duplicates():
    block = ToolCallBlock(tool_call_id="x", tool_name="fetch", tool_kwargs={"url": "https://a.b"})
    assistant = ChatMessage(
        role="assistant",
        blocks=[block],
        additional_kwargs={
            "tool_calls": [
                ToolSelection(tool_id="x", tool_name="fetch", tool_kwargs={"url": "https://a.b"}),  # same call
                ToolSelection(tool_id="y", tool_name="parse", tool_kwargs={}),
                {"type": "tool_use", "id": "z", "name": "save", "input": {"path": "/tmp/out"}},
            ]
        },
    )
    (turn,) = trajectories_from_messages([ChatMessage(role="user", content="go"), assistant])
    assert turn.actions() == ["fetch(url='https://a.b')", "parse()", "save(path='/tmp/out')"]
    assert all(c.result is None for c in turn.tool_calls)


def test_results_without_ids_match_the_oldest_pending_call():
    messages = [
        ChatMessage(role="user", content="go"),
        ChatMessage(role="assistant", blocks=[ToolCallBlock(tool_name="a"), ToolCallBlock(tool_name="b")]),
        ChatMessage(role="tool", content="ra"),
        ChatMessage(role="tool", content="Error: b broke"),
    ]
    (turn,) = trajectories_from_messages(messages)
    assert [(c.tool_name, c.result, c.is_error) for c in turn.tool_calls] == [
        ("a", "ra", False),
        ("b", "Error: b broke", True),
    ]
    assert turn.failed


def test_error_detection():
    def tool(text, **kw):
        return ChatMessage(role="tool", content=text, additional_kwargs=kw)

    assert is_error_message(tool("Error: boom"))
    assert is_error_message(tool("Encountered error: boom"))
    assert is_error_message(tool("Tool foo not found. Please select a tool that is available."))
    assert is_error_message(tool("Traceback (most recent call last):\n  ..."))
    assert is_error_message(tool("fine", is_error=True))
    assert not is_error_message(tool("3 errors fixed"))
    assert not is_error_message(tool("ok"))

    turns = trajectories_from_messages(tool_turn("t", BOOKING), error_detector=lambda m: "book_flight" in m.content)
    assert [c.is_error for c in turns[0].tool_calls] == [False, True, False]


def test_messages_before_the_first_user_message_form_a_turn_without_task():
    messages = tool_turn("t", BOOKING)[1:]
    (turn,) = trajectories_from_messages(messages)
    assert turn.task is None
    assert len(turn.tool_calls) == 3


def test_tool_call_record_renders_raw_string_arguments():
    assert ToolCallRecord(tool_name="sh", tool_kwargs="ls -la").action() == "sh(ls -la)"
    assert ToolCallRecord(tool_name="sh", tool_kwargs={"cmd": "ls", "n": 2}).action() == "sh(cmd='ls', n=2)"
