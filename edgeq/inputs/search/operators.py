"""Mutation operators: the registered risky families at a continuous strength, and small local pushes.

Every operator takes a float64 stack (n, *sample_shape), a strength in (0, 1] and the
``Space`` of its input (value range, the distance bound), and returns a new stack; the
search projects the result back into the distance ball around each seed and into the
data range afterwards, so an operator may overshoot.

A family's strength is a *continuous severity* ``s`` in [0, 3] (``family_at``): at
1, 2 and 3 it is exactly the suite's level 1, 2, 3 (the severity table's values); in
between, the family's parameter is interpolated linearly between neighbouring levels
(rounded when the levels are whole numbers: JPEG quality, feature counts); below 1 the
level-1 result is blended with the input, ``x + s·(T(x) − x)``, because a family's
parameter has no common "no change" value (a gain of 1, a shift of 0, a quality of 100).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edgeq.inputs.risky.families import FAMILIES, Family, input_kind
from edgeq.inputs.risky.observed import DataStats
from edgeq.inputs.search.settings import DISTANCE

MAX_SEVERITY = 3.0


@dataclass
class Space:
    """One model input's data: its families' statistics, the per-element range span used for
    distances (the families' own range), the range to clip to, and the distance bound."""

    name: str
    data: DataStats
    epsilon: float = DISTANCE
    norm: str = "linf"

    @property
    def span(self) -> np.ndarray:
        return self.data.range.span

    @property
    def lo(self) -> np.ndarray:
        return self.data.range.lo

    @property
    def hi(self) -> np.ndarray:
        return self.data.range.hi

    def step(self, strength: float) -> np.ndarray:
        """The size of a full-strength local push: the distance bound in data units (per element)."""
        return strength * self.epsilon * self.span


Apply = Callable[[np.ndarray, float, Space, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Operator:
    name: str
    apply: Apply
    family: str | None = None  # the risky family it comes from, if any
    notes: tuple = field(default=())


# --- families at a continuous strength -------------------------------------------------------

def level_at(family: Family, severity: float):
    """The family's parameter at a continuous severity in [1, 3] (see the module docstring)."""
    levels = list(family.levels)
    s = min(max(float(severity), 1.0), MAX_SEVERITY)
    k = min(int(np.floor(s)), 2)
    if k == 3 or s >= MAX_SEVERITY:
        value = levels[2]
    else:
        lo, hi = levels[k - 1], levels[k]
        value = lo + (s - k) * (hi - lo)
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in levels):
        return int(round(value))
    return float(value)


def family_at(family: Family, x: np.ndarray, severity: float, data: DataStats,
              rng: np.random.Generator) -> np.ndarray:
    """``family`` applied at continuous ``severity`` in (0, 3] to the float64 stack ``x``."""
    if severity <= 0:
        return x.copy()
    changed = family.transform(x, level_at(family, max(severity, 1.0)), data, rng)
    if severity >= 1.0:
        return changed
    return x + severity * (changed - x)


def graded(family: Family) -> bool:
    """A family with three strengths; a one-level mistake (a preprocessing error) has no path to search."""
    return len(family.levels) == 3


def family_fits(family: Family, sample_shape: tuple) -> bool:
    fits = getattr(family, "applies_to_shape", None)
    return bool(fits(tuple(sample_shape))) if fits else family.applies(input_kind(tuple(sample_shape)))


def _family_operator(family: Family) -> Operator:
    def apply(x, strength, space, rng):
        return family_at(family, x, strength * MAX_SEVERITY, space.data, rng)

    return Operator(f"family:{family.name}", apply, family=family.name)


# --- local perturbations ----------------------------------------------------------------------

def _gaussian(x, strength, space, rng):
    return x + rng.normal(size=x.shape) * space.step(strength) * 0.5


def _sign(x, strength, space, rng):
    """Every element pushed to the corner of the L∞ ball (±bound), a random sign each."""
    return x + rng.choice((-1.0, 1.0), size=x.shape) * space.step(strength)


def _push_one(x, strength, space, rng):
    """A few elements (1 to 3) of each sample pushed up or down by the whole bound."""
    flat = x.reshape(len(x), -1).copy()
    step = np.broadcast_to(space.step(strength), (1,) + x.shape[1:]).reshape(-1)
    for row in flat:
        picked = rng.choice(row.size, size=min(row.size, int(rng.integers(1, 4))), replace=False)
        row[picked] += rng.choice((-1.0, 1.0), size=len(picked)) * step[picked]
    return flat.reshape(x.shape)


def _block(x, strength, space, rng):
    """A contiguous run of elements (a patch's rows for images) shifted together by ±bound."""
    flat = x.reshape(len(x), -1).copy()
    step = np.broadcast_to(space.step(strength), (1,) + x.shape[1:]).reshape(-1)
    width = max(1, flat.shape[1] // 8)
    for row in flat:
        start = int(rng.integers(0, max(1, row.size - width + 1)))
        row[start:start + width] += rng.choice((-1.0, 1.0)) * step[start:start + width]
    return flat.reshape(x.shape)


def _scale(x, strength, space, rng):
    """The sample's deviation from its own mean scaled by 1 ± strength·bound (a tiny contrast change)."""
    axes = tuple(range(1, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    gain = 1.0 + rng.choice((-1.0, 1.0), size=(len(x),) + (1,) * (x.ndim - 1)) * strength * space.epsilon
    return mean + gain * (x - mean)


LOCAL_OPERATORS = (
    Operator("gaussian", _gaussian),
    Operator("sign-noise", _sign),
    Operator("push", _push_one),
    Operator("block", _block),
    Operator("scale", _scale),
)


def operators_for(sample_shape: tuple, families: list[str] | None = None,
                  local: bool = True) -> tuple[list[Operator], dict[str, str]]:
    """(operators, {family: why left out}) for inputs whose samples have ``sample_shape``."""
    chosen, skipped = [], {}
    for name, family in FAMILIES.items():
        if families is not None and name not in families:
            continue
        if not family_fits(family, sample_shape):
            skipped[name] = f"does not apply to samples of shape {list(sample_shape)}"
            continue
        if not graded(family):
            skipped[name] = "a mistake with no strength to search along"
            continue
        chosen.append(_family_operator(family))
    return (list(LOCAL_OPERATORS) if local else []) + chosen, skipped
