"""Run models on the host and turn outputs into per-condition drops.

Everything runs on ai_edge_litert's built-in kernels with delegates off and one thread:
that is the only setting that keeps intermediate tensors, and using it for every number
(ranking, confirmation, fix search, verification) keeps them comparable. Rows are
padded to a whole block instead of resizing for the last one, which is safe because
hybrid kernels quantize each batch row on its own (DESIGN.md).

Whole-model numbers (condition drops, latency) go through a *measurer*: ``HostMeasurer``
here, or ``edgeq.repair.device.DeviceMeasurer``, which runs the same models on a device
through its agent. The per-op analysis always runs here (``Runner(preserve=True)``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeq.errors import ModelError

HOST = "host: ai_edge_litert built-in kernels, delegates off, 1 thread"
DEVICE_NOTE = ("the device agent has no op that keeps intermediate tensors, so the per-op comparison runs on "
               "the host; the drops (which samples flip, confirmations, search, verification) and latencies "
               "come from the device")
BLOCK = 64


@dataclass
class Suite:
    """The condition set: inputs in model input order, one condition name per sample."""

    inputs: list[np.ndarray]
    condition: np.ndarray
    order: list[str]
    y: np.ndarray | None = None
    seed: int | None = None
    source: str = ""

    @property
    def n(self) -> int:
        return len(self.condition)

    def rows(self, conditions) -> np.ndarray:
        return np.flatnonzero(np.isin(self.condition, list(conditions)))


class Runner:
    """One interpreter fed blocks of rows; ``preserve`` keeps every intermediate tensor."""

    def __init__(self, path: Path, preserve: bool = False, block: int = BLOCK):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        try:
            self.interpreter = Interpreter(
                model_path=str(path), num_threads=1, experimental_preserve_all_tensors=preserve,
                experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(path, f"cannot load with the host interpreter: {str(exc).splitlines()[0][:200]}") \
                from None
        self.path = Path(path)
        self.block = self._resize(block)

    def _resize(self, block: int) -> int:
        """Batch ``block`` rows at once when the model allows it, else one at a time."""
        details = self.interpreter.get_input_details()
        try:
            for d in details:
                self.interpreter.resize_tensor_input(d["index"], [block] + list(d["shape"][1:]))
            self.interpreter.allocate_tensors()
            return block
        except (ValueError, RuntimeError):
            for d in details:
                self.interpreter.resize_tensor_input(d["index"], [1] + list(d["shape"][1:]))
            self.interpreter.allocate_tensors()
            return 1

    def blocks(self, inputs: list[np.ndarray], rows: np.ndarray):
        """Invoke on ``rows`` a block at a time; yields the number of real rows in the block
        (the interpreter holds that block's tensors until the next step)."""
        details = self.interpreter.get_input_details()
        for lo in range(0, len(rows), self.block):
            picked = rows[lo:lo + self.block]
            padded = np.concatenate([picked, np.repeat(picked[-1:], self.block - len(picked))])
            for d, array in zip(details, inputs):
                self.interpreter.set_tensor(d["index"], np.asarray(array[padded], dtype=d["dtype"]))
            self.interpreter.invoke()
            yield len(picked)

    def output_index(self) -> int:
        return self.interpreter.get_output_details()[0]["index"]


def predict(path: Path, suite: Suite, rows: np.ndarray | None = None) -> np.ndarray:
    """The first output, one flattened row per sample."""
    runner = Runner(path)
    rows = np.arange(suite.n) if rows is None else rows
    index, parts = runner.output_index(), []
    for n in runner.blocks(suite.inputs, rows):
        out = runner.interpreter.get_tensor(index)
        parts.append(np.array(out[:n]).reshape(n, -1))
    return np.concatenate(parts).astype(np.float64)


def top1(outputs: np.ndarray) -> np.ndarray:
    """Class per sample: argmax, or the 0.5 threshold for a single score."""
    return outputs.argmax(1) if outputs.shape[1] > 1 else (outputs[:, 0] > 0.5).astype(np.int64)


def condition_drops(suite: Suite, ref_top: np.ndarray, cand_top: np.ndarray,
                    rows: np.ndarray | None = None) -> dict[str, dict]:
    """Per condition: the flip rate (top-1 disagreement) and the drop a fix must keep under
    target: the accuracy drop when the suite has labels, else the flip rate."""
    rows = np.arange(suite.n) if rows is None else rows
    conditions = suite.condition[rows]
    found = {}
    for name in suite.order:
        mask = conditions == name
        if not mask.any():
            continue
        flips = float(np.mean(ref_top[mask] != cand_top[mask]))
        entry = {"n": int(mask.sum()), "flip_rate": flips, "drop": flips}
        if suite.y is not None:
            y = suite.y[rows][mask]
            right_ref, right_cand = int(np.sum(ref_top[mask] == y)), int(np.sum(cand_top[mask] == y))
            n = int(mask.sum())  # drop from counts: 4/200 is exactly 0.02, not 0.020000000000000018
            entry.update(accuracy_float=right_ref / n, accuracy_quantized=right_cand / n,
                         drop=(right_ref - right_cand) / n)
        found[name] = entry
    return found


def worst_drop(drops: dict[str, dict]) -> tuple[str | None, float]:
    if not drops:
        return None, 0.0
    name = max(drops, key=lambda c: (drops[c]["drop"], c))
    return name, drops[name]["drop"]


class HostMeasurer:
    """Whole-model runs on this host (the default): outputs and latency for drops and the fix table."""

    device = None
    latency_basis = "host: median of 300 single-sample invokes, built-in kernels, 1 thread"

    @property
    def measured_on(self) -> str:
        return HOST

    def section(self) -> dict | None:
        """What the device runs say of the device (None here: nothing runs on a device)."""
        return None

    def predict_many(self, paths: list[Path], suite: Suite, rows: np.ndarray | None = None,
                     labels: list[str] | None = None) -> list[np.ndarray]:
        return [predict(p, suite, rows) for p in paths]

    def latency(self, path: Path, suite: Suite) -> dict:
        """``latency_us``: the median of single-sample invokes on this host, in µs."""
        value = host_latency_us(path, suite)
        return {"latency_us": value, "host_latency_us": value}

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def host_latency_us(path: Path, suite: Suite, invokes: int = 300, warmup: int = 20) -> float:
    """Median of ``invokes`` single-sample invokes (after ``warmup``), in µs."""
    runner = Runner(path, block=1)
    first = np.arange(1)
    list(runner.blocks(suite.inputs, first))
    times = []
    for k in range(warmup + invokes):
        start = time.perf_counter()
        runner.interpreter.invoke()
        if k >= warmup:
            times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e6)
