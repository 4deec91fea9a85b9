"""Adaptive sampling on a device: the suite in rounds until every cell is decided, the verdict is
firm, or the device-time budget is spent.

The planner (``analysis.adaptive``) chooses each round's rows; ``devices.rounds`` runs the float
and quantized models on them in one locked session (the input set pushed once); after each
round both models' rounds so far are merged into one run directory each and compared with
anytime-valid intervals (``analysis.sequential``), which decides the cells the next round can
skip. What the loop did — rounds, rows per round, device seconds, why it stopped, the cells a
budget left undecided — goes to the report's ``sampling`` section.

Above devices and analysis, beside ``evaluate`` which calls it for each device.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeq.analysis.adaptive import SCHEDULE, Planner
from edgeq.analysis.compare import compare_runs
from edgeq.analysis.sequential import describe as interval_description
from edgeq.devices.rounds import open_rounds
from edgeq.inputs.inputset import load_inputset
from edgeq.results import RunResult, merge_rounds

SAMPLINGS = ("adaptive", "fixed")
CALIBRATION_PER_GROUP = 2  # with a budget, the first round times this many rows of every group


@dataclass(frozen=True)
class Sampling:
    """How the suite is sampled: ``adaptive`` (rounds) or ``fixed`` (every row once, Wilson
    intervals); ``until`` cells|verdict; ``budget_s``: device inference seconds at most."""

    mode: str = "adaptive"
    until: str = "cells"
    budget_s: float | None = None
    seed: int = 0

    @property
    def adaptive(self) -> bool:
        return self.mode == "adaptive"


def adaptive_runs(device, specs, outdir: Path, sampling: Sampling, judge: dict, progress=None,
                  wait_s: float = 0.0) -> tuple[list[RunResult], dict, list[RunResult]]:
    """Run ``specs`` (float, quant) on ``device`` in rounds; returns the merged runs, the
    ``sampling`` report section and the largest round's runs, whose sensors (power, temperature)
    measure energy: a merged run has no one sensor timeline. ``judge``: compare_runs's keyword
    arguments."""
    suite = load_inputset(specs[0].inputs, what="suite")
    planner = Planner(np.asarray(suite.category[:]), None if suite.severity is None else np.asarray(suite.severity[:]),
                      seed=sampling.seed, until=sampling.until)
    merged: list[RunResult] = []
    _clear_rounds(outdir / "rounds")
    with open_rounds(device, specs, outdir / "rounds", wait_s=wait_s, progress=progress) as rounds:
        while True:
            calibrating = sampling.budget_s is not None and not rounds.done
            rows = planner.next_round(_budget_rows(sampling, rounds),
                                      per_group=CALIBRATION_PER_GROUP if calibrating else None)
            if rows is None:
                break
            rounds.run(rows)
            merged = [merge_rounds([r[k] for r in rounds.done], outdir / "runs" / spec.label)
                      for k, spec in enumerate(specs)]
            planner.update(compare_runs(merged[0], merged[1], **judge, interval="anytime")["outputs"])
        costs = [r.costs() for r in rounds.done]
        largest = max(rounds.done, key=lambda r: len(r.rows))
    section = dict(planner.describe(), budget_s=sampling.budget_s, device_s=sum(c["device_s"] for c in costs),
                   round_costs=costs, measured_round=largest.index, **interval_description())
    return merged, section, list(largest)


def _clear_rounds(root: Path) -> None:
    """An evaluation run again into the same OUTDIR (a nightly job) replaces its rounds, as a fixed
    run replaces its runs: only the ``<label>/round-<k>`` folders edgeq wrote are removed."""
    if not root.is_dir():
        return
    for folder in sorted(root.glob("*/round-*")):
        if folder.is_dir():
            shutil.rmtree(folder)


def _budget_rows(sampling: Sampling, rounds) -> int | None:
    """Rows the budget still pays for, at the speed the rounds so far ran (both models per row);
    before any round, no cap (the calibration round takes a few rows of every group)."""
    if sampling.budget_s is None or not rounds.done:
        return None
    ran = sum(len(r.rows) for r in rounds.done)
    per_row = rounds.device_s / ran if ran else 0.0
    left = sampling.budget_s - rounds.device_s
    if left <= 0:
        return 0
    return int(left / per_row) if per_row > 0 else None


def fixed_section(sampling: Sampling, rows: int) -> dict:
    """The report's ``sampling`` section for a fixed-n run: every row once, Wilson intervals."""
    return {"sampling": "fixed", "rows_run": rows, "suite_rows": rows, "share_run": 1.0,
            "interval_method": "wilson", "schedule": list(SCHEDULE)[:0], "budget_s": sampling.budget_s}
