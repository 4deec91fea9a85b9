"""Both models kept loaded on a device, evaluating batches sent over the agent protocol.

A search sends many small batches and needs every answer before it can choose the next
one, so a run directory per batch (push, run, pull) would cost more than the inference.
``DeviceBatch`` opens one agent session, takes the device's lock for as long as it is
open (as a run does), pushes the float and quantized models once and sends each batch
inline through the agent's ``infer`` op: the agent keeps both interpreters loaded between
requests. A batch larger than one request may carry (the agent's ``INFER_MAX_BYTES``,
which keeps every answer inside the protocol's line limit) is split on the host.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import math
from pathlib import Path

import numpy as np

from device_agents.edgeq_agent.wire import INFER_DTYPES, INFER_MAX_BYTES, encode_array, row_bytes
from edgeq.devices.inventory import Device
from edgeq.devices.run import job_values, preflight
from edgeq.devices.session import open_session
from edgeq.errors import AgentError, ConfigError, InputSetError
from edgeq.models.modelinfo import read_model

ANSWER_TIMEOUT_S = 600.0


class DeviceBatch:
    """``evaluate(batch) -> (float_outputs, quant_outputs)`` on ``device``, one list entry per model output.

    ``batch`` is a list with one array per model input (samples first). Use as a context
    manager (or call ``close``): the device's lock is held until then.
    """

    def __init__(self, device: Device, float_model: Path, quant_model: Path, *, threads: int = 1,
                 resolver: str = "AUTO", wait_s: float = 0.0):
        self.device = device
        self.float_model, self.quant_model = Path(float_model), Path(quant_model)
        self.options = {k: v for k, v in job_values(_Options(threads, resolver), "infer").items()}
        self.infos = [read_model(self.float_model), read_model(self.quant_model)]
        self.rows_per_request = rows_per_request(*self.infos)
        self.requests = 0
        self.invoke_ns = 0
        self.facts: dict = {}
        self._in_flight: list[int] = []  # request ids sent and not yet collected, in order
        self._early: dict = {}  # answers (or errors) read ahead of their collect by _drain
        self._generation_of: dict[int, int] = {}  # request id -> the models' push it was sent against
        self._generation, self._repushed = 0, False
        self._stack = contextlib.ExitStack()
        try:
            self._open(wait_s)
        except BaseException:
            self._stack.close()
            raise

    def _open(self, wait_s: float) -> None:
        opened = self._stack.enter_context(open_session(self.device, lock=True, wait_s=wait_s))
        self.deployer, self.session, self.facts = opened.deployer, opened.session, opened.facts
        for info in self.infos:
            preflight(self.device.name, self.facts, info)
        self._push(force=False)

    def _push(self, force: bool) -> None:
        (self.float_remote, self.float_sha), (self.quant_remote, self.quant_sha) = (
            self.deployer.push(self.float_model, force=force), self.deployer.push(self.quant_model, force=force))

    def evaluate(self, batch: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Both models' outputs for every row of ``batch`` (split into requests the agent accepts)."""
        return self.collect(self.submit(batch))

    def submit(self, batch: list[np.ndarray]) -> "_Ticket":
        """Send ``batch`` without waiting (``collect`` reads the answer): the device works while the host
        prepares the next batch. A failure to send is raised by ``collect``, in order."""
        batch = [np.asarray(a) for a in batch]
        rows = len(batch[0]) if batch else 0
        if rows == 0:
            raise ConfigError("nothing to evaluate: an empty batch")
        ticket = _Ticket([[a[lo:lo + self.rows_per_request] for a in batch]
                          for lo in range(0, rows, self.rows_per_request)])
        try:
            for part in ticket.parts:
                request_id = self._send(dict(self.options, inputs=[wire_array(a) for a in part]))
                ticket.ids.append(request_id)
                self._in_flight.append(request_id)
        except Exception as exc:  # the session is gone: collect raises it after the batches before
            ticket.error = exc
        return ticket

    def collect(self, ticket: "_Ticket") -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The outputs of a submitted batch (batches are collected in the order they were submitted)."""
        if ticket.error is not None and not ticket.ids:
            raise ticket.error
        parts = [self._outputs(part, request_id) for part, request_id in zip(ticket.parts, ticket.ids)]
        if ticket.error is not None:
            raise ticket.error
        if len(parts) == 1:
            return parts[0]
        return tuple([np.concatenate([p[side][k] for p in parts]) for k in range(len(parts[0][side]))]
                     for side in (0, 1))

    def _outputs(self, part: list[np.ndarray], request_id: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        generation = self._generation_of.pop(request_id, self._generation)
        try:
            answer = self._answer(request_id)
        except AgentError as exc:
            if exc.kind != "Corrupt" or (generation == self._generation and self._repushed):
                raise
            if generation == self._generation:  # a stored model went bad on the device: replace it once
                self._drain()
                self._push(force=True)
                self._generation, self._repushed = self._generation + 1, True
            # sent against the bad copy: send again against the new one (a second Corrupt raises)
            answer = _refused_is_device_fault(
                self.device.name, self.session.request, "infer", timeout=ANSWER_TIMEOUT_S,
                **self._params(dict(self.options, inputs=[wire_array(a) for a in part])))
        rows = len(part[0])
        outputs = tuple(_read_outputs(self.device.name, answer, side, rows, info)
                        for side, info in zip(("float", "quant"), self.infos))
        self.invoke_ns += _invoke_ns(self.device.name, answer)
        self.requests += 1
        return outputs

    def _answer(self, request_id: int) -> dict:
        self._in_flight.remove(request_id)
        if request_id in self._early:
            answer = self._early.pop(request_id)
            if isinstance(answer, BaseException):
                raise answer
            return answer
        return _refused_is_device_fault(self.device.name, self.session.receive, request_id, "infer",
                                        timeout=ANSWER_TIMEOUT_S)

    def _drain(self) -> None:
        """Read every answer still in flight (kept for its collect) so the session can carry other requests."""
        for request_id in list(self._in_flight):
            if request_id in self._early:
                continue
            try:
                self._early[request_id] = _refused_is_device_fault(self.device.name, self.session.receive,
                                                                   request_id, "infer", timeout=ANSWER_TIMEOUT_S)
            except AgentError as exc:
                self._early[request_id] = exc

    def _params(self, params: dict) -> dict:
        return dict(params, float=self.float_remote, quant=self.quant_remote,
                    float_sha256=self.float_sha, quant_sha256=self.quant_sha)

    def _send(self, params: dict) -> int:
        request_id = self.session.send("infer", **self._params(params))
        self._generation_of[request_id] = self._generation
        return request_id

    def describe(self) -> dict:
        runtime = self.facts.get("runtime") or {}
        return {"where": f"device {self.device.name} (agent, batches of up to {self.rows_per_request} rows)",
                "device": self.device.name, "arch": self.facts.get("arch"),
                "runtime": f"{runtime.get('name')} {runtime.get('version')}", **self.options,
                "rows_per_request": self.rows_per_request}

    def close(self) -> None:
        self._stack.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Ticket:
    """A submitted batch: its parts (one request each), their request ids, and a failure to send."""

    def __init__(self, parts: list[list[np.ndarray]]):
        self.parts, self.ids, self.error = parts, [], None


class _Options:
    def __init__(self, threads, resolver):
        self.threads, self.resolver = threads, resolver


def rows_per_request(float_info, quant_info) -> int:
    """The most rows one infer request may carry: inputs, and both models' outputs, within INFER_MAX_BYTES
    (a row's bytes counted by the agent's own rule, ``wire.row_bytes``)."""
    def sample_bytes(tensors) -> int:
        return max(sum(row_bytes(t.shape_signature or t.shape, t.dtype) for t in tensors), 1)

    inputs = sample_bytes(float_info.inputs)
    outputs = sample_bytes(float_info.outputs) + sample_bytes(quant_info.outputs)
    rows = min(INFER_MAX_BYTES // inputs, INFER_MAX_BYTES // outputs)
    if rows < 1:
        raise ConfigError(f"{Path(float_info.path).name}: one sample is larger than the {INFER_MAX_BYTES} bytes an "
                          "agent infer request may carry; evaluate it on the host instead of a device")
    return rows


wire_array = encode_array  # an array as the agent's infer op takes it (the agent's wire.encode_array)


def read_wire_array(item, where: str) -> np.ndarray:
    """The inverse of ``wire_array``, for data from a device: checked, never trusted. Not the agent's
    ``wire.decode_array``: that one checks a request's inputs (2 to 8 positive dimensions, AgentFailure);
    an answer's outputs may have one dimension or an empty one, and a bad one is the device's fault."""
    if not isinstance(item, dict) or item.get("dtype") not in INFER_DTYPES or not isinstance(item.get("shape"), list):
        raise AgentError(f"{where}: malformed array in the agent's answer", kind="Protocol")
    shape = item["shape"]
    if any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape):
        raise AgentError(f"{where}: bad shape {shape!r} in the agent's answer", kind="Protocol")
    dtype = np.dtype(item["dtype"])
    try:
        raw = base64.b64decode(item.get("data", ""), validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise AgentError(f"{where}: an output in the agent's answer is not base64", kind="Protocol") from None
    if len(raw) != math.prod(shape) * dtype.itemsize:
        raise AgentError(f"{where}: an output of {len(raw)} bytes does not fit its shape {shape}", kind="Protocol")
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)


def _refused_is_device_fault(device: str, call, *args, **kwargs) -> dict:
    """An infer request's answer; the agent refusing the batch as bad inputs is the device's fault, not the user's.

    The host built the batch from data it checked against the same model (the device holds it under its
    sha256), so a "BadInputs" answer is a device that misbehaves: exit 3 naming it, never exit 2."""
    try:
        return call(*args, **kwargs)
    except InputSetError as exc:
        raise AgentError(f"{device}: the agent refused a batch the host had checked against the model "
                         f"({exc.problem})", kind="Protocol") from None


def _invoke_ns(device: str, answer: dict) -> int:
    """The answer's invoke times (whole nanoseconds per model), checked: a device's numbers are data, not trusted."""
    timings = answer.get("invoke_ns", {})
    if not isinstance(timings, dict) or not set(timings) <= {"float", "quant"} or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in timings.values()):
        raise AgentError(f"{device}: the agent's infer answer has malformed timings (invoke_ns "
                         f"{_short(timings)}: whole nanoseconds per model expected)", kind="Protocol")
    return sum(timings.values())


def _read_outputs(device: str, answer: dict, side: str, rows: int, info) -> list[np.ndarray]:
    """One model's outputs from an infer answer, each checked against the model file: ``rows`` rows, the
    model's dtype and per-row shape (a dynamic dimension may take any size), at least one value per row."""
    count = len(info.outputs)
    items = answer.get(side)
    if not isinstance(items, list) or len(items) != count:
        raise AgentError(f"{device}: the agent's infer answer lacks the {side} model's {count} output(s)",
                         kind="Protocol")
    if "rows" in answer and (isinstance(answer["rows"], bool) or answer["rows"] != rows):
        raise AgentError(f"{device}: the agent's infer answer says {_short(answer['rows'])} rows; {rows} were sent",
                         kind="Protocol")
    arrays = [read_wire_array(item, device) for item in items]
    if any(len(a.shape) == 0 or a.shape[0] != rows for a in arrays):
        raise AgentError(f"{device}: the agent answered for a different number of rows than the {rows} sent",
                         kind="Protocol")
    for k, (array, tensor) in enumerate(zip(arrays, info.outputs)):
        problem = _output_mismatch(array, tensor)
        if problem:
            raise AgentError(f"{device}: the agent's {side} output {k} ({tensor.name}) {problem}", kind="Protocol")
    return arrays


def _output_mismatch(array: np.ndarray, tensor) -> str | None:
    """What makes ``array`` (rows first) unlike what the model file says its output is; None when it fits."""
    try:
        expected = np.dtype(tensor.dtype)
    except TypeError:
        expected = None
    if expected is not None and array.dtype != expected:
        return f"is {array.dtype.name}, but the model's output is {expected.name}"
    dims = tuple(tensor.shape_signature or tensor.shape)[1:]
    got = tuple(array.shape[1:])
    if len(got) != len(dims) or any(d >= 0 and g != d for g, d in zip(got, dims)):
        want = ", ".join("*" if d < 0 else str(d) for d in dims)
        return f"has rows of shape {list(got)}, but the model's are [{want}]"
    if math.prod(got) == 0:
        return "is empty: no value per row"
    return None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
