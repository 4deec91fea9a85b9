"""The ``boundary`` category: inputs on which the float model is least sure.

A quantized model disagrees with its float twin where the float decision is close:
the float top-1 − top-2 margin is the best known predictor of a flip. This category
takes such inputs from the data and makes more of them, with the float model's own
outputs (the float ``.tflite``, run on the host with ai-edge-litert):

- severity 1: the data's lowest-margin samples (the lowest ``LOW_FRACTION``, at least
  ``MIN_COUNT``: fewer could never bound a 2 % drop), per classification head;
- severities 2 and 3: interpolations x = a + t·(b − a) between two samples a, b the float
  model puts in different classes. t is first bisected to the float decision boundary
  (``BISECTION_STEPS`` halvings, each one float inference of a block of pairs), then
  moved back towards a, by another bisection, to the point whose float margin is
  ``LEVELS[s]`` × the data's median float margin: 10 % at severity 2, 3 % at severity 3.
  As many pairs as any other cell has samples (``max_per_category``, at most the data's
  size), shared out between the heads.

Why not the boundary itself: a point with margin ~0 changes class under any perturbation
at all, so its flip rate is ~50 % whatever the quantization does. Measured on the built-in
example (which loses nothing anywhere else): 49 % of the points at the boundary flip, 5 %
at 1 % of the median margin, none at 2 % or more. Such a cell would make every model
"catastrophic" and tell nothing. A flip at margin m says the quantized model moved the
decision by more than m: at 3 % of the typical margin, that is a real loss of precision.

The partner b of each a is the nearest (L2, each input scaled by its range) of
``CANDIDATES`` random samples of another float class: nearby pairs cross the boundary
close to the data, not in the middle of nowhere. With labels, pairs of the labelled
head are drawn from samples the float model gets right, and an interpolation (always on
a's side of the float boundary, so the float model gives a's class) carries a's label:
the accuracy drop there counts quantized decisions that leave the float one.
``source_index`` is a's index. The float margin of every sample is kept in the plan
(``BoundaryPlan.margins``) and summarised in the suite's note; an input set has no
per-sample tag for it (any other array in it is read as a model input).

Only the plan (indices and the t of each pair) is held; the samples are produced a
block at a time like every other cell.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeq.inputs.inputset import InputSet, input_specs, match_model_inputs
from edgeq.inputs.risky.ranges import to_dtype
from edgeq.models.modelinfo import read_model

BOUNDARY = "boundary"
LOW_FRACTION = 0.1     # severity 1: the lowest-margin tenth of the data ...
MIN_COUNT = 200        # ... but at least this many: with 0 flips in n, the 95 % upper bound is ~3.7/n, and
                       # below ~190 samples it stays over the 2 % "degraded" line, so a smaller cell could
                       # only ever give a tentative verdict, however robust the model
POOL_LIMIT = 5000      # ... found among at most this many samples scored by the float model
CANDIDATES = 16        # partners tried per interpolation; the nearest is kept
BISECTION_STEPS = 12   # the boundary's t to within 1/4096 of the path
MARGIN_STEPS = 10      # then t of each level's margin to within 1/1024 of the way back to a
LEVELS = {2: 0.1, 3: 0.03}  # severity → float margin of the interpolations, × the data's median margin
BATCH = 64             # rows per float inference on the host, at most (fewer for large samples: see ``rows``)
SEED_KEY = zlib.crc32(BOUNDARY.encode())


def describe() -> str:
    return ("near the float decision boundary: 1 the data's lowest float top-1 − top-2 margins "
            f"(lowest {LOW_FRACTION * 100:g}%); 2 and 3 interpolations between samples of different float "
            f"classes, bisected to the boundary and placed where the float margin is "
            f"{LEVELS[2] * 100:g}% and {LEVELS[3] * 100:g}% of the data's median margin")


@dataclass
class Head:
    """One classification output: its index, report name and how its class is read."""

    index: int
    name: str
    threshold: float | None = None  # a single score: its class is score > threshold
    scale: float = 1.0  # a single probability p: margin |p − (1 − p)| = 2 |p − 0.5|

    def read(self, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(class, margin) of each row; a non-finite row gets class -1 and margin inf."""
        f = out.reshape(len(out), -1).astype(np.float64)
        if f.shape[1] == 1:
            pred = (f[:, 0] > self.threshold).astype(np.int64)
            margin = self.scale * np.abs(f[:, 0] - self.threshold)
        else:
            top = np.partition(f, f.shape[1] - 2, axis=1)[:, -2:]
            pred, margin = f.argmax(axis=1), top[:, 1] - top[:, 0]
        finite = np.isfinite(f).all(axis=1)
        return np.where(finite, pred, -1), np.where(finite, margin, np.inf)


