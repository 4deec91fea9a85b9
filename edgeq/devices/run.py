"""Run models on a device: validate on the host, push, let the agent run, pull.

``run_on_device`` is the public entry: it validates every spec before anything is
sent, so bad input fails in one line on the host and never half-way on a device.
A spec may name a subset of its input set's rows (``rows``, or a ``rows_file`` on this
host): they are pushed as a small .npy through the store like models and inputs, and
the agent runs only those rows (``devices/rounds`` runs rounds of rows in one session).
"""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import Callable

from device_agents.edgeq_agent import AgentFailure, check_job, job_options
from device_agents.edgeq_agent.inputsets import check_rows, load_rows
from device_agents.edgeq_agent.wire import fixed_batch
from edgeq import __version__
from edgeq.devices.agent_client import AgentSession
from edgeq.devices.deploy import Deployer
from edgeq.devices.inventory import Device
# check_running_agent moved to the opener; imported here too, where callers have found it
from edgeq.devices.session import check_running_agent, open_session  # noqa: F401
from edgeq.errors import AgentError, ConfigError, EdgeqError, IncompatibleRuntime, TransportError
from edgeq.inputs.inputset import input_specs, load_inputset, match_model_inputs, write_npz
from edgeq.models.modelinfo import ModelInfo, read_model
from edgeq.devices.pull import pull_partial, pull_run
from edgeq.files import atomic_write, ensure_writable_dir, sha256_file
from edgeq.results import RUN_FILE, SAMPLES, RunResult, write_json_atomic
from edgeq.rows import ROWS_FILE, relabel_rows, take_rows

ProgressFn = Callable[[str, int, int], None]
INACTIVITY_TIMEOUT_S = 600.0  # the agent reports progress every 0.5 s while it runs
DEVICE_POWER = "device"  # a RunSpec's power may name the inventory's power key instead of a backend

# One model over one input set, and how to time it: ``model``, ``inputs``, ``label`` and
# every option of a run job, from the agent's JOB_OPTIONS (the one table of names, types,
# defaults and limits; ``power`` may also be "device" = the inventory's power key).
# ``rows``: the set's rows to run (sorted, unique row indices; None: all), or the job's
# ``rows_file`` naming a .npy of them on this host; either is pushed, the device's copy goes in the job.
RunSpec = make_dataclass("RunSpec", [("model", Path), ("inputs", Path), ("label", str, field(default="run"))]
                         + [(o.name, o.kind, field(default=o.default_for("run"))) for o in job_options("run")]
                         + [("rows", object, field(default=None, compare=False, repr=False))],
                         frozen=True)
RunSpec.__module__ = __name__  # pickling and reprs find it here
RunSpec.__doc__ = "One model over one input set, and how to time it (options: the agent's JOB_OPTIONS)."


def job_values(spec, job_kind: str, device: Device | None = None, **extra) -> dict:
    """The options of a ``job_kind`` job for ``spec`` (and ``extra``), checked by the agent's own
    rules, so a bad value is a ConfigError on the host, never a failure half-way on a device."""
    values = {o.name: getattr(spec, o.name) for o in job_options(job_kind) if hasattr(spec, o.name)}
    values.update(extra)
    if values.get("power") == DEVICE_POWER:
        values["power"] = device.power if device is not None else None
    try:
        return check_job(values, job_kind)
    except AgentFailure as exc:
        raise ConfigError(str(exc)) from None


@dataclass
class _Prepared:
    spec: RunSpec
    rundir: Path
    input_arrays: list[str]
    tags: dict
    info: ModelInfo
    set_samples: int  # rows of the input set
    rows: object = None  # the set's rows this run takes (int64, sorted, unique), None: all
    known: dict = field(default_factory=dict)  # local path -> sha256 hashed already (rounds hash a set once)
    # the set holds rows of a suite edgeq built: {"rows": suite row per sample, "sha256": the suite's identity,
    # "path": what the run names as its input set}; the pulled run is then named by them (``relabel_rows``)
    suite: dict | None = None

    @property
    def samples(self) -> int:
        return self.set_samples if self.rows is None else len(self.rows)


