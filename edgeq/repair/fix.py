"""The smallest set of ops to keep float so that every field condition stays under the drop target.

Greedy from the localization ranking (add the next most responsible op until every
condition passes), then pruning (drop each kept op again, least responsible first,
when the rest still pass): the ranking puts the culprits first, so this usually takes
a handful of builds instead of a search over subsets. The model found is written,
re-read from disk and run on the whole suite once more before it is called a fix.

A fix is a *quantized* model. Keeping every quantized op float gives the float model back
(1.00× its size), which meets any target and fixes nothing, so the search stops short of
it, and the model found must still hold int8 weights and be smaller than float. When no
such variant passes, the status is ``no-quantized-variant`` (a failed gate, like
``unreachable``), the best partial variant (at least one op still quantized) is reported,
and no ``<stem>.fixed.tflite`` is written.

Only field conditions (``Suite.roles``, the verdict's own rule) set the target; stress
conditions (near-boundary points, searched inputs) are measured and shown beside it.
All drops come from the bench's measurer, under the target's resolver.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from edgeq.analysis.rules import FIX_TARGET
from edgeq.errors import EXIT_GATE
from edgeq.repair.bench import Bench
from edgeq.repair.localize import localize, measured_fields
from edgeq.repair.measure import worst_drop

NO_QUANTIZED = "no-quantized-variant"
GATE_STATUSES = ("unreachable", NO_QUANTIZED, "unverified")  # exit 1: no verified quantized fix


@dataclass
class FixResult:
    report: dict
    fixed_path: Path | None = None
    json_path: Path | None = None
    exit_code: int = 0
    tried: dict = field(default_factory=dict)


TOLERANCE = 1e-9  # a drop equal to the target passes, whatever the last bit of the division says


def passes(drops: dict, target: float) -> bool:
    return all(d["drop"] <= target + TOLERANCE for d in drops.values())


class Search:
    """Builds and measures kept-float sets on the whole suite, each set once; judges them on the
    field conditions only."""

    def __init__(self, bench: Bench, target: float, announce):
        self.bench, self.target, self.announce = bench, target, announce
        self.tried: dict[frozenset, dict] = {frozenset(): bench.rebuilt_drops}
        self.paths: dict[frozenset, Path] = {frozenset(): bench.rebuilt_path}

    def passes(self, drops: dict) -> bool:
        return passes(self.bench.suite.field_drops(drops), self.target)

    def worst(self, drops: dict) -> tuple[str | None, float]:
        """The worst field condition and its drop."""
        return worst_drop(self.bench.suite.field_drops(drops))

    def drops(self, keep: set[int]) -> dict:
        key = frozenset(keep)
        if key not in self.tried:
            name = "keep-" + "-".join(str(i) for i in sorted(keep))
            self.paths[key] = self.bench.variant(set(keep), name)
            self.tried[key] = self.bench.drops_of(self.paths[key])
            where, worst = self.worst(self.tried[key])
            self.announce(f"ops {sorted(keep)} float: worst field drop {worst:.3f} ({where})")
        return self.tried[key]

    def greedy(self, order: list[int], max_float: int | None) -> list[int] | None:
        """Kept-float ops in ranking order until every field condition passes; never all of them
        (that is the float model) and never more than ``max_float``."""
        keep: list[int] = []
        for index in order:
            if len(keep) + 1 >= len(self.bench.ops) or (max_float is not None and len(keep) >= max_float):
                break
            keep.append(index)
            if self.passes(self.drops(set(keep))):
                return keep
        return None

    def prune(self, keep: list[int]) -> tuple[list[int], dict]:
        """Drop what is not needed; for what stays, the condition that fails without it."""
        why = {}
        for index in reversed(list(keep)):
            rest = [i for i in keep if i != index]
            drops = self.drops(set(rest))
            if self.passes(drops):
                keep = rest
            else:
                why[index] = self.worst(drops)
        return keep, why

    def best_partial(self) -> frozenset:
        """The tried set with at least one op still quantized and the smallest worst field drop
        (fewest ops on a tie). The full rebuild (nothing kept float) is always among them."""
        partial = [k for k in self.tried if len(k) < len(self.bench.ops)]
        return min(partial, key=lambda k: (self.worst(self.tried[k])[1], len(k), sorted(k)))


def fix_model(bench: Bench, outdir: Path, target_drop: float = FIX_TARGET, max_float: int | None = None,
              announce=lambda text: None) -> FixResult:
    """Search, write OUTDIR/<stem>.fixed.tflite and <stem>.fix.json, verify; exit code 1 when no
    quantized variant reaches the target (the best partial one is reported, nothing is written)."""
    outdir = Path(outdir)
    json_path = outdir / f"{bench.stem}.fix.json"
    located = localize(bench, target_drop, worst=3, confirm=3, announce=announce)
    report = {"model": str(bench.source), "target_drop": target_drop, **measured_fields(bench),
              "max_float": max_float, "localize": located}
    if located["status"] != "localized":
        report.update(status="nothing-to-fix", reason=located["reason"])
        return FixResult(report, None, json_path)
    search = Search(bench, target_drop, announce)
    order = [e["op_index"] for e in located["ranking"]]
    announce(f"search order (localize ranking): ops {order}")
    found = search.greedy(order, max_float)
    if found is None:
        return _no_fix(bench, search, report, json_path, max_float)
    keep, why = search.prune(found)
    facts = model_facts(search.paths[frozenset(keep)], bench.float_path)
    if not facts["quantized"]:
        return _no_fix(bench, search, report, json_path, max_float,
                       f"the variant found (ops {sorted(keep)} float) {_not_quantized(facts)}")
    fixed = outdir / f"{bench.stem}.fixed.tflite"
    outdir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(search.paths[frozenset(keep)], fixed)
    verified = bench.drops_of(fixed)
    ok = passes(bench.suite.field_drops(verified), target_drop)
    report.update(status="fixed" if ok else "unverified", fixed=str(fixed),
                  recipe=_recipe(bench, located["ranking"], keep, why, target_drop),
                  conditions=_before_after(bench, verified, "fixed"), tried=_tried(search),
                  models=_models(bench, fixed), latency_basis=getattr(bench.measurer, "latency_basis", None),
                  **measured_fields(bench))
    return FixResult(report, fixed, json_path, 0 if ok else EXIT_GATE)


def model_facts(path: Path, float_path: Path) -> dict:
    """What makes a variant a quantized model: the int8 weight tensors it holds (counted in the file,
    DESIGN.md: the quantizer may quietly quantize nothing) and its size against the float model."""
    from edgeq.models.modelinfo import read_model, weight_summary

    size, float_size = Path(path).stat().st_size, Path(float_path).stat().st_size
    int8 = weight_summary(read_model(path), "int8")["target"]
    return {"path": str(path), "bytes": size, "float_bytes": float_size, "size_vs_float": size / float_size,
            "int8_weights": int8, "quantized": int8 > 0 and size < float_size}


def _not_quantized(facts: dict) -> str:
    if not facts["int8_weights"]:
        return "holds no int8 weight"
    return f"is not smaller than float ({facts['bytes']} vs {facts['float_bytes']} bytes)"


def _no_fix(bench: Bench, search: Search, report: dict, json_path: Path, max_float: int | None,
            why: str | None = None) -> FixResult:
    """No quantized variant passes: ``unreachable`` when ``max_float`` cut the search short, else
    ``no-quantized-variant``; either way the best partial variant, and nothing written."""
    key = search.best_partial()
    best = _variant(bench, search, key)
    limited = max_float is not None and max_float < len(bench.ops) - 1
    status = "unreachable" if limited and why is None else NO_QUANTIZED
    reason = why or (_unreachable(report["target_drop"], max_float, best) if limited
                     else _only_float(report["target_drop"], len(search.tried), best))
    report.update(status=status, reason=reason, best=best, tried=_tried(search), **measured_fields(bench))
    return FixResult(report, None, json_path, EXIT_GATE)


def _variant(bench: Bench, search: Search, key: frozenset) -> dict:
    """A tried variant: the ops it keeps float, its worst field condition, its size and int8 weights, and
    per condition the drops before (shipped, rebuilt) and with it (``best``)."""
    by_index = {o.index: o for o in bench.ops}
    where, worst = search.worst(search.tried[key])
    ops = [{k: v for k, v in by_index[i].to_dict().items() if k in ("op_index", "op_type", "layer", "tensor")}
           for i in sorted(key)]
    return {"kept_float": sorted(key), "ops": ops, "worst": where, "worst_drop": worst,
            **model_facts(search.paths[key], bench.float_path),
            "conditions": _before_after(bench, search.tried[key], "best")}


def _unreachable(target: float, max_float: int, best: dict) -> str:
    return f"cannot bring every field condition under {target:g} with at most {max_float} ops float; {describe(best)}"


def _only_float(target: float, tried: int, best: dict) -> str:
    return (f"no quantized variant keeps every field condition under {target:g} ({tried} variant(s) tried, "
            f"greedy over the localize ranking): only keeping every quantized op float does, which is the float "
            f"model; {describe(best)}")


def describe(best: dict) -> str:
    """The best partial variant in words: the ops it keeps float, its worst field condition, its size."""
    kept = ", ".join(f"op {o['op_index']} {o['op_type']} {o['layer'] or o['tensor']}" for o in best["ops"])
    return (f"best partial variant: keeps {kept or 'no op'} float, worst field condition {best['worst']} drops "
            f"{best['worst_drop']:.3f}, {1 / best['size_vs_float']:.2f}× smaller than float "
            f"({best['int8_weights']} int8 weight tensor(s))")


def _recipe(bench: Bench, ranking: list[dict], keep: list[int], why: dict, target: float) -> list[dict]:
    by_index = {e["op_index"]: e for e in ranking}
    recipe = []
    for index in keep:
        entry = by_index[index]
        where, drop = why.get(index, (None, 0.0))
        reason = (f"localize rank {entry['rank']}; without it {where} drops {drop:.3f} > {target:g}"
                  if where else f"localize rank {entry['rank']}")
        recipe.append({k: entry.get(k) for k in ("op_index", "op_type", "tensor", "layer", "weight",
                                                 "stretch", "sqnr_db", "recovered_share")} | {"reason": reason})
    return recipe


def _before_after(bench: Bench, after: dict, column: str) -> dict:
    """Per condition: the drop of the shipped and rebuilt models and of ``after`` (the fixed model, or
    the best partial variant) under ``column``; ``role`` says whether it counts for the target."""
    return {c: {"shipped": bench.shipped_drops[c]["drop"], "rebuilt": bench.rebuilt_drops[c]["drop"],
                column: after[c]["drop"], "n": after[c]["n"], "role": bench.suite.role(c)} for c in after}


def _tried(search: Search) -> list[dict]:
    return [{"kept_float": sorted(k), "worst": search.worst(d)[0], "worst_drop": search.worst(d)[1]}
            for k, d in search.tried.items()]


def _models(bench: Bench, fixed: Path) -> dict:
    """Size, int8 weights and latency of the three models: ``latency_us`` is the host's median of
    single-sample invokes (also ``host_latency_us``), or with a device its p50 per inference over the
    suite run (also ``device_latency_us``, with the run's percentiles in ``device_latency_ms``)."""
    from edgeq.models.modelinfo import read_model, weight_summary

    paths = {"float": bench.float_path, "quantized": bench.quant_path, "fixed": fixed}
    return {name: {"path": str(p), "bytes": p.stat().st_size,
                   "int8_weights": weight_summary(read_model(p), "int8")["target"], **bench.latency(p)}
            for name, p in paths.items()}