@dataclass
class BoundaryPlan:
    """What the boundary cells are made of. ``low``: data indices (severity 1); ``first``,
    ``second``: the pairs; ``t``: severity → where on a → b each pair's point lies
    (severities 2 and 3); ``margins``: severity → the float margin of each sample (of the
    head it was made for); ``typical``: the median float margin over the scored data."""

    low: np.ndarray
    first: np.ndarray
    second: np.ndarray
    t: dict[int, np.ndarray]
    margins: dict[int, np.ndarray]
    typical: float
    heads: list[str]
    skipped: str = ""  # why no interpolations were made, when none were
    # severity → share of the scored real samples whose float margin is as small as the cell's
    # (1: the share taken as lowest-margin; 2, 3: below LEVELS[s] × the median): what ties a
    # synthetic flip rate to the data
    shares: dict[int, float] = field(default_factory=dict)
    # what bisects the pairs not solved yet (``Bisection``); None: every t is in ``t``
    pending: "Bisection | None" = field(default=None, repr=False)
    levels: dict[int, int] = field(init=False)

    def __post_init__(self):
        self.levels = {1: len(self.low), 2: len(self.first), 3: len(self.first)}
        self.levels = {s: k for s, k in self.levels.items() if k}

    def solve(self, pairs=None) -> None:
        """Bisect ``pairs`` (indices into ``first``; None: all) not bisected yet: their t and margins at
        severities 2 and 3 are then in ``t`` and ``margins``. A suite built lazily bisects only the pairs a
        round makes rows of (each pair's bisection is its own: the same t whichever others run beside it)."""
        if self.pending is not None:
            self.pending.solve(self, np.arange(len(self.first)) if pairs is None else np.asarray(pairs))

    def solved(self) -> dict[str, np.ndarray] | None:
        """The pairs and where the ones bisected so far landed (their t and float margin per level): what a
        later plan of the same suite restores (``restore``) instead of bisecting again. None: no pairs."""
        if not len(self.first):
            return None
        pending = self.pending  # read once: the last solve sets it to None
        with pending.lock if pending is not None else contextlib.nullcontext():
            done = pending.done.copy() if pending is not None else np.ones(len(self.first), bool)
            saved = {"first": self.first, "second": self.second, "done": done}
            for s in LEVELS:
                saved[f"t{s}"], saved[f"margin{s}"] = self.t[s].copy(), self.margins[s].copy()
        return saved

    def restore(self, saved: Mapping[str, np.ndarray]) -> int:
        """Take the bisections ``saved`` (``solved()`` of a plan of the same suite) holds for pairs not bisected
        yet; returns how many. Nothing is taken from a save of other pairs, or with a t outside [0, 1]."""
        pending = self.pending
        if pending is None or not len(self.first):
            return 0
        try:
            done = np.asarray(saved["done"], dtype=bool)
            same = np.array_equal(saved["first"], self.first) and np.array_equal(saved["second"], self.second)
            values = {s: (np.asarray(saved[f"t{s}"], np.float64), np.asarray(saved[f"margin{s}"], np.float64))
                      for s in LEVELS}
        except (KeyError, ValueError, TypeError):
            return 0
        if not same or done.shape != self.first.shape or any(t.shape != done.shape for t, _ in values.values()):
            return 0
        if not all(np.all((t[done] >= 0) & (t[done] <= 1)) for t, _ in values.values()):
            return 0
        with pending.lock:
            take = done & ~pending.done
            for severity, (t, margin) in values.items():
                self.t[severity][take], self.margins[severity][take] = t[take], margin[take]
            pending.done |= take
            if pending.done.all():
                self.pending = None
        return int(take.sum())

    @property
    def bisected(self) -> int:
        """Pairs whose t is known (bisected here or restored)."""
        pending = self.pending
        return len(self.first) if pending is None else int(pending.done.sum())

    @property
    def n(self) -> int:
        return sum(self.levels.values())

    def parts(self, x: np.ndarray, step: int) -> Iterator[np.ndarray]:
        """The rows of one input array, severity by severity, a block of ``step`` rows at a time."""
        self.solve()
        for severity in self.levels:
            for lo in range(0, self.levels[severity], step):
                if severity == 1:
                    yield x[self.low[lo:lo + step]]
                else:
                    t = self.t[severity][lo:lo + step]
                    yield between(x[self.first[lo:lo + step]], x[self.second[lo:lo + step]], t, x.dtype)

    def take(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The boundary cells' ``rows`` (0-based within them, sorted) of one input array, as ``parts`` makes them."""
        out = np.empty((len(rows),) + x.shape[1:], x.dtype)
        start = 0
        for severity, k in self.levels.items():
            here = np.flatnonzero((rows >= start) & (rows < start + k))
            local = rows[here] - start
            if len(here) and severity == 1:
                out[here] = x[self.low[local]]
            elif len(here):
                self.solve(local)
                out[here] = between(x[self.first[local]], x[self.second[local]], self.t[severity][local], x.dtype)
            start += k
        return out

    def tag_parts(self, tag: str, labels: np.ndarray | None, name: np.ndarray) -> Iterator[np.ndarray]:
        for severity, k in self.levels.items():
            if tag == "category":
                yield np.full(k, name, dtype=name.dtype)
            elif tag == "severity":
                yield np.full(k, severity, dtype=np.int32)
            elif tag == "source_index":
                yield (self.low if severity == 1 else self.first).astype(np.int64)
            else:
                yield labels[self.low if severity == 1 else self.first]

    def facts(self) -> dict:
        """What a report needs to tie the boundary cells' figures to the data."""
        return {"median_margin": self.typical, "heads": list(self.heads),
                "margin_levels": {str(s): v for s, v in LEVELS.items()},
                "share_of_data": {str(s): v for s, v in self.shares.items()}}

    def summary(self) -> str:
        """One line for the suite's notes."""
        def med(s):
            return f"{float(np.median(self.margins[s])):.3g}"
        heads = ", ".join(repr(h) for h in self.heads)
        parts = [f"{self.levels[1]} lowest-margin samples (median float margin {med(1)})"] if 1 in self.levels else []
        if 2 in self.levels and self.pending is not None:
            parts.append(f"{self.levels[2]} interpolations per severity between samples of different float classes, "
                         f"each bisected to the boundary when a round makes its row, at margins "
                         f"{LEVELS[2] * 100:g}% / {LEVELS[3] * 100:g}% of the median")
        elif 2 in self.levels:
            parts.append(f"{self.levels[2]} + {self.levels[3]} interpolations between float classes, "
                         f"bisected to the boundary, at margins {LEVELS[2] * 100:g}% / {LEVELS[3] * 100:g}% "
                         f"of the median (median margins {med(2)} / {med(3)})")
        elif self.skipped:
            parts.append(f"no interpolations: {self.skipped}")
        return (f"boundary (output {heads}; median float margin of the data {self.typical:.3g}): "
                + "; ".join(parts))


def between(a: np.ndarray, b: np.ndarray, t: np.ndarray, dtype) -> np.ndarray:
    """a + t·(b − a), row by row, in ``dtype`` (rounded for integer inputs): the points the
    bisection judged are exactly the ones written."""
    a = np.asarray(a, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64).reshape((-1,) + (1,) * (a.ndim - 1))
    return to_dtype(a + t * (np.asarray(b, dtype=np.float64) - a), dtype)


def host_runtime() -> str:
    """The runtime that runs the float model here (name and version): the boundary rows are made with it, so it
    is part of a suite's identity when boundary cells are in it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"ai-edge-litert {version('ai-edge-litert')}"
    except PackageNotFoundError:
        return "ai-edge-litert (version unknown)"


class FloatModel:
    """The float ``.tflite`` on the host (ai-edge-litert), fed a block of rows at a time."""

    def __init__(self, path: Path, arrays: Mapping[str, np.ndarray], batch: int = BATCH):
        from ai_edge_litert.interpreter import Interpreter  # the runtime loads only when a boundary is planned

        self.path = Path(path)
        self.info = read_model(self.path)
        probe = InputSet(arrays=dict(arrays), path=self.path)
        self.names = match_model_inputs(probe, input_specs(self.info))  # array name per model input
        with _quiet_native():
            self.interpreter = Interpreter(model_path=str(self.path), num_threads=1)
        self.in_details = self.interpreter.get_input_details()
        self.out_details = self.interpreter.get_output_details()
        self.size = max(1, int(batch))  # the batch it runs (padded to, so it is allocated once)
        self.batch = 0  # the batch it is allocated for; 1 when the model takes no other

    def __call__(self, rows: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs (one array per model output) for the rows given per input array name."""
        count = len(rows[self.names[0]])
        outs: list[list[np.ndarray]] = [[] for _ in self.out_details]
        for lo in range(0, count, self.size):
            part = [np.asarray(rows[name][lo:lo + self.size]) for name in self.names]
            for k, o in enumerate(self._invoke(part)):
                outs[k].append(o)
        return [np.concatenate(o, axis=0) for o in outs]

    def _invoke(self, part: list[np.ndarray]) -> list[np.ndarray]:
        """One block of at most ``size`` rows: as one batch (padded to ``size``, so the
        interpreter is allocated once), or row by row when the model does not take a batch."""
        if self.batch != 1:
            self._resize(self.size)
        k = len(part[0])
        if self.batch == 1:
            rows = [self._run([p[i:i + 1] for p in part]) for i in range(k)]
            return [np.concatenate(o, axis=0) for o in zip(*rows)]
        if k < self.batch:
            part = [np.concatenate([p, np.repeat(p[-1:], self.batch - k, axis=0)]) for p in part]
        return [o[:k] for o in self._run(part)]

    def _run(self, part: list[np.ndarray]) -> list[np.ndarray]:
        for detail, array in zip(self.in_details, part):
            self.interpreter.set_tensor(detail["index"], np.ascontiguousarray(array, dtype=detail["dtype"]))
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(d["index"]).copy() for d in self.out_details]

    def _resize(self, size: int) -> None:
        if self.batch == size:
            return
        try:
            for detail in self.in_details:
                self.interpreter.resize_tensor_input(detail["index"], [size, *detail["shape"][1:]])
            with _quiet_native():
                self.interpreter.allocate_tensors()
            self.batch = size
        except (RuntimeError, ValueError):
            if size == 1:
                raise
            self._resize(1)


