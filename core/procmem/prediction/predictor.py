"""Next-action prediction: a variable-order context model with an online-learned ranker.

:class:`NextActionPredictor` is seed 001's ``predict_next_action`` grown into a small
prequential learner. Several experts propose candidate next actions and describe each one by
a few numbers (features):

* **variable-order context model** over concrete actions, orders 0..``max_order``: the
  shrunk frequency ``c(a | ctx) / (n(ctx) + 1)`` (PPM escape method A; Cleary & Witten 1984)
  and whether ``a`` was the most recent continuation of the context (recency);
* **template model** over normalised actions (seed 001's normalisation) for contexts whose
  concrete values were never seen, with placeholders filled from the session's recent values
  of the same slot, of a slot with the same *name* (the word before the placeholder: a keyword
  argument such as ``access_token=``, a flag, a setting, so a value carries over between
  different calls), of the same type, from the task text, or the slot's usual value
  (:mod:`procmem.learning.normalize`);
* **skip context**: how often the candidate came two actions after the action two steps back,
  whatever came in between (a sparse context; Mahoney's PAQ sparse models, 2005);
* **program model**: the program (first word / function name) after the last program, which
  backs off further when even the template is new;
* **within-session repetition**: the last action, whether the candidate was the action exactly
  ``j`` steps back (``j`` = 2..6, so periodic patterns such as ``a b a b`` are learned) and a
  decayed count of recent ones (IPAM's observation that users repeat themselves; Davison &
  Hirsh 1998);
* **similar past tasks**: cosine similarity of the task text's embedding to past sessions'
  task texts (to each past *turn's* instruction in multi-turn sessions), voting for what those
  sessions or turns did after the same step (seed 001's embedding similarity); and, with an
  embedder, the nearest known action (cosine >= the threshold) for an action never seen before;
* **outcomes**: the success rate of the transition (graph edge) in past sessions;
* **task mentions**: the share of the candidate's argument values that the task text mentions.

The candidates' features are scored by a conditional-logit (softmax) ranker whose weights are
learned online by stochastic gradient ascent on the log-likelihood of the action that actually
came next (McFadden 1974; the online mixture-of-experts view of Jacobs et al. 1991). The
weights are shared weights plus two offset vectors, one selected by the longest context order
that matched (0..``max_order``) and one by the program of the last action, all updated with
the same gradient: how much to trust each expert depends on how much context was found and on
what was just done (after ``set X`` the next step is another ``set`` or ``run``; after ``cd``
almost anything), as in PAQ's mixers whose weight sets are selected by small contexts, several
selected sets contributing at once (Mahoney, "Adaptive weighing of context models for lossless
data compression", Florida Tech. TR CS-2005-16, 2005; PAQ8's mixer with several weight-set
selectors). Selecting by the last program rather than the last action keeps the number of sets
small where arguments vary, and still learns per-command trust where they do not. The top-1
confidence is calibrated online by histogram binning of past top-1 hits (Zadrozny & Elkan
2001), each bin shrunk towards the overall hit rate while few outcomes are known, so a model
that has learned nothing does not pass its softmax off as a probability. All updates are
deterministic functions of the observed sequence, so replaying stored sessions with
:meth:`NextActionPredictor.learn_sessions` rebuilds the same model.

Streaming (:meth:`~NextActionPredictor.observe`) updates the ranker at every action. Replay
(:meth:`~NextActionPredictor.learn_session` / ``learn_sessions``) counts every action but updates
the ranker and calibration only at every ``replay_stride``-th action of the model (a fixed,
deterministic subsample): the ranker's candidate features are what makes learning slow, and on
held-out data the subsampled weights rank as well as fully trained ones, so reopening a memory
replays tens of thousands of actions per second instead of a few hundred.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import heapq
import itertools
import math
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import compress
from operator import itemgetter
from typing import Any

import networkx as nx
import numpy as np

from procmem.embeddings.base import Embedder
from procmem.errors import ConfigurationError, InvalidSessionError, ValidationError
from procmem.learning.normalize import (
    collapse_whitespace,
    extract_task_values,
    normalize_action,
    placeholders_of,
    program,
    template_pieces,
)
from procmem.types import Prediction, SessionRecord

__all__ = ["NextActionPredictor"]

_SOURCES = ("slot", "name", "session", "task", "global")
_GAPS = 5
# The name of a slot: the last word before its placeholder (keyword argument, flag, setting).
# The look-behind changes no match (the leftmost match never starts after a letter or "_"); it
# only spares the search from trying every position inside a word.
_SLOT_NAME = re.compile(r"(?<![A-Za-z_])([A-Za-z_][\w-]*)[=:@\s'\"]*$")
# Slot values: how many values each source offers; each (source, rank) has an index into the
# slot-filling statistics and a prior probability that its value is right.
_SOURCE_LIMIT = {"slot": 2, "name": 2, "session": 3, "task": 4, "global": 2}
_SOURCE_RANKS = [(s, r) for s in _SOURCES for r in range(_SOURCE_LIMIT[s])]
_SOURCE_INDEX = {s: tuple(i for i, (s2, _) in enumerate(_SOURCE_RANKS) if s2 == s) for s in _SOURCES}
_SOURCE_PRIOR = [{"slot": 0.5, "name": 0.4, "session": 0.3, "task": 0.3, "global": 0.3}[s] / (1 + r)
                 for s, r in _SOURCE_RANKS]
# A count in the rank keys of ``_count_ranked`` (above any number of distinct values).
_RANK_UNIT = 1 << 32
# Validated, white-space-collapsed actions (actions repeat; bounded like normalize_action's).
_CLEAN: dict[str, str] = {}
_CLEAN_MAX = 200_000
# The program of an action (cached: candidates are scored by their program at every ranking).
_program = functools.lru_cache(maxsize=1 << 16)(program)


@functools.lru_cache(maxsize=1 << 16)
def _template_parts(tpl: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """A template's placeholders, the texts around them, and the name of each slot.

    A slot's name is the word just before its placeholder (``"access_token"``, ``"-p"``).
    """
    pieces = tuple(template_pieces(tpl))
    return tuple(placeholders_of(tpl)), pieces, tuple(_slot_name(piece) for piece in pieces[:-1])


@functools.lru_cache(maxsize=1 << 16)
def _action_parts(action: str) -> tuple[str, tuple[tuple[str, str], ...], str, tuple[str, ...]]:
    """An action's template, values, program and slot names (cached: learning needs all four)."""
    tpl, values = normalize_action(action)
    return tpl, values, _program(action), _template_parts(tpl)[2] if values else ()


@functools.lru_cache(maxsize=1 << 16)
def _slot_name(piece: str) -> str:
    """The name of the slot after ``piece`` (cached: templates share pieces such as ``" -p "``)."""
    m = _SLOT_NAME.search(piece)
    return m.group(1) if m else ""


def _log_scale(x: float) -> float:
    """A probability-like feature on a log scale (``log_features``); 0 stays 0."""
    return math.log1p(x * 100.0) * 0.2166 if x else x


def _unscaled(x: float) -> float:
    return x


def _check_action(action: Any, where: str, index: int | None = None) -> str:
    """Return the action white-space-collapsed; raise if it is not a non-blank string.

    ``where`` names it in the error, followed by ``[index]`` when an index is given.
    """
    if isinstance(action, str):
        clean = _CLEAN.get(action)
        if clean is not None:
            return clean
    if not isinstance(action, str) or not action.strip():
        if index is not None:
            where = f"{where}[{index}]"
        raise InvalidSessionError(f"{where} must be a non-blank string, got {action!r}",
                                  field=where, value=action)
    clean = collapse_whitespace(action)
    if len(_CLEAN) >= _CLEAN_MAX:
        _CLEAN.clear()
    _CLEAN[action] = clean
    return clean


def _outcome_flag(outcome: str | bool | None) -> bool | None:
    if outcome is None:
        return None
    if isinstance(outcome, bool):
        return outcome
    if isinstance(outcome, str):
        low = outcome.strip().lower()
        if low in {"success", "succeeded", "ok", "true", "pass", "passed"}:
            return True
        if low in {"failure", "failed", "fail", "error", "false"}:
            return False
    raise InvalidSessionError(
        f"outcome must be 'success', 'failure', a bool or None, got {outcome!r}",
        field="outcome", value=outcome,
    )


def _observed_rate(successes: int, failures: int) -> float | None:
    """``successes / (successes + failures)``, or None when no outcome is known."""
    known = successes + failures
    return successes / known if known else None


def _count(counts: dict[Any, dict[str, int]], ctx: Any, x: str) -> None:
    """Count ``x`` after the context ``ctx``: ``counts[ctx][x] += 1``."""
    d = counts.get(ctx)
    if d is None:
        counts[ctx] = {x: 1}
    else:
        d[x] = d.get(x, 0) + 1


