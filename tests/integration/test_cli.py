"""The procmem CLI end to end, on real files (in-process through Typer's runner)."""

import json
import os
import re
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from procmem.cli import app
from procmem.errors import ProcMemError

runner = CliRunner()


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("PROCMEM_DB", str(tmp_path / "cli.sqlite3"))
    monkeypatch.setenv("PROCMEM_EMBEDDER", "hashing")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HISTFILE", raising=False)
    (tmp_path / "home").mkdir()
    return tmp_path


def _bash_history(path, sessions=4):
    t = int(time.time()) - 100_000
    lines = []
    for s in range(sessions):
        for cmd in ["cd ~/src/app", "git pull", "make build", "make test", f"git commit -m 'fix {s}'", "git push"]:
            t += 30
            lines += [f"#{t}", cmd]
        t += 7200
    path.write_text("\n".join(lines) + "\n")


def test_learn_predict_workflows_patterns_stats_graph(env):
    hist = env / "bash_history"
    _bash_history(hist)
    result = runner.invoke(app, ["learn", str(hist), "--format", "bash"])
    assert result.exit_code == 0, result.output
    assert "4 sessions (4 new)" in result.output
    again = runner.invoke(app, ["learn", str(hist)])
    assert "(0 new)" in again.output

    pred = runner.invoke(app, ["predict", "git pull", "make build", "--json"])
    assert pred.exit_code == 0, pred.output
    preds = json.loads(pred.output)
    assert preds[0]["action"] == "make test" and 0 < preds[0]["confidence"] <= 1 and preds[0]["reason"]

    wf = runner.invoke(app, ["workflows"])
    assert wf.exit_code == 0 and "git pull" in wf.output and "make test" in wf.output
    # A shell history records no outcome: the workflow is promoted, with no made-up rate.
    assert "outcome unknown" in wf.output and "successful" not in wf.output

    pat = runner.invoke(app, ["patterns", "--min-count", "2"])
    assert pat.exit_code == 0 and "make" in pat.output

    st = runner.invoke(app, ["stats"])
    assert st.exit_code == 0 and json.loads(st.output)["sessions"] == 4

    for suffix in ("png", "svg", "dot", "mmd"):
        out = env / f"graph.{suffix}"
        g = runner.invoke(app, ["graph", "--output", str(out)])
        assert g.exit_code == 0, g.output
        assert out.stat().st_size > 100
    assert (env / "graph.png").read_bytes()[:4] == b"\x89PNG"
    assert (env / "graph.mmd").read_text().startswith("flowchart LR")
    assert "digraph" in (env / "graph.dot").read_text()


def test_learn_without_history_explains(env):
    result = runner.invoke(app, ["learn"])
    assert result.exit_code == 1
    assert "no shell history found" in result.output


def test_learn_default_history_via_histfile(env, monkeypatch):
    hist = env / "my_history"
    _bash_history(hist, sessions=2)
    monkeypatch.setenv("HISTFILE", str(hist))
    result = runner.invoke(app, ["learn"])
    assert result.exit_code == 0, result.output
    assert "2 sessions" in result.output
    pred = runner.invoke(app, ["predict", "--json"])  # context = your latest commands
    assert pred.exit_code == 0, pred.output


def test_binary_history_is_refused_and_memory_untouched(env):
    good = env / "good_history"
    _bash_history(good, sessions=1)
    assert runner.invoke(app, ["learn", str(good)]).exit_code == 0
    binary = env / "binary_history"
    binary.write_bytes(b"\x00\x01\x02ELF" * 500)
    result = runner.invoke(app, ["learn", str(binary)])
    assert result.exit_code == 1 and "binary" in result.output.lower()
    st = runner.invoke(app, ["stats"])
    assert json.loads(st.output)["sessions"] == 1


def _said(result):
    """The command's output with Rich's line wrapping (and error box) undone."""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split())


