"""Disagreement search: inputs near the user's data on which float and quantized models differ.

Black-box: only the two models' outputs are used. A pool of seed samples is searched
at once; each round proposes one mutated candidate per seed lineage and evaluates them
in one batch (so a device's agent sees one request per round). A candidate is the
lineage's current point changed by one operator (``operators``) at a random strength,
then projected into the ball of radius ``epsilon`` around its seed (L∞: every element
within ε × the data range; L2: the root-mean-square change within ε × the range) and
into the data's range. A lineage moves to a candidate that scores at least as high
(``objective``); a flip is recorded with its seed and distance, and the seed is retired
(``per_seed`` flips each). A lineage that stops improving for ``patience`` rounds makes
room for the next seed.

Operators are chosen adaptively, by a Metropolis–Hastings chain over operators (the idea
of DFLARE, Xie et al., 2022, implemented from the description): operators are ranked by
how often they raised a candidate's score (successes + 1) / (tries + 2); a rank r has
weight (1 − p)^r; each choice proposes a uniformly random operator and accepts it with
probability min(1, weight(proposed) / weight(current)), else keeps the current one. So
operators that moved candidates towards a flip are used more, and none is ever ruled out.

Every random draw comes from one generator seeded by ``seed``: the same data, models and
seed give the same candidates, in the same order, on any evaluator that returns the same
outputs. A query is one input evaluated by both models; ``budget`` caps them exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from edgeq.errors import ConfigError, EdgeqError
from edgeq.inputs.risky.ranges import to_dtype
from edgeq.inputs.search.objective import Judged, Objective, choose_objective
from edgeq.inputs.search.operators import Operator, Space

NORMS = ("linf", "l2")
SAFETY = 1.0 - 1e-4  # projections aim just inside the bound, so a cast back to float32 cannot leave it


@dataclass
class SearchConfig:
    budget: int = 2000
    time_budget_s: float | None = None
    epsilon: float = 0.1
    norm: str = "linf"
    seed: int = 0
    pool: int = 8
    max_seeds: int = 256
    per_seed: int = 1
    patience: int = 25
    rank_p: float | None = None  # None: 1 / number of operators
    stop_at_first: bool = False
    output: str | None = None

    def check(self) -> None:
        if isinstance(self.budget, bool) or not isinstance(self.budget, int) or self.budget <= 0:
            raise ConfigError(f"--budget must be a positive number of queries, got {self.budget!r}")
        if self.time_budget_s is not None and not (self.time_budget_s > 0 and np.isfinite(self.time_budget_s)):
            raise ConfigError(f"--time-budget must be a positive number of seconds, got {self.time_budget_s!r}")
        if not (self.epsilon > 0 and np.isfinite(self.epsilon)):
            raise ConfigError(f"--distance must be above 0 (a fraction of the data range), got {self.epsilon!r}")
        if self.norm not in NORMS:
            raise ConfigError(f"--norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        for name in ("pool", "max_seeds", "per_seed", "patience"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass
class Found:
    """One input on which the models disagree."""

    arrays: list[np.ndarray]  # one sample per model input, in the data's dtypes
    seed_index: int  # the data row it was grown from
    distance: float  # relative to the data range, in the chosen norm
    query: int  # the query that found it (1-based)
    score: float
    float_class: int | None = None
    quant_class: int | None = None
    operators: list[str] = field(default_factory=list)  # what changed the seed into it, in order


@dataclass
class SearchResult:
    found: list[Found]
    queries: int
    elapsed_s: float
    stopped: str  # budget | time | seeds | first | interrupted
    complete: bool
    objective: dict
    operators: dict  # name -> {"tries", "improved", "flips"}
    seeds_tried: int
    error: EdgeqError | BaseException | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def first_flip_query(self) -> int | None:
        return min((f.query for f in self.found), default=None)

    def summary(self) -> dict:
        return {"found": len(self.found), "queries": self.queries, "elapsed_s": round(self.elapsed_s, 3),
                "stopped": self.stopped, "complete": self.complete, "first_flip_query": self.first_flip_query,
                "seeds_tried": self.seeds_tried, "objective": self.objective, "operators": self.operators,
                "queries_per_s": round(self.queries / self.elapsed_s, 1) if self.elapsed_s > 0 else None,
                "distances": [round(f.distance, 6) for f in self.found], "notes": list(self.notes),
                **({"error": str(self.error)} if self.error is not None else {})}


class OperatorChain:
    """The Metropolis–Hastings chain over operators (see the module docstring)."""

    def __init__(self, operators: list[Operator], rng: np.random.Generator, p: float | None = None):
        if not operators:
            raise ConfigError("no mutation operator applies to these inputs")
        self.operators = operators
        self.rng = rng
        self.p = p if p is not None else 1.0 / len(operators)
        self.tries = np.zeros(len(operators))
        self.improved = np.zeros(len(operators))
        self.flips = np.zeros(len(operators), dtype=int)
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

    def record(self, k: int, improved: bool, flipped: bool) -> None:
        self.tries[k] += 1
        self.improved[k] += bool(improved)
        self.flips[k] += bool(flipped)

    def stats(self) -> dict:
        return {op.name: {"tries": int(t), "improved": int(i), "flips": int(f)}
                for op, t, i, f in zip(self.operators, self.tries, self.improved, self.flips) if t}


@dataclass
class _Lineage:
    seed: int  # position in the seed order
    row: int  # data row
    point: list[np.ndarray]  # float64 samples, one per input
    score: float
    stale: int = 0
    flips: int = 0
    history: list[str] = field(default_factory=list)


def relative_distance(x: np.ndarray, seed: np.ndarray, span: np.ndarray, norm: str) -> float:
    """How far one sample is from its seed, relative to the data range (per element span)."""
    d = (np.asarray(x, np.float64) - np.asarray(seed, np.float64)) / np.broadcast_to(span[0], np.shape(seed))
    if norm == "linf":
        return float(np.max(np.abs(d))) if d.size else 0.0
    return float(np.sqrt(np.mean(d * d))) if d.size else 0.0


def project(x: np.ndarray, seed: np.ndarray, space: Space, dtype: np.dtype) -> np.ndarray:
    """``x`` moved into the distance ball around ``seed`` and the data range, in the data's dtype."""
    span = np.broadcast_to(space.span[0], seed.shape)
    bound = space.epsilon * SAFETY
    delta = x - seed
    if space.norm == "linf":
        delta = np.clip(delta, -bound * span, bound * span)
    else:
        r = np.sqrt(np.mean((delta / span) ** 2)) if delta.size else 0.0
        if r > bound:
            delta = delta * (bound / r)
    lo, hi = np.broadcast_to(space.lo[0], seed.shape), np.broadcast_to(space.hi[0], seed.shape)
    moved = np.clip(seed + delta, np.minimum(lo, seed), np.maximum(hi, seed))
    if np.issubdtype(np.dtype(dtype), np.integer):  # round towards the seed: never out of the ball
        moved = seed + np.trunc(moved - seed)
    return to_dtype(moved[None], dtype)[0]


