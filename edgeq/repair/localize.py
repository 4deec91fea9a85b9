"""Which op is responsible: per-op float vs quantized comparison, then confirmation.

Errors propagate, so an op's output SQNR alone blames everything after the culprit too.
The ranking uses the error an op *adds*: the gain in noise-to-signal ratio from its
worst activation input to its output, ``10·log10((NSR_out + ε) / (NSR_in + ε))``.
ε (−30 dB, ordinary int8 rounding noise) keeps the first op — whose input is exact —
from looking infinitely guilty for normal rounding. The stretch (row max ÷ row median
of the non-zero |x| at a hybrid op's input, the row the kernel gives one int8 scale)
shows *why*: one large activation flattens the rest of its row to zero. Each flipped
sample is charged to the op that added the most error to it (the flip share). The
leaders are then confirmed the only way that is not a model of the kernel: re-quantize
with each kept float and measure how much of the drop comes back.

The drops — which samples flip, the conditions chosen, the confirmations — come from the
bench's measurer under the target's resolver (the host's, or a device's through its agent);
the per-op tensors are compared on the host under the built-in kernels, which alone keep
them. ``measured_fields`` says which is which in every result. Only field conditions
(``Suite.roles``) are chosen to localize on: they are what the verdict and the fix go by.
"""

from __future__ import annotations

import warnings

import numpy as np

from edgeq.repair.bench import Bench
from edgeq.repair.measure import ANALYSIS_ON, ANALYSIS_RESOLVER, DEVICE_NOTE, FLIP_SHARE_NOTE, Runner, worst_drop

EPSILON_NSR = 1e-3
SQNR_CAP_DB = 120.0
WORST = 3
CONFIRM = 3


def localize(bench: Bench, target_drop: float, worst: int = WORST, confirm: int = CONFIRM,
             announce=lambda text: None) -> dict:
    """The localization result (JSON-ready): chosen conditions, per-op graph, ranking, confirmations."""
    result = {"model": str(bench.source), **measured_fields(bench), "target_drop": target_drop}
    if bench.nothing:
        return {**result, "status": "nothing-to-localize", "reason": bench.nothing}
    field = bench.suite.field_drops(bench.rebuilt_drops)
    chosen = worst_conditions(field, target_drop, worst)
    result.update(_baseline(bench), conditions=chosen)
    if not chosen:
        return {**result, "status": "nothing-to-localize", "reason": _nothing_over(bench, field, target_drop)}
    shown = ", ".join(f"{c} ({bench.rebuilt_drops[c]['drop']:.3f})" for c in chosen)
    announce(f"worst conditions (drop over {target_drop:g}, largest first): {shown}")
    rows = bench.suite.rows(chosen)
    clean = bench.suite.rows([c for c in bench.suite.order if c == "clean"])
    stats = op_stats(bench, rows)
    graph = graph_table(bench, stats)
    ranking = rank(bench, stats, rows, clean_stretch=op_stats(bench, clean, hybrid_only=True) if len(clean) else None)
    confirmed = confirm_top(bench, ranking, chosen, rows, confirm, announce)
    result.update(status="localized", graph=graph, ranking=order_ranking(ranking),
                  confirmed=confirmed, samples=int(len(rows)), **measured_fields(bench))
    return result


def measured_fields(bench: Bench) -> dict:
    """Which kernels each number came from: ``resolver`` (and ``measured_on``) for the whole-model
    numbers — drops, confirmations, search, verification, latency —, ``analysis_resolver`` (and
    ``analysis_on``: always the host) for the per-op tensors, and with a device ``device`` (name,
    arch, runtime from its runs)."""
    found = {"measured_on": bench.measured_on, "resolver": bench.measurer.resolver,
             "threads": bench.measurer.threads, "analysis_on": ANALYSIS_ON, "analysis_resolver": ANALYSIS_RESOLVER}
    if bench.measurer.resolver != ANALYSIS_RESOLVER:
        found["flip_share_note"] = FLIP_SHARE_NOTE
    section = bench.device_section()
    device = getattr(bench.measurer, "device", None)
    if device is not None:
        found["device"] = section or {"name": device.name}
        found["analysis_note"] = DEVICE_NOTE
    return found


def _nothing_over(bench: Bench, field: dict, target_drop: float) -> str:
    """Why nothing is localized: no field condition over the target (naming a stress one that is)."""
    if not field:
        return "the suite has no field condition (every condition is stress): nothing sets a target"
    name, drop = worst_drop(field)
    text = f"no field condition drops more than {target_drop:g} (worst: {name}, {drop:.3f})"
    stress = {c: d for c, d in bench.rebuilt_drops.items() if c not in field}
    where, most = worst_drop(stress)
    if where is not None and most > target_drop + 1e-9:
        text += f"; stress condition {where} drops {most:.3f}, beside the verdict, not a fix target"
    return text


