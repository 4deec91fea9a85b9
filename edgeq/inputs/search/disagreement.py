"""Disagreement search: inputs near the user's data on which float and quantized models differ.

Black-box: only the two models' outputs are used. Seed lineages are searched at once, in
``lanes`` groups of ``pool``: each lane proposes one candidate per lineage and sends them
as one batch (a device's agent sees one request per batch). With two lanes or more, while
a device evaluates one lane's batch the host settles and proposes the next lane's, so the
device's compute and the wire's round trip hide behind the host's own work (default one
lane: on a 2-core host running its own agent the host's CPU is the limit, and a second
lane gained nothing there; on the emulated arm64 board it gained 15–20 %). The order of
every proposal, and so every random draw, is the same whatever the evaluator, and so are
the results. Every candidate lies in the
ball of radius ``epsilon`` around its seed (``ball``). A lineage moves to a candidate that
scores at least as high (``objective``); the moves are in ``moves``. A flip is recorded
with its seed and distance, and the seed is retired after ``per_seed`` flips. A lineage
that stops improving for ``patience`` batches (``climb_patience`` for a climbing one)
makes room for the next seed.

Lineages are of two kinds (``strategy``): boundary-seeking ones (operators, directed moves,
line search across float boundaries) for models whose quantization error lies everywhere,
and climbing ones (vertices of the ball) for models whose error hides in a small region.
Each crossing of a float boundary shows, for free, whether the two models' boundaries differ
there; the share of climbing lineages follows that evidence, and a crossing whose boundaries
coincide gets no line search (it can never flip).

A seed is never evaluated unchanged: its first query is already a mutation of it (a
chance of a flip, and its score tells how close the seed is). With ``screen`` < 1 a new
seeking lineage is kept only if that first score is among the best ``screen`` fraction of the
first scores seen so far (a seed far from any decision boundary is dropped after one query),
as long as unused seeds remain. When every seed has been tried they are used again, in the
same order (but not those with ``per_seed`` flips): the search spends its whole budget.

A candidate on which the float model gives NaN or Inf (on any output) is unusable: the
reference is undefined there, so it is neither a disagreement nor an agreement. It costs its
query, moves nothing and counts toward its lineage's patience; the search counts such
candidates and says so (``SearchResult.unusable``).

Every random draw comes from one generator seeded by ``seed``: the same data, models and
seed give the same candidates, in the same order, on any evaluator that returns the same
outputs. A query is one input evaluated by both models; ``budget`` caps them exactly. A
search that stops (budget, time, first flip) still settles the batches already in flight;
one that is interrupted (Ctrl-C, a lost device) keeps what the batches before it found.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from edgeq.errors import ConfigError, EdgeqError
from edgeq.inputs.risky.ranges import to_dtype
from edgeq.inputs.search.ball import NORMS, project, relative_distance
from edgeq.inputs.search.evaluators import pipelined
from edgeq.inputs.search.moves import (LINE, MOMENTUM, MOMENTUM_MAX, TOWARD, TOWARD_FIRST, TOWARD_LATER, Bracket,
                                       Lineage, MoveStats, OperatorChain, line_t)
from edgeq.inputs.search.objective import Judged, Objective, choose_objective
from edgeq.inputs.search.operators import Operator, Space
from edgeq.inputs.search.results import Found, SearchResult
from edgeq.inputs.search.settings import BUDGET_HELP, DISTANCE, QUERIES, TIME_BUDGET, check_settings, setting
from edgeq.limits import Limits
from edgeq.inputs.search.strategy import (CLIMB, CLIMB_STEP, FLIP_MIN, GAP_GAIN, SEEK, Split, climb_step, has_gap,
                                          quant_gap)

__all__ = ["SearchConfig", "Found", "SearchResult", "search", "project", "relative_distance"]


@dataclass
class SearchConfig:
    """The disagreement search's settings; the command-line ones carry their flag, help and limits."""

    budget: int = setting(2000, "--budget", BUDGET_HELP, limits=QUERIES, words="a positive number of queries")
    time_budget_s: float | None = setting(None, "--time-budget", **TIME_BUDGET)
    epsilon: float = setting(DISTANCE, "--distance", "How far a found input may be from its seed, as a fraction of the "
                             "data range.", limits=Limits(0, low_open=True), words="above 0 (a fraction of the data range)")
    norm: str = setting("linf", "--norm", "linf: every element within the distance; l2: the root-mean-square "
                        "change within it.", choices=NORMS)
    seed: int = setting(0, "--seed", limits=Limits(0, whole=True))
    pool: int = setting(8, None, limits=QUERIES)  # lineages per batch (rows per request)
    lanes: int = setting(1, "--lanes", "Batches in flight: with 2 a device evaluates one while this host prepares "
                         "the next (hides the round trip). It changes which candidates are tried; the host and a "
                         "device still agree.", limits=Limits(1, 8, whole=True))
    max_seeds: int = setting(256, "--seeds", "Data samples used as seeds at most (a random choice of them).",
                             limits=QUERIES)
    per_seed: int = setting(1, "--per-seed", "Disagreements kept per seed before moving on.", limits=QUERIES)
    patience: int = setting(8, None, limits=QUERIES)
    rank_p: float | None = None  # None: 1 / number of operators
    stop_at_first: bool = False
    output: str | None = None
    # keep a new seed only if its first score is in this best fraction (1: keep all)
    screen: float = setting(0.1, None, limits=Limits(0, 1, low_open=True))
    line_steps: int = setting(10, None, limits=QUERIES)  # boundary line-search steps per bracket
    directed: bool = True  # line search, momentum and toward-another-class moves (False: operators only)
    # share of climbing lineages (``strategy``); None: adapt it to the crossings seen
    climb: float | None = setting(None, None, limits=Limits(0, 1))
    climb_patience: int = setting(30, None, limits=QUERIES)  # a climbing lineage's patience (steps without a gain)

    def check(self) -> None:
        check_settings(self)


