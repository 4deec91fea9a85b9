"""Print the coverage of edgeq's anytime-valid interval under adaptive stopping (issue 24).

A cell is sampled in rounds, looked at after 32, 64, 128, 256 and 512 trials, and stopped at
the first look where its confidence sequence decides it (below 2 %, at/above 10 %, between).
Columns: true rate; how often the CS holds it at the stop and at every look; how often a
fixed-n Wilson 95 % interval holds it at that stop and when Wilson itself decides the stop;
mean trials at the stop; wrong decisions; share decided by 512. Then the paired drop.

    .venv/bin/python scripts/sequential_table.py [--reps 20000] [--seed 1]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgeq.analysis import sequential  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{sequential.INTERVAL_METHOD}, alpha {sequential.ALPHA}, t_opt {sequential.T_OPT}, "
          f"looks {sequential.LOOKS}, {args.reps} repetitions, seed {args.seed}")
    print("\n".join(sequential.coverage_lines(sequential.simulate_coverage(reps=args.reps, seed=args.seed))))
    print(f"\n0-of-n decided below 2% after {sequential.trials_to_decide_zero()} trials")
    print("\n     a      b   drop  CS@stop  CS@every  mean n")
    for row in sequential.simulate_paired(reps=args.reps, seed=args.seed):
        print(f"{row['a']:6.3f} {row['b']:6.3f} {row['drop']:6.3f}  {row['cs_at_stop']:7.4f}  "
              f"{row['cs_every_look']:8.4f}  {row['mean_trials']:6.1f}")


if __name__ == "__main__":
    main()
