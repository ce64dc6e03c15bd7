"""Test doubles shared by the unit and integration suites (on pytest's ``pythonpath``)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field


class ScriptedChatModel(BaseChatModel):
    """Answers each step of a run from a script: step i emits ``script[i]`` as tool calls.

    The step is the number of AI messages since the latest user message, so one model serves
    any number of runs; after the script it answers ``final``. Every list of messages it
    receives is kept in ``seen``. It stands in only for the remote LLM.
    """

    script: list[list[tuple[str, dict[str, Any]]]] = Field(default_factory=list)
    final: str = "Done."
    seen: list[list[BaseMessage]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kwargs: Any):
        self.seen.append(list(messages))
        last_user = max(i for i, m in enumerate(messages) if isinstance(m, HumanMessage))
        step = sum(isinstance(m, AIMessage) for m in messages[last_user:])
        if step < len(self.script):
            calls = [
                {"name": name, "args": args, "id": f"call_{uuid.uuid4().hex[:8]}", "type": "tool_call"}
                for name, args in self.script[step]
            ]
            message = AIMessage(content="", tool_calls=calls)
        else:
            message = AIMessage(content=self.final)
        return ChatResult(generations=[ChatGeneration(message=message)])