def worst_conditions(drops: dict[str, dict], target_drop: float, worst: int) -> list[str]:
    """The ``worst`` conditions whose drop exceeds the target, largest first (ties by name)."""
    over = [c for c, d in drops.items() if d["drop"] > target_drop + 1e-9]
    return sorted(over, key=lambda c: (-drops[c]["drop"], c))[:worst]


def _baseline(bench: Bench) -> dict:
    return {"quantized": str(bench.quant_path), "rebuilt": str(bench.rebuilt_path),
            "drops": {"shipped": bench.shipped_drops, "rebuilt": bench.rebuilt_drops},
            "suite": {"source": bench.suite.source, "seed": bench.suite.seed, "samples": bench.suite.n,
                      "conditions": len(bench.suite.order), "labels": bench.suite.y is not None},
            "condition_roles": dict(bench.suite.roles or {}),
            "candidates": [o.to_dict() for o in bench.ops], "notes": list(bench.notes)}


def op_stats(bench: Bench, rows: np.ndarray, hybrid_only: bool = False) -> dict:
    """Per sample: signal and noise power of every float tensor an op writes (float run vs
    rebuilt quantized run), and the input stretch at each hybrid op."""
    f_run, q_run = Runner(bench.float_path, preserve=True), Runner(bench.rebuilt_path, preserve=True)
    f_names = {d["index"]: d["name"] for d in f_run.interpreter.get_tensor_details()}
    q_index = {d["name"]: d["index"] for d in q_run.interpreter.get_tensor_details()}
    wanted = _tensors_of_interest(bench) if not hybrid_only else set()
    sig, noise, stretch = {t: [] for t in wanted}, {t: [] for t in wanted}, {o.index: [] for o in bench.ops}
    for n, _ in zip(f_run.blocks(bench.suite.inputs, rows), q_run.blocks(bench.suite.inputs, rows)):
        block = f_run.block
        for t in wanted:
            f = _per_sample(f_run.interpreter.get_tensor(t), block)
            q = _per_sample(q_run.interpreter.get_tensor(q_index[f_names[t]]), block)
            if f is None or q is None or f.shape != q.shape:
                continue
            sig[t].append((f[:n] ** 2).sum(1))
            noise[t].append(((q[:n] - f[:n]) ** 2).sum(1))
        for o in bench.ops:
            x = q_run.interpreter.get_tensor(q_index[f_names[o.op.activations[0]]]) if o.op.activations else None
            stretch[o.index].append(row_stretch(x, block, o.op.op_type)[:n])
    join = {k: np.concatenate(v) for k, v in stretch.items() if v}
    return {"signal": {t: np.concatenate(v) for t, v in sig.items() if v},
            "noise": {t: np.concatenate(v) for t, v in noise.items() if v}, "stretch": join}


def _tensors_of_interest(bench: Bench) -> set[int]:
    from edgeq.repair.selective import graph_ops, open_graph

    interpreter = open_graph(bench.float_path)
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    found = set()
    for op in graph_ops(interpreter):
        found |= {t for t in op.outputs + op.activations if t >= 0 and details[t]["dtype"] == np.float32}
    return found


def _per_sample(tensor: np.ndarray, block: int) -> np.ndarray | None:
    """(block, -1) when the tensor's first axis is the batch (or a multiple of it), else None."""
    if tensor.ndim == 0 or tensor.shape[0] % block:
        return None
    return np.asarray(tensor, dtype=np.float64).reshape(block, -1)


