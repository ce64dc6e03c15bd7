import networkx as nx
import pytest

from procmem.embeddings import HashingEmbedder
from procmem.errors import ConfigurationError, InvalidSessionError, ValidationError
from procmem.prediction import PEERS, IPAMPredictor, MarkovPredictor, NextActionPredictor, PPMPredictor
from procmem.prediction.predictor import _ContextTree
from procmem.types import SessionRecord

FLOW = ["git status", "git add .", "git commit -m update", "git push"]


def _trained(**kw):
    p = NextActionPredictor(**kw)
    for _ in range(5):
        p.learn_session(FLOW, outcome="success")
    return p


def test_learned_workflow_is_predicted_after_its_prefix():
    p = _trained()
    assert p.rank(["git status", "git add ."], k=1) == ["git commit -m update"]
    preds = p.predict(["git status", "git add ."], top_k=3)
    assert preds[0].action == "git commit -m update"
    assert all(0.0 <= x.confidence <= 1.0 for x in preds)
    assert preds[0].reason
    assert preds[0].pattern == "git commit -m update"
    assert preds[0].success_rate is not None and preds[0].success_rate > 0.5
    assert "git push" in preds[0].suggestions


def test_placeholders_filled_with_session_values():
    p = NextActionPredictor()
    for i in range(5):
        ip = f"10.0.0.{i + 1}"
        p.learn_session([f"nmap {ip}", f"ssh root@{ip}"])
    # A never-seen IP: the template model fills the session's own value.
    assert p.rank(["nmap 192.168.7.7"], k=1) == ["ssh root@192.168.7.7"]


def test_arguments_filled_from_task_text():
    p = NextActionPredictor(embedder=HashingEmbedder(dim=64))
    for name in ["a.txt", "b.txt", "c.txt"]:
        p.learn_session(["ls()", f"cat(file_name='{name}')"], task=f"Show me '{name}' please")
    top = p.rank(["ls()"], task="Show me 'report.txt' please", k=3)
    assert "cat(file_name='report.txt')" in top


def test_deterministic_replay_gives_identical_rankings():
    sessions = [SessionRecord(actions=[f"cmd{(i * j) % 5}" for j in range(12)],
                              outcome="success" if i % 3 else "failure") for i in range(20)]
    a, b = NextActionPredictor(replay_stride=1), NextActionPredictor(replay_stride=1)
    a.learn_sessions(sessions)
    # b learns the same sessions by streaming.
    for s in sessions:
        for act in s.actions:
            b.observe(act, session_id=s.session_id)
        assert b.end_session(s.session_id, outcome=s.outcome).actions == s.actions
    calls = []
    a.learn_sessions(sessions[:2], progress=calls.append)
    b.learn_sessions(sessions[:2])
    assert calls == [1, 2]
    for ctx in (["cmd0"], ["cmd1", "cmd2"], [], ["unknown"]):
        assert a.rank(ctx) == b.rank(ctx)
        assert [x.confidence for x in a.predict(ctx)] == [x.confidence for x in b.predict(ctx)]


def test_strided_replay_is_deterministic_and_session_by_session_equal():
    sessions = [SessionRecord(actions=[f"cmd{(i * j) % 7}" for j in range(30)],
                              outcome="success" if i % 2 else None) for i in range(30)]
    a, b, c = (NextActionPredictor(replay_stride=16) for _ in range(3))
    a.learn_sessions(sessions)
    b.learn_sessions(sessions)
    for s in sessions:
        c.learn_session(s.actions, outcome=s.outcome, session_id=s.session_id)
    assert a._w == b._w == c._w and a._cal == b._cal == c._cal
    assert a._w != NextActionPredictor()._w  # the ranker did learn from the subsample
    for ctx in (["cmd0"], ["cmd1", "cmd2"], []):
        assert a.rank(ctx) == b.rank(ctx) == c.rank(ctx)
        assert [x.confidence for x in a.predict(ctx)] == [x.confidence for x in c.predict(ctx)]
    with pytest.raises(ConfigurationError, match="replay_stride"):
        NextActionPredictor(replay_stride=0)


def test_slot_names_are_the_last_word_before_the_placeholder():
    from procmem.prediction.predictor import _slot_name

    cases = {"set RHOSTS ": "RHOSTS", "git log --max-count ": "max-count", "cat(file_name='": "file_name",
             "ssh root@": "root", "-p ": "p", "x 9ab=": "ab", "a.b=": "b", "café=": "café", "é=": "",
             "x1-y_z: ": "x1-y_z", "": ""}
    assert {piece: _slot_name(piece) for piece in cases} == cases


