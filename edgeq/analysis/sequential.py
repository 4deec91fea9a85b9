"""Anytime-valid intervals for a suite sampled in rounds (issue 24).

When edgeq samples a cell in rounds and stops once the cell is clearly below the
degraded line or clearly at/above the catastrophic one, the data decides the number of
trials, and a fixed-n interval (Wilson, ``intervals.py``) no longer holds its 95 %:
looking after every round and stopping at the first interval that clears a threshold
is a multiple test. A *confidence sequence* (CS) holds at every look at once:
P(the true rate leaves the CS at any look, ever) ≤ alpha, so it stays valid at
whatever moment a data-dependent rule stops.

Method (``INTERVAL_METHOD``, ``INTERVAL_DESCRIPTION``): the two-sided beta-binomial
mixture of Howard, Ramdas, McAuliffe and Sekhon (2021), "Time-uniform, nonparametric,
nonasymptotic confidence sequences", Ann. Statist. 49(2), Proposition 7 (Robbins'
mixture method; Ville's inequality), the Bernoulli confidence sequence of their
library ``confseq`` (``bernoulli_confidence_interval``). For a candidate rate p the
likelihood ratio of every alternative q against p, averaged over q ~ Beta(p·m,
(1−p)·m), is

    M_t(p) = B(p·m + k, (1−p)·m + t − k) / B(p·m, (1−p)·m) / (p^k (1−p)^(t−k))

after k events in t trials: a nonnegative martingale with mean 1 when p is the true
rate, so by Ville's inequality it reaches 1/alpha with probability ≤ alpha, ever. The
CS is {p : M_t(p) < 1/alpha}: it holds k/t (M_t(k/t) ≤ 1), and it is one interval (no
rate outside the bounds below 1/alpha: checked on a grid in the tests). The prior's
concentration m = max(t_opt/c − 1, 0.001), c = 2·log(1/alpha) + log(1 + 2·log(1/alpha)),
makes the CS tightest near ``t_opt`` trials (the paper's rule for the normal mixture,
carried over as ``confseq`` does). ``T_OPT`` = 256, the middle of the look schedule
32…512 a planner runs; with it a 0-of-n cell is decided below 2 % after 213 trials.

The bounds are roots of log M_t(p) = log(1/alpha), found by bisection in logit p
(relative precision near 0 and near 1; the upper bound by the symmetry p ↔ 1 − p,
k ↔ t − k) over a bracket known to hold a root — the estimate k/t inside, a rate of
~1e-300 outside — with log-beta from ``math.lgamma``: the lower bound is 0
exactly at 0 events, the upper bound 1 exactly at events == trials. No library: the
authors' ``confseq`` (PyPI 0.0.11, sdist only) needs a C++ build against system Boost
and pulls scipy, pandas, matplotlib and pytest in; built by hand in a scratch folder it
gave the same bounds as this module (``CONFSEQ_MAX_DIFFERENCE``).

Not covered here: the CS covers the rate of the distribution the cell's samples are
drawn from, taken in random order (i.i.d. or exchangeable draws). Rounds must draw a
cell's samples in a random order, never the suite's order (sorted by source row or
strength). A rate is fractional events in [0, trials] too: the same bound holds for
outcomes bounded in [0, 1] (sub-Bernoulli, the paper's Proposition 7 setting).

The paired accuracy drop, (float right & quant wrong − float wrong & quant right)/n,
gets the union of two such sequences at alpha/2 (``paired_drop``): conservative, as a
Bonferroni union is, and valid whatever the two counts' correlation.

Pure functions: no numpy array is needed for one cell; ``confidence_sequences`` maps a
batch. Measured coverage under a stopping rule: ``COVERAGE_TABLE``
(``scripts/sequential_table.py`` prints it again).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from edgeq.analysis.rules import THRESHOLDS

ALPHA = 0.05  # the report's 95 %
T_OPT = 256  # trials at which the CS is tightest (the middle of the look schedule 32…512)
LOOKS = (32, 64, 128, 256, 512)  # cumulative trials at which the coverage below was measured

INTERVAL_METHOD = "beta-binomial-mixture-cs"
INTERVAL_DESCRIPTION = (
    "Anytime-valid 95% confidence sequence for each cell's rate: the two-sided beta-binomial mixture of "
    "Howard, Ramdas, McAuliffe & Sekhon (2021, 'Time-uniform, nonparametric, nonasymptotic confidence "
    "sequences', Proposition 7), as in their confseq library. A rate p is kept while the likelihood ratio of "
    "the observed counts, averaged over alternatives drawn from a Beta prior centred on p (tightest near 256 "
    "trials), stays below 1/alpha = 20; by Ville's inequality the true rate leaves the interval at any look, "
    "ever, with probability at most 5%, so the interval stays valid when sampling stops as soon as a cell is "
    "clearly below the degraded or at/above the catastrophic threshold. It is wider than a fixed-n Wilson "
    "interval, the price of looking after every round. An accuracy drop (paired: float right and quantized "
    "wrong minus float wrong and quantized right) gets the difference of two such sequences at 97.5% each, "
    "which is conservative.")

DECIDED_BELOW = "decided_below"  # upper bound < degraded: robust
DECIDED_ABOVE = "decided_above"  # lower bound ≥ catastrophic: catastrophic
DECIDED_BETWEEN = "decided_between"  # degraded ≤ lower, upper < catastrophic: degraded
UNDECIDED = "undecided"
DECISIONS = (DECIDED_BELOW, DECIDED_BETWEEN, DECIDED_ABOVE, UNDECIDED)

# max |bound difference| against confseq 0.0.11's bernoulli_confidence_interval (built from its C++
# source with boost-headers and pybind11 in a scratch venv; t_opt 256, alpha = alpha_opt = 0.05 and
# 0.025), over every k of t in 1…64, 100, 128, 200, 256, 300, 512, 1000, 2000 and 5000
# (23,298 intervals): 8.9e-13, relative 7.4e-12 — the two root-finders' tolerances, the same method
CONFSEQ_MAX_DIFFERENCE = 8.9e-13

# simulate_coverage(reps=2000, seed=0), numpy 2.4 (tests/test_sequential.py prints it again): CS@every = the CS
# held p at all five looks; Wilson(own stop) = Wilson used both to stop and to report, as a naive adaptive run would
COVERAGE_TABLE = """\
     p  CS@stop  CS@every  Wilson@stop  Wilson(own stop)  mean n  wrong  decided
 0.000   1.0000    1.0000       1.0000            1.0000   256.0  0.000    1.000
 0.005   0.9995    0.9980       0.9525            0.9525   436.4  0.000    0.572
 0.020   0.9915    0.9905       0.9485            0.9075   510.5  0.009    0.009
 0.050   0.9970    0.9955       0.9635            0.9710   512.0  0.000    0.710
 0.100   0.9975    0.9935       0.9490            0.8540   511.4  0.001    0.003
 0.300   0.9995    0.9920       0.9435            0.9490    62.9  0.000    1.000
 0.600   1.0000    0.9920       0.9590            0.9590    32.0  0.000    1.000"""

_BISECTIONS = 200  # cap; the bisection stops at 1e-12 in logit p (relative precision in p and 1 − p)
_LOGIT_END = 690.0  # logit of ~1e-300: a bound beyond it is reported as 0 (or 1)


def mixture_concentration(t_opt: float = T_OPT, alpha: float = ALPHA) -> float:
    """m of the prior Beta(p·m, (1−p)·m): Howard et al.'s optimal rho for ``t_opt``, as confseq sets it."""
    if not t_opt > 0 or not 0 < alpha < 1:
        raise ValueError(f"t_opt must be > 0 and alpha in (0, 1), not {t_opt}, {alpha}")
    level = math.log(1 / alpha)
    return max(t_opt / (2 * level + math.log(1 + 2 * level)) - 1, 1e-3)


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def _log_expit(x: float) -> float:
    """log(1 / (1 + e^−x)) without overflow or cancellation."""
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def _expit(x: float) -> float:
    return math.exp(_log_expit(x))


