"""Whole-model measurements for localize and fix on a device, through its agent.

The condition drops (shipped model, confirmations, search, verification) and the
latencies of the float, quantized and fixed models come from the device's own runtime:
every model runs over an input set written from the suite, the same run job ``edgeq
run`` sends (``edgeq.devices.run``), and its outputs and latency records are read back
as a ``RunResult``. The per-op analysis stays on the host: the agent has no op that
keeps intermediate tensors.

One agent session is held for the whole job, and the device's lock with it (taken once,
``wait_s`` to queue for a device another job holds), because a localize or fix measures
many models in turn and another job measuring in between would time them against each
other. The session is opened as every locked job opens one (``devices.session.open_session``) and
kept open across calls; each model runs as ``run_on_device`` runs it.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import numpy as np

from edgeq.repair.measure import Suite


class DeviceMeasurer:
    """Runs models on ``device`` for localize/fix; a context manager that holds the session and lock.

    ``workdir``: where input sets and pulled runs are kept on the host. Opened on entry (or
    at the first run), so an unreachable device fails before any model is measured.
    """

    def __init__(self, device, workdir: Path, wait_s: float = 0.0, announce=lambda text: None,
                 threads: int = 1, resolver: str = "AUTO"):
        self.device, self.workdir, self.wait_s = device, Path(workdir), float(wait_s)
        self.announce, self.threads, self.resolver = announce, threads, resolver
        self._stack: contextlib.ExitStack | None = None
        self._deployer = self._session = self._facts = None
        self._pulled: list[str] = []
        self._inputs: dict[tuple, Path] = {}
        self._latency: dict[str, dict] = {}  # model sha256 → latency of its last whole-suite run
        self._first = None  # the first RunResult: what the device and runtime are
        self._count = 0

    # -- session -----------------------------------------------------------------------------
    def open(self) -> "DeviceMeasurer":
        """Open the locked session now (idempotent): an unreachable or busy device fails before any model runs."""
        if self._stack is not None:
            return self
        from edgeq.devices.session import open_session

        stack = contextlib.ExitStack()  # entered only once the session is open: a failed open leaves nothing
        opened = stack.enter_context(open_session(self.device, lock=True, wait_s=self.wait_s))
        self._stack, self._deployer, self._session, self._facts = stack, opened.deployer, opened.session, opened.facts
        return self

    def close(self, failed: bool = False) -> None:
        """Tidy the device's store (after a job that ran through) and end the session, releasing the lock."""
        if self._stack is None:
            return
        stack, self._stack = self._stack, None
        try:
            if not failed:
                from edgeq.devices.run import tidy_device_store

                tidy_device_store(self.device, self._deployer, self._session, self._pulled)
        finally:
            stack.close()

    def __enter__(self):
        return self.open()

    def __exit__(self, kind, value, tb):
        self.close(failed=kind is not None)

    # -- what was measured on -------------------------------------------------------------------
    @property
    def latency_basis(self) -> str:
        return f"device {self.device.name}: p50 per inference of the suite run (batch 1)"

    @property
    def measured_on(self) -> str:
        """'NAME (ARCH, RUNTIME VERSION): edgeq agent, resolver R, N thread(s)' once a run told us."""
        section = self.section()
        if section is None:
            return f"{self.device.name}: edgeq agent"
        return (f"{section['name']} ({section['arch']}, {section['runtime']}): edgeq agent, "
                f"resolver {section['resolver']}, {section['threads']} thread(s)")

    def section(self) -> dict | None:
        """Device name, arch and runtime from the first run's meta (None before any run)."""
        if self._first is None:
            return None
        meta = self._first.meta
        facts = meta.get("device") or {}
        runtime = facts.get("runtime") or {}
        return {"name": self._first.run.get("device") or self.device.name, "transport": self.device.transport,
                "arch": facts.get("arch"), "runtime": f"{runtime.get('name')} {runtime.get('version')}",
                "resolver": meta.get("resolver"), "threads": meta.get("threads"), "os": facts.get("os"),
                "cpu": facts.get("cpu_model")}

    # -- runs --------------------------------------------------------------------------------------
    def predict_many(self, paths: list[Path], suite: Suite, rows: np.ndarray | None = None,
                     labels: list[str] | None = None) -> list[np.ndarray]:
        """The first output of each model over ``rows`` of the suite (one flattened row per
        sample, float64), run on the device in this order."""
        rows = np.arange(suite.n) if rows is None else np.asarray(rows)
        whole = len(rows) == suite.n and bool(np.all(rows == np.arange(suite.n)))
        paths = [Path(p) for p in paths]
        inputs = self._input_set(paths[0], suite, rows)
        labels = labels or [p.name.removesuffix(".tflite") for p in paths]
        self.open()
        shown = ", ".join(p.name for p in paths)
        self.announce(f"{self.device.name}: running {shown} on {len(rows)} samples")
        found = []
        for path, label in zip(paths, labels):
            result = self._run(path, inputs, label)
            out = np.asarray(result.outputs[0])
            found.append(out.reshape(len(rows), -1).astype(np.float64))
            if whole:
                self._latency[result.meta["model_sha256"]] = self._latency_of(result)
        return found

    def latency(self, path: Path, suite: Suite) -> dict:
        """The device's p50 per inference (µs) from the last whole-suite run of this exact file,
        running it once more when there was none."""
        from edgeq.files import sha256_file

        digest = sha256_file(Path(path))
        if digest not in self._latency:
            self.predict_many([path], suite, labels=[Path(path).name.removesuffix(".tflite") + ".latency"])
        return dict(self._latency[digest])

    def _latency_of(self, result) -> dict:
        from edgeq.results import latency_stats

        stats = latency_stats(result.latency_ms_per_sample())
        p50 = stats.get("p50")
        return {"latency_us": None if p50 is None else p50 * 1000.0, "device_latency_us": None if p50 is None
                else p50 * 1000.0, "device_latency_ms": stats, "run": str(result.path)}

    def _run(self, path: Path, inputs: Path, label: str):
        from edgeq.devices.run import RunSpec, _run_one, preflight, prepare

        self._count += 1
        spec = RunSpec(model=path, inputs=inputs, label=label, threads=self.threads, resolver=self.resolver)
        item = prepare(spec, self.workdir / "device-runs" / f"{self._count:03d}-{_safe(label)}")
        preflight(self.device.name, self._facts, item.info)
        result = _run_one(self.device, self._deployer, self._session, item, None)
        self._pulled.append(result.run["remote_dir"])
        if self._first is None:
            self._first = result
        return result

    def _input_set(self, model: Path, suite: Suite, rows: np.ndarray) -> Path:
        """The suite's ``rows`` as an input set (arrays named for the model, its dtypes), once per row set."""
        key = (id(suite), hashlib.sha1(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest())
        if key in self._inputs:
            return self._inputs[key]
        from edgeq.inputs.inputset import InputSet, clean_tensor_name, input_specs
        from edgeq.models.modelinfo import read_model

        specs = input_specs(read_model(model))
        names = ["x"] if len(specs) == 1 else [clean_tensor_name(s["name"]) for s in specs]
        arrays = {name: np.asarray(array[rows], dtype=np.dtype(s["dtype"]))
                  for name, s, array in zip(names, specs, suite.inputs)}
        nonfinite = any(a.dtype.kind == "f" and not np.isfinite(a).all() for a in arrays.values())
        category, severity = split_conditions(suite.condition[rows])
        y = None if suite.y is None else np.asarray(suite.y)[rows]
        path = self.workdir / "device-inputs" / f"suite-{len(self._inputs)}-{len(rows)}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        # the tags travel with the runs (samples.npz), so a pulled run can be compared on its own
        self._inputs[key] = InputSet(arrays=arrays, y=y, category=category, severity=severity,
                                     allow_nonfinite=nonfinite).save(path)
        return self._inputs[key]


def split_conditions(conditions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """'brightness+/2' → ('brightness+', 2); 'clean' → ('clean', 0): the suite's condition names
    back as the category and severity arrays of an input set."""
    category, severity = [], []
    for name in np.asarray(conditions).tolist():
        head, _, tail = str(name).rpartition("/")
        if head and tail.isdigit():
            category.append(head)
            severity.append(int(tail))
        else:
            category.append(str(name))
            severity.append(0)
    return np.array(category, dtype=str), np.array(severity, dtype=np.int32)


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)[:60]


def open_device(name: str, inventory=None, *, workdir: Path, wait_s: float = 0.0,
                announce=lambda text: None, resolver: str = "AUTO") -> DeviceMeasurer:
    """A DeviceMeasurer for inventory device ``name`` (not opened yet), running every model under
    ``resolver`` (the option the command took); ConfigError for an unknown name."""
    from edgeq.devices.inventory import load_inventory, select_devices

    devices = select_devices(name, load_inventory(inventory))
    if len(devices) != 1:
        from edgeq.errors import ConfigError

        raise ConfigError(f"--device {name}: localize and fix measure on one device, got {len(devices)}")
    return DeviceMeasurer(devices[0], workdir, wait_s=wait_s, announce=announce, resolver=resolver)
