"""Which kind of lineage a seed gets: boundary-seeking or plain climbing, split by what the model shows.

Two kinds of model pair call for two searches:

- quantization error spread over the input space (an int8 model's ordinary rounding): near a
  float decision boundary any error of the right sign flips the decision, so the fast way to a
  flip is to reach a float boundary and line-search across it (``moves``). A **seeking**
  lineage does that: operators, momentum, toward-another-class moves, the line search on every
  crossing, a short patience and screening of new seeds;
- error confined to a small region (an outlier channel that only some inputs wake): the float
  boundaries carry no error at all, a line search there can never flip, and the way to a flip is
  to climb the score (−m_q) patiently until the region is reached and its slope shows. A
  **climbing** lineage does that: a Gaussian step in the ball (σ = ``CLIMB_SIGMA`` × the bound
  per element), kept when the score does not drop, retired after ``climb_patience`` steps
  without a strict gain (a plain hill climber, which black-box attacks on such models favour).

What tells them apart costs no query: every crossing of a float boundary (a candidate whose
float class differs from its lineage's) gives both models' class-score differences at the
segment's two ends, so where each model's boundary lies along it (``line_zeros``). Where the
two zeros coincide the quantization gap m_f − m_q is zero on the whole segment to first order:
no line search is spent on it (a "flat" crossing), and it counts as evidence that the model
has no error at its boundaries. Crossings whose zeros differ count for seeking. The share of
seeking lineages is the mean of a Beta(``PRIOR_GAP``, ``PRIOR_FLAT``) posterior over the two
counts; the pool keeps ``round(pool × (1 − share))`` climbing lineages (a climber beyond that
is retired, the one that gained least). With no classification output (no crossings) the
split stays at its prior; ``SearchConfig.climb`` may fix it instead.
"""

from __future__ import annotations

import numpy as np

SEEK, CLIMB = "seek", "climb"
CLIMB_STEP = "climb-step"  # the move's name in the operator history and statistics
CLIMB_SIGMA = 0.3  # the climbing step's standard deviation, as a fraction of the bound per element
PRIOR_GAP, PRIOR_FLAT = 3.0, 1.0  # the share of seeking lineages before any crossing: 3 / 4
FLAT_ZEROS = 1e-6  # boundary positions closer than this (fraction of the segment) coincide


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

    def climbers(self) -> int:
        """How many of the pool's lineages should climb now."""
        return int(round(self.pool * (1.0 - self.share())))

    def stats(self) -> dict:
        return {"crossings_with_gap": self.gap, "flat_crossings": self.flat, "seek_share": round(self.share(), 3)}


def climb_step(point: list[np.ndarray], spaces, rng: np.random.Generator) -> list[np.ndarray]:
    """The point plus a Gaussian step of CLIMB_SIGMA × the bound per element (projected by the caller)."""
    return [(p[None] + rng.normal(size=(1,) + p.shape) * space.step(CLIMB_SIGMA))[0]
            for p, space in zip(point, spaces)]
