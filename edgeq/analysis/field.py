"""Which cells decide the verdict, and what the others say beside it.

The verdict answers: *will quantization lose accuracy on inputs this model can meet in
the field, where the float model still does its job?* So a cell decides only when

1. it stands for a field population (``edgeq.inputs.risky.roles``: the data, the user's
   own categories and the families that model a real shift of this input kind), and
2. the float model still works there. With labels: its accuracy in the cell keeps at
   least half of its clean skill above chance (chance = the cell's most common label's
   share) — below that the application is already broken by the shift, and a quantized
   model failing too is not quantization's loss. Without labels, for a classification
   output: the float model keeps its own clean answer (same source sample) on at least
   half of the cell — below that it no longer sees what it saw, so there is nothing left
   to preserve. Other outputs without labels have no such rule (a landmark that moves
   with a translated image is right to move); the report says so.

Every other cell is *stress* (synthetic or out-of-domain: near-boundary points, a pixel
at 16× the range, a preprocessing mistake) or *float fails here too*; both keep their
figures and are shown, and stress has its own opt-in gate (``--fail-on stress=…``).
"""

from __future__ import annotations

import numpy as np

from edgeq.inputs.risky.roles import FIELD, STRESS, category_role

COMPETENCE_SHARE = 0.5  # float keeps at least this share of its clean skill above chance
CONSISTENCY_FLOOR = 0.5  # without labels: float keeps its clean answer on at least this share
FLOAT_FAILS = "float fails here too"
RULE_LABELS = (f"with labels, the float model must keep {COMPETENCE_SHARE:.0%} of its clean accuracy above "
               "chance (the cell's most common label)")
RULE_CONSISTENCY = (f"without labels, the float model must keep its own clean answer on {CONSISTENCY_FLOOR:.0%} of "
                    "the cell's samples")


def float_kept(ev: dict, cells) -> np.ndarray | None:
    """Per sample: the float class equals the float class of the same source's clean sample
    (None when that cannot be known: no classes, no clean cell, no ``source_index``)."""
    if "ref_pred" not in ev or cells.source is None or "clean" not in cells.names:
        return None
    source = np.asarray(cells.source[:], dtype=np.int64)
    clean = cells.mask("clean")
    keys, inverse = np.unique(source, return_inverse=True)  # any ids a user's set carries, not only 0..n-1
    inverse = inverse.reshape(-1)
    clean_class = np.full(len(keys), -2, dtype=np.int64)
    clean_class[inverse[clean]] = ev["ref_pred"][clean]
    mine = clean_class[inverse]
    return np.where(mine != -2, ev["ref_pred"] == mine, True)


def competence(figures: dict, clean: dict | None, kept_share: float | None) -> dict | None:
    """{"basis", "float", "floor", "fails", "rule"} for one cell, or None when no rule applies."""
    if figures.get("float_accuracy") is not None and clean and clean.get("float_accuracy") is not None:
        chance, top = figures.get("chance"), clean["float_accuracy"]
        if chance is None or top <= chance:
            return None
        floor = chance + COMPETENCE_SHARE * (top - chance)
        return {"basis": "labels", "float": figures["float_accuracy"], "floor": floor,
                "fails": figures["float_accuracy"] < floor, "rule": RULE_LABELS}
    if kept_share is not None:
        return {"basis": "consistency", "float": kept_share, "floor": CONSISTENCY_FLOOR,
                "fails": kept_share < CONSISTENCY_FLOOR, "rule": RULE_CONSISTENCY}
    return None


def cell_role(category: str, severity, roles: dict | None, kinds=()) -> tuple[str, str]:
    """The suite's word for a category when it has one, else the rule's for these input kinds."""
    given = (roles or {}).get(category)
    if given and category != "boundary":
        return given.get("role", FIELD), given.get("reason", "")
    return category_role(category, None if severity is None else int(severity), kinds)