def prepare(spec: RunSpec, rundir: Path) -> _Prepared:
    """Check the spec, model, inputs, rows and output folder before touching a device."""
    values = job_values(spec, "run")
    info = read_model(spec.model)
    check_batch_size(info, values["batch_size"])
    dataset = load_inputset(spec.inputs)
    names = match_model_inputs(dataset, input_specs(info))
    rows = spec_rows(spec, dataset.n)
    ensure_writable_dir(rundir)
    suite = dataset.suite
    return _Prepared(spec, Path(rundir), names, dataset.labels_only(), info, dataset.n, rows,
                     suite=None if suite is None else dict(suite, path=str(spec.inputs)))


def spec_rows(spec: RunSpec, samples: int):
    """The rows a spec names (its ``rows``, or the .npy its ``rows_file`` names on this host), checked by the
    agent's own rule (sorted ascending, unique, in 0..samples-1) as int64; None when it names none."""
    if spec.rows is not None and spec.rows_file is not None:
        raise ConfigError(f"{spec.label}: give rows or rows_file, not both")
    if spec.rows is None and spec.rows_file is None:
        return None
    return checked_rows(spec.rows if spec.rows is not None else spec.rows_file, samples)


def checked_rows(rows, samples: int):
    """Row indices (an array, or a .npy path) as int64 when the agent would take them; ConfigError otherwise."""
    import numpy as np

    try:
        if isinstance(rows, (str, Path)):
            return check_rows(load_rows(str(rows)), samples, f"rows file {rows}")
        return check_rows(np.asarray(rows), samples, "rows")
    except AgentFailure as exc:
        raise ConfigError(str(exc)) from None


def check_batch_size(info: ModelInfo, batch_size: int) -> None:
    """A model whose inputs fix the batch at 1 cannot take a larger one: its reshapes hard-code the 1 and a
    resized interpreter answers with wrongly shaped outputs, not an error (the agent refuses it too)."""
    fixed = [t.name for t in info.inputs if fixed_batch(t.shape, t.shape_signature)]  # the agent's own rule
    if batch_size > 1 and fixed:
        raise ConfigError(f"{Path(info.path).name} takes a fixed batch of 1 (input {fixed[0]!r} has a batch "
                          f"dimension of 1 in its shape signature): --batch-size must be 1, not {batch_size}")


def output_facts(info: ModelInfo) -> list[dict]:
    """What the model file says of each output, kept so an offline compare can judge it."""
    producers, signatures = info.output_producers, info.output_signature_names
    return [{"name": t.name, "producer": producers[k] if k < len(producers) else "",
             "signature": signatures[k] if k < len(signatures) else ""} for k, t in enumerate(info.outputs)]


def run_on_device(device: Device, specs: list[RunSpec], rundirs: list[Path],
                  progress: ProgressFn | None = None, events: Callable[[str, dict], None] | None = None,
                  wait_s: float = 0.0) -> list[RunResult]:
    """Run each spec in one agent session, holding the device's lock; returns the pulled,
    verified results.

    ``progress(label, done, total)`` follows the timed passes; ``events(label, event)``
    gets every event the agent sends (cooldown waits among them); ``wait_s``: how long to
    queue for a device another job holds (DeviceBusy after that)."""
    prepared = [prepare(spec, Path(d)) for spec, d in zip(specs, rundirs)]
    with open_session(device, lock=True, wait_s=wait_s) as opened:
        for item in prepared:
            preflight(device.name, opened.facts, item.info)
        results = [_run_one(device, opened.deployer, opened.session, item, progress, events) for item in prepared]
        tidy_device_store(device, opened.deployer, opened.session, [r.run["remote_dir"] for r in results],
                          [r.run["rows"]["remote"] for r in results if r.run.get("rows")])
        return results


def run_in_session(opened, spec: RunSpec, rundir: Path, *, model_at: str | None = None) -> RunResult:
    """Run one spec in a session the caller opened (and holds locked).

    ``model_at``: a model file already on the device (an installed model, where the application
    finds it) to run instead of pushing ``spec.model``; the agent checks it has ``spec.model``'s
    sha256 before loading it, so what answers is the file the host knows."""
    item = prepare(spec, Path(rundir))
    preflight(opened.device.name, opened.facts, item.info)
    return _run_one(opened.device, opened.deployer, opened.session, item, None, model_at=model_at)


