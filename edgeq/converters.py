"""The two conversion back ends; both import their heavy libraries only when called.

* Keras / SavedModel → ``tf.lite.TFLiteConverter`` (TensorFlow).
* float ``.tflite`` → ai-edge-quantizer (no TensorFlow needed).
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np

from edgeq.errors import ModelError

CALIBRATION_SAMPLES = 200


def _quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

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
    import keras

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
                      input_names: list[str], per_channel: bool = True) -> bytes:
    """Quantize a float .tflite directly with ai-edge-quantizer."""
    from ai_edge_quantizer import qtyping, quantizer, recipe

    ops = qtyping.TFLOperationName.ALL_SUPPORTED
    granularity = (qtyping.QuantGranularity.CHANNELWISE if per_channel
                   else qtyping.QuantGranularity.TENSORWISE)
    qt = quantizer.Quantizer(str(source))
    if policy == "dynamic-range":
        qt.add_dynamic_config(".*", ops, 8, granularity)
    elif policy == "float16":
        qt.add_weight_only_config(".*", ops, 16, algorithm_key=recipe.AlgorithmName.FLOAT_CASTING)
    elif policy == "int8":
        qt.load_quantization_recipe(recipe.static_wi8_ai8())
    try:
        with _captured_output():
            result = None
            if qt.need_calibration:
                samples = [{name: calibration[name][i:i + 1] for name in input_names}
                           for i in range(min(CALIBRATION_SAMPLES, len(next(iter(calibration.values())))))]
                result = qt.calibrate({"serving_default": samples})
            quantized = qt.quantize(result)
    except Exception as exc:
        raise ModelError(source, f"ai-edge-quantizer ({policy}) failed: {_first_line(exc)}") from None
    return bytes(quantized.quantized_model)


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
    from edgeq.inputset import load_inputset

    return load_inputset(path, what="calibration set").arrays
