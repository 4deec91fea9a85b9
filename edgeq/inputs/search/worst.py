"""Worst input distribution: which shift of the inputs, and how strong, breaks the quantized model.

The shift space is every registered risky family that fits the inputs, at a continuous
severity s in (0, 3] (``operators.family_at``: 1, 2, 3 are the suite's levels), and pairs
of families. A *condition* (one family at s, or two applied one after the other) is
judged on the same ``samples`` data rows every time (paired, so conditions compare
sample by sample), by the verdict's own number: the accuracy drop with labels, else the
flip rate of the objective's output, with its 95 % interval (Wilson for a flip rate,
Newcombe's paired interval for a drop).

With a query budget (a query: one input through both models), in this order:
1. clean, then every family at severities 1, 2 and 3 (the suite's grid);
2. pairs of the ``top`` worst families, each at severity 1 (two mild shifts together);
3. for each of the ``top`` worst families whose rate reaches the ``catastrophic``
   threshold (``analysis.rules.THRESHOLDS``), bisection between the strongest
   severity seen below the threshold and the weakest seen above it, down to ``tolerance``:
   the smallest strength found that crosses it, and the bracket around it.
What the budget did not reach is said, not guessed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from edgeq.analysis.compare import band
from edgeq.analysis.rules import THRESHOLDS
from edgeq.inputs.search.settings import BUDGET_HELP, QUERIES, TIME_BUDGET, check_settings, setting
from edgeq.limits import Limits
from edgeq.analysis.intervals import paired_difference, wilson
from edgeq.errors import ConfigError, EdgeqError
from edgeq.inputs.risky.families import FAMILIES, input_kind
from edgeq.inputs.risky.ranges import to_dtype
from edgeq.inputs.search.objective import Objective, choose_objective
from edgeq.inputs.search.operators import MAX_SEVERITY, Space, family_at, family_fits, graded, level_at

GRID = (1.0, 2.0, 3.0)


@dataclass
class WorstConfig:
    """The worst-shift search's settings; the command-line ones carry their flag, help and limits."""

    budget: int = setting(4000, "--budget", BUDGET_HELP, limits=QUERIES, words="a positive number of queries")
    time_budget_s: float | None = setting(None, "--time-budget", **TIME_BUDGET)
    samples: int = setting(64, "--samples", "Data samples each condition is judged on (the same ones every time).",
                           limits=QUERIES)
    seed: int = setting(0, "--seed", limits=Limits(0, whole=True))
    top: int = setting(3, "--top", "Worst families paired and bisected.", limits=QUERIES)
    tolerance: float = setting(0.05, "--tolerance", "Bisect the crossing strength down to this many severity units.",
                               limits=Limits(0, MAX_SEVERITY, low_open=True, high_open=True))
    pairs: bool = True
    families: list[str] | None = None
    output: str | None = None

    def check(self) -> None:
        check_settings(self)
        unknown = sorted(set(self.families or ()) - set(FAMILIES))
        if unknown:
            raise ConfigError(f"unknown risky family {unknown[0]!r} (known: {', '.join(FAMILIES)})")


@dataclass
class Condition:
    parts: tuple  # ((family, severity), ...); () is clean
    n: int
    flips: int
    rate: float  # the verdict number: accuracy drop with labels, else the flip rate
    ci95: tuple
    flip_rate: float
    flip_ci95: tuple
    float_accuracy: float | None = None
    quant_accuracy: float | None = None
    accuracy_drop: float | None = None

    @property
    def name(self) -> str:
        return " + ".join(f"{f}@{s:.3g}" for f, s in self.parts) or "clean"

    def describe(self) -> str:
        """'brightness+ at severity 2.75 (whole input shifted up by 43.8% of the data range, clipped)'."""
        if not self.parts:
            return "clean inputs"
        return " then ".join(_family_words(f, s) for f, s in self.parts)

    def to_dict(self) -> dict:
        return {"condition": self.name, "families": [f for f, _ in self.parts],
                "severities": [round(s, 4) for _, s in self.parts],
                "levels": [level_at(FAMILIES[f], s) if s >= 1 else None for f, s in self.parts],
                "description": self.describe(), "n": self.n, "value": self.rate, "ci95": list(self.ci95),
                "band": band(self.rate), "flip_rate": self.flip_rate, "flip_ci95": list(self.flip_ci95),
                "flips": self.flips, "float_accuracy": self.float_accuracy, "quant_accuracy": self.quant_accuracy,
                "accuracy_drop": self.accuracy_drop}


def _field_for(family, sample_shape: tuple) -> bool:
    """The family models a real shift of these inputs (not only an out-of-domain stress)."""
    return family.role(input_kind(tuple(sample_shape)))[0] == "field"


