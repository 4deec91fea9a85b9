#!/usr/bin/env python3
"""Output-kind comparison speed on a detector-sized output set, against the interpreter.

Why: judging every output by its kind (anchor matching, IoU per box, per-cell
intervals) must stay cheap next to producing the outputs, or a large suite spends
its time in edgeq instead of on the device. The baseline is measured in this run,
on the same model: a bare ai_edge_litert ``invoke()`` loop over the same inputs.

The model is BlazeFace-shaped (what MediaPipe face detection ships): a 128×128×3
image in, 896 anchors out (16×16×2 + 8×8×6), a (896, 16) box/keypoint regressor and a
(896, 1) score head. Float and dynamic-range models are run on N inputs (default
10,000) with a risky-suite-like tag layout (11 categories × 3 severities); then
``compare_outputs`` judges both outputs (auto-detected as one anchor detection).

    .venv/bin/python scripts/bench_compare.py [--samples 10000] [--json FILE]

Goal: compare throughput ≥ 5× the interpreter's (samples/s, float model, 1 thread).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GOAL = 5.0
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def build_models(outdir: Path) -> tuple[Path, Path]:
    """A small BlazeFace-like Keras model, converted to float and dynamic-range .tflite."""
    import keras

    from edgeq.models.convert import convert_model

    keras.utils.set_random_seed(0)
    image = keras.Input((128, 128, 3), name="image")
    x = image
    for filters in (16, 24, 32):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    fine = x  # 16×16
    coarse = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)  # 8×8
    boxes = [keras.layers.Reshape((-1, 16))(keras.layers.Conv2D(2 * 16, 1)(fine)),
             keras.layers.Reshape((-1, 16))(keras.layers.Conv2D(6 * 16, 1)(coarse))]
    scores = [keras.layers.Reshape((-1, 1))(keras.layers.Conv2D(2, 1)(fine)),
              keras.layers.Reshape((-1, 1))(keras.layers.Conv2D(6, 1)(coarse))]
    model = keras.Model(image, [keras.layers.Concatenate(axis=1, name="regressors")(boxes),
                                keras.layers.Concatenate(axis=1, name="classificators")(scores)])
    path = outdir / "blazeface_like.keras"
    model.save(path)
    result = convert_model(path, outdir / "models")
    return result.float_path, result.quant_path


def output_names(model: Path) -> list[str]:
    from ai_edge_litert.interpreter import Interpreter

    return [d["name"] for d in Interpreter(str(model)).get_output_details()]


def run_interpreter(model: Path, x: np.ndarray) -> tuple[list[np.ndarray], float]:
    """Every output for every sample, and the seconds the bare invoke() loop took."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(str(model), num_threads=1)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]["index"]
    details = interp.get_output_details()
    outs = [d["index"] for d in details]
    results = [np.empty((len(x),) + tuple(d["shape"][1:]), np.float32) for d in details]
    for k in range(min(10, len(x))):  # warm-up
        interp.set_tensor(inp, x[k:k + 1])
        interp.invoke()
    elapsed = 0.0
    for k in range(len(x)):
        interp.set_tensor(inp, x[k:k + 1])
        start = time.perf_counter()
        interp.invoke()
        elapsed += time.perf_counter() - start
        for j, i in enumerate(outs):
            results[j][k] = interp.get_tensor(i)[0]
    return results, elapsed


def suite_tags(n: int) -> dict[str, np.ndarray]:
    categories = ["clean"] + [f"family{k}" for k in range(10)]
    plan = [("clean", 0)] + [(c, s) for c in categories[1:] for s in (1, 2, 3)]
    per = -(-n // len(plan))
    cat = np.repeat(np.array([c for c, _ in plan]), per)[:n]
    sev = np.repeat(np.array([s for _, s in plan]), per)[:n]
    return {"category": cat, "severity": sev}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3, help="compare runs; the median is reported")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from edgeq.analysis.compare import compare_outputs
    from edgeq.analysis.plan import OutputInfo

    with tempfile.TemporaryDirectory(prefix="edgeq-bench-compare-") as tmp:
        float_path, quant_path = build_models(Path(tmp))
        rng = np.random.default_rng(0)
        x = rng.uniform(-1, 1, size=(args.samples, 128, 128, 3)).astype(np.float32)
        ref, float_s = run_interpreter(float_path, x)
        cand, quant_s = run_interpreter(quant_path, x)
        names = output_names(float_path)
    del x
    outputs = [OutputInfo(k, name, r.shape[1:]) for k, (name, r) in enumerate(zip(names, ref))]
    tags = suite_tags(args.samples)
    times = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        report = compare_outputs(ref, cand, tags, outputs=outputs)
        times.append(time.perf_counter() - start)
    compare_s = float(np.median(times))
    section = report["outputs"][report["deciding_output"]]
    figures = {
        "samples": args.samples, "output_shapes": [list(r.shape[1:]) for r in ref],
        "interpreter_float_samples_per_s": args.samples / float_s,
        "interpreter_quant_samples_per_s": args.samples / quant_s,
        "compare_samples_per_s": args.samples / compare_s, "compare_s_rounds": times,
        "ratio_vs_float_interpreter": float_s / compare_s, "goal": GOAL,
        "kind": section["kind"], "detections": section["overall"]["detections"],
        "detection_flip_rate": section["overall"]["detection_flip_rate"],
    }
    print(f"outputs {figures['output_shapes']} × {args.samples} samples, judged as {section['kind']} "
          f"({figures['detections']} detections, flip rate {figures['detection_flip_rate']:.2%})")
    print(f"interpreter invoke(): float {figures['interpreter_float_samples_per_s']:.0f}/s, "
          f"quant {figures['interpreter_quant_samples_per_s']:.0f}/s")
    print(f"compare_outputs: {figures['compare_samples_per_s']:.0f} samples/s (median of {args.rounds}: "
          f"{compare_s:.2f} s)")
    verdict = "met" if figures["ratio_vs_float_interpreter"] >= GOAL else "NOT met"
    print(f"ratio compare / float interpreter: {figures['ratio_vs_float_interpreter']:.1f}× "
          f"(goal ≥ {GOAL:g}×: {verdict})")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
