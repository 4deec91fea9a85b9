"""Fuzz targets: the readers that take files edgeq did not write itself.

An input set comes from the user, a run directory from a device (which may lie), a
``.tflite`` from anywhere, an output spec (``--outputs-spec``, TOML or JSON) from the
user. Each target takes a valid seed file, applies a list of byte mutations and reads
the result the way edgeq does; the only acceptable failure is an ``EdgeqError`` (one
line, an exit code). Anything else — IndexError from a flatbuffer, a numpy ValueError,
a MemoryError from a declared shape, a TypeError from a list where a name belongs — is
a bug. The output spec also gets *structural* mutations (a value swapped for another
type, a key dropped or added, a table copied under another output's name), since most
byte mutations of a small text file stop at the parser; a spec that parses is then
planned against a model with many kinds of output and used to compare two made-up runs,
so an option that passes its checks but breaks a kind's arithmetic is found too.

Used by ``tests/test_fuzz.py`` (hypothesis, a short slice in CI) and
``scripts/fuzz.py`` (random mutations for N minutes, nightly).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
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
    outputs_specs: tuple[Path, ...] = field(default_factory=tuple)  # (TOML, JSON)


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
    return Seeds(inputset, work / "seed-deflated.npz", dirs, model, outputs_spec_seeds(work))


# --- the output spec (--outputs-spec) ------------------------------------------------------------

# A model with one output of every kind, named as a Keras dict model names them: signature names in
# another order than the tensors (``StatefulPartitionedCall_1:K``), one signature name that is another
# output's index alias (``output_0`` at index 3). (signature, tensor K, per-sample shape, producer)
SPEC_MODEL = [("boxes", 5, (64, 8), "CONV_2D"), ("scores", 2, (64, 1), "CONV_2D"), ("probs", 7, (10,), "SOFTMAX"),
              ("output_0", 0, (16,), "FULLY_CONNECTED"), ("tags", 3, (12,), "LOGISTIC"),
              ("mask", 1, (16, 16, 1), "LOGISTIC"), ("presence", 6, (1,), "LOGISTIC"),
              ("landmarks", 4, (42,), "FULLY_CONNECTED")]
SPEC_SAMPLES = 24
SPEC_SEED = {
    "labels": "probs",
    "verdict": ["probs", "boxes", "landmarks", "mask", "tags"],
    "outputs": {
        "boxes": {"kind": "detection", "scores": "scores", "iou": 0.5, "threshold": 0.5, "near_margin": 1.0,
                  "box_offset": 0, "nms": "weighted"},
        "probs": {"kind": "classification", "top_k": 3},
        "output_0": {"kind": "embedding", "min_cosine": 0.95},
        "tags": {"kind": "multilabel", "threshold": 0.4, "logits": False},
        "mask": {"kind": "segmentation", "min_iou": 0.8, "threshold": 0.5},
        "landmarks": {"kind": "regression", "atol": 0.05, "rtol": 0.01, "when": "presence>0.5"},
    },
}
# what a structural mutation puts in: values of every type, at and beyond every limit, names that
# resolve, fit several outputs or none
SPEC_VALUES = (True, False, 0, 1, -1, -3, 2, 5, 1.5, 0.5, 1e308, -1e308, 10 ** 30, float("nan"), float("inf"), "",
               " ", "x", "-1", "0", "1.5", "nan", "true", "output_0", "output_3", "3", "probs", "scores", "presence",
               "StatefulPartitionedCall_1", "StatefulPartitionedCall_1:2", "presence>0.5", "presence>=2", "probs<0",
               "landmarks>1", "detection", "classification", "regression", "embedding", "multilabel",
               "segmentation", "ignore", "post-nms", "anchors", "corners", "center", "greedy", "face-short",
               "none", "8,16", "8,,16", "-8", [], {}, None, [1], ["probs"], ["nope"], {"kind": "ignore"},
               {"kind": "classification", "top_k": 2}, "é\u0000")
SPEC_KEYS = ("kind", "top_k", "threshold", "atol", "rtol", "atol_spread", "min_cosine", "min_iou", "channels_last",
             "logits", "iou", "nms", "nms_iou", "anchors", "input_size", "strides", "layout", "box_format",
             "box_offset", "near_margin", "when", "scores", "classes", "count", "labels", "verdict", "outputs",
             "output_1", "landmarks", "presence", "_source")


def outputs_spec_seeds(work: Path) -> tuple[Path, Path]:
    """The seed spec as TOML and as JSON (the reader picks the format by suffix)."""
    work.mkdir(parents=True, exist_ok=True)
    lines = [f"labels = {json.dumps(SPEC_SEED['labels'])}", f"verdict = {json.dumps(SPEC_SEED['verdict'])}"]
    for name, entry in SPEC_SEED["outputs"].items():
        lines.append(f"\n[outputs.{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in entry.items()]
    toml, js = work / "outputs.toml", work / "outputs.json"
    toml.write_text("\n".join(lines) + "\n")
    js.write_text(json.dumps(SPEC_SEED, indent=1))
    return toml, js


def _spec_runs() -> tuple[list, list, list[np.ndarray], list[np.ndarray], dict]:
    """The spec model's outputs (OutputInfo, as a comparison describes them) and two made-up runs."""
    from types import SimpleNamespace

    from edgeq.analysis.plan import describe_outputs

    rng = np.random.default_rng(0)
    names = [f"StatefulPartitionedCall_1:{k}" for _, k, _, _ in SPEC_MODEL]
    info = SimpleNamespace(output_producers=[p for *_, p in SPEC_MODEL],
                           output_signature_names=[s for s, *_ in SPEC_MODEL])
    outputs = describe_outputs(names, [shape for _, _, shape, _ in SPEC_MODEL], info)
    ref, cand = [], []
    for _, _, shape, producer in SPEC_MODEL:
        x = rng.normal(size=(SPEC_SAMPLES, *shape))
        if producer == "SOFTMAX":
            x = np.exp(x) / np.exp(x).sum(axis=-1, keepdims=True)
        elif producer == "LOGISTIC":
            x = 1 / (1 + np.exp(-3 * x))
        noisy = x + rng.normal(scale=0.05, size=x.shape) * (rng.random((SPEC_SAMPLES,) + (1,) * len(shape)) < 0.5)
        ref.append(x.astype(np.float32))
        cand.append(noisy.astype(np.float32))
    half = SPEC_SAMPLES // 2
    samples = {"y": rng.integers(0, 10, SPEC_SAMPLES), "category": np.array(["clean"] * half + ["noise"] * half),
               "severity": np.repeat([0, 1], half)}
    return outputs, names, ref, cand, samples


