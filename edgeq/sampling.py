"""Adaptive sampling on a device: the suite in rounds until every cell is decided, the verdict is
firm, or the device-time budget is spent.

The planner (``analysis.adaptive``) chooses each round's rows; ``devices.rounds`` runs the float
and quantized models on them in one locked session (the input set pushed once); after each
round both models' rounds so far are merged into one run directory each and compared with
anytime-valid intervals (``analysis.sequential``), which decides the cells the next round can
skip. What the loop did — rounds, rows per round, device seconds, why it stopped, the cells a
budget left undecided — goes to the report's ``sampling`` section.

Float outputs are reused (``store.run_cache``): inside the rounds' session, where the agent's hello
says which runtime and arch run the models, the float run's cache key is looked up; each round runs the
float model only on its rows the cache does not hold (the quantized model on all of them), and the float
run the comparison reads is merged from the new float rounds and the cached rows this evaluation took.
The new float rows go into the cache at the end. ``fixed_runs`` does the same for a fixed-n suite: when
the cache holds every row, the float model is not run at all.

Above devices and analysis, beside ``evaluate`` which calls it for each device.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeq.analysis.adaptive import Planner
from edgeq.analysis.compare import INTERVALS, compare_runs
from edgeq.analysis.rules import MIN_N
from edgeq.analysis.sequential import describe as interval_description
from edgeq.devices.rounds import RoundInputs, open_rounds
from edgeq.errors import EdgeqError
from edgeq.inputs.inputset import load_inputset
from edgeq.inputs.risky.lazy import LazySuite
from edgeq.results import RunResult
from edgeq.rows import merge_rounds, run_rows, take_run_rows
from edgeq.store.run_cache import CacheKey, RunCache, key_for

SAMPLINGS = ("adaptive", "fixed")
CALIBRATION_PER_GROUP = 2  # with a budget, the first round times this many rows of every group
CACHE_ENTRY = "cache-entry"  # ROUNDS/<float label>/: the cached float run, linked from the host's cache
CACHE_ROWS = "cache-rows"  # ROUNDS/<float label>/: the cached rows this evaluation took, merged with its rounds
SUITE_ROUNDS = "suite"  # ROUNDS/suite/round-<k>.npz: a lazily built suite's rows of round k


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


class SampledRuns(list):
    """A device's [float, quant] runs, how the suite was sampled for them (the report's ``sampling``), the
    runs whose sensors measure energy and temperature (adaptive: the largest round's), and what the float
    cache gave: ``float_reused`` (the report's section, None when no row was reused), ``float_ran`` (the
    float runs made now, whose latency the report gives; None: ``self[0]`` is all new) and ``warnings``."""

    def __init__(self, runs, section: dict, measured=None, float_reused: dict | None = None,
                 float_ran: list | None = None, warnings=()):
        super().__init__(runs)
        self.section, self.measured = section, measured
        self.float_reused, self.float_ran, self.warnings = float_reused, float_ran, list(warnings)
        self.round_inputs: list[Path] = []  # a lazily built suite's round files (joined into the suite, then removed)


def float_key(rounds, spec, device) -> CacheKey | None:
    """The float cache key of ``spec`` in an open rounds session (the hello's runtime and arch, the hashes the
    rounds made at open; a set of rows of a suite edgeq built is keyed by the suite's identity, as its runs are
    named, so evaluations of one suite share rows whichever of them were made); None when the hello did not
    say which runtime or arch runs the model."""
    facts = rounds.opened.facts or {}
    runtime = facts.get("runtime") or {}
    digests = rounds.digests
    if not (runtime.get("name") and runtime.get("version") and facts.get("arch")):
        return None
    suite = next((item.suite for item in rounds.prepared if item.spec.label == spec.label), None)
    inputs_sha256 = suite["sha256"] if suite else digests.get(spec.inputs)
    if spec.model not in digests or inputs_sha256 is None:
        return None
    return key_for(digests[spec.model], inputs_sha256, device.name, facts, spec.resolver, spec.threads,
                   spec.batch_size)


def _ran(rounds, k: int) -> list[RunResult]:
    """The ``k``-th spec's runs of every round it ran, in order (a round it skipped whole has None there)."""
    return [r[k] for r in rounds.done if r[k] is not None]


def _reused(cache: RunCache, key: str, rows: int, of: int) -> dict | None:
    return {"rows": int(rows), "of": int(of), "key": str(key), "cache": str(cache.entry(key))} if rows else None


def _store(cache: RunCache, key, runs: list) -> None:
    """The new float rows into the cache; a failure costs the next evaluation the reuse, never this one."""
    if not runs:
        return
    try:
        cache.store(key, runs)
    except (OSError, EdgeqError) as exc:
        cache.say(f"float outputs not cached: {exc}")


def adaptive_runs(device, specs, outdir: Path, sampling: Sampling, judge: dict, progress=None,
                  wait_s: float = 0.0, cache: RunCache | None = None, suite: LazySuite | None = None,
                  suite_path: Path | None = None) -> SampledRuns:
    """Run ``specs`` (float, quant) on ``device`` in rounds; returns the merged runs with the ``sampling``
    report section and the largest round's runs, whose sensors (power, temperature) measure energy: a
    merged run has no one sensor timeline. ``judge``: compare_runs's keyword arguments. ``cache``: the host's
    float runs, for ``specs[0]`` (None: none). ``suite``: the suite built lazily — each round's rows are made
    into ``OUTDIR/rounds/suite/round-<k>.npz`` and pushed alone (``round_inputs`` lists them), and the runs
    name ``suite_path`` (where the rows run are joined afterwards) as their input set; None: ``specs``' input
    set holds the whole suite, pushed once."""
    if suite is None:
        whole = load_inputset(specs[0].inputs, what="suite")
        category, severity = whole.category, whole.severity
    else:
        category, severity = suite.category, suite.severity
    planner = Planner(np.asarray(category[:]), None if severity is None else np.asarray(severity[:]),
                      seed=sampling.seed, until=sampling.until, min_n=judge.get("min_n", MIN_N))
    merged: list[RunResult] = []
    ref = specs[0].label
    _clear_rounds(outdir / "rounds")
    key, cached, subset = None, None, None
    have = reused = np.empty(0, dtype=np.int64)
    made: list[Path] = []
    built_s = [0.0]  # host seconds spent making the rounds' rows

    def next_rows(rounds):
        calibrating = sampling.budget_s is not None and (rounds is None or not rounds.done)
        rows = planner.next_round(_budget_rows(sampling, rounds),
                                  per_group=CALIBRATION_PER_GROUP if calibrating else None)
        if rows is None or suite is None:
            return rows, None
        started = time.perf_counter()
        path = suite.write_rows(rows, outdir / "rounds" / SUITE_ROUNDS / f"round-{len(made) + 1}.npz")
        built_s[0] += time.perf_counter() - started
        made.append(path)
        return rows, RoundInputs(path, rows, suite.plan.tags(rows), {"path": str(suite_path), "sha256": suite.identity,
                                                                    "built": "lazily"})

    rows, inputs = next_rows(None)
    if inputs is not None:  # the session opens with the first round's rows: the whole suite is never made
        specs = [dataclasses.replace(s, inputs=inputs.path) for s in specs]
    with open_rounds(device, specs, outdir / "rounds", wait_s=wait_s, progress=progress) as rounds:
        if cache is not None:
            key = float_key(rounds, specs[0], device)
            cached = cache.lookup(key, into=outdir / "rounds" / ref / CACHE_ENTRY) if key is not None else None
            have = run_rows(cached) if cached is not None else have
        while rows is not None:
            hit = np.intersect1d(rows, have, assume_unique=True)
            rounds.run(rows, skip={ref: hit} if len(hit) else None, inputs=inputs)
            if len(hit):
                reused = np.union1d(reused, hit)
                subset = take_run_rows(cached, reused, outdir / "rounds" / ref / CACHE_ROWS)
            merged = [merge_rounds(_ran(rounds, k) + ([subset] if k == 0 and subset is not None else []),
                                   outdir / "runs" / spec.label)
                      for k, spec in enumerate(specs)]
            planner.update(compare_runs(merged[0], merged[1], **judge, interval="anytime")["outputs"])
            rows, inputs = next_rows(rounds)
        costs = [r.costs() for r in rounds.done]
        largest = max(rounds.done, key=lambda r: len(r.rows))
    float_ran = _ran(rounds, 0)
    if key is not None:
        _store(cache, key, float_ran)
    section = dict(planner.describe(), budget_s=sampling.budget_s, device_s=sum(c["device_s"] for c in costs),
                   round_costs=costs, measured_round=largest.index, **interval_description())
    if suite is not None:
        section["suite_built"] = {"rows": planner.rows_run, "of": suite.n, "how": "lazily: each round's rows only",
                                  "seconds": round(built_s[0], 3)}
    if len(reused) and not float_ran:
        section["float_latency"] = "cached"  # no float row ran: the float latency is the cached run's
    # each model's largest round among those it ran (the float model skips the rounds the cache held whole);
    # a model that ran no round has no sensor timeline of this evaluation: its merged run stands in
    measured = [max(_ran(rounds, k), key=lambda run: run.n, default=merged[k]) for k in range(len(specs))]
    found = SampledRuns(merged, section, measured, _reused(cache, key, len(reused), merged[0].n) if key else None,
                        float_ran if len(reused) else None, cache.warnings if cache is not None else ())
    found.round_inputs = made
    return found


def fixed_runs(device, specs, outdir: Path, sampling: Sampling, cache: RunCache, progress=None,
               wait_s: float = 0.0) -> SampledRuns:
    """Every row once, float and quant in one locked session, into ``OUTDIR/runs/<label>``; when the cache holds
    every row of ``specs[0]`` (the float model), that model is not run: its cached run is linked into
    ``OUTDIR/runs/<label>`` (hard links, copies where the file system has none: the report's folder stays
    whole whatever the cache later evicts, at no cost in time or space). Otherwise the float model runs every
    row and the cache gets its outputs."""
    ref = specs[0].label
    folders = {s.label: outdir / "runs" / s.label for s in specs}
    key, cached = None, None
    with open_rounds(device, specs, outdir / "runs", wait_s=wait_s, progress=progress) as rounds:
        key = float_key(rounds, specs[0], device)
        cached = cache.lookup(key, into=folders[ref]) if key is not None else None
        if cached is not None and len(run_rows(cached)) != rounds.samples:
            shutil.rmtree(cached.path, ignore_errors=True)  # some rows only: the float model runs them all
            cached = None
        skip = {ref: np.arange(rounds.samples, dtype=np.int64)} if cached is not None else None
        done = rounds.run(None, skip=skip, folders=folders)
    runs = [cached if run is None else run for run in done]
    if key is not None and cached is None:
        _store(cache, key, [runs[0]])
    section = fixed_section(sampling, runs[0].n)
    if cached is not None:
        section["float_latency"] = "cached"
    reused = _reused(cache, key, runs[0].n, runs[0].n) if cached is not None else None
    return SampledRuns(runs, section, None, reused, [] if cached is not None else None, cache.warnings)


def _clear_rounds(root: Path) -> None:
    """An evaluation run again into the same OUTDIR (a nightly job) replaces its rounds, as a fixed
    run replaces its runs: only the ``<label>/round-<k>`` folders edgeq wrote (and the cached float rows
    it linked and took) are removed."""
    if not root.is_dir():
        return
    for pattern in ("*/round-*", f"*/{CACHE_ENTRY}", f"*/{CACHE_ROWS}"):
        for folder in sorted(root.glob(pattern)):
            if folder.is_dir():
                shutil.rmtree(folder)
    for stale in sorted((root / SUITE_ROUNDS).glob("round-*.npz")):
        stale.unlink()


def _budget_rows(sampling: Sampling, rounds) -> int | None:
    """Rows the budget still pays for, at the speed the rounds so far ran (both models per row);
    before any round, no cap (the calibration round takes a few rows of every group)."""
    if sampling.budget_s is None or rounds is None or not rounds.done:
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
            "interval_method": INTERVALS["wilson"], "schedule": [], "budget_s": sampling.budget_s}
