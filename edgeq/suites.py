"""The risky suite of an evaluation: planned from the data, then written whole (fixed-n sampling,
``edgeq inputs``) or built lazily, a round's rows at a time (adaptive sampling).

Planning says what the suite is (its cells, the range mode and kind of each input array, the
families left out and why, the boundary cells); those facts go to the evaluation's notes and
to the data set the caller holds, whichever way the rows are then made. A lazily built suite
leaves each device's round files under its rounds folder; ``join_round_inputs`` joins them,
after every device ran, into the one input set of the rows run (OUTDIR/inputs/risky.npz) that
the report, ``--search``, ``--fix`` and ``deploy``'s smoke check read.

Beside ``evaluate``, which calls it; above ``inputs``.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from edgeq.files import sha256_file
from edgeq.inputs.inputset import InputSet
from edgeq.inputs.risky import SuitePlan, plan_risky_suite, write_plan
from edgeq.inputs.risky.lazy import LazySuite, join_rows, suite_identity
from edgeq.store.bisections import BisectionCache

SUITE_FILE = Path("inputs") / "risky.npz"  # under OUTDIR: the suite (fixed-n), or the rows run (built lazily)


def plan_suite(opts, data: InputSet, model: Path | None = None, lazy: bool = False) -> SuitePlan:
    """Plan the suite from ``data`` with the evaluation's options; ``model`` (the float .tflite) adds the
    ``boundary`` category; ``lazy``: its rows will be made a round at a time. Its facts go to ``data.extra``
    and its notes to ``opts.notes``."""
    plan = _plan(opts, data, model)
    if not lazy and plan.boundary is not None:
        plan.boundary.solve()
    _note_plan(opts, data, plan)
    return plan


def _plan(opts, data: InputSet, model: Path | None) -> SuitePlan:
    """The plan, its boundary pairs not bisected yet (``BoundaryPlan.solve`` bisects them)."""
    arrays = {name: np.asarray(a) for name, a in data.arrays.items()}
    return plan_risky_suite(arrays, None if data.y is None else np.asarray(data.y), seed=opts.seed,
                            max_per_category=opts.max_per_category, range_mode=opts.range_mode,
                            model=model, output_spec=opts.output_spec, input_kinds=opts.input_kinds, lazy=True)


def _note_plan(opts, data: InputSet, plan: SuitePlan) -> None:
    # the range mode used per input array, (mode, reason), the kinds and which cells may decide the
    # verdict: kept on the data set the caller holds
    data.extra.update(range_modes=plan.range_modes, input_kinds=dict(plan.kinds), suite_roles=plan.roles,
                      boundary=plan.boundary.facts() if plan.boundary is not None else None)
    stress = sorted(c for c, r in plan.roles.items() if r["role"] == "stress")
    if stress:
        opts.notes.append(f"reported beside the verdict, not deciding it (stress): {', '.join(stress)}")
    for name, layout in plan.layouts.items():
        opts.notes.append(f"input {name!r}: {layout}")
    reasons: dict[str, list[str]] = {}
    for family, reason in plan.skipped.items():
        reasons.setdefault(reason, []).append(family)
    for reason, families in reasons.items():
        what = "families" if len(families) > 1 else "category" if families == ["boundary"] else "family"
        opts.notes.append(f"risky {what} {', '.join(families)} left out: {reason}")
    if plan.boundary is not None:
        opts.notes.append(plan.boundary.summary())


def build_suite(opts, data: InputSet, path: Path | None = None, model: Path | None = None) -> Path:
    """Write the whole risky suite (default OUTDIR/inputs/risky.npz) as it is generated."""
    path = Path(path or opts.outdir / SUITE_FILE)
    write_plan(path, plan_suite(opts, data, model))
    return path


def planned_suite(opts, data: InputSet, model: Path, lazy: bool, bisections: BisectionCache | None = None) -> LazySuite:
    """The suite planned (its rows made only when asked: ``LazySuite.write_rows``, or ``write_whole`` for all of
    them; ``lazy``: a few at a time); its identity is its recipe's hash, which the float cache keys on whichever
    way the rows are made. ``bisections``: the host's saved boundary bisections, restored before any pair is
    bisected and kept as rows are made (what was reused goes to ``data.extra["bisections"]`` and the notes)."""
    plan = _plan(opts, data, model)
    options = {"seed": opts.seed, "max_per_category": opts.max_per_category, "range_mode": opts.range_mode,
               "input_kinds": opts.input_kinds, "output_spec": repr(opts.output_spec)}
    identity = suite_identity(plan, sha256_file(opts.data), options, sha256_file(model))
    made = None
    if bisections is not None and plan.boundary is not None and len(plan.boundary.first):
        made = _reuse_bisections(opts, data, plan.boundary, bisections, identity)
    if not lazy and plan.boundary is not None:
        plan.boundary.solve()
    _note_plan(opts, data, plan)
    return LazySuite(plan, identity, made)


def write_whole(suite: LazySuite, path: Path) -> Path:
    """Every row of the planned ``suite`` into ``path`` (fixed-n sampling), named by its identity."""
    write_plan(path, suite.plan, suite.identity)
    if suite.made is not None:
        suite.made()
    return path


def _reuse_bisections(opts, data: InputSet, boundary, cache: BisectionCache, identity: str):
    """Restore the saved bisections of this suite into ``boundary``; returns what keeps the new ones (called
    after rows are made: it saves when pairs were bisected since, one save at a time)."""
    saved = cache.load(identity)
    reused = boundary.restore(saved) if saved is not None else 0
    data.extra["bisections"] = {"pairs": len(boundary.first), "reused": reused, "cache": str(cache.entry(identity))}
    if reused:
        opts.notes.append(f"boundary: {reused} of {len(boundary.first)} interpolation pairs' bisections reused from "
                          f"the host's cache ({cache.entry(identity)})")
    lock, kept = threading.Lock(), [boundary.bisected]

    def keep() -> None:
        with lock:
            if boundary.bisected > kept[0]:
                state = boundary.solved()
                if state is not None and cache.save(identity, state) is not None:
                    kept[0] = int(state["done"].sum())
    return keep


def join_round_inputs(succeeded: dict, path: Path) -> Path | None:
    """The rows every device ran, joined into ``path``; the round files are then removed (the rows are in
    ``path`` once). None when no device ran a round."""
    files = [f for runs in succeeded.values() for f in getattr(runs, "round_inputs", ()) if Path(f).is_file()]
    if not files:
        return None
    join_rows(files, path)
    for f in files:
        Path(f).unlink(missing_ok=True)
    return path