def test_empty_inputs_and_bad_options_are_explained(env):
    empty = env / "empty_history"
    empty.write_text("")
    learned = runner.invoke(app, ["learn", str(empty)])
    assert learned.exit_code == 0 and "has no actions" in _said(learned)
    empty_jsonl = env / "empty.jsonl"
    empty_jsonl.write_text("")
    ev = runner.invoke(app, ["eval", "next-action", str(empty_jsonl), "--embedder", "none"])
    assert ev.exit_code == 1 and "no sessions in" in _said(ev) and "0.000" not in ev.output
    xml = runner.invoke(app, ["learn", str(empty), "--format", "xml"])
    assert xml.exit_code == 1 and "bash, zsh, fish or jsonl" in _said(xml) and "None" not in xml.output
    foo = runner.invoke(app, ["eval", "next-action", str(empty_jsonl), "--embedder", "foo"])
    assert foo.exit_code == 2 and "minilm, hashing or none" in _said(foo)
    pred = runner.invoke(app, ["predict"])  # HOME is empty, HISTFILE unset
    assert pred.exit_code == 1 and "no shell history found" in _said(pred) and "procmem predict '" in _said(pred)


def test_bash_history_forced_as_zsh_is_refused(env):
    hist = env / "bash_history"
    _bash_history(hist, sessions=1)
    result = runner.invoke(app, ["learn", str(hist), "--format", "zsh"])
    assert result.exit_code == 1 and "--format bash" in _said(result)
    assert json.loads(runner.invoke(app, ["stats"]).output)["sessions"] == 0  # no '#<epoch>' commands learned


def test_predict_before_learning_says_so(env):
    result = runner.invoke(app, ["predict", "ls"])
    assert result.exit_code == 1 and "procmem learn" in result.output


