"""The two conversion back ends; both import their heavy libraries only when called.

* Keras / SavedModel → ``tf.lite.TFLiteConverter`` (TensorFlow).
* float ``.tflite`` → ai-edge-quantizer (no TensorFlow needed).

``kept_float_reasons`` explains every weight a back end left float, from what that back
end really does (the TFLite converter's 1024-element threshold; the ops the installed
ai-edge-quantizer's recipe handles; op codes it misreads), never from a guess.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np

from edgeq.errors import MissingExtra, ModelError

CALIBRATION_SAMPLES = 200


HOST_EXTRA = "pip install 'edgeq[host]'"


def require_host(module: str, purpose: str):
    """Import a conversion library, or say how to install it (exit 2, not a traceback and exit 1).

    TensorFlow and ai-edge-quantizer come with the ``host`` extra only, so a plain
    ``pip install edgeq`` (enough for run/compare on .tflite files) lacks them.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise MissingExtra(f"{purpose} needs {exc.name or module}, which is not installed: {HOST_EXTRA}") from None


@contextlib.contextmanager
def tool_output_to(log_path: Path | None):
    """Send what TensorFlow, MLIR and the quantizer print (C++ logging on file descriptor 2,
    which no Python setting silences) to ``log_path`` instead of the user's terminal.

    None leaves it on the terminal (``-v``). Python's own ``sys.stderr`` keeps the real
    terminal, so edgeq's progress still shows while a conversion runs.
    """
    if log_path is None:
        yield
        return
    import sys

    if log_path != Path(os.devnull):
        log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    real_stderr = sys.stderr
    try:
        with open(log_path, "ab") as log:
            os.dup2(log.fileno(), 2)
            sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1)
            try:
                yield
            finally:
                sys.stderr.flush()
                sys.stderr.close()
                sys.stderr = real_stderr
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = require_host("tensorflow", "converting a Keras model or SavedModel")
    tf.get_logger().setLevel("ERROR")
    return tf


def tf_converter(source: Path, kind: str):
    """A TFLiteConverter for a Keras file or a SavedModel folder."""
    tf = _quiet_tensorflow()
    if kind == "savedmodel":
        try:
            return tf.lite.TFLiteConverter.from_saved_model(str(source))
        except Exception as exc:
            raise ModelError(source, f"cannot load SavedModel: {_first_line(exc)}") from None
    keras = require_host("keras", "converting a Keras model")
    try:
        model = keras.models.load_model(source, compile=False)
    except Exception as exc:
        raise ModelError(source, f"cannot load Keras model: {_first_line(exc)}") from None
    return tf.lite.TFLiteConverter.from_keras_model(model)


