"""Prequential (online) evaluation of next-action prediction on sessions JSONL files.

The protocol is the one of ``shared/data/README.md`` (Dawid 1984's prequential principle:
predict, then learn): sessions are taken in file order; there is one model per scope key
(``session`` → ``session_id``, ``user`` → ``user_id``, ``group`` → ``group``, ``global`` → one
model); every action of every session is a target; the model sees the session's earlier actions
(and its task text: the ``instructions`` joined with spaces, or, when the session gives a
``turn`` per action, the instruction of that action's turn) as context, ranks candidates, then
learns the true action; at the session's end it learns the outcome. An empty ranking is a miss.

Metrics: top-1, top-3 and MRR@10 on the exact action (white space collapsed), top-1 and top-3
on the program (first word, or the function name before ``(``), latency of each ranking call in
milliseconds (p50/p95/p99), learning throughput (actions per second of ``observe``), and, for
models with ``predict``, the expected calibration error of the top-1 confidence over 10 equal-
width bins (Naeini et al., AAAI 2015).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from procmem.errors import ConfigurationError, ImportFormatError, ValidationError
from procmem.learning.normalize import collapse_whitespace, program
from procmem.types import SessionRecord

__all__ = [
    "ModelMetrics",
    "NextActionReport",
    "evaluate_next_action",
    "load_sessions_jsonl",
]

Scope = Literal["session", "user", "group", "global"]
_SCOPES = ("session", "user", "group", "global")


class ModelMetrics(BaseModel):
    """Figures of one model under the prequential protocol.

    Attributes:
        name: Model name (``"procmem"`` for ours, a peer's registry name otherwise).
        targets: Number of predicted actions.
        top1: Fraction of targets whose exact action was ranked first, in [0, 1].
        top3: Fraction ranked in the first three, in [0, 1].
        mrr10: Mean reciprocal rank, counting ranks beyond 10 as 0.
        program_top1: Top-1 on the program of the action.
        program_top3: Top-3 on the program (distinct programs of the ranking).
        latency_p50_ms: Median ranking latency in milliseconds.
        latency_p95_ms: 95th percentile, milliseconds.
        latency_p99_ms: 99th percentile, milliseconds.
        learn_actions_per_s: Actions learned per second by ``observe``.
        ece: Expected calibration error of the top-1 confidence (10 bins), None when the
            model gives no confidence.
    """

    name: str
    targets: int = 0
    top1: float = 0.0
    top3: float = 0.0
    mrr10: float = 0.0
    program_top1: float = 0.0
    program_top3: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    latency_p99_ms: float = 0.0
    learn_actions_per_s: float = 0.0
    ece: float | None = None


class NextActionReport(BaseModel):
    """Result of :func:`evaluate_next_action`.

    Attributes:
        source: Where the sessions came from (a path, or ``"<sessions>"``).
        scope: The scope of the models.
        sessions: Number of sessions.
        targets: Number of targets (actions).
        models: Metrics per model, ours first.
        seconds: Wall time of the whole run.
    """

    source: str
    scope: str
    sessions: int
    targets: int
    models: list[ModelMetrics] = Field(default_factory=list)
    seconds: float = 0.0

    def model(self, name: str) -> ModelMetrics:
        """Return the metrics of the model called ``name``.

        Raises:
            KeyError: No model of that name was evaluated.
        """
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)


def load_sessions_jsonl(path: str | Path) -> list[SessionRecord]:
    """Read a sessions JSONL file (the shared format) into session records.

    Each line is ``{"session_id", "user_id", "group"?, "actions", "outcome"?,
    "instructions"?, "turn"?, "timestamps"?}``; ``task`` becomes the instructions joined with
    spaces, and ``turn`` (one instruction index per action) is kept as ``turns``.
    Blank lines are skipped; unknown keys are ignored.

    Args:
        path: The file.

    Returns:
        The sessions in file order.

    Raises:
        ImportFormatError: The file is missing or a line is not a valid session; the message
            names the file and the line number.
    """
    from procmem.io import read_sessions_jsonl

    try:
        return list(read_sessions_jsonl(path))
    except OSError as exc:
        raise ImportFormatError(f"cannot read {str(path)!r}: {exc}", field="path", value=str(path)) from exc


def _scope_key(s: SessionRecord, scope: str) -> str:
    if scope == "session":
        return s.session_id
    if scope == "user":
        return s.user_id or s.session_id
    if scope == "group":
        return s.group or ""
    return ""


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    ys = sorted(xs)
    i = min(len(ys) - 1, max(0, int(round(q / 100.0 * (len(ys) - 1)))))
    return ys[i]


class _Tally:
    def __init__(self, name: str) -> None:
        self.name = name
        self.n = 0
        self.top1 = 0
        self.top3 = 0
        self.rr = 0.0
        self.p1 = 0
        self.p3 = 0
        self.lat: list[float] = []
        self.learn_s = 0.0
        self.learned = 0
        self.conf: list[tuple[float, bool]] = []

    def add(self, ranking: Sequence[str], truth: str, seconds: float) -> None:
        self.n += 1
        self.lat.append(seconds * 1000.0)
        ranking = [collapse_whitespace(a) for a in ranking[:10]]
        if ranking:
            if ranking[0] == truth:
                self.top1 += 1
            if truth in ranking[:3]:
                self.top3 += 1
            if truth in ranking:
                self.rr += 1.0 / (ranking.index(truth) + 1)
            tp = program(truth)
            progs: list[str] = []
            for a in ranking:
                pa = program(a)
                if pa not in progs:
                    progs.append(pa)
            if progs[0] == tp:
                self.p1 += 1
            if tp in progs[:3]:
                self.p3 += 1

    def metrics(self) -> ModelMetrics:
        n = max(self.n, 1)
        ece = None
        if self.conf:
            bins: list[list[float]] = [[0.0, 0.0, 0.0] for _ in range(10)]
            for c, hit in self.conf:
                b = bins[min(int(c * 10), 9)]
                b[0] += 1
                b[1] += c
                b[2] += 1.0 if hit else 0.0
            ece = sum(abs(b[1] - b[2]) for b in bins if b[0]) / len(self.conf)
        return ModelMetrics(
            name=self.name, targets=self.n, top1=self.top1 / n, top3=self.top3 / n,
            mrr10=self.rr / n, program_top1=self.p1 / n, program_top3=self.p3 / n,
            latency_p50_ms=_pct(self.lat, 50), latency_p95_ms=_pct(self.lat, 95),
            latency_p99_ms=_pct(self.lat, 99),
            learn_actions_per_s=self.learned / self.learn_s if self.learn_s > 0 else 0.0,
            ece=ece,
        )


def _default_factory() -> Any:
    from procmem.prediction.predictor import NextActionPredictor

    return NextActionPredictor()


def evaluate_next_action(
    sessions_or_path: str | Path | Iterable[SessionRecord],
    *,
    scope: Scope = "user",
    model_factory: Callable[[], Any] | None = None,
    peers: Sequence[str] | dict[str, Callable[[], Any]] = (),
    output: str | Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    confidence: bool = True,
) -> NextActionReport:
    """Evaluate next-action prediction prequentially (protocol of ``shared/data/README.md``).

    Args:
        sessions_or_path: A sessions JSONL file or session records, in order.
        scope: One model per ``"session"``, ``"user"``, ``"group"`` or one ``"global"`` model.
        model_factory: Builds our model (default :class:`NextActionPredictor` with no embedder).
            The model needs ``rank(context, task=, k=)``, ``observe(action, session_id=, task=)``
            and ``end_session(session_id, outcome=)``; with ``predict`` and ``confidence=True``
            the top-1 confidence is collected for the calibration error.
        peers: Names from :data:`procmem.prediction.baselines.PEERS`, or a mapping name →
            factory, evaluated in the same run.
        output: When given, a JSON-lines file receiving one line per target for our model:
            ``{"session_id", "index", "predictions": [top-10 actions]}``.
        progress: Called as ``progress(sessions_done, sessions_total)`` after each session.
        confidence: Collect our top-1 confidence through ``predict`` (one extra call per
            target, not timed) to measure calibration.

    Returns:
        The report, our model first under the name ``"procmem"``.

    Raises:
        ConfigurationError: Unknown scope or peer name.
        ImportFormatError: The file cannot be read.
        ValidationError: There is no session to evaluate.

    Warns:
        UserWarning: Sessions lack the scope's field (``user_id``, ``group``): with scope
            user each such session is its own model, with scope group they share one.
    """
    if scope not in _SCOPES:
        raise ConfigurationError(f"scope must be one of {_SCOPES}, got {scope!r}")
    from procmem.prediction.baselines import PEERS

    if isinstance(peers, dict):
        peer_factories = dict(peers)
    else:
        peer_factories = {}
        for name in peers:
            if name not in PEERS:
                raise ConfigurationError(f"unknown peer {name!r}; known: {sorted(PEERS)}")
            peer_factories[name] = PEERS[name]
    if isinstance(sessions_or_path, (str, Path)):
        source = str(sessions_or_path)
        sessions = load_sessions_jsonl(sessions_or_path)
    else:
        source = "<sessions>"
        sessions = list(sessions_or_path)
    if not sessions:
        raise ValidationError(f"no sessions in {source}: nothing to evaluate", field="sessions_or_path",
                              value=source)
    field = {"user": "user_id", "group": "group"}.get(scope)
    missing = sum(1 for s in sessions if not getattr(s, field)) if field else 0
    if missing:
        fallback = "each is its own model" if scope == "user" else "they share one model"
        warnings.warn(f"{missing} of {len(sessions)} sessions have no {field} for scope {scope!r}: {fallback}",
                      UserWarning, stacklevel=2)
    factories: dict[str, Callable[[], Any]] = {"procmem": model_factory or _default_factory}
    factories.update(peer_factories)
    models: dict[str, dict[str, Any]] = {name: {} for name in factories}
    tallies = {name: _Tally(name) for name in factories}
    out_fh = open(output, "w", encoding="utf-8") if output is not None else None  # noqa: SIM115
    start = time.perf_counter()
    targets = 0
    clock = time.perf_counter
    try:
        for si, s in enumerate(sessions):
            key = _scope_key(s, scope)
            actions = [collapse_whitespace(a) for a in s.actions]
            for name, factory in factories.items():
                model = models[name].get(key)
                if model is None:
                    model = models[name][key] = factory()
                tally = tallies[name]
                ours = name == "procmem"
                for i, truth in enumerate(actions):
                    context = actions[:i]
                    task = s.task_at(i)  # the instruction of the action's turn, when turns are given
                    t0 = clock()
                    ranking = model.rank(context, task=task, k=10)
                    tally.add(ranking, truth, clock() - t0)
                    if ours:
                        if confidence and hasattr(model, "predict") and ranking:
                            preds = model.predict(context, task=task, top_k=1)
                            if preds:
                                tally.conf.append((preds[0].confidence,
                                                   collapse_whitespace(preds[0].action) == truth))
                        if out_fh is not None:
                            out_fh.write(json.dumps({"session_id": s.session_id, "index": i,
                                                     "predictions": list(ranking[:10])}) + "\n")
                    t0 = clock()
                    model.observe(truth, session_id=s.session_id, task=task)
                    tally.learn_s += clock() - t0
                    tally.learned += 1
                model.end_session(s.session_id, outcome=s.outcome)
            targets += len(actions)
            if progress is not None:
                progress(si + 1, len(sessions))
    finally:
        if out_fh is not None:
            out_fh.close()
    return NextActionReport(
        source=source, scope=scope, sessions=len(sessions), targets=targets,
        models=[tallies[name].metrics() for name in factories],
        seconds=time.perf_counter() - start,
    )
