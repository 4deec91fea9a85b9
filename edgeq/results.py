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
    return _load_npy(value) if isinstance(value, Path) else value


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


def _load_npy(path: Path) -> np.ndarray:
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


# ---- rows and rounds: runs on a subset of their input set's rows, merged into one run directory -----------

ROWS_FILE = "rows.npy"  # in a run that took named rows: the input set's row of each sample (the agent writes it)
MERGE_BLOCK_BYTES = 4 << 20  # output rows held at a time while merging


def run_rows(run: RunResult) -> np.ndarray:
    """The input set's row of each of ``run``'s samples: its rows.npy when the run took named rows (a round,
    or rounds merged), else every row in order."""
    manifest = read_manifest(run.path) if run.path is not None and (run.path / MANIFEST).exists() else {"files": {}}
    if ROWS_FILE not in manifest["files"]:
        return np.arange(run.n, dtype=np.int64)
    rows = _load_npy(run.path / ROWS_FILE)
    if rows.ndim != 1 or rows.dtype.kind not in "iu" or len(rows) != run.n:
        raise IncompleteRun(f"{run.path / ROWS_FILE}: must hold one row index per sample ({run.n}), "
                            f"got {rows.dtype} {list(rows.shape)}")
    return rows.astype(np.int64, copy=False)


def take_rows(array, rows: np.ndarray | None):
    """``array[rows]`` for sorted row indices, read a block at a time when ``array`` is on disk (a DiskArray is
    never read whole); ``array`` itself when ``rows`` is None."""
    if rows is None:
        return array
    if not isinstance(array, DiskArray):
        return np.asarray(array)[rows]
    parts = []
    for lo, hi, block in array.blocks():
        a, b = np.searchsorted(rows, [lo, hi])
        if b > a:
            parts.append(block[rows[a:b] - lo])
    return np.concatenate(parts) if parts else np.empty((0,) + array.shape[1:], array.dtype)


def merge_rounds(rounds: list, out: str | os.PathLike) -> RunResult:
    """One run directory at ``out`` from runs of one model over one input set on disjoint rows (the rounds of
    ``devices.rounds``): samples are the union of their rows in ascending row order — outputs, sample tags,
    rows.npy, and the timelines (each invocation once, ordered by its first sample's row; passes: the fewest
    any round timed) — so ``RunResult.load``, ``compare_runs``, reports and ``edgeq compare`` read it like any run.

    Outputs are copied a block at a time from the rounds' files into one .npy per output (never a whole
    output in memory, and the result a plain run directory rather than a view that needs its rounds);
    every file is written atomically, the manifest then run.json last. meta.json is the first round's plus
    ``samples``, ``passes``, ``rows`` (the set's row of each sample) and ``rounds`` (what each round was);
    sensors stay in the rounds' own folders (their timelines cannot be joined).
    """
    from edgeq.files import atomic_write, write_json

    rounds = list(rounds)
    if not rounds:
        raise ConfigError("no rounds to merge")
    out = Path(out)
    first = rounds[0]
    if any(r.path is not None and out.resolve() == Path(r.path).resolve() for r in rounds):
        raise ConfigError(f"{out}: the merged run needs a folder of its own, not one of its rounds'")
    _check_mergeable(rounds)
    rows_of = [run_rows(r) for r in rounds]
    joined = np.concatenate(rows_of)
    order = np.argsort(joined, kind="stable")
    rows = joined[order]
    repeated = np.flatnonzero(np.diff(rows) == 0)
    if len(repeated):
        raise ConfigError(f"rounds to merge overlap: row {rows[repeated[0]]} was run in two of them")
    source = np.repeat(np.arange(len(rounds)), [len(r) for r in rows_of])[order]
    local = np.concatenate([np.arange(len(r)) for r in rows_of])[order]
    out.mkdir(parents=True, exist_ok=True)
    (out / "outputs").mkdir(exist_ok=True)
    for stale in (RUN_FILE, MANIFEST):  # a folder being rewritten never looks whole
        (out / stale).unlink(missing_ok=True)
    files = []
    for k in range(len(first.outputs)):
        rel = f"outputs/output_{k}.npy"
        with atomic_write(out / rel) as handle:
            _merge_output([r.outputs[k] for r in rounds], source, local, handle)
        files.append(rel)
    latency, sizes = _merged_timelines(rounds, rows_of)
    for rel, array in (("latency_ns.npy", latency), ("batch_sizes.npy", sizes), (ROWS_FILE, rows)):
        with atomic_write(out / rel) as handle:
            np.save(handle, array, allow_pickle=False)
        files.append(rel)
    from edgeq.inputs.inputset import write_npz

    tags = [set(r.samples) for r in rounds]
    write_npz(out / SAMPLES, {name: np.concatenate([np.asarray(r.samples[name]) for r in rounds])[order]
                              for name in sorted(set.intersection(*tags))})
    meta = {k: v for k, v in first.meta.items() if k not in ("rows_file", "sampling")}
    meta["job"] = {k: v for k, v in (meta.get("job") or {}).items() if k not in ("rows_file", "rows_sha256")}
    meta.update(samples=int(len(rows)), passes=int(latency.shape[0]), rows=rows.tolist(),
                timed_s=sum(float(r.meta.get("timed_s") or 0.0) for r in rounds),
                rounds=[{"path": str(r.path), "samples": r.n, "passes": r.meta.get("passes"),
                         "rows_sha256": (r.meta.get("rows_file") or {}).get("sha256"),
                         "started": r.meta.get("started"), "finished": r.meta.get("finished"),
                         "timed_s": r.meta.get("timed_s"), "sensors": r.sensors is not None} for r in rounds])
    write_json_atomic(out / "meta.json", meta)
    files.append("meta.json")
    listing = {rel: {"sha256": sha256_file(out / rel), "size": (out / rel).stat().st_size} for rel in files}
    agent_version = read_manifest(first.path).get("agent_version") if first.path is not None else None
    write_json(out / MANIFEST, {"complete": True, "agent_version": agent_version, "files": listing})
    run = {k: v for k, v in (first.run or {}).items() if k not in ("remote_dir", "rows")}
    run.update(samples=int(len(rows)), merged=[str(r.path) for r in rounds],
               started=min(r.run.get("started") or 0 for r in rounds),
               finished=max(r.run.get("finished") or 0 for r in rounds))
    write_json_atomic(out / RUN_FILE, run)
    return RunResult.load(out)


