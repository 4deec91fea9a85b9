"""``edgeq convert``: float + quantized ``.tflite`` files and a model card.

The card records what really happened (every op with its version, every weight
tensor with its dtype) because converters quantize less than users assume: layers
under 1024 weights stay float, and some tools silently quantize nothing.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from edgeq.errors import ConfigError, ModelError, QuantizedNothing
from edgeq.modelinfo import ModelInfo, read_model, weight_summary
from edgeq.results import write_json_atomic

POLICIES = ("dynamic-range", "float16", "int8", "float")
TARGET_DTYPE = {"dynamic-range": "int8", "int8": "int8", "float16": "float16", "float": "float32"}
TARGET_RUNTIMES = ("latest", "tflite-runtime-2.14")


@dataclass
class Conversion:
    float_path: Path
    quant_path: Path
    card_path: Path
    card: dict

    @property
    def summary(self) -> str:
        w = self.card["weights"]
        return (f"{w['quantized']} of {w['total']} weight tensors quantized "
                f"({self.card['policy']}), {self.card['size_ratio']:.1f}× smaller")


def source_kind(model: Path) -> str:
    if not model.exists():
        raise ModelError(model, "file not found")
    if model.is_dir():
        if (model / "saved_model.pb").exists() or (model / "saved_model.pbtxt").exists():
            return "savedmodel"
        raise ModelError(model, "folder is not a SavedModel (no saved_model.pb)")
    suffix = model.suffix.lower()
    if suffix in (".keras", ".h5", ".hdf5"):
        return "keras"
    if suffix == ".tflite":
        return "tflite"
    raise ModelError(model, f"unknown model type {suffix or '(no suffix)'}: expected .keras, .h5, "
                            "a SavedModel folder or a float .tflite")


def convert_model(model: str | os.PathLike, outdir: str | os.PathLike, policy: str = "dynamic-range",
                  calibration: str | os.PathLike | None = None, target_runtime: str = "latest") -> Conversion:
    """Write OUTDIR/<stem>.float.tflite, OUTDIR/<stem>.<policy>.tflite and the card."""
    model, outdir = Path(model), Path(outdir)
    if policy not in POLICIES:
        raise ConfigError(f"unknown policy {policy!r} (choose from {', '.join(POLICIES)})")
    if target_runtime not in TARGET_RUNTIMES:
        raise ConfigError(f"unknown target runtime {target_runtime!r} (choose from {', '.join(TARGET_RUNTIMES)})")
    kind = source_kind(model)
    _make_outdir(outdir)
    stem = model.stem if kind != "savedmodel" else model.resolve().name
    stem = stem.removesuffix(".float")  # m.float.tflite → m.dynamic-range.tflite, not m.float.dynamic-range
    float_path = outdir / f"{stem}.float.tflite"
    quant_path = outdir / f"{stem}.{policy}.tflite"
    per_channel = target_runtime == "latest"
    from edgeq.converters import calibration_arrays

    cal = calibration_arrays(Path(calibration) if calibration else None, policy)
    float_info = _write_float(model, kind, float_path)
    if policy == "float":
        quant_info = float_info if quant_path == float_path else _copy(float_path, quant_path)
    else:
        quant_info = _write_quantized(model, kind, float_path, quant_path, policy, cal, float_info, per_channel)
    card = model_card(model, kind, policy, target_runtime, float_info, quant_info)
    card_path = outdir / f"{stem}.card.json"
    write_json_atomic(card_path, card)
    result = Conversion(float_path, quant_path, card_path, card)
    _check_outcome(result, quant_path, policy, target_runtime, quant_info)
    return result


def _make_outdir(outdir: Path) -> None:
    from edgeq.run import ensure_writable_dir

    ensure_writable_dir(outdir)


def _write_float(model: Path, kind: str, float_path: Path) -> ModelInfo:
    if kind == "tflite":
        info = read_model(model)
        already = [w.name for w in info.weights if w.dtype in ("int8", "float16")]
        if already:
            raise ModelError(model, f"is not a float model: {len(already)} weight tensors are already "
                                    f"{info.weights[0].dtype}; pass the float .tflite it was made from")
        return info if model.resolve() == float_path.resolve() else _copy(model, float_path)
    from edgeq.converters import tf_convert

    _write_bytes(float_path, tf_convert(model, kind, "float", None))
    return read_model(float_path)


def _write_quantized(model, kind, float_path, quant_path, policy, cal, float_info, per_channel) -> ModelInfo:
    from edgeq.converters import quantizer_convert, tf_convert

    if kind == "tflite":
        names = [i.name.split(":")[0] for i in float_info.inputs]
        if cal is not None and list(cal) == ["x"] and len(names) == 1:
            cal = {names[0]: cal["x"]}
        data = quantizer_convert(float_path, policy, cal, names, per_channel)
    else:
        data = tf_convert(model, kind, policy, cal, per_channel)
    _write_bytes(quant_path, data)
    return read_model(quant_path)


def _copy(source: Path, destination: Path) -> ModelInfo:
    tmp = destination.with_name(f".{destination.name}.part")
    shutil.copyfile(source, tmp)
    os.replace(tmp, destination)
    return read_model(destination)


def _write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def model_card(model: Path, kind: str, policy: str, target_runtime: str,
               float_info: ModelInfo, quant_info: ModelInfo) -> dict:
    summary = weight_summary(quant_info, TARGET_DTYPE[policy])
    return {
        "source": {"path": str(model), "kind": kind},
        "policy": policy,
        "target_runtime": target_runtime,
        "float": float_info.to_dict(),
        "quantized": quant_info.to_dict(),
        "weights": {"total": summary["total"], "quantized": summary["target"],
                    "target_dtype": TARGET_DTYPE[policy], "by_dtype": summary.get("by_dtype"),
                    "under_threshold": summary.get("small")},
        "size_ratio": float_info.size / max(quant_info.size, 1),
        "tools": _tool_versions(kind),
    }


def _tool_versions(kind: str) -> dict:
    from importlib import metadata

    names = ["ai-edge-litert"] + (["ai-edge-quantizer"] if kind == "tflite" else ["tensorflow-cpu", "tensorflow", "keras"])
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def _check_outcome(result: Conversion, quant_path: Path, policy: str, target_runtime: str,
                   quant_info: ModelInfo) -> None:
    """Refuse a quantizing policy that changed nothing, or a model the target can't load."""
    weights = result.card["weights"]
    if policy != "float" and weights["quantized"] == 0:
        raise QuantizedNothing(quant_path, f"policy {policy} quantized none of {weights['total']} weight "
                                           f"tensors: {_why_nothing(result.card, policy)}")
    if target_runtime != "latest":
        from edgeq.runtime_compat import incompatible_ops

        problems = incompatible_ops(quant_info, target_runtime)
        if problems:
            raise ModelError(quant_path, f"{target_runtime} cannot load this model: {'; '.join(problems)}")


def _why_nothing(card: dict, policy: str) -> str:
    weights = card["float"]["weights"]
    if not weights:
        return "the model has no weight tensors (kernels) to quantize"
    if all(w["elements"] < 1024 for w in weights) and policy in ("dynamic-range", "float16"):
        return ("every weight tensor has fewer than 1024 elements, the converter's threshold; "
                "the model is too small to gain from this policy")
    return "the converter kept every weight in float (check the ops: some have no quantized kernel)"
