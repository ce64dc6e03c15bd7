"""The README and docs/*.md say what the code does: their snippets run as a newcomer would run them.

Every fenced ``python`` block of ``README.md`` runs, in order, in one namespace (a reader pastes the
tour, then the LangChain and LlamaIndex snippets, which use the tour's ``memory``), in a temporary
directory with ``HOME`` and ``XDG_DATA_HOME`` pointed there, so ``ProceduralMemory()`` opens a
fresh default store, with the default embedder (all-MiniLM-L6-v2, offline). The names the README
leaves to the reader get the smallest honest stand-in: ``model`` is a scripted chat model standing
in for the remote LLM, ``my_tools`` one real tool. Top-level expressions are evaluated as a Python
prompt would, and the ``Prediction(...)`` fields shown in the comment under one are compared with
what it returned. Each ``procmem`` command of the README's CLI block runs (in process) on small
files; the blocks of ``docs/*.md`` run against a real ``chroma run`` server.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import time
from pathlib import Path
from typing import Any

import pytest
from fakes import ScriptedChatModel
from typer.testing import CliRunner

from procmem.cli import app

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def _blocks(path: Path, lang: str) -> list[tuple[int, str]]:
    """The fenced ``lang`` blocks of a Markdown file, each with the file line its code starts on."""
    text = path.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, m.start(2)) + 1, m.group(2))
        for m in _FENCE.finditer(text)
        if m.group(1) == lang
    ]


def _run_block(path: Path, line: int, code: str, namespace: dict[str, Any]) -> dict[int, Any]:
    """Run a block statement by statement, as pasted at a Python prompt.

    Tracebacks name the Markdown file and line. Returns the value of each top-level expression
    statement, keyed by the file line it ends on (where a comment showing its output follows).
    """
    tree = ast.parse(code, filename=str(path))
    ast.increment_lineno(tree, line - 1)
    values: dict[int, Any] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Expr):
            values[stmt.end_lineno] = eval(compile(ast.Expression(stmt.value), str(path), "eval"), namespace)
        else:
            exec(compile(ast.Module([stmt], type_ignores=[]), str(path), "exec"), namespace)
    return values


def _shown_fields(line: int, code: str, end_line: int) -> list[dict[str, Any]]:
    """The fields of each ``Prediction(...)`` shown in the comment lines after file line ``end_line``.

    ``code`` is a block starting on file line ``line``; a field shown as ``...`` is not collected.
    """
    lines = code.splitlines()[end_line - line + 1 :]
    comment = []
    for source in lines:
        if not source.lstrip().startswith("#"):
            break
        comment.append(source.lstrip()[1:])
    shown = []
    for chunk in " ".join(comment).split("Prediction(")[1:]:
        fields = re.findall(r"(\w+)=('[^']*'|\[[^\]]*\]|None|[-+.\deE]+)", chunk)
        shown.append({name: ast.literal_eval(value) for name, value in fields})
    return shown


@pytest.fixture
def fresh_user(tmp_path, monkeypatch):
    """A user with an empty home and data dir, working in an empty directory; no network needed."""
    home = tmp_path / "home"
    work = tmp_path / "work"
    for d in (home, work):
        d.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for var in ("HISTFILE", "ZDOTDIR", "PROCMEM_DB", "PROCMEM_EMBEDDER", "PROCMEM_STORE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(work)
    return tmp_path


def _reader_stand_ins() -> dict[str, Any]:
    """What the README leaves to the reader: a chat model (scripted, for the LLM) and their own tools."""
    from langchain_core.tools import tool

    @tool
    def run_command(command: str) -> str:
        """Run a shell command."""
        return f"ran {command}"

    script = [[("run_command", {"command": "git pull"})], [("run_command", {"command": "make build"})]]
    return {"model": ScriptedChatModel(script=script), "my_tools": [run_command]}


def test_readme_python_blocks_run_and_print_what_they_show(fresh_user):
    blocks = _blocks(README, "python")
    assert len(blocks) >= 3
    namespace = _reader_stand_ins()
    values: dict[int, Any] = {}
    for line, code in blocks:
        values.update(_run_block(README, line, code, namespace))
    memory = namespace["memory"]

    # The tour: the default store lives in the platform data dir, as its comment says.
    assert Path(memory.stats()["path"]) == fresh_user / "home/.local/share/procmem/procmem.sqlite3"
    assert namespace["hits"][0].procedure.id == "deploy"
    # The predictions shown under predict_next_action are the ones it returns.
    text = README.read_text(encoding="utf-8")
    line, code = blocks[0]
    [end] = [n for n in values if "predict_next_action(" in text.splitlines()[n - 1]]
    predictions = values[end]
    shown = _shown_fields(line, code, end)
    assert len(shown) >= 2 and shown[0]["action"] == "make test" and len(predictions) >= len(shown)
    for prediction, fields in zip(predictions, shown, strict=False):
        for name, value in fields.items():
            expected = pytest.approx(value) if isinstance(value, float) else value
            assert getattr(prediction, name) == expected, (name, prediction)

    # LangChain: the agent built as shown runs, is shown the tour's procedure, and learns the run.
    sessions = memory.stats()["sessions"]
    out = namespace["agent"].invoke({"messages": [{"role": "user", "content": "ship the website"}]})
    assert [m.type for m in out["messages"]][-1] == "ai"
    first_call = "\n".join(str(m.content) for m in namespace["model"].seen[0])
    assert "## Procedural memory" in first_call and "[id: deploy]" in first_call
    assert memory.stats()["sessions"] == sessions + 1

    # LlamaIndex: the memory holds the block, the tool list the procmem tools.
    from llamaindex_procmem import ProceduralMemoryBlock

    assert any(isinstance(b, ProceduralMemoryBlock) for b in namespace["chat_memory"].memory_blocks)
    assert {t.metadata.name for t in namespace["tools"]} >= {"search_procedures", "predict_next_action"}
    memory.close()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_python_blocks_run(doc, fresh_user, chroma_server):
    """Each docs page's blocks, in order; its Chroma server (``port=8000``) is a real one on a free port."""
    from procmem import ProceduralMemory
    from procmem.stores.chroma import ChromaStore

    host, port = chroma_server
    blocks = _blocks(doc, "python")
    if doc.name == "chroma.md":
        # "Moving the data" exports an existing SQLite store: give it one procedure and one session.
        with ProceduralMemory(path="procmem.sqlite3") as source:
            source.store_procedure("deploy", ["git pull", "make build", "make deploy"], description="Deploy the app")
            source.learn_session(["git pull", "make build", "make deploy"], outcome="success")
    namespace: dict[str, Any] = {}
    for line, code in blocks:
        assert ("host=" in code) <= ("port=8000" in code), f"{doc.name}:{line}: a server other than port 8000"
        _run_block(doc, line, code.replace("port=8000", f"port={port}"), namespace)
    if doc.name == "chroma.md":
        assert isinstance(namespace["memory"].store, ChromaStore)
        moved = ProceduralMemory(store=ChromaStore(host=host, port=port))
        assert moved.search("ship the app", k=1)[0].procedure.id == "deploy"
        assert moved.predict_next_action(["git pull"])[0].action == "make build"
        moved.store.drop()


