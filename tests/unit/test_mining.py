import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from procmem import MiningConfig, ProceduralMemory
from procmem.embeddings import HashingEmbedder
from procmem.errors import ConfigurationError, InvalidSessionError
from procmem.learning.mining import PatternCounter, WorkflowCandidate, mine_workflows, workflow_key
from procmem.types import SessionRecord

DEPLOY = ["git pull", "make test", "make deploy"]


def _sessions():
    out = []
    for i in range(4):
        out.append({"actions": ["ls", *DEPLOY, f"echo {i}"], "outcome": "success"})
    for _ in range(4):
        out.append({"actions": ["rm -rf build", "make clean", "vim a.txt"], "outcome": "failure"})
    return out


def test_recurring_successful_sequence_is_promoted_and_failing_one_is_not():
    found = mine_workflows(_sessions(), min_support=3)
    steps = [w.steps for w in found]
    assert ["ls", "git pull", "make test", "make deploy", "echo <NUM>"] in steps
    assert not any("make clean" in s for s in steps)
    top = found[0]
    assert isinstance(top, WorkflowCandidate)
    assert top.support == 4 and top.successes == 4 and top.failures == 0
    assert top.success_rate == pytest.approx(1.0)
    assert top.key == workflow_key(top.steps)


def test_only_maximal_patterns_are_kept():
    found = mine_workflows(_sessions(), min_support=3)
    # Every sub-sequence of the full pattern has the same support, so only the full one stays.
    assert len(found) == 1


def test_examples_are_concrete_and_key_is_stable():
    a = mine_workflows(_sessions(), min_support=3)
    b = mine_workflows(list(reversed(_sessions())), min_support=3)
    assert a[0].key == b[0].key
    assert a[0].examples[-1].startswith("echo ")


def test_support_counts_distinct_sessions():
    sessions = [SessionRecord(actions=["a", "b", "a", "b"], outcome="success")] * 2
    assert mine_workflows(sessions, min_support=3) == []
    found = mine_workflows(sessions, min_support=2, max_length=4)
    assert found[0].support == 2


def test_bad_input_errors():
    with pytest.raises(ConfigurationError, match="min_support"):
        mine_workflows([], min_support=0)
    with pytest.raises(ConfigurationError, match="max_length"):
        mine_workflows([], min_length=4, max_length=2)
    with pytest.raises(InvalidSessionError, match=r"sessions\[0\].actions\[1\]"):
        mine_workflows([{"actions": ["ls", ""]}])
    with pytest.raises(InvalidSessionError, match="outcome"):
        mine_workflows([{"actions": ["ls"], "outcome": "maybe"}])


def test_fast_on_many_sessions():
    import time

    sessions = [[f"cmd{i % 7}", "git add .", "git commit", f"x{i % 13}"] for i in range(20_000)]
    t = time.perf_counter()
    mine_workflows(sessions, min_support=50, min_success_rate=0.0)
    assert time.perf_counter() - t < 5.0


def test_sessions_without_outcome_are_promoted_but_claim_no_rate():
    # Shell histories record no outcome: the routine still passes the threshold (it recurs),
    # but its success rate is unknown, not 100 %.
    found = mine_workflows([["ls", *DEPLOY]] * 3, min_support=3)
    assert [w.steps for w in found] == [["ls", *DEPLOY]]
    w = found[0]
    assert (w.support, w.successes, w.failures, w.unknown) == (3, 0, 0, 3)
    assert w.success_rate is None
    assert w.promotion_rate() == 1.0 and w.promotion_rate(unknown_as_success=False) == 0.0
    assert mine_workflows([["ls", *DEPLOY]] * 3, min_support=3, unknown_as_success=False) == []


def test_mixed_outcomes_show_the_observed_rate_of_known_ones():
    sessions = [{"actions": DEPLOY, "outcome": "success"}, {"actions": DEPLOY, "outcome": "failure"},
                {"actions": DEPLOY}, {"actions": DEPLOY}]
    w = mine_workflows(sessions, min_support=3)[0]
    assert (w.support, w.successes, w.failures, w.unknown) == (4, 1, 1, 2)
    assert w.success_rate == pytest.approx(0.5)  # 1 of the 2 sessions with a known outcome
    assert w.promotion_rate() == pytest.approx(0.75)  # (1 + 2 unknown) / 4: unknown counts as success


# ------------------------------------------------------------------ incremental counting

_ACTIONS = st.sampled_from(["ls", "cd src", "make", "make test", "git push", "vim a.txt"])
_SESSION = st.fixed_dictionaries({
    "actions": st.lists(_ACTIONS, min_size=1, max_size=7),
    "outcome": st.sampled_from(["success", "failure", None]),
})