def _family_words(name: str, severity: float) -> str:
    family = FAMILIES[name]
    if severity < 1.0:
        return f"{name} at severity {severity:.3g} ({severity:.0%} of the way to its level 1: {_describe(family, family.levels[0])})"
    return f"{name} at severity {severity:.3g} ({_describe(family, level_at(family, severity))})"


def _describe(family, level) -> str:
    for levels in ((level,), (level, level, level)):
        try:
            return family.describe(levels)
        except Exception:  # a description written for exactly three levels
            continue
    return f"level {level}"


@dataclass
class WorstResult:
    clean: Condition | None
    conditions: list[Condition]
    crossings: dict  # family -> {"severity", "below", "above", ...}
    queries: int
    elapsed_s: float
    stopped: str
    complete: bool
    metric: str
    objective: dict
    skipped: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: BaseException | None = None

    def ranked(self) -> list[Condition]:
        return sorted(self.conditions, key=lambda c: (-c.rate, -c.flip_rate, c.name))

    def summary(self, top: int = 10) -> dict:
        return {"metric": self.metric, "thresholds": dict(THRESHOLDS), "objective": self.objective,
                "clean": self.clean.to_dict() if self.clean else None,
                "worst": [c.to_dict() for c in self.ranked()[:top]],
                "crossings": self.crossings, "conditions_evaluated": len(self.conditions),
                "queries": self.queries, "elapsed_s": round(self.elapsed_s, 3), "stopped": self.stopped,
                "complete": self.complete, "skipped_families": self.skipped, "notes": list(self.notes),
                **({"error": str(self.error)} if self.error is not None else {})}


class _OutOfBudget(Exception):
    pass


def check_worst_labels(info, labels: np.ndarray | None, where: str, output: str | None = None) -> None:
    """Labels y must be classes the judged output can produce, as ``evaluate`` requires
    (``edgeq.analysis.plan.check_model_labels``): a label of 10 for 10 classes makes every
    sample wrong for both models alike, a drop of 0 that tested nothing. Exit 2 naming
    ``where`` and [y]. Labels given with ``--output`` naming a non-classification output are
    not used (the flip rate is), so they are not judged."""
    from edgeq.analysis.plan import LabelsDoNotFit, OutputSpec, check_model_labels

    if info is None or labels is None:
        return
    try:
        check_model_labels(info, labels, where, OutputSpec(labels=str(output)) if output is not None else None)
    except LabelsDoNotFit:
        raise
    except ConfigError:
        if output is None:
            raise


def worst_distributions(evaluator, data: list[np.ndarray], spaces: list[Space], config: WorstConfig,
                        output_names: list[str], labels: np.ndarray | None = None, info=None,
                        progress=None, where: str = "--data") -> WorstResult:
    """``where`` names the labels' file in messages (default: the flag it comes from)."""
    config.check()
    n = len(data[0])
    if n == 0:
        raise ConfigError("the data has no samples to shift")
    check_worst_labels(info, labels, where, config.output)
    rng = np.random.default_rng([config.seed, 0x3057])
    rows = np.sort(rng.permutation(n)[:config.samples])
    base = [np.asarray(a[rows]) for a in data]
    y = None if labels is None else np.asarray(labels)[rows]
    names, skipped = [], {}
    for name, family in FAMILIES.items():
        if config.families is not None and name not in config.families:
            continue
        if not graded(family):
            skipped[name] = "a mistake with no strength to search along"
        elif not any(family_fits(family, a.shape[1:]) for a in base):
            skipped[name] = "fits none of the inputs"
        elif config.families is None and not any(_field_for(family, a.shape[1:]) for a in base):
            skipped[name] = "stands for no field input of this kind (stress only; name it with --family to search it)"
        else:
            names.append(name)
    started = time.monotonic()
    state = {"queries": 0}
    objective: list[Objective] = []
    seen: dict[tuple, Condition] = {}

    def shifted(parts) -> list[np.ndarray]:
        out = []
        for k, (a, space) in enumerate(zip(base, spaces)):
            x = a.astype(np.float64)
            for name, severity in parts:
                family = FAMILIES[name]
                if family_fits(family, a.shape[1:]):
                    key = [config.seed, family.seed_key, int(round(severity * 1e4)), k]
                    x = family_at(family, x, severity, space.data, np.random.default_rng(key))
            out.append(to_dtype(x, a.dtype))
        return out

    def judge(parts) -> Condition:
        parts = tuple((f, round(float(s), 6)) for f, s in parts)
        if parts in seen:
            return seen[parts]
        if config.time_budget_s is not None and time.monotonic() - started >= config.time_budget_s:
            raise _OutOfBudget("time")
        if state["queries"] + len(rows) > config.budget:
            raise _OutOfBudget("budget")
        f, q = evaluator.evaluate(shifted(parts))
        state["queries"] += len(rows)
        if progress:
            progress(state["queries"], config.budget)
        if not objective:
            objective.append(choose_objective(output_names, f, q, config.output, info))
        judged = objective[0].judge(f, q)
        seen[parts] = condition = _condition(parts, judged, y)
        return condition

    stopped, error = "done", None
    crossings: dict = {}
    clean = None
    try:
        clean = judge(())
        for severity in GRID:
            for name in names:
                judge([(name, severity)])
        top = _top_families(seen, config.top)
        if config.pairs:
            for i, a in enumerate(top):
                for b in top[i + 1:]:
                    judge([(a, 1.0), (b, 1.0)])
        threshold = THRESHOLDS["catastrophic"]
        for name in top:
            crossings[name] = _bisect(name, seen, judge, threshold, config.tolerance, clean)
    except _OutOfBudget as exc:
        stopped = str(exc)
    except KeyboardInterrupt as exc:
        stopped, error = "interrupted", exc
    except EdgeqError as exc:
        if exc.exit_code != 3:
            raise
        stopped, error = "interrupted", exc
    conditions = [c for parts, c in seen.items() if parts]
    notes = []
    if stopped in ("budget", "time"):
        notes.append(f"the {stopped} budget ran out after {len(seen)} conditions ({state['queries']} queries): "
                     "later stages (the grid, pairs, bisection, in that order) are incomplete")
    metric = "accuracy_drop" if y is not None and objective and objective[0].kind in ("classification", "binary") \
        else "flip_rate"
    return WorstResult(clean, conditions, crossings, state["queries"], time.monotonic() - started, stopped,
                       stopped == "done", metric, objective[0].describe() if objective else {}, skipped, notes, error)


