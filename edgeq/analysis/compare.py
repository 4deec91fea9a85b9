"""Float vs quantized: pure functions over saved outputs, so a comparison reruns offline.

Every output is judged by its kind (``kinds/``), in every *cell*: a (category,
severity) pair of the risky suite. The verdict rule (DESIGN.md): a cell's rate is the
accuracy drop of a labelled classification output, otherwise the kind's own flip or
fail rate; every deciding cell below the degraded threshold → robust, any at or above the
catastrophic one → catastrophic (``rules.THRESHOLDS``: 0.02 and 0.10), otherwise
degraded. The worst cell of the worst output decides — not a category mean, which
would let two mild severities hide a bad one. Only *field* cells where the float model
still works decide (``field.py``); stress cells and cells where float fails too are
reported beside the verdict. An output gated by another (``when.py``) is judged only
where the float model's gate is open. Each rate carries a 95 % interval; cells with
fewer than ``min_n`` trials are flagged, and a verdict resting on one says so.
"""

from __future__ import annotations

import numpy as np

from edgeq.analysis import field
from edgeq.analysis.intervals import wilson
from edgeq.analysis.kinds import get_kind
from edgeq.analysis.rules import MIN_N, THRESHOLDS
from edgeq.analysis.sequential import INTERVAL_METHOD, confidence_sequence, paired_drop
from edgeq.analysis.plan import OutputInfo, OutputSpec, check_labels, describe_outputs, plan_outputs
from edgeq.analysis.when import open_mask, rule_text
from edgeq.errors import ConfigError
from edgeq.inputs.npz import row_blocks

INTERVALS = {"wilson": "wilson", "anytime": INTERVAL_METHOD}  # --sampling fixed / adaptive
CHUNK_ELEMENTS = 1 << 16  # output values per evidence slice
VERDICTS = ("robust", "degraded", "catastrophic")
METRIC_KEYS = ("n", "float_accuracy", "quant_accuracy", "accuracy_drop", "agreement",
               "flip_rate", "sqnr_db", "kl_mean", "max_abs_error")


def verdict_metric(metrics: dict) -> float:
    """The number the verdict uses for a group: its ``value``, or the old contract's rule."""
    if metrics.get("value") is not None:
        return metrics["value"]
    drop = metrics.get("accuracy_drop")
    return metrics["flip_rate"] if drop is None else drop


def band(value: float, thresholds: dict = THRESHOLDS) -> str:
    if value >= thresholds["catastrophic"]:
        return "catastrophic"
    return "degraded" if value >= thresholds["degraded"] else "robust"


def verdict(categories: dict[str, dict], thresholds: dict = THRESHOLDS) -> tuple[str, str | None]:
    """(verdict, worst group) over already summarised groups."""
    if not categories:
        raise ConfigError("nothing to compare: no samples")
    worst = max(categories, key=lambda name: verdict_metric(categories[name]))
    return band(verdict_metric(categories[worst]), thresholds), worst


class Cells:
    """The suite's groups: categories in order, and the severities inside each.

    Categories are held as small integer codes, read from the tag a block at a
    time: the per-sample strings of a large suite never sit in memory.
    """

    def __init__(self, samples: dict, n: int):
        category = samples.get("category")
        self.names, self.codes = (["all"], np.zeros(n, dtype=np.int32)) if category is None else _codes(category)
        self.severity = np.asarray(samples.get("severity", np.zeros(n, dtype=np.int64)))
        self.source = samples.get("source_index")  # the data row each sample was made from, when known
        if len(self.codes) != n or len(self.severity) != n:
            raise ConfigError(f"the run's sample tags do not match its {n} outputs")
        self.reference = self.mask("clean") if "clean" in self.names else np.ones(n, dtype=bool)

    def mask(self, name: str) -> np.ndarray:
        return self.codes == self.names.index(name)

    def levels(self, name) -> list[int]:
        return sorted(set(self.severity[self.mask(name)].tolist()))


def _codes(category) -> tuple[list[str], np.ndarray]:
    """(names in order of first appearance, one code per sample)."""
    names: dict[str, int] = {}
    codes = np.empty(len(category), dtype=np.int32)
    lo = 0
    for block in row_blocks(category, rows=1 << 15):
        found, first, inverse = np.unique(block, return_index=True, return_inverse=True)
        for k in np.argsort(first):
            names.setdefault(str(found[k]), len(names))
        codes[lo:lo + len(block)] = np.array([names[str(f)] for f in found], dtype=np.int32)[inverse.reshape(-1)]
        lo += len(block)
    return list(names), codes