def _check_mergeable(rounds: list) -> None:
    """Rounds of one model over one input set, with the same outputs and sample tags."""
    first = rounds[0]
    for run in rounds[1:]:
        for key in ("inputs_sha256", "model_sha256"):
            if run.meta.get(key) != first.meta.get(key):
                raise ConfigError(f"{run.path} and {first.path} differ in {key}: only rounds of one model over one "
                                  "input set merge")
        shapes = [(tuple(o.shape[1:]), np.dtype(o.dtype)) for o in run.outputs]
        if shapes != [(tuple(o.shape[1:]), np.dtype(o.dtype)) for o in first.outputs]:
            raise ConfigError(f"{run.path} and {first.path} have different outputs: {shapes}")


def _merge_output(parts: list, source: np.ndarray, local: np.ndarray, handle) -> None:
    """One output of the merged run written to ``handle`` as .npy, a block of merged samples at a time: within a
    block, each round's samples are one run of consecutive rows of that round (both are in ascending row order)."""
    from numpy.lib import format as npy_format

    dtype, shape = np.dtype(parts[0].dtype), (len(source),) + tuple(parts[0].shape[1:])
    npy_format.write_array_header_1_0(handle, {"descr": npy_format.dtype_to_descr(dtype), "fortran_order": False,
                                               "shape": shape})
    row_bytes = max(1, int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)
    step = max(1, MERGE_BLOCK_BYTES // row_bytes)
    for lo in range(0, len(source), step):
        src, idx = source[lo:lo + step], local[lo:lo + step]
        block = np.empty((len(src),) + shape[1:], dtype)
        for r in np.unique(src):
            where = src == r
            first, last = int(idx[where][0]), int(idx[where][-1]) + 1
            block[where] = np.asarray(parts[r][first:last])
        handle.write(np.ascontiguousarray(block).tobytes())


def _merged_timelines(rounds: list, rows_of: list) -> tuple[np.ndarray, np.ndarray]:
    """latency_ns (the fewest passes any round timed × every invocation) and batch_sizes, invocations ordered
    by the row of their first sample: with batch_size 1, column j is sample j's latency."""
    passes = min(r.latency_ns.shape[0] for r in rounds)
    columns, sizes, firsts = [], [], []
    for run, rows in zip(rounds, rows_of):
        batch = np.asarray(run.batch_sizes, dtype=np.int64)
        columns.append(np.asarray(run.latency_ns)[:passes])
        sizes.append(batch)
        firsts.append(rows[np.concatenate(([0], np.cumsum(batch)[:-1]))])
    order = np.argsort(np.concatenate(firsts), kind="stable")
    return (np.ascontiguousarray(np.concatenate(columns, axis=1)[:, order]).astype(np.int64),
            np.concatenate(sizes)[order].astype(np.int32))


def take_run_rows(run: RunResult, rows, out: str | os.PathLike) -> RunResult:
    """A new run directory at ``out`` holding ``run``'s samples at the input set's ``rows`` (sorted ascending,
    unique, each one ``run`` took: ``run_rows(run)``), e.g. the cached float outputs an evaluation reuses.

    Outputs are copied a block at a time (the blocks of ``run``'s files that hold a wanted row are read, no
    other, and never a whole output); sample tags and rows.npy follow the rows. Timelines: each invocation
    that holds a wanted row is kept with the wanted rows as its batch and its latency's share for them
    (latency × kept ÷ batch: the same per-sample latency; with batch size 1, exactly the sample's). Every file
    is written atomically, the manifest then run.json last; meta.json is ``run``'s plus ``samples``, ``rows``
    and ``taken_from`` (the source run and how many samples it had); sensors stay with the source.
    """
    from edgeq.files import atomic_write, write_json

    out = Path(out)
    if run.path is not None and out.resolve() == Path(run.path).resolve():
        raise ConfigError(f"{out}: the subset needs a folder of its own, not its source's")
    have = run_rows(run)
    rows = np.asarray(rows, dtype=np.int64).ravel()
    if not len(rows):
        raise ConfigError(f"{run.path}: no rows to take (a run directory holds one sample at least)")
    if len(rows) > 1 and not np.all(np.diff(rows) > 0):
        raise ConfigError(f"{run.path}: rows to take must be sorted ascending and unique")
    local = np.searchsorted(have, rows)
    missing = (local >= len(have)) | (have[np.minimum(local, len(have) - 1)] != rows)
    if missing.any():
        raise ConfigError(f"{run.path}: holds no sample of row {int(rows[np.flatnonzero(missing)[0]])}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "outputs").mkdir(exist_ok=True)
    for stale in (RUN_FILE, MANIFEST):  # a folder being rewritten never looks whole
        (out / stale).unlink(missing_ok=True)
    files = []
    for k, output in enumerate(run.outputs):
        rel = f"outputs/output_{k}.npy"
        with atomic_write(out / rel) as handle:
            _take_output(output, local, handle)
        files.append(rel)
    batch = np.asarray(run.batch_sizes, dtype=np.int64)
    invocation = np.repeat(np.arange(len(batch)), batch)[local]  # the invocation each wanted sample was in
    kept, counts = np.unique(invocation, return_counts=True)
    latency = np.rint(np.asarray(run.latency_ns, dtype=np.float64)[:, kept] * (counts / batch[kept])).astype(np.int64)
    for rel, array in (("latency_ns.npy", latency), ("batch_sizes.npy", counts.astype(np.int32)), (ROWS_FILE, rows)):
        with atomic_write(out / rel) as handle:
            np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
        files.append(rel)
    from edgeq.inputs.inputset import write_npz

    write_npz(out / SAMPLES, {name: take_rows(tag, local) for name, tag in run.samples.items()})
    meta = {k: v for k, v in run.meta.items() if k not in ("rows_file", "sampling", "rounds")}
    meta["job"] = {k: v for k, v in (meta.get("job") or {}).items() if k not in ("rows_file", "rows_sha256")}
    meta.update(samples=int(len(rows)), passes=int(latency.shape[0]), rows=rows.tolist(),
                taken_from={"path": str(run.path), "samples": run.n})
    write_json_atomic(out / "meta.json", meta)
    files.append("meta.json")
    listing = {rel: {"sha256": sha256_file(out / rel), "size": (out / rel).stat().st_size} for rel in files}
    agent_version = read_manifest(run.path).get("agent_version") if run.path is not None else None
    write_json(out / MANIFEST, {"complete": True, "agent_version": agent_version, "files": listing})
    record = {k: v for k, v in (run.run or {}).items() if k not in ("remote_dir", "rows", "merged")}
    record.update(samples=int(len(rows)), taken_from=str(run.path))
    write_json_atomic(out / RUN_FILE, record)
    return RunResult.load(out)


def _take_output(array, local: np.ndarray, handle) -> None:
    """``array[local]`` written to ``handle`` as .npy, source block by source block: a block of a file on disk
    without a wanted row is not read."""
    from numpy.lib import format as npy_format

    dtype, shape = np.dtype(array.dtype), (len(local),) + tuple(array.shape[1:])
    npy_format.write_array_header_1_0(handle, {"descr": npy_format.dtype_to_descr(dtype), "fortran_order": False,
                                               "shape": shape})
    row_bytes = max(1, int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)
    step = max(1, MERGE_BLOCK_BYTES // row_bytes)
    plain = isinstance(array, DiskArray) and array.member is None
    for lo in range(0, len(array), step):
        hi = min(lo + step, len(array))
        a, b = np.searchsorted(local, [lo, hi])
        if b == a:
            continue
        block = array.rows(lo, hi) if plain else np.asarray(array[lo:hi])
        handle.write(np.ascontiguousarray(block[local[a:b] - lo]).tobytes())
