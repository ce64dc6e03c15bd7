import json

import pytest

from procmem.errors import ConfigurationError, ImportFormatError
from procmem.evaluation import NextActionReport, evaluate_next_action, load_sessions_jsonl
from procmem.prediction import NextActionPredictor
from procmem.types import SessionRecord


def _write(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _rows():
    rows = []
    for i in range(6):
        rows.append({"session_id": f"s{i}", "user_id": "u1" if i % 2 else "u2", "group": "g",
                     "actions": ["git status", "git  add .", "git commit -m x"],
                     "outcome": "success", "instructions": ["commit", "my work"]})
    return rows


def test_load_sessions_jsonl_reads_the_shared_format(tmp_path):
    sessions = load_sessions_jsonl(_write(tmp_path / "s.jsonl", _rows()))
    assert len(sessions) == 6
    assert sessions[0].task == "commit my work"
    assert sessions[0].user_id == "u2" and sessions[0].group == "g"


@pytest.mark.parametrize(
    ("line", "match"),
    [("{not json", "malformed JSON"), ('["x"]', "JSON object"),
     ('{"session_id": "a"}', "actions"), ('{"actions": []}', "actions"),
     ('{"actions": ["ls"], "outcome": "maybe"}', "outcome")],
)
def test_malformed_lines_name_file_and_line(tmp_path, line, match):
    p = tmp_path / "bad.jsonl"
    p.write_text(json.dumps({"actions": ["ls"]}) + "\n" + line + "\n")
    with pytest.raises(ImportFormatError, match=match) as err:
        load_sessions_jsonl(p)
    assert f"{p}:2" in str(err.value)


def test_missing_file_is_an_import_error(tmp_path):
    with pytest.raises(ImportFormatError, match="No such file"):
        load_sessions_jsonl(tmp_path / "nope.jsonl")


def test_prequential_metrics_and_output(tmp_path):
    path = _write(tmp_path / "s.jsonl", _rows())
    out = tmp_path / "pred.jsonl"
    report = evaluate_next_action(path, scope="global", peers=["markov1", "ppm5"], output=out)
    assert isinstance(report, NextActionReport)
    assert report.targets == 18 and [m.name for m in report.models] == ["procmem", "markov1", "ppm5"]
    ours = report.model("procmem")
    # Session 1 has no history (3 misses, except repeats); later sessions are predictable.
    assert 0.5 < ours.top1 < 1.0 and ours.top3 >= ours.top1 and ours.mrr10 >= ours.top1
    assert ours.ece is not None and 0.0 <= ours.ece <= 1.0
    assert report.model("markov1").top1 == pytest.approx(15 / 18)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 18 and lines[0] == {"session_id": "s0", "index": 0, "predictions": []}
    assert lines[-1]["predictions"][0] == "git commit -m x"


def test_scope_makes_one_model_per_key(tmp_path):
    made = []

    def factory():
        made.append(1)
        return NextActionPredictor()

    sessions = load_sessions_jsonl(_write(tmp_path / "s.jsonl", _rows()))
    evaluate_next_action(sessions, scope="user", model_factory=factory)
    assert len(made) == 2
    made.clear()
    evaluate_next_action(sessions, scope="session", model_factory=factory, confidence=False)
    assert len(made) == 6


def test_bad_options():
    with pytest.raises(ConfigurationError, match="scope"):
        evaluate_next_action([], scope="planet")
    with pytest.raises(ConfigurationError, match="unknown peer"):
        evaluate_next_action([], scope="global", peers=["oracle"])


def test_each_target_sees_its_turns_instruction():
    seen = []

    class Spy(NextActionPredictor):
        def rank(self, context, *, task=None, k=10):
            seen.append(task)
            return super().rank(context, task=task, k=k)

    s = SessionRecord(session_id="t", actions=["a()", "b()", "c()"], instructions=["do a and b", "do c"],
                      turns=[0, 0, 1], task="do a and b do c")
    evaluate_next_action([s], scope="global", model_factory=Spy, confidence=False)
    assert seen == ["do a and b", "do a and b", "do c"]


def test_a_scope_field_missing_from_sessions_is_warned_about(tmp_path):
    rows = _rows()
    for r in rows[:2]:
        r["user_id"] = ""
        r.pop("group")
    sessions = load_sessions_jsonl(_write(tmp_path / "s.jsonl", rows))
    with pytest.warns(UserWarning, match="2 of 6 sessions have no user_id for scope 'user': each is its own model"):
        evaluate_next_action(sessions, scope="user", confidence=False)
    with pytest.warns(UserWarning, match="2 of 6 sessions have no group for scope 'group': they share one model"):
        evaluate_next_action(sessions, scope="group", confidence=False)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a complete file says nothing
        evaluate_next_action(load_sessions_jsonl(_write(tmp_path / "ok.jsonl", _rows())), scope="user",
                             confidence=False)