def row_stretch(x: np.ndarray | None, block: int, op_type: str) -> np.ndarray:
    """Per sample, the largest row max ÷ row median of the non-zero |x| — a row being what the
    hybrid kernel scales as one: the last axis of a FULLY_CONNECTED input, the whole sample
    for convolutions. Zeros (ReLU) are left out of the median, which they would pin to 0."""
    if x is None or x.ndim == 0 or x.shape[0] % block:
        return np.ones(block)
    width = x.shape[-1] if op_type == "FULLY_CONNECTED" else int(np.prod(x.shape)) // block
    a = np.abs(np.asarray(x, dtype=np.float64)).reshape(block, -1, width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(np.where(a > 0, a, np.nan), axis=-1)
    ratio = np.where(np.isfinite(median) & (median > 0), a.max(-1) / np.where(median > 0, median, 1), 1.0)
    return np.nan_to_num(ratio, nan=1.0).max(-1)


def _nsr(stats: dict, t: int, samples=slice(None)):
    s, e = stats["signal"].get(t), stats["noise"].get(t)
    if s is None:
        return None
    return e[samples] / np.maximum(s[samples], 1e-30)


def sqnr_db(signal: float, noise: float) -> float | None:
    """None when the two runs agree exactly (an infinite SQNR, which strict JSON cannot hold)."""
    if noise <= 0:
        return None
    return float(min(SQNR_CAP_DB, 10 * np.log10(max(signal, 1e-30) / noise)))


def _gain(stats: dict, op, samples=slice(None)):
    """Added error in dB per sample (or aggregate when ``samples`` is an aggregate sum)."""
    out = _nsr(stats, op.outputs[0], samples)
    if out is None:
        return None
    ins = [_nsr(stats, t, samples) for t in op.activations]
    ins = [v for v in ins if v is not None]
    worst_in = np.max(ins, axis=0) if ins else np.zeros_like(out)
    return 10 * np.log10((out + EPSILON_NSR) / (worst_in + EPSILON_NSR))


def _aggregate_gain(stats: dict, op) -> float | None:
    def total(t):
        s, e = stats["signal"].get(t), stats["noise"].get(t)
        return None if s is None else float(e.sum() / max(s.sum(), 1e-30))

    out = total(op.outputs[0])
    if out is None:
        return None
    ins = [v for v in (total(t) for t in op.activations) if v is not None]
    return float(10 * np.log10((out + EPSILON_NSR) / (max(ins, default=0.0) + EPSILON_NSR)))


def graph_table(bench: Bench, stats: dict) -> list[dict]:
    """Every op along the graph with its output SQNR and added error (the per-op chart)."""
    from edgeq.repair.selective import graph_ops, open_graph

    hybrid = {o.index for o in bench.ops}
    table = []
    for op in graph_ops(open_graph(bench.float_path)):
        t = op.outputs[0] if op.outputs else -1
        if t not in stats["signal"]:
            continue
        table.append({"op_index": op.index, "op_type": op.op_type, "tensor": op.output_name,
                      "hybrid": op.index in hybrid,
                      "sqnr_db": sqnr_db(stats["signal"][t].sum(), stats["noise"][t].sum()),
                      "added_error_db": _aggregate_gain(stats, op)})
    return table


def rank(bench: Bench, stats: dict, rows: np.ndarray, clean_stretch: dict | None = None) -> list[dict]:
    """Hybrid ops by flip share, then added error: the order candidates are confirmed in."""
    flipped = np.flatnonzero(bench.float_top[rows] != bench.rebuilt_top[rows])
    per_op = {o.index: _gain(stats, o.op) for o in bench.ops}
    usable = [o.index for o in bench.ops if per_op[o.index] is not None]
    charged = {i: 0 for i in per_op}
    if usable and len(flipped):
        gains = np.stack([per_op[i][flipped] for i in usable])
        for k in np.argmax(gains, axis=0):
            charged[usable[k]] += 1
    entries = []
    for o in bench.ops:
        t = o.op.outputs[0]
        s = stats["stretch"].get(o.index)
        c = (clean_stretch or {}).get("stretch", {}).get(o.index)
        entries.append({**o.to_dict(),
                        "sqnr_db": sqnr_db(stats["signal"][t].sum(), stats["noise"][t].sum())
                        if t in stats["signal"] else None,
                        "added_error_db": _aggregate_gain(stats, o.op),
                        "flip_share": charged[o.index] / len(flipped) if len(flipped) else 0.0,
                        "stretch": float(np.median(s)) if s is not None and len(s) else None,
                        "stretch_max": float(np.max(s)) if s is not None and len(s) else None,
                        "stretch_clean": float(np.median(c)) if c is not None and len(c) else None,
                        "recovered_share": None})
    return sorted(entries, key=lambda e: (-e["flip_share"], -(e["added_error_db"] or 0.0), e["op_index"]))


def confirm_top(bench: Bench, ranking: list[dict], chosen: list[str], rows: np.ndarray, confirm: int,
                announce=lambda text: None) -> list[dict]:
    """Re-quantize with each of the first ``confirm`` candidates kept float, on the chosen
    conditions; ``recovered_share`` = how much of the mean drop comes back (1 = all of it)."""
    base = np.mean([bench.rebuilt_drops[c]["drop"] for c in chosen])
    done = []
    leaders = ranking[:confirm]
    built = [bench.variant({e["op_index"]}, f"keep{e['op_index']}") for e in leaders]
    measured = bench.drops_of_many(built, rows) if built else []
    for entry, drops in zip(leaders, measured):
        index = entry["op_index"]
        after = np.mean([drops[c]["drop"] for c in chosen])
        entry["recovered_share"] = float((base - after) / base) if base > 0 else 0.0
        entry["drops_kept_float"] = {c: drops[c]["drop"] for c in chosen}
        announce(f"confirmed op {index} ({entry['op_type']} {entry['layer'] or entry['tensor'][:30]}): "
                 f"keeping it float recovers {100 * entry['recovered_share']:.0f} % of the drop")
        done.append(index)
    return done


def order_ranking(ranking: list[dict]) -> list[dict]:
    """Confirmed ops by recovered share first, then the rest in ranking order; numbered from 1."""
    confirmed = sorted((e for e in ranking if e["recovered_share"] is not None),
                       key=lambda e: (-e["recovered_share"], e["op_index"]))
    ordered = confirmed + [e for e in ranking if e["recovered_share"] is None]
    return [{"rank": k + 1, **e} for k, e in enumerate(ordered)]
