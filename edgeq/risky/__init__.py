"""The basic risky input suite: inputs that stress dynamic-range quantization.

Dynamic-range quantization picks each activation row's int8 scale from the input
itself (max|row|/127), so a shift of the whole input, stretched contrast, noise or
one large value changes the rounding of everything else. An average validation set
never exercises that; this suite derives such inputs from the user's own data, in
three graded severities per family, so a comparison can say which kind of shift
breaks a model and how hard it has to be pushed.

Families live in ``photometric`` and ``corruption``; their strengths in
``severities`` (one table); ranges and dtype handling in ``ranges``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from edgeq.errors import InputSetError
from edgeq.risky import corruption, photometric
from edgeq.risky.ranges import RANGE_MODES, ValueRange, to_dtype, value_range
from edgeq.risky.severities import CATEGORIES, SEVERITIES, SEVERITY_LEVELS, describe_categories

__all__ = [
    "CATEGORIES",
    "SEVERITIES",
    "RANGE_MODES",
    "build_risky_suite",
    "describe_categories",
]

_SOURCE = "<data>"
_RESERVED = ("y", "category", "severity", "source_index")
_CATEGORY_DTYPE = "<U16"

_FAMILIES = {
    "brightness+": photometric.brighten,
    "brightness-": photometric.darken,
    "contrast+": photometric.contrast,
    "contrast-": photometric.contrast,
    "noise": corruption.gaussian_noise,
    "impulse": corruption.salt_and_pepper,
    "outlier": corruption.outlier,
}


def build_risky_suite(
    arrays: Mapping[str, np.ndarray],
    y: np.ndarray | None = None,
    *,
    seed: int = 0,
    max_per_category: int | None = 500,
    range_mode: str = "global",
    categories: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Build the suite: clean first, then each family at severities 1..3.

    Ranges come from the full data (not the subsample), so a subsample that misses
    the extremes does not shrink them. The same subsample is used for every
    category so per-category results are comparable sample by sample.
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

    suite = {
        name: _transform_all(x, index, plan, value_range(x, range_mode), seed)
        for name, x in inputs.items()
    }
    if labels is not None:
        suite["y"] = np.tile(labels[index], len(plan))
    k = len(index)
    suite["category"] = np.repeat(np.array([c for c, _ in plan], dtype=_CATEGORY_DTYPE), k)
    suite["severity"] = np.repeat(np.array([s for _, s in plan], dtype=np.int32), k)
    suite["source_index"] = np.tile(index, len(plan))
    return suite


def _transform_all(x: np.ndarray, index: np.ndarray, plan, vr: ValueRange, seed: int) -> np.ndarray:
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
        level = SEVERITIES[category][severity - 1]
        parts.append(to_dtype(_FAMILIES[category](base, level, vr, rng), x.dtype))
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