@settings(max_examples=60, deadline=None)
@given(first=st.lists(_SESSION, max_size=8), then=st.lists(_SESSION, max_size=4), support=st.integers(1, 3))
def test_changed_patterns_are_the_only_ones_whose_candidacy_can_change(first, then, support):
    counter = PatternCounter(min_length=2, max_length=4, track_changes=True)
    counter.add(first)
    before = {tuple(c.steps): c for c in counter.candidates(min_support=support, min_success_rate=0.5)}
    counter.changed.clear()
    counter.add(then)
    full = counter.candidates(min_support=support, min_success_rate=0.5)
    changed = counter.candidates(min_support=support, min_success_rate=0.5, among=counter.changed)
    assert changed == [c for c in full if tuple(c.steps) in counter.changed]
    # Outside the changed patterns, the candidates are exactly the ones before.
    assert {tuple(c.steps): c for c in full if tuple(c.steps) not in counter.changed} == {
        g: c for g, c in before.items() if g not in counter.changed
    }
    assert counter.sessions == len(first) + len(then)
    assert mine_workflows(first + then, min_support=support, min_success_rate=0.5, min_length=2, max_length=4) == full


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sessions=st.lists(_SESSION, min_size=1, max_size=12), room=st.integers(1, 4))
def test_learning_session_by_session_mines_what_a_full_recount_does(tmp_path_factory, sessions, room):
    # Each learn_session mines only the patterns of the new session; refresh() before every
    # session forces the full recount the miner did before: the stored workflows, their
    # statuses, counters and version histories must be the same.
    mining = MiningConfig(min_support=2, min_length=2, max_workflows=room)
    d = tmp_path_factory.mktemp("mine")
    fast = ProceduralMemory(path=d / "a.sqlite3", embedder=HashingEmbedder(dim=32), mining=mining)
    full = ProceduralMemory(path=d / "b.sqlite3", embedder=HashingEmbedder(dim=32), mining=mining)
    for i, s in enumerate(sessions):
        fast.learn_session(s["actions"], s["outcome"], session_id=f"s{i}")
        full.refresh()
        full.learn_session(s["actions"], s["outcome"], session_id=f"s{i}")

    def state(m):
        return sorted((p.id, p.version, p.metadata, [v.note for v in m.versions(p.id)])
                      for p in m.store.list(kinds=["workflow"]))

    assert state(fast) == state(full)
    fast.close()
    full.close()


def test_a_workflow_left_out_for_want_of_room_is_promoted_when_room_comes_free(tmp_path):
    m = ProceduralMemory(path=tmp_path / "m.sqlite3", embedder=HashingEmbedder(dim=32),
                         mining=MiningConfig(min_support=2, min_length=2, max_workflows=1))
    for _ in range(2):
        m.learn_session(["git pull", "make deploy"], "success")
    for _ in range(2):
        m.learn_session(["make test", "git push"], "success")  # promotable, but no room
    assert [p.metadata["templates"] for p in m.store.list(kinds=["workflow"])] == [["git pull", "make deploy"]]
    for _ in range(2):
        m.learn_session(["git pull", "make deploy"], "failure")  # 2 of 4: demoted, room comes free
    m.learn_session(["ls"], "success")  # a session with no pattern of either
    status = {tuple(p.metadata["templates"]): p.metadata["status"] for p in m.store.list(kinds=["workflow"])}
    assert status == {("git pull", "make deploy"): "demoted", ("make test", "git push"): "promoted"}
    m.close()


def test_a_slow_mining_never_writes_its_older_counts_over_a_later_ones(tmp_path):
    import threading

    m = ProceduralMemory(path=tmp_path / "m.sqlite3", embedder=HashingEmbedder(dim=32),
                         mining=MiningConfig(min_support=2, min_length=2))
    deploy = ["git pull", "make build", "make deploy"]
    for _ in range(2):
        m.learn_session(deploy, "success")
    # The next mining stops after counting (support 3), before writing, while a second agent
    # learns the same session (support 4) and mines.
    apply, counted, go = m._apply_mined, threading.Event(), threading.Event()

    def slow_apply(*args, **kwargs):
        if not counted.is_set():
            counted.set()
            go.wait(timeout=5)
        return apply(*args, **kwargs)

    m._apply_mined = slow_apply
    first = threading.Thread(target=m.learn_session, args=(deploy, "success"))
    first.start()
    assert counted.wait(timeout=5)
    second = threading.Thread(target=m.learn_session, args=(deploy, "success"))
    second.start()
    second.join(timeout=0.5)  # it waits for the first mining to finish writing
    go.set()
    first.join()
    second.join()
    [wf] = m.store.list(kinds=["workflow"])
    assert wf.metadata["support"] == 4 == m.store.count_sessions()
    m.close()


