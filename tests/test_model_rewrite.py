"""edgeq.models.model_rewrite on real float16 and old-schema models converted in the test session."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest

from edgeq.models import model_rewrite
from edgeq.errors import ModelError
from edgeq.models.modelinfo import float16_weights, read_model

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
RESOLVERS = ("AUTO", "BUILTIN_WITHOUT_DEFAULT_DELEGATES", "BUILTIN_REF")


def conv_keras():
    """MediaPipe-like layout: CONV_2D, DEPTHWISE_CONV_2D, a classifier head."""
    import keras

    keras.utils.set_random_seed(3)
    layers = keras.layers
    return keras.Sequential([
        keras.Input((16, 16, 3)), layers.Conv2D(16, 3, activation="relu"), layers.DepthwiseConv2D(3),
        layers.Conv2D(32, 3, activation="relu"), layers.GlobalAveragePooling2D(),
        layers.Dense(5, activation="softmax")])


def tf_convert(model, path, float16=False, **flags):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if float16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    for name, value in flags.items():
        setattr(converter, name, value)
    path.write_bytes(converter.convert())
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory, example_keras):
    import keras

    d = tmp_path_factory.mktemp("rewrite")
    mlp, conv = keras.models.load_model(example_keras), conv_keras()
    return {
        "mlp.float": tf_convert(mlp, d / "mlp.float.tflite"),
        "mlp.float16": tf_convert(mlp, d / "mlp.float16.tflite", float16=True),
        "conv.float": tf_convert(conv, d / "conv.float.tflite"),
        "conv.float16": tf_convert(conv, d / "conv.float16.tflite", float16=True),
        # large-model layout: weights after the flatbuffer (Buffer.offset/size)
        "conv.float16.offset": tf_convert(conv, d / "conv.float16.offset.tflite", float16=True,
                                          _experimental_use_buffer_offset=True),
    }


def run(path, x, resolver="AUTO"):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=str(path),
                              experimental_op_resolver_type=getattr(OpResolverType, resolver))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    results = []
    for row in x:  # one sample at a time: the exported models have batch 1
        interpreter.set_tensor(inp["index"], row[None])
        interpreter.invoke()
        results.append(interpreter.get_tensor(out["index"])[0].copy())
    return np.stack(results)


def random_inputs(path, n=8, seed=0):
    shape = read_model(path).inputs[0].shape[1:]
    return (np.random.default_rng(seed).normal(size=(n, *shape)) * 3).astype(np.float32)


def rewrite(source, tmp_path, name="rewritten.tflite"):
    out = tmp_path / name
    done = model_rewrite.rewrite_float_reference(source, out)
    return out, done


@pytest.mark.parametrize("name", ["mlp.float16", "conv.float16", "conv.float16.offset"])
def test_dequantized_float16_model_is_bit_exact(models, tmp_path, name):
    source = models[name]
    out, done = rewrite(source, tmp_path)
    before, after = read_model(source), read_model(out)
    assert float16_weights(before) == len(before.weights) > 0
    dequantize_ops = sum(o.count for o in before.ops if o.name == "DEQUANTIZE")
    assert done["dequantized"] == dequantize_ops  # kernels and biases
    assert {o.name for o in after.ops}.isdisjoint({"DEQUANTIZE"})
    assert {w.dtype for w in after.weights} == {"float32"}
    assert [w.shape for w in after.weights] == [w.shape for w in before.weights]
    assert after.inputs == before.inputs and after.outputs == before.outputs
    x = random_inputs(source)
    for resolver in RESOLVERS:
        assert np.array_equal(run(source, x, resolver), run(out, x, resolver)), resolver


def test_values_are_the_float16_values(models, tmp_path):
    """The folded constant holds float32(fp16 value), element for element."""
    from ai_edge_litert import schema_py_generated as schema

    out, _ = rewrite(models["conv.float16"], tmp_path)
    src, new = model_rewrite.load(models["conv.float16"]), model_rewrite.load(out)

    def constants(model, dtype):
        sg = model.subgraphs[0]
        found = {}
        for t in sg.tensors:
            data = model.buffers[t.buffer].data
            if data is not None and len(data) and t.type == dtype:
                found[tuple(t.shape)] = np.frombuffer(bytes(data), {1: "<f2", 0: "<f4"}[dtype])
        return found
    half, full = constants(src, schema.TensorType.FLOAT16), constants(new, schema.TensorType.FLOAT32)
    assert half and set(half) <= set(full)
    for shape, values in half.items():
        assert full[shape].dtype == np.float32
        assert np.array_equal(full[shape], values.astype(np.float32))


def test_unused_float16_data_does_not_bloat_the_file(models, tmp_path):
    for kind in ("mlp", "conv"):
        out, done = rewrite(models[f"{kind}.float16"], tmp_path, f"{kind}.tflite")
        assert done["removed"]["tensors"] == done["dequantized"]  # the fp16 constants
        assert done["removed"]["op_codes"] == 1  # DEQUANTIZE
        float32_size = models[f"{kind}.float"].stat().st_size
        # the float32 conversion of the same model is the yardstick: no fp16 copies left
        assert out.stat().st_size <= float32_size * 1.02 + 512, (out.stat().st_size, float32_size)


def test_buffers_are_16_byte_aligned(models, tmp_path):
    from ai_edge_litert import schema_py_generated as schema

    out, _ = rewrite(models["conv.float16"], tmp_path)
    data = out.read_bytes()
    model = schema.Model.GetRootAs(data, 0)
    starts = []
    for b in range(model.BuffersLength()):
        buffer = model.Buffers(b)
        if buffer.DataLength():
            starts.append(buffer._tab.Vector(buffer._tab.Offset(4)))
    assert starts and all(s % 16 == 0 for s in starts)


def test_offset_layout_is_inlined(models, tmp_path):
    from ai_edge_litert import schema_py_generated as schema

    source = models["conv.float16.offset"]
    stored = schema.ModelT.InitFromPackedBuf(source.read_bytes(), 0)
    assert sum(b.offset > 1 for b in stored.buffers) >= 4  # the weights really live after the flatbuffer
    raw = model_rewrite.load(source)
    assert all(b.offset == 0 and b.size == 0 for b in raw.buffers)
    out, _ = rewrite(source, tmp_path)
    assert out.stat().st_size < source.stat().st_size * 2.2
    assert read_model(out).weights


def test_too_large_for_one_flatbuffer_is_refused(models, tmp_path, monkeypatch):
    monkeypatch.setattr(model_rewrite, "FLATBUFFER_LIMIT", 1000)
    with pytest.raises(ModelError, match="do not fit one flatbuffer .2 GiB limit."):
        rewrite(models["mlp.float16"], tmp_path)
    assert not (tmp_path / "rewritten.tflite").exists()


def test_old_schema_fixture_and_normalisation(models, tmp_path):
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils

    model = model_rewrite.load(models["conv.float"])
    real = [oc.builtinCode for oc in model.operatorCodes]
    assert model_rewrite.to_old_schema(model) == len(real)
    old = tmp_path / "old.tflite"
    model_rewrite.save(model, old)
    raw = model_rewrite.load(old)
    assert [oc.builtinCode for oc in raw.operatorCodes] == [0] * len(real)
    assert [oc.deprecatedBuiltinCode for oc in raw.operatorCodes] == real
    # what ai-edge-quantizer sees: every op is ADD
    assert {tfl_flatbuffer_utils.TFL_OP_CODE_TO_NAME[oc.builtinCode] for oc in raw.operatorCodes} == {"ADD"}
    info = read_model(old)
    assert info.old_schema_opcodes and not read_model(models["conv.float"]).old_schema_opcodes
    assert {o.name for o in info.ops} == {o.name for o in read_model(models["conv.float"]).ops}

    fixed, done = rewrite(old, tmp_path, "fixed.tflite")
    assert (done["normalised"], done["dequantized"]) == (len(real), 0)
    assert [oc.builtinCode for oc in model_rewrite.load(fixed).operatorCodes] == real
    assert not read_model(fixed).old_schema_opcodes
    x = random_inputs(old)
    reference = run(models["conv.float"], x)
    for path in (old, fixed):  # the runtime reads both right
        assert np.array_equal(run(path, x), reference)


def test_to_old_schema_refuses_extended_codes(models):
    model = model_rewrite.load(models["mlp.float"])
    model.operatorCodes[0].builtinCode = 150  # an extended code (> 127) has no old form
    with pytest.raises(ValueError, match="does not fit the old schema"):
        model_rewrite.to_old_schema(model)


def test_float32_model_is_left_alone(models, tmp_path):
    out, done = rewrite(models["mlp.float"], tmp_path)
    assert done == {"dequantized": 0, "normalised": 0, "removed": {}}
    assert not out.exists()


def test_signature_survives_pruning(models, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    out, _ = rewrite(models["mlp.float16"], tmp_path)
    x = random_inputs(out, n=1)
    [key] = Interpreter(model_path=str(out)).get_signature_list()
    runners = [Interpreter(model_path=str(p)).get_signature_runner(key) for p in (models["mlp.float16"], out)]
    [name] = runners[0].get_input_details()
    a, b = (r(**{name: x}) for r in runners)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_not_a_model(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(struct.pack("<I", 8) + b"NOPE" + bytes(16))
    with pytest.raises(ModelError, match="no TFL3 identifier"):
        model_rewrite.load(bad)


def test_metadata_buffers_survive_like_in_mediapipe_files(models, tmp_path):
    """MediaPipe files list metadata buffers; read back they are a numpy array, not a list."""
    from ai_edge_litert import schema_py_generated as schema

    model = model_rewrite.load(models["mlp.float16"])
    note = schema.BufferT()
    note.data = np.frombuffer(b"edgeq metadata", dtype=np.uint8)
    model.buffers.append(note)
    model.metadataBuffer = [len(model.buffers) - 1]
    with_metadata = tmp_path / "with_metadata.tflite"
    model_rewrite.save(model, with_metadata)
    assert isinstance(model_rewrite.load(with_metadata).metadataBuffer, np.ndarray)
    out, done = rewrite(with_metadata, tmp_path)
    assert done["dequantized"] > 0
    kept = model_rewrite.load(out)
    (index,) = [int(i) for i in kept.metadataBuffer]
    assert bytes(kept.buffers[index].data) == b"edgeq metadata"
    x = random_inputs(out)
    assert np.array_equal(run(out, x), run(models["mlp.float16"], x))