def compare_outputs(ref, cand, samples: dict[str, np.ndarray], *, outputs: list[OutputInfo] | None = None,
                    spec: OutputSpec | None = None, thresholds: dict = THRESHOLDS, min_n: int = MIN_N,
                    where: str = "input set", roles: dict | None = None, boundary: dict | None = None,
                    kinds: tuple = (), interval: str = "wilson") -> dict:
    """Compare every output; ``ref``/``cand`` are one array or a list (one per output).
    ``where`` names the labels' file in errors; ``roles``: the suite's {category: {"role",
    "reason"}} (``SuitePlan.roles``; without it, the rule's defaults by name); ``boundary``:
    the boundary cells' ties to the data (``BoundaryPlan.facts``) for the stress section;
    ``kinds``: the input kinds, for categories ``roles`` does not name; ``interval``: ``wilson``
    (fixed-n samples: Wilson, Newcombe's paired difference) or ``anytime`` (samples drawn in rounds
    until decided: the anytime-valid confidence sequence of ``sequential``)."""
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {', '.join(INTERVALS)}, got {interval!r}")
    ref, cand = _as_list(ref), _as_list(cand)
    if len(ref) != len(cand):
        raise ConfigError(f"the models have different numbers of outputs: {len(ref)} vs {len(cand)}")
    for k, (r, c) in enumerate(zip(ref, cand)):
        if r.shape != c.shape:
            raise ConfigError(f"outputs differ in shape: {r.shape} vs {c.shape} (output {k})")
    n = len(ref[0])
    if n == 0:
        raise ConfigError("nothing to compare: no samples")
    outputs = outputs or describe_outputs([f"output_{k}" for k in range(len(ref))], [r.shape[1:] for r in ref])
    labels = None if samples.get("y") is None else np.asarray(samples["y"])
    plans = plan_outputs(outputs, spec, labels is not None, values=ref)
    if labels is not None:
        check_labels(plans, outputs, labels, where)
    cells = Cells(samples, n)
    sections = {outputs[p.index].short: judge_output(p, ref, cand, labels, cells, thresholds, min_n, roles, kinds,
                                                     interval)
                for p in plans}
    result = assemble(sections, outputs, thresholds, min_n, labels is not None)
    result["interval_method"] = INTERVALS[interval]
    result["stress"] = field.stress_section(sections, thresholds, band, cells_of, boundary)
    return result


def _as_list(x) -> list[np.ndarray]:
    return [x] if isinstance(x, np.ndarray) else list(x)


def judge_output(plan, ref, cand, labels, cells: Cells, thresholds, min_n, roles: dict | None = None,
                 kinds: tuple = (), interval: str = "wilson") -> dict:
    """One output's section: per-sample evidence once, then every group reduces it; every
    cell says whether it decides the verdict (``field.mark``)."""
    kind = get_kind(plan.kind)
    parts = {"output": plan.index, **plan.members}
    ref_parts, cand_parts = {r: ref[i] for r, i in parts.items()}, {r: cand[i] for r, i in parts.items()}
    gate = open_mask(plan.when, ref)
    reference = cells.reference if gate is None or not (cells.reference & gate).any() else cells.reference & gate
    kind.prepare(ref_parts, cand_parts, plan, reference)
    ev = chunked_evidence(kind, ref_parts, cand_parts, plan, labels if plan.labels else None)
    kept = None if plan.labels else field.float_kept(ev, cells)

    def group(mask):
        mask = mask if gate is None else gate if mask is None else mask & gate
        every = mask is None
        picked = ev if every else {k: v[mask] for k, v in ev.items()}
        given = None if not plan.labels or labels is None else labels if every else labels[mask]
        entry = _with_interval(kind.summarize(picked, given, plan), min_n, interval)
        if kept is not None:
            shown = kept if every else kept[mask]
            entry["float_kept_clean"] = float(shown.mean()) if len(shown) else None
        return entry

    categories = {}
    for name in cells.names:
        mask = cells.mask(name)
        entry = group(mask)
        levels = cells.levels(name)
        if len(levels) > 1:
            entry["severities"] = {str(level): group(mask & (cells.severity == level)) for level in levels}
        elif levels and levels[0]:
            entry["severity"] = str(levels[0])  # one level: the cell is the category, at this severity
        categories[str(name)] = entry
    _mark_cells(categories, roles, kinds)
    section = dict(plan.describe(), overall=group(None), categories=categories)
    if gate is not None:
        section["when"] = dict(plan.when, rule=rule_text(plan.when), open=int(gate.sum()), of=int(len(gate)))
    if plan.labels:
        section["metric"] = "accuracy_drop"
    section.update(_output_verdict(section, thresholds))
    return section


