#!/usr/bin/env python3
"""Benchmark: how fast disagreement search finds a flip, and what the device path costs.

1. Queries to the first flipped decision (float vs dynamic-range quantized top-1),
   edgeq search vs two random baselines, with the same seeds and the same query budget,
   over ``--seeds`` seeds:
   - "suite": random draws from the family suite (a random data row, a random family that
     applies, a random severity 1..3: what the risky suite samples; not bound to the ball);
   - "ball": a random data row moved uniformly within the same distance ball the search
     keeps to (L∞, ``--distance`` × the data range, clipped to the data range).
   A run that finds nothing counts as budget + 1 (so medians over failed runs are lower
   bounds); success rates are printed. Every method is evaluated in batches of 8 and a flip
   counts at its position in its batch. Models: the fragile twin (tests/fragile.py: breaks
   when one always-0 pixel moves at all: easy for anyone), the example digits MLP itself (its
   natural, rare quantization flips near its decision boundaries), the band twin
   (tests/fragile_search.py: breaks only when several always-0 pixels sit together in a
   narrow band of small values) and the rare twin (tests/fragile_rare.py: no rounding error
   at all but one designed trap, hit by about 1 in 6,800 suite draws and 1 in 4,200 ball
   draws, with a margin to climb). For the two designed twins the share of first flips that
   are the designed failure is printed too.
2. Search throughput (queries/s) through a device's agent (``local`` unless ``--device``;
   ``--ssh-loopback`` starts a real sshd on 127.0.0.1 and goes through it; batched infer
   requests) vs in-process on the host, for pool sizes (rows per request) and
   lanes (batches in flight), host and agent runs alternated, medians of ``--reps``.

Prints figures; asserts nothing. Needs the host extra (TensorFlow) to build the models:
    .venv/bin/python scripts/bench_search.py [--seeds 10] [--budget 20000] [--distance 0.1]
        [--device NAME --inventory edgeq.toml | --ssh-loopback] [--throughput-only] [--reps 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def build_models(folder: Path) -> dict[str, tuple[Path, Path]]:
    from fragile import make_fragile_twin
    from fragile_rare import make_rare_twin
    from fragile_search import make_band_twin

    from edgeq.evaluate import EXAMPLE_DATA, EXAMPLE_MODEL
    from edgeq.models.convert import convert_model

    with np.load(EXAMPLE_DATA) as data:
        x = data["x"]
    models = {}
    for name, source in (("fragile-twin", make_fragile_twin(EXAMPLE_MODEL, x, folder / "fragile.keras")),
                         ("digits-mlp", EXAMPLE_MODEL),
                         ("band-twin", make_band_twin(EXAMPLE_MODEL, x, folder / "band.keras")),
                         ("rare-twin", make_rare_twin(EXAMPLE_MODEL, x, folder / "rare.keras"))):
        result = convert_model(source, folder / name)
        models[name] = (result.float_path, result.quant_path)
    return models


def designed_failure(name: str, x: np.ndarray):
    """For a twin built to fail one way: (what that way is called, whether a found input is it); else None."""
    from fragile_rare import ONSET, pattern_signal

    if name == "band-twin":
        silent = np.flatnonzero(np.all(x.reshape(len(x), -1) == 0, axis=0))
        return "the band pattern", lambda sample: band_pattern(sample, silent)
    if name == "rare-twin":
        return "the edge-glow trap", lambda sample: float(pattern_signal(np.asarray(sample)[None])[0]) > ONSET
    return None


def edgeq_first_flip(evaluator, prepared, operators, budget, seed, epsilon, **extra) -> tuple[int | None, object]:
    from edgeq.inputs.search.disagreement import SearchConfig, search

    config = SearchConfig(budget=budget, seed=seed, epsilon=epsilon, stop_at_first=True, **extra)
    result = search(evaluator, prepared.data, prepared.spaces, operators, config, prepared.output_names,
                    prepared.float_info)
    return result.first_flip_query, result


def random_first_flip(evaluator, prepared, budget, seed, batch=8) -> int | None:
    """Random draws from the family suite, evaluated in batches, until the first flip."""
    from edgeq.inputs.risky.families import FAMILIES
    from edgeq.inputs.risky.ranges import to_dtype
    from edgeq.inputs.search.operators import family_fits

    x, space = prepared.data[0], prepared.spaces[0]
    families = [f for f in FAMILIES.values() if family_fits(f, x.shape[1:])]
    rng = np.random.default_rng([seed, 0xBA5E])

    def draw():
        row, family, severity = int(rng.integers(len(x))), families[int(rng.integers(len(families)))], \
            int(rng.integers(1, 4))
        changed = family.transform(x[row:row + 1].astype(np.float64), family.levels[severity - 1], space.data,
                                   np.random.default_rng(rng.integers(2 ** 32)))
        return to_dtype(changed, x.dtype)[0]

    return _first_flip(evaluator, prepared, budget, draw, batch)


def ball_first_flip(evaluator, prepared, budget, seed, epsilon, batch=8) -> int | None:
    """Random draws uniform in the L∞ ball (epsilon × the data range) around random data rows, until the first flip."""
    from edgeq.inputs.search.disagreement import project

    x, space = prepared.data[0], prepared.spaces[0]
    bound = epsilon * np.broadcast_to(space.span[0], x.shape[1:])
    rng = np.random.default_rng([seed, 0xBA11])

    def draw():
        seed_row = x[int(rng.integers(len(x)))].astype(np.float64)
        return project(seed_row + rng.uniform(-1.0, 1.0, size=seed_row.shape) * bound, seed_row, space, x.dtype)

    return _first_flip(evaluator, prepared, budget, draw, batch)


def _first_flip(evaluator, prepared, budget, draw, batch) -> int | None:
    """Queries until the first flip among rows from ``draw()``, evaluated ``batch`` at a time (None: none)."""
    from edgeq.inputs.search.objective import choose_objective

    objective, done = None, 0
    while done < budget:
        rows = [draw() for _ in range(min(batch, budget - done))]
        f, q = evaluator.evaluate([np.stack(rows)])
        objective = objective or choose_objective(prepared.output_names, f, q, None, prepared.float_info)
        flips = np.flatnonzero(objective.judge(f, q).flip)
        if flips.size:
            return done + int(flips[0]) + 1
        done += len(rows)
    return None


def band_pattern(sample: np.ndarray, silent: np.ndarray) -> bool:
    """Whether the band twin's watchers are on for this input (its always-0 pixels far enough into the band)."""
    from fragile_search import BAND, ONSET

    a, b, c, d = BAND
    v = np.asarray(sample, np.float64).reshape(-1)[silent]
    trapezoid = np.clip(v - a, 0, None) - np.clip(v - b, 0, None) - np.clip(v - c, 0, None) + np.clip(v - d, 0, None)
    return float(trapezoid.sum()) > ONSET * (b - a)


