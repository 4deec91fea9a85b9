"""The family registry: every risky family, registered once with its transform and description.

A family is (name, transform, severity levels, description). Levels come from the
one severity table (severities.py); the description is generated from them, so a
report can never describe strengths the suite did not use. CATEGORIES is "clean"
followed by the families in table order; a family's position there seeds its
generator, so adding a family never changes the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edgeq.inputs.risky import corruption, photometric, sensors
from edgeq.inputs.risky.observed import DataStats
from edgeq.inputs.risky.severities import SEVERITIES, mult, pct, plain

Transform = Callable[[np.ndarray, float, DataStats, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Family:
    name: str
    transform: Transform
    describe: Callable[[tuple], str]  # levels → one line for reports

    @property
    def levels(self) -> tuple:
        return SEVERITIES[self.name]

    @property
    def description(self) -> str:
        return self.describe(self.levels)


_REGISTRY = (
    Family("brightness+", photometric.brighten,
           lambda s: f"whole input shifted up by {pct(s)} of the data range, clipped"),
    Family("brightness-", photometric.darken,
           lambda s: f"whole input shifted down by {pct(s)} of the data range, clipped"),
    Family("contrast+", photometric.contrast,
           lambda s: f"contrast around each sample's mean stretched {mult(s)}, clipped"),
    Family("contrast-", photometric.contrast,
           lambda s: f"contrast around each sample's mean compressed {mult(s)}"),
    Family("noise", corruption.gaussian_noise,
           lambda s: f"Gaussian noise with sigma {pct(s)} of the data range, clipped"),
    Family("impulse", corruption.salt_and_pepper,
           lambda s: f"salt and pepper: {pct(s)} of each sample's elements set to the range min or max"),
    Family("outlier", corruption.outlier,
           lambda s: f"one element per sample set to max + {plain(s)}× the data range (deliberately out of range)"),
    Family("sentinel", sensors.sentinel,
           lambda s: f"the {plain(s)} features with the most extreme observed value (e.g. a -999 missing code) "
                     "set to it in every sample"),
    Family("stuck", sensors.stuck,
           lambda s: f"{plain(s)} random features per sample stuck at their observed min or max"),
    Family("scaled", sensors.scaled,
           lambda s: f"one random feature per sample in another unit: multiplied {mult(s)} (not clipped to the data range)"),
    Family("offset", sensors.offset,
           lambda s: f"one random feature per sample drifted by ±{plain(s)}× its observed span (not clipped to the data range)"),
    Family("dropout-zero", sensors.dropout_zero,
           lambda s: f"{pct(s)} of each sample's features (at least one) read 0"),
    Family("dropout-mean", sensors.dropout_mean,
           lambda s: f"{pct(s)} of each sample's features (at least one) set to their observed mean"),
)

FAMILIES: dict[str, Family] = {f.name: f for f in _REGISTRY}
if list(FAMILIES) != list(SEVERITIES) or any(len(v) != 3 for v in SEVERITIES.values()):
    raise ImportError("edgeq.inputs.risky: the family registry and the severity table disagree")

CATEGORIES: tuple[str, ...] = ("clean", *FAMILIES)


def describe_categories() -> dict[str, str]:
    """One line per category for reports, generated from the table so it never lies."""
    return {"clean": "the data unchanged (reference for every other category)",
            **{name: f.description for name, f in FAMILIES.items()}}
