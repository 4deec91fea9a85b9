#!/usr/bin/env python3
"""Benchmark: how fast disagreement search finds a flip, and what the device path costs.

1. Queries to the first flipped decision (float vs dynamic-range quantized top-1),
   edgeq search vs random draws from the family suite (a random data row, a random
   family that applies, a random severity 1..3: what the risky suite samples), with the
   same seeds and the same query budget, over ``--seeds`` seeds. A run that finds nothing
   counts as budget + 1 (so medians are lower bounds for it); success rates are printed.
   Models: the fragile twin (tests/fragile.py: breaks only when a silent pixel moves),
   and the example digits MLP itself (its natural, rare quantization flips).
2. Search throughput (queries/s) through the ``local`` device's agent (batched infer
   requests) vs in-process on the host, at two pool sizes (rows per request).

Prints figures; asserts nothing. Needs the host extra (TensorFlow) to build the models:
    .venv/bin/python scripts/bench_search.py [--seeds 10] [--budget 2000] [--distance 0.1]
"""

from __future__ import annotations

import argparse
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

    from edgeq.evaluate import EXAMPLE_DATA, EXAMPLE_MODEL
    from edgeq.models.convert import convert_model

    with np.load(EXAMPLE_DATA) as data:
        x = data["x"]
    models = {}
    for name, source in (("fragile-twin", make_fragile_twin(EXAMPLE_MODEL, x, folder / "fragile.keras")),
                         ("digits-mlp", EXAMPLE_MODEL)):
        result = convert_model(source, folder / name)
        models[name] = (result.float_path, result.quant_path)
    return models


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
    from edgeq.inputs.search.objective import choose_objective
    from edgeq.inputs.search.operators import family_fits

    x, space = prepared.data[0], prepared.spaces[0]
    families = [f for f in FAMILIES.values() if family_fits(f, x.shape[1:])]
    rng = np.random.default_rng([seed, 0xBA5E])
    objective, done = None, 0
    while done < budget:
        rows = []
        for _ in range(min(batch, budget - done)):
            row, family, severity = int(rng.integers(len(x))), families[int(rng.integers(len(families)))], \
                int(rng.integers(1, 4))
            changed = family.transform(x[row:row + 1].astype(np.float64), family.levels[severity - 1], space.data,
                                       np.random.default_rng(rng.integers(2 ** 32)))
            rows.append(to_dtype(changed, x.dtype)[0])
        f, q = evaluator.evaluate([np.stack(rows)])
        objective = objective or choose_objective(prepared.output_names, f, q, None, prepared.float_info)
        flips = np.flatnonzero(objective.judge(f, q).flip)
        if flips.size:
            return done + int(flips[0]) + 1
        done += len(rows)
    return None


def throughput(evaluator, prepared, operators, budget, epsilon, pool) -> float:
    from edgeq.inputs.search.disagreement import SearchConfig, search

    config = SearchConfig(budget=budget, seed=0, epsilon=epsilon, pool=pool, per_seed=10 ** 6, patience=10 ** 6)
    started = time.perf_counter()
    result = search(evaluator, prepared.data, prepared.spaces, operators, config, prepared.output_names,
                    prepared.float_info)
    return result.queries / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=2000)
    parser.add_argument("--distance", type=float, default=0.1)
    parser.add_argument("--throughput-queries", type=int, default=4000)
    args = parser.parse_args()

    from edgeq.devices.batch import DeviceBatch
    from edgeq.devices.inventory import Device
    from edgeq.evaluate import EXAMPLE_DATA
    from edgeq.inputs.search import prepare
    from edgeq.inputs.search.evaluators import HostEvaluator
    from edgeq.inputs.search.operators import operators_for

    folder = Path(tempfile.mkdtemp(prefix="edgeq-bench-search-"))
    models = build_models(folder)
    print(f"budget {args.budget} queries, distance {args.distance} (linf, of the data range), seeds 0..{args.seeds - 1}")
    for name, pair in models.items():
        prepared = prepare(pair[0], pair[1], EXAMPLE_DATA, args.distance, "linf")
        operators, _ = operators_for(prepared.data[0].shape[1:])
        host = HostEvaluator(*pair)
        ours, theirs, ratios = [], [], []
        for seed in range(args.seeds):
            q_search, _ = edgeq_first_flip(host, prepared, operators, args.budget, seed, args.distance)
            q_random = random_first_flip(host, prepared, args.budget, seed)
            ours.append(q_search)
            theirs.append(q_random)
            a = q_search if q_search is not None else args.budget + 1
            b = q_random if q_random is not None else args.budget + 1
            ratios.append(b / a)
        def show(values):
            return " ".join("-" if v is None else str(v) for v in values)
        print(f"\n{name}: queries to the first flip per seed")
        print(f"  edgeq search : {show(ours)}")
        print(f"  random suite : {show(theirs)}")
        print(f"  success      : search {sum(v is not None for v in ours)}/{args.seeds}, "
              f"random {sum(v is not None for v in theirs)}/{args.seeds}")
        med_s = statistics.median(v if v is not None else args.budget + 1 for v in ours)
        med_r = statistics.median(v if v is not None else args.budget + 1 for v in theirs)
        print(f"  median       : search {med_s:g}, random {med_r:g}; median per-seed ratio random/search "
              f"{statistics.median(ratios):.2f}x (ratio of medians {med_r / med_s:.2f}x)")

    name, pair = "fragile-twin", models["fragile-twin"]
    prepared = prepare(pair[0], pair[1], EXAMPLE_DATA, args.distance, "linf")
    operators, _ = operators_for(prepared.data[0].shape[1:])
    device = Device(name="local", transport="local", python=sys.executable, workdir=str(folder / "device"))
    print(f"\nthroughput ({name}, {args.throughput_queries} queries, search without early stop):")
    for pool in (8, 64):
        host_rate = throughput(HostEvaluator(*pair), prepared, operators, args.throughput_queries, args.distance, pool)
        with DeviceBatch(device, *pair) as agent:
            agent_rate = throughput(agent, prepared, operators, args.throughput_queries, args.distance, pool)
            requests = agent.requests
        print(f"  pool {pool:>3} rows/request: in-process {host_rate:8.0f} q/s, local agent {agent_rate:8.0f} q/s "
              f"({requests} requests) -> agent/in-process {agent_rate / host_rate:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