def _log_ratio(log_p: float, log_q: float, events: float, trials: float, m: float) -> float:
    """log M_t(p) with p = e^log_p and 1 − p = e^log_q given separately (each precise near 0)."""
    p, q = math.exp(log_p), math.exp(log_q)
    misses = trials - events
    return (_log_beta(p * m + events, q * m + misses) - _log_beta(p * m, q * m)
            - (events * log_p if events else 0.0) - (misses * log_q if misses else 0.0))


def log_mixture(p: float, events: float, trials: float, m: float) -> float:
    """log M_t(p): the log mixture likelihood ratio against rate p after ``events`` in ``trials``
    (``m``: ``mixture_concentration``). The CS at alpha is {p : log_mixture < log(1/alpha)}."""
    if p <= 0:
        return 0.0 if events <= 0 else math.inf
    if p >= 1:
        return 0.0 if events >= trials else math.inf
    return _log_ratio(math.log(p), math.log1p(-p), events, trials, m)


def _lower_logit(events: float, trials: float, m: float, level: float) -> float:
    """logit of inf{p : log M(p) < level}, −inf for 0: a bisection in logit p, between a point
    known to be outside and the estimate k/t (always inside: M(k/t) ≤ 1 < 1/alpha). The
    logit keeps relative precision near both 0 and 1, so the symmetric upper bound has it too."""
    if events <= 0:
        return -math.inf

    def inside(x: float) -> bool:
        return _log_ratio(_log_expit(x), _log_expit(-x), events, trials, m) < level

    hi = _LOGIT_END if events >= trials else math.log(events) - math.log(trials - events)
    lo = -_LOGIT_END
    if inside(lo):
        return -math.inf  # e.g. 1 event: M stays bounded as p → 0, and no rate above 0 is excluded
    for _ in range(_BISECTIONS):
        mid = (lo + hi) / 2
        if hi - lo <= 1e-12 or mid in (lo, hi):
            break
        lo, hi = (lo, mid) if inside(mid) else (mid, hi)
    return lo  # the outer end: the bound errs wide, never narrow