def _mark_cells(categories: dict, roles: dict | None, kinds: tuple) -> None:
    """Every cell's role and whether it counts; a category with severities counts when one of them does."""
    clean = categories.get("clean")
    for name, level, figures in cells_of({"categories": categories}):
        field.mark(figures, name, level, roles, clean, figures.get("float_kept_clean"), kinds)
    for entry in categories.values():
        if entry.get("severities"):
            levels = list(entry["severities"].values())
            entry["role"] = levels[0].get("role")
            entry["counts_for_verdict"] = any(field.counts(c) for c in levels)


def chunked_evidence(kind, ref: dict, cand: dict, plan, labels) -> dict[str, np.ndarray]:
    """Evidence a slice of samples at a time, into arrays sized once: outputs are read from
    disk a block at a time and temporaries stay cache-sized, not suite-sized."""
    n = len(ref["output"])
    per_sample = max(sum(int(np.prod(a.shape[1:])) for a in ref.values()), 1)
    step = max(1, CHUNK_ELEMENTS // per_sample)
    evidence: dict[str, np.ndarray] = {}
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        part = kind.evidence({r: a[lo:hi] for r, a in ref.items()}, {r: a[lo:hi] for r, a in cand.items()},
                             plan, None if labels is None else labels[lo:hi])
        for key, values in part.items():
            if key not in evidence:
                evidence[key] = np.empty((n,) + values.shape[1:], dtype=_compact(values.dtype))
            evidence[key][lo:hi] = values
    return evidence


def _compact(dtype: np.dtype) -> np.dtype:
    """Class indices and counts fit int32; halving them matters at a million samples."""
    return np.dtype(np.int32) if dtype == np.int64 else dtype


def _with_interval(summary: dict, min_n: int, interval: str = "wilson") -> dict:
    """The cell's 95 % interval: the kind's own or Wilson for fixed-n samples; the anytime-valid
    confidence sequence when rounds stopped sampling on what they saw (an accuracy drop's from its
    discordant pairs, float right and quant wrong vs the reverse)."""
    if summary.get("value") is None:
        summary.update(ci95=None, low_n=False)
        return summary
    if interval == "anytime":
        only_f, only_q = summary.get("discordant") or (None, None)
        summary["ci95"] = list(paired_drop(only_f, only_q, summary["trials"]) if only_f is not None
                               else confidence_sequence(summary["events"], summary["trials"]))
    elif "ci95" not in summary:
        summary["ci95"] = list(wilson(summary["events"], summary["trials"]))
    summary["low_n"] = summary["trials"] < min_n
    return summary


def cells_of(section: dict):
    """(category, severity or None, figures) for every cell of an output section."""
    for name, entry in section["categories"].items():
        if entry.get("severities"):
            for level, figures in entry["severities"].items():
                yield name, level, figures
        else:
            yield name, entry.get("severity"), entry


def _output_verdict(section: dict, thresholds) -> dict:
    """The worst deciding cell with enough trials (``min_n``) decides; only when no cell has enough
    does the worst small one, with low-n confidence. Among dozens of cells of a few trials each,
    one shows 1 of 1 or 3 of 3 by chance alone: such a cell cannot raise a verdict that cells
    with enough trials give, it can only make it unsure (``low-n``, naming the cell)."""
    cells = [c for c in cells_of(section) if c[2].get("value") is not None and field.counts(c[2])]
    if not cells:
        return {"verdict": None, "worst_category": None, "worst_severity": None, "worst_value": None}
    enough = [c for c in cells if not c[2].get("low_n")]
    category, level, worst = max(enough or cells, key=lambda c: c[2]["value"])
    result = band(worst["value"], thresholds)
    confidence = _confidence(result, worst, [c[2] for c in cells], thresholds)
    unsure = [c for c in cells if c[2].get("low_n") and VERDICTS.index(band(c[2]["value"], thresholds))
              > VERDICTS.index(result)] if enough else []
    if unsure:
        name, lvl, cell = max(unsure, key=lambda c: c[2]["value"])
        confidence = {"level": "low-n", "note": f"{len(unsure)} cell(s) with too few trials to decide look worse, "
                                                f"e.g. {name}" + (f"/{lvl}" if lvl else "") +
                                                f": {cell['events']} of {cell['trials']}; more samples would tell"}
    return {"verdict": result, "worst_category": category, "worst_severity": level, "enough_trials": bool(enough),
            "worst_value": worst["value"], "worst_ci95": worst["ci95"], "worst_n": worst["trials"],
            "confidence": confidence}


def _confidence(result: str, worst: dict, cells: list[dict], thresholds) -> dict:
    """Firm when the interval stays inside the verdict's band; says why when not."""
    lo, hi = worst["ci95"]
    if result != "robust" and worst["low_n"]:
        return {"level": "low-n", "note": f"the deciding cell has only {worst['trials']} trials"}
    if result == "robust":
        counted = [c for c in cells if not c["low_n"]]
        if not counted:
            return {"level": "low-n", "note": "every cell has too few trials to show a failure"}
        skipped = f"; {len(cells) - len(counted)} cell(s) with too few trials not counted" if len(counted) < len(
            cells) else ""
        highest = max((c["ci95"][1] for c in counted), default=1.0)
        if highest < thresholds["degraded"]:
            return {"level": "firm", "note": f"every cell's 95% interval is below the degraded threshold{skipped}"}
        return {"level": "tentative", "note": f"a cell's 95% interval reaches {highest:.1%}, above the degraded "
                                              f"threshold {thresholds['degraded']:.0%}: more samples would tell"
                                              + skipped}
    floor = thresholds[result]
    if lo >= floor:
        return {"level": "firm", "note": f"the deciding cell's 95% interval [{lo:.1%}, {hi:.1%}] is above {floor:.0%}"}
    return {"level": "tentative", "note": f"the deciding cell's 95% interval [{lo:.1%}, {hi:.1%}] reaches below "
                                          f"the {result} threshold {floor:.0%}"}


def assemble(sections: dict[str, dict], outputs, thresholds, min_n, has_labels) -> dict:
    """Top-level report keys: the contract's, taken from the output and cell that decided."""
    driving = {name: s for name, s in sections.items() if s["drives_verdict"] and s["verdict"] is not None}
    if not driving:
        raise ConfigError("nothing decides the verdict: no output has a cell of field inputs where the float "
                          "model still works (every cell is stress, or float fails there too)")
    name = max(driving, key=lambda k: (_judged(driving[k]), driving[k]["enough_trials"], driving[k]["worst_value"],
                                       -driving[k]["index"]))
    deciding = driving[name]
    low = sorted({f"{out}: {cat}" + (f" severity {lvl}" if lvl else "")
                  for out, s in driving.items() for cat, lvl, c in cells_of(s) if c.get("low_n") and field.counts(c)})
    warnings = []
    if low:
        warnings.append(f"{len(low)} cell(s) have fewer than {min_n} trials, e.g. {low[0]}")
    confidence = dict(deciding["confidence"])
    unjudged = _unjudged_gated(sections, min_n) + _too_small_outputs(driving, deciding, thresholds)
    warnings += unjudged
    if unjudged and confidence["level"] != "low-n" and deciding["verdict"] != "catastrophic":
        confidence = {"level": "low-n", "note": unjudged[0]}  # what could not be judged could be worse
    if confidence["level"] == "low-n":
        warnings.append(f"the verdict rests on too few samples: {confidence['note']}")
    if has_labels and not any(s["labels"] for s in sections.values()):
        warnings.append("labels y were not used: no output is a classification")
    return {"verdict": deciding["verdict"], "worst_category": deciding["worst_category"],
            "worst_severity": deciding["worst_severity"], "deciding_output": name,
            "verdict_confidence": confidence, "metric_basis": deciding["metric"],
            "thresholds": dict(thresholds), "min_n": min_n,
            "overall": deciding["overall"], "categories": deciding["categories"],
            "outputs": sections, "warnings": warnings}


def _judged(section: dict) -> bool:
    """Whether any deciding cell of an output has a trial (a gated output whose gate never opened has none):
    an output that judged nothing cannot be the one that decided."""
    return any((c.get("trials") or 0) > 0 for _, _, c in cells_of(section) if field.counts(c))


def _too_small_outputs(driving: dict, deciding: dict, thresholds) -> list[str]:
    """Outputs whose every cell has too few trials but that look worse than the verdict (they could not decide it)."""
    if not deciding["enough_trials"]:
        return []
    found = []
    for name, section in driving.items():
        if not section["enough_trials"] and VERDICTS.index(section["verdict"]) > VERDICTS.index(deciding["verdict"]):
            cell = section["worst_category"] + (f"/{section['worst_severity']}" if section["worst_severity"] else "")
            found.append(f"output {name!r} has too few trials in every cell to decide the verdict; its worst, {cell}, "
                         f"reads {section['worst_value']:.1%} of {section['worst_n']} ({section['verdict']} if it held)")
    return found


def _unjudged_gated(sections: dict, min_n: int) -> list[str]:
    """Gated outputs whose gate was open too rarely to judge them: a robust verdict does not cover them."""
    found = []
    for name, section in sections.items():
        gate = section.get("when")
        if section["drives_verdict"] and gate and gate["open"] < min_n:
            found.append(f"output {name!r} is judged only where {gate['rule']}, which the float model's outputs "
                         f"meet on {gate['open']} of {gate['of']} samples: too few to judge it (give data where "
                         "the gate opens)")
    return found


def worst_value(report: dict) -> float | None:
    """The rate of the cell that decided a report's verdict."""
    section = (report.get("outputs") or {}).get(report.get("deciding_output"))
    if section is not None:
        return section["worst_value"]
    worst = (report.get("categories") or {}).get(report.get("worst_category"))
    return verdict_metric(worst) if worst else None


def run_outputs(run, model_info=None) -> list[OutputInfo]:
    """OutputInfo for each output of a RunResult (tensor names from the agent's metadata;
    producers and signature names from the model's ModelInfo when given and matching)."""
    metas = run.meta.get("outputs") or []
    names = [metas[k]["name"] if k < len(metas) else f"output_{k}" for k in range(len(run.outputs))]
    if model_info is not None and [t.name for t in model_info.outputs] != names:
        model_info = None  # another model's facts would mislabel these outputs
    if model_info is None:
        model_info = _facts_from_run(run, names)
    return describe_outputs(names, [a.shape[1:] for a in run.outputs], model_info)


def _facts_from_run(run, names: list[str]):
    """The output facts edgeq stored in run.json when the run was made (None if absent or other)."""
    from types import SimpleNamespace

    facts = ((run.run or {}).get("model") or {}).get("outputs")
    if not isinstance(facts, list) or [f.get("name") for f in facts if isinstance(f, dict)] != names:
        return None
    return SimpleNamespace(output_producers=[str(f.get("producer") or "") for f in facts],
                           output_signature_names=[str(f.get("signature") or "") for f in facts])


def compare_runs(ref, cand, *, spec: OutputSpec | None = None, model_info=None,
                 thresholds: dict = THRESHOLDS, min_n: int = MIN_N, roles: dict | None = None,
                 boundary: dict | None = None, interval: str = "wilson") -> dict:
    """Compare two RunResults made from the same input set; ``model_info`` is the float model's."""
    if ref.meta["inputs_sha256"] != cand.meta["inputs_sha256"]:
        raise ConfigError(f"{ref.path} and {cand.path} were run on different input sets; "
                          "a comparison needs the same inputs")
    ref_names = [o["name"] for o in ref.meta.get("outputs") or []]
    cand_names = [o["name"] for o in cand.meta.get("outputs") or []]
    cand_outputs = list(cand.outputs)
    if ref_names != cand_names and sorted(ref_names) == sorted(cand_names):
        cand_outputs = [cand.outputs[cand_names.index(name)] for name in ref_names]  # same outputs, other order
    result = compare_outputs(ref.outputs, cand_outputs, ref.samples, outputs=run_outputs(ref, model_info), spec=spec,
                             thresholds=thresholds, min_n=min_n, where=str(ref.path / "samples.npz"),
                             roles=roles, boundary=boundary, kinds=run_input_kinds(ref), interval=interval)
    result["warnings"] = run_differences(ref, cand) + result["warnings"]
    return result


def run_input_kinds(run) -> tuple:
    """The input kinds of a run's model inputs, from the shapes the agent recorded (what each family
    stands for depends on them, e.g. an outlier pixel is stress, an outlier reading is not)."""
    from edgeq.inputs.risky.families import input_kind

    shapes = [i.get("shape") for i in run.meta.get("inputs") or [] if isinstance(i, dict)]
    return tuple(input_kind(tuple(s[1:])) for s in shapes if isinstance(s, list) and len(s) > 1)


def run_differences(ref, cand) -> list[str]:
    """What differs between two runs besides the model: a float-vs-quantized difference
    measured on two runtimes, resolvers, thread counts or devices is not quantization's alone."""
    def facts(run) -> dict:
        meta, device = run.meta, run.meta.get("device") or {}
        runtime = device.get("runtime") or {}
        return {"runtime": f"{runtime.get('name')} {runtime.get('version')}" if runtime else None,
                "resolver": meta.get("resolver"), "threads": meta.get("threads"),
                "device": (run.run or {}).get("device"), "arch": device.get("arch")}

    a, b = facts(ref), facts(cand)
    return [f"the runs differ in {key}: {a[key]} vs {b[key]} (the comparison mixes that difference in)"
            for key in a if a[key] is not None and b[key] is not None and a[key] != b[key]]
