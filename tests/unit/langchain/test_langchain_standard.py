"""The langchain-tests standard suites (pinned to langchain-tests 1.1.9) for the retriever and the tools.

The suites construct the tool or retriever from a memory made per test in ``tmp_path`` (SQLite
file, hashing embedder); they run offline, so they live with the unit tests.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_tests.integration_tests import RetrieversIntegrationTests, ToolsIntegrationTests
from langchain_tests.unit_tests import ToolsUnitTests
from procmem import ProceduralMemory
from procmem.embeddings import HashingEmbedder

from langchain_procmem import (
    PredictNextActionTool,
    ProceduralMemoryRetriever,
    RecordOutcomeTool,
    SaveProcedureTool,
    SearchProceduresTool,
)

PROCEDURES = [
    ("deploy", ["git pull", "make build", "make deploy"], "Deploy the web app"),
    ("rollback", ["git revert HEAD", "make deploy"], "Roll back a bad deploy"),
    ("hotfix", ["git checkout -b hotfix", "git commit", "make deploy"], "Ship an urgent fix"),
    ("refund", ["look_up_order", "issue_refund"], "Refund an order"),
]


class _WithMemory:
    _memory: ProceduralMemory

    @pytest.fixture(autouse=True)
    def _procmem(self, tmp_path):
        self._memory = ProceduralMemory(path=tmp_path / "std.sqlite3", embedder=HashingEmbedder())
        for pid, steps, description in PROCEDURES:
            self._memory.store_procedure(pid, steps, description=description)
        yield
        self._memory.close()


class TestRetrieverStandard(_WithMemory, RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[ProceduralMemoryRetriever]:
        return ProceduralMemoryRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"memory": self._memory}

    @property
    def retriever_query_example(self) -> str:
        return "deploy the web app"


class _ToolSuite(_WithMemory):
    tool_class: type = SearchProceduresTool
    example: dict[str, Any] = {}

    @property
    def tool_constructor(self) -> type:
        return self.tool_class

    @property
    def tool_constructor_params(self) -> dict[str, Any]:
        return {"memory": self._memory}

    @property
    def tool_invoke_params_example(self) -> dict[str, Any]:
        return dict(self.example)


SEARCH = {"tool_class": SearchProceduresTool, "example": {"query": "deploy the web app", "k": 2}}
SAVE = {
    "tool_class": SaveProcedureTool,
    "example": {"name": "rotate logs", "steps": ["gzip old logs", "delete old logs"], "description": "Free disk"},
}
RECORD = {"tool_class": RecordOutcomeTool, "example": {"procedure_id": "deploy", "success": True, "duration": 3.5}}
PREDICT = {
    "tool_class": PredictNextActionTool,
    "example": {"recent_actions": ["git pull"], "task": "deploy", "top_k": 2},
}


class TestSearchProceduresUnit(_ToolSuite, ToolsUnitTests):
    tool_class, example = SEARCH["tool_class"], SEARCH["example"]


class TestSearchProceduresIntegration(_ToolSuite, ToolsIntegrationTests):
    tool_class, example = SEARCH["tool_class"], SEARCH["example"]


class TestSaveProcedureUnit(_ToolSuite, ToolsUnitTests):
    tool_class, example = SAVE["tool_class"], SAVE["example"]


class TestSaveProcedureIntegration(_ToolSuite, ToolsIntegrationTests):
    tool_class, example = SAVE["tool_class"], SAVE["example"]


class TestRecordOutcomeUnit(_ToolSuite, ToolsUnitTests):
    tool_class, example = RECORD["tool_class"], RECORD["example"]


class TestRecordOutcomeIntegration(_ToolSuite, ToolsIntegrationTests):
    tool_class, example = RECORD["tool_class"], RECORD["example"]


class TestPredictNextActionUnit(_ToolSuite, ToolsUnitTests):
    tool_class, example = PREDICT["tool_class"], PREDICT["example"]


class TestPredictNextActionIntegration(_ToolSuite, ToolsIntegrationTests):
    tool_class, example = PREDICT["tool_class"], PREDICT["example"]
