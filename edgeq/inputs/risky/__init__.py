"""The risky input suite: inputs that stress dynamic-range quantization.

Dynamic-range quantization picks each activation row's int8 scale from the input
itself (max|row|/127), so a shift of the whole input, stretched contrast, noise,
one large value or a rare sentinel code changes the rounding of everything else.
An average validation set never exercises that; this suite derives such inputs
from the user's own data, in three graded severities per family, so a comparison
can say which kind of shift breaks a model and how hard it has to be pushed.

Families are registered in ``families`` (transforms in ``photometric``,
``corruption`` and ``sensors``); their strengths in ``severities`` (one table);
ranges, the auto range mode and dtype handling in ``ranges``; per-feature
observations of the full data in ``observed``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from edgeq.errors import InputSetError
from edgeq.inputs.risky.families import CATEGORIES, FAMILIES, describe_categories
from edgeq.inputs.risky.observed import DataStats
from edgeq.inputs.risky.ranges import RANGE_MODES, choose_range_mode, resolve_range_modes, to_dtype
from edgeq.inputs.risky.severities import SEVERITIES, SEVERITY_LEVELS

__all__ = [
    "CATEGORIES",
    "SEVERITIES",
    "RANGE_MODES",
    "RiskySuite",
    "build_risky_suite",
    "category_array",
    "choose_range_mode",
    "describe_categories",
]

_SOURCE = "<data>"
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

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key] if key in self.arrays else self.tags[key]

    def __iter__(self) -> Iterator[str]:
        yield from self.arrays
        yield from self.tags

    def __len__(self) -> int:
        return len(self.arrays) + len(self.tags)


def build_risky_suite(
    arrays: Mapping[str, np.ndarray],
    y: np.ndarray | None = None,
    *,
    seed: int = 0,
    max_per_category: int | None = 500,
    range_mode: str = "auto",
    categories: Sequence[str] | None = None,
) -> RiskySuite:
    """Build the suite: clean first, then each family at severities 1..3.

    Ranges and per-feature observations come from the full data (not the
    subsample), so a subsample that misses the extremes (or a rare -999 row) does
    not shrink them. The same subsample is used for every category so
    per-category results are comparable sample by sample. ``range_mode="auto"``
    decides per array (``choose_range_mode``): per-feature ranges for tabular data,
    one global range otherwise.
    """
    inputs, n = _check_arrays(arrays)
    labels = _check_labels(y, n)
    chosen = _check_categories(categories)
    if range_mode not in RANGE_MODES:
        raise InputSetError(_SOURCE, f"range_mode must be one of {RANGE_MODES}, got {range_mode!r}")
    _check_seed(seed)
    _check_limit(max_per_category)
    index = _subsample(n, max_per_category, seed)
    plan = [(c, s) for c in chosen for s in ((0,) if c == "clean" else SEVERITY_LEVELS)]
    modes = resolve_range_modes(inputs, range_mode)

    out = {name: _transform_all(x, index, plan, DataStats(x, modes[name][0]), seed) for name, x in inputs.items()}
    k = len(index)
    tags = {}
    if labels is not None:
        tags["y"] = np.tile(labels[index], len(plan))
    tags["category"] = np.repeat(category_array([c for c, _ in plan]), k)
    tags["severity"] = np.repeat(np.array([s for _, s in plan], dtype=np.int32), k)
    tags["source_index"] = np.tile(index, len(plan))
    return RiskySuite(arrays=out, tags=tags, range_modes=modes, families=[c for c in chosen if c != "clean"])


def category_array(names: Sequence[str]) -> np.ndarray:
    """Unicode array wide enough for the longest name (a fixed width would cut long names)."""
    width = max([1, *(len(name) for name in names)])
    return np.array(list(names), dtype=f"<U{width}")


def _transform_all(x: np.ndarray, index: np.ndarray, plan, data: DataStats, seed: int) -> np.ndarray:
    """Apply every (category, severity) of the plan to one named array and stack.

    Each (category, severity) gets its own generator from [seed, category index,
    severity]; the index is the position in CATEGORIES, not in the selection, so
    selecting or adding categories never changes the others. Every array gets a
    fresh generator from the same key: the same draw structure per array.
    """
    picked = x[index]
    base = picked.astype(np.float64)
    parts = []
    for category, severity in plan:
        if category == "clean":
            parts.append(picked.copy())
            continue
        rng = np.random.default_rng([seed, CATEGORIES.index(category), severity])
        family = FAMILIES[category]
        level = family.levels[severity - 1]
        parts.append(to_dtype(family.transform(base, level, data, rng), x.dtype))
    return np.concatenate(parts, axis=0)


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
        return list(CATEGORIES)
    if isinstance(categories, str):
        categories = [categories]
    unknown = [c for c in categories if c not in CATEGORIES]
    if unknown:
        raise InputSetError(
            _SOURCE, f"unknown categories {unknown}; known: {', '.join(CATEGORIES)}", array="category"
        )
    if not categories:
        raise InputSetError(_SOURCE, "no categories selected", array="category")
    return [c for c in CATEGORIES if c in set(categories)]


def _check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputSetError(_SOURCE, f"seed must be a non-negative integer, got {seed!r}")


def _check_limit(limit) -> None:
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise InputSetError(_SOURCE, f"max_per_category must be a positive integer or None, got {limit!r}")
