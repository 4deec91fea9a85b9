"""Which kind of lineage a seed gets: boundary-seeking or plain climbing, split by what the model shows.

Two kinds of model pair call for two searches:

- quantization error spread over the input space (an int8 model's ordinary rounding): near a
  float decision boundary any error of the right sign flips the decision, so the fast way to a
  flip is to reach a float boundary and line-search across it (``moves``). A **seeking**
  lineage does that: operators, momentum, toward-another-class moves, the line search on every
  crossing, a short patience and screening of new seeds;
- error confined to a small region (an outlier channel that only some inputs wake): the float
  boundaries carry no error at all, a line search there can never flip, and the score (−m_q)
  shows no slope until the region is reached. A **climbing** lineage searches the vertices of
  the L∞ ball around its seed, where blind draws wake such regions most often (every element
  at ±bound; the vertex view of L∞ black-box attacks: SignHunter, Parsimonious, Square Attack).
  Its first candidate is a random vertex; each step redraws every sign with probability
  ``fraction`` (1 at first: a fresh vertex) and is kept when the score does not drop. A step
  that raises the quantization gap m_f − m_q (not just −m_q, which also rises towards any float
  boundary) halves the lineage's ``fraction`` down to ``FLIP_MIN``: once error shows, the
  search stays near it and climbs its slope. A climber is retired after ``climb_patience``
  steps without a strict gain.

What tells them apart costs no query: every crossing of a float boundary (a candidate whose
float class differs from its lineage's) gives both models' class-score differences at the
segment's two ends, so where each model's boundary lies along it (``line_zeros``). Where the
two zeros coincide the quantization gap is zero on the whole segment to first order: no line
search is spent on it (a "flat" crossing), and it counts as evidence that the model has no
error at its boundaries. Crossings whose zeros differ count for seeking. The share of seeking
lineages is the mean of a Beta(``PRIOR_GAP``, ``PRIOR_FLAT``) posterior over the two counts
(5/6 before any crossing: one lineage in a pool of 8 climbs); the pool keeps
``round(pool × (1 − share))`` climbing lineages (a climber beyond that is retired, the stalest
first). With no classification output (no crossings) the split stays at its prior;
``SearchConfig.climb`` may fix it instead (0: seeking only, as before the split existed).
"""

from __future__ import annotations

import numpy as np

SEEK, CLIMB = "seek", "climb"
CLIMB_STEP = "climb-step"  # the move's name in the operator history and statistics
PRIOR_GAP, PRIOR_FLAT = 2.5, 0.5  # pseudo-counts of crossings with a gap / flat ones
FLAT_ZEROS = 1e-6  # boundary positions closer than this (fraction of the segment) coincide
FLIP_START, FLIP_MIN = 1.0, 0.05  # the share of a vertex step's signs drawn anew: at first, at least
GAP_GAIN = 1e-6  # a rise of m_f − m_q above this is a gain in the quantization gap


def line_zeros(near: tuple, far: tuple, a: int, b: int) -> tuple[float, float]:
    """Where the float and the quantized model cross from class a (t = 0) to class b (t = 1) on a segment,
    by linear interpolation of each model's a − b score difference (NaN where it cannot be told)."""
    def zero(at_near, at_far):
        g0, g1 = at_near[a] - at_near[b], at_far[a] - at_far[b]
        return float(g0 / (g0 - g1)) if np.isfinite(g0) and np.isfinite(g1) and g0 != g1 else float("nan")

    return zero(near[0], far[0]), zero(near[1], far[1])


def has_gap(near: tuple, far: tuple, a: int, b: int) -> bool:
    """True when the two models' boundaries on the segment differ (or cannot be told apart as equal)."""
    zf, zq = line_zeros(near, far, a, b)
    return not (np.isfinite(zf) and np.isfinite(zq) and abs(zf - zq) <= FLAT_ZEROS)


class Split:
    """The share of seeking lineages, from the crossings seen so far (module docstring)."""

    def __init__(self, pool: int, fixed: float | None = None):
        self.pool, self.fixed = pool, fixed
        self.gap = self.flat = 0

    def note(self, gap: bool) -> None:
        if gap:
            self.gap += 1
        else:
            self.flat += 1

    def share(self) -> float:
        if self.fixed is not None:
            return 1.0 - self.fixed
        return (self.gap + PRIOR_GAP) / (self.gap + self.flat + PRIOR_GAP + PRIOR_FLAT)

    def climbers(self, lane: int = 0, lanes: int = 1) -> int:
        """How many of a lane's lineages should climb now: the pool's count, spread over the lanes."""
        total = int(round(self.pool * (1.0 - self.share())))
        return total // lanes + (1 if lane < total % lanes else 0)

    def stats(self) -> dict:
        return {"crossings_with_gap": self.gap, "flat_crossings": self.flat, "seek_share": round(self.share(), 3)}


def quant_gap(scores: tuple | None, c: int | None) -> float:
    """m_f − m_q at a point: how much of class c's float margin the quantized model lost (NaN if unknown)."""
    if scores is None or c is None:
        return float("nan")

    def margin(logp):
        others = np.delete(np.asarray(logp, np.float64), c)
        return float(logp[c] - others.max()) if others.size else float("nan")
    return margin(scores[0]) - margin(scores[1])


def climb_step(point: list[np.ndarray], origin: list[np.ndarray], fraction: float, evaluated: bool, spaces,
               rng: np.random.Generator) -> list[np.ndarray]:
    """A climbing lineage's next candidate, a vertex of the ball (projected by the caller): its first draws
    every sign at random; later ones redraw each sign with probability ``fraction``."""
    out = []
    for p, o, space in zip(point, origin, spaces):
        bound = np.broadcast_to(space.step(1.0)[0], p.shape)
        if not evaluated:
            out.append(o + rng.choice((-1.0, 1.0), size=p.shape) * bound)
            continue
        mask = rng.random(size=p.shape) < fraction
        out.append(np.where(mask, o + rng.choice((-1.0, 1.0), size=p.shape) * bound, p))
    return out