class _ContextTree:
    """What followed each context of a sequence: the trie of PPM's contexts (Cleary & Witten 1984).

    Keyed most recent symbol first: node ``i`` (0 is the empty context) has ``followers[i]``
    (``{symbol: count}`` of what came after the context), ``last[i]`` (its last follower) and
    ``children[i]`` (``{earlier symbol: node}`` of the contexts one symbol longer, None while
    there are none). Nodes are indices into plain lists and the maps hold only strings and
    ints, so the garbage collector tracks none of the per-context objects (bulk replay makes
    tens of thousands, which it would otherwise scan at its next collection).
    """

    __slots__ = ("followers", "last", "children")

    def __init__(self) -> None:
        self.followers: list[dict[str, int]] = [{}]
        self.last: list[str | None] = [None]
        self.children: list[dict[str, int] | None] = [None]

    def count(self, recent: Iterable[str], x: str) -> None:
        """Count ``x`` after the contexts of the first 1, 2, ... ``recent`` symbols (most recent first).

        A context seen for the first time makes every longer one new too.
        """
        followers, last, children = self.followers, self.last, self.children
        node = 0
        it = iter(recent)
        for y in it:
            ch = children[node]
            child = ch.get(y) if ch is not None else None
            if child is None:
                while True:  # new, and so are the longer contexts
                    child = len(followers)
                    followers.append({x: 1})
                    last.append(x)
                    children.append(None)
                    if ch is None:
                        children[node] = {y: child}
                    else:
                        ch[y] = child
                    y = next(it, None)
                    if y is None:
                        return
                    node, ch = child, None
            d = followers[child]
            d[x] = d.get(x, 0) + 1
            last[child] = x
            node = child

    def nodes(self, recent: Iterable[str]) -> list[int]:
        """The nodes of the known contexts of the first 1, 2, ... ``recent`` symbols (most recent first)."""
        out: list[int] = []
        node = 0
        children = self.children
        for y in recent:
            ch = children[node]
            child = ch.get(y) if ch is not None else None
            if child is None:
                break
            out.append(child)
            node = child
        return out

    def followers_of(self, recent: Sequence[str]) -> dict[str, int]:
        """What followed the whole context ``recent`` (most recent symbol first); empty if never seen."""
        nodes = self.nodes(recent)
        return self.followers[nodes[-1]] if len(nodes) == len(recent) and nodes else {}

    def contexts(self) -> Iterator[tuple[tuple[str, ...], dict[str, int]]]:
        """Every context but the empty one, oldest symbol first, with its followers (in no particular order)."""
        stack: list[tuple[tuple[str, ...], int]] = [((), 0)]
        while stack:
            ctx, node = stack.pop()
            if ctx:
                yield ctx, self.followers[node]
            ch = self.children[node]
            if ch:
                stack.extend(((y, *ctx), child) for y, child in ch.items())


def _count_ranked(ranked: tuple[dict[str, int], list[str]], v: str) -> None:
    """Count ``v`` in ``ranked``: ``({value: rank key}, values most frequent first)``.

    A value's rank key is ``count * 2**32 - first``, ``first`` being how many values were
    counted before its first count: the order is by count, ties in order of first count (as a
    stable sort of the values by count would give). ``v`` moves up past the values it now
    beats (few: it had one count less), so the order is kept without sorting; the keys are
    plain ints, which the garbage collector does not track.
    """
    stats, order = ranked
    key = stats.get(v)
    if key is None:
        stats[v] = _RANK_UNIT - len(stats)
        order.append(v)
        return
    key = stats[v] = key + _RANK_UNIT
    i = order.index(v)
    while i and stats[order[i - 1]] < key:
        order[i] = order[i - 1]
        i -= 1
    order[i] = v


