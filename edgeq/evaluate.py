"""``edgeq evaluate``: the main job, from a model and data to a verdict.

convert (if needed) → risky suite → float and quantized runs on the device →
compare → report.json + report.html. Each phase's wall time goes into the report.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edgeq.errors import ConfigError
from edgeq.inputset import InputSet, load_inputset, match_model_inputs

EXAMPLES = Path(__file__).resolve().parent / "examples"
EXAMPLE_MODEL = EXAMPLES / "digits_mlp.keras"
EXAMPLE_DATA = EXAMPLES / "digits.npz"


@dataclass
class EvaluateOptions:
    model: Path | None = None
    data: Path | None = None
    quant_model: Path | None = None
    device: str = "local"
    inventory: Path | None = None
    outdir: Path = Path("edgeq-out")
    policy: str = "dynamic-range"
    seed: int = 0
    max_per_category: int | None = 500
    range_mode: str = "global"
    threads: int = 1
    resolver: str = "AUTO"
    warmup: int = 10
    repeats: int = 1
    batch_size: int = 1
    fail_on: str | None = None
    timings: dict = field(default_factory=dict)


@contextlib.contextmanager
def _phase(opts: EvaluateOptions, name: str, announce: Callable[[str], None] | None):
    if announce:
        announce(name)
    start = time.perf_counter()
    yield
    opts.timings[name] = round(time.perf_counter() - start, 3)


def resolve_inputs(opts: EvaluateOptions) -> None:
    """No model means the built-in example; a model needs its data."""
    if opts.model is None:
        if opts.data is not None:
            raise ConfigError("--data was given without a model")
        opts.model, opts.data = EXAMPLE_MODEL, EXAMPLE_DATA
    elif opts.data is None:
        raise ConfigError(f"{opts.model}: --data NPZ is required (the data to build risky inputs from)")
    opts.model, opts.data = Path(opts.model), Path(opts.data)


def prepare_models(opts: EvaluateOptions) -> tuple[Path, Path, dict | None]:
    """Float and quantized .tflite for the run; converts unless both were given."""
    if opts.quant_model is not None:
        from edgeq.convert import source_kind

        if source_kind(opts.model) != "tflite":
            raise ConfigError("--quant-model needs the float model as a .tflite file")
        return opts.model, Path(opts.quant_model), None
    from edgeq.convert import convert_model

    conversion = convert_model(opts.model, opts.outdir / "models", policy=opts.policy)
    return conversion.float_path, conversion.quant_path, conversion.card


def build_suite(opts: EvaluateOptions, data: InputSet) -> Path:
    from edgeq.risky import build_risky_suite

    suite = build_risky_suite(data.arrays, data.y, seed=opts.seed, max_per_category=opts.max_per_category,
                              range_mode=opts.range_mode)
    tags = ("y", "category", "severity", "source_index")
    risky = InputSet(arrays={k: v for k, v in suite.items() if k not in tags},
                     **{k: suite[k] for k in tags if k in suite})
    return risky.save(opts.outdir / "inputs" / "risky.npz")


def evaluate(opts: EvaluateOptions, announce=None, progress=None) -> dict:
    """Run the whole job; returns the report dict (also written to OUTDIR)."""
    from edgeq.compare import compare_runs
    from edgeq.devices import load_inventory, select_devices
    from edgeq.gates import evaluate_gates, parse_gates
    from edgeq.modelinfo import read_model
    from edgeq.report import build_report, write_report
    from edgeq.run import RunSpec, ensure_writable_dir, run_on_device

    resolve_inputs(opts)
    gates = parse_gates(opts.fail_on)
    devices = select_devices(opts.device, load_inventory(opts.inventory))
    if len(devices) != 1:
        raise ConfigError("evaluate runs on one device at a time in this version")
    ensure_writable_dir(opts.outdir)
    data = load_inputset(opts.data, what="data")
    with _phase(opts, "convert", announce):
        float_path, quant_path, card = prepare_models(opts)
    info = read_model(float_path)
    match_model_inputs(data, [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype,
                               "shape_signature": list(t.shape_signature or t.shape)} for t in info.inputs])
    with _phase(opts, "risky inputs", announce):
        suite_path = build_suite(opts, data)
    common = dict(inputs=suite_path, threads=opts.threads, resolver=opts.resolver, warmup=opts.warmup,
                  repeats=opts.repeats, batch_size=opts.batch_size)
    specs = [RunSpec(model=float_path, label="float", **common), RunSpec(model=quant_path, label="quant", **common)]
    with _phase(opts, "device runs", announce):
        ref, cand = run_on_device(devices[0], specs, [opts.outdir / "runs" / "float", opts.outdir / "runs" / "quant"],
                                  progress)
    with _phase(opts, "compare", announce):
        report = build_report(compare_runs(ref, cand), ref, cand, _provenance(opts, float_path, quant_path, card, suite_path))
        report["gates"] = evaluate_gates(report, gates)
        report["inputs"]["n"] = report["overall"]["n"]
    report["timings_s"] = dict(opts.timings)
    write_report(opts.outdir, report, {"float": ref.latency_ms_per_sample(), "quant": cand.latency_ms_per_sample()})
    return report


def _provenance(opts, float_path: Path, quant_path: Path, card: dict | None, suite_path: Path) -> dict:
    from edgeq.risky import describe_categories
    from edgeq.transport.base import sha256_file

    model = {"float": {"path": str(float_path), "sha256": sha256_file(float_path), "size": float_path.stat().st_size},
             "quant": {"path": str(quant_path), "sha256": sha256_file(quant_path), "size": quant_path.stat().st_size},
             "policy": opts.policy if card else "given", "source": str(opts.model)}
    if card:
        model["weights_quantized"] = f"{card['weights']['quantized']} of {card['weights']['total']}"
    return {"model": model, "category_descriptions": describe_categories(),
            "inputs": {"path": str(suite_path), "sha256": sha256_file(suite_path), "data": str(opts.data),
                       "seed": opts.seed, "max_per_category": opts.max_per_category}}
