#!/usr/bin/env python3
"""Host-side speed of edgeq, measured against baselines taken in the same run.

Why: edgeq claims its agent adds (almost) nothing to the latency it reports, that
comparing stored runs is cheap next to running the model, and that `edgeq evaluate`
spends its time in conversion and device runs, not in edgeq. Speed is measured, not
asserted: each claim is a ratio against a baseline measured in this same run, on the
same model and samples. The bare loop runs in this process, after the conversion
imported TensorFlow; on a shared machine a few % per round is noise at ~2 us/invoke.

  (a) agent latency per inference (a real run_on_device on the `local` device) vs a
      bare ai_edge_litert invoke() loop in this process; rounds are interleaved and
      the median of per-round means is reported (plus the min), float and quant.
  (b) compare_runs() throughput vs the bare interpreter loop's throughput (float),
      and RunResult.load time.
  (c) evaluate() wall time by phase; `edgeq --help` start-up; no TensorFlow imported.

Run from the repository root (defaults: the built-in digits example):

    /tmp/v/bin/python scripts/bench_host.py [--model M.keras|M.tflite --data D.npz]
        [--outdir DIR] [--repeats 10] [--rounds 7] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GOALS = {"latency": ("<=", 1.03), "throughput": (">=", 0.8), "help_s": ("<", 1.0)}


def parse_args(argv=None) -> argparse.Namespace:
    from edgeq.evaluate import EXAMPLE_DATA, EXAMPLE_MODEL

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=EXAMPLE_MODEL, help="Keras model or float .tflite")
    parser.add_argument("--data", type=Path, default=EXAMPLE_DATA, help="data .npz the risky suite is built from")
    parser.add_argument("--outdir", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--repeats", type=int, default=10, help="passes over the suite per measurement")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved agent/bare rounds")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--resolver", default="AUTO")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args(argv)


def run_evaluate(args, outdir: Path) -> tuple[dict, float]:
    from edgeq.evaluate import EvaluateOptions, evaluate

    opts = EvaluateOptions(model=args.model, data=args.data, outdir=outdir / "eval",
                           job={"threads": args.threads, "resolver": args.resolver, "warmup": args.warmup})
    start = time.perf_counter()
    report = evaluate(opts).report
    return report, time.perf_counter() - start


def time_help(times: int = 3) -> float:
    """Median wall time of the console script's --help in a fresh process."""
    script = Path(sys.executable).with_name("edgeq")
    argv = [str(script), "--help"] if script.exists() else [sys.executable, "-m", "edgeq", "--help"]
    walls = []
    for _ in range(times):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        walls.append(time.perf_counter() - start)
    return statistics.median(walls)


