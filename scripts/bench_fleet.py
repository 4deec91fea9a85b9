#!/usr/bin/env python3
"""What a fleet costs the host: CPU-seconds, peak RSS and wall time of ``edgeq evaluate``
on 1, 4 and 16 SSH devices.

Why: on this machine every "device" shares the host's two cores, so the wall time of a
fleet whose devices compute measures the CPU, not edgeq. Here the devices are real
OpenSSH servers on loopback running the real agent, and each job's device side is made
long but idle: a ``--idle-s`` baseline (the agent sleeping while its sampler process
reads sensors at 20 Hz) dominates each run, as a slow board's inference would, without
starving the other devices of CPU. What remains on the host is edgeq's own work per
device: SSH sessions, pushes and pulls, progress, comparison and reports.

The host figures are the measured process's own rusage (CPU user+system, ru_maxrss), not
the machine's, so other load changes them little. Baseline, measured in the same run:
the process's fixed cost, ``edgeq devices list`` (imports, inventory), subtracted before
dividing by the number of devices.

    .venv/bin/python scripts/bench_fleet.py [--sizes 1,4,16] [--idle-s 6] [--repeats 2] [--json FILE]

Goals (issue 12): host CPU per device flat — the marginal CPU of each device added from 4
to 16 ≤ 1.2× that from 1 to 4 —; fleet wall 16/1 ≤ 1.5.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test lab's real sshd (tests/lab.py)
sys.path.insert(0, str(ROOT / "scripts"))
from bench_scale import CHILD  # noqa: E402  (one edgeq process that reports its own CPU and peak RSS)

GOALS = {"cpu_per_device": 1.2, "wall": 1.5}


def child_cost(argv: list[str], env: dict, cwd: Path) -> dict:
    """Wall time, and the edgeq process's own CPU-seconds and peak RSS (VmHWM, reset at exec)."""
    start = time.perf_counter()
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", CHILD, *argv], capture_output=True,
                          text=True, env=env, cwd=cwd)
    wall = time.perf_counter() - start
    line = next((ln for ln in reversed(done.stderr.splitlines()) if ln.startswith("BENCH ")), None)
    found = json.loads(line[6:]) if line else {"exit": done.returncode}
    if found["exit"] not in (0, 1, None):
        sys.exit(f"edgeq {' '.join(argv[:3])} … failed ({found['exit']}):\n{done.stderr[-2000:]}")
    return {"wall_s": wall, "cpu_s": found["cpu_s"], "peak_mb": found["host_peak_kb"] / 1024}


def start_devices(count: int, work: Path) -> tuple[list, Path]:
    from lab import SshServer

    servers, lines = [], []
    for n in range(count):
        server = SshServer(work / f"sshd-{n:02d}").start()
        servers.append(server)
        entry = dict(server.inventory_entry(), workdir=str(work / f"device-{n:02d}"))
        lines.append(f'[devices."d{n:02d}"]')
        lines += [f"{key} = {json.dumps(value)}" for key, value in entry.items()]
        lines.append("")
    inventory = work / "edgeq.toml"
    inventory.write_text("\n".join(lines))
    return servers, inventory


def prepare_models(work: Path) -> tuple[Path, Path, Path]:
    from edgeq.evaluate import EXAMPLE_DATA, EXAMPLE_MODEL
    from edgeq.models.convert import convert_model

    conversion = convert_model(EXAMPLE_MODEL, work / "models")
    return conversion.float_path, conversion.quant_path, Path(EXAMPLE_DATA)


