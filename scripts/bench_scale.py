#!/usr/bin/env python3
"""Memory and time of ``edgeq evaluate`` as the risky suite grows: 1×, 10×, 40×.

Why: a suite must fit any board and any host, so the host's memory may not grow with
the number of samples (the suite is written as it is generated, runs and outputs are
read a block at a time), and time must grow no faster than the samples. Baseline:
the same command at 1× in this run, on the same model and the same data; only
``--max-per-category`` changes (500 is the default suite).

Each size runs ``edgeq evaluate`` on the ``local`` device in a fresh process that
prints its own peak RSS (VmHWM) when it ends; the agent reports its own in each
run's meta.json. Models are converted once beforehand, so TensorFlow is not in the
measured process (``--quant-model`` given, as a user with both files would run it).

    .venv/bin/python scripts/bench_scale.py [--scales 1,10,40] [--json FILE]

Goals (issue 8): host peak at 40× ≤ 1.5× its peak at 1×; wall time at 40× ≤ 45× the
time at 1×.
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PER_CATEGORY = 500
DATA_SAMPLES = 20_000  # enough rows for 40× the default suite
GOALS = {"host_peak": 1.5, "time_per_size": 45 / 40}

CHILD = r"""
import json, resource, sys
from edgeq.cli.main import main
code = 0
try:
    main(sys.argv[1:], standalone_mode=False)
except SystemExit as exc:
    code = exc.code
own = resource.getrusage(resource.RUSAGE_SELF)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
sys.stderr.write("\nBENCH " + json.dumps({"host_peak_kb": hwm, "cpu_s": own.ru_utime + own.ru_stime,
                                           "exit": code}) + "\n")
"""


def prepare(work: Path) -> tuple[Path, Path, Path]:
    """Float + dynamic-range models of the built-in example, and its data tiled to DATA_SAMPLES
    rows (each copy jittered, so the suite's samples are not repeats)."""
    from edgeq.evaluate import EXAMPLE_DATA, EXAMPLE_MODEL
    from edgeq.models.convert import convert_model

    conversion = convert_model(EXAMPLE_MODEL, work / "models")
    with np.load(EXAMPLE_DATA) as data:
        x, y = data["x"], data["y"]
    index = np.arange(DATA_SAMPLES) % len(x)
    noise = np.random.default_rng(0).normal(0.0, 0.3, (DATA_SAMPLES, x.shape[1]))
    big = np.clip(x[index] + noise, x.min(), x.max()).astype(x.dtype)
    np.savez(work / "data.npz", x=big, y=y[index])
    return conversion.float_path, conversion.quant_path, work / "data.npz"


def measure(scale: int, models: tuple[Path, Path], data: Path, work: Path) -> dict:
    out = work / f"out-{scale}x"
    cmd = [sys.executable, "-c", CHILD, "evaluate", str(models[0]), "--quant-model", str(models[1]),
           "--data", str(data), "--max-per-category", str(DEFAULT_PER_CATEGORY * scale), "-o", str(out)]
    env = dict(os.environ, EDGEQ_LOCAL_WORKDIR=str(work / "device"))
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=work)
    wall = time.perf_counter() - start
    line = next((ln for ln in reversed(done.stderr.splitlines()) if ln.startswith("BENCH ")), None)
    if line is None or json.loads(line[6:])["exit"] not in (0, None):
        sys.exit(f"evaluate at {scale}× failed:\n{done.stderr[-2000:]}")
    report = json.loads((out / "report.json").read_text())
    agents = [json.loads((out / "runs" / label / "meta.json").read_text()).get("peak_rss_kb")
              for label in ("float", "quant")]
    return {"scale": scale, "samples": report["overall"]["n"], "wall_s": round(wall, 2),
            "host_peak_mb": round(json.loads(line[6:])["host_peak_kb"] / 1024, 1),
            "agent_peak_mb": round(max(a for a in agents if a) / 1024, 1) if any(agents) else None,
            "suite_mb": round((out / "inputs" / "risky.npz").stat().st_size / 2**20, 1),
            "phases_s": report.get("timings_s"), "verdict": report["verdict"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", default="1,10,40", help="suite sizes as multiples of the default (first = baseline)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    scales = [int(s) for s in args.scales.split(",")]
    with tempfile.TemporaryDirectory(prefix="edgeq-bench-scale-") as tmp:
        work = Path(tmp)
        print("converting the built-in example and tiling its data ...", file=sys.stderr)
        *models, data = prepare(work)
        rows = []
        for scale in scales:
            print(f"evaluate at {scale}× ({DEFAULT_PER_CATEGORY * scale} per category) ...", file=sys.stderr)
            rows.append(measure(scale, tuple(models), data, work))
    return report(rows, args.json)


def report(rows: list[dict], json_path: Path | None) -> int:
    base = rows[0]
    print(f"{'size':>5} {'samples':>9} {'suite MB':>9} {'wall s':>8} {'host MB':>8} {'agent MB':>9} "
          f"{'host ×':>7} {'time ×':>7}")
    for r in rows:
        r["host_peak_ratio"] = round(r["host_peak_mb"] / base["host_peak_mb"], 2)
        r["time_ratio"] = round(r["wall_s"] / base["wall_s"], 1)
        print(f"{r['scale']:>4}× {r['samples']:>9} {r['suite_mb']:>9} {r['wall_s']:>8} {r['host_peak_mb']:>8} "
              f"{r['agent_peak_mb'] if r['agent_peak_mb'] is not None else '—':>9} "
              f"{r['host_peak_ratio']:>6}× {r['time_ratio']:>6}×")
    top = rows[-1]
    size = top["scale"] / base["scale"]
    checks = {f"host peak at {size:g}× ≤ {GOALS['host_peak']}× the {base['scale']}× peak":
              top["host_peak_ratio"] <= GOALS["host_peak"],
              f"wall time at {size:g}× ≤ {GOALS['time_per_size'] * size:g}× the {base['scale']}× time":
              top["time_ratio"] <= GOALS["time_per_size"] * size}
    for goal, met in checks.items():
        print(f"{'met' if met else 'MISSED'}: {goal}")
    if json_path:
        json_path.write_text(json.dumps({"rows": rows, "goals": checks}, indent=1))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
