#!/usr/bin/env python3
"""Mutation fuzzing for a fixed time: the input-set, run-directory, .tflite and output-spec readers.

Why: these readers take files edgeq did not write (the user's data, a device's
answers, anyone's model); the only acceptable failure is a one-line EdgeqError. The
CI slice (tests/test_fuzz.py) runs a few hundred examples; this runs random
mutations for as long as asked, e.g. nightly, and prints per target how many inputs
were tried, how each ended, and every distinct crash with a reproducer seed.

    .venv/bin/python scripts/fuzz.py --minutes 10 [--target inputset,rundir,model,outputs-spec] [--seed N]

Exit status 1 when any crash was found.
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fuzz_targets import (build_seeds, fuzz_inputset, fuzz_model, fuzz_outputs_spec,  # noqa: E402
                          fuzz_rundir)

KINDS = ("flip", "cut", "insert", "zero")
TARGETS = ("inputset", "rundir", "model", "outputs-spec")


def random_mutations(rng: random.Random) -> list:
    return [(rng.choice(KINDS), rng.randrange(1 << 20), rng.randrange(256)) for _ in range(rng.randint(1, 6))]


def one(target: str, seeds, work: Path, rng: random.Random) -> str:
    mutations = random_mutations(rng)
    if target == "inputset":
        return fuzz_inputset(seeds, work, mutations)
    if target == "model":
        return fuzz_model(seeds, work, mutations)
    if target == "outputs-spec":
        return fuzz_outputs_spec(seeds, work, mutations)
    return fuzz_rundir(seeds, work, mutations, rng.randrange(7), rng.random() < 0.5)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="per target")
    parser.add_argument("--target", default="inputset,rundir,model,outputs-spec")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.target.split(",")) - set(TARGETS))
    if unknown:
        parser.error(f"unknown target {unknown[0]!r} (targets: {', '.join(TARGETS)})")
    with tempfile.TemporaryDirectory(prefix="edgeq-fuzz-") as folder:
        work = Path(folder)
        seeds = build_seeds(work / "seeds", *_example_models(work))
        crashes = {}
        for target in args.target.split(","):
            crashes.update(fuzz_for(target, seeds, work, args.minutes * 60, args.seed))
    for signature, (target, seed, text) in crashes.items():
        print(f"CRASH in {target} (--seed {seed}):\n{text}")
    return 1 if crashes else 0


def fuzz_for(target: str, seeds, work: Path, seconds: float, seed: int) -> dict:
    endings, crashes, tried = collections.Counter(), {}, 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        rng = random.Random(f"{seed}:{target}:{tried}")
        tried += 1
        try:
            endings[one(target, seeds, work, rng)] += 1
        except Exception as exc:  # noqa: BLE001 - a crash is what we are looking for
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            signature = (target, type(exc).__name__, frame.filename, frame.lineno)
            endings[f"CRASH {type(exc).__name__}"] += 1
            crashes.setdefault(signature, (target, f"{seed} input #{tried - 1}",
                                           "".join(traceback.format_exception(exc))[-1500:]))
    shown = ", ".join(f"{k} {v}" for k, v in endings.most_common())
    print(f"{target}: {tried} inputs in {seconds / 60:g} min ({tried / seconds:.0f}/s): {shown}", flush=True)
    return crashes


def _example_models(work: Path) -> tuple[Path, Path]:
    from edgeq.evaluate import EXAMPLE_DATA, EXAMPLE_MODEL
    from edgeq.models.convert import convert_model

    return convert_model(EXAMPLE_MODEL, work / "models").float_path, EXAMPLE_DATA


if __name__ == "__main__":
    sys.exit(main())
