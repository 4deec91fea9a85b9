"""Run directories: what one model did on one device, saved so it can be compared offline.

Layout (the agent writes the first block, the host adds the second, each with its
own "written last" file so a cut-short run is never mistaken for a whole one)::

    RUNDIR/outputs/output_<k>.npy  latency_ns.npy  batch_sizes.npy  meta.json  manifest.json
           [invoke_start_ns.npy  sensors.npz]  (when the run sampled sensors; see edgeq/power.py)
    RUNDIR/samples.npz  (y / category / severity of each sample)   run.json
"""

from __future__ import annotations

import json
import os
import posixpath
from pathlib import Path

import numpy as np

from edgeq.errors import ConfigError, InputSetError, TransportError
from edgeq.devices.transport.base import Transport, sha256_file
from edgeq.inputs.npz import DiskArray, open_npz

MANIFEST = "manifest.json"
RUN_FILE = "run.json"
SAMPLES = "samples.npz"


class IncompleteRun(ConfigError):
    """A run directory without its closing file, or with a file that fails its checksum."""


class RunResult:
    """One run directory. Outputs and large sample tags stay on disk (``DiskArray``); the
    timelines (latency_ns, batch_sizes, invoke_start_ns) are read from disk each time
    they are asked for, so a comparison of two long runs does not hold four timelines
    it never reads. Given arrays (tests, offline tools) are kept as given."""

    def __init__(self, path: Path, meta: dict, run: dict, outputs: list, latency_ns, batch_sizes,
                 samples: dict, invoke_start_ns=None, sensors: dict | None = None):
        self.path, self.meta, self.run, self.outputs, self.samples = path, meta, run, outputs, samples
        self._latency_ns, self._batch_sizes, self._invoke_start_ns = latency_ns, batch_sizes, invoke_start_ns
        self.sensors = sensors  # t_ns, power_w, temp_c, throttled, zone_temp_c

    @property
    def latency_ns(self) -> np.ndarray:
        return _timeline(self._latency_ns)

    @property
    def batch_sizes(self) -> np.ndarray:
        return _timeline(self._batch_sizes)

    @property
    def invoke_start_ns(self) -> np.ndarray | None:
        """perf_counter_ns of each invoke, shaped like latency_ns (runs that sampled sensors)."""
        return _timeline(self._invoke_start_ns)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RunResult":
        path = Path(path)
        if not path.is_dir():
            raise ConfigError(f"{path}: run directory not found")
        manifest = read_manifest(path)
        for rel, entry in manifest["files"].items():
            if not (path / rel).is_file():
                raise IncompleteRun(f"{path / rel}: listed in the run's manifest but missing")
            if sha256_file(path / rel) != entry["sha256"]:
                raise IncompleteRun(f"{path / rel}: sha256 does not match the run's manifest")
        run_file = path / RUN_FILE
        if not run_file.exists():
            raise IncompleteRun(f"{path}: incomplete run (no {RUN_FILE}: the host did not finish writing it)")
        meta = json.loads((path / "meta.json").read_text())
        outputs = [_on_disk(path / "outputs" / f"output_{k}.npy") for k in range(len(meta["outputs"]))]
        samples = _samples(path / SAMPLES)
        starts = path / "invoke_start_ns.npy" if "invoke_start_ns.npy" in manifest["files"] else None
        sensors = _load_npz(path / "sensors.npz") if "sensors.npz" in manifest["files"] else None
        return cls(path, meta, json.loads(run_file.read_text()), outputs,
                   path / "latency_ns.npy", path / "batch_sizes.npy", samples,
                   starts, sensors)

    @property
    def n(self) -> int:
        return int(self.meta["samples"])

    def latency_ms_per_sample(self) -> np.ndarray:
        """Per-inference latency; a batched invoke counts as batch-size inferences."""
        return (self.latency_ns / self.batch_sizes[None, :]).ravel() / 1e6


def _timeline(value):
    return _load_npy(value) if isinstance(value, Path) else value


def _on_disk(path: Path) -> DiskArray:
    """Outputs stay on disk: a comparison reads them a block at a time."""
    try:
        return DiskArray.from_npy(path)
    except (OSError, ValueError) as exc:
        raise IncompleteRun(f"{path}: cannot be read as a plain .npy array ({exc})") from None