def search(evaluator, data: list[np.ndarray], spaces: list[Space], operators: list[Operator],
           config: SearchConfig, output_names: list[str], info=None, progress=None) -> SearchResult:
    """Search for disagreements from the samples of ``data`` (one array per model input)."""
    config.check()
    n = len(data[0])
    if n == 0:
        raise ConfigError("the data has no samples to start a search from")
    rng = np.random.default_rng([config.seed, 0x5EA])
    chain = OperatorChain(operators, rng, config.rank_p)
    order = rng.permutation(n)[:config.max_seeds]
    dtypes = [a.dtype for a in data]
    started = time.monotonic()
    state = {"queries": 0, "next_seed": 0}
    found: list[Found] = []
    objective: Objective | None = None
    lineages: list[_Lineage] = []
    stopped, error = "budget", None

    def out_of_time() -> bool:
        return config.time_budget_s is not None and time.monotonic() - started >= config.time_budget_s

    def take_seeds(count: int) -> list[_Lineage]:
        taken = []
        while len(taken) < count and state["next_seed"] < len(order):
            row = int(order[state["next_seed"]])
            taken.append(_Lineage(state["next_seed"], row, [np.asarray(a[row], np.float64) for a in data], -np.inf))
            state["next_seed"] += 1
        return taken

    def evaluate(points: list[list[np.ndarray]]) -> tuple[Judged, list[list[np.ndarray]]]:
        nonlocal objective
        batch = [np.stack([to_dtype(p[k][None], dtypes[k])[0] for p in points]) for k in range(len(data))]
        f, q = evaluator.evaluate(batch)
        state["queries"] += len(points)
        if objective is None:
            objective = choose_objective(output_names, f, q, config.output, info)
        if progress:
            progress(state["queries"], config.budget)
        return objective.judge(f, q), batch

    def record(lineage: _Lineage, batch, i: int, judged: Judged, query: int) -> None:
        arrays = [b[i].copy() for b in batch]
        distance = max(relative_distance(a, data[k][lineage.row], spaces[k].span, spaces[k].norm)
                       for k, a in enumerate(arrays))
        found.append(Found(arrays, lineage.row, distance, query, float(judged.score[i]),
                           None if judged.float_class is None else int(judged.float_class[i]),
                           None if judged.quant_class is None else int(judged.quant_class[i]),
                           list(lineage.history)))
        lineage.flips += 1

    try:
        pending = take_seeds(min(config.pool, config.budget))
        while True:
            if out_of_time():
                stopped = "time"
                break
            room = config.budget - state["queries"]
            if room <= 0:
                stopped = "budget"
                break
            # new seeds are evaluated as they are (distance 0) before any mutation
            fresh = pending[:room]
            pending = pending[room:]
            candidates, moves = [], []
            for lineage in lineages[:room - len(fresh)]:
                k = chain.choose()
                op = chain.operators[k]
                point = []
                for j, space in enumerate(spaces):
                    strength = float(rng.uniform(0.05, 1.0))
                    changed = op.apply(lineage.point[j][None], strength, space, rng)[0]
                    point.append(project(changed, data[j][lineage.row].astype(np.float64), space, dtypes[j])
                                 .astype(np.float64))
                candidates.append(point)
                moves.append((lineage, k))
            points = [f.point for f in fresh] + candidates
            if not points:
                stopped = "seeds"
                break
            judged, batch = evaluate(points)
            base = state["queries"] - len(points)
            for i, lineage in enumerate(fresh):
                lineage.score = float(judged.score[i])
                if judged.flip[i]:
                    record(lineage, batch, i, judged, base + i + 1)
                if lineage.flips < config.per_seed:
                    lineages.append(lineage)
            retired = set()
            for j, (lineage, k) in enumerate(moves):
                i = len(fresh) + j
                score, flipped = float(judged.score[i]), bool(judged.flip[i])
                chain.record(k, score > lineage.score, flipped)
                if score >= lineage.score:
                    lineage.stale = 0 if score > lineage.score else lineage.stale + 1
                    lineage.point, lineage.score = candidates[j], score
                    lineage.history = lineage.history + [chain.operators[k].name]
                else:
                    lineage.stale += 1
                if flipped:
                    record(lineage, batch, i, judged, base + i + 1)
                if lineage.flips >= config.per_seed or lineage.stale >= config.patience:
                    retired.add(id(lineage))
            if found and config.stop_at_first:
                stopped = "first"
                break
            lineages = [lin for lin in lineages if id(lin) not in retired]
            pending += take_seeds(config.pool - len(lineages) - len(pending))
            if not lineages and not pending:
                stopped = "seeds"
                break
    except KeyboardInterrupt as exc:
        stopped, error = "interrupted", exc
    except EdgeqError as exc:
        if exc.exit_code != 3:
            raise
        stopped, error = "interrupted", exc
    elapsed = time.monotonic() - started
    notes = []
    if stopped == "seeds":
        notes.append(f"every seed was searched ({state['next_seed']} of {n} data samples, at most "
                     f"{config.max_seeds}) before the budget ran out")
    return SearchResult(found, state["queries"], elapsed, stopped, stopped != "interrupted",
                        objective.describe() if objective else {}, chain.stats(), state["next_seed"], error, notes)