def tensorflow_free() -> bool:
    code = ("import sys, edgeq.cli.main, edgeq.devices.run, edgeq.analysis.compare, edgeq.evaluate; "
            "print('tensorflow' not in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return done.stdout.strip() == "True"


def suite_arrays(model: Path, suite: Path, rundir: Path) -> list:
    """The suite's input arrays in model-input order, chosen as run_on_device does."""
    from edgeq.inputs.inputset import load_inputset
    from edgeq.devices.run import RunSpec, prepare

    names = prepare(RunSpec(model=model, inputs=suite), rundir).input_arrays
    data = load_inputset(suite)
    return [data.arrays[name] for name in names]


def bare_loop(model: Path, arrays: list, args) -> tuple:
    """set_tensor → timed invoke() → get_tensor over every sample, as the agent does.

    Returns (per-inference ms, samples/s of a whole pass including set/get)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_path=str(model), num_threads=args.threads,
                         experimental_op_resolver_type=getattr(OpResolverType, args.resolver))
    interp.allocate_tensors()
    ins = [d["index"] for d in interp.get_input_details()]
    outs = [d["index"] for d in interp.get_output_details()]
    clock = time.perf_counter_ns

    def once(i: int) -> int:
        for index, array in zip(ins, arrays):
            interp.set_tensor(index, array[i:i + 1])
        start = clock()
        interp.invoke()
        elapsed = clock() - start
        for index in outs:
            interp.get_tensor(index)
        return elapsed

    for _ in range(args.warmup + 1):  # the agent's first inference + its warm-up, on sample 0
        once(0)
    n, latency, walls = len(arrays[0]), [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        latency += [once(i) for i in range(n)]
        walls.append(time.perf_counter() - start)
    return np.array(latency) / 1e6, n / statistics.median(walls)


def agent_round(models: dict, suite: Path, rundir: Path, workdir: Path, args) -> dict:
    """One real run_on_device on the local device (one agent session, both models)."""
    from edgeq.devices.inventory import local_device
    from edgeq.devices.run import RunSpec, run_on_device

    specs = [RunSpec(model=path, inputs=suite, label=label, threads=args.threads, resolver=args.resolver,
                     warmup=args.warmup, repeats=args.repeats) for label, path in models.items()]
    results = run_on_device(local_device(str(workdir)), specs, [rundir / label for label in models])
    return {label: res.latency_ms_per_sample() for label, res in zip(models, results)}


def latency_rounds(models: dict, suite: Path, outdir: Path, args) -> dict:
    """Alternate agent and bare measurements (order flipped each round) to share the noise."""
    arrays = suite_arrays(models["float"], suite, outdir / "runs" / "probe")
    figures = {f"{who}_{stat}": {label: [] for label in models}
               for who in ("agent", "bare") for stat in ("ms", "p50_ms")}
    bare_sps = []
    for r in range(args.rounds):
        for who in (("agent", "bare") if r % 2 == 0 else ("bare", "agent")):
            if who == "agent":
                measured = agent_round(models, suite, outdir / "runs" / f"round{r}", outdir / "device", args)
            else:
                measured = {label: bare_loop(model, arrays, args) for label, model in models.items()}
                bare_sps.append(measured["float"][1])
                measured = {label: value[0] for label, value in measured.items()}
            for label, ms in measured.items():
                figures[f"{who}_ms"][label].append(float(ms.mean()))
                figures[f"{who}_p50_ms"][label].append(float(np.median(ms)))
    return dict(figures, bare_float_samples_per_s=bare_sps, samples=len(arrays[0]),
                last_rundir=outdir / "runs" / f"round{args.rounds - 1}")


def compare_throughput(rundir: Path, times: int = 5) -> dict:
    from edgeq.analysis.compare import compare_runs
    from edgeq.results import RunResult

    loads, compares = [], []
    for _ in range(times):
        start = time.perf_counter()
        ref, cand = RunResult.load(rundir / "float"), RunResult.load(rundir / "quant")
        loads.append((time.perf_counter() - start) / 2)
        start = time.perf_counter()
        compare_runs(ref, cand)
        compares.append(time.perf_counter() - start)
    t = statistics.median(compares)
    return {"samples": ref.n, "compare_s": t, "samples_per_s": ref.n / t, "load_s": statistics.median(loads)}


def row(name, measured, baseline=None, goal_key=None):
    ratio = measured / baseline if baseline else None
    op, limit = GOALS.get(goal_key, (None, None))
    value = ratio if ratio is not None else measured
    met = {"<=": lambda: value <= limit, ">=": lambda: value >= limit, "<": lambda: value < limit}.get(op)
    return {"name": name, "measured": measured, "baseline": baseline, "ratio": ratio,
            "goal": f"{op} {limit}" if op else "-", "met": met() if met else None}


def build_rows(lat: dict, cmp: dict, help_s: float, tf_free: bool, eval_wall: float) -> list:
    rows = []
    for label in lat["agent_ms"]:
        agent, bare = lat["agent_ms"][label], lat["bare_ms"][label]
        rows.append(row(f"latency {label} median (ms)", statistics.median(agent), statistics.median(bare), "latency"))
        rows.append(row(f"latency {label} min (ms)", min(agent), min(bare), "latency"))
    rows.append(row("compare_runs (samples/s)", cmp["samples_per_s"],
                    statistics.median(lat["bare_float_samples_per_s"]), "throughput"))
    rows += [row("RunResult.load (s)", cmp["load_s"]), row("evaluate total (s)", eval_wall),
             row("edgeq --help (s)", help_s, None, "help_s"),
             dict(row("no tensorflow after imports", "yes" if tf_free else "no"), goal="yes", met=tf_free)]
    return rows


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def print_table(rows: list) -> None:
    header = ("name", "measured", "baseline", "ratio", "goal", "met?")
    lines = [header] + [(r["name"], fmt(r["measured"]), fmt(r["baseline"]), fmt(r["ratio"]), r["goal"],
                         {True: "yes", False: "NO", None: "-"}[r["met"]]) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for k, line in enumerate(lines):
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths))))
        if k == 0:
            print("  ".join("-" * w for w in widths))


def print_rounds(lat: dict) -> None:
    for label in lat["agent_ms"]:
        paired = {stat: statistics.median(a / b for a, b in zip(lat[f"agent_{stat}"][label], lat[f"bare_{stat}"][label]))
                  for stat in ("ms", "p50_ms")}
        for who in ("agent", "bare"):
            print(f"    {label} {who:5} us/round: {' '.join(f'{v * 1e3:.3f}' for v in lat[f'{who}_ms'][label])}")
        print(f"    {label} median of paired per-round ratios: mean {paired['ms']:.3f}, p50 {paired['p50_ms']:.3f}")


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="edgeq-bench-") as tmp:
        outdir = (args.outdir or Path(tmp)).resolve()
        os.environ["EDGEQ_LOCAL_WORKDIR"] = str(outdir / "device")  # keep evaluate's pushes in outdir
        report, eval_wall = run_evaluate(args, outdir)
        outside = eval_wall - sum(report["timings_s"].values())
        print(f"(c) evaluate: {eval_wall:.2f} s total; phases (s): {report['timings_s']}; outside phases {outside:.3f}")
        models = {"float": Path(report["model"]["float"]["path"]), "quant": Path(report["model"]["quant"]["path"])}
        suite = Path(report["inputs"]["path"])
        lat = latency_rounds(models, suite, outdir, args)
        print(f"(a) {lat['samples']} samples x {args.repeats} repeats x {args.rounds} rounds, "
              f"threads={args.threads} resolver={args.resolver}")
        print_rounds(lat)
        cmp = compare_throughput(lat["last_rundir"])
        print(f"(b) compare_runs {cmp['compare_s'] * 1e3:.2f} ms for {cmp['samples']} samples; "
              f"RunResult.load {cmp['load_s'] * 1e3:.2f} ms each")
        help_s, tf_free = time_help(), tensorflow_free()
        print(f"(c) edgeq --help {help_s:.3f} s; tensorflow not imported by edgeq.cli.main/run/compare/evaluate: "
              f"{'yes' if tf_free else 'no'}\n")
        rows = build_rows(lat, cmp, help_s, tf_free, eval_wall)
        print_table(rows)
        if args.json:
            figures = {"rows": rows, "evaluate_timings_s": report["timings_s"], "evaluate_wall_s": eval_wall,
                       "latency": {k: v for k, v in lat.items() if k != "last_rundir"}, "compare": cmp,
                       "settings": {k: str(v) for k, v in vars(args).items()}}
            args.json.write_text(json.dumps(figures, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
