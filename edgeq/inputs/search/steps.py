"""The search steps of ``edgeq evaluate``: ``--search`` and ``--worst`` after the verdict.

Each takes what it needs from the evaluation it follows as a ``SearchJob`` (built by
``edgeq.evaluate``, which this module never imports) and the evaluation's report; it runs
on the device the evaluation ran on (or this host for ``local`` and fleets), adds what it
chose to ``job.notes`` and returns the report section; neither changes the verdict
(``*_EFFECT`` says why).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgeq.devices.inventory import Device
from edgeq.inputs.search import prepare, write_found
from edgeq.inputs.search.disagreement import SearchConfig, search
from edgeq.inputs.search.evaluators import open_evaluator
from edgeq.inputs.search.operators import operators_for
from edgeq.inputs.search.worst import WorstConfig, worst_distributions

SEARCH_EFFECT = ("not part of the verdict: a disagreement found within the distance bound of a data sample is "
                 "evidence that the quantized model fails near the data, but the search picks its inputs, so "
                 "how many it finds is not a rate over any population; the verdict stays the suite cells'")
WORST_EFFECT = ("not part of the verdict: each shift's rate is measured on a few data samples and the worst of "
                "many shifts is reported, which overstates it; the verdict stays the suite cells'")


@dataclass
class SearchJob:
    """What a search step takes from the evaluation it follows.

    ``device``: the one device the evaluation ran on (an inventory ``Device``), or None for a
    fleet (candidates then run on this host); a ``local`` device runs in this process too.
    ``notes``: where the step says what it chose, in words (the evaluation passes its own list).
    """

    float_path: Path
    quant_path: Path
    data: Path  # the data the suite was built from: the search's seeds
    outdir: Path  # found inputs go to OUTDIR/inputs/search.npz
    threads: int  # the evaluation's own (its job options): candidates run as the suite ran
    resolver: str
    device: Device | None = None
    inventory: Path | None = None
    wait_s: float = 0.0
    seed: int = 0
    notes: list[str] = field(default_factory=list)


def _search_evaluator(job: SearchJob):
    """The device's agent when evaluate ran on one remote device; this process for ``local`` or a fleet."""
    device = job.device
    if device is None:
        job.notes.append("search: several devices, so candidates are evaluated on this host (in-process)")
    name = None if device is None or device.transport == "local" else device.name
    return open_evaluator(job.float_path, job.quant_path, name, job.inventory, job.threads, job.resolver, job.wait_s)


def _search_output(report: dict, prepared) -> str | None:
    """The output the search compares: the one that decided the verdict. The report names outputs its own
    way (``output_0``, a signature name); the search is given the output's index, which both agree on."""
    deciding = report.get("deciding_output")
    if deciding in prepared.output_names:
        return deciding
    index = ((report.get("outputs") or {}).get(deciding) or {}).get("index")
    if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(prepared.output_names):
        return str(index)
    return None


def _progress(progress, label: str):
    return (lambda done, total: progress(label, done, total)) if progress else None


def _interrupt_mark(result) -> dict:
    return {"_keyboard": True} if isinstance(result.error, KeyboardInterrupt) else {}


def run_search(job: SearchJob, report: dict, *, budget: int, distance: float, progress=None) -> dict:
    """The disagreement search from the data's samples, ``budget`` queries, found inputs at most ``distance``
    (L∞, a fraction of the data range) from their seeds → OUTDIR/inputs/search.npz."""
    norm = "linf"
    prepared = prepare(job.float_path, job.quant_path, job.data, distance, norm)
    config = SearchConfig(budget=int(budget), epsilon=distance, norm=norm, seed=job.seed,
                          output=_search_output(report, prepared))
    config.check()
    operators, skipped = [], {}
    for x in prepared.data:
        found_ops, left_out = operators_for(x.shape[1:])
        operators += [op for op in found_ops if op.name not in {o.name for o in operators}]
        skipped.update(left_out)
    with _search_evaluator(job) as evaluator:
        where = evaluator.describe()
        result = search(evaluator, prepared.data, prepared.spaces, operators, config, prepared.output_names,
                        prepared.float_info, progress=_progress(progress, "search queries"))
    path = write_found(job.outdir / "inputs" / "search.npz", prepared, result.found)
    if path is None:  # nothing found: no file (an input set may not be empty), and no stale one from before
        (job.outdir / "inputs" / "search.npz").unlink(missing_ok=True)
    if config.output is not None:
        job.notes.append(f"search: compares {report.get('deciding_output')}, the output that decided the verdict")
    job.notes.append(f"search: {result.queries} queries on {where['where']}, {norm} distance ≤ "
                     f"{distance:g} of the data range, objective {result.objective.get('reason', 'none')}")
    found = [{"seed_index": f.seed_index, "distance": f.distance, "query": f.query, "score": f.score,
              "float_class": f.float_class, "quant_class": f.quant_class, "operators": f.operators}
             for f in result.found]
    return {**result.summary(), "budget": config.budget, "distance": {"bound": config.epsilon, "norm": norm},
            "output": config.output, "evaluator": where, "operators_used": [op.name for op in operators],
            "skipped_operators": skipped, "seeds_from": str(job.data), "path": str(path) if path else None,
            "inputs_found": found, "evidence": "failure found" if found else "none found",
            "effect_on_verdict": SEARCH_EFFECT, **_interrupt_mark(result)}


def run_worst(job: SearchJob, report: dict, *, budget: int, progress=None) -> dict:
    """The worst input shifts (family × strength, pairs) in ``budget`` queries, ranked, with the strength that
    crosses catastrophic."""
    prepared = prepare(job.float_path, job.quant_path, job.data)
    config = WorstConfig(budget=int(budget), seed=job.seed, output=_search_output(report, prepared))
    config.check()
    with _search_evaluator(job) as evaluator:
        where = evaluator.describe()
        result = worst_distributions(evaluator, prepared.data, prepared.spaces, config, prepared.output_names,
                                     prepared.labels, prepared.float_info,
                                     progress=_progress(progress, "worst queries"))
    job.notes.append(f"worst shifts: {result.queries} queries on {where['where']}, "
                     f"{min(config.samples, prepared.n)} data samples per shift, metric {result.metric}")
    return {**result.summary(), "budget": config.budget, "samples": min(config.samples, prepared.n),
            "output": config.output, "evaluator": where, "effect_on_verdict": WORST_EFFECT,
            **_interrupt_mark(result)}
