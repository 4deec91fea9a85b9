"""edgeq.models.modelinfo on tiny models converted by TensorFlow inside the test session."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeq.errors import ModelError
from edgeq.models.modelinfo import ModelInfo, float16_weights, integer_weights, read_model, weight_summary

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _convert(tf, model, path, policy, **flags):
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if policy != "float":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if policy == "float16":
        converter.target_spec.supported_types = [tf.float16]
    for name, value in flags.items():
        setattr(converter, name, value)
    path.write_bytes(converter.convert())
    return path


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """mlp: Dense(64->128) [8192 weights], Dense(128->4) [512], Dense(4->8) [32];
    cnn: Conv2D(8->32, 3x3) [2304], Dense(32->10) [320]."""
    import tensorflow as tf

    keras, layers = tf.keras, tf.keras.layers
    tf.keras.utils.set_random_seed(0)
    x = inp = keras.Input((64,))
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dense(4)(x)
    mlp = keras.Model(inp, layers.Dense(8)(x))
    x = inp = keras.Input((8, 8, 8))
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(32, 3, activation="relu")(x))
    cnn = keras.Model(inp, layers.Dense(10)(x))

    x = inp = keras.Input((8,))
    x = layers.Dense(16, activation="relu")(x)
    heads = keras.Model(inp, [layers.Dense(3, activation="softmax")(x), layers.Dense(2, activation="sigmoid")(x),
                              layers.Dense(4)(x)])

    d = tmp_path_factory.mktemp("modelinfo")
    out = {"heads.float": _convert(tf, heads, d / "heads.float.tflite", "float")}
    for name, model in (("mlp", mlp), ("cnn", cnn)):
        for policy in ("float", "dynamic"):
            out[f"{name}.{policy}"] = _convert(tf, model, d / f"{name}.{policy}.tflite", policy)
    out["mlp.float16"] = _convert(tf, mlp, d / "mlp.float16.tflite", "float16")
    # large-model layout: weight data after the flatbuffer (Buffer.offset/size)
    out["mlp.offset"] = _convert(tf, mlp, d / "mlp.offset.tflite", "float",
                                 _experimental_use_buffer_offset=True)
    return out


def _weight(info: ModelInfo, shape):
    [w] = [w for w in info.weights if w.shape == shape]
    return w


def test_inputs_outputs(models):
    info = read_model(models["mlp.float"])
    assert len(info.inputs) == 1 and len(info.outputs) == 1
    (i,), (o,) = info.inputs, info.outputs
    assert (i.shape, i.dtype, i.shape_signature) == ((1, 64), "float32", (-1, 64))
    assert (o.shape, o.dtype) == ((1, 8), "float32")
    assert i.name and o.name
    cnn = read_model(models["cnn.dynamic"])
    assert cnn.inputs[0].shape == (1, 8, 8, 8) and cnn.inputs[0].dtype == "float32"
    assert cnn.outputs[0].shape == (1, 10)


def test_ops_with_versions(models):
    ops = {(o.name, o.version): o.count for o in read_model(models["mlp.float"]).ops}
    assert ops == {("FULLY_CONNECTED", 1): 3}
    dyn = read_model(models["mlp.dynamic"]).ops
    assert sum(o.count for o in dyn if o.name == "FULLY_CONNECTED") == 3
    assert max(o.version for o in dyn if o.name == "FULLY_CONNECTED") >= 9  # 12 with TF 2.21
    f16 = {o.name: o for o in read_model(models["mlp.float16"]).ops}
    assert f16["DEQUANTIZE"].count == 3 and f16["FULLY_CONNECTED"].version == 1
    cnn = {o.name for o in read_model(models["cnn.float"]).ops}
    assert {"CONV_2D", "FULLY_CONNECTED"} <= cnn


def test_weights_float_vs_dynamic_range(models):
    flt, dyn = read_model(models["mlp.float"]), read_model(models["mlp.dynamic"])
    assert [w.shape for w in flt.weights] == [(128, 64), (4, 128), (8, 4)]
    big_f, big_d = _weight(flt, (128, 64)), _weight(dyn, (128, 64))
    assert (big_f.dtype, big_f.elements, big_f.nbytes) == ("float32", 8192, 4 * 8192)
    assert (big_d.dtype, big_d.elements, big_d.nbytes) == ("int8", 8192, 8192)
    assert big_d.used_by == ("FULLY_CONNECTED",)
    small = _weight(dyn, (8, 4))  # Dense(4->8): 32 elements < 1024 stays float
    assert (small.dtype, small.elements) == ("float32", 32)
    assert dyn.hybrid_ops == ("FULLY_CONNECTED",) and flt.hybrid_ops == ()
    assert weight_summary(dyn, "int8") == {
        "total": 3, "target_dtype": "int8", "target": 1, "float32": 2, "small": 2,
        "by_dtype": {"float32": 2, "int8": 1},
        "total_bytes": 8192 + 4 * (512 + 32), "target_bytes": 8192}
    assert weight_summary(flt, "int8")["target"] == 0


def test_conv_kernel_and_biases(models):
    flt, dyn = read_model(models["cnn.float"]), read_model(models["cnn.dynamic"])
    assert _weight(flt, (32, 3, 3, 8)).dtype == "float32"
    conv = _weight(dyn, (32, 3, 3, 8))
    assert (conv.dtype, conv.used_by) == ("int8", ("CONV_2D",))
    assert _weight(dyn, (10, 32)).dtype == "float32"  # 320 elements
    assert all(len(w.shape) >= 2 for w in dyn.weights)  # biases are not weights
    assert dyn.hybrid_ops == ("CONV_2D",)


def test_float16_policy_reports_float16_weights(models):
    info = read_model(models["mlp.float16"])
    assert {w.dtype for w in info.weights} == {"float16"}
    big = _weight(info, (128, 64))
    assert (big.nbytes, big.used_by) == (2 * 8192, ("FULLY_CONNECTED",))
    s = weight_summary(info, "float16")
    assert (s["total"], s["target"], s["float32"], s["small"]) == (3, 3, 0, 2)


def test_float16_and_integer_weight_helpers(models):
    assert float16_weights(read_model(models["mlp.float16"])) == 3
    assert float16_weights(read_model(models["mlp.float"])) == 0
    assert [w.shape for w in integer_weights(read_model(models["mlp.dynamic"]))] == [(128, 64)]
    assert integer_weights(read_model(models["mlp.float16"])) == ()


def test_output_producers(models, tmp_path):
    """SOFTMAX -> classification, LOGISTIC -> sigmoid scores: what output kinds start from."""
    info = read_model(models["heads.float"])
    assert len(info.output_producers) == len(info.outputs) == 3
    by_size = {o.shape[-1]: p for o, p in zip(info.outputs, info.output_producers)}
    assert by_size == {3: "SOFTMAX", 2: "LOGISTIC", 4: "FULLY_CONNECTED"}
    assert read_model(models["mlp.dynamic"]).output_producers == ("FULLY_CONNECTED",)
    assert read_model(models["mlp.float16"]).output_producers == ("FULLY_CONNECTED",)
    # an output that is the model input itself has no producer
    from edgeq.models import model_rewrite

    model = model_rewrite.load(models["mlp.float"])
    sg = model.subgraphs[0]
    sg.outputs = list(sg.outputs) + [int(sg.inputs[0])]
    model.signatureDefs = None
    path = tmp_path / "passthrough.tflite"
    model_rewrite.save(model, path)
    assert read_model(path).output_producers == ("FULLY_CONNECTED", "")
    assert json.loads(json.dumps(read_model(path).to_dict()))["output_producers"] == ["FULLY_CONNECTED", ""]


def test_old_schema_opcodes(models, tmp_path):
    from edgeq.models import model_rewrite

    model = model_rewrite.load(models["cnn.dynamic"])
    model_rewrite.to_old_schema(model)
    path = tmp_path / "old.tflite"
    model_rewrite.save(model, path)
    old, new = read_model(path), read_model(models["cnn.dynamic"])
    assert old.old_schema_opcodes and not new.old_schema_opcodes
    # names, hybrid ops and weights are read as the runtime reads them
    assert sorted(old.ops, key=str) == sorted(new.ops, key=str)
    assert old.hybrid_ops == new.hybrid_ops == ("CONV_2D",)
    assert [(w.shape, w.dtype) for w in old.weights] == [(w.shape, w.dtype) for w in new.weights]


def test_existing_constructor_still_works():
    info = ModelInfo("m.tflite", "0" * 64, 10, (), (), (), ())
    assert (info.output_producers, info.old_schema_opcodes, info.hybrid_ops) == ((), False, ())
    assert info.to_dict()["output_producers"] == [] and info.to_dict()["old_schema_opcodes"] is False


def test_buffer_offset_layout(models, tmp_path):
    path = models["mlp.offset"]
    info = read_model(path)
    assert _weight(info, (128, 64)).nbytes == 4 * 8192
    plain = read_model(models["mlp.float"])
    assert [w.shape for w in info.weights] == [w.shape for w in plain.weights]
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(path.read_bytes()[:-64])  # lose the end of the appended data
    with pytest.raises(ModelError, match=r"truncated TFLite file: buffer \d+ ends at byte"):
        read_model(cut)


def test_sha256_size_and_dict(models):
    path = models["cnn.dynamic"]
    data = path.read_bytes()
    info = read_model(path)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert info.size == len(data) == os.path.getsize(path)
    assert info.path == str(path)
    d = json.loads(json.dumps(info.to_dict()))
    assert d["sha256"] == info.sha256 and d["inputs"][0]["shape"] == [1, 8, 8, 8]
    assert {"name", "shape", "dtype", "elements", "nbytes", "used_by"} <= set(d["weights"][0])


def test_no_tensorflow_import(models):
    code = ("import sys; from edgeq.models.modelinfo import read_model; "
            f"read_model({str(models['mlp.dynamic'])!r}); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'")
    root = str(Path(__file__).resolve().parents[1])
    paths = [root, os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def _bad(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("case, message", [
    ("truncated", "truncated TFLite file"),
    ("random", "not a TFLite model (no TFL3 identifier"),
    ("empty", "empty file"),
    ("missing", "file not found"),
    ("directory", "is a directory"),
])
def test_unreadable_files(models, tmp_path, case, message):
    src = models["mlp.float"].read_bytes()
    path = {
        "truncated": lambda: _bad(tmp_path, "half.tflite", src[: len(src) // 2]),
        "random": lambda: _bad(tmp_path, "random.tflite", np.random.default_rng(1).bytes(4096)),
        "empty": lambda: _bad(tmp_path, "empty.tflite", b""),
        "missing": lambda: tmp_path / "nope.tflite",
        "directory": lambda: tmp_path,
    }[case]()
    with pytest.raises(ModelError) as err:
        read_model(path)
    assert err.value.path == str(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)
    assert "\n" not in str(err.value)