@dataclass
class _InFlight:
    """One lane's batch, sent and not yet settled."""

    lane: int
    lineages: list[Lineage]
    proposals: list[tuple]  # (candidate, move name, operator index or None) per lineage
    batch: list[np.ndarray]  # one array per model input, in the data's dtypes
    first_query: int  # the number of the batch's first query, less 1
    ticket: object


class _Search:
    """One search's state; ``run`` drives its lanes until a budget, the seeds or an interruption ends it."""

    def __init__(self, evaluator, data, spaces, operators, config: SearchConfig, output_names, info, progress):
        self.evaluator, self.data, self.spaces = pipelined(evaluator), data, spaces
        self.config, self.output_names, self.info, self.progress = config, output_names, info, progress
        self.rng = np.random.default_rng([config.seed, 0x5EA])
        self.chain = OperatorChain(operators, self.rng, config.rank_p)
        self.moves = MoveStats()
        self.split = Split(config.pool * config.lanes, config.climb)
        self.order = self.rng.permutation(len(data[0]))[:config.max_seeds]
        self.dtypes = [a.dtype for a in data]
        self.started = time.monotonic()
        self.queries = self.submitted = self.next_seed = 0
        self.unusable = 0  # candidates on which the float model gave NaN or Inf
        self.found: list[Found] = []
        self.objective: Objective | None = None
        self.lanes: list[list[Lineage]] = [[] for _ in range(config.lanes)]
        self.in_flight: deque[_InFlight] = deque()
        self.first_scores: list[float] = []
        self.classes: dict[int, int] = {}  # data row -> float class near it (from its lineage's evaluations)
        self.row_flips: dict[int, int] = {}  # data row -> flips found from it (a row with per_seed is not reused)
        self.stopped: str | None = None

    # ------------------------------------------------------------------ the loop
    def run(self) -> SearchResult:
        error = None
        try:
            for lane in range(self.config.lanes):
                self._launch(lane)
            while self.in_flight:
                flight = self.in_flight.popleft()
                self._settle_batch(flight, self.evaluator.collect(flight.ticket))
                if self.found and self.config.stop_at_first:
                    self.stopped = self.stopped or "first"
                if self.stopped is None:
                    self._launch(flight.lane)
            self.stopped = self.stopped or "seeds"
        except KeyboardInterrupt as exc:
            self.stopped, error = "interrupted", exc
        except EdgeqError as exc:
            if exc.exit_code != 3:
                raise
            self.stopped, error = "interrupted", exc
        return self._result(error)

    def _launch(self, lane: int) -> None:
        """Fill ``lane`` with seeds, propose one candidate per lineage and send them (or note why not)."""
        if self.config.time_budget_s is not None and time.monotonic() - self.started >= self.config.time_budget_s:
            self.stopped = self.stopped or "time"
            return
        room = self.config.budget - self.submitted
        if room <= 0:
            self.stopped = self.stopped or "budget"
            return
        self._rebalance(lane)
        self.lanes[lane] += self._take_seeds(self.config.pool - len(self.lanes[lane]), lane)
        lineages = self.lanes[lane][:room]
        if not lineages:
            return  # this lane is done; the search ends when no lane has a batch in flight
        proposals = [self._propose(lineage) for lineage in lineages]
        batch = [np.stack([to_dtype(p[0][k][None], self.dtypes[k])[0] for p in proposals])
                 for k in range(len(self.data))]
        self.in_flight.append(_InFlight(lane, lineages, proposals, batch, self.submitted,
                                        self.evaluator.submit(batch)))
        self.submitted += len(lineages)

    def _settle_batch(self, flight: _InFlight, outputs) -> None:
        f, q = outputs
        self.queries += len(flight.lineages)
        usable = finite_rows(f, len(flight.lineages))
        self.unusable += int(np.count_nonzero(~usable))
        rows = np.flatnonzero(usable)
        judged_row = {int(i): j for j, i in enumerate(rows)}  # batch row -> row of the judged (usable) outputs
        f, q = [np.asarray(a)[rows] for a in f], [np.asarray(a)[rows] for a in q]
        if self.objective is None and len(rows):
            self.objective = choose_objective(self.output_names, f, q, self.config.output, self.info)
        if self.progress:
            self.progress(self.queries, self.config.budget)
        judged = self.objective.judge(f, q) if len(rows) else None
        retired = set()
        for i, (lineage, (candidate, name, k)) in enumerate(zip(flight.lineages, flight.proposals)):
            if i not in judged_row:
                if self._unusable(lineage, name, k):
                    retired.add(id(lineage))
                continue
            j = judged_row[i]
            flipped = bool(judged.flip[j])
            history = lineage.history + [name]
            if self._settle(lineage, candidate, name, k, judged, j):
                retired.add(id(lineage))
            if flipped:
                if self.row_flips.get(lineage.row, 0) < self.config.per_seed:  # two lineages of a row may flip at once
                    self._record(lineage, flight.batch, i, judged, j, flight.first_query + i + 1, history)
                if self.row_flips.get(lineage.row, 0) >= self.config.per_seed:
                    retired.add(id(lineage))
        retired |= self._screened(flight.lineages)
        self.lanes[flight.lane] = [lin for lin in self.lanes[flight.lane] if id(lin) not in retired]

    def _screened(self, lineages: list[Lineage]) -> set:
        """A new seed stays only if its first score is among the best so far, while unused seeds remain."""
        if self.config.screen >= 1 or len(self.first_scores) < self.config.pool * self.config.lanes:
            return set()
        cut = float(np.quantile(self.first_scores, 1.0 - self.config.screen))
        dropped = set()
        for lin in lineages:
            if lin.evaluated and not lin.screened:
                lin.screened = True
                if lin.mode == CLIMB:  # a climber's first score says little about the slope it may find
                    continue
                if (self.next_seed < len(self.order) and lin.bracket is None and not lin.flips
                        and self.first_scores[lin.seed_first] < cut):
                    dropped.add(id(lin))
        return dropped

    def _take_seeds(self, count: int, lane: int) -> list[Lineage]:
        """New lineages: unused seeds first, then (every seed tried) the seeds again, in the same order, except
        those with ``per_seed`` flips. Each is climbing or seeking as the split asks (``strategy``)."""
        taken, n = [], len(self.order)
        climbing = sum(lin.mode == CLIMB for lin in self.lanes[lane])
        for _ in range(n):
            if len(taken) >= count:
                break
            row = int(self.order[self.next_seed % n])
            self.next_seed += 1
            if self.row_flips.get(row, 0) >= self.config.per_seed:
                continue
            origin = [np.asarray(a[row], np.float64) for a in self.data]
            mode = CLIMB if climbing < self._climbers(lane) else SEEK
            climbing += mode == CLIMB
            taken.append(Lineage(self.next_seed - 1, row, origin, list(origin), mode=mode))
        return taken

    def _climbers(self, lane: int) -> int:
        """How many of this lane's lineages should climb (none with ``directed`` off, unless ``climb`` says)."""
        if not self.config.directed and self.config.climb is None:
            return 0
        return self.split.climbers(lane, self.config.lanes)

    def _rebalance(self, lane: int) -> None:
        """Retire the climbers a lane has beyond the split's count (the one that gained least first)."""
        climbers = [lin for lin in self.lanes[lane] if lin.mode == CLIMB and not lin.bracket]
        extra = len(climbers) - self._climbers(lane)
        if extra > 0:
            gone = {id(lin) for lin in sorted(climbers, key=lambda lin: -lin.stale)[:extra]}
            self.lanes[lane] = [lin for lin in self.lanes[lane] if id(lin) not in gone]

    def _record(self, lineage: Lineage, batch, i: int, judged: Judged, j: int, query: int,
                history: list[str]) -> None:
        """Keep batch row ``i`` (row ``j`` of ``judged``) as a found input."""
        arrays = [b[i].copy() for b in batch]
        distance = max(relative_distance(a, self.data[k][lineage.row], self.spaces[k].span, self.spaces[k].norm)
                       for k, a in enumerate(arrays))
        self.found.append(Found(arrays, lineage.row, distance, query, float(judged.score[j]),
                                None if judged.float_class is None else int(judged.float_class[j]),
                                None if judged.quant_class is None else int(judged.quant_class[j]),
                                list(history)))
        lineage.flips += 1
        self.row_flips[lineage.row] = self.row_flips.get(lineage.row, 0) + 1

    def _result(self, error) -> SearchResult:
        notes, seeds = [], min(self.next_seed, len(self.order))
        if self.stopped == "seeds":
            notes.append(f"every seed was searched ({seeds} of {len(self.data[0])} data samples, at most "
                         f"{self.config.max_seeds}) before the budget ran out")
        if self.unusable:
            notes.append(f"{self.unusable} of {self.queries} candidates were unusable: the float model gave NaN or "
                         "Inf on them, so they are neither disagreements nor agreements")
        return SearchResult(self.found, self.queries, time.monotonic() - self.started, self.stopped,
                            self.stopped != "interrupted", self.objective.describe() if self.objective else {},
                            {**self.chain.stats(), **self.moves.stats()}, seeds, error, notes, self.split.stats(),
                            self.unusable)

    # ------------------------------------------------------------------ proposing
    def _placed(self, values: list[np.ndarray], lineage: Lineage) -> list[np.ndarray]:
        return [project(v, lineage.origin[j], space, self.dtypes[j]).astype(np.float64)
                for j, (v, space) in enumerate(zip(values, self.spaces))]

    def _partner(self, lineage: Lineage) -> int | None:
        """The nearest data row evaluated so far that the float model puts in another class."""
        rows = [r for r, c in self.classes.items() if c != lineage.klass and r not in lineage.partners]
        if not rows:
            return None
        far = np.zeros(len(rows))
        for j, space in enumerate(self.spaces):
            span = np.broadcast_to(space.span[0], lineage.origin[j].shape)
            others = np.stack([np.asarray(self.data[j][r], np.float64) for r in rows])
            far += np.mean(((others - lineage.origin[j]) / span) ** 2, axis=tuple(range(1, others.ndim)))
        return rows[int(np.argmin(far))]

    @staticmethod
    def _moved(candidate: list[np.ndarray], lineage: Lineage) -> bool:
        return any(not np.array_equal(c, p) for c, p in zip(candidate, lineage.point))

    def _propose(self, lineage: Lineage) -> tuple[list[np.ndarray], str, int | None]:
        """(candidate, move name, operator index or None) for one lineage (``moves`` says which move when)."""
        if lineage.bracket is not None:
            br = lineage.bracket
            t = line_t(lineage.scores, br.scores, lineage.klass, br.klass, br.sides)
            return self._placed([a + t * (b - a) for a, b in zip(lineage.point, br.point)], lineage), LINE, None
        if lineage.mode == CLIMB:
            step = climb_step(lineage.point, lineage.origin, lineage.fraction, lineage.evaluated, self.spaces, self.rng)
            return self._placed(step, lineage), CLIMB_STEP, None
        directed = self._directed(lineage) if self.config.directed and lineage.evaluated else None
        if directed is not None:
            return directed
        k = self.chain.choose()
        op = self.chain.operators[k]
        point = [op.apply(lineage.point[j][None], self.chain.strength(k), space, self.rng)[0]
                 for j, space in enumerate(self.spaces)]
        return self._placed(point, lineage), op.name, k

    def _directed(self, lineage: Lineage) -> tuple | None:
        """A momentum or a toward-another-class move, when one is drawn and leads anywhere."""
        if lineage.direction is not None and self.rng.random() < 0.5:
            step = self._placed([p + lineage.momentum * d for p, d in zip(lineage.point, lineage.direction)],
                                lineage)
            if self._moved(step, lineage):
                return step, MOMENTUM, None
            lineage.direction = None  # the ball's edge: nothing left in that direction
        if lineage.klass is not None:
            chance = TOWARD_FIRST if not lineage.partners else TOWARD_LATER
            if self.rng.random() < chance:
                target = self._partner(lineage)
                if target is not None:
                    lineage.partners.add(target)
                    step = self._placed([np.asarray(a[target], np.float64) for a in self.data], lineage)
                    if self._moved(step, lineage):
                        return step, TOWARD, None
        return None

    # ------------------------------------------------------------------ settling
    @staticmethod
    def _judged_at(judged: Judged, i: int) -> tuple[int | None, tuple | None]:
        if judged.float_class is None or judged.float_scores is None:
            return None, None
        return int(judged.float_class[i]), (judged.float_scores[i], judged.quant_scores[i])

    def _settle(self, lineage: Lineage, candidate, name: str, k: int | None, judged: Judged, i: int) -> bool:
        """Update one lineage with its candidate's result; True when the lineage should retire."""
        score, flipped = float(judged.score[i]), bool(judged.flip[i])
        klass, scores = self._judged_at(judged, i)
        history = lineage.history + [name]
        if not lineage.evaluated:  # the seed's first query: its mutation is where the lineage starts
            if k is not None:
                self.chain.record(k, False, flipped)
            lineage.point, lineage.score, lineage.klass, lineage.scores = candidate, score, klass, scores
            lineage.evaluated, lineage.history, lineage.gap = True, history, quant_gap(scores, klass)
            lineage.seed_first = len(self.first_scores)
            self.first_scores.append(score)
            if klass is not None:
                self.classes.setdefault(lineage.row, klass)
            return False
        if name == LINE:
            self._settle_line(lineage, candidate, score, flipped, klass, scores, history)
            return False
        improved = score > lineage.score
        crossed = (self.config.directed and not flipped and klass is not None and lineage.klass is not None
                   and klass != lineage.klass)
        if crossed:  # a line search only where the two models' boundaries differ (``strategy``)
            crossed = has_gap(lineage.scores, scores, lineage.klass, klass)
            self.split.note(crossed)
        if k is not None:
            self.chain.record(k, improved or crossed, flipped)
        else:
            self.moves.record(name, improved or crossed, flipped)
        if crossed:
            lineage.bracket = Bracket(candidate, klass, scores)
            lineage.stale = 0
        elif score >= lineage.score:
            if klass is not None:
                lineage.klass = klass
            if improved:
                step = [c - p for c, p in zip(candidate, lineage.point)]
                lineage.momentum = min(2.0 * lineage.momentum, MOMENTUM_MAX) if name == MOMENTUM else 1.0
                lineage.direction, lineage.stale = step, 0
            else:
                lineage.stale += 1
            gap = quant_gap(scores, lineage.klass)
            if lineage.mode == CLIMB and gap > lineage.gap + GAP_GAIN:  # quantization error found: stay near
                lineage.fraction = max(FLIP_MIN, 0.5 * lineage.fraction)
            lineage.point, lineage.score, lineage.scores, lineage.gap = candidate, score, scores, gap
            lineage.history = history
        else:
            lineage.stale += 1
            if name == MOMENTUM:
                lineage.direction, lineage.momentum = None, 1.0
        return lineage.stale >= (self.config.climb_patience if lineage.mode == CLIMB else self.config.patience)

    def _unusable(self, lineage: Lineage, name: str, k: int | None) -> bool:
        """A candidate the float model gave NaN/Inf on: no move, no flip, a step without a gain; True to retire."""
        if k is not None:
            self.chain.record(k, False, False)
        elif lineage.evaluated:
            self.moves.record(name, False, False)
        if name == LINE and lineage.bracket is not None:
            lineage.bracket.steps += 1
            if lineage.bracket.steps >= self.config.line_steps:
                lineage.bracket = None
        lineage.stale += 1
        return lineage.stale >= (self.config.climb_patience if lineage.mode == CLIMB else self.config.patience)

    def _settle_line(self, lineage: Lineage, candidate, score, flipped, klass, scores, history) -> None:
        """A line-search step replaces the bracket's end on its float side, until a flip or ``line_steps``."""
        br = lineage.bracket
        self.moves.record(LINE, score > lineage.score, flipped)
        if flipped:
            lineage.bracket = None
            return
        if klass == lineage.klass:
            lineage.point, lineage.score, lineage.scores = candidate, score, scores
            lineage.history = history
            br.sides.append("a")
        else:
            br.point, br.klass, br.scores = candidate, klass, scores
            br.sides.append("b")
        br.steps += 1
        if br.steps >= self.config.line_steps:
            lineage.bracket = None
            lineage.stale += self.config.line_steps


def finite_rows(outputs: list[np.ndarray], rows: int) -> np.ndarray:
    """Per row (bool): every value of every output is finite (NaN or Inf anywhere makes the row unusable)."""
    usable = np.ones(rows, dtype=bool)
    for output in outputs:
        values = np.asarray(output).reshape(rows, -1)
        if values.dtype.kind in "fc":
            usable &= np.isfinite(values).all(axis=1)
    return usable


def search(evaluator, data: list[np.ndarray], spaces: list[Space], operators: list[Operator],
           config: SearchConfig, output_names: list[str], info=None, progress=None) -> SearchResult:
    """Search for disagreements from the samples of ``data`` (one array per model input)."""
    config.check()
    if len(data[0]) == 0:
        raise ConfigError("the data has no samples to start a search from")
    return _Search(evaluator, data, spaces, operators, config, output_names, info, progress).run()