@contextlib.contextmanager
def _quiet_native():
    """The runtime's own C++ log lines ("Created TensorFlow Lite XNNPACK delegate") kept off
    the user's terminal: they go to file descriptor 2, which no Python setting silences.
    Errors still reach the caller as exceptions."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def plan_boundary(model: Path, arrays: Mapping[str, np.ndarray], labels: np.ndarray | None, *, seed: int,
                  limit: int | None, step: int, spec=None, lazy: bool = False) -> BoundaryPlan | str:
    """The boundary cells for this data, or the reason there can be none (a sentence).

    ``step``: rows handled at once (the suite's block for the largest sample, ``risky.transform_rows``,
    given by the suite so this module needs nothing from it), at most ``BATCH`` per inference. ``lazy``:
    the interpolations are bisected when their rows are made (``BoundaryPlan.solve``), not here: on a
    224×224×3 model, 32 float passes over every pair take minutes, and adaptive sampling makes a few rows."""
    step = max(1, int(step))
    float_model = FloatModel(model, arrays, batch=min(BATCH, step))
    n = len(next(iter(arrays.values())))
    rng = np.random.default_rng([int(seed), SEED_KEY])
    pool = np.arange(n) if n <= POOL_LIMIT else np.sort(rng.choice(n, POOL_LIMIT, replace=False))
    first_block = float_model({name: arrays[name][pool[:step]] for name in float_model.names})
    heads, labelled = _heads(float_model, first_block, labels is not None, spec)
    if not heads:
        return "the float model has no classification output (no top-1 − top-2 margin to rank by)"
    outputs = _score(float_model, arrays, pool, [h.index for h in heads], first_block, step)
    read = {h.index: h.read(outputs[h.index]) for h in heads}
    count = min(limit or n, len(pool), max(MIN_COUNT, int(np.ceil(LOW_FRACTION * len(pool)))))
    low, low_margin = _lowest(pool, heads, read, -(-count // len(heads)), count)
    quota = -(-min(limit or n, n) // len(heads))  # interpolations: as many as any other cell holds
    every = np.concatenate([read[h.index][1] for h in heads])
    typical = float(np.median(every))
    shares = {1: len(low) / max(1, len(pool)),
              **{s: float(np.mean(every < level * typical)) for s, level in LEVELS.items()}}

    firsts, seconds, segments, why = [], [], [], ""
    for head in heads:
        pred, margin = read[head.index]
        ok = pred >= 0
        if labels is not None and head.index == labelled:
            ok &= pred == np.asarray(labels)[pool]
        pairs = _pairs(arrays, pool[ok], pred[ok], quota, rng, step)
        if pairs is None:
            why = f"the float model puts every sample in one class (output {head.name!r})"
            continue
        a, b = pairs
        where = np.searchsorted(pool, a)
        start = sum(len(f) for f in firsts)
        segments.append((head, start, start + len(a), pred[where], margin[where]))
        firsts.append(a), seconds.append(b)
    names = [h.name for h in heads]
    if not firsts:
        empty = np.zeros(0, dtype=np.int64)
        return BoundaryPlan(low, empty, empty, {}, {1: low_margin}, typical, names, skipped=why,
                            shares={1: shares[1]})
    first, second = np.concatenate(firsts), np.concatenate(seconds)
    unsolved = {s: np.full(len(first), np.nan) for s in LEVELS}
    plan = BoundaryPlan(low, first, second, unsolved, {1: low_margin, **{s: v.copy() for s, v in unsolved.items()}},
                        typical, names, shares=shares,
                        pending=Bisection(float_model, arrays, segments, typical, step, np.zeros(len(first), bool)))
    if not lazy:
        plan.solve()
    return plan


@dataclass
class Bisection:
    """Bisects interpolation pairs on demand: the float model, the data, each head's pairs
    ``(head, start, stop, class of a, margin of a)`` and which pairs are done. One lock: the
    devices of a fleet make their rounds' rows at once, and one interpreter runs at a time."""

    float_model: FloatModel
    arrays: Mapping[str, np.ndarray]
    segments: list
    typical: float
    step: int
    done: np.ndarray
    lock: threading.Lock = field(default_factory=threading.Lock)

    def solve(self, plan: BoundaryPlan, pairs: np.ndarray) -> None:
        """Each pair in ``pairs`` not done: its t and float margin at every level into ``plan``."""
        with self.lock:
            for head, start, stop, pred_a, margin_a in self.segments:
                todo = np.unique(pairs[(pairs >= start) & (pairs < stop)])
                todo = todo[~self.done[todo]]
                if not len(todo):
                    continue
                a, b, local = plan.first[todo], plan.second[todo], todo - start
                edge = _bisect(self.float_model, self.arrays, head, a, b, pred_a[local], self.step)
                for severity, level in LEVELS.items():
                    t, m = _back_to_margin(self.float_model, self.arrays, head, a, b, pred_a[local], margin_a[local],
                                           edge, level * self.typical, self.step)
                    plan.t[severity][todo], plan.margins[severity][todo] = t, m
                self.done[todo] = True
            if self.done.all():
                plan.pending = None