def test_eval_next_action_writes_predictions(env):
    data = env / "sessions.jsonl"
    rows = [{"session_id": f"s{i}", "user_id": "u", "actions": ["a", "b", "c", "a", "b"]} for i in range(3)]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = env / "pred.jsonl"
    result = runner.invoke(app, ["eval", "next-action", str(data), "--scope", "user", "--output", str(out),
                                 "--peers", "markov1,ppm5", "--embedder", "none"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 15 and set(lines[0]) == {"session_id", "index", "predictions"}
    assert "markov1" in result.output and "ppm5" in result.output
    assert "warning" not in result.output
    grouped = runner.invoke(app, ["eval", "next-action", str(data), "--scope", "group", "--embedder", "none"])
    assert grouped.exit_code == 0 and "warning: 3 of 3 sessions have no group" in grouped.output


def test_console_script_runs(env):
    exe = os.path.join(os.path.dirname(sys.executable), "procmem")
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "learn" in out.stdout


def test_eval_retrieval_learns_usages_and_writes_predictions(env):
    tools = env / "tools.jsonl"
    tools.write_text("\n".join(json.dumps(t) for t in [
        {"name": "WeatherNow", "description": "current weather forecast for a city"},
        {"name": "FlightFinder", "description": "search cheap flights between airports"},
        {"name": "RecipeBox", "description": "cooking recipes and ingredients"},
    ]) + "\n")
    usages = env / "usages.jsonl"
    usages.write_text(json.dumps({"query": "will it rain in paris", "tool": "WeatherNow", "success": True}) + "\n")
    queries = env / "queries.jsonl"
    queries.write_text("\n".join(json.dumps(q) for q in [
        {"query": "weather forecast for rome", "tools": ["WeatherNow"]},
        {"query": "cheap flights to lisbon", "tools": ["FlightFinder"]},
    ]) + "\n")
    out = env / "pred.jsonl"
    result = runner.invoke(app, ["eval", "retrieval", "--tools", str(tools), "--queries", str(queries),
                                 "--usages", str(usages), "--output", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["hit_at_1"] == 1.0 and report["queries"] == 2
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [line["query_index"] for line in lines] == [0, 1]
    assert lines[0]["tools"][0] == "WeatherNow" and lines[1]["tools"][0] == "FlightFinder"


def test_commands_with_brackets_and_quotes_are_shown_verbatim(env):
    # Rich reads "[...]" as markup: "[a-z]" vanished and "[/tmp]" crashed workflows and predict.
    hist = env / "zsh_history"
    t = int(time.time()) - 100_000
    lines = []
    for _ in range(3):
        for cmd in ["cd /srv", 'grep -r "[a-z]+" src', "ls [/tmp]", "echo ${arr[@]}"]:
            t += 30
            lines.append(f": {t}:0;{cmd}")
        t += 7200
    hist.write_text("\n".join(lines) + "\n")
    assert runner.invoke(app, ["learn", str(hist)]).exit_code == 0
    wf = runner.invoke(app, ["workflows"])
    assert wf.exit_code == 0, wf.output
    assert "[promoted]" in wf.output and 'grep -r "[a-z]+" src' in wf.output and "ls [/tmp]" in wf.output
    pred = runner.invoke(app, ["predict", "cd /srv", 'grep -r "[a-z]+" src'], terminal_width=200)
    assert pred.exit_code == 0, pred.output
    assert "ls [/tmp]" in pred.output
    pat = runner.invoke(app, ["patterns"], terminal_width=200)
    assert pat.exit_code == 0 and "${arr[@]}" in pat.output
    # Shell histories record no outcome: no made-up 50% success rate.
    assert "unknown" in pat.output and "50%" not in pat.output
    dot = env / "graph.dot"
    assert runner.invoke(app, ["graph", "--output", str(dot)]).exit_code == 0
    import pydot

    edges = {(e.get_source(), e.get_destination()) for e in pydot.graph_from_dot_file(str(dot))[0].get_edges()}
    assert ('"cd <PATH>"', '"grep -r \\"<STR>\\" src"') in edges


def test_search_with_unknown_kind_names_it(env):
    _bash_history(env / "hist", sessions=1)
    assert runner.invoke(app, ["learn", str(env / "hist")]).exit_code == 0
    result = runner.invoke(app, ["search", "deploy", "--kind", "workflows"])  # main() prints it as "error: ..."
    assert result.exit_code == 1 and isinstance(result.exception, ProcMemError)
    assert "workflows" in str(result.exception)


def test_unwritable_graph_and_unreadable_history_are_named_once(env):
    hist = env / "bash_history"
    _bash_history(hist, sessions=1)
    assert runner.invoke(app, ["learn", str(hist)]).exit_code == 0
    # An OSError from the picture writer was a traceback.
    out = env / "file"
    out.write_text("")
    g = runner.invoke(app, ["graph", "--output", str(out / "graph.svg")])
    assert g.exit_code == 1 and not isinstance(g.exception, OSError), g.output
    assert f"cannot write {out / 'graph.svg'}" in _said(g)
    # The importers' messages name the file already: it was printed twice.
    binary = env / "binary_history"
    binary.write_bytes(b"\x00\x01" * 100)
    bad = runner.invoke(app, ["learn", str(binary)])
    assert bad.exit_code == 1 and _said(bad).count(str(binary)) == 1, bad.output
    missing = runner.invoke(app, ["learn", str(env / "missing")])
    assert missing.exit_code == 1 and "No such file" in _said(missing)
    assert json.loads(runner.invoke(app, ["stats"]).output)["sessions"] == 1


def test_patterns_limit_must_be_positive(env):
    hist = env / "bash_history"
    _bash_history(hist)
    assert runner.invoke(app, ["learn", str(hist)]).exit_code == 0
    for option in ("--limit", "--min-count"):
        bad = runner.invoke(app, ["patterns", option, "-1"])
        assert bad.exit_code == 2 and option in _said(bad), bad.output


def test_reading_commands_refuse_a_store_that_does_not_exist(env):
    typo = env / "typo" / "x.sqlite3"
    for args in (["stats"], ["patterns"], ["workflows"], ["search", "deploy"], ["predict", "ls"],
                 ["graph", "--output", str(env / "g.dot")]):
        result = runner.invoke(app, [*args, "--db", str(typo)])
        said = " ".join(result.output.split())  # rich wraps long lines
        assert result.exit_code == 1 and f"no procmem store at {typo}:" in said, (args, result.output)
    assert not typo.parent.exists()  # nothing was created
    _bash_history(env / "hist", sessions=1)
    assert runner.invoke(app, ["learn", str(env / "hist"), "--db", str(typo)]).exit_code == 0
    assert runner.invoke(app, ["stats", "--db", str(typo)]).exit_code == 0