def throughput(evaluator, prepared, operators, budget, epsilon, pool, lanes, seed) -> float:
    from edgeq.inputs.search.disagreement import SearchConfig, search

    config = SearchConfig(budget=budget, seed=seed, epsilon=epsilon, pool=pool, lanes=lanes, per_seed=10 ** 6,
                          patience=10 ** 6)
    started = time.perf_counter()
    result = search(evaluator, prepared.data, prepared.spaces, operators, config, prepared.output_names,
                    prepared.float_info)
    return result.queries / (time.perf_counter() - started)


def compare_throughput(device, pair, prepared, operators, args) -> None:
    """Queries/s in-process vs through ``device``'s agent: the same searches, alternated, medians of ``--reps``."""
    from edgeq.devices.batch import DeviceBatch
    from edgeq.inputs.search.evaluators import HostEvaluator

    host = HostEvaluator(*pair)
    with DeviceBatch(device, *pair) as agent:
        print(f"\nthroughput (fragile-twin, {args.throughput_queries} queries a search, search without early stop, "
              f"device {device.name}, medians of {args.reps} alternated runs):")
        for pool, lanes in ((8, 1), (8, 2), (64, 1), (64, 2)):
            rates = {"host": [], "agent": []}
            before = agent.requests
            for rep in range(args.reps):
                for name, evaluator in (("host", host), ("agent", agent)):
                    rates[name].append(throughput(evaluator, prepared, operators, args.throughput_queries,
                                                  args.distance, pool, lanes, rep))
            h, a = statistics.median(rates["host"]), statistics.median(rates["agent"])
            requests = (agent.requests - before) // args.reps
            print(f"  pool {pool:>3} x {lanes} lane(s): in-process {h:8.0f} q/s, agent {a:8.0f} q/s ({requests} "
                  f"requests a search) -> agent/in-process {a / h:.2f}x")


def base_ratio_text(ratios: dict) -> str:
    return ", ".join(f"{base}/search {value:.2f}x" for base, value in ratios.items())