def test_bulk_replay_leaves_the_garbage_collector_as_it_found_it():
    import gc

    p = NextActionPredictor()
    p.learn_sessions([SessionRecord(actions=["a", "b"])])
    assert gc.isenabled()
    with pytest.raises(InvalidSessionError):
        p.learn_sessions([{"actions": ["a"]}, {"actions": [" "]}])
    assert gc.isenabled()
    gc.disable()
    try:
        p.learn_sessions([SessionRecord(actions=["a", "b"])])
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_within_session_learning_and_repetition():
    p = NextActionPredictor()
    for act in ["make", "vim x.c", "make", "vim x.c", "make"]:
        p.observe(act, session_id="s")
    assert p.rank(["make", "vim x.c", "make", "vim x.c", "make"], k=1) == ["vim x.c"]


def test_graph_patterns_chains_stats():
    p = _trained()
    p.learn_session(["git status", "git add .", "rm -rf /tmp/y"], outcome=False)
    g = p.graph
    assert isinstance(g, nx.DiGraph)
    e = g.edges["git status", "git add ."]
    assert e["weight"] == 6 and e["successes"] == 5 and e["failures"] == 1
    assert 0.0 <= e["success_rate"] <= 1.0
    pats = p.patterns(min_count=5)
    assert {"steps": ["git status", "git add ."], "count": 6, "successes": 5, "failures": 1,
            "success_rate": pytest.approx(5 / 6)} in pats
    chain = p.causal_chains("rm -rf /tmp/x")
    assert chain["action"] == "rm -rf <PATH>" and chain["outcomes"]["failure"] == 1
    st = p.stats()
    assert st["sessions"] == 6 and st["actions"] == 23


def test_patterns_limit_is_validated():
    p = _trained()
    everything = p.patterns()
    assert p.patterns(limit=len(everything)) == everything and p.patterns(limit=0) == []
    # A negative limit was a slice end: the least frequent patterns went missing silently.
    for bad in (-1, 1.5, True, "3"):
        with pytest.raises(ValidationError, match="limit must be an int >= 0 or None"):
            p.patterns(limit=bad)


def test_empty_model_and_bad_input():
    p = NextActionPredictor()
    assert p.rank([]) == []
    assert p.predict([]) == []
    with pytest.raises(InvalidSessionError) as err:
        p.learn_session([])
    assert err.value.field == "actions"
    with pytest.raises(InvalidSessionError, match="actions\\[1\\]"):
        p.learn_session(["ls", "  "])
    with pytest.raises(InvalidSessionError, match="outcome"):
        p.learn_session(["ls"], outcome="maybe")
    with pytest.raises(InvalidSessionError, match="timestamps"):
        p.learn_session(["ls"], timestamps=[1, 2])
    with pytest.raises(ConfigurationError, match="max_order"):
        NextActionPredictor(max_order=0)
    with pytest.raises(ConfigurationError, match="k must"):
        p.rank([], k=0)
    assert p.end_session("nope") is None


def test_confidence_calibrates_online():
    p = NextActionPredictor()
    for _ in range(200):
        p.observe("a", session_id="s")
        p.observe("b", session_id="s")
    conf = p.predict(["a", "b", "a"], top_k=1)[0]
    assert conf.action == "b" and conf.confidence > 0.8


def test_shown_success_rates_are_observed_not_smoothed():
    p = NextActionPredictor()
    p.learn_session(["git pull", "make build", "make test", "make deploy"], outcome="success")
    pred = p.predict(["git pull", "make build"], top_k=1)[0]
    assert pred.action == "make test"
    # One successful session: 1 of 1 succeeded, not the Laplace-smoothed 67 %.
    assert pred.success_rate == 1.0 and "1 of 1 sessions succeeded" in pred.reason and "67%" not in pred.reason
    assert p.graph.edges["make build", "make test"]["success_rate"] == 1.0
    assert {"steps": ["make build", "make test"], "count": 1, "successes": 1, "failures": 0,
            "success_rate": 1.0} in p.patterns()
    # Sessions without an outcome give no rate at all.
    q = NextActionPredictor()
    q.learn_session(["git pull", "make build"])
    assert q.predict(["git pull"], top_k=1)[0].success_rate is None
    assert q.graph.edges["git pull", "make build"]["success_rate"] is None
    assert q.patterns()[0]["success_rate"] is None


def test_confidence_is_low_without_evidence():
    # Nothing learned: the only candidate repeats the context; softmax 1.0 is not a probability.
    empty = NextActionPredictor().predict(["git pull"], top_k=1)
    assert empty[0].action == "git pull" and empty[0].confidence <= 0.5
    # One session learned and no top-1 outcome seen yet by the calibrator: no 97 % either.
    p = NextActionPredictor()
    p.learn_session(["git pull", "make build", "make test", "make deploy"], outcome="success")
    assert p.predict(["git pull", "make build"], top_k=1)[0].confidence <= 0.5


