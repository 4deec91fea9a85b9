"""Fuzz targets: the three readers that take files edgeq did not write itself.

An input set comes from the user, a run directory from a device (which may lie), a
``.tflite`` from anywhere. Each target takes a valid seed file, applies a list of
byte mutations and reads the result the way edgeq does; the only acceptable failure
is an ``EdgeqError`` (one line, an exit code). Anything else — IndexError from a
flatbuffer, a numpy ValueError, a MemoryError from a declared shape — is a bug.

Used by ``tests/test_fuzz.py`` (hypothesis, a short slice in CI) and
``scripts/fuzz.py`` (random mutations for N minutes, nightly).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeq.errors import EdgeqError

Mutation = tuple[str, int, int]  # (what, position, value): "flip", "cut", "insert", "zero"


def mutate(data: bytes, mutations: list[Mutation]) -> bytes:
    """Apply byte-level mutations; positions wrap around the current length."""
    out = bytearray(data)
    for what, position, value in mutations:
        if not out:
            break
        at = position % len(out)
        if what == "flip":
            out[at] ^= (value % 255) + 1
        elif what == "cut":
            del out[at:]
        elif what == "insert":
            out[at:at] = bytes([value % 256]) * (1 + value % 7)
        elif what == "zero":
            out[at:at + 1 + value % 64] = bytes(len(out[at:at + 1 + value % 64]))
    return bytes(out)


@dataclass
class Seeds:
    """Valid files to start from, built once per session."""

    inputset: Path
    inputset_deflated: Path
    rundirs: tuple[Path, Path]
    model: Path


def read_inputset(path: Path) -> None:
    """As ``edgeq run`` / ``evaluate`` read a set: load, validate, then touch every array."""
    from edgeq.inputs.inputset import load_inputset

    dataset = load_inputset(path)
    for array in dataset.arrays.values():
        np.asarray(array).sum()


def read_rundirs(ref: Path, cand: Path) -> None:
    """As ``edgeq compare`` reads two run directories and compares them offline."""
    from edgeq.analysis.compare import compare_runs
    from edgeq.results import RunResult

    compare_runs(RunResult.load(ref), RunResult.load(cand))


def read_model(path: Path) -> None:
    from edgeq.models.modelinfo import read_model as parse

    parse(path)


def run_target(target, *paths: Path) -> str:
    """'ok' or the EdgeqError class name; any other exception propagates (a bug)."""
    try:
        target(*paths)
    except EdgeqError as exc:
        return type(exc).__name__
    return "ok"


def fuzz_inputset(seeds: Seeds, work: Path, mutations: list[Mutation]) -> str:
    """Stored and compressed sets alternate (by the first mutation's position)."""
    seed = seeds.inputset_deflated if mutations and mutations[0][1] % 2 else seeds.inputset
    path = work / "set.npz"
    path.write_bytes(mutate(seed.read_bytes(), mutations))
    return run_target(read_inputset, path)


def fuzz_model(seeds: Seeds, work: Path, mutations: list[Mutation]) -> str:
    path = work / "model.tflite"
    path.write_bytes(mutate(seeds.model.read_bytes(), mutations))
    return run_target(read_model, path)


RUN_FILES = ("manifest.json", "meta.json", "run.json", "samples.npz", "latency_ns.npy", "batch_sizes.npy",
             "outputs/output_0.npy")


def fuzz_rundir(seeds: Seeds, work: Path, mutations: list[Mutation], which: int, resign: bool) -> str:
    """Mutate one file of the candidate run; with ``resign`` the manifest is rewritten to
    match, as a hostile agent would, so the reader meets the mutated content itself."""
    ref, cand = work / "ref", work / "cand"
    for source, target in zip(seeds.rundirs, (ref, cand)):
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)
    rel = RUN_FILES[which % len(RUN_FILES)]
    (cand / rel).write_bytes(mutate((cand / rel).read_bytes(), mutations))
    if resign and rel != "manifest.json":
        _resign(cand)
    return run_target(read_rundirs, ref, cand)


def _resign(rundir: Path) -> None:
    manifest = json.loads((rundir / "manifest.json").read_text())
    for rel in manifest.get("files", {}):
        data = (rundir / rel).read_bytes()
        manifest["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    (rundir / "manifest.json").write_text(json.dumps(manifest))


def build_seeds(work: Path, model: Path, data: Path) -> Seeds:
    """A small input set, two real run directories of the model on it, and the model."""
    from edgeq.devices.inventory import local_device
    from edgeq.devices.run import RunSpec, run_on_device

    work.mkdir(parents=True, exist_ok=True)
    with np.load(data) as loaded:
        x, y = loaded["x"][:24], loaded["y"][:24]
    category = np.array(["clean"] * 12 + ["noise"] * 12)
    inputset = work / "seed.npz"
    np.savez(inputset, x=x, y=y, category=category, severity=np.repeat([0, 1], 12))
    np.savez_compressed(work / "seed-deflated.npz", x=x, y=y, category=category, severity=np.repeat([0, 1], 12))
    device = local_device(str(work / "device"))
    specs = [RunSpec(model=model, inputs=inputset, label=label, warmup=0) for label in ("ref", "cand")]
    dirs = (work / "runs" / "ref", work / "runs" / "cand")
    run_on_device(device, specs, list(dirs))
    return Seeds(inputset, work / "seed-deflated.npz", dirs, model)
