"""Run models on the host and turn outputs into per-condition drops.

Two kinds of number, each measured with its own kernels and each labelled with them:

- *Whole-model* numbers (condition drops of the shipped, rebuilt, confirmed, searched and
  fixed models, and latency) go through a *measurer* and use the **target's resolver**
  (``HostMeasurer(resolver=...)``, default AUTO = XNNPACK, the runtime's and ``evaluate``'s
  default; or ``edgeq.repair.device.DeviceMeasurer``, which passes the same resolver to the
  device's agent). DESIGN.md: the same model lost 35 % under the built-in hybrid kernels and
  11 % under XNNPACK, so a fix measured on other kernels than the target's is not a fix.
  They run ``batch`` samples per invoke (default 1, as ``evaluate`` runs them), so a
  drop here equals evaluate's drop of the same model on the same suite.
- The *per-op* analysis (``Runner(preserve=True)``) needs every intermediate tensor, which
  only the built-in kernels with delegates off keep (``ANALYSIS_RESOLVER``). Those runs
  pad rows to a whole block, safe because hybrid kernels quantize each batch row on its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeq.errors import ModelError

ANALYSIS_RESOLVER = "BUILTIN_WITHOUT_DEFAULT_DELEGATES"  # the only one that keeps intermediate tensors
# what each resolver (the agent's RESOLVERS) runs, in words for the reports
KERNELS = {"AUTO": "XNNPACK delegate, the runtime's default",
           "BUILTIN": "optimized built-in kernels with the default delegates (XNNPACK)",
           "BUILTIN_REF": "reference built-in kernels",
           "BUILTIN_WITHOUT_DEFAULT_DELEGATES": "built-in kernels, delegates off"}
ANALYSIS_ON = (f"host: ai_edge_litert, resolver {ANALYSIS_RESOLVER} ({KERNELS[ANALYSIS_RESOLVER]}: the only "
               "setting that keeps intermediate tensors), 1 thread")
DEVICE_NOTE = ("the device agent has no op that keeps intermediate tensors, so the per-op comparison runs on "
               "the host; the drops (which samples flip, confirmations, search, verification) and latencies "
               "come from the device")
FLIP_SHARE_NOTE = ("flip_share charges the samples that flip under the whole-model resolver to the op that "
                   f"adds the most error under {ANALYSIS_RESOLVER}")
BLOCK = 64


def host_description(resolver: str, threads: int) -> str:
    """'host: ai_edge_litert, resolver R (kernels), N thread(s)': where host whole-model numbers come from."""
    return f"host: ai_edge_litert, resolver {resolver} ({KERNELS.get(resolver, resolver)}), {threads} thread(s)"


@dataclass
class Suite:
    """The condition set: inputs in model input order, one condition name per sample.

    ``roles``: condition → {"role": "field"|"stress", "reason"} (``bench.condition_roles``).
    Only field conditions set the fix target (DESIGN.md: only field cells decide); a
    condition without a role is field, as everything was before roles existed."""

    inputs: list[np.ndarray]
    condition: np.ndarray
    order: list[str]
    y: np.ndarray | None = None
    seed: int | None = None
    source: str = ""
    roles: dict[str, dict] | None = None

    @property
    def n(self) -> int:
        return len(self.condition)

    def rows(self, conditions) -> np.ndarray:
        return np.flatnonzero(np.isin(self.condition, list(conditions)))

    def role(self, condition: str) -> str:
        return ((self.roles or {}).get(condition) or {}).get("role", "field")

    def field_drops(self, drops: dict[str, dict]) -> dict[str, dict]:
        """The drops of the field conditions only: what a fix must keep under its target."""
        return {c: d for c, d in drops.items() if self.role(c) == "field"}


class Runner:
    """One interpreter fed blocks of rows; ``preserve`` keeps every intermediate tensor, which
    only ``ANALYSIS_RESOLVER`` can do (asking for another one with it is a programming error)."""

    def __init__(self, path: Path, preserve: bool = False, block: int = BLOCK, resolver: str = ANALYSIS_RESOLVER,
                 threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        if preserve and resolver != ANALYSIS_RESOLVER:
            raise ValueError(f"intermediate tensors are kept only under {ANALYSIS_RESOLVER}, not {resolver}")
        try:
            self.interpreter = Interpreter(
                model_path=str(path), num_threads=threads, experimental_preserve_all_tensors=preserve,
                experimental_op_resolver_type=getattr(OpResolverType, resolver))
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


def predict(path: Path, suite: Suite, rows: np.ndarray | None = None, resolver: str = "AUTO", threads: int = 1,
            batch: int = 1) -> np.ndarray:
    """The first output, one flattened row per sample, ``batch`` samples per invoke under ``resolver``."""
    runner = Runner(path, block=batch, resolver=resolver, threads=threads)
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
    """Whole-model runs on this host (the default): outputs and latency for drops and the fix table,
    under the target's ``resolver`` with ``threads`` and ``batch`` samples per invoke (as evaluate runs)."""

    device = None

    def __init__(self, resolver: str = "AUTO", threads: int = 1, batch: int = 1):
        from device_agents.edgeq_agent import RESOLVERS

        if resolver not in RESOLVERS:
            from edgeq.errors import ConfigError

            raise ConfigError(f"unknown resolver {resolver!r} (choose from {', '.join(RESOLVERS)})")
        self.resolver, self.threads, self.batch = resolver, int(threads), int(batch)

    @property
    def measured_on(self) -> str:
        return host_description(self.resolver, self.threads)

    @property
    def latency_basis(self) -> str:
        return (f"host: median of 300 single-sample invokes, resolver {self.resolver} "
                f"({KERNELS[self.resolver]}), {self.threads} thread(s)")

    def section(self) -> dict | None:
        """What the device runs say of the device (None here: nothing runs on a device)."""
        return None

    def predict_many(self, paths: list[Path], suite: Suite, rows: np.ndarray | None = None,
                     labels: list[str] | None = None) -> list[np.ndarray]:
        return [predict(p, suite, rows, self.resolver, self.threads, self.batch) for p in paths]

    def latency(self, path: Path, suite: Suite) -> dict:
        """``latency_us``: the median of single-sample invokes on this host, in µs."""
        value = host_latency_us(path, suite, resolver=self.resolver, threads=self.threads)
        return {"latency_us": value, "host_latency_us": value}

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def host_latency_us(path: Path, suite: Suite, invokes: int = 300, warmup: int = 20, resolver: str = "AUTO",
                    threads: int = 1) -> float:
    """Median of ``invokes`` single-sample invokes (after ``warmup``), in µs."""
    runner = Runner(path, block=1, resolver=resolver, threads=threads)
    first = np.arange(1)
    list(runner.blocks(suite.inputs, first))
    times = []
    for k in range(warmup + invokes):
        start = time.perf_counter()
        runner.interpreter.invoke()
        if k >= warmup:
            times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e6)