# ---- baselines: known answers on tiny sequences

def test_markov_counts_followers():
    m = MarkovPredictor()
    m.learn_session(["a", "b", "a", "c", "a", "b"])
    assert m.rank(["a"], k=2) == ["b", "c"]
    assert m.rank(["zzz"], k=1) == ["a"]


def test_ipam_decays_toward_recent():
    m = IPAMPredictor(alpha=0.8)
    m.learn_session(["a", "b", "a", "b", "a", "c"])
    # row a (copied from the default row {a: .2}): b twice then c: b = (.16 + .2) * .8, c = .2
    assert m.rank(["a"], k=2) == ["b", "c"]
    row = m._rows["a"]
    assert row["b"] == pytest.approx(0.288) and row["c"] == pytest.approx(0.2)


def test_ppm_prefers_longest_context():
    m = PPMPredictor(order=2)
    m.learn_session(["x", "a", "b", "y", "a", "c", "y", "a", "c", "x", "a"])
    assert m.rank(["y", "a"], k=1) == ["c"]
    assert m.rank(["x", "a"], k=1) == ["b"]
    assert set(PEERS) == {"markov1", "ipam", "ppm5"}


def test_optimizer_option_is_checked_and_both_learn():
    with pytest.raises(ConfigurationError):
        NextActionPredictor(optimizer="adam")
    for opt in ("sgd", "adagrad"):
        p = _trained(optimizer=opt, replay_stride=1)
        assert p.rank(["git status", "git add ."], k=1) == ["git commit -m update"]
        assert p.stats()["weights"] != NextActionPredictor(optimizer=opt).stats()["weights"]


def test_candidates_whose_arguments_the_task_mentions_are_preferred():
    p = NextActionPredictor()
    for name in ["a.txt", "b.txt", "c.txt", "d.txt"]:
        p.learn_session(["ls()", f"cat(file_name='{name}')"], task=f"Show me '{name}' please")
    top = p.rank(["ls()"], task="Show me 'b.txt' please", k=1)
    assert top == ["cat(file_name='b.txt')"]
    preds = p.predict(["ls()"], task="Show me 'b.txt' please", top_k=1)
    assert preds[0].action == "cat(file_name='b.txt')" and preds[0].reason


def test_value_of_a_named_slot_carries_over_to_another_call():
    p = NextActionPredictor()
    for i in range(5):
        tok = f"tok{i}"
        p.learn_session([f"login(user='u{i}', access_token='{tok}')", f"list_items(page={i})",
                         f"buy(item='pen', access_token='{tok}')"])
    # The new session's token was given to login() two calls back; buy() reuses it by name
    # (by type alone, the most recent string would be 'zed').
    ctx = ["login(access_token='fresh9', user='zed')", "list_items(page=7)"]
    assert p.rank(ctx, k=1) == ["buy(item='pen', access_token='fresh9')"]
    assert p._slot_names("buy(item='<STR>', access_token='<STR>')") == ("item", "access_token")
    assert p._slot_names("nmap -p <NUM> <IP>") == ("p", "")


def test_period_two_alternation_and_gated_weights_are_learned():
    p = NextActionPredictor()
    seq = ["a", "b"] * 30
    for act in seq:
        p.observe(act, session_id="s")
    assert p.rank(seq, k=1) == ["a"]
    # Gate offsets exist for the context orders seen, and the ranker still explains itself.
    assert p._wg and all(len(w) == len(p._w) for w in p._wg.values())
    preds = p.predict(seq, top_k=2)
    assert preds[0].action == "a" and preds[0].reason and 0.0 <= preds[0].confidence <= 1.0


def test_turn_instructions_stream_persist_and_replay_alike():
    turns = [("Open the report 'q3.txt'.", ["cd(folder='docs')", "cat(file='q3.txt')"]),
             ("Now delete 'old.txt'.", ["rm(file='old.txt')"])]
    live = NextActionPredictor(replay_stride=1)
    for task, actions in turns:
        for a in actions:
            live.observe(a, session_id="s", task=task)
    record = live.end_session("s", outcome="success")
    assert record.instructions == [t for t, _ in turns]
    assert record.turns == [0, 0, 1]
    assert record.task_at(2) == "Now delete 'old.txt'."
    replayed = NextActionPredictor(replay_stride=1)
    replayed.learn_sessions([record])
    ctx = ["cd(folder='docs')"]
    assert replayed.rank(ctx, task="Open the report 'q4.txt'.") == live.rank(ctx, task="Open the report 'q4.txt'.")
    with pytest.raises(InvalidSessionError, match="turns"):
        replayed.learn_session(["a", "b"], task=["x"], turns=[0, 1])
    with pytest.raises(InvalidSessionError, match="turns"):
        replayed.learn_session(["a", "b"], task="x", turns=[0, 0])


