"""The smoke check: the installed file, run where the application finds it, answers as it did in evaluation.

After the switch, the agent loads the model *at the installed path* (so a wrong link, a file the
application cannot read or a runtime that cannot load it shows here, not in the field) on a few
rows of the evaluation's own suite, and the outputs must equal what the evaluation recorded for
those rows on that device class. The agent checks the file's sha256 before it loads it, so the
file that answers is the file evaluated.

Equal means bit-exact by default: one runtime, one architecture, the same threads and resolver
give the same bits. ``tolerance`` (relative to the recorded output's largest magnitude) allows
for a runtime that picks other kernels on another CPU of the same class; the largest difference
seen is reported either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeq.errors import ConfigError, InputSetError
from edgeq.install.evidence import Evidence

SMOKE_ROWS = 16  # enough to touch every output on real rows; seconds even on a slow board
QUANT_RUN = Path("runs") / "quant"


@dataclass(frozen=True)
class SmokeSet:
    """Rows of an evaluation's suite and the quantized model's recorded outputs for them."""

    inputs: Path  # a small .npz with those rows
    expected: list  # one array per output, one row per sample
    threads: int
    resolver: str
    source: Path  # the evaluation run the rows and outputs come from

    def as_dict(self) -> dict:
        return {"rows": len(self.expected[0]) if self.expected else 0, "from": str(self.source),
                "threads": self.threads, "resolver": self.resolver}


def build_smoke(evidence: Evidence, folder: Path, rows: int = SMOKE_ROWS) -> tuple[SmokeSet | None, str]:
    """The smoke set for ``evidence`` written into ``folder``, or None and why there is none."""
    from edgeq.inputs.inputset import load_inputset, write_npz
    from edgeq.results import RunResult
    from edgeq.rows import run_rows, take_rows

    if evidence.folder is None:
        return None, "the evaluation's folder is not known (history only): the smoke check only loads the model"
    run_dir = evidence.folder / QUANT_RUN
    try:
        run = RunResult.load(run_dir)
        suite = load_inputset(Path(run.run["inputs"]["path"]))
    except (ConfigError, KeyError, OSError) as exc:
        return None, f"{run_dir}: the evaluation's run cannot be read ({exc}): the smoke check only loads the model"
    positions = np.arange(min(rows, run.n))
    try:
        chosen = suite.positions(run_rows(run)[positions])  # a lazily built suite holds the rows run only
    except InputSetError as exc:
        return None, f"{exc}: the smoke check only loads the model"
    order = np.argsort(chosen, kind="stable")
    picked = {name: take_rows(array, chosen[order]) for name, array in suite.arrays.items()}
    inputs = folder / "smoke.npz"
    write_npz(inputs, {name: array[np.argsort(order)] for name, array in picked.items()})
    expected = [np.asarray(take_rows(out, positions)) for out in run.outputs]
    spec = run.run.get("spec") or {}
    return SmokeSet(inputs, expected, int(spec.get("threads", 1)), str(spec.get("resolver", "AUTO")), run_dir), ""


def compare_smoke(smoke: SmokeSet, outputs: list, tolerance: float = 0.0) -> dict:
    """Per output: bit-exact or not, the largest difference; ``ok`` when every output is within tolerance."""
    checks = []
    for index, (want, got) in enumerate(zip(smoke.expected, outputs)):
        got = np.asarray(got)
        if got.shape != want.shape or got.dtype != want.dtype:
            checks.append({"output": index, "ok": False, "bit_exact": False,
                           "why": f"shape/dtype {got.dtype}{list(got.shape)} vs recorded {want.dtype}{list(want.shape)}"})
            continue
        exact = bool(np.array_equal(got, want, equal_nan=want.dtype.kind == "f"))
        diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)), initial=0.0))
        scale = max(1.0, float(np.max(np.abs(want.astype(np.float64)), initial=0.0)))
        ok = exact or (bool(np.isfinite(diff)) and diff <= tolerance * scale)
        checks.append({"output": index, "ok": ok, "bit_exact": exact, "max_abs_error": diff})
    if len(outputs) != len(smoke.expected):
        checks.append({"output": None, "ok": False, "bit_exact": False,
                       "why": f"{len(outputs)} outputs, the evaluation recorded {len(smoke.expected)}"})
    return {"ok": all(c["ok"] for c in checks), "outputs": checks, "tolerance": tolerance, **smoke.as_dict()}


def describe(check: dict) -> str:
    """One line: what failed, or that it passed and how."""
    if check.get("skipped"):
        return check["skipped"]
    bad = [c for c in check["outputs"] if not c["ok"]]
    if not bad:
        exact = all(c["bit_exact"] for c in check["outputs"])
        return f"smoke check passed on {check['rows']} rows ({'bit-exact' if exact else 'within tolerance'})"
    first = bad[0]
    why = first.get("why") or f"max abs error {first['max_abs_error']:.3g} > tolerance {check['tolerance']:g}"
    return f"smoke check failed on output {first['output']}: {why}"


__all__ = ["SMOKE_ROWS", "SmokeSet", "build_smoke", "compare_smoke", "describe"]