def tf_convert(source: Path, kind: str, policy: str, calibration: dict | None,
               per_channel: bool = True) -> bytes:
    """Convert with TensorFlow; float inputs/outputs are kept for every policy."""
    tf = _quiet_tensorflow()
    converter = tf_converter(source, kind)
    if policy != "float":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if policy == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if policy == "int8":
        converter.representative_dataset = _representative(calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if not per_channel:
        converter._experimental_disable_per_channel = True
    try:
        with _captured_output():
            return converter.convert()
    except Exception as exc:
        raise ModelError(source, f"TFLite conversion ({policy}) failed: {_first_line(exc)}") from None


def _representative(calibration: dict | None):
    arrays = list(calibration.values())

    def generate():
        count = min(CALIBRATION_SAMPLES, len(arrays[0]))
        for i in range(count):
            yield [a[i:i + 1] for a in arrays]

    return generate


def quantizer_convert(source: Path, policy: str, calibration: dict | None,
                      input_names: list[str] | None = None, per_channel: bool = True) -> bytes:
    """Quantize a float .tflite directly with ai-edge-quantizer.

    Calibration (int8) runs through a SignatureDef, keyed by the signature's input names
    ("pixels"), not tensor names ("serving_default_pixels:0"); ``_signature_samples``
    matches the calibration arrays to them. ``input_names`` is kept for callers.
    """
    quantizer = require_host("ai_edge_quantizer.quantizer", "quantizing a .tflite model")
    qt = quantizer.Quantizer(str(source))
    _configure(qt, policy, per_channel)
    dataset = _signature_samples(source, calibration) if qt.need_calibration else None
    try:
        with _captured_output():
            result = qt.calibrate(dataset) if dataset else None
            quantized = qt.quantize(result)
    except Exception as exc:
        raise ModelError(source, f"ai-edge-quantizer ({policy}) failed: {_first_line(exc)}") from None
    return bytes(quantized.quantized_model)


def _signature_samples(source: Path, calibration: dict) -> dict[str, list[dict]]:
    """``{signature_key: [{input name: one sample}, ...]}`` for ``Quantizer.calibrate``."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(source))
    signatures = interpreter.get_signature_list()
    if not signatures:
        raise ModelError(source, "has no SignatureDef, which ai-edge-quantizer needs to calibrate int8; "
                                 "use --policy dynamic-range or float16, or export the model with a signature")
    key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
    details = interpreter.get_signature_runner(key).get_input_details()
    arrays = {}
    for name, detail in details.items():
        tensor = detail["name"]
        for candidate in (name, tensor, tensor.split(":")[0]):
            if candidate in calibration:
                arrays[name] = calibration[candidate]
                break
        else:
            if len(details) == 1 and len(calibration) == 1:
                arrays[name] = next(iter(calibration.values()))
            else:
                from edgeq.errors import ConfigError

                raise ConfigError(f"calibration set has no array for model input {name!r} "
                                  f"(arrays: {', '.join(sorted(calibration))})")
    count = min(CALIBRATION_SAMPLES, min(len(a) for a in arrays.values()))
    return {key: [{name: a[i:i + 1] for name, a in arrays.items()} for i in range(count)]}


def _configure(target, policy: str, per_channel: bool) -> None:
    """The recipe edgeq asks ai-edge-quantizer for; ``target`` is a ``Quantizer`` or a
    ``RecipeManager`` (the same methods), so ``quantizer_skips`` asks the same recipe."""
    require_host("ai_edge_quantizer", "quantizing a .tflite model")
    from ai_edge_quantizer import qtyping, recipe

    ops = qtyping.TFLOperationName.ALL_SUPPORTED
    granularity = (qtyping.QuantGranularity.CHANNELWISE if per_channel
                   else qtyping.QuantGranularity.TENSORWISE)
    if policy == "dynamic-range":
        target.add_dynamic_config(".*", ops, 8, granularity)
    elif policy == "float16":
        target.add_weight_only_config(".*", ops, 16, algorithm_key=recipe.AlgorithmName.FLOAT_CASTING)
    elif policy == "int8":
        target.load_quantization_recipe(recipe.static_wi8_ai8())


def quantizer_skips(op_name: str, policy: str, per_channel: bool = True) -> str | None:
    """Why ai-edge-quantizer's recipe for ``policy`` leaves op ``op_name`` alone, or None
    when the recipe handles it -- asked of the installed quantizer, not a copied list."""
    from ai_edge_litert import schema_py_generated as schema

    require_host("ai_edge_quantizer", "explaining what ai-edge-quantizer left float")
    from ai_edge_quantizer import algorithm_manager, recipe_manager
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils

    key = tfl_flatbuffer_utils.TFL_OP_CODE_TO_NAME.get(getattr(schema.BuiltinOperator, op_name, -1))
    if key is None:
        return f"ai-edge-quantizer does not know the op {op_name}"
    manager = recipe_manager.RecipeManager()
    _configure(manager, policy, per_channel)
    algorithm, _ = manager.get_quantization_configs(key, "")
    if algorithm == algorithm_manager.AlgorithmName.NO_QUANTIZE:
        return f"ai-edge-quantizer's {policy} recipe does not handle {op_name}"
    return None


def kept_float_reasons(source_info, quant_info, backend: str, policy: str,
                       per_channel: bool = True) -> list[dict]:
    """One entry ``{name, op, elements, dtype, cause, reason}`` per weight the quantized
    model still stores as float, the reason checked against the model and the back end.

    ``source_info`` describes the model the back end read (for ai-edge-quantizer: the
    float .tflite, whose op codes it takes from ``builtin_code`` alone). ``cause`` is
    one of ``small``, ``op-not-handled``, ``old-schema-opcodes``, ``unexplained``: a
    reason edgeq can't verify says so instead of guessing ("no quantized kernel").
    """
    from edgeq.models.modelinfo import SMALL_WEIGHT_ELEMENTS

    target = {"dynamic-range": "int8", "int8": "int8", "float16": "float16"}.get(policy)
    if target is None:
        return []
    kept = []
    for w in quant_info.weights:
        if w.dtype not in ("float32", "float16") or w.dtype == target:
            continue
        ops = ", ".join(w.used_by)
        cause, reason = "unexplained", None
        if backend == "tensorflow":
            if policy == "dynamic-range" and w.elements < SMALL_WEIGHT_ELEMENTS:
                cause, reason = "small", (f"fewer than {SMALL_WEIGHT_ELEMENTS} elements: the TFLite "
                                          "converter's threshold for dynamic-range quantization")
            else:
                reason = f"the TFLite converter kept it {w.dtype} (consumed by {ops}); edgeq cannot tell why"
        elif source_info.old_schema_opcodes:
            cause, reason = "old-schema-opcodes", (
                f"old-schema op codes (builtin_code 0, the code in deprecated_builtin_code): "
                f"ai-edge-quantizer reads {ops} as ADD and skips it")
        else:
            skipped = [r for r in (quantizer_skips(op, policy, per_channel) for op in w.used_by) if r]
            if skipped:
                cause, reason = "op-not-handled", "; ".join(skipped)
            else:
                reason = (f"ai-edge-quantizer kept it {w.dtype} although its {policy} recipe handles "
                          f"{ops}; edgeq cannot tell why")
        kept.append({"name": w.name, "op": ops, "elements": w.elements, "dtype": w.dtype,
                     "cause": cause, "reason": reason})
    return kept


@contextlib.contextmanager
def _captured_output():
    """Converters print progress reports; keep them off the user's screen."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else exc.__class__.__name__)[:300]


def calibration_arrays(path: Path | None, policy: str) -> dict[str, np.ndarray] | None:
    if policy != "int8":
        return None
    if path is None:
        from edgeq.errors import ConfigError

        raise ConfigError("--policy int8 needs --calibration NPZ (a few hundred typical inputs)")
    from edgeq.inputs.inputset import load_inputset

    return {name: np.asarray(a) for name, a in load_inputset(path, what="calibration set").arrays.items()}
