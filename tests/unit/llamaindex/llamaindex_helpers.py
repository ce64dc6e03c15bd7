"""Helpers of the LlamaIndex adapter tests: scripted conversations."""

from llama_index.core.base.llms.types import ChatMessage, ToolCallBlock


def tool_turn(task, calls, *, errors=(), prefix="c", final="Done."):
    """A user message, then one assistant tool call and one tool result per call, then a final answer."""
    messages = [ChatMessage(role="user", content=task)]
    for i, (name, kwargs) in enumerate(calls):
        call_id = f"{prefix}{i}"
        messages.append(
            ChatMessage(
                role="assistant",
                blocks=[ToolCallBlock(tool_call_id=call_id, tool_name=name, tool_kwargs=kwargs)],
            )
        )
        result = f"Error: {name} failed" if i in errors else f"{name} ok"
        messages.append(ChatMessage(role="tool", content=result, additional_kwargs={"tool_call_id": call_id}))
    messages.append(ChatMessage(role="assistant", content=final))
    return messages


BOOKING = [
    ("search_flights", {"origin": "SFO", "destination": "JFK"}),
    ("book_flight", {"flight": "UA1"}),
    ("send_confirmation", {"email": "alice@example.com"}),
]