def first_flip_figures(models: dict, args) -> None:
    """Queries to the first flip per seed, for edgeq search and the two random baselines, per model."""
    from edgeq.evaluate import EXAMPLE_DATA
    from edgeq.inputs.search import prepare
    from edgeq.inputs.search.evaluators import HostEvaluator
    from edgeq.inputs.search.operators import operators_for

    print(f"budget {args.budget} queries, distance {args.distance} (linf, of the data range), seeds 0..{args.seeds - 1}")

    def med(values):
        return statistics.median(v if v is not None else args.budget + 1 for v in values)

    def show(values):
        return " ".join("-" if v is None else str(v) for v in values)

    summary = []
    for name, pair in models.items():
        prepared = prepare(pair[0], pair[1], EXAMPLE_DATA, args.distance, "linf")
        operators, _ = operators_for(prepared.data[0].shape[1:])
        designed = designed_failure(name, prepared.data[0])
        host = HostEvaluator(*pair)
        runs = {"search": [], "suite": [], "ball": []}
        pattern = []
        for seed in range(args.seeds):
            q_search, result = edgeq_first_flip(host, prepared, operators, args.budget, seed, args.distance)
            runs["search"].append(q_search)
            runs["suite"].append(random_first_flip(host, prepared, args.budget, seed))
            runs["ball"].append(ball_first_flip(host, prepared, args.budget, seed, args.distance))
            if result.found and designed:
                first = min(result.found, key=lambda f: f.query)
                pattern.append(designed[1](first.arrays[0]))
        print(f"\n{name}: queries to the first flip per seed")
        for key, label in (("search", "edgeq search"), ("suite", "random suite"), ("ball", "random ball ")):
            print(f"  {label} : {show(runs[key])}")
        print("  success      : " + ", ".join(f"{k} {sum(v is not None for v in runs[k])}/{args.seeds}" for k in runs))
        line = [f"search {med(runs['search']):g}"]
        ratios = {}
        for base in ("suite", "ball"):
            per_seed = [(b if b is not None else args.budget + 1) / (a if a is not None else args.budget + 1)
                        for a, b in zip(runs["search"], runs[base])]
            ratios[base] = statistics.median(per_seed)
            line.append(f"{base} {med(runs[base]):g}")
        print(f"  median       : {', '.join(line)}")
        print(f"  ratio        : median per-seed ratio {base_ratio_text(ratios)}")
        if designed:
            print(f"  first flips that are {designed[0]}: {sum(pattern)}/{len(pattern)} (the rest are the "
                  "digits model's own boundary flips)")
        summary.append((name, med(runs["search"]), med(runs["suite"]), med(runs["ball"]), ratios))
    print("\nsummary (median queries to the first flip; median per-seed ratio baseline/search):")
    for name, s_med, r_med, b_med, ratios in summary:
        print(f"  {name:<13} search {s_med:>6g}  suite {r_med:>6g} ({ratios['suite']:.2f}x)  "
              f"ball {b_med:>6g} ({ratios['ball']:.2f}x)")



def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=20000)
    parser.add_argument("--distance", type=float, default=0.1)
    parser.add_argument("--throughput-queries", type=int, default=4000)
    parser.add_argument("--reps", type=int, default=5, help="alternated host/agent runs per throughput figure")
    parser.add_argument("--device", default="local", help="the device whose agent the throughput runs through")
    parser.add_argument("--inventory", type=Path, default=None, help="edgeq.toml naming --device")
    parser.add_argument("--ssh-loopback", action="store_true",
                        help="run the throughput part through a real sshd on 127.0.0.1 (tests/lab.py), not --device")
    parser.add_argument("--throughput-only", action="store_true", help="skip the queries-to-first-flip part")
    args = parser.parse_args()

    from edgeq.devices.inventory import Device, load_inventory, select_devices
    from edgeq.evaluate import EXAMPLE_DATA
    from edgeq.inputs.search import prepare
    from edgeq.inputs.search.operators import operators_for

    folder = Path(tempfile.mkdtemp(prefix="edgeq-bench-search-"))
    models = build_models(folder)
    if not args.throughput_only:
        first_flip_figures(models, args)
    pair = models["fragile-twin"]
    prepared = prepare(pair[0], pair[1], EXAMPLE_DATA, args.distance, "linf")
    operators, _ = operators_for(prepared.data[0].shape[1:])
    with contextlib.ExitStack() as stack:
        if args.ssh_loopback:
            from lab import SshServer

            server = stack.enter_context(SshServer(folder / "sshd"))
            entry = dict(server.inventory_entry(), workdir=str(folder / "ssh-device"))
            inventory = folder / "edgeq.toml"
            inventory.write_text("[devices.ssh-loopback]\n"
                                 + "".join(f"{k} = {json.dumps(v)}\n" for k, v in entry.items()))
            device = load_inventory(inventory)["ssh-loopback"]
        elif args.device == "local":
            device = Device(name="local", transport="local", python=sys.executable, workdir=str(folder / "device"))
        else:
            device = select_devices(args.device, load_inventory(args.inventory))[0]
        compare_throughput(device, pair, prepared, operators, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
