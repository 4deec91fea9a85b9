"""Where candidates are evaluated: this host's interpreter, or a device's agent in batches.

Both give ``evaluate(batch) -> (float_outputs, quant_outputs)`` for a list with one
array per model input. A search keeps batches in flight through ``submit(batch) -> ticket``
/ ``collect(ticket)``: a device's evaluator sends at ``submit`` and reads at ``collect``, so
the device works while the next batch is prepared; ``pipelined`` gives any other evaluator
(this host's) the same two calls, doing the work at ``submit``. A failure is raised at
``collect``, in submission order, so what the batches before it found is kept. Both use the agent's own
interpreter code (``open_interpreter`` and ``BatchInvoker`` from
``device_agents/edgeq_agent/runtime.py``), so the host evaluator is the agent's ``infer`` op without
the wire: a difference between them is the device's, not edgeq's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeq.errors import ConfigError, ModelError


class HostEvaluator:
    """Both models in this process (ai_edge_litert, as the local agent would load them)."""

    def __init__(self, float_model: Path, quant_model: Path, threads: int = 1, resolver: str = "AUTO"):
        from device_agents.edgeq_agent import AgentFailure, BatchInvoker, import_runtime, open_interpreter

        self.threads, self.resolver = threads, resolver
        try:
            self.runtime = import_runtime("ai_edge_litert")
            self.invokers = []
            for path in (float_model, quant_model):
                interpreter = open_interpreter(self.runtime, str(path), threads, resolver)
                self.invokers.append(BatchInvoker(interpreter, interpreter.get_input_details(),
                                                  interpreter.get_output_details()))
        except AgentFailure as exc:
            raise ModelError(float_model if not getattr(self, "invokers", None) else quant_model, str(exc)) from None
        self.requests = 0

    def evaluate(self, batch: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        batch = [np.ascontiguousarray(a) for a in batch]
        outputs = []
        for invoker in self.invokers:
            invoker.invoke_timed(batch)
            outputs.append([np.array(a) for a in invoker.read_outputs()])
        self.requests += 1
        return outputs[0], outputs[1]

    def describe(self) -> dict:
        return {"where": "host (in-process interpreter)", "device": None,
                "runtime": f"{self.runtime[0]} {self.runtime[1]}", "threads": self.threads,
                "resolver": self.resolver}

    def close(self) -> None:
        self.invokers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Done:
    """A batch already evaluated (or failed) at submit; ``result`` answers or raises, at collect."""

    def __init__(self, value=None, error: Exception | None = None):
        self.value, self.error = value, error

    @classmethod
    def of(cls, evaluate, batch):
        try:
            return cls(evaluate(batch))
        except Exception as exc:  # raised at collect, after the batches before it are settled
            return cls(error=exc)

    def result(self):
        if self.error is not None:
            raise self.error
        return self.value


class _AtSubmit:
    """submit/collect for an evaluator that only has ``evaluate``."""

    def __init__(self, inner):
        self.inner = inner

    def submit(self, batch):
        return _Done.of(self.inner.evaluate, batch)

    def collect(self, ticket):
        return ticket.result()


def pipelined(evaluator):
    """The evaluator itself when it can keep batches in flight, else one that evaluates at submit."""
    if callable(getattr(evaluator, "submit", None)) and callable(getattr(evaluator, "collect", None)):
        return evaluator
    return _AtSubmit(evaluator)


def open_evaluator(float_model: Path, quant_model: Path, device: str | None = None, inventory: Path | None = None,
                   threads: int = 1, resolver: str = "AUTO", wait_s: float = 0.0):
    """The host evaluator without ``device``; else the named inventory device through its agent."""
    if device in (None, "", "host"):
        return HostEvaluator(float_model, quant_model, threads, resolver)
    from edgeq.devices.batch import DeviceBatch
    from edgeq.devices.inventory import load_inventory, select_devices

    targets = select_devices(device, load_inventory(inventory))
    if len(targets) != 1:
        raise ConfigError(f"--device {device}: a search runs on one device, not {len(targets)}")
    return DeviceBatch(targets[0], float_model, quant_model, threads=threads, resolver=resolver, wait_s=wait_s)


def check_pair(float_info, quant_info) -> None:
    """The two models must take the same inputs (names aside): exit 2 otherwise."""
    def signature(info):
        return [(t.dtype, tuple(t.shape_signature or t.shape)[1:]) for t in info.inputs]

    if signature(float_info) != signature(quant_info):
        raise ConfigError(f"{Path(float_info.path).name} and {Path(quant_info.path).name} have different input "
                          f"signatures ({signature(float_info)} vs {signature(quant_info)}): not a float/quantized pair")
    if len(float_info.outputs) != len(quant_info.outputs):
        raise ConfigError(f"{Path(float_info.path).name} has {len(float_info.outputs)} outputs but "
                          f"{Path(quant_info.path).name} has {len(quant_info.outputs)}: not a float/quantized pair")