def tidy_device_store(device: Device, deployer: Deployer, session: AgentSession, pulled: list[str],
                      used: list[str] = ()) -> None:
    """Pulled run folders are copies now: drop them, and the pushed files ``used`` up (rows files
    of runs done), and keep the store under the device's ``store_mb``. A failure here costs disk
    space, never the results, so it only warns."""
    drop = list(pulled) + sorted(set(used))
    keep = [t.destination for t in deployer.transfers if t.destination not in used]
    try:
        tidied = session.tidy_store(deployer.workdir, device.store_mb << 20, keep=keep, drop=drop)
    except EdgeqError as exc:
        print(f"{device.name}: could not tidy the device's store: {exc}", file=sys.stderr)
        return
    if tidied["removed"] > len(drop):
        print(f"{device.name}: store over {device.store_mb} MB: removed {tidied['removed'] - len(drop)} "
              f"least recently used file(s); {tidied['after_bytes'] / 2**20:.0f} MB kept", file=sys.stderr)


def preflight(device: str, facts: dict, info: ModelInfo) -> None:
    """Refuse, before pushing, a model whose ops the device's runtime is known not to have."""
    from edgeq.models.runtime_compat import incompatible_ops, runtime_key

    runtime = facts.get("runtime") or {}
    key = runtime_key(runtime.get("name", ""), runtime.get("version", ""))
    problems = incompatible_ops(info, key) if key else []
    if problems:
        raise IncompatibleRuntime(
            f"{device}: {Path(info.path).name} needs {'; '.join(problems)} but the device has "
            f"{runtime.get('name')} {runtime.get('version')}: convert with --target-runtime {key} "
            f"or run `edgeq devices setup {device}` for a current runtime")


NPY_HEADER_MAX = 65536 + 16  # the .npy v1 header length is a 2-byte field
MIN_INVOKE_NS = 100  # no invoke is faster: bounds the passes a --min-duration run can time
SENSOR_ROW_MAX = 8 * (4 + 64)  # t_ns, power, temp, throttled + up to 64 thermal zones, 8 bytes each
NPZ_SLACK = 1 << 20  # zip headers and the .npy headers of a sensors.npz