def evaluate_args(models, inventory: Path, names: list[str], out: Path, idle_s: float) -> list[str]:
    return ["evaluate", str(models[0]), "--quant-model", str(models[1]), "--data", str(models[2]),
            "--device", ",".join(names),
            "--inventory", str(inventory), "--max-per-category", "50", "--power", "none", "--idle-s", str(idle_s),
            "-o", str(out), "--no-history", "-q"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,4,16")
    parser.add_argument("--idle-s", type=float, default=6.0, help="device-side idle per run (seconds)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per size; the median is reported")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="edgeq-bench-fleet-") as tmp:
        work = Path(tmp)
        print("converting the built-in example ...", file=sys.stderr)
        models = prepare_models(work)
        servers, inventory = start_devices(max(sizes), work)
        env = dict(os.environ, EDGEQ_DB=str(work / "h.sqlite"))
        try:
            names = [f"d{n:02d}" for n in range(max(sizes))]
            print(f"warming {len(names)} devices (agent, models and inputs stored on each) ...", file=sys.stderr)
            child_cost(evaluate_args(models, inventory, names, work / "warm", 0.0), env, work)
            fixed = statistics.median(child_cost(["devices", "list", "--inventory", str(inventory)], env, work)
                                      ["cpu_s"] for _ in range(3))
            rows = [measure(size, models, inventory, names, work, env, args) for size in sizes]
        finally:
            for server in servers:
                server.close()
    return report(rows, fixed, args.idle_s, args.json)


def measure(size, models, inventory, names, work, env, args) -> dict:
    print(f"evaluate on {size} device(s), {args.repeats}× ...", file=sys.stderr)
    runs = [child_cost(evaluate_args(models, inventory, names[:size], work / f"out-{size}-{r}", args.idle_s),
                       env, work) for r in range(args.repeats)]
    return {"devices": size, **{key: round(statistics.median(r[key] for r in runs), 3)
                                for key in ("wall_s", "cpu_s", "peak_mb")}}


def report(rows: list[dict], fixed_cpu_s: float, idle_s: float, json_path: Path | None) -> int:
    """Per device two ways: (CPU − the process's fixed cost) ÷ devices, and the marginal cost
    of the devices added since the previous size — the one a fixed cost cannot flatter."""
    base = rows[0]
    for previous, r in zip([None] + rows[:-1], rows):
        r["cpu_per_device_s"] = round(max(r["cpu_s"] - fixed_cpu_s, 0.0) / r["devices"], 3)
        r["marginal_cpu_s"] = round((r["cpu_s"] - previous["cpu_s"]) / (r["devices"] - previous["devices"]), 3) \
            if previous else None
        r["wall_ratio"] = round(r["wall_s"] / base["wall_s"], 2)
    print(f"fixed cost (edgeq devices list): {fixed_cpu_s:.2f} CPU-s; device idle per run: {idle_s:g} s")
    print(f"{'devices':>7} {'wall s':>8} {'host CPU s':>11} {'CPU/device':>11} {'marginal':>9} {'peak MB':>8} "
          f"{'wall ×':>7}")
    for r in rows:
        marginal = f"{r['marginal_cpu_s']:.3f}" if r["marginal_cpu_s"] is not None else "—"
        print(f"{r['devices']:>7} {r['wall_s']:>8.2f} {r['cpu_s']:>11.2f} {r['cpu_per_device_s']:>11.3f} "
              f"{marginal:>9} {r['peak_mb']:>8.1f} {r['wall_ratio']:>6}×")
    top = rows[-1]
    checks = {f"fleet wall {top['devices']}/{base['devices']} ≤ {GOALS['wall']}": top["wall_ratio"] <= GOALS["wall"]}
    if len(rows) >= 3:  # two marginal steps to compare
        first, last = rows[1]["marginal_cpu_s"], top["marginal_cpu_s"]
        checks[f"marginal host CPU per device flat: {rows[-2]['devices']}→{top['devices']} ≤ "
               f"{GOALS['cpu_per_device']}× {base['devices']}→{rows[1]['devices']}"] = \
            last <= GOALS["cpu_per_device"] * first
    for goal, met in checks.items():
        print(f"{'met' if met else 'MISSED'}: {goal}")
    if json_path:
        json_path.write_text(json.dumps({"rows": rows, "fixed_cpu_s": fixed_cpu_s, "goals": checks}, indent=1))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
