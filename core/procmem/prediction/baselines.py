"""Peer next-action predictors with the same ``observe`` / ``end_session`` / ``rank`` interface.

* :class:`MarkovPredictor`: first-order Markov chain over exact actions, backing off to the
  most frequent actions.
* :class:`IPAMPredictor`: Incremental Probabilistic Action Modeling (Davison & Hirsh,
  "Predicting sequences of user actions", AAAI-98 workshop, 1998), alpha = 0.8.
* :class:`PPMPredictor`: Prediction by Partial Matching (Cleary & Witten, IEEE Trans. Comm.
  1984) of order 5 with escape method C (Moffat 1990) and exclusion.

They are the peers of the benchmark; their figures on the shared data reproduce the table in
``shared/data/README.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

from procmem.errors import ConfigurationError
from procmem.learning.normalize import collapse_whitespace

__all__ = ["PEERS", "IPAMPredictor", "MarkovPredictor", "PPMPredictor"]


class _Streaming:
    """Per-session history kept for ``observe``; subclasses learn transitions."""

    def __init__(self) -> None:
        self._hist: dict[str, list[str]] = {}

    def observe(self, action: str, *, session_id: str, task: str | None = None) -> None:
        """Learn the next action of a streamed session."""
        a = collapse_whitespace(action)
        hist = self._hist.setdefault(session_id, [])
        self._learn(hist, a)
        hist.append(a)

    def end_session(self, session_id: str, *, outcome: str | bool | None = None) -> None:
        """Forget a streamed session's history (outcomes are not used by the peers)."""
        self._hist.pop(session_id, None)

    def learn_session(self, actions: Sequence[str], *, outcome: str | bool | None = None,
                      task: str | Sequence[str] | None = None, session_id: str | None = None) -> None:
        """Learn a whole session."""
        sid = session_id or "__bulk__"
        self._hist.pop(sid, None)
        for a in actions:
            self.observe(a, session_id=sid)
        self.end_session(sid)

    def _learn(self, hist: list[str], a: str) -> None:
        raise NotImplementedError


class MarkovPredictor(_Streaming):
    """First-order Markov chain over exact actions; unseen contexts back off to frequency."""

    def __init__(self) -> None:
        super().__init__()
        self._next: dict[str, dict[str, int]] = {}
        self._freq: dict[str, int] = {}

    def _learn(self, hist: list[str], a: str) -> None:
        if hist:
            d = self._next.setdefault(hist[-1], {})
            d[a] = d.get(a, 0) + 1
        self._freq[a] = self._freq.get(a, 0) + 1

    def rank(self, context: Sequence[str], *, task: str | None = None, k: int = 10) -> list[str]:
        """Most frequent followers of the last action, then the most frequent actions."""
        out: list[str] = []
        if context:
            d = self._next.get(collapse_whitespace(context[-1]), {})
            out = sorted(d, key=lambda x: -d[x])[:k]
        if len(out) < k:
            seen = set(out)
            out += [a for a in sorted(self._freq, key=lambda x: -self._freq[x])
                    if a not in seen][: k - len(out)]
        return out


class IPAMPredictor(_Streaming):
    """IPAM (Davison & Hirsh 1998): decayed first-order probabilities, alpha = 0.8.

    After each transition ``prev -> a`` every entry of row ``prev`` is multiplied by ``alpha``
    and ``1 - alpha`` is added to ``a``; a new row starts as a copy of the default row, which
    is updated the same way on every action.

    Args:
        alpha: Decay in (0, 1).
    """

    def __init__(self, alpha: float = 0.8) -> None:
        if not 0.0 < alpha < 1.0:
            raise ConfigurationError(f"alpha must be in (0, 1), got {alpha!r}")
        super().__init__()
        self.alpha = alpha
        self._rows: dict[str, dict[str, float]] = {}
        self._default: dict[str, float] = {}

    @staticmethod
    def _update(row: dict[str, float], a: str, alpha: float) -> None:
        for x in row:
            row[x] *= alpha
        row[a] = row.get(a, 0.0) + (1.0 - alpha)

    def _learn(self, hist: list[str], a: str) -> None:
        if hist:
            prev = hist[-1]
            row = self._rows.get(prev)
            if row is None:
                row = self._rows[prev] = dict(self._default)
            self._update(row, a, self.alpha)
        self._update(self._default, a, self.alpha)

    def rank(self, context: Sequence[str], *, task: str | None = None, k: int = 10) -> list[str]:
        """Highest-probability actions of the last action's row (default row if unseen)."""
        row = self._default
        if context:
            row = self._rows.get(collapse_whitespace(context[-1]), self._default)
        return sorted(row, key=lambda x: -row[x])[:k]


class PPMPredictor(_Streaming):
    """PPM (Cleary & Witten 1984) with escape method C and exclusion, blending orders.

    Args:
        order: Longest context (>= 1).
    """

    def __init__(self, order: int = 5) -> None:
        if not isinstance(order, int) or order < 1:
            raise ConfigurationError(f"order must be an int >= 1, got {order!r}")
        super().__init__()
        self.order = order
        self._tables: list[dict[tuple[str, ...], dict[str, int]]] = [{} for _ in range(order + 1)]

    def _learn(self, hist: list[str], a: str) -> None:
        n = len(hist)
        for k in range(min(self.order, n) + 1):
            ctx = tuple(hist[n - k:]) if k else ()
            d = self._tables[k].setdefault(ctx, {})
            d[a] = d.get(a, 0) + 1

    def rank(self, context: Sequence[str], *, task: str | None = None, k: int = 10) -> list[str]:
        """Actions by PPM-C blended probability with exclusion."""
        hist = [collapse_whitespace(a) for a in context]
        n = len(hist)
        probs: dict[str, float] = {}
        escape = 1.0
        for j in range(min(self.order, n), -1, -1):
            ctx = tuple(hist[n - j:]) if j else ()
            d = self._tables[j].get(ctx)
            if not d:
                continue
            rest = {a: c for a, c in d.items() if a not in probs}
            if not rest:
                continue
            tot = sum(rest.values())
            q = len(rest)
            for a, c in rest.items():
                probs[a] = escape * c / (tot + q)
            escape *= q / (tot + q)
        return sorted(probs, key=lambda x: -probs[x])[:k]


PEERS = {
    "markov1": MarkovPredictor,
    "ipam": IPAMPredictor,
    "ppm5": PPMPredictor,
}