def expected_sizes(item: _Prepared, job: dict, wall_s: float) -> dict[str, int | None]:
    """The most bytes each run file can have, from what the host knows of the job (samples,
    the model's output shapes, passes) and how long it ran: a larger file is refused before
    it is pulled. None: an output whose shape the model leaves dynamic."""
    invocations = -(-item.samples // job["batch_size"])
    most_invocations = job["repeats"] * invocations
    if job["min_duration_s"] > 0:
        most_invocations = max(most_invocations, int(wall_s * 1e9 / MIN_INVOKE_NS) + invocations)
    timeline = NPY_HEADER_MAX + 8 * most_invocations
    sizes = {f"outputs/output_{k}.npy": _output_bytes(t, item.samples) for k, t in enumerate(item.info.outputs)}
    sizes.update({"latency_ns.npy": timeline, "invoke_start_ns.npy": timeline,
                  "batch_sizes.npy": NPY_HEADER_MAX + 4 * invocations, ROWS_FILE: NPY_HEADER_MAX + 8 * item.samples,
                  "sensors.npz": NPZ_SLACK + SENSOR_ROW_MAX * int(job["sample_hz"] * (wall_s + 10) + 10)})
    return sizes


def _output_bytes(tensor, samples: int) -> int | None:
    """samples × one sample's output bytes, or None when a dimension is dynamic or the dtype unknown."""
    import math

    import numpy as np

    dims = tuple(tensor.shape_signature or tensor.shape)[1:]
    try:
        itemsize = np.dtype(tensor.dtype).itemsize
    except TypeError:
        return None
    if any(d < 0 for d in dims):
        return None
    return NPY_HEADER_MAX + samples * math.prod(dims) * itemsize


def _request_run(deployer: Deployer, session: AgentSession, pushed: list[Path], job: dict, on_event) -> None:
    try:
        session.request("run", job=job, on_event=on_event, timeout=INACTIVITY_TIMEOUT_S)
    except AgentError as exc:
        if exc.kind != "Corrupt":
            raise
        # a stored copy went bad on the device (disk error, someone edited it): replace it once
        for local in pushed:
            deployer.push(local, force=True)
        session.request("run", job=job, on_event=on_event, timeout=INACTIVITY_TIMEOUT_S)


def _push_rows(deployer: Deployer, item: _Prepared) -> dict:
    """The job's rows_file: the rows written as RUNDIR/rows.npy (int64) and pushed into the store like models and
    inputs (content-addressed, recorded as edgeq's, tidied when the run is pulled). The agent writes its own
    rows.npy into the run, so the pulled copy replaces this one with what the device ran."""
    import numpy as np

    if item.rows is None:
        return {"rows_file": None}
    local = item.rundir / ROWS_FILE
    with atomic_write(local) as handle:
        np.save(handle, np.asarray(item.rows, dtype=np.int64), allow_pickle=False)
    digest = sha256_file(local)
    remote, _ = deployer.push(local, sha256=digest)
    return {"rows_file": remote, "rows_sha256": digest}


def _keep_partial(deployer: Deployer, remote_out: str, rundir: Path, exc: TransportError, device: str,
                  label: str, started: float, limits: dict) -> TransportError:
    """Pull what the failed run left and say where it is; the original error stays the cause."""
    progress = pull_partial(deployer.transport, remote_out, rundir, limits)
    if progress is None:
        return exc
    write_json_atomic(rundir / RUN_FILE, {
        "device": device, "label": label, "complete": False, "error": str(exc), "edgeq_version": __version__,
        "samples_done": progress.get("samples_done"), "samples": progress.get("samples"),
        "remote_dir": remote_out, "started": started, "failed": time.time()})
    message = (f"{exc}; partial results ({progress.get('samples_done')} of {progress.get('samples')} "
               f"samples) kept in {rundir}, marked incomplete")
    return AgentError(message, kind=exc.kind) if isinstance(exc, AgentError) else TransportError(message)


def _run_one(device: Device, deployer: Deployer, session: AgentSession, item: _Prepared,
             progress: ProgressFn | None, events: Callable[[str, dict], None] | None = None,
             model_at: str | None = None) -> RunResult:
    spec = item.spec
    if model_at is None:
        model_remote, model_sha = deployer.push(spec.model, sha256=item.known.get(spec.model))
    else:
        model_remote, model_sha = model_at, sha256_file(spec.model)
    inputs_remote, inputs_sha = deployer.push(spec.inputs, sha256=item.known.get(spec.inputs))
    rows_job = _push_rows(deployer, item)
    run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    remote_out = deployer.run_dir(run_id)
    job = {"model": model_remote, "model_sha256": model_sha, "inputs": inputs_remote,
           "inputs_sha256": inputs_sha, "input_arrays": item.input_arrays, "out": remote_out,
           **job_values(spec, "run", device), **rows_job}
    pushed = ([spec.model] if model_at is None else []) + [spec.inputs] + ([item.rundir / ROWS_FILE] if item.rows is not None else [])

    def on_event(event: dict) -> None:
        if progress and event.get("event") == "progress":
            progress(spec.label, event["done"], event["total"])
        if events:
            events(spec.label, event)

    started = time.time()
    try:
        _request_run(deployer, session, pushed, job, on_event)
    except TransportError as exc:
        limits = expected_sizes(item, job, time.time() - started)
        raise _keep_partial(deployer, remote_out, item.rundir, exc, device.name, spec.label, started,
                            limits) from None
    pull_run(deployer.transport, remote_out, item.rundir, expected_sizes(item, job, time.time() - started))
    write_npz(item.rundir / SAMPLES, {k: take_rows(v, item.rows) for k, v in item.tags.items()})
    rows = {} if item.rows is None else {"rows": {"count": item.samples, "of": item.set_samples,
                                                  "sha256": job["rows_sha256"], "remote": job["rows_file"]}}
    write_json_atomic(item.rundir / RUN_FILE, {
        "device": device.name, "label": spec.label, "edgeq_version": __version__,
        "spec": {f.name: str(getattr(spec, f.name)) for f in fields(spec) if f.name != "rows"},
        "model": {"path": str(spec.model), "sha256": model_sha, "outputs": output_facts(item.info)},
        "inputs": {"path": str(spec.inputs), "sha256": inputs_sha},
        "remote_dir": remote_out, "started": started, "finished": time.time(), **rows,
    })
    if item.suite is not None:
        relabel_rows(item.rundir, item.suite["rows"], {k: v for k, v in item.suite.items() if k != "rows"})
    return RunResult.load(item.rundir)
