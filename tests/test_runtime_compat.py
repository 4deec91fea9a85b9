"""edgeq.models.runtime_compat: which models an old TFLite runtime (tflite-runtime 2.14) loads.

Measured with tflite-runtime 2.14.0 on TF 2.21 conversions: the float model and the
dynamic-range model converted with ``_experimental_disable_per_channel=True`` load;
the default dynamic-range model fails ("Didn't find op for builtin opcode
'FULLY_CONNECTED' version '12'"). Set EDGEQ_TFLITE214_PYTHON to a Python that has
tflite-runtime 2.14 to re-check the prediction against the real runtime.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from edgeq.models.modelinfo import ModelInfo, OpInfo, read_model
from edgeq.models.runtime_compat import (
    KERNEL_GAPS, KNOWN_RUNTIMES, MAX_OP_VERSIONS, incompatible_ops, runtime_key,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
RT = "tflite-runtime-2.14"


@pytest.fixture(scope="session")
def dense_models(tmp_path_factory):
    """Dense(64->128) -> Dense(128->10) as float, default dynamic-range and
    dynamic-range without per-channel weights."""
    import tensorflow as tf

    keras, layers = tf.keras, tf.keras.layers
    inp = keras.Input((64,))
    model = keras.Model(inp, layers.Dense(10)(layers.Dense(128, activation="relu")(inp)))
    d = tmp_path_factory.mktemp("compat")
    out = {}
    for policy in ("float", "dynamic", "dynamic_per_tensor"):
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if policy != "float":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if policy == "dynamic_per_tensor":
            converter._experimental_disable_per_channel = True
        out[policy] = d / f"dense.{policy}.tflite"
        out[policy].write_bytes(converter.convert())
    return out


def _info(ops=(), hybrid=()):
    return ModelInfo("m.tflite", "0" * 64, 0, (), (), tuple(ops), (), tuple(hybrid))


def test_table_has_measured_limits():
    assert KNOWN_RUNTIMES == (RT,)
    t = MAX_OP_VERSIONS[RT]
    assert (t["FULLY_CONNECTED"], t["CONV_2D"], t["DEPTHWISE_CONV_2D"]) == (10, 7, 7)
    assert (t["TRANSPOSE_CONV"], t["DEQUANTIZE"], t["STRIDED_SLICE"]) == (4, 5, 8)
    assert "STABLEHLO_ADD" not in t and len(t) > 150


def test_default_dynamic_range_is_flagged(dense_models):
    info = read_model(dense_models["dynamic"])
    fc = max(o.version for o in info.ops if o.name == "FULLY_CONNECTED")
    assert fc > 10  # 12 with TF 2.21
    assert incompatible_ops(info, RT) == [
        f"FULLY_CONNECTED v{fc} (tflite-runtime-2.14 supports up to v10)"]


def test_float_and_per_tensor_models_pass(dense_models):
    assert incompatible_ops(read_model(dense_models["float"]), RT) == []
    assert incompatible_ops(read_model(dense_models["dynamic_per_tensor"]), RT) == []


def test_unknown_ops_custom_ops_and_kernel_gaps():
    info = _info([OpInfo("STABLEHLO_ADD", 1, 1), OpInfo("CUSTOM:MyOp", 1, 1),
                  OpInfo("TRANSPOSE_CONV", 2, 1), OpInfo("ADD", 5, 2)],
                 hybrid=["TRANSPOSE_CONV"])
    problems = incompatible_ops(info, RT)
    assert problems[0] == "STABLEHLO_ADD v1 (tflite-runtime-2.14 does not have this op)"
    assert problems[1].startswith("TRANSPOSE_CONV with int8 weights and float input")
    assert len(problems) == 2 and "TRANSPOSE_CONV" in KERNEL_GAPS[RT]
    assert incompatible_ops(_info([OpInfo("TRANSPOSE_CONV", 2, 1)]), RT) == []


def test_unknown_or_no_runtime():
    assert incompatible_ops(_info([OpInfo("FULLY_CONNECTED", 12, 1)]), None) == []
    with pytest.raises(ValueError, match="unknown runtime"):
        incompatible_ops(_info(), "tflite-runtime-1.0")


@pytest.mark.parametrize("name, version, key", [
    ("tflite_runtime", "2.14.0", RT),
    ("tflite-runtime", "2.13.0", RT),  # older: 2.14's table is a lower bound
    ("tensorflow", "2.14.1", RT),
    ("tensorflow", "2.21.0", None),
    ("ai_edge_litert", "2.3.0", None),
    ("ai-edge-litert", "1.0.1", None),
    ("tflite_runtime", "unknown", None),
])
def test_runtime_key(name, version, key):
    assert runtime_key(name, version) == key


_LOAD = """
import json, sys
from tflite_runtime.interpreter import Interpreter
res = {}
for p in sys.argv[1:]:
    try:
        Interpreter(model_path=p).allocate_tensors(); res[p] = "ok"
    except Exception as e:
        res[p] = str(e).splitlines()[0]
print(json.dumps(res))
"""


def test_prediction_matches_real_tflite_runtime_214(dense_models, tflite214_python):
    paths = [str(p) for p in dense_models.values()]
    out = subprocess.run([tflite214_python, "-c", _LOAD, *paths],
                         capture_output=True, text=True, check=True).stdout
    loaded = json.loads(out.strip().splitlines()[-1])
    for p in paths:
        predicted_ok = not incompatible_ops(read_model(p), RT)
        assert (loaded[p] == "ok") == predicted_ok, (p, loaded[p])
