"""A run's rows: which rows of its input set a run took, and run directories made from others'.

An adaptive evaluation runs the suite in rounds, each on some rows (``devices/rounds``); the
agent writes ``rows.npy`` beside a run that took named rows. Here: the row of each sample of a
run (``run_rows``), rows picked from an on-disk array a block at a time (``take_rows``), a
model's rounds joined into one run directory (``merge_rounds``) and a run's subset of rows as
a run directory of its own (``take_run_rows``, e.g. cached float outputs an evaluation reuses).
What they write is a plain run directory: ``RunResult.load``, ``compare_runs``, reports and
``edgeq compare`` read it like any run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from edgeq.errors import ConfigError
from edgeq.files import atomic_write, sha256_file, write_json
from edgeq.inputs.inputset import write_npz
from edgeq.inputs.npz import DiskArray
from edgeq.results import (MANIFEST, RUN_FILE, SAMPLES, IncompleteRun, RunResult, load_npy, read_manifest,
                           write_json_atomic)

ROWS_FILE = "rows.npy"  # in a run that took named rows: the input set's row of each sample (the agent writes it)
MERGE_BLOCK_BYTES = 4 << 20  # output rows held at a time while merging


def run_rows(run: RunResult) -> np.ndarray:
    """The input set's row of each of ``run``'s samples: its rows.npy when the run took named rows (a round,
    or rounds merged), else every row in order."""
    manifest = read_manifest(run.path) if run.path is not None and (run.path / MANIFEST).exists() else {"files": {}}
    if ROWS_FILE not in manifest["files"]:
        return np.arange(run.n, dtype=np.int64)
    rows = load_npy(run.path / ROWS_FILE)
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


def relabel_rows(path: str | os.PathLike, suite_rows, inputs: dict) -> None:
    """The run directory at ``path``, pulled from a run over an input set that holds rows of a suite edgeq built
    (the set's ``suite_row`` of each of its rows: ``suite_rows``), made a run over the suite: ``rows.npy`` becomes
    the suite row of each sample, ``meta.json`` names the suite (``inputs_sha256`` = its identity; the file's own
    sha256 kept as ``file_inputs_sha256``) and run.json's ``inputs`` is ``inputs`` (the suite's path and
    identity) with the file the device read kept under ``file``. The manifest follows, so the folder is a plain
    run the merge, the cache and reports read. Done before the run is loaded, so its files are hashed once."""
    path = Path(path)
    manifest = read_manifest(path)
    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    if ROWS_FILE in manifest["files"]:
        local = load_npy(path / ROWS_FILE).astype(np.int64, copy=False)
    else:
        local = np.arange(int(meta["samples"]), dtype=np.int64)
    with atomic_write(path / ROWS_FILE) as handle:
        np.save(handle, np.asarray(suite_rows, dtype=np.int64)[local], allow_pickle=False)
    meta.update(file_inputs_sha256=meta.get("inputs_sha256"), inputs_sha256=inputs["sha256"])
    write_json_atomic(path / "meta.json", meta)
    for rel in (ROWS_FILE, "meta.json"):
        manifest["files"][rel] = {"sha256": sha256_file(path / rel), "size": (path / rel).stat().st_size}
    write_json(path / MANIFEST, manifest)
    record = json.loads((path / RUN_FILE).read_text(encoding="utf-8"))
    record["inputs"] = dict(inputs, file=record.get("inputs"))
    write_json_atomic(path / RUN_FILE, record)