def _score(float_model: FloatModel, arrays, index: np.ndarray, keep: list[int], first: list[np.ndarray],
           step: int):
    """Float outputs ``keep`` for the rows ``index``, a block at a time (the first block given)."""
    parts = {k: [first[k]] for k in keep}
    for lo in range(step, len(index), step):
        outs = float_model({name: arrays[name][index[lo:lo + step]] for name in float_model.names})
        for k in keep:
            parts[k].append(outs[k])
    return {k: np.concatenate(p, axis=0) for k, p in parts.items()}


def _heads(float_model: FloatModel, outputs: list[np.ndarray], has_labels: bool, spec) -> tuple[list[Head], int]:
    """The classification outputs, judged as ``compare`` judges them; and the labelled one's index.

    The one place the suite reads the analysis layer (a listed exception in ``scripts/import_graph.py``):
    imported here, when a boundary is planned, so building a suite without a model never loads it."""
    from edgeq.analysis.kinds import in_unit_interval
    from edgeq.analysis.plan import describe_outputs, plan_outputs

    info = float_model.info
    described = describe_outputs([t.name for t in info.outputs], [tuple(t.shape[1:]) for t in info.outputs], info)
    plans = plan_outputs(described, spec, has_labels, values=outputs)
    heads, labelled = [], -1
    for plan in plans:
        if plan.kind != "classification":
            continue
        out = outputs[plan.index]
        head = Head(plan.index, described[plan.index].short)
        if int(np.prod(out.shape[1:])) == 1:
            unit = bool(in_unit_interval(out))
            given = plan.options.get("threshold")
            head.threshold = float(given) if given is not None else (0.5 if unit else 0.0)
            head.scale = 2.0 if unit else 1.0
        heads.append(head)
        if plan.labels:
            labelled = plan.index
    return heads, labelled


