import pytest

from procmem.errors import ConfigurationError, InvalidSessionError
from procmem.learning.mining import WorkflowCandidate, mine_workflows, workflow_key
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
