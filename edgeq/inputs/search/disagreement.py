"""Disagreement search: inputs near the user's data on which float and quantized models differ.

Black-box: only the two models' outputs are used. A pool of seed lineages is searched at
once; each round proposes one candidate per lineage and evaluates them in one batch (so a
device's agent sees one request per round). Every candidate lies in the ball of radius
``epsilon`` around its seed (L∞: every element within ε × the data range; L2: the
root-mean-square change within ε × the range) and in the data's range (``project``). A
lineage moves to a candidate that scores at least as high (``objective``); a flip is
recorded with its seed and distance, and the seed is retired after ``per_seed`` flips. A
lineage that stops improving for ``patience`` rounds makes room for the next seed.

A candidate comes from one of these moves (the first that applies):

- **boundary line search** (classification outputs). When a candidate's *float* class
  differs from its lineage's (it crossed the float decision boundary without a flip), the
  segment between the two points is kept as a bracket. Along it, the float and the quantized
  models' log-score differences between the two classes are close to linear, and they cross
  zero at slightly different places: the inputs between the two zeros are exactly the
  disagreements. Each step evaluates the point halfway between the two linearly interpolated
  zeros (a secant step on both models at once) and replaces the bracket's end on the same
  float side, for at most ``line_steps`` steps. The segment lies in the ball (it is convex).
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

A seed is never evaluated unchanged: its first query is already a mutation of it (a
chance of a flip, and its score tells how close the seed is). With ``screen`` < 1 a new
lineage is kept only if that first score is among the best ``screen`` fraction of the first
scores seen so far (a seed far from any decision boundary is dropped after one query), as
long as unused seeds remain.

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
    patience: int = 8
    rank_p: float | None = None  # None: 1 / number of operators
    stop_at_first: bool = False
    output: str | None = None
    screen: float = 0.1  # keep a new seed only if its first score is in this best fraction (1: keep all)
    line_steps: int = 10  # boundary line-search steps per bracket
    directed: bool = True  # line search, momentum and toward-another-class moves (False: operators only)

    def check(self) -> None:
        if isinstance(self.budget, bool) or not isinstance(self.budget, int) or self.budget <= 0:
            raise ConfigError(f"--budget must be a positive number of queries, got {self.budget!r}")
        if self.time_budget_s is not None and not (self.time_budget_s > 0 and np.isfinite(self.time_budget_s)):
            raise ConfigError(f"--time-budget must be a positive number of seconds, got {self.time_budget_s!r}")
        if not (self.epsilon > 0 and np.isfinite(self.epsilon)):
            raise ConfigError(f"--distance must be above 0 (a fraction of the data range), got {self.epsilon!r}")
        if self.norm not in NORMS:
            raise ConfigError(f"--norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if not 0 < self.screen <= 1:
            raise ConfigError(f"screen must be in (0, 1], got {self.screen!r}")
        for name in ("pool", "max_seeds", "per_seed", "patience", "line_steps"):
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


@dataclass
class _Bracket:
    """The far end of a segment that crosses the float decision boundary (the near end is the lineage's point)."""

    point: list[np.ndarray]
    klass: int
    scores: tuple  # (float scores, quantized scores) per class at the far end
    steps: int = 0
    sides: list = field(default_factory=list)  # which end each step replaced ("a" near, "b" far)


@dataclass
class _Lineage:
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
    bracket: _Bracket | None = None
    partners: set = field(default_factory=set)  # data rows already tried as toward-class targets
    screened: bool = False
    seed_first: int = -1  # index of its first score in the search's list of first scores


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


def line_t(near: tuple, far: tuple, a: int, b: int, sides: list) -> float:
    """Where on the segment near (t = 0, float class a) → far (t = 1, float class b) to look next: halfway
    between the zeros of the two models' linearly interpolated a − b score differences."""
    def zero(at_near, at_far):
        g0, g1 = at_near[a] - at_near[b], at_far[a] - at_far[b]
        return g0 / (g0 - g1) if np.isfinite(g0) and np.isfinite(g1) and g0 != g1 else 0.5

    t = 0.5 * (zero(near[0], far[0]) + zero(near[1], far[1]))
    if not np.isfinite(t):
        t = 0.5
    if len(sides) >= 2 and sides[-1] == sides[-2]:  # the same end moved twice: the guess is lopsided
        t = 0.5 * (t + 0.5)
    return float(np.clip(t, LINE_EDGE, 1.0 - LINE_EDGE))


class _MoveStats:
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


def search(evaluator, data: list[np.ndarray], spaces: list[Space], operators: list[Operator],
           config: SearchConfig, output_names: list[str], info=None, progress=None) -> SearchResult:
    """Search for disagreements from the samples of ``data`` (one array per model input)."""
    config.check()
    n = len(data[0])
    if n == 0:
        raise ConfigError("the data has no samples to start a search from")
    rng = np.random.default_rng([config.seed, 0x5EA])
    chain = OperatorChain(operators, rng, config.rank_p)
    moves = _MoveStats()
    order = rng.permutation(n)[:config.max_seeds]
    dtypes = [a.dtype for a in data]
    started = time.monotonic()
    state = {"queries": 0, "next_seed": 0}
    found: list[Found] = []
    objective: Objective | None = None
    lineages: list[_Lineage] = []
    first_scores: list[float] = []
    classes: dict[int, int] = {}  # data row -> float class near it (from its lineage's evaluations)
    stopped, error = "budget", None

    def out_of_time() -> bool:
        return config.time_budget_s is not None and time.monotonic() - started >= config.time_budget_s

    def take_seeds(count: int) -> list[_Lineage]:
        taken = []
        while len(taken) < count and state["next_seed"] < len(order):
            row = int(order[state["next_seed"]])
            origin = [np.asarray(a[row], np.float64) for a in data]
            taken.append(_Lineage(state["next_seed"], row, origin, list(origin)))
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

    def record(lineage: _Lineage, batch, i: int, judged: Judged, query: int, history: list[str]) -> None:
        arrays = [b[i].copy() for b in batch]
        distance = max(relative_distance(a, data[k][lineage.row], spaces[k].span, spaces[k].norm)
                       for k, a in enumerate(arrays))
        found.append(Found(arrays, lineage.row, distance, query, float(judged.score[i]),
                           None if judged.float_class is None else int(judged.float_class[i]),
                           None if judged.quant_class is None else int(judged.quant_class[i]),
                           list(history)))
        lineage.flips += 1

    def placed(values: list[np.ndarray], lineage: _Lineage) -> list[np.ndarray]:
        return [project(v, lineage.origin[j], space, dtypes[j]).astype(np.float64)
                for j, (v, space) in enumerate(zip(values, spaces))]

    def partner(lineage: _Lineage) -> int | None:
        """The nearest data row evaluated so far that the float model puts in another class."""
        rows = [r for r, c in classes.items() if c != lineage.klass and r not in lineage.partners]
        if not rows:
            return None
        far = np.zeros(len(rows))
        for j, space in enumerate(spaces):
            span = np.broadcast_to(space.span[0], lineage.origin[j].shape)
            others = np.stack([np.asarray(data[j][r], np.float64) for r in rows])
            far += np.mean(((others - lineage.origin[j]) / span) ** 2, axis=tuple(range(1, others.ndim)))
        return rows[int(np.argmin(far))]

    def moved(candidate: list[np.ndarray], lineage: _Lineage) -> bool:
        return any(not np.array_equal(c, p) for c, p in zip(candidate, lineage.point))

    def propose(lineage: _Lineage) -> tuple[list[np.ndarray], str, int | None]:
        """(candidate, move name, operator index or None) for one lineage."""
        if lineage.bracket is not None:
            br = lineage.bracket
            t = line_t(lineage.scores, br.scores, lineage.klass, br.klass, br.sides)
            return placed([a + t * (b - a) for a, b in zip(lineage.point, br.point)], lineage), LINE, None
        if config.directed and lineage.evaluated:
            if lineage.direction is not None and rng.random() < 0.5:
                step = placed([p + lineage.momentum * d for p, d in zip(lineage.point, lineage.direction)], lineage)
                if moved(step, lineage):
                    return step, MOMENTUM, None
                lineage.direction = None  # the ball's edge: nothing left in that direction
            if lineage.klass is not None:
                chance = TOWARD_FIRST if not lineage.partners else TOWARD_LATER
                if rng.random() < chance:
                    target = partner(lineage)
                    if target is not None:
                        lineage.partners.add(target)
                        step = placed([np.asarray(a[target], np.float64) for a in data], lineage)
                        if moved(step, lineage):
                            return step, TOWARD, None
        k = chain.choose()
        op = chain.operators[k]
        point = [op.apply(lineage.point[j][None], chain.strength(k), space, rng)[0] for j, space in enumerate(spaces)]
        return placed(point, lineage), op.name, k

    def judged_at(judged: Judged, i: int) -> tuple[int | None, tuple | None]:
        if judged.float_class is None or judged.float_scores is None:
            return None, None
        return int(judged.float_class[i]), (judged.float_scores[i], judged.quant_scores[i])

    def settle(lineage: _Lineage, candidate, name: str, k: int | None, judged: Judged, i: int) -> bool:
        """Update one lineage with its candidate's result; True when the lineage should retire."""
        score, flipped = float(judged.score[i]), bool(judged.flip[i])
        klass, scores = judged_at(judged, i)
        history = lineage.history + [name]
        if not lineage.evaluated:  # the seed's first query: its mutation is where the lineage starts
            if k is not None:
                chain.record(k, False, flipped)
            lineage.point, lineage.score, lineage.klass, lineage.scores = candidate, score, klass, scores
            lineage.evaluated, lineage.history = True, history
            lineage.seed_first = len(first_scores)
            first_scores.append(score)
            if klass is not None:
                classes.setdefault(lineage.row, klass)
            return False
        improved = score > lineage.score
        if name == LINE:
            br = lineage.bracket
            moves.record(LINE, improved, flipped)
            if flipped:
                lineage.bracket = None
            elif klass == lineage.klass:
                lineage.point, lineage.score, lineage.scores = candidate, score, scores
                lineage.history = history
                br.sides.append("a")
            else:
                br.point, br.klass, br.scores = candidate, klass, scores
                br.sides.append("b")
            if lineage.bracket is not None:
                br.steps += 1
                if br.steps >= config.line_steps:
                    lineage.bracket = None
                    lineage.stale += config.line_steps
            return False
        crossed = (config.directed and not flipped and klass is not None and lineage.klass is not None
                   and klass != lineage.klass)
        if k is not None:
            chain.record(k, improved or crossed, flipped)
        else:
            moves.record(name, improved or crossed, flipped)
        if crossed:
            lineage.bracket = _Bracket(candidate, klass, scores)
            lineage.stale = 0
        elif score >= lineage.score:
            if improved:
                step = [c - p for c, p in zip(candidate, lineage.point)]
                lineage.momentum = min(2.0 * lineage.momentum, MOMENTUM_MAX) if name == MOMENTUM else 1.0
                lineage.direction, lineage.stale = step, 0
            else:
                lineage.stale += 1
            lineage.point, lineage.score, lineage.scores = candidate, score, scores
            lineage.history = history
        else:
            lineage.stale += 1
            if name == MOMENTUM:
                lineage.direction, lineage.momentum = None, 1.0
        return lineage.stale >= config.patience

    try:
        while True:
            if out_of_time():
                stopped = "time"
                break
            room = config.budget - state["queries"]
            if room <= 0:
                stopped = "budget"
                break
            lineages += take_seeds(config.pool - len(lineages))
            batch_of = lineages[:room]
            if not batch_of:
                stopped = "seeds"
                break
            proposals = [propose(lineage) for lineage in batch_of]
            judged, batch = evaluate([p[0] for p in proposals])
            base = state["queries"] - len(batch_of)
            retired = set()
            for i, (lineage, (candidate, name, k)) in enumerate(zip(batch_of, proposals)):
                flipped = bool(judged.flip[i])
                history = lineage.history + [name]
                if settle(lineage, candidate, name, k, judged, i):
                    retired.add(id(lineage))
                if flipped:
                    record(lineage, batch, i, judged, base + i + 1, history)
                    if lineage.flips >= config.per_seed:
                        retired.add(id(lineage))
            if found and config.stop_at_first:
                stopped = "first"
                break
            lineages = [lin for lin in lineages if id(lin) not in retired]
            if config.screen < 1 and len(first_scores) >= config.pool:
                # a new seed stays only if its first score is among the best so far, while unused seeds remain
                cut = float(np.quantile(first_scores, 1.0 - config.screen))
                for lin in lineages:
                    if lin.evaluated and not lin.screened:
                        lin.screened = True
                        if (state["next_seed"] < len(order) and lin.bracket is None and not lin.flips
                                and first_scores[lin.seed_first] < cut):
                            retired.add(id(lin))
                lineages = [lin for lin in lineages if id(lin) not in retired]
            if not lineages and state["next_seed"] >= len(order):
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
                        objective.describe() if objective else {}, {**chain.stats(), **moves.stats()},
                        state["next_seed"], error, notes)