# ------------------------------------------------------------------------------------------- CLI

_CLI_FILES = {
    "sessions.jsonl": [
        {"session_id": f"s{i}", "user_id": "u", "actions": ["git pull", "make build", "make test", "make deploy"],
         "outcome": "success", "instructions": ["deploy the site"]}
        for i in range(3)
    ],
    "tools.jsonl": [
        {"name": "WeatherNow", "description": "current weather forecast for a city"},
        {"name": "FlightFinder", "description": "search cheap flights between airports"},
        {"name": "RecipeBox", "description": "cooking recipes and ingredients"},
    ],
    "usages.jsonl": [{"query": "will it rain in paris", "tool": "WeatherNow", "success": True}],
    "queries.jsonl": [
        {"query": "weather forecast for rome", "tools": ["WeatherNow"]},
        {"query": "cheap flights to lisbon", "tools": ["FlightFinder"]},
    ],
    # Stands in for the shared data file the README names (same format, a few sessions).
    "../shared/data/sea/sessions.jsonl": [
        {"session_id": f"User{u}", "user_id": f"User{u}", "actions": ["ls", "cd", "ls", "vi", "make", "ls"] * 3}
        for u in range(2)
    ],
}


def _write_shell_histories(home: Path) -> None:
    t = int(time.time()) - 100_000
    bash = []
    for s in range(4):
        for cmd in ["cd ~/src/app", "git pull", "make build", "make test", f"git commit -m 'fix {s}'", "git push",
                    "git add .", "git commit -m wip", "git push"]:
            t += 30
            bash += [f"#{t}", cmd]
        t += 7200
    (home / ".bash_history").write_text("\n".join(bash) + "\n")
    (home / ".zsh_history").write_text("".join(f": {t + 30 * i}:0;{c}\n" for i, c in enumerate(["ls", "git status"])))