def mark(figures: dict, category: str, severity, roles: dict | None, clean: dict | None,
         kept_share: float | None, kinds=()) -> None:
    """Annotate one cell: its role, whether it counts for the verdict and, when not, why."""
    role, reason = cell_role(category, severity, roles, kinds)
    figures["role"] = role
    check = competence(figures, clean, kept_share) if role == FIELD and category != "clean" else None
    if check is not None:
        figures["float_competence"] = check
    if role == STRESS:
        figures.update(counts_for_verdict=False, not_counted=f"stress: {reason}")
    elif check is not None and check["fails"]:
        what = "accuracy" if check["basis"] == "labels" else "kept its clean answer on"
        figures.update(counts_for_verdict=False,
                       not_counted=f"{FLOAT_FAILS}: float {what} {check['float']:.1%}, below {check['floor']:.1%}")
    else:
        figures["counts_for_verdict"] = True


def counts(figures: dict) -> bool:
    """Whether a cell decides (cells from reports older than the field rule all did)."""
    return figures.get("counts_for_verdict", True)


def stress_section(sections: dict, thresholds: dict, band, cells_of, boundary: dict | None = None) -> dict:
    """Every stress cell of the outputs that drive the verdict, worst first, with sentences that say
    what the worst imply."""
    found = []
    for output, section in sections.items():
        if not section.get("drives_verdict", True):
            continue
        for category, level, figures in cells_of(section):
            if figures.get("role") != STRESS or figures.get("value") is None:
                continue
            found.append({"output": output, "category": category, "severity": level,
                          "metric": section.get("metric"), "value": figures["value"], "ci95": figures.get("ci95"),
                          "n": figures.get("trials", figures.get("n")), "band": band(figures["value"], thresholds),
                          "reason": figures.get("not_counted", "")})
    found.sort(key=lambda c: -c["value"])
    findings = [finding(c, boundary) for c in found if c["band"] != "robust"]
    return {"worst": found[0] if found else None, "cells": found, "findings": findings,
            "boundary": boundary}


def finding(cell: dict, boundary: dict | None) -> str:
    """One sentence for a stress cell; near-boundary ones tied to the share of real samples that close."""
    where = cell["category"] + (f"/{cell['severity']}" if cell["severity"] else "")
    text = f"{where} ({cell['output']}): {cell['value']:.1%} of {cell['n']} {_unit(cell)}"
    if cell["category"] != "boundary" or not boundary:
        return text + f" — {cell['reason'].removeprefix('stress: ')}"
    level = str(cell["severity"])
    share = (boundary.get("share_of_data") or {}).get(level)
    margin = (boundary.get("margin_levels") or {}).get(level)
    if margin is not None:
        text = (f"{where} ({cell['output']}): quantization moves the decision by more than {margin:.0%} of the "
                f"median float margin on {cell['value']:.1%} of {cell['n']} near-boundary points")
    else:
        text = (f"{where} ({cell['output']}): {cell['value']:.1%} of the {cell['n']} lowest-margin real samples "
                "change class")
    if share is not None:
        text += (f"; {share:.1%} of the real samples lie that close to the boundary, so at this rate about "
                 f"{share * cell['value']:.2%} of real decisions would change (the clean cell measures it directly)")
    return text


def search_findings(report: dict) -> list[str]:
    """One sentence each for the searched inputs (``--search``) and shifts (``--worst``): synthetic
    evidence like the stress cells, so it is listed with them, never a rate over a population."""
    found = []
    search = report.get("search") or {}
    if search.get("found"):
        bound = (search.get("distance") or {}).get("bound")
        near = f" within {bound:g} (L∞, of the data range)" if isinstance(bound, (int, float)) else ""
        found.append(f"search: {search['found']} input(s){near} of data samples on which float and quantized "
                     f"disagree, in {search.get('queries')} queries (the search picks them: evidence, not a rate)")
    worst = ((report.get("worst") or {}).get("worst") or [None])[0]
    if worst and worst.get("value") is not None:
        found.append(f"worst shift: {worst.get('description')}: {worst['value']:.1%} on {worst.get('n')} samples "
                     f"({worst.get('band')} level; the worst of {(report.get('worst') or {}).get('conditions_evaluated')}"
                     " shifts searched, which overstates it)")
    return found


def _unit(cell: dict) -> str:
    return {"accuracy_drop": "samples lost (accuracy drop)", "flip_rate": "decisions flip",
            "fail_rate": "samples fail"}.get(cell.get("metric") or "", "trials fail")