def test_a_mined_workflow_never_takes_over_an_id_someone_else_chose(tmp_path):
    # Ids are unique in the store: an agent of another namespace (or the user) may have chosen
    # the id the miner would give a workflow. Mining must neither fail nor overwrite it.
    m = ProceduralMemory(path=tmp_path / "m.sqlite3", embedder=HashingEmbedder(dim=32),
                         mining=MiningConfig(min_support=2, min_length=2))
    key = workflow_key(["git pull", "make deploy"])
    other = ProceduralMemory(store=m.store, embedder=m.embedder, namespace="agent-b")
    other.add({"id": f"wf-{key}", "name": "squatter", "namespace": "agent-b"})
    m.add({"id": f"wf-default-{key}", "name": "my own notes"})
    for _ in range(2):
        m.learn_session(["git pull", "make deploy"], "success")
    [wf] = [p for p in m.store.list(kinds=["workflow"], namespace="default") if p.metadata.get("learned")]
    assert wf.metadata["templates"] == ["git pull", "make deploy"] and wf.id not in {f"wf-{key}", f"wf-default-{key}"}
    assert m.get(f"wf-{key}").name == "squatter" and m.get(f"wf-default-{key}").name == "my own notes"
    m.learn_session(["git pull", "make deploy"], "failure")  # later minings update that same workflow
    assert m.get(wf.id).metadata["support"] == 3
    m.close()


def test_counter_validates_and_leaves_a_malformed_session_uncounted():
    with pytest.raises(ConfigurationError, match="max_length"):
        PatternCounter(min_length=3, max_length=2)
    counter = PatternCounter(min_length=2, max_length=3)
    with pytest.raises(InvalidSessionError, match=r"sessions\[1\]"):
        counter.add([["a", "b"], ["a", ""]])
    assert counter.sessions == 1
    assert [c.support for c in counter.candidates(min_support=1)] == [1]
    with pytest.raises(ConfigurationError, match="min_support"):
        counter.candidates(min_support=0)


def _workflows(m):
    return sorted((p.id, p.version, p.metadata, [v.note for v in m.versions(p.id)])
                  for p in m.store.list(kinds=["workflow"]))


def test_changed_thresholds_reexamine_every_pattern_as_a_recount_does(tmp_path):
    m = ProceduralMemory(path=tmp_path / "m.sqlite3", embedder=HashingEmbedder(dim=32),
                         mining=MiningConfig(min_support=3, min_length=2))
    for outcome in ("success", "success", "success", "failure", "failure"):
        m.learn_session(["git pull", "make deploy"], outcome)
    for _ in range(2):
        m.learn_session(["make test", "git push"], "success")  # support 2 < 3
    assert [p.metadata["status"] for p in m.store.list(kinds=["workflow"])] == ["demoted"]  # 3/5 < 0.7
    m.mining = MiningConfig(min_support=2, min_success_rate=0.5, min_length=2)
    m.learn_session(["ls"], "success")  # no pattern of either
    status = {tuple(p.metadata["templates"]): p.metadata["status"] for p in m.store.list(kinds=["workflow"])}
    assert status == {("git pull", "make deploy"): "promoted", ("make test", "git push"): "promoted"}
    before = _workflows(m)
    m.refresh()
    assert m.mine_workflows() == [] and _workflows(m) == before
    m.close()


@pytest.mark.parametrize("how", ["delete", "forget", "update"])
def test_a_workflow_changed_by_the_user_is_mined_as_a_recount_does(tmp_path, how):
    m = ProceduralMemory(path=tmp_path / "m.sqlite3", embedder=HashingEmbedder(dim=32),
                         mining=MiningConfig(min_support=2, min_length=2))
    for _ in range(2):
        m.learn_session(["git pull", "make deploy"], "success")
    [wf] = m.store.list(kinds=["workflow"])
    if how == "delete":
        m.delete(wf.id)
    elif how == "forget":
        assert m.forget(min_importance=0.9) == [wf.id]
    else:
        m.update(wf.id, metadata={**wf.metadata, "status": "demoted"})
    m.learn_session(["ls"], "success")  # no pattern of the workflow
    after = _workflows(m)
    m.refresh()
    m.mine_workflows()
    assert _workflows(m) == after
    assert [p.metadata["status"] for p in m.store.list(kinds=["workflow"])] == ["promoted"]
    m.close()


def test_counts_are_not_kept_while_mining_is_disabled(tmp_path):
    m = ProceduralMemory(path=tmp_path / "m.sqlite3", embedder=HashingEmbedder(dim=32),
                         mining=MiningConfig(min_support=2, min_length=2))
    m.learn_session(["git pull", "make deploy"], "success")
    assert m._miners
    m.mining = MiningConfig(min_support=2, min_length=2, enabled=False)
    m.learn_session(["git pull", "make deploy"], "success")
    m.observe("ls", session_id="o")
    m.end_session("o", "success")
    assert not m._miners and m.store.list(kinds=["workflow"]) == []
    m.mining = MiningConfig(min_support=2, min_length=2)
    m.learn_session(["ls"], "success")
    assert [p.metadata["support"] for p in m.store.list(kinds=["workflow"])] == [2]
    m.close()