def _said(output: str) -> str:
    return " ".join(re.sub("[│┃╭╮╰╯─━]", " ", output).split())


def test_readme_cli_commands_run(fresh_user):
    """Every command of the README's CLI block exits 0 and says what it should (``serve`` aside)."""
    heading = README.read_text(encoding="utf-8").splitlines().index("### The CLI (the main job)") + 1
    block = next(code for line, code in _blocks(README, "bash") if line > heading)
    home, work = fresh_user / "home", fresh_user / "work"
    _write_shell_histories(home)
    for name, rows in _CLI_FILES.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text("".join(json.dumps(r) + "\n" for r in rows))

    runner = CliRunner()
    out: dict[str, str] = {}
    for source in block.splitlines():
        argv = [os.path.expanduser(a) if a.startswith("~") else a for a in shlex.split(source, comments=True)]
        if not argv:
            continue
        assert argv[0] == "procmem", source
        if argv[1] == "serve":  # runs until stopped; tests/integration/test_server.py covers the service
            continue
        runs = [argv]
        if argv[1] == "graph":  # "# or .svg, .dot, .mmd (Mermaid)"
            runs += [[*argv[:-1], argv[-1].replace(".png", suffix)] for suffix in (".svg", ".dot", ".mmd")]
        for args in runs:
            result = runner.invoke(app, args[1:])
            assert result.exit_code == 0, f"{shlex.join(args)} exited {result.exit_code}:\n{result.output}"
            out[" ".join(args[1:3])] = result.output

    assert "Learning from your shell history" in out["learn"] and "Learned 5 new sessions" in _said(out["learn"])
    assert "jsonl, 12 actions, 3 sessions (3 new)" in _said(out["learn sessions.jsonl"])
    assert "│ 1 │ git push" in out["predict git add ."]
    assert "[promoted]" in out["workflows"] and "make deploy" in out["workflows"]
    assert "git pull ⟶ make build" in out["patterns"]
    assert json.loads(out["stats"])["sessions"] == 8
    assert "name/description match" in _said(out["search deploy"])  # the learned deploy workflow, by its words
    assert (work / "graph.png").read_bytes()[:4] == b"\x89PNG" and "<svg" in (work / "graph.svg").read_text()
    assert "digraph" in (work / "graph.dot").read_text() and (work / "graph.mmd").read_text().startswith("flowchart")
    assert all(peer in out["eval next-action"] for peer in ("procmem", "markov1", "ipam", "ppm5"))
    assert json.loads(out["eval retrieval"])["hit_at_1"] == 1.0
    assert [json.loads(x)["query_index"] for x in (work / "pred.jsonl").read_text().splitlines()] == [0, 1]


def test_readme_store_options_exist():
    """The options and variables the README gives for choosing the store are the CLI's."""
    text = README.read_text(encoding="utf-8")
    start = text.index("Each command but `eval` reads and writes one SQLite file")
    paragraph = text[start:text.index("\n\n", start)]
    named = set(re.findall(r"`(--[a-z-]+|PROCMEM_[A-Z]+)", paragraph))
    assert {"--db", "PROCMEM_DB", "--namespace", "--embedder", "PROCMEM_EMBEDDER"} <= named
    runner = CliRunner()
    for command in ("learn", "predict", "patterns", "workflows", "stats", "search", "graph", "serve"):
        said = " ".join(re.sub("[│╭╮╰╯─]", " ", runner.invoke(app, [command, "--help"]).output).split())
        assert all(name in said for name in named), (command, said)
