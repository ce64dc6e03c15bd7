"""The LlamaIndex cookbook runs offline and shows the learned workflow to the model."""

import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_cookbook_llamaindex_agent_runs_offline():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "cookbook" / "llamaindex_agent.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    runs = out.split("=== run ")
    assert len(runs) == 4
    assert "procedural memory shown to the model:\n  (empty)" in runs[1]
    third = runs[3]
    assert "Learned workflow" in third
    assert "Likely next tool calls:\n  - search_flights(" in third
    assert "tool calls: search_flights, book_flight, send_confirmation" in third
    assert "learned workflows: 1" in out
    assert "query engine source: wf-" in out
