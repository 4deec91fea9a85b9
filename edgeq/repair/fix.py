"""The smallest set of ops to keep float so that every condition stays under the drop target.

Greedy from the localization ranking (add the next most responsible op until every
condition passes), then pruning (drop each kept op again, least responsible first,
when the rest still pass): the ranking puts the culprits first, so this usually takes
a handful of builds instead of a search over subsets. The model found is written,
re-read from disk and run on the whole suite once more before it is called a fix.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from edgeq.errors import EXIT_GATE
from edgeq.repair.bench import Bench
from edgeq.repair.localize import localize, measured_fields
from edgeq.repair.measure import worst_drop


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
    """Builds and measures kept-float sets on the whole suite, each set once."""

    def __init__(self, bench: Bench, target: float, announce):
        self.bench, self.target, self.announce = bench, target, announce
        self.tried: dict[frozenset, dict] = {frozenset(): bench.rebuilt_drops}

    def drops(self, keep: set[int]) -> dict:
        key = frozenset(keep)
        if key not in self.tried:
            name = "keep-" + "-".join(str(i) for i in sorted(keep))
            self.tried[key] = self.bench.drops_of(self.bench.variant(set(keep), name))
            where, worst = worst_drop(self.tried[key])
            self.announce(f"ops {sorted(keep)} float: worst drop {worst:.3f} ({where})")
        return self.tried[key]

    def greedy(self, order: list[int], max_float: int | None) -> list[int] | None:
        keep: list[int] = []
        for index in order:
            if max_float is not None and len(keep) >= max_float:
                break
            keep.append(index)
            if passes(self.drops(set(keep)), self.target):
                return keep
        return None

    def prune(self, keep: list[int]) -> tuple[list[int], dict]:
        """Drop what is not needed; for what stays, the condition that fails without it."""
        why = {}
        for index in reversed(list(keep)):
            rest = [i for i in keep if i != index]
            drops = self.drops(set(rest))
            if passes(drops, self.target):
                keep = rest
            else:
                why[index] = worst_drop(drops)
        return keep, why

    def best(self) -> tuple[frozenset, dict]:
        """The tried set with the smallest worst drop (fewest ops on a tie)."""
        key = min(self.tried, key=lambda k: (worst_drop(self.tried[k])[1], len(k), sorted(k)))
        return key, self.tried[key]


def fix_model(bench: Bench, outdir: Path, target_drop: float = 0.02, max_float: int | None = None,
              announce=lambda text: None) -> FixResult:
    """Search, write OUTDIR/<stem>.fixed.tflite and <stem>.fix.json, verify; exit code 1 when
    the target cannot be reached (the best set found is reported, not written as a fix)."""
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
        key, drops = search.best()
        report.update(status="unreachable", best={"kept_float": sorted(key), "drops": drops},
                      reason=_unreachable(bench, target_drop, max_float, drops),
                      tried=_tried(search))
        return FixResult(report, None, json_path, EXIT_GATE)
    keep, why = search.prune(found)
    fixed = outdir / f"{bench.stem}.fixed.tflite"
    outdir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(bench.variant(set(keep), "candidate"), fixed)
    verified = bench.drops_of(fixed)
    ok = passes(verified, target_drop)
    report.update(status="fixed" if ok else "unverified", fixed=str(fixed),
                  recipe=_recipe(bench, located["ranking"], keep, why, target_drop),
                  conditions=_before_after(bench, verified), tried=_tried(search),
                  models=_models(bench, fixed), latency_basis=getattr(bench.measurer, "latency_basis", None),
                  **measured_fields(bench))
    if len(keep) == len(bench.ops):
        report["note"] = "every quantized op is kept float: the fixed model is the float model"
    return FixResult(report, fixed, json_path, 0 if ok else EXIT_GATE)


def _unreachable(bench: Bench, target: float, max_float: int | None, drops: dict) -> str:
    where, worst = worst_drop(drops)
    limit = (f"with at most {max_float} ops float" if max_float is not None and max_float < len(bench.ops)
             else "even with every quantized op float")
    return f"cannot bring every condition under {target:g} {limit}: best leaves {where} at {worst:.3f}"


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


def _before_after(bench: Bench, verified: dict) -> dict:
    return {c: {"shipped": bench.shipped_drops[c]["drop"], "rebuilt": bench.rebuilt_drops[c]["drop"],
                "fixed": verified[c]["drop"], "n": verified[c]["n"]} for c in verified}


def _tried(search: Search) -> list[dict]:
    return [{"kept_float": sorted(k), "worst": worst_drop(d)[0], "worst_drop": worst_drop(d)[1]}
            for k, d in search.tried.items()]


def _models(bench: Bench, fixed: Path) -> dict:
    """Size and latency of the three models: ``latency_us`` is the host's median of single-sample
    invokes (also ``host_latency_us``), or with a device its p50 per inference over the suite run
    (also ``device_latency_us``, with the run's percentiles in ``device_latency_ms``)."""
    paths = {"float": bench.float_path, "quantized": bench.quant_path, "fixed": fixed}
    return {name: {"path": str(p), "bytes": p.stat().st_size, **bench.latency(p)} for name, p in paths.items()}