def _take(values: Iterable[str], ranks: tuple[int, ...], out: dict[str, int]) -> None:
    """Add to ``out`` the first ``len(ranks)`` values not in it, each with its rank's index."""
    r = 0
    for v in values:
        if v not in out:
            out[v] = ranks[r]
            r += 1
            if r == len(ranks):
                return


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for the duration (restored as it was after).

    Bulk replay creates container objects that live as long as the model (tuples, lists),
    none of them in reference cycles; the collector would scan them again and again as the
    model grows (~10% of kypo's replay time), where paused it scans them once, at its next
    collection (which re-enabling it soon triggers; the context trees keep their many
    per-context objects out of its sight, see ``_ContextTree``). Mercurial's ``nogc``
    decorator does the same around its bulk loads.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _push_recent(d: dict[Any, dict[str, None]], key: Any, value: str) -> None:
    """Make ``value`` the most recent (last) of ``d[key]``, an insertion-ordered set.

    A dict, not a list: moving a value to the end is O(1), so a session with many distinct
    values (``kill 1``, ``kill 2``...) learns in linear time (a list's ``remove`` made it
    quadratic: 34.6 s for 40,000 actions of one session).
    """
    seen = d.get(key)
    if seen is None:
        d[key] = {value: None}
    elif next(reversed(seen)) != value:  # values repeat: often it is the most recent already
        seen.pop(value, None)
        seen[value] = None


def _push_copy(d: dict[Any, dict[str, None]], key: Any, value: str) -> None:
    """As :func:`_push_recent`, changing a new dict (so a shallow copy of ``d`` can learn)."""
    seen = d.get(key)
    if seen is not None and next(reversed(seen)) != value:  # it changes: copy it first
        d[key] = seen.copy()
    _push_recent(d, key, value)


class _Live:
    """The state of one session being streamed."""

    __slots__ = ("actions", "templates", "programs", "task", "slot_values", "type_values", "used",
                 "name_values", "task_values", "tasks")

    def __init__(self, task: str | None) -> None:
        self.actions: list[str] = []
        self.templates: list[str] = []
        self.programs: list[str] = []
        self.task = task
        # Values seen in the session, most recent last (dicts used as insertion-ordered sets).
        self.slot_values: dict[tuple[str, int], dict[str, None]] = {}
        self.type_values: dict[str, dict[str, None]] = {}
        self.used: set[str] = set()  # every value in type_values
        self.name_values: dict[str, dict[str, None]] = {}  # slot name -> values
        self.task_values: dict[str, list[str]] | None = None
        self.tasks: list[str | None] = []  # the task in force at each action (turns change it)


class _Context:
    """A context given to ``rank``/``predict``, remembered until a different one comes.

    Callers usually pass one session's actions again and again, growing by one action each
    time (rank, predict, then observe the truth), so only the new actions are validated and
    their slot values remembered; the same context ranked twice without learning in between
    reuses the ranking.
    """

    __slots__ = ("raw", "live", "ranked")

    def __init__(self) -> None:
        self.raw: list[Any] = []  # the actions as given
        # The actions validated (``live.actions``), their templates and slot values, as a
        # streamed session's.
        self.live = _Live(None)
        self.ranked: tuple[int, str | None, Any] | None = None  # (model version, task, ranking)


class NextActionPredictor:
    """Predicts an agent's or user's next action from the actions so far (seed 001).

    Args:
        embedder: Embeds task texts (and unseen actions) to find similar past sessions; None
            disables the embedding experts (everything else works without it).
        max_order: Longest context, in actions, of the context models (>= 1).
        similarity_threshold: Cosine similarity in [-1, 1] an unseen action must reach with a
            known one to borrow its continuations (seed 001 used 0.7).
        task_neighbours: How many most similar past tasks vote (>= 1).
        template_order: Longest context of the template model (>= 1).
        learning_rate: Step size of the online ranker (> 0). With the weight sets selected per
            last program (many more weights, each updated rarely), 0.15 ranks better than 0.05
            on the shared data (top-1 +0.4 points on sea, +0.7 on kypo; 0.1-0.3 are alike).
        calibration_bins: Histogram bins of the online confidence calibration (>= 2).
        top_frequent: How many of the most frequent actions are always candidates.
        log_features: Score probabilities on a log scale (a product of experts) rather than
            linearly.
        window: Actions after an action that count as its "triggers" (skip-gram model).
        embed_actions: Also embed an action never seen before to borrow the continuations of
            the nearest known action (costs one embedding per new action).
        program_first: Put first the most likely action *of the most likely program* (a
            program's probability being the sum of its candidate actions'), rather than the
            single most likely action; the rest keep their order. Which program or tool comes
            next is the first decision of a procedure, and the probability of a program spread
            over many argument variants is otherwise lost: on ``benchmarks/next_action.py`` this
            raised program top-1 by 4 points on kypo and bfcl, at the cost of 0.8 points of
            exact top-1 on kypo (none on bfcl; sea's actions are bare programs). False ranks by
            the action's own probability only.
        online: When False the ranker keeps its initial weights and calibration is not
            updated; learning is then pure counting (fastest bulk replay).
        replay_stride: Replay (``learn_session``/``learn_sessions``) updates the ranker only
            on actions whose index in the model is a multiple of this (>= 1; 1 updates on
            every action, as streaming does).
        optimizer: ``"sgd"`` (plain steps of ``learning_rate``; with 0.1-0.3 it gains ~1 point
            top-1 on kypo and bfcl but loses ~1 on sea) or ``"adagrad"`` (default; steps shrink
            with each weight's accumulated squared gradients; Duchi et al. 2011).

    Raises:
        ConfigurationError: An option is out of range.

    Example:
        >>> p = NextActionPredictor()
        >>> for _ in range(3):
        ...     p.learn_session(["git status", "git add .", "git commit -m x"], outcome=True)
        >>> p.rank(["git status", "git add ."], k=1)
        ['git commit -m x']
    """

    def __init__(
        self,
        *,
        embedder: Embedder | None = None,
        max_order: int = 5,
        similarity_threshold: float = 0.7,
        task_neighbours: int = 8,
        template_order: int = 3,
        learning_rate: float = 0.15,
        calibration_bins: int = 20,
        online: bool = True,
        top_frequent: int = 20,
        log_features: bool = True,
        window: int = 5,
        embed_actions: bool = False,
        program_first: bool = True,
        replay_stride: int = 256,
        optimizer: str = "adagrad",
    ) -> None:
        if not isinstance(max_order, int) or max_order < 1:
            raise ConfigurationError(f"max_order must be an int >= 1, got {max_order!r}")
        if not isinstance(template_order, int) or template_order < 1:
            raise ConfigurationError(f"template_order must be an int >= 1, got {template_order!r}")
        if not -1.0 <= float(similarity_threshold) <= 1.0:
            raise ConfigurationError(
                f"similarity_threshold must be in [-1, 1], got {similarity_threshold!r}")
        if not isinstance(task_neighbours, int) or task_neighbours < 1:
            raise ConfigurationError(f"task_neighbours must be an int >= 1, got {task_neighbours!r}")
        if not learning_rate > 0:
            raise ConfigurationError(f"learning_rate must be > 0, got {learning_rate!r}")
        if not isinstance(replay_stride, int) or replay_stride < 1:
            raise ConfigurationError(f"replay_stride must be an int >= 1, got {replay_stride!r}")
        if not isinstance(calibration_bins, int) or calibration_bins < 2:
            raise ConfigurationError(
                f"calibration_bins must be an int >= 2, got {calibration_bins!r}")
        self.embedder = embedder
        self.max_order = max_order
        self.similarity_threshold = float(similarity_threshold)
        self.task_neighbours = task_neighbours
        self.template_order = template_order
        self.learning_rate = float(learning_rate)
        self.calibration_bins = calibration_bins
        self.online = online
        self.top_frequent = top_frequent
        self.window = window
        self.embed_actions = embed_actions
        self.program_first = bool(program_first)
        self.replay_stride = replay_stride
        if optimizer not in ("sgd", "adagrad"):
            raise ConfigurationError(f"optimizer must be 'sgd' or 'adagrad', got {optimizer!r}")
        self.optimizer = optimizer

        # Counts are kept without their totals: learning is much more frequent than ranking,
        # which sums the few counts it needs.
        # Concrete context model, orders 0..max_order (the root's followers are the order-0
        # counts), and template model, orders 1..template_order.
        self._next = _ContextTree()
        self._tnext = _ContextTree()
        # Program model: previous program -> {program: count}.
        self._pnext: dict[str, dict[str, int]] = {}
        # Program -> its distinct actions, first seen first (their counts are the order-0 ones).
        self._pactions: dict[str, list[str]] = {}
        # Trigger (skip-gram) model: b -> {a: times a came within ``window`` actions after b}.
        self._trig: dict[str, dict[str, int]] = {}
        self._pnext2: dict[tuple[str, str], dict[str, int]] = {}
        # Skip context: the action two steps back -> {action: count}.
        self._skip: dict[str, dict[str, int]] = {}
        # Slot filling: (template, slot) -> its values' counts and the values most frequent
        # first (see ``_count_ranked``).
        self._slot_global: dict[tuple[str, int], tuple[dict[str, int], list[str]]] = {}
        # Per (source, rank) index: how often its value was offered, and was the right one.
        self._source_tries = [0] * len(_SOURCE_RANKS)
        self._source_hits = [0] * len(_SOURCE_RANKS)
        # Outcomes: template edge -> [successes, failures] (edges of sessions with a known
        # outcome); template -> outcomes.
        self._edges: dict[tuple[str, str], list[int]] = {}
        self._outcomes: dict[str, list[int]] = {}
        self._pattern_outcomes: dict[tuple[str, ...], list[int]] = {}
        # Past tasks: embeddings and templates of sessions that had a task text.
        self._task_cache: dict[str, np.ndarray] = {}
        self._action_cache: dict[str, np.ndarray] = {}
        self._task_rows: list[np.ndarray] = []
        self._task_templates: list[list[str]] = []
        self._task_matrix: np.ndarray | None = None
        self._known_actions: list[str] = []
        self._known_matrix: np.ndarray | None = None
        # Ranker weights and calibration.
        self._names = self._feature_names()
        # The probability-like features (orders, templates, fill, program, program2, trigger,
        # task_next, task_any, similar_action, ppm, skip) go on a log scale when computed.
        self._scale = _log_scale if log_features else _unscaled
        self._w = self._initial_weights()
        self._g2 = [0.0] * len(self._w)
        # Context-selected weight offsets (one set per gate value) and their AdaGrad sums. The
        # gate is (longest matched order, "p:" + program of the last action); both sets apply.
        self._wg: dict[Any, list[float]] = {}
        self._g2g: dict[Any, list[float]] = {}
        self._gate: tuple[Any, ...] = (0,)
        self._cal = [[0, 0] for _ in range(calibration_bins)]
        # The last candidates ranked: (key, candidates, features, templates, gate, scores).
        self._cache: tuple[Any, list[str], list[list[float]], list[str], tuple[Any, ...], list[float]] | None = None
        self._live: dict[str, _Live] = {}
        self._memo: _Context | None = None  # the last context ranked
        self._version = 0  # counts changes of the model (learning), to know a ranking is current
        self._lock = threading.Lock()  # rank and predict share ``_memo``
        self._top0: list[str] | None = None  # the most frequent actions, see ``_refresh_top0``
        self._top0_min = 0
        self._top0_k = top_frequent
        self._first0: dict[str, int] = {}  # action -> how many distinct actions came before it
        self._n_sessions = 0
        self._n_actions = 0

    # ----------------------------------------------------------------------------- features

    def _feature_names(self) -> list[str]:
        k = self.max_order
        names = [f"order{i}" for i in range(k + 1)] + [f"last{i}" for i in range(1, k + 1)]
        names += [f"template{i}" for i in range(1, self.template_order + 1)]
        names += ["fill", "program", "program2", "trigger", "repeat1", "recent", "in_session", "task_next",
                  "task_any", "similar_action", "success", "ppm", "in_task"]
        names += [f"gap{i}" for i in range(2, _GAPS + 2)]
        names += ["skip"]
        return names

    def _initial_weights(self) -> list[float]:
        w = []
        for name in self._names:
            if name.startswith("order"):
                w.append(1.0 + 0.5 * int(name[5:]))
            elif name.startswith("last"):
                w.append(0.5)
            elif name.startswith("gap"):
                w.append(0.0)
            elif name.startswith("template"):
                w.append(1.0 + 0.5 * int(name[8:]))
            else:
                w.append({"fill": 1.0, "program": 1.0, "program2": 1.0, "trigger": 1.0, "repeat1": 0.0, "recent": 0.5,
                          "in_session": 0.5, "task_next": 2.0, "task_any": 1.0,
                          "similar_action": 1.0, "success": 0.0, "ppm": 3.0,
                          "in_task": 0.5, "skip": 0.5}[name])
        return w

    # ----------------------------------------------------------------------------- learning

    def learn_session(
        self,
        actions: Sequence[str],
        *,
        outcome: str | bool | None = None,
        task: str | Sequence[str] | None = None,
        timestamps: Sequence[Any] | None = None,
        session_id: str | None = None,
        turns: Sequence[int] | None = None,
    ) -> None:
        """Learn one whole session (seed 001's ``learn_workflow``).

        Equivalent to :meth:`observe` for each action then :meth:`end_session`, except that
        the ranker is updated only on every ``replay_stride``-th action (with
        ``replay_stride=1`` the two give identical models). Learning sessions one by one and
        all at once with :meth:`learn_sessions` give identical models.

        Args:
            actions: The actions in order; at least one non-blank string.
            outcome: ``"success"``/``"failure"``, a bool, or None when unknown.
            task: Task text, or a list of instruction texts (joined with spaces, or one per
                turn with ``turns``).
            timestamps: One per action if given (checked, otherwise unused).
            session_id: Identifier; a fresh one is used when omitted.
            turns: For a multi-turn session, one index into ``task`` (a list) per action: the
                turn's instruction is the task text of that action, as when it was streamed.

        Raises:
            InvalidSessionError: Empty actions, a blank action, bad outcome, or timestamps or
                turns of the wrong length or range.
        """
        if isinstance(actions, str) or not isinstance(actions, Sequence) or len(actions) == 0:
            raise InvalidSessionError(
                f"actions must be a non-empty list of strings, got {actions!r}"[:200],
                field="actions", value=actions)
        if timestamps is not None and len(timestamps) != len(actions):
            raise InvalidSessionError(
                f"timestamps has {len(timestamps)} items but actions has {len(actions)}",
                field="timestamps", value=len(timestamps))
        flag = _outcome_flag(outcome)
        clean = [_check_action(a, "actions", i) for i, a in enumerate(actions)]
        sid = session_id if session_id is not None else f"__replay_{self._n_sessions}"
        texts = self._turn_texts(task, turns, len(clean)) if turns is not None else None
        text = self._task_text(task) if texts is None else None
        self._live.pop(sid, None)
        stride = self.replay_stride
        online = self.online
        for i, a in enumerate(clean):
            # Replay updates the ranker on every ``replay_stride``-th action (counted over the
            # whole model), so replay stays deterministic and fast.
            self._observe(a, sid, text if texts is None else texts[i], online and self._n_actions % stride == 0)
        self._end(sid, flag)

    def _turn_texts(self, task: Any, turns: Sequence[int], n: int) -> list[str | None]:
        """Return the task text of each of ``n`` actions: its turn's instruction."""
        if isinstance(task, str) or not isinstance(task, Sequence) or not all(isinstance(t, str) for t in task):
            raise InvalidSessionError(f"turns needs task as a list of instruction strings, got {task!r}"[:200],
                                      field="task", value=task)
        if isinstance(turns, str) or not isinstance(turns, Sequence) or len(turns) != n:
            raise InvalidSessionError(f"turns must be a list of one instruction index per action ({n}), "
                                      f"got {turns!r}"[:200], field="turns", value=turns)
        out: list[str | None] = []
        for i, t in enumerate(turns):
            if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < len(task):
                raise InvalidSessionError(f"turns[{i}] must be an index into the {len(task)} instructions, "
                                          f"got {t!r}", field="turns", value=t)
            out.append(task[t].strip() or None)
        return out

    def learn_sessions(
        self,
        sessions: Iterable[SessionRecord | dict[str, Any]],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Learn many sessions in order (bulk replay of a store).

        Python's cyclic garbage collector is paused during the replay and restored as it was
        afterwards (the model's many long-lived small containers would otherwise be rescanned
        again and again; about 5% of kypo's replay time); cyclic garbage that other threads
        make meanwhile is collected afterwards.

        Args:
            sessions: :class:`SessionRecord` objects or dicts with ``actions`` and optionally
                ``outcome``, ``task`` (or ``instructions``), ``session_id``.
            progress: Called with the number of sessions learned so far after each one.

        Returns:
            The number of sessions learned.

        Raises:
            InvalidSessionError: A session is invalid (the sessions before it stay learned).
        """
        n = 0
        iterator = iter(sessions)
        with _gc_paused():
            while chunk := list(itertools.islice(iterator, 512)):
                self._prefetch_tasks(chunk)
                for s in chunk:
                    n = self._learn_one(s, n)
                    if progress is not None:
                        progress(n)
        return n

    def _prefetch_tasks(self, chunk: Sequence[Any]) -> None:
        """Embed the chunk's unseen task texts in one batch (one query at a time is ~50x slower)."""
        if self.embedder is None:
            return
        texts = set()
        for s in chunk:
            task = s.task if isinstance(s, SessionRecord) else (
                (s.get("task") or s.get("instructions")) if isinstance(s, dict) else None)
            if isinstance(s, SessionRecord) and s.turns is not None and s.instructions:
                texts.update(t.strip() for t in s.instructions if t.strip() and t.strip() not in self._task_cache)
                continue
            try:
                text = self._task_text(task)
            except InvalidSessionError:
                continue  # raised, in order, when the session itself is learned
            if text and text not in self._task_cache:
                texts.add(text)
        if texts:
            ordered = sorted(texts)
            vecs = np.asarray(self.embedder.embed_documents(ordered), dtype=np.float32)
            self._task_cache.update(zip(ordered, vecs, strict=True))

    def _learn_one(self, s: Any, n: int) -> int:
        if isinstance(s, SessionRecord):
            turned = s.turns is not None and bool(s.instructions)
            self.learn_session(s.actions, outcome=s.outcome, task=s.instructions if turned else s.task,
                               session_id=s.session_id, turns=s.turns if turned else None)
        elif isinstance(s, dict):
            turns = s.get("turns", s.get("turn"))
            self.learn_session(s.get("actions") or [], outcome=s.get("outcome"),
                               task=s.get("instructions") if turns is not None else (
                                   s.get("task") or s.get("instructions")),
                               session_id=s.get("session_id"), turns=turns)
        else:
            raise InvalidSessionError(
                f"session must be a SessionRecord or dict, got {type(s).__name__}",
                field="session", value=s)
        return n + 1

    def observe(self, action: str, *, session_id: str, task: str | None = None) -> None:
        """Learn the next action of a streamed session immediately (within-session learning).

        Args:
            action: The action just taken.
            session_id: The session it belongs to; a new id starts a new session.
            task: The task text in force; a new text (the next turn's instruction in a
                multi-turn session) replaces the session's current one, None keeps it.

        Raises:
            InvalidSessionError: The action is blank or not a string.
        """
        a = _check_action(action, "action")
        self._observe(a, session_id, self._task_text(task), self.online)

    def end_session(self, session_id: str, *, outcome: str | bool | None = None) -> SessionRecord | None:
        """Close a streamed session and credit its outcome to what it did.

        Args:
            session_id: The session to close.
            outcome: ``"success"``/``"failure"``, a bool, or None when unknown.

        Returns:
            The session as a record for the caller to persist, or None if no action of it
            was observed.

        Raises:
            InvalidSessionError: The outcome is not understood.
        """
        flag = _outcome_flag(outcome)
        live = self._live.get(session_id)
        if live is None:
            return None
        distinct = list(dict.fromkeys(t for t in live.tasks if t is not None))
        turned = len(distinct) > 1 and all(t is not None for t in live.tasks)
        record = SessionRecord(session_id=session_id, actions=list(live.actions),
                               outcome=None if flag is None else ("success" if flag else "failure"),
                               task=" ".join(distinct) if turned else live.task,
                               instructions=distinct if turned else None,
                               turns=[distinct.index(t) for t in live.tasks] if turned else None)
        self._end(session_id, flag)
        return record

    @staticmethod
    def _task_text(task: str | Sequence[str] | None) -> str | None:
        if task is None:
            return None
        if isinstance(task, str):
            return task.strip() or None
        if isinstance(task, Sequence) and all(isinstance(t, str) for t in task):
            return " ".join(t.strip() for t in task if t.strip()) or None
        raise InvalidSessionError(f"task must be a string or a list of strings, got {task!r}",
                                  field="task", value=task)

    def _observe(self, a: str, sid: str, task: str | None, rank: bool) -> None:
        """Learn action ``a`` of session ``sid``; first update the ranker on it when ``rank``."""
        self._version += 1
        live = self._live.get(sid)
        if live is None:
            live = self._live[sid] = _Live(task)
        elif task is not None and task != live.task:
            live.task = task  # a new turn's instruction
            live.task_values = None
        live.tasks.append(live.task)
        hist = live.actions
        if rank:
            key = (len(hist), tuple(hist[-self.max_order - 1:]), live.task)
            cache = self._cache
            if cache is not None and cache[0] == key:
                # Ranked just before (no learning since): same candidates, gate and scores.
                _, cands, feats, _, self._gate, scores = cache
                self._update_ranker(cands, feats, a, scores)
            else:
                cands, feats, _ = self._candidates(hist, live.task, live)
                self._update_ranker(cands, feats, a)
        tpl, values, prog, names = _action_parts(a)
        if values:
            # Slot-filling statistics, measured before the values are learned.
            self._learn_slots(tpl, values, names, live)
        zero = self._next.followers[0]
        c = zero[a] = zero.get(a, 0) + 1
        if c == 1:
            self._first0[a] = len(self._first0)
            self._pactions.setdefault(prog, []).append(a)
        if self._top0 is not None and (c >= self._top0_min or len(self._top0) < self.top_frequent):
            self._raise_top0(a, c)
        if hist:
            # Concrete context model, orders 1..max_order.
            self._next.count(reversed(hist[-self.max_order:]), a)
            if len(hist) >= 2:
                _count(self._skip, hist[-2], a)  # skip context: the action two steps back
            # Trigger model: every distinct action of the last ``window`` (in any order);
            # ``_count`` inlined, as this loop runs up to ``window`` times per action.
            trig = self._trig
            for b in set(hist[-self.window:]):
                d = trig.get(b)
                if d is None:
                    trig[b] = {a: 1}
                else:
                    d[a] = d.get(a, 0) + 1
        th = live.templates
        if th:
            # Its order-1 counts are the transition (graph edge) counts too.
            self._tnext.count(reversed(th[-self.template_order:]), tpl)
        # Program model: the programs after the last program and after the last two.
        progs = live.programs
        last_prog = progs[-1] if progs else ""
        if len(progs) >= 2:
            _count(self._pnext2, (progs[-2], last_prog), prog)
        _count(self._pnext, last_prog, prog)
        hist.append(a)
        th.append(tpl)
        progs.append(prog)
        if values:
            self._remember(live, tpl, values, names=names)
        self._n_actions += 1
        self._cache = None

    def _remember(self, live: _Live, tpl: str, values: tuple[tuple[str, str], ...],
                  copy: bool = False, names: tuple[str, ...] | None = None) -> None:
        """Record a session's slot values by template slot, by type and by slot name.

        With ``copy`` the lists changed are replaced by new ones, so that a shallow copy of
        ``live`` can learn without changing ``live``. ``names``: the template's slot names,
        when already known.
        """
        if not values:
            return
        if names is None:
            names = self._slot_names(tpl)
        push = _push_copy if copy else _push_recent
        slot_values, type_values, name_values, used = (
            live.slot_values, live.type_values, live.name_values, live.used)
        n_names = len(names)
        for i, (ph, v) in enumerate(values):
            push(slot_values, (tpl, i), v)
            push(type_values, ph, v)
            if i < n_names and names[i]:
                push(name_values, names[i], v)
            used.add(v)

    def _extended(self, live: _Live, action: str) -> _Live:
        """A copy of a session's slot values that also remembers ``action`` (``live`` is unchanged)."""
        out = _Live(live.task)
        out.slot_values = dict(live.slot_values)
        out.type_values = dict(live.type_values)
        out.name_values = dict(live.name_values)
        out.used = set(live.used)
        norm = normalize_action(action)
        self._remember(out, norm.template, norm.values, copy=True)
        return out

    @staticmethod
    def _slot_names(tpl: str) -> tuple[str, ...]:
        """The word just before each placeholder of a template (``"access_token"``, ``"-p"``)."""
        return _template_parts(tpl)[2]

    def _end(self, sid: str, flag: bool | None) -> None:
        live = self._live.pop(sid, None)
        if live is None:
            return
        self._version += 1
        self._n_sessions += 1
        th = live.templates
        idx = 0 if flag is None else (1 if flag else 2)
        for t in set(th):
            o = self._outcomes.get(t)
            if o is None:
                o = self._outcomes[t] = [0, 0, 0]
            o[idx] += 1
        if flag is not None:
            for pair in set(zip(th, th[1:], strict=False)):
                e = self._edges.get(pair)
                if e is None:
                    e = self._edges[pair] = [0, 0]
                e[idx - 1] += 1
            seen: set[tuple[str, ...]] = set()
            for n in range(2, self.max_order + 1):
                for i in range(len(th) - n + 1):
                    seen.add(tuple(th[i:i + n]))
            for g in seen:
                po = self._pattern_outcomes.get(g)
                if po is None:
                    po = self._pattern_outcomes[g] = [0, 0]
                po[idx - 1] += 1
        if live.task is not None and self.embedder is not None:
            turns = list(dict.fromkeys(live.tasks))
            if len(turns) > 1 and None not in turns:
                # A multi-turn session: one past "task" per turn, its instruction and its actions.
                for text in turns:
                    self._task_rows.append(self._embed_task(text))
                    self._task_templates.append([t for t, x in zip(th, live.tasks, strict=True) if x == text])
            else:
                self._task_rows.append(self._embed_task(live.task))
                self._task_templates.append(list(th))
            self._task_matrix = None

    # ----------------------------------------------------------------------- slot filling

    def _slot_options(self, tpl: str, slot: int, ph: str, name: str, live: _Live,
                      task_values: dict[str, list[str]], used: set[str]) -> dict[str, int]:
        """Candidate values of one slot, best first, each mapped to the index of its (source, rank).

        ``name`` is the slot's name (see :func:`_template_parts`). Each source (see ``_SOURCES``)
        gives its first few values not given by an earlier one.
        """
        out: dict[str, int] = {}
        vals = live.slot_values.get((tpl, slot))
        if vals:
            _take(reversed(vals), _SOURCE_INDEX["slot"], out)
        if name:
            vals = live.name_values.get(name)
            if vals:
                _take(reversed(vals), _SOURCE_INDEX["name"], out)
        vals = live.type_values.get(ph)
        if vals:
            _take(reversed(vals), _SOURCE_INDEX["session"], out)
        vals = task_values.get(ph)
        if vals:
            # Task values not used yet in the session first.
            _take([v for v in vals if v not in used] + [v for v in vals if v in used],
                  _SOURCE_INDEX["task"], out)
        ranked = self._slot_global.get((tpl, slot))
        if ranked:
            # Most frequent first; ties in order of first use.
            _take(ranked[1], _SOURCE_INDEX["global"], out)
        return out

    def _source_p(self, index: int) -> float:
        """Probability that a slot value of this (source, rank) index is right, learned online."""
        prior = _SOURCE_PRIOR[index]
        tries = self._source_tries[index]
        if not tries:
            return prior
        return (self._source_hits[index] + 2 * prior) / (tries + 2)

    def _learn_slots(self, tpl: str, values: tuple[tuple[str, str], ...], names: tuple[str, ...],
                     live: _Live) -> None:
        """Count, for each slot value, which (source, rank) offered what and whether it was right.

        ``names``: the template's slot names (see :func:`_template_parts`).
        """
        if live.task_values is None:
            live.task_values = extract_task_values(live.task) if live.task else {}
        task_values, used = live.task_values, live.used
        tries, hits = self._source_tries, self._source_hits
        glob = self._slot_global
        for i, (ph, v) in enumerate(values):
            opts = self._slot_options(tpl, i, ph, names[i] if i < len(names) else "", live, task_values, used)
            for index in opts.values():
                tries[index] += 1
            index = opts.get(v)
            if index is not None:
                hits[index] += 1
            ranked = glob.get((tpl, i))
            if ranked is None:
                glob[(tpl, i)] = ({v: _RANK_UNIT}, [v])
            else:
                _count_ranked(ranked, v)

    def _fill(self, tpl: str, live: _Live, task_values: dict[str, list[str]],
              used: set[str], limit: int = 3) -> list[tuple[str, float]]:
        """Concrete fillings of a template with their fill probabilities, best first."""
        slots, pieces, names = _template_parts(tpl)
        if not slots:
            return [(tpl, 1.0)]
        partial: list[tuple[list[str], float]] = [([], 1.0)]
        for i, ph in enumerate(slots):
            opts = self._slot_options(tpl, i, ph, names[i], live, task_values, used)
            if not opts:
                return []
            scored = [(v, self._source_p(index)) for v, index in opts.items()]
            z = sum(p for _, p in scored) or 1.0
            scored = [(v, p / z * min(1.0, z)) for v, p in scored]
            scored.sort(key=itemgetter(1), reverse=True)  # stable: ties keep their order
            nxt = [(vals + [v], p * q) for vals, p in partial for v, q in scored[:limit]]
            nxt.sort(key=itemgetter(1), reverse=True)
            partial = nxt[:limit]
        out = []
        for vals, p in partial:
            s = pieces[0]
            for v, piece in zip(vals, pieces[1:], strict=False):
                s += v + piece
            out.append((s, p))
        return out

    # ------------------------------------------------------------------------- embeddings

    def _embed_cached(self, cache: dict[str, np.ndarray], text: str) -> np.ndarray:
        v = cache.get(text)
        if v is None:
            assert self.embedder is not None
            v = np.asarray(self.embedder.embed_query(text), dtype=np.float32)
            cache[text] = v
        return v

    def _embed_task(self, text: str) -> np.ndarray:
        return self._embed_cached(self._task_cache, text)

    def _similar_tasks(self, task: str) -> list[tuple[int, float]]:
        if self.embedder is None or not self._task_rows:
            return []
        if self._task_matrix is None:
            self._task_matrix = np.stack(self._task_rows)
        q = self._embed_task(task)
        sims = self._task_matrix @ q
        m = min(self.task_neighbours, len(sims))
        idx = np.argpartition(-sims, m - 1)[:m] if m < len(sims) else np.arange(len(sims))
        order = sorted(idx.tolist(), key=lambda i: (-float(sims[i]), i))
        return [(i, float(sims[i])) for i in order]

    def _similar_action(self, a: str) -> tuple[str, float] | None:
        """The nearest known action to an unseen one, if cosine >= the threshold."""
        if self.embedder is None:
            return None
        known = self._next.followers[0]
        if not known:
            return None
        if self._known_matrix is None or len(self._known_actions) < len(known):
            # Known actions only ever grow, in first-seen order: embed and append the new ones.
            new = list(itertools.islice(known, len(self._known_actions), None))
            missing = [x for x in new if x not in self._action_cache]
            if missing:
                for x, v in zip(missing, self.embedder.embed_documents(missing), strict=False):
                    self._action_cache[x] = np.asarray(v, dtype=np.float32)
            rows = np.stack([self._action_cache[x] for x in new])
            self._known_matrix = rows if self._known_matrix is None else np.vstack([self._known_matrix, rows])
            self._known_actions.extend(new)
        q = self._embed_action(a)
        sims = self._known_matrix @ q
        i = int(np.argmax(sims))
        if float(sims[i]) >= self.similarity_threshold:
            return self._known_actions[i], float(sims[i])
        return None

    def _embed_action(self, a: str) -> np.ndarray:
        return self._embed_cached(self._action_cache, a)

    # ------------------------------------------------------------------------- candidates

    def _candidates(self, hist: Sequence[str], task: str | None, live: _Live,
                    ) -> tuple[list[str], list[list[float]], list[str]]:
        """Candidate actions, their feature vectors, and their templates.

        ``live`` holds the templates and slot values of ``hist`` (a streamed session's or a
        ranked context's).
        """
        k_max = self.max_order
        nf = len(self._names)
        feats: dict[str, list[float]] = {}
        tpls: dict[str, str] = {}
        n = len(hist)
        i_last = k_max + 1
        i_tpl = 2 * k_max + 1
        i_fill = i_tpl + self.template_order
        i_prog, i_prog2, i_trig = i_fill + 1, i_fill + 2, i_fill + 3
        i_rep1, i_recent, i_in = i_fill + 4, i_fill + 5, i_fill + 6
        i_tnext, i_tany, i_sim, i_succ = i_fill + 7, i_fill + 8, i_fill + 9, i_fill + 10
        i_ppm, i_intask = i_fill + 11, i_fill + 12
        i_gap = i_intask + 1
        i_skip = i_gap + _GAPS

        lg = self._scale

        def vec(a: str) -> list[float]:
            v = feats.get(a)
            if v is None:
                v = feats[a] = [0.0] * nf
            return v

        # Concrete context model, orders max..1 then 0 (top few only).
        tree = self._next
        nodes = tree.nodes(reversed(hist[-k_max:]))
        longest = len(nodes)
        ppm: dict[str, float] = {}
        escape = 1.0
        for k in range(longest, 0, -1):
            d, last = tree.followers[nodes[k - 1]], tree.last[nodes[k - 1]]
            tot = sum(d.values()) + 1.0
            rest_tot = 0
            rest_q = 0
            for a, c in d.items():
                vec(a)[k] = lg(c / tot)
                if a not in ppm:
                    rest_tot += c
                    rest_q += 1
            if rest_q:
                z = escape / (rest_tot + rest_q)
                for a, c in d.items():
                    if a not in ppm:
                        ppm[a] = c * z
                escape *= rest_q / (rest_tot + rest_q)
            vec(last)[i_last + k - 1] = 1.0
        for a, q in ppm.items():
            feats[a][i_ppm] = lg(q)
        self._gate = (longest, "p:" + _program(hist[-1]) if n else "p:")
        zero = self._next.followers[0]
        if zero:
            tot0 = self._n_actions + 1.0  # the sum of the order-0 counts
            top0 = self._top0 if self._top0 is not None else self._refresh_top0()
            for a in top0:
                vec(a)
            # Program back-off: frequent actions of the programs likely to come next.
            pp0 = _program(hist[-1]) if n else ""
            pd0 = self._pnext.get(pp0)
            if pd0:
                # Stable sorts, most frequent first (ties: first seen first); a program has many
                # actions, which sorted ranks faster than nlargest's Python loop.
                for pg, _ in heapq.nlargest(3, pd0.items(), key=itemgetter(1)):
                    for a in sorted(self._pactions[pg], key=zero.__getitem__, reverse=True)[:3]:
                        vec(a)
            for j in range(n - 1, max(-1, n - 61), -1):
                vec(hist[j])
            for a in feats:
                c = zero.get(a)
                if c:
                    feats[a][0] = lg(c / tot0)
        # Template model with filled placeholders.
        th = live.templates
        m = len(th)
        tscore: dict[str, list[float]] = {}
        tfollowers = self._tnext.followers
        for k, node in enumerate(self._tnext.nodes(reversed(th[-self.template_order:])), 1):
            d = tfollowers[node]
            tot = sum(d.values()) + 1.0
            for t, c in heapq.nlargest(8, d.items(), key=itemgetter(1)):
                tscore.setdefault(t, [0.0] * (self.template_order + 1))[k] = c / tot
        # Similar past tasks: vote for templates.
        tvotes: dict[str, list[float]] = {}
        if task and self.embedder is not None and self._task_rows:
            last_t = th[-1] if m else None
            neigh = self._similar_tasks(task)
            z = sum(max(s, 0.0) for _, s in neigh) or 1.0
            for j, s in neigh:
                w = max(s, 0.0) / z
                seq = self._task_templates[j]
                # Distinct templates in order of appearance (a set's order varies with the
                # interpreter's hash seed, and ties in the sort below keep this order).
                if last_t is None:
                    nxt = [seq[0]]
                else:
                    nxt = list(dict.fromkeys(seq[i + 1] for i in range(len(seq) - 1) if seq[i] == last_t))
                for t in nxt:
                    tvotes.setdefault(t, [0.0, 0.0])[0] += w
                distinct = dict.fromkeys(seq)
                for t in distinct:
                    tvotes.setdefault(t, [0.0, 0.0])[1] += w / len(distinct)
            for t in sorted(tvotes, key=lambda t: -tvotes[t][0] - tvotes[t][1])[:10]:
                tscore.setdefault(t, [0.0] * (self.template_order + 1))
        if tscore:
            task_values = extract_task_values(task) if task else {}
            used = live.used
            for t, sc in tscore.items():
                for a, fp in self._fill(t, live, task_values, used):
                    v = vec(a)
                    for k in range(1, self.template_order + 1):
                        v[i_tpl + k - 1] = max(v[i_tpl + k - 1], sc[k] * fp)
                    v[i_fill] = max(v[i_fill], fp)
                    tpls[a] = t
                    tv = tvotes.get(t)
                    if tv is not None:
                        v[i_tnext] = max(v[i_tnext], tv[0] * fp)
                        v[i_tany] = max(v[i_tany], tv[1] * fp)
            # Scaled once final (maxima over the fillings).
            filled = (*range(i_tpl, i_fill + 1), i_tnext, i_tany)
            for a in tpls:
                v = feats[a]
                for j in filled:
                    v[j] = lg(v[j])
        # Similar known action for an unseen last action.
        if n and longest == 0 and self.embedder is not None and self.embed_actions:
            near = self._similar_action(hist[-1])
            if near is not None:
                d = self._next.followers_of((near[0],))
                tot = sum(d.values()) + 1.0
                for a, c in d.items():
                    vec(a)[i_sim] = lg(near[1] * c / tot)
        # Within-session repetition.
        w = 1.0
        for j in range(n - 1, max(-1, n - 21), -1):
            a = hist[j]
            v = vec(a)
            v[i_recent] += w
            v[i_in] = 1.0
            w *= 0.7
        if n:
            vec(hist[-1])[i_rep1] = 1.0
        for j in range(2, min(n, _GAPS + 1) + 1):
            vec(hist[-j])[i_gap + j - 2] = 1.0
        if n >= 2:
            sd = self._skip.get(hist[-2])
            if sd:
                stot = sum(sd.values()) + 1.0
                for a, c in sd.items():
                    if a in feats:
                        feats[a][i_skip] = lg(c / stot)
        # Program model and outcomes.
        pp = _program(hist[-1]) if n else ""
        pd = self._pnext.get(pp)
        ptot = sum(pd.values()) + 1.0 if pd else 1.0
        pd2 = self._pnext2.get((_program(hist[-2]), pp)) if n >= 2 else None
        ptot2 = sum(pd2.values()) + 1.0 if pd2 else 1.0
        # Trigger model: the candidate's shares of the followers of each recent distinct action,
        # summed in that order (most recent first) over the candidates among them.
        recent = dict.fromkeys(hist[-1:-self.window - 1:-1])
        ntrig = float(len(recent)) or 1.0
        trig: dict[str, float] = {}
        for b in recent:
            tb = self._trig.get(b)
            if tb:
                tt = sum(tb.values()) + 1.0
                for a in tb.keys() & feats.keys():
                    trig[a] = trig.get(a, 0) + tb[a] / tt
        last_t = th[-1] if m else None
        low_task = task.lower() if task else None
        edges = self._edges
        cands = list(feats)
        rows = []
        for a in cands:
            v = feats[a]
            pa = _program(a)
            if pd:
                v[i_prog] = lg(pd.get(pa, 0) / ptot)
            if pd2:
                v[i_prog2] = lg(pd2.get(pa, 0) / ptot2)
            x = trig.get(a)
            if x is not None:
                v[i_trig] = lg(x / ntrig)
            t = tpls.get(a)
            if t is None or low_task is not None:
                norm = normalize_action(a)
                t = tpls[a] = norm.template
                if low_task is not None and norm.values:
                    # Share of the candidate's argument values that the task text mentions.
                    v[i_intask] = sum(val.lower() in low_task for _, val in norm.values) / len(norm.values)
            if last_t is not None:
                e = edges.get((last_t, t))
                if e is not None:
                    v[i_succ] = (e[0] - e[1]) / (e[0] + e[1] + 1.0)
            rows.append(v)
        return cands, rows, [tpls[a] for a in cands]

    def _refresh_top0(self) -> list[str]:
        """The ``top_frequent`` most frequent actions (ties: first seen first), kept in ``_top0``."""
        zero = self._next.followers[0]
        top = sorted(zero.items(), key=lambda x: -x[1])[: self.top_frequent]
        self._top0 = [a for a, _ in top]
        self._top0_min = top[-1][1] if top else 0
        self._top0_k = self.top_frequent
        return self._top0

    def _raise_top0(self, a: str, c: int) -> None:
        """Keep ``_top0`` as ``_refresh_top0`` would make it after the count of ``a`` rose to ``c``."""
        top = self._top0
        assert top is not None
        k = self.top_frequent
        if k < 1 or k != self._top0_k:
            self._top0 = None  # refreshed when next needed
            return
        zero = self._next.followers[0]
        first = self._first0
        fa = first[a]
        if a in top:
            i = top.index(a)
        elif len(top) < k:  # then every action is in it: ``a`` is new
            top.append(a)
            i = len(top) - 1
        else:
            b = top[-1]
            if zero[b] > c or (zero[b] == c and first[b] < fa):
                return
            top[-1] = a
            i = k - 1
        # Move ``a`` up past the actions it now beats.
        while i:
            b = top[i - 1]
            cb = zero[b]
            if cb > c or (cb == c and first[b] < fa):
                break
            top[i] = b
            i -= 1
        top[i] = a
        self._top0_min = zero[top[-1]]

    def _weights(self) -> list[float]:
        """The shared weights plus the offsets of every weight set the current gate selects."""
        w = self._w
        for g in self._gate:
            wg = self._wg.get(g)
            if wg is not None:
                w = [a + b for a, b in zip(w, wg, strict=True)]
        return w

    def _scores(self, rows: list[list[float]]) -> list[float]:
        """Each row's score: the sum, in feature order, of its non-zero features times their weights."""
        w = self._weights()
        features = range(len(w))
        return [sum([w[j] * x[j] for j in compress(features, x)]) for x in rows]

    @staticmethod
    def _softmax(scores: list[float]) -> list[float]:
        if not scores:
            return []
        mx = max(scores)
        ex = [math.exp(s - mx) for s in scores]
        z = sum(ex)
        return [e / z for e in ex]

    def _update_ranker(self, cands: list[str], rows: list[list[float]], truth: str,
                       scores: list[float] | None = None) -> None:
        """One online step on the candidates' features (``scores``: theirs if already known)."""
        if not cands:
            return
        if scores is None:
            scores = self._scores(rows)
        probs = self._softmax(scores)
        best = self._first(cands, scores, probs)
        b = min(int(probs[best] * self.calibration_bins), self.calibration_bins - 1)
        self._cal[b][1] += 1
        if cands[best] == truth:
            self._cal[b][0] += 1
        try:
            t = cands.index(truth)
        except ValueError:
            return
        lr = self.learning_rate
        w = self._w
        grad = list(rows[t])
        features = range(len(w))
        for p, x in zip(probs, rows, strict=False):
            if p > 1e-6:
                for j in compress(features, x):
                    grad[j] -= p * x[j]
        # The shared weights and the offsets of the current gate's sets take the same gradient step.
        sets = [(w, self._g2)]
        for gate in self._gate:
            wg = self._wg.get(gate)
            if wg is None:
                wg = self._wg[gate] = [0.0] * len(w)
                self._g2g[gate] = [0.0] * len(w)
            sets.append((wg, self._g2g[gate]))
        if self.optimizer == "sgd":
            for ww, _ in sets:
                for j, g in enumerate(grad):
                    if g:
                        ww[j] += lr * g
            return
        for ww, acc in sets:
            for j, g in enumerate(grad):
                if g:
                    acc[j] += g * g
                    ww[j] += lr * g / math.sqrt(acc[j] + 1.0)

    @staticmethod
    def _program_mass(cands: list[str], probs: list[float]) -> dict[str, float]:
        """Each program's probability: the sum of its candidate actions'."""
        mass: dict[str, float] = {}
        for a, p in zip(cands, probs, strict=True):
            g = _program(a)
            mass[g] = mass.get(g, 0.0) + p
        return mass

    def _first(self, cands: list[str], scores: list[float], probs: list[float]) -> int:
        """Index of the candidate ranked first.

        That is the best-scored one or, with ``program_first``, the best-scored one of the
        program with the most probability (ties: the program of the best-scored candidate).
        """
        best = scores.index(max(scores))  # the first of the best-scored
        if not self.program_first:
            return best
        mass = self._program_mass(cands, probs)
        top = _program(cands[best])
        for g, m in mass.items():
            if m > mass[top]:
                top = g
        if top == _program(cands[best]):
            return best
        return max((i for i, a in enumerate(cands) if _program(a) == top), key=lambda i: (scores[i], -i))

    def _calibrate(self, p: float) -> float:
        """The probability that a top-1 prediction with softmax probability ``p`` is right.

        Histogram binning (Zadrozny & Elkan 2001): the hit rate of past top-1 predictions in
        ``p``'s bin, m-estimated (Cestnik, ECAI 1990; m = 2) towards a prior. The prior is the
        bin's midpoint only as far as the calibrator has seen top-1 outcomes in any bin
        (``seen`` of them, weight ``seen / (seen + 2)``); the rest of its weight goes to the
        overall hit rate by the rule of succession, ``(all_hits + 1) / (seen + 2)``. A model
        that has seen no outcome (nothing learned, or one short session replayed) thus says
        0.5, not the raw softmax (1.0 for a single candidate).
        """
        cal = self._cal
        b = min(int(p * self.calibration_bins), self.calibration_bins - 1)
        hits, n = cal[b]
        all_hits = sum(h for h, _ in cal)
        seen = sum(m for _, m in cal)
        midpoint = (b + 0.5) / self.calibration_bins
        overall = (all_hits + 1.0) / (seen + 2.0)
        prior = (seen * midpoint + 2.0 * overall) / (seen + 2.0)
        return (hits + 2.0 * prior) / (n + 2.0)

    # ---------------------------------------------------------------------------- predict

    def _context(self, context: Sequence[str]) -> _Context:
        """The remembered context extended to ``context`` (validated), or a new one.

        Raises:
            InvalidSessionError: An action in the context is blank or not a string.
        """
        raw = context if type(context) is list else list(context)
        memo = self._memo
        m = len(memo.raw) if memo is not None else 0
        if memo is None or m > len(raw) or (m and raw[:m] != memo.raw):
            memo, m = _Context(), 0
        if m < len(raw):
            new = raw[m:]
            clean = [_check_action(a, "context", i) for i, a in enumerate(new, m)]
            live = memo.live
            for a in clean:
                norm = normalize_action(a)
                self._remember(live, norm.template, norm.values)
                live.templates.append(norm.template)
            live.actions += clean
            memo.raw += new
            memo.ranked = None
        self._memo = memo
        return memo

    def _ranked(self, memo: _Context, task: str | None,
                ) -> tuple[list[str], list[float], list[list[float]], list[str]]:
        """Candidates of a context, most likely first, with their scores, features and templates."""
        ranked = memo.ranked
        if ranked is not None and ranked[0] == self._version and ranked[1] == task:
            out, self._cache = ranked[2]
            self._gate = self._cache[4]
            return out
        hist = memo.live.actions
        cands, rows, tpls = self._candidates(hist, task, memo.live)
        key = (len(hist), tuple(hist[-self.max_order - 1:]), task)
        scores = self._scores(rows)
        self._cache = (key, cands, rows, tpls, self._gate, scores)
        order = sorted(range(len(cands)), key=lambda i: (-scores[i], i))
        if self.program_first and len(order) > 1:
            first = self._first(cands, scores, self._softmax(scores))
            if first != order[0]:
                order.remove(first)
                order.insert(0, first)
        out = ([cands[i] for i in order], [scores[i] for i in order],
               [rows[i] for i in order], [tpls[i] for i in order])
        memo.ranked = (self._version, task, (out, self._cache))
        return out

    def rank(self, context: Sequence[str], *, task: str | None = None, k: int = 10) -> list[str]:
        """Rank likely next actions (the fast path used by evaluation).

        Args:
            context: The session's actions so far, oldest first (may be empty).
            task: The session's task text, if any.
            k: How many actions to return (>= 1).

        Returns:
            Up to ``k`` concrete actions, most likely first; empty when nothing is known.

        Raises:
            InvalidSessionError: An action in the context is blank or not a string.
            ConfigurationError: ``k`` < 1.
        """
        if not isinstance(k, int) or k < 1:
            raise ConfigurationError(f"k must be an int >= 1, got {k!r}")
        task_text = self._task_text(task)
        with self._lock:
            return self._ranked(self._context(context), task_text)[0][:k]

    def predict(self, context: Sequence[str], *, task: str | None = None, top_k: int = 3) -> list[Prediction]:
        """Predict the next action with confidence and explanation (seed 001).

        Args:
            context: The session's actions so far, oldest first (may be empty).
            task: The session's task text, if any.
            top_k: How many predictions (>= 1).

        Returns:
            Up to ``top_k`` predictions, most likely first. ``confidence`` is a probability in
            [0, 1]: the top prediction's is calibrated online on past top-1 hits, the others
            are scaled by the ranker's softmax.

        Raises:
            InvalidSessionError: An action in the context is blank or not a string.
            ConfigurationError: ``top_k`` < 1.
        """
        if not isinstance(top_k, int) or top_k < 1:
            raise ConfigurationError(f"top_k must be an int >= 1, got {top_k!r}")
        task_text = self._task_text(task)
        with self._lock:
            return self._predict(self._context(context), task_text, top_k)

    def _predict(self, memo: _Context, task_text: str | None, top_k: int) -> list[Prediction]:
        """:meth:`predict` of a validated context."""
        cands, scores, rows, tpls = self._ranked(memo, task_text)
        if not cands:
            return []
        probs = self._softmax(scores)
        top = self._calibrate(probs[0])
        hist = memo.live.actions
        last_t = memo.live.templates[-1] if hist else None
        out = []
        for i in range(min(top_k, len(cands))):
            conf = top if i == 0 else min(top, top * probs[i] / probs[0]) if probs[0] else 0.0
            a = cands[i]
            # Sessions with a known outcome that made this transition: [successes, failures].
            e = self._edges.get((last_t, tpls[i])) if last_t is not None else None
            sr = _observed_rate(*e) if e is not None else None
            reason = self._reason(hist, rows[i], tpls[i], e, task_text)
            if i == 0 and len(scores) > 1 and scores[0] < max(scores):  # moved first by program_first
                prog = _program(a)
                mass = self._program_mass(cands, probs)[prog]
                reason += f"; '{prog}' is the most likely next program (p {mass:.2f} over its variants)"
            out.append(Prediction(
                action=a, confidence=float(max(0.0, min(1.0, conf))),
                reason=reason,
                suggestions=self._suggest(memo.live, a, task_text),
                pattern=tpls[i], success_rate=sr,
            ))
        return out

    def _reason(self, hist: list[str], x: list[float], tpl: str, outcomes: list[int] | None,
                task: str | None) -> str:
        """Explain a candidate by its strongest feature; ``outcomes``: [successes, failures]."""
        wts = self._weights()
        contrib = [(wts[j] * xj, j) for j, xj in enumerate(x) if xj]
        if not contrib:
            return "no evidence"
        _, j = max(contrib)
        name = self._names[j]
        rate = f", {outcomes[0]} of {sum(outcomes)} sessions succeeded" if outcomes else ""
        if name.startswith(("order", "last")):
            k = int(name[5:] if name.startswith("order") else name[4:])
            if k == 0:
                return f"most frequent action overall{rate}"
            ctx = tuple(hist[-k:])
            seen = sum(self._next.followers_of(ctx[::-1]).values())
            tail = " → ".join(f"'{c}'" for c in ctx[-2:])
            more = "most recently " if name.startswith("last") else ""
            return f"{more}after {tail} (order-{k} context, seen {seen}×{rate})"
        if name.startswith("template") or name == "fill":
            return f"workflow step '{tpl}' after '{normalize_action(hist[-1]).template}'" \
                   f" with values from the session and task{rate}" if hist else f"workflow start '{tpl}'"
        if name in ("task_next", "task_any"):
            return f"similar past task did '{tpl}' here{rate}"
        if name == "similar_action":
            return f"similar action to '{hist[-1]}' (cosine >= {self.similarity_threshold}){rate}"
        if name in ("repeat1", "recent", "in_session") or name.startswith("gap"):
            return "repeats a recent action of this session"
        if name in ("program", "program2"):
            if not hist:
                return f"sessions usually start with this program{rate}"
            return f"program '{_program(hist[-1])}' is usually followed by this program{rate}"
        if name == "in_task":
            return f"its arguments are mentioned in the task text{rate}"
        if name == "skip":
            return f"usually comes two steps after '{hist[-2]}'{rate}"
        if name == "trigger":
            return f"usually comes within {self.window} steps after the recent actions{rate}"
        return f"past success of this step{rate}"

    def _suggest(self, live: _Live, action: str, task: str | None, n: int = 2) -> list[str]:
        """Up to ``n`` likely actions after ``action`` taken in the session ``live``."""
        d = self._tnext.followers_of((normalize_action(action).template,))
        if not d:
            return []
        out: list[str] = []
        after: _Live | None = None
        for nt, _ in sorted(d.items(), key=lambda x: -x[1]):
            if len(out) >= n:
                break
            filled: str | None = nt
            if _template_parts(nt)[0]:
                if after is None:
                    after = self._extended(live, action)
                f = self._fill(nt, after, extract_task_values(task) if task else {}, after.used, limit=1)
                filled = f[0][0] if f else None
            if filled is not None and filled not in out:
                out.append(filled)
        return out

    # -------------------------------------------------------------------------- inspection

    @property
    def graph(self) -> nx.DiGraph:
        """Transition graph over normalised actions.

        Edge attributes: ``weight`` (transitions seen), ``successes`` and ``failures`` (of
        sessions with a known outcome that made the transition) and ``success_rate``
        (``successes / (successes + failures)`` in [0, 1], None when no such session has a
        known outcome). Node attribute ``count``.
        """
        g = nx.DiGraph()
        for t, o in self._outcomes.items():
            g.add_node(t, count=sum(o))
        tree = self._tnext
        for a, node in (tree.children[0] or {}).items():  # the order-1 contexts
            for b, w in tree.followers[node].items():
                s, f = self._edges.get((a, b), (0, 0))
                g.add_edge(a, b, weight=w, successes=s, failures=f, success_rate=_observed_rate(s, f))
        return g

    def patterns(self, *, min_count: int = 1, limit: int | None = None) -> list[dict]:
        """Learned n-gram patterns over normalised actions (orders 2..``template_order + 1``).

        Args:
            min_count: Keep patterns seen at least this many times.
            limit: Keep at most this many, most frequent first.

        Returns:
            Dicts ``{"steps", "count", "successes", "failures", "success_rate"}``, most frequent
            first; ``success_rate`` is ``successes / (successes + failures)`` in [0, 1] over
            the sessions with a known outcome, None when there is none (shell histories).

        Raises:
            ValidationError: ``limit`` is not None nor an int >= 0 (a negative one used to
                drop the least frequent patterns silently, as a slice end).
        """
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ValidationError(f"limit must be an int >= 0 or None, got {limit!r}", field="limit", value=limit)
        out = []
        for ctx, d in self._tnext.contexts():
            for t, c in d.items():
                if c < min_count:
                    continue
                steps = list(ctx) + [t]
                s, f = self._pattern_outcomes.get(tuple(steps), (0, 0))
                out.append({"steps": steps, "count": c, "successes": s, "failures": f,
                            "success_rate": _observed_rate(s, f)})
        out.sort(key=lambda p: (-p["count"], -len(p["steps"]), p["steps"]))
        return out[:limit] if limit is not None else out

    def causal_chains(self, action: str) -> dict:
        """What followed an action and how its sessions ended (seed 001's causal chains).

        Args:
            action: A concrete action or a template.

        Returns:
            ``{"action": template, "sessions": n, "outcomes": {"success", "failure",
            "unknown"}, "next": {template: count}}``.
        """
        t = normalize_action(_check_action(action, "action")).template
        o = self._outcomes.get(t, [0, 0, 0])
        nodes = self._tnext.nodes((t,))
        nxt = dict(sorted(self._tnext.followers[nodes[0]].items() if nodes else (), key=lambda x: -x[1]))
        return {"action": t, "sessions": sum(o),
                "outcomes": {"unknown": o[0], "success": o[1], "failure": o[2]}, "next": nxt}

    def stats(self) -> dict:
        """Sizes of the model: sessions, actions, distinct actions, patterns, edges, weights."""
        return {
            "sessions": self._n_sessions,
            "actions": self._n_actions,
            "distinct_actions": len(self._next.followers[0]),
            "distinct_templates": len(self._outcomes),
            "patterns": sum(len(d) for _, d in self._tnext.contexts()),
            "edges": sum(len(self._tnext.followers[node]) for node in (self._tnext.children[0] or {}).values()),
            "open_sessions": len(self._live),
            "weights": dict(zip(self._names, (round(w, 4) for w in self._w), strict=False)),
        }