def test_similar_past_turns_vote_for_what_they_did():
    # Each past session had two turns; only turn-level memory says which instruction led to du().
    m = NextActionPredictor(embedder=HashingEmbedder(dim=256))
    for i in range(4):
        m.learn_session(["ls()", "du()"], outcome="success", task=["list the files here", "show the disk usage"],
                        turns=[0, 1], session_id=f"s{i}")
    m.learn_session(["ls()"], outcome="success", task="list the files", session_id="extra")
    assert m.rank(["cd(folder='x')"], task="show the disk usage now")[0] == "du()"
    assert m.rank(["cd(folder='x')"], task="list the files now")[0] == "ls()"


def test_unseen_action_borrows_from_actions_learned_after_the_first_lookup():
    # The nearest-known-action index must grow with the model, not freeze at its first use.
    p = NextActionPredictor(embedder=HashingEmbedder(dim=256), embed_actions=True, similarity_threshold=0.3)
    p.learn_session(["make build", "make test"])
    p.rank(["make buildx"])  # builds the index of known actions
    for _ in range(3):
        p.learn_session(["docker compose up", "docker compose logs"])
    assert p.rank(["docker compose up --wait"])[0] == "docker compose logs"


def test_program_first_puts_the_most_likely_program_first():
    # After "cd repo": "git status" is the most frequent single command (3 of 7), but "ls" in its
    # variants is the most likely program (4 of 7).
    sessions = [["cd repo", "git status"]] * 3 + [["cd repo", "ls -a"]] * 2 + [["cd repo", "ls -l"]] * 2
    ranked = {}
    for flag in (True, False):
        p = NextActionPredictor(program_first=flag, online=False)
        for s in sessions:
            p.learn_session(s)
        ranked[flag] = p.rank(["cd repo"], k=3)
        first = p.predict(["cd repo"], top_k=1)[0]
        assert first.action == ranked[flag][0]
        assert ("most likely next program" in first.reason) == flag
    assert ranked[False][0] == "git status"
    assert ranked[True][0] in ("ls -a", "ls -l")
    assert set(ranked[True]) == set(ranked[False])  # the same candidates, only the first moved


def test_context_tree_counts_every_suffix_and_answers_only_whole_contexts():
    tree = _ContextTree()
    seq = ["a", "b", "c", "a", "b", "d"]
    for i in range(1, len(seq)):
        tree.count(reversed(seq[max(0, i - 3):i]), seq[i])
    assert tree.followers_of(("b",)) == {"c": 1, "d": 1}  # most recent symbol first
    assert tree.followers_of(("b", "a")) == {"c": 1, "d": 1}
    assert tree.followers_of(("c", "b", "a")) == {"a": 1}
    assert tree.followers_of(("b", "x")) == {}  # 'x b' never seen, though 'b' was
    assert tree.followers_of(()) == {}
    assert dict(tree.contexts())[("a", "b")] == {"c": 1, "d": 1}  # oldest symbol first


def test_rankings_do_not_depend_on_the_interpreters_hash_seed():
    # Similar past tasks vote for templates; equal votes once kept a set's order, which
    # changes with PYTHONHASHSEED, so the same data ranked differently from run to run.
    import os
    import subprocess
    import sys

    script = (
        "from procmem.embeddings import HashingEmbedder\n"
        "from procmem.prediction import NextActionPredictor\n"
        "m = NextActionPredictor(embedder=HashingEmbedder(dim=64))\n"
        "for i in range(30):\n"
        "    m.learn_session([f'f{j}(x={i})' for j in range(40)], task=f'other job {i}', session_id=f'o{i}')\n"
        "m.learn_session([f'{n}(v=1)' for n in ('alpha', 'beta', 'gamma', 'delta', 'omega', 'kappa')],"
        " task='tidy the workspace', session_id='s0')\n"
        "print(m.rank(['alpha(v=1)'], task='tidy the workspace'))\n"
    )
    outputs = set()
    for seed in ("1", "2", "3", "4"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        outputs.add(run.stdout)
    assert len(outputs) == 1, outputs


def test_session_values_keep_recency_order_and_copies_leave_the_original():
    # The per-session value sets (insertion-ordered dicts since the quadratic list.remove went)
    # move a repeated value to the end (most recent) and copy before changing a shared one.
    from procmem.prediction.predictor import _push_copy, _push_recent

    d: dict = {}
    for v in ("a", "b", "a", "c", "c"):
        _push_recent(d, "k", v)
    assert list(d["k"]) == ["b", "a", "c"]
    shared = dict(d)
    _push_copy(shared, "k", "b")
    assert list(shared["k"]) == ["a", "c", "b"] and list(d["k"]) == ["b", "a", "c"]
