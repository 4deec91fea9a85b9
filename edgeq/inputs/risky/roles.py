"""Which cells of a suite may decide the verdict: field populations vs stress findings.

The verdict answers one question: will quantization lose accuracy on inputs this model
can meet in the field? A cell may decide it only when it stands for such inputs: the
data itself (``clean``), a user's own categories, and the families that model a real
shift *of this input kind* (``Family.applies_to``). Everything else is a **stress**
finding, reported beside the verdict with its own figures and its own opt-in gate:

- ``boundary`` — severity 1 is a selection (the data's lowest float margins), not a
  population: its flip rate over-states what the population loses, and the clean cell
  measures those samples within their population; severities 2 and 3 are synthetic
  interpolations placed at a fixed share of the median float margin, with no population
  behind them at all;
- a family applied where it stands for no field input (``Family.stress_for``: a pixel at
  16× the sensor's range, a DC offset on a waveform, a preprocessing mistake).

One table of kinds per family lives with each family (one file each); this module only
reads it, so a new family says once what it stands for.
"""

from __future__ import annotations

from collections.abc import Iterable

from edgeq.inputs.risky.boundary import BOUNDARY, LEVELS, LOW_FRACTION, MIN_COUNT
from edgeq.inputs.risky.families import FAMILIES

FIELD, STRESS = "field", "stress"


def boundary_reason(severity: int | None) -> str:
    if severity == 1:
        return (f"a selection of the data's lowest float margins (the lowest {LOW_FRACTION:.0%}, at least "
                f"{MIN_COUNT} samples), not a population: the clean cell measures them among all the others")
    if severity in LEVELS:
        return (f"synthetic interpolations placed where the float margin is {LEVELS[severity]:.0%} of the "
                "median: no field population behind them")
    return "near-boundary points: a selection and synthetic interpolations, not a field population"


def category_role(category: str, severity: int | None = None, kinds: Iterable[str] = ()) -> tuple[str, str]:
    """(FIELD or STRESS, why not field) for one cell; ``kinds``: the input kinds of the arrays
    the family was applied to (empty when unknown: then only families that are stress on
    every kind they apply to, and ``boundary``, are stress)."""
    if category == BOUNDARY:
        return STRESS, boundary_reason(severity)
    family = FAMILIES.get(category)
    if family is None:
        return FIELD, ""
    kinds = [k for k in kinds if family.applies(k)]
    if not kinds:
        if family.applies_to is not None and not family.applies_to and family.stress_for:
            return STRESS, next(iter(family.stress_for.values()))
        return FIELD, ""
    roles = [family.role(k) for k in kinds]
    if any(role == FIELD for role, _ in roles):
        return FIELD, ""
    return STRESS, roles[0][1]


def suite_roles(categories: Iterable[str], kinds: Iterable[str]) -> dict[str, dict]:
    """{category: {"role", "reason"}} for a suite's categories (boundary's reason covers its
    severities; compare asks ``category_role`` per severity)."""
    kinds = list(kinds)
    out = {}
    for category in dict.fromkeys(categories):
        role, reason = category_role(category, None, kinds)
        out[category] = {"role": role, "reason": reason}
    return out
