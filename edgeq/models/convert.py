"""``edgeq convert``: float + quantized ``.tflite`` files and a model card.

The card records what really happened (every op with its version, every weight
tensor with its dtype, and for each weight left float the reason, checked against
the model) because converters quantize less than users assume: the TFLite converter
leaves layers under 1024 weights float, ai-edge-quantizer skips ops its recipe does
not handle, and some tools silently quantize nothing.

A ``.tflite`` source may be float32, or float16-weight (MediaPipe, BirdNET) or stored
with old-schema op codes: the float reference written to OUTDIR is then a rewritten
float32 file (``edgeq.models.model_rewrite``), and the card and summary say so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edgeq.errors import ConfigError, ModelError, QuantizedNothing
from edgeq.files import copy_file, write_bytes
from edgeq.models.modelinfo import ModelInfo, float16_weights, integer_weights, read_model, weight_summary
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
        w, source = self.card["weights"], self.card["source"]
        if self.card["policy"] == "float":
            return f"policy float: nothing quantized, all {w['total']} weight tensors stay float32"
        notes = []
        if source.get("float_reference") == DEQUANTIZED:
            notes.append(f"float reference {DEQUANTIZED}")
        if source.get("op_codes"):
            notes.append(f"op codes {source['op_codes']}")
        kept = w.get("kept_float") or []
        if kept and w["quantized"]:
            causes: dict[str, int] = {}
            for entry in kept:
                causes[entry["cause"]] = causes.get(entry["cause"], 0) + 1
            notes.append("kept float: " + ", ".join(f"{n} {CAUSE_LABELS.get(c, c)}" for c, n in causes.items()))
        return (f"{w['quantized']} of {w['total']} weight tensors quantized "
                f"({self.card['policy']}), {self.card['size_ratio']:.1f}× smaller"
                + "".join(f"; {note}" for note in notes))


DEQUANTIZED = "dequantized from float16"
NORMALISED = "normalised from deprecated_builtin_code"
CAUSE_LABELS = {"small": "under 1024 elements", "op-not-handled": "op not handled by the quantizer",
                "old-schema-opcodes": "old-schema op codes", "unexplained": "reason unknown"}


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
                            "a SavedModel folder or a float32/float16 .tflite")


def _require_backend(kind: str, policy: str, show_tool_output: bool) -> None:
    """The conversion library this source needs, imported before any folder is made for it
    (its import banner — CPU features, absl — is dropped unless ``show_tool_output``)."""
    from edgeq.models.converters import require_host, tool_output_to

    with tool_output_to(None if show_tool_output else Path(os.devnull)):
        if kind != "tflite":
            require_host("tensorflow", "converting a Keras model or SavedModel")
        elif policy != "float":
            require_host("ai_edge_quantizer", "quantizing a .tflite model")


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def check_keras_file(model: Path, kind: str) -> None:
    """Refuse a cut or mislabelled Keras file before TensorFlow loads (and before it says
    "File not found" about a file that exists): .keras is a zip archive, .h5 an HDF5 file."""
    if kind != "keras":
        return
    if model.suffix.lower() == ".keras":
        import zipfile

        if not zipfile.is_zipfile(model):
            raise ModelError(model, "cannot load Keras model: not a zip archive, so the .keras file is truncated "
                                    "or in another format (an HDF5 model must be named .h5)")
        return
    with open(model, "rb") as handle:
        head = handle.read(len(HDF5_SIGNATURE))
    if head != HDF5_SIGNATURE:
        raise ModelError(model, "cannot load Keras model: no HDF5 signature, so the .h5 file is damaged or in "
                                "another format (a Keras 3 zip model must be named .keras)")


def convert_model(model: str | os.PathLike, outdir: str | os.PathLike, policy: str = "dynamic-range",
                  calibration: str | os.PathLike | None = None, target_runtime: str = "latest",
                  show_tool_output: bool = False) -> Conversion:
    """Write OUTDIR/<stem>.float.tflite, OUTDIR/<stem>.<policy>.tflite and the card.

    What TensorFlow and the quantizer print goes to OUTDIR/<stem>.convert.log unless
    ``show_tool_output`` (``-v``)."""
    model, outdir = Path(model), Path(outdir)
    if policy not in POLICIES:
        raise ConfigError(f"unknown policy {policy!r} (choose from {', '.join(POLICIES)})")
    if target_runtime not in TARGET_RUNTIMES:
        raise ConfigError(f"unknown target runtime {target_runtime!r} (choose from {', '.join(TARGET_RUNTIMES)})")
    kind = source_kind(model)
    check_keras_file(model, kind)
    _require_backend(kind, policy, show_tool_output)
    _make_outdir(outdir)
    stem = model.stem if kind != "savedmodel" else model.resolve().name
    stem = stem.removesuffix(".float")  # m.float.tflite → m.dynamic-range.tflite, not m.float.dynamic-range
    float_path = outdir / f"{stem}.float.tflite"
    quant_path = outdir / f"{stem}.{policy}.tflite"
    per_channel = target_runtime == "latest"
    from edgeq.models.converters import calibration_arrays, tool_output_to

    cal = calibration_arrays(Path(calibration) if calibration else None, policy)
    with tool_output_to(None if show_tool_output else outdir / f"{stem}.convert.log"):
        float_info, source = _write_float(model, kind, float_path)
    if kind == "tflite" and quant_path.resolve() == model.resolve() and policy != "float":
        raise ConfigError(f"{model}: writing {quant_path} would overwrite the source model; choose another -o")
    if policy == "float":
        quant_info = float_info if quant_path == float_path else _copy(float_path, quant_path)
        kept = []
    else:
        with tool_output_to(None if show_tool_output else outdir / f"{stem}.convert.log"):
            quant_info = _write_quantized(model, kind, float_path, quant_path, policy, cal, float_info,
                                          per_channel)
        from edgeq.models.converters import kept_float_reasons

        backend = "ai-edge-quantizer" if kind == "tflite" else "tensorflow"
        kept = kept_float_reasons(float_info, quant_info, backend, policy, per_channel)
    card = model_card(model, kind, policy, target_runtime, float_info, quant_info, source=source, kept_float=kept)
    card_path = outdir / f"{stem}.card.json"
    write_json_atomic(card_path, card)
    result = Conversion(float_path, quant_path, card_path, card)
    _check_outcome(result, quant_path, policy, target_runtime, quant_info)
    return result


def _make_outdir(outdir: Path) -> None:
    from edgeq.files import ensure_writable_dir

    ensure_writable_dir(outdir)


def _write_float(model: Path, kind: str, float_path: Path) -> tuple[ModelInfo, dict]:
    """The float32 reference and what the card says about the source."""
    if kind == "tflite":
        return _float_reference(model, float_path)
    from edgeq.models.converters import tf_convert

    write_bytes(float_path, tf_convert(model, kind, "float", None))
    return read_model(float_path), {}


def _float_reference(model: Path, float_path: Path) -> tuple[ModelInfo, dict]:
    """Copy a float32 .tflite; rewrite a float16-weight or old-schema one (see
    ``edgeq.models.model_rewrite``); refuse one whose weights are already integers."""
    info = read_model(model)
    quantized = integer_weights(info)
    if quantized:
        dtypes = "/".join(sorted({w.dtype for w in quantized}))
        raise ModelError(model, f"is not a float model: {len(quantized)} of {len(info.weights)} weight tensors "
                                f"are already {dtypes} (a quantized model); pass the float32 or float16 "
                                ".tflite it was made from")
    source = {"weights": "float16" if float16_weights(info) else "float32", "sha256": info.sha256}
    done = {"dequantized": 0, "normalised": 0}
    if info.old_schema_opcodes or float16_weights(info) or any(op.name == "DEQUANTIZE" for op in info.ops):
        if model.resolve() == float_path.resolve():
            raise ConfigError(f"{model}: the rewritten float reference would overwrite the source; "
                              "choose another -o")
        from edgeq.models.model_rewrite import rewrite_float_reference

        done = rewrite_float_reference(model, float_path)
    if done["dequantized"] or done["normalised"]:
        float_info = read_model(float_path)
    else:
        float_info = info if model.resolve() == float_path.resolve() else _copy(model, float_path)
    left = float16_weights(float_info)
    if left:
        raise ModelError(model, f"{left} float16 weight tensors are not stored as constant -> DEQUANTIZE "
                                "and could not be dequantized into a float32 reference")
    source["float_reference"] = (DEQUANTIZED if done["dequantized"] else
                                 "op codes normalised" if done["normalised"] else "copy of the source")
    if done["dequantized"]:
        source["dequantized_tensors"] = done["dequantized"]
    if done["normalised"]:
        source["op_codes"] = NORMALISED
    return float_info, source


def _write_quantized(model, kind, float_path, quant_path, policy, cal, float_info, per_channel) -> ModelInfo:
    from edgeq.models.converters import quantizer_convert, tf_convert

    if kind == "tflite":
        data = quantizer_convert(float_path, policy, cal, per_channel=per_channel)
    else:
        data = tf_convert(model, kind, policy, cal, per_channel)
    write_bytes(quant_path, data)
    return read_model(quant_path)


def _copy(source: Path, destination: Path) -> ModelInfo:
    copy_file(source, destination)
    return read_model(destination)


def model_card(model: Path, kind: str, policy: str, target_runtime: str,
               float_info: ModelInfo, quant_info: ModelInfo, *, source: dict | None = None,
               kept_float: list[dict] | None = None) -> dict:
    """``source`` adds what edgeq did to a .tflite source (``weights``, ``float_reference``,
    ``op_codes``); ``kept_float`` lists the weights left float, each with its reason."""
    summary = weight_summary(quant_info, TARGET_DTYPE[policy])
    return {
        "source": {"path": str(model), "kind": kind, **(source or {})},
        "policy": policy,
        "target_runtime": target_runtime,
        "float": float_info.to_dict(),
        "quantized": quant_info.to_dict(),
        "weights": {"total": summary["total"], "quantized": summary["target"],
                    "target_dtype": TARGET_DTYPE[policy], "by_dtype": summary.get("by_dtype"),
                    "under_threshold": summary.get("small"), "kept_float": list(kept_float or [])},
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
                                           f"tensors: {_why_nothing(weights)}")
    if target_runtime != "latest":
        from edgeq.models.runtime_compat import incompatible_ops

        problems = incompatible_ops(quant_info, target_runtime)
        if problems:
            raise ModelError(quant_path, f"{target_runtime} cannot load this model: {'; '.join(problems)}")


def _why_nothing(weights: dict) -> str:
    """The per-weight reasons (``kept_float``), grouped: only what was checked is said."""
    if not weights["total"]:
        return "the model has no weight tensors (kernels) to quantize"
    reasons: dict[str, int] = {}
    for entry in weights.get("kept_float") or []:
        reasons[entry["reason"]] = reasons.get(entry["reason"], 0) + 1
    if not reasons:
        return "no weight tensor changed dtype, and edgeq found none left float to explain it"
    return "; ".join(f"{reason} ({n} of {weights['total']})" for reason, n in reasons.items())