@lru_cache(maxsize=1 << 16)
def _bounds(events: float, trials: float, alpha: float, t_opt: float) -> tuple[float, float]:
    m = mixture_concentration(t_opt, alpha)
    level = math.log(1 / alpha)
    lower = _lower_logit(events, trials, m, level)
    upper = -_lower_logit(trials - events, trials, m, level)  # symmetry: p ↔ 1 − p, events ↔ misses
    return (0.0 if lower == -math.inf else _expit(lower)), (1.0 if upper == math.inf else _expit(upper))


def confidence_sequence(events: float, trials: float, alpha: float = ALPHA,
                        t_opt: float = T_OPT) -> tuple[float, float]:
    """(lower, upper) of the anytime-valid CS for a rate after ``events`` in ``trials``.

    Valid at every look at once with probability ≥ 1 − alpha; (0, 1) with no trials;
    lower is 0 exactly at 0 events, upper 1 exactly at events == trials."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), not {alpha}")
    if not (math.isfinite(events) and math.isfinite(trials)) or trials < 0 or not 0 <= events <= max(trials, 0):
        raise ValueError(f"events must be in [0, trials], not {events} of {trials}")
    if trials == 0:
        return 0.0, 1.0
    return _bounds(float(events), float(trials), float(alpha), float(t_opt))


def confidence_sequences(events, trials, alpha: float = ALPHA, t_opt: float = T_OPT) -> tuple[np.ndarray, np.ndarray]:
    """``confidence_sequence`` over arrays of counts (broadcast): (lower, upper) arrays."""
    events, trials = np.broadcast_arrays(np.asarray(events, dtype=float), np.asarray(trials, dtype=float))
    lo, hi = np.empty(events.shape), np.empty(events.shape)
    for index in np.ndindex(events.shape):
        lo[index], hi[index] = confidence_sequence(events[index], trials[index], alpha, t_opt)
    return lo, hi


def paired_drop(only_first: float, only_second: float, trials: float, alpha: float = ALPHA,
                t_opt: float = T_OPT) -> tuple[float, float]:
    """Anytime-valid CS for the paired drop (only_first − only_second)/trials.

    For an accuracy drop: only_first = float right & quantized wrong, only_second = float
    wrong & quantized right. Each rate gets a CS at alpha/2 and the drop lies in
    [lower_first − upper_second, upper_first − lower_second] whenever both hold: a union
    bound, conservative (it ignores the pairs' correlation), in [−1, 1]."""
    if only_first + only_second > trials:
        raise ValueError(f"only_first + only_second exceed the trials: {only_first} + {only_second} > {trials}")
    lo_a, hi_a = confidence_sequence(only_first, trials, alpha / 2, t_opt)
    lo_b, hi_b = confidence_sequence(only_second, trials, alpha / 2, t_opt)
    return max(-1.0, lo_a - hi_b), min(1.0, hi_a - lo_b)


def decide(interval: tuple[float, float], thresholds: dict = THRESHOLDS) -> str:
    """Which band a cell's CS settles it in (``DECISIONS``), or ``undecided``."""
    lo, hi = interval
    degraded, catastrophic = thresholds["degraded"], thresholds["catastrophic"]
    if hi < degraded:
        return DECIDED_BELOW
    if lo >= catastrophic:
        return DECIDED_ABOVE
    if lo >= degraded and hi < catastrophic:
        return DECIDED_BETWEEN
    return UNDECIDED


@dataclass(frozen=True)
class CellStatus:
    """Where a cell stands for a planner: its estimate, CS and decision; ``straddles`` names
    the thresholds inside the CS, ``uncertainty`` is the CS width while undecided (0 once
    decided), ``further_trials`` the trials more it would take at its current estimate
    (0 when decided, None when not within ``cap`` or there are no trials yet)."""

    estimate: float | None
    interval: tuple[float, float]
    decision: str
    straddles: tuple[str, ...]
    uncertainty: float
    further_trials: int | None


def cell_status(events: float, trials: float, thresholds: dict = THRESHOLDS, alpha: float = ALPHA,
                t_opt: float = T_OPT, cap: int = 1 << 20) -> CellStatus:
    """A rate cell's ``CellStatus`` (``cap``: the most total trials the planner would give it)."""
    estimate = events / trials if trials > 0 else None
    return _status(estimate, lambda n, scale: confidence_sequence(min(events * scale, n), n, alpha, t_opt),
                   trials, thresholds, cap)


def paired_status(only_first: float, only_second: float, trials: float, thresholds: dict = THRESHOLDS,
                  alpha: float = ALPHA, t_opt: float = T_OPT, cap: int = 1 << 20) -> CellStatus:
    """A paired-drop cell's ``CellStatus`` (see ``paired_drop``)."""
    estimate = (only_first - only_second) / trials if trials > 0 else None

    def interval_at(n, scale):
        first, second = only_first * scale, only_second * scale
        excess = max(0.0, first + second - n)  # float rounding of the scaled counts
        return paired_drop(first - excess, second, n, alpha, t_opt)

    return _status(estimate, interval_at, trials, thresholds, cap)


def _status(estimate, interval_at, trials, thresholds, cap) -> CellStatus:
    interval = interval_at(trials, 1.0)
    decision = decide(interval, thresholds)
    lo, hi = interval
    straddles = tuple(name for name in ("degraded", "catastrophic") if lo < thresholds[name] <= hi)
    further = None if estimate is None else _further_trials(interval_at, trials, thresholds, cap)
    return CellStatus(estimate, interval, decision, straddles, 0.0 if decision != UNDECIDED else hi - lo, further)


def _further_trials(interval_at, trials: float, thresholds: dict, cap: int) -> int | None:
    """Trials more until the CS decides, if the counts kept growing at today's rates (events
    scaled with the trials, fractional): a doubling search, then a bisection."""
    def decided(n: int) -> bool:
        return decide(interval_at(n, n / trials), thresholds) != UNDECIDED

    start = int(math.ceil(trials))
    if decided(start):
        return 0
    lo, hi = start, start
    while not decided(hi):
        if hi >= cap:
            return None
        lo, hi = hi, min(cap, hi * 2)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if decided(mid) else (mid, hi)
    return hi - start


def trials_to_decide_zero(threshold: float = THRESHOLDS["degraded"], alpha: float = ALPHA,
                          t_opt: float = T_OPT) -> int:
    """Trials after which a cell with 0 events has its upper bound below ``threshold``."""
    return cell_status(0, 1, {"degraded": threshold, "catastrophic": 1.0}, alpha, t_opt).further_trials + 1


def describe(alpha: float = ALPHA, t_opt: float = T_OPT) -> dict:
    """The method's facts for report.json: ``interval_method`` and its parameters and description."""
    return {"interval_method": INTERVAL_METHOD, "alpha": alpha, "t_opt": t_opt,
            "interval_description": INTERVAL_DESCRIPTION}


def _tables(looks, alpha: float, t_opt: float):
    """Per look: the CS bounds for every count 0…t (index = events)."""
    return [np.array([confidence_sequence(k, t, alpha, t_opt) for k in range(t + 1)]) for t in looks]


def simulate_coverage(rates=(0.0, 0.005, 0.02, 0.05, 0.10, 0.3, 0.6), reps: int = 2000, looks=LOOKS,
                      alpha: float = ALPHA, t_opt: float = T_OPT, thresholds: dict = THRESHOLDS,
                      seed: int = 0) -> list[dict]:
    """Sequential sampling of a cell with true rate p, looking after each cumulative count in
    ``looks`` and stopping at the first look where the CS decides (or the last). Per rate:
    ``cs_at_stop`` (share of repetitions whose CS holds p when stopped), ``cs_every_look``
    (holds p at every look: the time-uniform property), ``wilson_at_stop`` (the fixed-n
    Wilson 95 % interval at the same stopping time), ``wilson_naive`` (Wilson both to stop
    and to report), ``mean_trials`` at the stop, ``wrong_decisions`` (decided into a band
    that does not hold p) and ``decided`` (share decided before or at the last look)."""
    from edgeq.analysis.intervals import wilson

    rng = np.random.default_rng(seed)
    looks = tuple(int(t) for t in looks)
    steps = np.diff((0,) + looks)
    cs = _tables(looks, alpha, t_opt)
    wil = [np.array([wilson(k, t) for k in range(t + 1)]) for t in looks]
    rows = []
    for p in rates:
        counts = np.cumsum(rng.binomial(steps, p, size=(reps, len(looks))), axis=1)

        def bounds(table):
            lo = np.stack([table[j][counts[:, j], 0] for j in range(len(looks))], axis=1)
            hi = np.stack([table[j][counts[:, j], 1] for j in range(len(looks))], axis=1)
            return lo, hi

        def stopping(lo, hi):
            band = _decisions(lo, hi, thresholds)
            decided = band != _UNDECIDED_CODE
            stop = np.where(decided.any(axis=1), decided.argmax(axis=1), len(looks) - 1)
            return stop, band[np.arange(reps), stop]

        (lo, hi), (wlo, whi) = bounds(cs), bounds(wil)
        holds, wholds = (lo <= p) & (p <= hi), (wlo <= p) & (p <= whi)
        stop, band = stopping(lo, hi)
        wstop, _ = stopping(wlo, whi)
        at = np.arange(reps)
        rows.append({"p": p, "cs_at_stop": float(holds[at, stop].mean()),
                     "cs_every_look": float(holds.all(axis=1).mean()),
                     "wilson_at_stop": float(wholds[at, stop].mean()),
                     "wilson_naive": float(wholds[at, wstop].mean()),
                     "mean_trials": float(np.asarray(looks)[stop].mean()),
                     "wrong_decisions": float(((band != _UNDECIDED_CODE) & (band != _band_code(p, thresholds))).mean()),
                     "decided": float((band != _UNDECIDED_CODE).mean())})
    return rows


_UNDECIDED_CODE = 3  # codes for DECISIONS: below 0, between 1, above 2, undecided 3


def _decisions(lo: np.ndarray, hi: np.ndarray, thresholds: dict) -> np.ndarray:
    """``decide`` over arrays of bounds, as codes (index in ``DECISIONS``)."""
    degraded, catastrophic = thresholds["degraded"], thresholds["catastrophic"]
    return np.select([hi < degraded, lo >= catastrophic, (lo >= degraded) & (hi < catastrophic)], [0, 2, 1],
                     default=_UNDECIDED_CODE)


def _band_code(p: float, thresholds: dict) -> int:
    return 0 if p < thresholds["degraded"] else 2 if p >= thresholds["catastrophic"] else 1


PAIRS = ((0.0, 0.0), (0.01, 0.01), (0.03, 0.01), (0.08, 0.02), (0.15, 0.01), (0.3, 0.1), (0.4, 0.0))


def simulate_paired(pairs=PAIRS, reps: int = 2000, looks=LOOKS, alpha: float = ALPHA, t_opt: float = T_OPT,
                    thresholds: dict = THRESHOLDS, seed: int = 0) -> list[dict]:
    """The same for the paired drop: per sample, float right & quant wrong with rate a, float
    wrong & quant right with rate b; the true drop is a − b. Per pair: ``cs_at_stop``,
    ``cs_every_look`` and ``mean_trials``."""
    rng = np.random.default_rng(seed)
    looks = tuple(int(t) for t in looks)
    steps = np.diff((0,) + looks)
    table = _tables(looks, alpha / 2, t_opt)
    rows = []
    for a, b in pairs:
        draws = np.stack([rng.multinomial(n, [a, b, 1 - a - b], size=reps) for n in steps], axis=1)
        first, second = np.cumsum(draws[..., 0], axis=1), np.cumsum(draws[..., 1], axis=1)
        lo = np.stack([table[j][first[:, j], 0] - table[j][second[:, j], 1] for j in range(len(looks))], axis=1)
        hi = np.stack([table[j][first[:, j], 1] - table[j][second[:, j], 0] for j in range(len(looks))], axis=1)
        holds = (lo <= a - b) & (a - b <= hi)
        decided = _decisions(lo, hi, thresholds) != _UNDECIDED_CODE
        stop = np.where(decided.any(axis=1), decided.argmax(axis=1), len(looks) - 1)
        rows.append({"a": a, "b": b, "drop": a - b, "cs_at_stop": float(holds[np.arange(reps), stop].mean()),
                     "cs_every_look": float(holds.all(axis=1).mean()),
                     "mean_trials": float(np.asarray(looks)[stop].mean())})
    return rows


def coverage_lines(rows: list[dict]) -> list[str]:
    """``simulate_coverage`` rows as a fixed-width table."""
    lines = ["     p  CS@stop  CS@every  Wilson@stop  Wilson(own stop)  mean n  wrong  decided"]
    for r in rows:
        lines.append(f"{r['p']:6.3f}  {r['cs_at_stop']:7.4f}  {r['cs_every_look']:8.4f}  {r['wilson_at_stop']:11.4f}  "
                     f"{r['wilson_naive']:16.4f}  {r['mean_trials']:6.1f}  {r['wrong_decisions']:5.3f}  "
                     f"{r['decided']:7.3f}")
    return lines