def _samples(path: Path) -> dict:
    """Sample tags; large ones stay on disk (DiskArray) until a comparison reads them."""
    try:
        return open_npz(path)
    except InputSetError as exc:
        raise IncompleteRun(str(exc)) from None


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise IncompleteRun(f"{path}: cannot be read as a plain .npy array ({exc})") from None


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise IncompleteRun(f"{path}: cannot be read as a plain .npz archive ({exc})") from None


def read_manifest(path: Path) -> dict:
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        raise IncompleteRun(f"{path}: incomplete run (no {MANIFEST}: the agent did not finish{_why(path)})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError:
        raise IncompleteRun(f"{manifest_path}: not valid JSON") from None
    return checked_manifest(manifest, str(manifest_path))


def _why(path: Path) -> str:
    try:
        run = json.loads((path / RUN_FILE).read_text())
    except (OSError, ValueError):
        return ""
    return f"; {run.get('samples_done')} of {run.get('samples')} samples done; {run.get('error')}"


def checked_manifest(manifest: dict, where: str) -> dict:
    """Refuse manifests that would write outside the run directory."""
    files = manifest.get("files")
    if not manifest.get("complete") or not isinstance(files, dict):
        raise IncompleteRun(f"{where}: manifest does not mark a complete run")
    for rel, entry in files.items():
        normal = posixpath.normpath(rel)
        if rel.startswith("/") or normal.startswith("..") or normal != rel or "\\" in rel:
            raise IncompleteRun(f"{where}: manifest names an unsafe path {rel!r}")
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise IncompleteRun(f"{where}: manifest entry {rel!r} has no sha256")
    return manifest


def pull_run(transport: Transport, remote_dir: str, local_dir: Path) -> dict:
    """Fetch a finished run, verifying every file; the manifest is written last."""
    local_dir.mkdir(parents=True, exist_ok=True)
    staging = local_dir / f".{MANIFEST}.incoming"
    transport.get(posixpath.join(remote_dir, MANIFEST), staging)
    try:
        manifest = checked_manifest(json.loads(staging.read_text()), f"{transport.device}:{remote_dir}")
    except ValueError:
        raise TransportError(f"{transport.device}: {remote_dir}/{MANIFEST} is not valid JSON") from None
    for rel, entry in manifest["files"].items():
        transfer = transport.get(posixpath.join(remote_dir, rel), local_dir / rel)
        if transfer.sha256 != entry["sha256"]:
            raise TransportError(f"{transport.device}: {rel} arrived corrupted (sha256 mismatch)")
    os.replace(staging, local_dir / MANIFEST)
    return manifest


def pull_partial(transport: Transport, remote_dir: str, local_dir: Path) -> dict | None:
    """After a failed run, fetch what the agent had written; None if nothing usable.

    The files are kept for inspection but never get a manifest, so nothing mistakes
    them for a whole run.
    """
    try:
        local_dir.mkdir(parents=True, exist_ok=True)
        transport.get(posixpath.join(remote_dir, "progress.json"), local_dir / "progress.json")
        progress = json.loads((local_dir / "progress.json").read_text())
        for rel in checked_manifest({"complete": True, "files": {f: {"sha256": ""} for f in progress["files"]}},
                                    f"{transport.device}:{remote_dir}/progress.json")["files"]:
            transport.get(posixpath.join(remote_dir, rel), local_dir / rel)
    except (TransportError, OSError, ValueError, KeyError, TypeError):
        return None
    return progress


def write_json_atomic(path: Path, payload: dict) -> None:
    """Strict JSON (no NaN/Infinity: they become null), written to a temporary name first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part-{os.getpid()}")
    tmp.write_text(json.dumps(strict_json(payload), indent=1, sort_keys=True, allow_nan=False,
                              default=_json_default))
    os.replace(tmp, path)


def strict_json(value):
    """A copy with every non-finite float replaced by None, numpy scalars made plain.

    JSON has no Infinity or NaN; readers that follow the standard reject them. Where a
    figure is infinite (SQNR of identical outputs) the report says null, as documented.
    """
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
