#!/usr/bin/env python3
"""What measuring costs: sensor sampling vs latency, and the agent's memory over a soak.

Why: edgeq claims (issue 4, item 7) that sampling power and temperature while timing
invoke() does not change the latency it reports (goal: <= 2 %), and that a long soak
does not leak (agent RSS growth over a 10-minute soak < 5 %). Speed is measured, not
asserted: the "off" baseline is measured in the same run, interleaved with "on".

  (a) the dynamic-range example model (or --model) over the example data, on the
      `local` device: RunSpec(power="hwmon", sample_hz=20, sysfs_root=<a sysfs-shaped
      tree with a thermal zone and an ina226 chip>, vcgencmd="") vs RunSpec(power=None),
      each for at least --min-duration seconds; --rounds rounds, order alternating. The
      goal is judged on the median of per-round on/off ratios (p50 and mean): the machine
      drifts between rounds, a round's two runs share its state; the best round of each
      shows the quiet-machine case. Plus the sampler's own cost, from meta["sampling"].
  (b) a detached soak on `local` (same model, sensors on the same tree) for
      --soak-minutes; RSS growth = last window / first window - 1, and the max.

Run from the repository root:

    .venv/bin/python scripts/bench_measure.py [--soak-minutes 10] [--json FILE]
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

from bench_host import print_table  # one table format for every benchmark (scripts/ is on sys.path)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # FakeSysfs: a directory laid out like /sys

GOALS = {"latency": ("<=", 1.02), "rss": ("<", 0.05)}


def parse_args(argv=None) -> argparse.Namespace:
    from edgeq.evaluate import EXAMPLE_DATA

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="a .tflite (default: the example, converted)")
    parser.add_argument("--data", type=Path, default=EXAMPLE_DATA, help="input set .npz")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved on/off rounds")
    parser.add_argument("--min-duration", type=float, default=3.0, help="seconds of timed passes per run")
    parser.add_argument("--sample-hz", type=float, default=20.0)
    parser.add_argument("--soak-minutes", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=30.0, help="soak window, seconds")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args(argv)


def fake_sysfs(root: Path) -> str:
    from fake_sysfs import FakeSysfs

    fs = FakeSysfs(root)
    fs.thermal_zone(0, "cpu-thermal", 52.0)
    fs.hwmon(0, "ina226", in0_input=2, in1_input=5080, curr1_input=850, power1_input=4_318_000)
    return str(fs.root)


def latency_rounds(model: Path, data: Path, sysfs: str, work: Path, args) -> dict:
    from edgeq.devices.inventory import local_device
    from edgeq.devices.run import RunSpec, run_on_device

    specs = {"on": RunSpec(model=model, inputs=data, label="on", min_duration_s=args.min_duration, power="hwmon",
                           sample_hz=args.sample_hz, sysfs_root=sysfs, vcgencmd=""),
             "off": RunSpec(model=model, inputs=data, label="off", min_duration_s=args.min_duration, power=None)}
    fig = {k: {"p50_ms": [], "mean_ms": [], "n": []} for k in specs}
    fig["sampling"] = []
    device = local_device(str(work / "device"))
    for r in range(args.rounds):
        order = ("on", "off") if r % 2 == 0 else ("off", "on")
        results = run_on_device(device, [specs[k] for k in order], [work / "runs" / f"r{r}-{k}" for k in order])
        for key, res in zip(order, results):
            ms = res.latency_ms_per_sample()
            fig[key]["p50_ms"].append(float(statistics.median(ms)))
            fig[key]["mean_ms"].append(float(ms.mean()))
            fig[key]["n"].append(int(ms.size))
            if key == "on":
                s = res.meta["sampling"]
                fig["sampling"].append({k: s.get(k) for k in ("samples", "samples_timed", "achieved_hz",
                                                                "tick_ms_mean", "busy_s", "errors")}
                                       | {"timed_s": res.meta["timed_s"]})
        print(f"  round {r} ({'/'.join(order)}): p50 on {fig['on']['p50_ms'][-1] * 1e3:.2f} us, "
              f"off {fig['off']['p50_ms'][-1] * 1e3:.2f} us; mean on {fig['on']['mean_ms'][-1] * 1e3:.2f} us, "
              f"off {fig['off']['mean_ms'][-1] * 1e3:.2f} us; {fig['on']['n'][-1]:,} / {fig['off']['n'][-1]:,} "
              f"inferences; sampler {fig['sampling'][-1]['samples_timed']} ticks in the timed window", flush=True)
    return fig


def soak(model: Path, data: Path, sysfs: str, work: Path, args) -> dict:
    from edgeq.devices.inventory import local_device
    from edgeq.devices.run import RunSpec
    from edgeq.devices.soak import follow, load_records, start_soak
    from edgeq.reports.soak import summarize

    device, out = local_device(str(work / "device")), work / "soak"
    spec = RunSpec(model=model, inputs=data, label="soak", power="hwmon", sysfs_root=sysfs, vcgencmd="", sample_hz=2.0)
    handle = start_soak(device, spec, out, args.soak_minutes * 60, args.window)
    print(f"  soak pid {handle.pid} for {args.soak_minutes:g} min, {args.window:g} s windows", flush=True)
    status = follow(device, handle, out, lambda new, st: [print(
        f"    window {w['index']}: rss {w['rss_kb']} kB, p50 {w['latency_ms']['p50'] * 1e3:.2f} us", flush=True)
        for w in new], poll_s=5.0)
    windows = [r for r in load_records(out) if r.get("type") == "window"]
    rss = [w["rss_kb"] for w in windows]
    return {"state": status.get("state"), "error": status.get("error"), "windows": len(windows), "rss_kb": rss,
            "growth": rss[-1] / rss[0] - 1 if rss else None, "max_growth": max(rss) / rss[0] - 1 if rss else None,
            "summary": summarize(load_records(out), status)}


def row(name, measured, baseline=None, goal_key=None, on_ratio=True):
    ratio = measured / baseline if baseline and measured is not None else None
    op, limit = GOALS.get(goal_key, (None, None))
    value = ratio if on_ratio and ratio is not None else measured
    met = None if op is None or value is None else (value <= limit if op == "<=" else value < limit)
    return {"name": name, "measured": measured, "baseline": baseline, "ratio": ratio,
            "goal": f"{op} {limit}" if op else "-", "met": met}


def build_rows(lat: dict, soaked: dict, args) -> list:
    med = {k: {s: statistics.median(lat[k][s]) for s in ("p50_ms", "mean_ms")} for k in ("on", "off")}
    samp = lat["sampling"]
    rows = []
    for s in ("p50_ms", "mean_ms"):  # the goal is judged on paired ratios: on and off ran side by side
        paired = statistics.median(a / b for a, b in zip(lat["on"][s], lat["off"][s]))
        rows += [row(f"latency {s[:-3]} (us), median of rounds on/off", med["on"][s] * 1e3, med["off"][s] * 1e3),
                 row(f"latency {s[:-3]}, median per-round ratio on/off", paired, None, "latency", on_ratio=False),
                 row(f"latency {s[:-3]} (us), best round on/off", min(lat["on"][s]) * 1e3, min(lat["off"][s]) * 1e3)]
    rows += [row("sampler achieved Hz / requested", statistics.median(s["achieved_hz"] for s in samp), args.sample_hz),
             row("sampler tick (ms, mean)", statistics.median(s["tick_ms_mean"] for s in samp)),
             row("sampler busy share of timed window", statistics.median(s["busy_s"] / s["timed_s"] for s in samp))]
    label = f"soak RSS growth, {soaked['windows']} x {args.window:g} s"
    rows += [row(f"{label} (last/first-1)", soaked["growth"], None, "rss", on_ratio=False),
             row(f"{label} (max/first-1)", soaked["max_growth"], None, "rss", on_ratio=False),
             row("soak RSS end (kB, median last 3) / first", (soaked["summary"]["rss_kb"] or {}).get("end"),
                 (soaked["summary"]["rss_kb"] or {}).get("start"))]
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from edgeq.inputs.inputset import load_inputset

    load_inputset(args.data)  # a bad input set fails here, in one line, before any device work
    with tempfile.TemporaryDirectory(prefix="edgeq-bench-measure-") as tmp:
        work = Path(tmp)
        model = args.model
        if model is None:
            from edgeq.models.convert import convert_model
            from edgeq.evaluate import EXAMPLE_MODEL

            model = convert_model(EXAMPLE_MODEL, work / "models").quant_path
        sysfs = fake_sysfs(work / "sys")
        print(f"(a) {model.name} on local, {args.rounds} rounds x (on, off), >= {args.min_duration:g} s each, "
              f"sampling hwmon+thermal at {args.sample_hz:g} Hz from {sysfs}", flush=True)
        start = time.perf_counter()
        lat = latency_rounds(model, args.data, sysfs, work, args)
        paired = {s: statistics.median(a / b for a, b in zip(lat["on"][s], lat["off"][s])) for s in ("p50_ms", "mean_ms")}
        print(f"  median of paired per-round ratios on/off: p50 {paired['p50_ms']:.4f}, mean {paired['mean_ms']:.4f}"
              f" ({time.perf_counter() - start:.0f} s)")
        print(f"(b) soak on local: {args.soak_minutes:g} min", flush=True)
        soaked = soak(model, args.data, sysfs, work, args)
        print(f"  state {soaked['state']}{': ' + soaked['error'] if soaked['error'] else ''}; rss kB per window: "
              f"{' '.join(str(v) for v in soaked['rss_kb'])}\n")
        rows = build_rows(lat, soaked, args)
        print_table(rows)
        if args.json:
            figures = {"rows": rows, "latency": lat, "paired_ratios": paired, "soak": soaked,
                       "model": str(model), "settings": {k: str(v) for k, v in vars(args).items()}}
            args.json.write_text(json.dumps(figures, indent=1, default=str))
    return 0 if soaked["state"] == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