def _lowest(pool, heads, read, quota: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``quota`` lowest-margin samples per head (no sample twice), sorted by index."""
    chosen: dict[int, float] = {}
    for head in heads:
        margin = read[head.index][1]
        taken = 0
        for k in np.argsort(margin, kind="stable"):
            if taken == quota or len(chosen) == count or not np.isfinite(margin[k]):
                break
            if int(pool[k]) not in chosen:
                chosen[int(pool[k])] = float(margin[k])
                taken += 1
    order = sorted(chosen)
    return np.array(order, dtype=np.int64), np.array([chosen[i] for i in order], dtype=np.float64)


def _pairs(arrays, eligible: np.ndarray, pred: np.ndarray, count: int, rng: np.random.Generator, step: int):
    """(a, b): ``count`` first samples and, for each, the nearest of CANDIDATES of another class."""
    classes = np.unique(pred)
    if len(eligible) < 2 or len(classes) < 2:
        return None
    first = rng.choice(len(eligible), size=count, replace=count > len(eligible))
    candidates = np.empty((count, CANDIDATES), dtype=np.int64)
    for c in classes:
        rows = np.nonzero(pred[first] == c)[0]
        others = np.nonzero(pred != c)[0]
        if len(rows):
            candidates[rows] = others[rng.integers(0, len(others), size=(len(rows), CANDIDATES))]
    spans = {name: (float(np.max(x)) - float(np.min(x))) or 1.0 for name, x in arrays.items()}
    a_all, b_all = eligible[first], np.empty(count, dtype=np.int64)
    block = max(1, step // CANDIDATES)
    for lo in range(0, count, block):
        a, cand = a_all[lo:lo + block], eligible[candidates[lo:lo + block]]
        dist = np.zeros(cand.shape)
        for name, x in arrays.items():
            xa = np.asarray(x[a], dtype=np.float64).reshape(len(a), 1, -1)
            xc = np.asarray(x[cand.reshape(-1)], dtype=np.float64).reshape(cand.shape[0], cand.shape[1], -1)
            dist += (((xc - xa) / spans[name]) ** 2).sum(axis=2)
        b_all[lo:lo + block] = cand[np.arange(len(a)), dist.argmin(axis=1)]
    order = np.argsort(a_all, kind="stable")  # rows in data order, like every other cell
    return a_all[order], b_all[order]


def _points(arrays, names, a, b, t) -> dict[str, np.ndarray]:
    return {name: between(arrays[name][a], arrays[name][b], t, arrays[name].dtype) for name in names}


def _bisect(float_model, arrays, head: Head, a, b, pred_a, step) -> np.ndarray:
    """t per pair on a's side of the float decision boundary, within 2^-steps of it."""
    lo_t, hi_t = np.zeros(len(a)), np.ones(len(a))
    for start in range(0, len(a), step):
        s = slice(start, start + step)
        lo, hi = lo_t[s], hi_t[s]
        for _ in range(BISECTION_STEPS):
            mid = (lo + hi) / 2
            outs = float_model(_points(arrays, float_model.names, a[s], b[s], mid))
            same = head.read(outs[head.index])[0] == pred_a[s]
            lo, hi = np.where(same, mid, lo), np.where(same, hi, mid)
        lo_t[s] = lo
    return lo_t


def _back_to_margin(float_model, arrays, head: Head, a, b, pred_a, margin_a, edge, target: float,
                    step) -> tuple[np.ndarray, np.ndarray]:
    """(t, float margin) per pair: the point between a (t = 0) and the boundary (t = edge) where
    the float model still gives a's class with a margin of at least ``target``, the closest
    to the boundary within MARGIN_STEPS halvings. A pair whose a is already below the target
    keeps a itself."""
    t_out, m_out = np.zeros(len(a)), np.asarray(margin_a, dtype=np.float64).copy()
    for start in range(0, len(a), step):
        s = slice(start, start + step)
        lo, hi, kept = np.zeros(len(a[s])), edge[s].copy(), m_out[s].copy()
        for _ in range(MARGIN_STEPS):
            mid = (lo + hi) / 2
            outs = float_model(_points(arrays, float_model.names, a[s], b[s], mid))
            pred, margin = head.read(outs[head.index])
            ok = (pred == pred_a[s]) & (margin >= target)
            lo, hi, kept = np.where(ok, mid, lo), np.where(ok, hi, mid), np.where(ok, margin, kept)
        t_out[s], m_out[s] = lo, kept
    return t_out, m_out