_SPEC_RUNS = None


def read_outputs_spec(path: Path) -> None:
    """As ``evaluate``/``compare --outputs-spec`` read a spec: parse it, plan the model's outputs
    with it, and judge two runs with the plan (every kind's options in use)."""
    global _SPEC_RUNS
    from edgeq.analysis.compare import compare_outputs
    from edgeq.analysis.plan import OutputSpec

    if _SPEC_RUNS is None:
        _SPEC_RUNS = _spec_runs()
    outputs, _, ref, cand, samples = _SPEC_RUNS
    spec = OutputSpec.from_sources(spec_file=path)
    result = compare_outputs(ref, cand, samples, outputs=outputs, spec=spec, where=str(path))
    json.dumps(result, allow_nan=True)  # a report can be written from it


def _slots(data, trail=()) -> list[tuple]:
    """Every (container, key) of a parsed spec, depth first, the top level included."""
    slots = [(data, None, trail)] if isinstance(data, (dict, list)) else []
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        slots.append((data, key, trail + (key,)))
        slots += [s for s in _slots(value, trail + (key,)) if s[1] is not None]
    return slots


def mutate_spec(data: dict, mutations: list[Mutation]) -> dict:
    """Structural mutations: "flip"/"zero" swap a value for one of SPEC_VALUES, "cut" drops a key,
    "insert" adds a key (or copies an output's table under another output's name)."""
    data = json.loads(json.dumps(data))
    for what, position, value in mutations:
        slots = _slots(data)
        container, key, _ = slots[position % len(slots)]
        if what in ("flip", "zero") and key is not None:
            container[key] = json.loads(json.dumps(SPEC_VALUES[value % len(SPEC_VALUES)]))
        elif what == "cut" and key is not None:
            del container[key]
        elif what == "insert":
            target = container[key] if key is not None and isinstance(container[key], (dict, list)) else container
            new = json.loads(json.dumps(SPEC_VALUES[(value // 7) % len(SPEC_VALUES)]))
            if isinstance(target, list):
                target.append(new)
            elif value % 3 == 0 and isinstance(data.get("outputs"), dict) and data["outputs"]:
                tables = list(data["outputs"].values())
                data["outputs"][SPEC_KEYS[value % len(SPEC_KEYS)]] = json.loads(json.dumps(tables[value % len(tables)]))
            else:
                target[SPEC_KEYS[value % len(SPEC_KEYS)]] = new
    return data


def fuzz_outputs_spec(seeds: Seeds, work: Path, mutations: list[Mutation]) -> str:
    """TOML bytes, JSON bytes or structure (as JSON), chosen by the first mutation's position."""
    toml, js = seeds.outputs_specs or outputs_spec_seeds(work / "spec-seeds")
    mode = mutations[0][1] % 3 if mutations else 0
    if mode == 2:
        path = work / "spec.json"
        path.write_text(json.dumps(mutate_spec(SPEC_SEED, mutations)))
    else:
        seed = toml if mode == 0 else js
        path = work / f"spec{seed.suffix}"
        path.write_bytes(mutate(seed.read_bytes(), mutations))
    return run_target(read_outputs_spec, path)
