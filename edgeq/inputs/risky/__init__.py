"""The risky input suite: inputs that stress dynamic-range quantization.

Dynamic-range quantization picks each activation row's int8 scale from the input
itself (max|row|/127), so a shift of the whole input, stretched contrast, noise,
one large value or a rare sentinel code changes the rounding of everything else.
An average validation set never exercises that; this suite derives such inputs
from the user's own data, in three graded severities per family, so a comparison
can say which kind of shift breaks a model and how hard it has to be pushed.

Each family is one module in ``families/`` that registers itself; built-in
strengths are in ``severities`` (one table); ranges, the auto range mode and dtype
handling in ``ranges``; per-feature observations of the full data in ``observed``.
The suite is planned once (``plan_risky_suite``) and produced one cell at a time,
so ``write_risky_suite`` writes a suite of any size with one cell in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from edgeq.errors import InputSetError
from edgeq.inputs.inputset import SUITE_ID, SUITE_ROW
from edgeq.inputs.npz import NpzWriter
from edgeq.inputs.risky import boundary as _boundary
from edgeq.inputs.risky.boundary import BOUNDARY, BoundaryPlan
from edgeq.inputs.risky.blocks import MadeBlocks
from edgeq.inputs.risky.families import CATEGORIES, FAMILIES, check_kind, describe_kind, image_layout, input_kind
from edgeq.inputs.risky.families import describe_categories as _describe_families
from edgeq.inputs.risky.observed import DataStats
from edgeq.inputs.risky.ranges import RANGE_MODES, choose_range_mode, resolve_range_modes, to_dtype
from edgeq.inputs.risky.roles import suite_roles
from edgeq.inputs.risky.severities import SEVERITIES

# every category a suite can hold: the families' (CATEGORIES) and ``boundary``, which needs the
# float model (``model=``) and is left out with a note without it
ALL_CATEGORIES: tuple[str, ...] = (*CATEGORIES, BOUNDARY)

__all__ = [
    "ALL_CATEGORIES",
    "BOUNDARY",
    "CATEGORIES",
    "SEVERITIES",
    "RANGE_MODES",
    "RiskySuite",
    "build_risky_suite",
    "plan_risky_suite",
    "write_risky_suite",
    "write_plan",
    "category_array",
    "choose_range_mode",
    "describe_categories",
]

_SOURCE = "<data>"
TRANSFORM_BYTES = 4 << 20  # float64 bytes a family transforms at once
ROW_WISE_BYTES = 256 << 10  # float64 bytes of one sample from which a family transforms one row at a time
MADE_BLOCK_BYTES = 256 << 20  # blocks of several rows a plan keeps between rounds (least recently used dropped)


def transform_rows(sample_shape: tuple) -> int:
    """Rows transformed at once: a block of about TRANSFORM_BYTES, so memory stays flat for a
    suite of any size. The first block of a cell draws from the generator keyed
    [seed, family, severity] and block b from [..., b], so a cell that fits one block
    (every suite of up to 8192 tabular rows of 64 features) is what it always was, and
    the split depends only on the sample shape, never on the machine. A sample of
    ROW_WISE_BYTES or more (a 224×224×3 image is 1.2 MB) is a block of its own: a suite built
    lazily (``SuitePlan.take``) then makes exactly the rows a round runs, never a neighbour."""
    row = 8 * max(1, int(np.prod(sample_shape, dtype=np.int64)))
    return 1 if row >= ROW_WISE_BYTES else max(1, TRANSFORM_BYTES // row)


_RESERVED = ("y", "category", "severity", "source_index")


@dataclass(eq=False)
class RiskySuite(Mapping):
    """The built suite.

    ``arrays``: one transformed array per input name; ``tags``: ``category``,
    ``severity``, ``source_index`` and (with labels) ``y``, one value per sample;
    ``range_modes``: input name → (mode used, the reason as a sentence);
    ``families``: the risky families in the suite, in suite order ("clean" is not one).
    It also reads as a mapping over arrays and tags (``suite["x"]``,
    ``suite["category"]``), which is what an input set file holds.
    """

    arrays: dict[str, np.ndarray]
    tags: dict[str, np.ndarray]
    range_modes: dict[str, tuple[str, str]] = field(default_factory=dict)
    families: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    layouts: dict[str, str] = field(default_factory=dict)
    boundary: BoundaryPlan | None = None

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key] if key in self.arrays else self.tags[key]

    def __iter__(self) -> Iterator[str]:
        yield from self.arrays
        yield from self.tags

    def __len__(self) -> int:
        return len(self.arrays) + len(self.tags)


@dataclass
class SuitePlan:
    """Everything the suite is made from, checked; arrays are produced one cell at a time.

    A cell is one (category, severity); every cell holds the same ``index`` rows of
    the data, so per-cell results compare sample by sample. ``kinds``: what each input
    array looks like (``families.input_kind``); ``skipped``: families that fit none of
    the arrays (and ``boundary`` without a model), with the reason; ``layouts``: how each
    image or grid array was read, in words (printed as a note where the suite is built).
    ``boundary``: the boundary cells (``boundary.py``), after every family's, with their
    own rows.
    """

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    index: np.ndarray
    cells: list[tuple[str, int]]
    range_modes: dict[str, tuple[str, str]]
    kinds: dict[str, str]
    seed: int
    skipped: dict[str, str] = field(default_factory=dict)
    layouts: dict[str, str] = field(default_factory=dict)
    boundary: BoundaryPlan | None = None
    _data_stats: dict = field(default_factory=dict, init=False, repr=False)  # name → DataStats, made once
    _tags: dict = field(default_factory=dict, init=False, repr=False)  # every tag of the suite, made once
    _made: MadeBlocks = field(default_factory=lambda: MadeBlocks(MADE_BLOCK_BYTES), init=False, repr=False)

    @property
    def n(self) -> int:
        return len(self.index) * len(self.cells) + (self.boundary.n if self.boundary else 0)

    @property
    def families(self) -> list[str]:
        return list(dict.fromkeys(c for c, _ in self.cells if c != "clean"))

    def parts(self, name: str) -> Iterator[np.ndarray]:
        """The array ``name`` in suite order, cell by cell and, in a cell, block by block."""
        step = transform_rows(self.inputs[name].shape[1:])
        for category, severity in self.cells:
            for block in range(-(-len(self.index) // step)):
                yield self._make_block(name, category, severity, block, step)  # each once: none kept
        if self.boundary is not None:
            yield from self.boundary.parts(self.inputs[name], step)

    def take(self, name: str, rows) -> np.ndarray:
        """Suite ``rows`` (sorted ascending, unique) of the array ``name``, exactly as ``parts`` makes them,
        generating only the blocks that hold one: what a round of adaptive sampling runs, without the
        rest of the suite (15 GB for 500 samples of a 224×224×3 model in every cell)."""
        x, rows = self.inputs[name], np.asarray(rows, dtype=np.int64)
        k, step = len(self.index), transform_rows(x.shape[1:])
        out = np.empty((len(rows),) + x.shape[1:], x.dtype)
        family_rows = rows < k * len(self.cells)
        cell, offset = np.divmod(rows[family_rows], k)
        for c, b in sorted(set(zip(cell.tolist(), (offset // step).tolist()))):
            here = np.flatnonzero(family_rows)[(cell == c) & (offset // step == b)]
            out[here] = self._block(name, *self.cells[c], b, step)[rows[here] - c * k - b * step]
        if not family_rows.all():
            out[~family_rows] = self.boundary.take(x, rows[~family_rows] - k * len(self.cells))
        return out

    def tags(self, rows=None) -> dict[str, np.ndarray]:
        """Every tag (``tag_names``) at suite ``rows`` (None: all of them)."""
        if not self._tags:
            self._tags.update({tag: np.concatenate(list(self.tag_parts(tag))) for tag in self.tag_names})
        return {tag: v if rows is None else v[np.asarray(rows, dtype=np.int64)] for tag, v in self._tags.items()}

    def _block(self, name: str, category: str, severity: int, block: int, step: int) -> np.ndarray:
        """Block ``block`` (of ``step`` rows) of one cell of the array ``name``. A block of several rows is kept
        (``_made``, up to ``MADE_BLOCK_BYTES``): the rounds of adaptive sampling take a cell's rows a few at a
        time, and would otherwise transform the whole block again each round. A row-wise block (a large sample)
        is made once per row asked for, and never kept."""
        if step == 1:
            return self._make_block(name, category, severity, block, step)
        return self._made.get((name, category, severity, block, step),
                              lambda: self._make_block(name, category, severity, block, step))

    def _make_block(self, name: str, category: str, severity: int, block: int, step: int) -> np.ndarray:
        x = self.inputs[name]
        picked = x[self.index[block * step:(block + 1) * step]]
        family = FAMILIES.get(category)
        if family is None or not family.applies_to_shape(x.shape[1:], self.kinds[name]):
            return picked
        key = [self.seed, family.seed_key, severity] + ([block] if block else [])
        changed = family.transform(picked.astype(np.float64), family.levels[severity - 1], self._stats(name),
                                   np.random.default_rng(key))
        return to_dtype(changed, x.dtype)

    def _stats(self, name: str) -> DataStats:
        """The observations of the full data ``name`` (computed once per plan: a round's blocks share them)."""
        if name not in self._data_stats:
            self._data_stats[name] = DataStats(self.inputs[name], self.range_modes[name][0])
        return self._data_stats[name]

    def tag_parts(self, tag: str) -> Iterator[np.ndarray]:
        """One tag's values cell by cell; ``category`` is as wide as the longest name."""
        k = len(self.index)
        names = category_array([c for c, _ in self.cells] + ([BOUNDARY] if self.boundary else []))
        for (category, severity), name in zip(self.cells, names):
            if tag == "category":
                yield np.full(k, name, dtype=names.dtype)
            elif tag == "severity":
                yield np.full(k, severity, dtype=np.int32)
            elif tag == "source_index":
                yield self.index
            else:
                yield self.labels[self.index]
        if self.boundary is not None:
            yield from self.boundary.tag_parts(tag, self.labels, names[-1])

    @property
    def roles(self) -> dict[str, dict]:
        """{category: {"role": "field"|"stress", "reason"}}: which cells may decide the verdict."""
        names = ["clean", *self.families] + ([BOUNDARY] if self.boundary else [])
        return suite_roles(names, self.kinds.values())

    @property
    def tag_names(self) -> list[str]:
        return (["y"] if self.labels is not None else []) + ["category", "severity", "source_index"]


def plan_risky_suite(
    arrays: Mapping[str, np.ndarray],
    y: np.ndarray | None = None,
    *,
    seed: int = 0,
    max_per_category: int | None = 500,
    range_mode: str = "auto",
    categories: Sequence[str] | None = None,
    model=None,
    output_spec=None,
    input_kinds: Mapping[str, str] | str | None = None,
    lazy: bool = False,
) -> SuitePlan:
    """Check the request and plan the suite: clean first, then each family at severities 1..3.

    Ranges and per-feature observations come from the full data (not the
    subsample), so a subsample that misses the extremes (or a rare -999 row) does
    not shrink them. ``range_mode="auto"`` decides per array (``choose_range_mode``):
    per-feature ranges for tabular data, one global range otherwise. A family that
    fits none of the input arrays (an image family on tabular data) is left out and
    named in ``skipped``; one that fits some arrays leaves the others unchanged.
    ``model`` (the float ``.tflite``) adds the ``boundary`` cells (``output_spec``: what
    the user said about its outputs, so its classification heads are the ones compare
    judges); without it, ``boundary`` is left out with a note. ``input_kinds``: what the
    samples are (one kind for every array, or per array name), when the shape is not enough.
    ``lazy``: the plan's rows will be made a few at a time (``SuitePlan.take``): the boundary's
    interpolations are bisected when their rows are made, not now.
    """
    inputs, n = _check_arrays(arrays)
    labels = _check_labels(y, n)
    chosen = _check_categories(categories)
    if range_mode not in RANGE_MODES:
        raise InputSetError(_SOURCE, f"range_mode must be one of {RANGE_MODES}, got {range_mode!r}")
    _check_seed(seed)
    _check_limit(max_per_category)
    kinds, given = _kinds(inputs, input_kinds)
    layouts = {name: _layout_note(x.shape[1:]) for name, x in inputs.items() if kinds[name] in ("image", "grid")}
    layouts.update({name: describe_kind(x.shape[1:], kinds[name], "given" if name in given else "auto")
                    for name, x in inputs.items() if kinds[name] not in ("image", "grid") or name in given})
    skipped = {c: _left_out(FAMILIES[c], inputs, kinds) for c in chosen if c not in ("clean", BOUNDARY)}
    skipped = {c: why for c, why in skipped.items() if why}
    cells = [(c, s) for c in chosen if c not in skipped and c != BOUNDARY
             for s in ((0,) if c == "clean" else FAMILIES[c].severities)]
    edges = None
    if BOUNDARY in chosen and model is None:
        skipped[BOUNDARY] = ("needs the float model's outputs to find the inputs near its decision boundary "
                             "(give the float .tflite: --model)")
    elif BOUNDARY in chosen:
        # the boundary's rows are scored a block at a time, blocks as large as the suite's own
        largest = max((x.shape[1:] for x in inputs.values()), key=lambda shape: int(np.prod(shape)))
        edges = _boundary.plan_boundary(model, inputs, labels, seed=int(seed), limit=max_per_category,
                                        spec=output_spec, step=transform_rows(largest), lazy=lazy)
        if isinstance(edges, str):
            skipped[BOUNDARY], edges = edges, None
    return SuitePlan(inputs, labels, _subsample(n, max_per_category, seed), cells,
                     resolve_range_modes(inputs, range_mode), kinds, int(seed), skipped, layouts, edges)


def _kinds(inputs: Mapping[str, np.ndarray], given) -> tuple[dict[str, str], set[str]]:
    """The input kind of each array (detected, or as given) and the names the user set."""
    if isinstance(given, str):
        given = {name: given for name in inputs}
    given = dict(given or {})
    unknown = sorted(set(given) - set(inputs))
    if unknown:
        raise InputSetError(_SOURCE, f"--input-kind names no input array {unknown[0]!r} "
                                     f"(arrays: {', '.join(inputs)})")
    for name, kind in given.items():
        check_kind(inputs[name].shape[1:], kind, f"--input-kind {name}={kind}")
    return {name: given.get(name) or input_kind(x.shape[1:]) for name, x in inputs.items()}, set(given)


def _left_out(family, inputs: Mapping[str, np.ndarray], kinds: dict[str, str]) -> str:
    """Why a family fits none of the input arrays ("" when it fits one)."""
    if any(family.applies_to_shape(x.shape[1:], kinds[name]) for name, x in inputs.items()):
        return ""
    if not any(family.applies(k) for k in kinds.values()):
        return f"fits none of the inputs ({', '.join(sorted(set(kinds.values())))})"
    found = sorted({image_layout(x.shape[1:]).describe() if image_layout(x.shape[1:]) else kinds[name]
                    for name, x in inputs.items()})
    return f"{family.needs or 'fits none of the inputs'}; the inputs are {', '.join(found)}"


def _layout_note(sample_shape: tuple) -> str:
    """How an image or grid array is read, for the suite's notes."""
    layout = image_layout(sample_shape)
    if layout is not None:
        return f"read as {layout.describe()}; image families apply"
    size = "×".join(str(v) for v in sample_shape)
    # Image families are not applied to 2-D samples: the shape cannot tell a grey image
    # without a channel axis from a spectrogram or a window of sensor readings (time ×
    # channels), where blur, 8×8 JPEG blocks or a shift across unrelated sensors would make
    # inputs that mean nothing. Noted, so a grey-image model without a channel axis knows.
    return (f"a 2-D grid ({size}) without a channel axis, not read as an image (it could as well be a "
            "spectrogram or a window of readings): image families do not apply")


def build_risky_suite(arrays: Mapping[str, np.ndarray], y: np.ndarray | None = None, **options) -> RiskySuite:
    """The suite in memory (``plan_risky_suite`` takes the options); for files, ``write_risky_suite``."""
    plan = plan_risky_suite(arrays, y, **options)
    out = {name: np.concatenate(list(plan.parts(name)), axis=0) for name in plan.inputs}
    tags = {tag: np.concatenate(list(plan.tag_parts(tag))) for tag in plan.tag_names}
    return RiskySuite(arrays=out, tags=tags, range_modes=plan.range_modes, families=plan.families,
                      skipped=plan.skipped, layouts=plan.layouts, boundary=plan.boundary)


def write_risky_suite(path, arrays: Mapping[str, np.ndarray], y: np.ndarray | None = None,
                      **options) -> SuitePlan:
    """Write the suite to ``path`` as it is generated: memory holds one cell, never the suite."""
    return write_plan(path, plan_risky_suite(arrays, y, **options))


def write_plan(path, plan: SuitePlan, identity: str | None = None) -> SuitePlan:
    """A planned suite written whole to ``path``, a block at a time; ``identity`` (the suite's recipe hash,
    ``lazy.suite_identity``) adds each row's ``suite_row`` and ``suite_sha256``, so runs over the file are named
    by the suite, as runs over rows of it built lazily are."""
    try:
        with NpzWriter(path) as out:
            if identity is not None:
                out.write(SUITE_ROW, np.arange(plan.n, dtype=np.int64))
                out.write(SUITE_ID, np.array(identity))
            for name, x in plan.inputs.items():
                with out.member(name, (plan.n,) + x.shape[1:], x.dtype) as member:
                    for part in plan.parts(name):
                        member.append(part)
            for tag in plan.tag_names:
                parts = plan.tag_parts(tag)
                first = next(parts)
                with out.member(tag, (plan.n,), first.dtype) as member:
                    member.append(first)
                    for part in parts:
                        member.append(part)
    except OSError as exc:
        raise InputSetError(path, f"cannot write: {exc.strerror or exc}") from None
    return plan


def describe_categories() -> dict[str, str]:
    """One line per category (every family's, then ``boundary``), generated from the levels."""
    return {**_describe_families(), BOUNDARY: _boundary.describe()}


def category_array(names: Sequence[str]) -> np.ndarray:
    """Unicode array wide enough for the longest name (a fixed width would cut long names)."""
    width = max([1, *(len(name) for name in names)])
    return np.array(list(names), dtype=f"<U{width}")


def _subsample(n: int, max_per_category: int | None, seed: int) -> np.ndarray:
    """Sorted sample indices, drawn once so every category uses the same samples."""
    if max_per_category is None or n <= max_per_category:
        return np.arange(n, dtype=np.int64)
    picked = np.random.default_rng(seed).choice(n, size=max_per_category, replace=False)
    return np.sort(picked).astype(np.int64)


def _check_arrays(arrays: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """Refuse what would make a silently wrong suite; return arrays and N."""
    if not arrays:
        raise InputSetError(_SOURCE, "no input arrays given")
    inputs = {name: np.asarray(a) for name, a in arrays.items()}
    n = None
    for name, x in inputs.items():
        _check_one_array(name, x)
        if n is None:
            n = x.shape[0]
        elif x.shape[0] != n:
            raise InputSetError(_SOURCE, f"has {x.shape[0]} samples, other arrays have {n}", array=name)
    return inputs, n


def _check_one_array(name: str, x: np.ndarray) -> None:
    if name in _RESERVED:
        raise InputSetError(_SOURCE, "this name is reserved for the suite's metadata", array=name)
    if x.dtype.kind not in "fiu":
        raise InputSetError(_SOURCE, f"dtype {x.dtype} is not a real numeric type", array=name)
    if x.ndim == 0:
        raise InputSetError(_SOURCE, "is a scalar; expected a sample axis first", array=name)
    if x.shape[0] == 0:
        raise InputSetError(_SOURCE, "has no samples", array=name)
    if x[0].size == 0:
        raise InputSetError(_SOURCE, f"samples have no elements (shape {x.shape})", array=name)
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise InputSetError(_SOURCE, f"contains {bad} non-finite value(s)", array=name)


def _check_labels(y, n: int) -> np.ndarray | None:
    """Labels as int64; float labels are accepted only if they hold whole numbers."""
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim == 0 or y.shape[0] != n:
        raise InputSetError(_SOURCE, f"has shape {y.shape}, expected {n} labels", array="y")
    if y.dtype.kind in "iub":
        return y.astype(np.int64)
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        return y.astype(np.int64)
    raise InputSetError(_SOURCE, f"labels must be integers, got dtype {y.dtype}", array="y")


def _check_categories(categories: Sequence[str] | None) -> list[str]:
    """Selected categories in CATEGORIES order (the suite's order never depends on the caller's)."""
    if categories is None:
        return list(ALL_CATEGORIES)
    if isinstance(categories, str):
        categories = [categories]
    unknown = [c for c in categories if c not in ALL_CATEGORIES]
    if unknown:
        raise InputSetError(
            _SOURCE, f"unknown categories {unknown}; known: {', '.join(ALL_CATEGORIES)}", array="category"
        )
    if not categories:
        raise InputSetError(_SOURCE, "no categories selected", array="category")
    return [c for c in ALL_CATEGORIES if c in set(categories)]


def _check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputSetError(_SOURCE, f"seed must be a non-negative integer, got {seed!r}")


def _check_limit(limit) -> None:
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise InputSetError(_SOURCE, f"max_per_category must be a positive integer or None, got {limit!r}")
