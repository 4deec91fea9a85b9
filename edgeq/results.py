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

from edgeq.errors import ConfigError, InputSetError
from edgeq.files import sha256_file, write_text
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
        meta = _checked_meta(_read_json(path / "meta.json"), path / "meta.json")
        outputs = [_on_disk(path / "outputs" / f"output_{k}.npy") for k in range(len(meta["outputs"]))]
        samples = _samples(path / SAMPLES)
        _check_lengths(path, meta["samples"], outputs, samples)
        starts = path / "invoke_start_ns.npy" if "invoke_start_ns.npy" in manifest["files"] else None
        sensors = _load_npz(path / "sensors.npz") if "sensors.npz" in manifest["files"] else None
        return cls(path, meta, _read_json(run_file), outputs,
                   path / "latency_ns.npy", path / "batch_sizes.npy", samples,
                   starts, sensors)

    @property
    def n(self) -> int:
        return int(self.meta["samples"])

    def latency_ms_per_sample(self) -> np.ndarray:
        """Per-inference latency; a batched invoke counts as batch-size inferences."""
        return (self.latency_ns / self.batch_sizes[None, :]).ravel() / 1e6


def _timeline(value):
    return load_npy(value) if isinstance(value, Path) else value


def _read_json(path: Path) -> dict:
    """A JSON object from a run directory; anything else is a damaged run, said in one line."""
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise IncompleteRun(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise IncompleteRun(f"{path}: not valid JSON ({str(exc)[:80]})") from None
    if not isinstance(value, dict):
        raise IncompleteRun(f"{path}: not a JSON object")
    return value


def _checked_meta(meta: dict, where: Path) -> dict:
    """The keys a comparison relies on, with their types: a device may send anything."""
    outputs, samples = meta.get("outputs"), meta.get("samples")
    if not isinstance(outputs, list) or not outputs or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs):
        raise IncompleteRun(f"{where}: 'outputs' must be a list of named outputs")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise IncompleteRun(f"{where}: 'samples' must be a positive whole number, got {samples!r}")
    if not isinstance(meta.get("inputs_sha256"), str) or not isinstance(meta.get("device", {}), dict):
        raise IncompleteRun(f"{where}: 'inputs_sha256' (text) and 'device' (an object) are required")
    return meta


def _check_lengths(path: Path, samples: int, outputs: list, tags: dict) -> None:
    """Every output and tag has one row per sample; the timelines fit the invocations."""
    for k, out in enumerate(outputs):
        if out.ndim < 1 or len(out) != samples:
            raise IncompleteRun(f"{path}: output_{k}.npy has shape {list(out.shape)}, expected {samples} rows")
    for name, tag in tags.items():
        if np.ndim(tag) != 1 or len(tag) != samples:
            raise IncompleteRun(f"{path / SAMPLES}: {name} has shape {list(np.shape(tag))}, expected {samples} values")
    latency, sizes = _on_disk(path / "latency_ns.npy"), _on_disk(path / "batch_sizes.npy")
    if latency.ndim != 2 or sizes.ndim != 1 or latency.shape[1] != len(sizes) or latency.dtype.kind not in "iu":
        raise IncompleteRun(f"{path}: latency_ns.npy {list(latency.shape)} does not fit batch_sizes.npy "
                            f"{list(sizes.shape)} (passes × invocations, integer ns)")
    sizes = np.asarray(sizes)
    if sizes.dtype.kind not in "iu" or (sizes < 1).any() or int(sizes.sum()) != samples:
        raise IncompleteRun(f"{path}: batch_sizes.npy must be positive whole numbers adding up to {samples}")


def _on_disk(path: Path) -> DiskArray:
    """Outputs stay on disk: a comparison reads them a block at a time."""
    try:
        array = DiskArray.from_npy(path)
    except Exception as exc:  # noqa: BLE001 - numpy's header parser raises many types on a hostile file
        raise IncompleteRun(f"{path}: cannot be read as a plain .npy array ({type(exc).__name__})") from None
    if array.size * array.dtype.itemsize + array.offset > path.stat().st_size:
        raise IncompleteRun(f"{path}: header declares {list(array.shape)} {array.dtype}, more than the file holds")
    return array


def _samples(path: Path) -> dict:
    """Sample tags; large ones stay on disk (DiskArray) until a comparison reads them."""
    try:
        return open_npz(path)
    except InputSetError as exc:
        raise IncompleteRun(str(exc)) from None


def load_npy(path: Path) -> np.ndarray:
    return np.asarray(_on_disk(path))


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        return {k: np.asarray(v) for k, v in open_npz(path).items()}
    except InputSetError as exc:
        raise IncompleteRun(str(exc)) from None


def read_manifest(path: Path) -> dict:
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        raise IncompleteRun(f"{path}: incomplete run (no {MANIFEST}: the agent did not finish{_why(path)})")
    return checked_manifest(_read_json(manifest_path), str(manifest_path))


def _why(path: Path) -> str:
    try:
        run = json.loads((path / RUN_FILE).read_text())
    except (OSError, ValueError):
        return ""
    return f"; {run.get('samples_done')} of {run.get('samples')} samples done; {run.get('error')}"


def checked_manifest(manifest: dict, where: str) -> dict:
    """Refuse manifests that would write outside the run directory."""
    if not isinstance(manifest, dict):
        raise IncompleteRun(f"{where}: manifest must be a JSON object, not {type(manifest).__name__}")
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


def latency_stats(latency_ms: np.ndarray) -> dict:
    """A run's per-sample latencies as the reports show them: percentiles, mean, spread, count."""
    if latency_ms.size == 0:
        return {}
    p50, p90, p99 = np.percentile(latency_ms, [50, 90, 99])
    mean = float(latency_ms.mean())
    std = float(latency_ms.std())
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": mean, "std": std,
            "cv": std / mean if mean else None, "n": int(latency_ms.size)}


def strict_json_dumps(payload) -> str:
    """The document edgeq writes everywhere: strict (NaN/Infinity become null), sorted, indented."""
    return json.dumps(strict_json(payload), indent=1, sort_keys=True, allow_nan=False, default=_json_default)


def write_json_atomic(path: Path, payload: dict) -> None:
    """Strict JSON (no NaN/Infinity: they become null), written to a temporary name first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, strict_json_dumps(payload))


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
