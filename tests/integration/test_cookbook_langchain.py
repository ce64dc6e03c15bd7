"""The LangChain cookbook scripts run offline (scripted model / fake LLM, hashing embedder) and say what they did."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _run(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "cookbook" / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{script} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_langchain_agent_cookbook_learns_and_shows_a_workflow():
    out = _run("langchain_agent.py")
    runs = out.split("=== Run ")[1:]
    assert len(runs) == 3
    assert "(nothing yet)" in runs[0]
    assert "tool search_flights(destination='Paris')" in runs[0]
    assert "tool send_confirmation(email='ada@example.com')" in runs[0]
    # Two successful runs (--min-support 2 by default) promote the workflow; run 3 is shown it.
    assert "## Procedural memory" in runs[2] and "[id: wf-" in runs[2]
    assert "=== Memory: 3 sessions, 1 learned workflow(s)" in out
    assert "learned workflow wf-" in out


def test_langchain_rag_cookbook_answers_from_retrieved_procedures():
    out = _run("langchain_rag.py")
    assert "retrieved deploy-web" in out
    assert "A: Follow deploy-web: git pull; then make test; then make build; then make deploy" in out
    assert "A: Follow refund-order:" in out
    assert "usages recorded: 3" in out
    assert "asked again: deploy-web now scores" in out


def test_cookbooks_show_their_options():
    for script in ("langchain_agent.py", "langchain_rag.py"):
        out = _run(script, "--help")
        assert "--model" in out and "--real-embeddings" in out