def _condition(parts, judged, y) -> Condition:
    n = len(judged.flip)
    flips = int(np.count_nonzero(judged.flip))
    flip_ci = wilson(flips, n)
    if y is None or judged.float_class is None:
        return Condition(parts, n, flips, flips / n, flip_ci, flips / n, flip_ci)
    f_ok, q_ok = judged.float_class == y, judged.quant_class == y
    both, only_f = int(np.sum(f_ok & q_ok)), int(np.sum(f_ok & ~q_ok))
    only_q, neither = int(np.sum(~f_ok & q_ok)), int(np.sum(~f_ok & ~q_ok))
    drop = (only_f - only_q) / n
    return Condition(parts, n, flips, drop, paired_difference(both, only_f, only_q, neither), flips / n, flip_ci,
                     (both + only_f) / n, (both + only_q) / n, drop)


def _top_families(seen: dict, count: int) -> list[str]:
    best: dict[str, float] = {}
    for parts, c in seen.items():
        if len(parts) == 1:
            name = parts[0][0]
            best[name] = max(best.get(name, -np.inf), c.rate)
    return sorted(best, key=lambda name: -best[name])[:count]


def _bisect(name: str, seen: dict, judge, threshold: float, tolerance: float, clean) -> dict:
    """The smallest severity found where ``name`` crosses ``threshold``, with the bracket around it."""
    points = {0.0: clean.rate} if clean is not None else {}
    points.update({parts[0][1]: c.rate for parts, c in seen.items() if len(parts) == 1 and parts[0][0] == name})
    above = sorted(s for s, r in points.items() if r >= threshold)
    if not above:
        return {"crosses": False, "threshold": threshold, "max_severity": MAX_SEVERITY,
                "worst_value": max(points.values()) if points else None}
    hi = above[0]
    below = [s for s in points if s < hi and points[s] < threshold]
    if not below:
        return {"crosses": True, "threshold": threshold, "severity": hi, "below": None, "above": hi,
                "value_above": points[hi], "note": "already at or over the threshold on clean inputs"}
    lo = max(below)
    while hi - lo > tolerance:
        mid = (lo + hi) / 2
        rate = judge([(name, mid)]).rate
        if rate >= threshold:
            hi = mid
        else:
            lo = mid
    family = FAMILIES[name]
    return {"crosses": True, "threshold": threshold, "severity": round(hi, 4), "below": round(lo, 4),
            "above": round(hi, 4), "value_below": judge([(name, lo)]).rate if lo > 0 else points.get(0.0),
            "value_above": judge([(name, hi)]).rate,
            "level": level_at(family, hi) if hi >= 1 else None, "description": _family_words(name, hi)}
