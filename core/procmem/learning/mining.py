"""Workflow mining: recurring, successful sequences of actions across sessions.

A *workflow candidate* is a contiguous sequence of normalised actions (templates, see
:mod:`procmem.learning.normalize`) that occurs in at least ``min_support`` distinct sessions.
Support counts sessions, not occurrences, as in sequential pattern mining (Agrawal & Srikant,
"Mining Sequential Patterns", ICDE 1995); restricting patterns to contiguous steps makes the
count a single pass over each session's n-grams, linear in the number of actions.

Success rate: the share of supporting sessions that succeeded. Sessions with no recorded
outcome (shell histories have none) count as successful when ``unknown_as_success`` is true,
the default: a routine that people keep repeating is evidence that it works; pass False to
require explicit outcomes.

Only *closed* patterns are kept: a pattern contained in a longer candidate with the same
support is dropped (Yan, Han & Afshar, "CloSpan", SDM 2003), so ``a b c`` is reported once,
not also as ``a b`` and ``b c``.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

from procmem.errors import ConfigurationError
from procmem.learning.normalize import collapse_whitespace, normalize_action
from procmem.types import SessionRecord

__all__ = ["WorkflowCandidate", "mine_workflows"]


class WorkflowCandidate(BaseModel):
    """A mined workflow: a recurring sequence of normalised steps.

    Attributes:
        steps: The normalised steps (templates, e.g. ``"git commit -m <STR>"``).
        examples: A concrete instance of each step, from the latest supporting session.
        support: Number of distinct sessions containing the sequence.
        successes: Supporting sessions that succeeded (or had no outcome, see module doc).
        failures: Supporting sessions that failed.
        success_rate: ``successes / support`` in [0, 1].
        key: Stable 16-hex-digit key of the steps, so a caller can update the same stored
            workflow on later runs.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: tuple[str, ...]
    examples: tuple[str, ...]
    support: int = Field(ge=1)
    successes: int = Field(ge=0)
    failures: int = Field(ge=0)
    success_rate: float = Field(ge=0.0, le=1.0)
    key: str


def workflow_key(steps: Iterable[str]) -> str:
    """Return the stable key of a sequence of normalised steps."""
    return hashlib.blake2b("\x1f".join(steps).encode("utf-8"), digest_size=8).hexdigest()


def mine_workflows(
    sessions: Iterable[SessionRecord],
    *,
    min_support: int = 3,
    min_success_rate: float = 0.7,
    min_length: int = 2,
    max_length: int = 8,
    unknown_as_success: bool = True,
    limit: int | None = None,
) -> list[WorkflowCandidate]:
    """Find contiguous step sequences that recur across sessions and succeed.

    Args:
        sessions: Sessions of actions, with outcomes where known.
        min_support: Fewest distinct sessions a sequence must occur in.
        min_success_rate: Lowest success rate in [0, 1] to report (0 reports all).
        min_length: Fewest steps.
        max_length: Most steps.
        unknown_as_success: Count sessions without an outcome as successful.
        limit: Return at most this many, the most useful first (support × steps).

    Returns:
        Closed candidates, sorted by support × (steps − 1), then by steps, descending.

    Raises:
        ConfigurationError: An option is out of range.
    """
    if not isinstance(min_support, int) or min_support < 1:
        raise ConfigurationError(f"min_support must be an int >= 1, got {min_support!r}")
    if not 0.0 <= float(min_success_rate) <= 1.0:
        raise ConfigurationError(f"min_success_rate must be in [0, 1], got {min_success_rate!r}")
    if not (isinstance(min_length, int) and isinstance(max_length, int) and 2 <= min_length <= max_length):
        raise ConfigurationError(f"need 2 <= min_length <= max_length, got {min_length!r}, {max_length!r}")

    support: dict[tuple[str, ...], int] = defaultdict(int)
    good: dict[tuple[str, ...], int] = defaultdict(int)
    bad: dict[tuple[str, ...], int] = defaultdict(int)
    example: dict[tuple[str, ...], tuple[str, ...]] = {}
    for session in sessions:
        concrete = [collapse_whitespace(a) for a in session.actions]
        templates = [normalize_action(a).template for a in concrete]
        flag = session.succeeded
        ok = flag is True or (flag is None and unknown_as_success)
        seen: set[tuple[str, ...]] = set()
        n = len(templates)
        for i in range(n):
            for length in range(min_length, min(max_length, n - i) + 1):
                gram = tuple(templates[i:i + length])
                if gram in seen:
                    continue
                seen.add(gram)
                example[gram] = tuple(concrete[i:i + length])
        for gram in seen:
            if len(set(gram)) < 2:  # "ls ls ls" is repetition, not a workflow
                continue
            support[gram] += 1
            if ok:
                good[gram] += 1
            elif flag is False:
                bad[gram] += 1

    frequent = {g: s for g, s in support.items() if s >= min_support}
    # Closed patterns: a gram whose one-step extension (either side) has the same support is
    # not closed; checking one-step extensions suffices since support only falls as grams grow.
    not_closed: set[tuple[str, ...]] = set()
    for gram, sup in frequent.items():
        if len(gram) > min_length:
            for sub in (gram[:-1], gram[1:]):
                if frequent.get(sub) == sup:
                    not_closed.add(sub)
    closed = [g for g in frequent if g not in not_closed]
    out = []
    for gram in closed:
        sup = frequent[gram]
        rate = good[gram] / sup
        if rate < min_success_rate:
            continue
        out.append(WorkflowCandidate(steps=gram, examples=example[gram], support=sup, successes=good[gram],
                                     failures=bad[gram], success_rate=rate, key=workflow_key(gram)))
    out.sort(key=lambda c: (-(c.support * (len(c.steps) - 1)), -len(c.steps), c.steps))
    return out[:limit] if limit is not None else out
