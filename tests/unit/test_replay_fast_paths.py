"""The fast paths of bulk replay give exactly what the straightforward code gives."""

import random

from procmem.learning import normalize as norm_mod
from procmem.learning.normalize import NormalizedAction, collapse_whitespace, normalize_action
from procmem.prediction import NextActionPredictor
from procmem.prediction import predictor as pred_mod

_PIECES = ["http://", "www.", "a", "Z", "x1", "255.", "0", "/", ".", "-", ":", "@", "=", "~", "*", "(",
           ")", "]", ",", " ", "  ", "\t", "é", "١", "_", "txt", "deadbeef1", ".tar.gz", "10.0.0.1",
           ":8080", "/24", "x.py(", "-7", "3.5", "v1.2", "'", '"', "'a b'", '"c d"']


def test_word_by_word_normalisation_equals_one_scan_of_the_text():
    rng = random.Random(0)
    texts = ["scp notes.txt root@10.0.0.2:/tmp", "ls -la ./x/ 10.0.0.1/24", "tar xf a.tar.gz -C /opt 3",
             "v1.2 (3) 4,5 x-1 2", "curl http://a.b/c d", "echo 'a b' 1.2.3.4", "", "   "]
    texts += ["".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 14))) for _ in range(20_000)]
    for text in texts:
        assert normalize_action(text) == NormalizedAction(*norm_mod._scan(collapse_whitespace(text))), text


def _reference_learn_slots(self, tpl, values, live, names):
    """``_learn_slots`` as ``_slot_options`` defines it (the options listed, then counted)."""
    if live.task_values is None:
        live.task_values = norm_mod.extract_task_values(live.task) if live.task else {}
    for i, (ph, v) in enumerate(values):
        for value, index in self._slot_options(tpl, i, ph, live, live.task_values, live.used):
            self._source_tries[index] += 1
            if value == v:
                self._source_hits[index] += 1
        g = self._slot_global.setdefault((tpl, i), {})
        g[v] = g.get(v, 0) + 1


def _sessions(n=60, seed=1):
    rng = random.Random(seed)
    hosts = [f"10.0.0.{i}" for i in range(4)]
    files = [f"notes{i}.txt" for i in range(5)]
    out = []
    for s in range(n):
        f, h = rng.choice(files), rng.choice(hosts)
        actions = []
        for _ in range(rng.randint(3, 25)):
            actions.append(rng.choice([
                f"scp {rng.choice(files)} root@{rng.choice(hosts)}:/tmp",
                f"ssh -p {rng.choice([22, 2222])} root@{rng.choice(hosts)}",
                f"cat /etc/{rng.choice(['passwd', 'shadow', 'hosts'])}",
                f"login(username='u{rng.randint(0, 2)}', password='p{rng.randint(0, 1)}')",
                f"cp(source='{rng.choice(files)}', destination='{f}')",
                "ls -la",
            ]))
        task = f"copy '{f}' to {h}" if s % 3 else None
        out.append({"actions": actions, "task": task, "outcome": s % 2 == 0})
    return out


def test_slot_statistics_equal_those_of_the_listed_options(monkeypatch):
    sessions = _sessions()
    fast = NextActionPredictor()
    fast.learn_sessions(sessions)
    monkeypatch.setattr(pred_mod.NextActionPredictor, "_learn_slots", _reference_learn_slots)
    ref = NextActionPredictor()
    ref.learn_sessions(sessions)
    assert sum(ref._source_tries) > 0
    assert fast._source_tries == ref._source_tries
    assert fast._source_hits == ref._source_hits
    assert fast._slot_global == ref._slot_global
    context = sessions[-1]["actions"][:3]
    assert fast.rank(context, task=sessions[-1]["task"]) == ref.rank(context, task=sessions[-1]["task"])
