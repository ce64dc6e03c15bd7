"""Workflow mining: recurring, successful contiguous step sequences across sessions.

Sessions are normalised (:func:`procmem.learning.normalize.normalize_action`) and every
contiguous n-gram of ``min_length`` to ``max_length`` steps is counted once per session in a
dictionary (linear in the total number of actions times ``max_length``, no pairwise scans).
An n-gram is a workflow candidate when it occurs in at least ``min_support`` distinct sessions
and the success rate ``successes / (successes + failures)`` of those sessions is at least
``min_success_rate``. Sessions with no recorded outcome (shell histories have none) count as
successes towards that threshold when ``unknown_as_success`` is true, the default: a routine
people keep repeating is evidence that it works; pass False to count them towards support only.
They are never reported as successes: a candidate's ``success_rate`` is observed over the
sessions with a known outcome and None when there is none. ``min_support`` already guards
against rates drawn from one or two sessions. An n-gram made of a single repeated action
(``ls ls ls``) is repetition, not a workflow, and is skipped. Only maximal patterns are kept: a pattern is dropped when
a longer kept pattern contains it and has the same support (the closed-pattern rule of
frequent sequence mining; Yan, Han & Afshar, CloSpan, SDM 2003).

The counts are additive over sessions, so :class:`PatternCounter` keeps them as sessions
arrive and :class:`procmem.ProceduralMemory` re-examines only the patterns of newly learned
sessions (``benchmarks/learn_session.py``); :func:`mine_workflows` is its one-off form.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from procmem.errors import ConfigurationError, InvalidSessionError
from procmem.learning.normalize import normalize_action
from procmem.types import SessionRecord

__all__ = ["PatternCounter", "WorkflowCandidate", "mine_workflows", "outcome_summary", "workflow_key"]


def workflow_key(steps: Sequence[str]) -> str:
    """Return the stable key of a workflow: 16 hex digits of the BLAKE2b hash of its steps."""
    h = hashlib.blake2b("\x1f".join(steps).encode("utf-8"), digest_size=8)
    return h.hexdigest()


class WorkflowCandidate(BaseModel):
    """A mined workflow: a recurring contiguous sequence of normalised steps.

    Attributes:
        key: Stable identifier (hash of ``steps``); the same steps always give the same key.
        steps: The normalised step templates, e.g. ``["git add <PATH>", "git commit"]``.
        examples: The concrete steps of the first session where the pattern was seen.
        support: Number of distinct sessions containing the pattern.
        successes: Of those, sessions that succeeded.
        failures: Of those, sessions that failed.
        unknown: Of those, sessions with no recorded outcome.
        success_rate: ``successes / (successes + failures)`` in [0, 1], the observed rate of
            the sessions with a known outcome; None when none has one.
    """

    model_config = ConfigDict(extra="forbid")

    key: str
    steps: list[str] = Field(min_length=1)
    examples: list[str] = Field(default_factory=list)
    support: int = Field(ge=0)
    successes: int = Field(default=0, ge=0)
    failures: int = Field(default=0, ge=0)
    unknown: int = Field(default=0, ge=0)
    success_rate: float | None = Field(default=None, ge=0.0, le=1.0)

    def promotion_rate(self, *, unknown_as_success: bool = True) -> float:
        """The rate that ``min_success_rate`` is compared with, in [0, 1].

        Args:
            unknown_as_success: Count sessions with no outcome as successes (see the module
                docstring); otherwise they are left out, and a pattern with no known outcome
                has rate 0.

        Returns:
            ``(successes [+ unknown]) / (successes [+ unknown] + failures)``, 0 when empty.
        """
        return _promotion_rate(self.successes, self.failures, self.unknown, unknown_as_success)


def outcome_summary(successes: int, failures: int, unknown: int = 0) -> str:
    """How a workflow's sessions ended, as shown to users: observed figures, never made up.

    Args:
        successes: Sessions that succeeded.
        failures: Sessions that failed.
        unknown: Sessions with no recorded outcome.

    Returns:
        ``"75% successful (3 of 4)"``, ``"50% successful (1 of 2 with a known outcome)"`` when
        some are unknown, or ``"outcome unknown"`` when none is known (shell histories).
    """
    known = successes + failures
    if not known:
        return "outcome unknown"
    return f"{successes / known:.0%} successful ({successes} of {known}{' with a known outcome' if unknown else ''})"


def _promotion_rate(successes: int, failures: int, unknown: int, unknown_as_success: bool) -> float:
    """:meth:`WorkflowCandidate.promotion_rate` on counts."""
    s = successes + (unknown if unknown_as_success else 0)
    return s / (s + failures) if s + failures else 0.0


def _session_parts(s: Any, i: int) -> tuple[list[str], bool | None]:
    if isinstance(s, SessionRecord):
        return s.actions, s.succeeded
    if isinstance(s, dict):
        actions = s.get("actions")
        outcome = s.get("outcome")
    elif isinstance(s, Sequence) and not isinstance(s, str):
        actions, outcome = list(s), None
    else:
        raise InvalidSessionError(f"sessions[{i}] must be a SessionRecord, dict or list of actions,"
                                  f" got {type(s).__name__}", field=f"sessions[{i}]", value=s)
    if not isinstance(actions, (list, tuple)) or not actions:
        raise InvalidSessionError(f"sessions[{i}].actions must be a non-empty list, got {actions!r}",
                                  field=f"sessions[{i}].actions", value=actions)
    for j, a in enumerate(actions):
        if not isinstance(a, str) or not a.strip():
            raise InvalidSessionError(f"sessions[{i}].actions[{j}] must be a non-blank string, got {a!r}",
                                      field=f"sessions[{i}].actions[{j}]", value=a)
    if isinstance(outcome, bool) or outcome is None:
        flag = outcome
    elif isinstance(outcome, str) and outcome.lower() in {"success", "ok"}:
        flag = True
    elif isinstance(outcome, str) and outcome.lower() in {"failure", "failed", "fail", "error"}:
        flag = False
    else:
        raise InvalidSessionError(f"sessions[{i}].outcome must be 'success', 'failure', a bool or "
                                  f"None, got {outcome!r}", field=f"sessions[{i}].outcome", value=outcome)
    return list(actions), flag


class PatternCounter:
    """Support and outcome counts of every contiguous n-gram of normalised steps, kept as sessions arrive.

    Counting is additive over sessions, so a memory that learns one session at a time adds that
    session's n-grams (at most ``max_length`` per action) instead of recounting every stored
    session: the cost of learning a session no longer grows with the history. The counts take
    memory in proportion to the distinct n-grams seen (a few hundred bytes each; about 20 MB
    for the 14,448 actions of the kypo sessions), as one recount did while it ran.

    With ``track_changes`` the patterns whose counts changed are collected in :attr:`changed`
    (cleared by the caller): only they, and no other pattern, can have changed support,
    success rate or maximality, so :meth:`candidates` ``(among=changed)`` re-examines just
    them (a pattern outside the new sessions keeps its counts, and so do its one-step-longer
    extensions, which would contain it).

    Args:
        min_length: Shortest pattern, in steps (>= 1).
        max_length: Longest pattern, in steps (>= min_length).
        track_changes: Collect the patterns :meth:`add` changes in :attr:`changed`.

    Raises:
        ConfigurationError: A length is out of range.

    Example:
        >>> counter = PatternCounter(min_length=2, max_length=3)
        >>> counter.add([["git pull", "make build"], ["git pull", "make build", "make test"]])
        >>> [(c.steps, c.support) for c in counter.candidates(min_support=2)]
        [(['git pull', 'make build'], 2)]
    """

    def __init__(self, *, min_length: int = 2, max_length: int = 8, track_changes: bool = False) -> None:
        if not isinstance(min_length, int) or min_length < 1:
            raise ConfigurationError(f"min_length must be an int >= 1, got {min_length!r}")
        if not isinstance(max_length, int) or max_length < min_length:
            raise ConfigurationError(f"max_length must be an int >= min_length, got {max_length!r}")
        self.min_length = min_length
        self.max_length = max_length
        self.sessions = 0
        self.track_changes = track_changes
        self.changed: set[tuple[str, ...]] = set()
        # pattern -> [support, successes, failures, unknown, actions, start]: the counts, then
        # where the pattern was first seen (that session's actions, shared by all its patterns).
        self._counts: dict[tuple[str, ...], list[Any]] = {}

    def __len__(self) -> int:
        """Number of distinct patterns counted."""
        return len(self._counts)

    def add(self, sessions: Iterable[SessionRecord | dict[str, Any] | Sequence[str]]) -> None:
        """Count the n-grams of more sessions, each n-gram once per session.

        Args:
            sessions: Session records, dicts with ``actions`` and ``outcome``, or plain lists of
                actions (unknown outcome).

        Raises:
            InvalidSessionError: A session is malformed (names its index in ``sessions`` and the
                field); it is not counted, the sessions before it are.
        """
        counts = self._counts
        for i, s in enumerate(sessions):
            actions, flag = _session_parts(s, i)
            tpl = [normalize_action(a).template for a in actions]
            seen: set[tuple[str, ...]] = set()
            n = len(tpl)
            col = 1 if flag is True else 2 if flag is False else 3
            for length in range(self.min_length, min(self.max_length, n) + 1):
                for start in range(n - length + 1):
                    g = tuple(tpl[start:start + length])
                    if g in seen:
                        continue
                    seen.add(g)
                    if len(g) > 1 and len(set(g)) == 1:
                        continue
                    c = counts.get(g)
                    if c is None:
                        c = counts[g] = [0, 0, 0, 0, actions, start]
                    c[0] += 1
                    c[col] += 1
                    if self.track_changes:
                        self.changed.add(g)
            self.sessions += 1

    def candidates(
        self,
        *,
        min_support: int = 3,
        min_success_rate: float = 0.7,
        unknown_as_success: bool = True,
        limit: int | None = None,
        among: Collection[tuple[str, ...]] | None = None,
    ) -> list[WorkflowCandidate]:
        """Return the maximal patterns that recur and succeed, as :func:`mine_workflows` defines them.

        Args:
            min_support: Minimum number of distinct sessions containing the pattern (>= 1).
            min_success_rate: Minimum success rate in [0, 1].
            unknown_as_success: Count sessions without an outcome as successes.
            limit: Return at most this many (None: all).
            among: Only these patterns (tuples of steps), e.g. :attr:`changed`; None: all.

        Returns:
            Maximal candidates, by support (desc), then length (desc), then steps.

        Raises:
            ConfigurationError: An option is out of range.
        """
        if not isinstance(min_support, int) or min_support < 1:
            raise ConfigurationError(f"min_support must be an int >= 1, got {min_support!r}")
        if not 0.0 <= min_success_rate <= 1.0:
            raise ConfigurationError(f"min_success_rate must be in [0, 1], got {min_success_rate!r}")
        counts = self._counts
        pairs = counts.items() if among is None else ((g, counts[g]) for g in among if g in counts)
        kept = {g: c for g, c in pairs
                if c[0] >= min_support and _promotion_rate(*c[1:4], unknown_as_success) >= min_success_rate}
        # Drop patterns subsumed by a longer kept pattern with the same support: it suffices to
        # check the two (length - 1)-grams of each kept pattern (prefix and suffix), whose support
        # is at least the pattern's; by induction this removes every non-maximal pattern. With
        # ``among`` = the changed patterns this is exact too: an extension of a changed pattern
        # that is not changed itself has lost its equal support.
        drop: set[tuple[str, ...]] = set()
        for g, (sup, *_) in kept.items():
            if len(g) > self.min_length:
                for sub in (g[:-1], g[1:]):
                    k = kept.get(sub)
                    if k is not None and k[0] == sup:
                        drop.add(sub)
        out = [
            WorkflowCandidate(key=workflow_key(g), steps=list(g),
                              examples=[" ".join(a.split()) for a in actions[start:start + len(g)]], support=sup,
                              successes=s, failures=f, unknown=u, success_rate=s / (s + f) if s + f else None)
            for g, (sup, s, f, u, actions, start) in kept.items() if g not in drop
        ]
        out.sort(key=lambda w: (-w.support, -len(w.steps), w.steps))
        return out if limit is None else out[:limit]


def mine_workflows(
    sessions: Iterable[SessionRecord | dict[str, Any] | Sequence[str]],
    *,
    min_support: int = 3,
    min_success_rate: float = 0.7,
    min_length: int = 2,
    max_length: int = 8,
    unknown_as_success: bool = True,
    limit: int | None = None,
) -> list[WorkflowCandidate]:
    """Mine recurring successful workflows from sessions (a one-off :class:`PatternCounter`).

    Args:
        sessions: Session records, dicts with ``actions`` and ``outcome``, or plain lists of
            actions (unknown outcome).
        min_support: Minimum number of distinct sessions containing the pattern (>= 1).
        min_success_rate: Minimum success rate in [0, 1].
        min_length: Shortest pattern, in steps (>= 1).
        max_length: Longest pattern, in steps (>= min_length).
        unknown_as_success: Count sessions without an outcome as successes.
        limit: Return at most this many (None: all).

    Returns:
        Maximal candidates, by support (desc), then length (desc), then steps.

    Raises:
        ConfigurationError: An option is out of range.
        InvalidSessionError: A session is malformed (names the index and field).
    """
    if not isinstance(min_support, int) or min_support < 1:
        raise ConfigurationError(f"min_support must be an int >= 1, got {min_support!r}")
    if not 0.0 <= min_success_rate <= 1.0:
        raise ConfigurationError(f"min_success_rate must be in [0, 1], got {min_success_rate!r}")
    counter = PatternCounter(min_length=min_length, max_length=max_length)
    counter.add(sessions)
    return counter.candidates(min_support=min_support, min_success_rate=min_success_rate,
                              unknown_as_success=unknown_as_success, limit=limit)
