"""How a search lineage moves: the candidates it proposes and the state they leave behind.

A seeking lineage's candidate comes from one of these moves (the first that applies); a
climbing lineage's comes from the line search or else a vertex step (``strategy``):

- **boundary line search** (classification outputs). When a candidate's *float* class
  differs from its lineage's (it crossed the float decision boundary without a flip), the
  segment between the two points is kept as a bracket. Along it, the float and the quantized
  models' log-score differences between the two classes are close to linear, and they cross
  zero at slightly different places: the inputs between the two zeros are exactly the
  disagreements. Each step evaluates the point halfway between the two linearly interpolated
  zeros (a secant step on both models at once) and replaces the bracket's end on the same
  float side, for at most ``line_steps`` steps. The segment lies in the ball (it is convex).
  A crossing where the two zeros coincide (``strategy.has_gap``: no quantization error along
  the segment) gets no bracket: the lineage just moves on if the score allows.
- **momentum**: the last move that raised the lineage's score, repeated (doubled after each
  success, dropped after a failure): a gradient-free step along the direction that last
  lowered the quantized margin.
- **toward another class**: the lineage's seed moved as far as the ball allows towards a
  data sample the float model puts in another class (the nearest one, L2 over the range, of
  those evaluated so far): the cheapest way across a nearby float boundary.
- **a mutation operator** (``operators``) at an adaptive strength. Operators are chosen by a
  Metropolis–Hastings chain (the idea of DFLARE, Xie et al., 2022, implemented from the
  description): they are ranked by how often they raised a candidate's score or crossed the
  float boundary, (successes + 1) / (tries + 2); a rank r has weight (1 − p)^r; each choice
  proposes a uniformly random operator and accepts it with probability
  min(1, weight(proposed) / weight(current)), else keeps the current one. Each operator's
  strength is drawn log-normally around its own centre, which grows after a success and
  shrinks slowly after a failure (so it settles where about one try in six succeeds).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgeq.errors import ConfigError
from edgeq.inputs.search.operators import Operator
from edgeq.inputs.search.strategy import FLIP_START, SEEK, line_zeros

LINE, MOMENTUM, TOWARD = "boundary-line", "momentum", "toward-class"
STRENGTH_START, STRENGTH_MIN, STRENGTH_SPREAD = 0.5, 0.02, 0.5
STRENGTH_UP, STRENGTH_DOWN = 1.25, 0.96  # 1/6 successes keep a centre where it is: 1.25 × 0.96^5 ≈ 1
MOMENTUM_MAX = 4.0
TOWARD_FIRST, TOWARD_LATER = 0.5, 0.2  # chance of a toward-class move: no such move tried yet / otherwise
LINE_EDGE = 1e-3  # a line step stays this fraction of the bracket inside it


class OperatorChain:
    """The Metropolis–Hastings chain over operators, and each operator's strength (module docstring)."""

    def __init__(self, operators: list[Operator], rng: np.random.Generator, p: float | None = None):
        if not operators:
            raise ConfigError("no mutation operator applies to these inputs")
        self.operators = operators
        self.rng = rng
        self.p = p if p is not None else 1.0 / len(operators)
        self.tries = np.zeros(len(operators))
        self.improved = np.zeros(len(operators))
        self.flips = np.zeros(len(operators), dtype=int)
        self.centre = np.full(len(operators), STRENGTH_START)
        self.current = int(rng.integers(len(operators)))

    def _weights(self) -> np.ndarray:
        rate = (self.improved + 1.0) / (self.tries + 2.0)
        ranks = np.empty(len(rate), dtype=int)
        ranks[np.argsort(-rate, kind="stable")] = np.arange(len(rate))
        return (1.0 - self.p) ** ranks

    def choose(self) -> int:
        proposed = int(self.rng.integers(len(self.operators)))
        weights = self._weights()
        if self.rng.random() < min(1.0, weights[proposed] / weights[self.current]):
            self.current = proposed
        return self.current

    def strength(self, k: int) -> float:
        return float(np.clip(self.centre[k] * np.exp(STRENGTH_SPREAD * self.rng.normal()), STRENGTH_MIN, 1.0))

    def record(self, k: int, improved: bool, flipped: bool) -> None:
        self.tries[k] += 1
        self.improved[k] += bool(improved)
        self.flips[k] += bool(flipped)
        factor = STRENGTH_UP if (improved or flipped) else STRENGTH_DOWN
        self.centre[k] = float(np.clip(self.centre[k] * factor, STRENGTH_MIN, 1.0))

    def stats(self) -> dict:
        return {op.name: {"tries": int(t), "improved": int(i), "flips": int(f)}
                for op, t, i, f in zip(self.operators, self.tries, self.improved, self.flips) if t}


class MoveStats:
    """Tries / improvements / flips of the directed moves, reported next to the operators'."""

    def __init__(self):
        self.counts: dict[str, list[int]] = {}

    def record(self, name: str, improved: bool, flipped: bool) -> None:
        c = self.counts.setdefault(name, [0, 0, 0])
        c[0] += 1
        c[1] += bool(improved)
        c[2] += bool(flipped)

    def stats(self) -> dict:
        return {name: {"tries": t, "improved": i, "flips": f} for name, (t, i, f) in self.counts.items()}


@dataclass
class Bracket:
    """The far end of a segment that crosses the float decision boundary (the near end is the lineage's point)."""

    point: list[np.ndarray]
    klass: int
    scores: tuple  # (float scores, quantized scores) per class at the far end
    steps: int = 0
    sides: list = field(default_factory=list)  # which end each step replaced ("a" near, "b" far)


@dataclass
class Lineage:
    """One seed's line of candidates: where it stands and what it has learnt on the way."""

    seed: int  # position in the seed order
    row: int  # data row
    origin: list[np.ndarray]  # the seed sample, float64, one per input
    point: list[np.ndarray]  # the current point, float64, one per input
    score: float = -np.inf
    evaluated: bool = False
    stale: int = 0
    flips: int = 0
    history: list[str] = field(default_factory=list)
    klass: int | None = None  # the float class at point (classification objectives)
    scores: tuple | None = None  # (float scores, quantized scores) per class at point
    direction: list | None = None  # the last move that raised the score
    momentum: float = 1.0
    bracket: Bracket | None = None
    partners: set = field(default_factory=set)  # data rows already tried as toward-class targets
    screened: bool = False
    seed_first: int = -1  # index of its first score in the search's list of first scores
    mode: str = SEEK  # seek (boundary-seeking) or climb (plain climbing): see ``strategy``
    fraction: float = FLIP_START  # a climber's share of signs redrawn per step
    gap: float = float("nan")  # m_f − m_q at point (classification objectives)


def line_t(near: tuple, far: tuple, a: int, b: int, sides: list) -> float:
    """Where on the segment near (t = 0, float class a) → far (t = 1, float class b) to look next: halfway
    between the zeros of the two models' linearly interpolated a − b score differences."""
    zf, zq = line_zeros(near, far, a, b)
    t = 0.5 * ((zf if np.isfinite(zf) else 0.5) + (zq if np.isfinite(zq) else 0.5))
    if not np.isfinite(t):
        t = 0.5
    if len(sides) >= 2 and sides[-1] == sides[-2]:  # the same end moved twice: the guess is lopsided
        t = 0.5 * (t + 0.5)
    return float(np.clip(t, LINE_EDGE, 1.0 - LINE_EDGE))
