"""edgeq convert on real Keras, SavedModel and .tflite inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgeq.cli.main import main
from edgeq.models.convert import convert_model
from edgeq.errors import ConfigError, ModelError, QuantizedNothing
from edgeq.models.modelinfo import read_model
from edgeq.models.runtime_compat import incompatible_ops
from edgeq.devices.transport.base import sha256_file


def kernel_dtypes(path):
    return sorted(w.dtype for w in read_model(path).weights)


def test_keras_dynamic_range_and_card(example_keras, tmp_path):
    result = convert_model(example_keras, tmp_path)
    assert result.float_path.name == "digits_mlp.float.tflite"
    assert result.quant_path.name == "digits_mlp.dynamic-range.tflite"
    # 64x128 and 128x64 kernels are quantized; the 64x10 head (640 < 1024 elements) stays float
    assert kernel_dtypes(result.quant_path) == ["float32", "int8", "int8"]
    card = json.loads(result.card_path.read_text())
    assert card["weights"]["quantized"] == 2 and card["weights"]["total"] == 3
    assert card["weights"]["under_threshold"] == 1
    assert card["quantized"]["sha256"] == sha256_file(result.quant_path)
    assert card["float"]["size"] == result.float_path.stat().st_size
    assert {op["name"] for op in card["quantized"]["ops"]} >= {"FULLY_CONNECTED"}
    assert all("version" in op for op in card["quantized"]["ops"])
    assert card["size_ratio"] > 2.5
    assert result.summary.startswith("2 of 3 weight tensors quantized")


def test_float16_and_int8_policies(example_keras, example_data, tmp_path):
    half = convert_model(example_keras, tmp_path / "f16", policy="float16")
    assert kernel_dtypes(half.quant_path) == ["float16", "float16", "float16"]
    with pytest.raises(ConfigError, match="needs --calibration"):
        convert_model(example_keras, tmp_path / "i8", policy="int8")
    full = convert_model(example_keras, tmp_path / "i8", policy="int8", calibration=example_data)
    assert kernel_dtypes(full.quant_path) == ["int8", "int8", "int8"]
    inputs = read_model(full.quant_path).inputs
    assert inputs[0].dtype == "float32"  # float I/O: the same input sets work for every policy


def test_float_tflite_goes_through_ai_edge_quantizer(example_tflite, tmp_path):
    float_path, _ = example_tflite
    result = convert_model(float_path, tmp_path)
    assert result.card["tools"].get("ai-edge-quantizer")
    assert "int8" in kernel_dtypes(result.quant_path)
    assert result.card["weights"]["quantized"] >= 2
    with pytest.raises(ModelError, match="is not a float model"):
        convert_model(result.quant_path, tmp_path / "again")


def test_savedmodel_folder(example_keras, tmp_path):
    import keras

    folder = tmp_path / "saved"
    keras.models.load_model(example_keras).export(str(folder), verbose=False)
    result = convert_model(folder, tmp_path / "out")
    assert result.quant_path.name == "saved.dynamic-range.tflite"
    assert result.card["weights"]["quantized"] == 2


@pytest.fixture(scope="module")
def tiny_keras(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    path = tmp_path_factory.mktemp("tiny") / "tiny.keras"
    model.save(path)
    return path


def test_quantizing_nothing_is_an_error_that_says_why(tiny_keras, tmp_path):
    with pytest.raises(QuantizedNothing, match="fewer than 1024 elements"):
        convert_model(tiny_keras, tmp_path)
    assert (tmp_path / "tiny.dynamic-range.tflite").exists()  # nothing is thrown away


def test_cli_convert_reports_and_exits_2_for_nothing_quantized(tiny_keras, example_keras, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(main, ["convert", str(example_keras), "-o", str(tmp_path / "ok"),
                              "--json", str(tmp_path / "card.json")])
    assert ok.exit_code == 0, ok.output
    assert "2 of 3 weight tensors quantized" in ok.output and "× smaller" in ok.output
    assert json.loads((tmp_path / "card.json").read_text())["policy"] == "dynamic-range"
    bad = runner.invoke(main, ["convert", str(tiny_keras), "-o", str(tmp_path / "bad")])
    assert bad.exit_code == 2
    assert "quantized none of 2 weight tensors" in bad.output and "Traceback" not in bad.output


def test_target_runtime_tflite_runtime_214(example_keras, tmp_path):
    default = convert_model(example_keras, tmp_path / "latest")
    assert incompatible_ops(read_model(default.quant_path), "tflite-runtime-2.14")
    old = convert_model(example_keras, tmp_path / "old", target_runtime="tflite-runtime-2.14")
    info = read_model(old.quant_path)
    assert incompatible_ops(info, "tflite-runtime-2.14") == []
    assert old.card["target_runtime"] == "tflite-runtime-2.14"
    assert "int8" in kernel_dtypes(old.quant_path)


def test_unknown_and_broken_model_files(tmp_path, example_tflite):
    text = tmp_path / "model.onnx"
    text.write_text("not a model")
    with pytest.raises(ModelError, match="unknown model type .onnx"):
        convert_model(text, tmp_path / "o")
    truncated = tmp_path / "cut.tflite"
    data = example_tflite[0].read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelError, match="cut.tflite"):
        convert_model(truncated, tmp_path / "o")
    with pytest.raises(ModelError, match="file not found"):
        convert_model(tmp_path / "missing.keras", tmp_path / "o")
    broken_keras = tmp_path / "broken.keras"
    broken_keras.write_bytes(np.arange(100, dtype=np.uint8).tobytes())
    with pytest.raises(ModelError, match="cannot load Keras model"):
        convert_model(broken_keras, tmp_path / "o")


# --- sources people have: float16-weight and old-schema .tflite files, and true reasons ---

def run_rows(path, x):
    from test_model_rewrite import run

    return run(path, x)


@pytest.fixture(scope="module")
def float16_sources(example_keras, tmp_path_factory):
    """float16-weight .tflite files as MediaPipe/BirdNET ship them (fp16 const -> DEQUANTIZE ->
    FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D), made by edgeq's own float16 policy."""
    from test_model_rewrite import conv_keras

    d = tmp_path_factory.mktemp("float16_sources")
    conv = d / "conv.keras"
    conv_keras().save(conv)
    return {"mlp": convert_model(example_keras, d / "mlp", policy="float16").quant_path,
            "conv": convert_model(conv, d / "conv", policy="float16").quant_path}


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_float16_source_is_dequantized_then_quantized(float16_sources, tmp_path, kind):
    from test_model_rewrite import random_inputs

    source = float16_sources[kind]
    assert set(kernel_dtypes(source)) == {"float16"}
    result = convert_model(source, tmp_path)
    card = json.loads(result.card_path.read_text())
    assert card["source"]["kind"] == "tflite" and card["source"]["weights"] == "float16"
    assert card["source"]["float_reference"] == "dequantized from float16"
    assert "op_codes" not in card["source"]
    reference = read_model(result.float_path)
    assert {w.dtype for w in reference.weights} == {"float32"}
    assert "DEQUANTIZE" not in {op.name for op in reference.ops}
    x = random_inputs(source, n=16)
    assert np.array_equal(run_rows(source, x), run_rows(result.float_path, x))  # bit-exact
    assert set(kernel_dtypes(result.quant_path)) == {"int8"}
    assert card["weights"]["quantized"] == card["weights"]["total"] == len(reference.weights)
    assert card["weights"]["kept_float"] == []
    quantized = run_rows(result.quant_path, x)
    assert np.allclose(quantized, run_rows(result.float_path, x), atol=0.1 * np.abs(quantized).max())
    assert result.summary.endswith("; float reference dequantized from float16")


def test_cli_convert_and_evaluate_take_a_float16_tflite(float16_sources, small_inputs, tmp_path):
    runner = CliRunner()
    done = runner.invoke(main, ["convert", str(float16_sources["mlp"]), "-o", str(tmp_path / "c")])
    assert done.exit_code == 0, done.output
    assert "3 of 3 weight tensors quantized" in done.output and "dequantized from float16" in done.output
    evaluated = runner.invoke(main, ["evaluate", str(float16_sources["mlp"]), "--data", str(small_inputs), "-o",
                                     str(tmp_path / "e"), "--max-per-category", "10", "--range-mode", "global", "-q"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads((tmp_path / "e" / "report.json").read_text())["verdict"] == "robust"


def test_old_schema_source_is_normalised_then_quantized(example_tflite, example_data, tmp_path):
    from edgeq.models import model_rewrite
    from edgeq.models.converters import kept_float_reasons, quantizer_convert

    model = model_rewrite.load(example_tflite[0])
    model_rewrite.to_old_schema(model)
    old = tmp_path / "old.tflite"
    model_rewrite.save(model, old)
    assert read_model(old).old_schema_opcodes
    # (a) as it is, ai-edge-quantizer reads every op as ADD and quantizes nothing; the reason says so
    as_is = tmp_path / "as_is.tflite"
    as_is.write_bytes(quantizer_convert(old, "dynamic-range", None, []))
    assert set(kernel_dtypes(as_is)) == {"float32"}
    reasons = kept_float_reasons(read_model(old), read_model(as_is), "ai-edge-quantizer", "dynamic-range")
    assert len(reasons) == 3 and {r["cause"] for r in reasons} == {"old-schema-opcodes"}
    assert "reads FULLY_CONNECTED as ADD" in reasons[0]["reason"]
    # (b) edgeq convert normalises the op codes first, then every kernel is quantized
    result = convert_model(old, tmp_path / "out")
    assert result.card["source"]["op_codes"] == "normalised from deprecated_builtin_code"
    assert result.card["source"]["weights"] == "float32"
    assert not read_model(result.float_path).old_schema_opcodes
    assert kernel_dtypes(result.quant_path) == ["int8", "int8", "int8"]
    assert "op codes normalised from deprecated_builtin_code" in result.summary
    # (c) the original, the old-schema file and the normalised reference compute the same numbers
    with np.load(example_data) as data:
        x = data["x"][:32].astype(np.float32)
    expected = run_rows(example_tflite[0], x)
    assert np.array_equal(run_rows(old, x), expected)
    assert np.array_equal(run_rows(result.float_path, x), expected)


def test_quantized_source_is_refused(example_tflite, tmp_path):
    with pytest.raises(ModelError, match="is not a float model: 2 of 3 weight tensors are already int8"):
        convert_model(example_tflite[1], tmp_path)
    assert not list(tmp_path.glob("*.tflite"))


def test_partly_quantized_keras_model_says_which_and_why(example_keras, tmp_path):
    result = convert_model(example_keras, tmp_path)
    [kept] = result.card["weights"]["kept_float"]
    assert (kept["elements"], kept["op"], kept["cause"]) == (640, "FULLY_CONNECTED", "small")
    assert "fewer than 1024 elements" in kept["reason"]
    assert result.summary.endswith("; kept float: 1 under 1024 elements")


def test_tiny_model_reason_is_the_threshold_only(tiny_keras, tmp_path):
    with pytest.raises(QuantizedNothing) as err:
        convert_model(tiny_keras, tmp_path)
    assert "fewer than 1024 elements" in str(err.value) and "(2 of 2)" in str(err.value)
    assert "kernel" not in str(err.value)


@pytest.fixture(scope="module")
def embedding_tflites(tmp_path_factory):
    """Float .tflite files whose big weight is an embedding table read by GATHER."""
    import keras

    d = tmp_path_factory.mktemp("embedding")
    keras.utils.set_random_seed(2)
    out = {}
    for name, head in (("table_only", []), ("with_head", [keras.layers.Dense(4, activation="softmax")])):
        model = keras.Sequential([keras.Input((6,), dtype="int32"), keras.layers.Embedding(300, 16),
                                  keras.layers.GlobalAveragePooling1D(), *head])
        model.save(d / f"{name}.keras")
        out[name] = convert_model(d / f"{name}.keras", d / name, policy="float").float_path
    return out


def test_weights_feeding_an_op_the_quantizer_skips(embedding_tflites, tmp_path):
    with pytest.raises(QuantizedNothing) as err:
        convert_model(embedding_tflites["table_only"], tmp_path / "a")
    assert "ai-edge-quantizer's dynamic-range recipe does not handle GATHER (1 of 1)" in str(err.value)
    result = convert_model(embedding_tflites["with_head"], tmp_path / "b")
    assert result.card["weights"]["quantized"] == 1  # the Dense head (64 elements: the quantizer has no threshold)
    [kept] = result.card["weights"]["kept_float"]
    assert (kept["op"], kept["elements"], kept["cause"]) == ("GATHER", 4800, "op-not-handled")
    assert result.summary.endswith("; kept float: 1 op not handled by the quantizer")


def test_int8_policy_on_a_tflite_source_calibrates_through_the_signature(float16_sources, example_data, tmp_path):
    """Calibration arrays ("x") are matched to the signature's input names ("pixels")."""
    result = convert_model(float16_sources["mlp"], tmp_path, policy="int8", calibration=example_data)
    assert kernel_dtypes(result.quant_path) == ["int8", "int8", "int8"]
    assert result.card["source"]["float_reference"] == "dequantized from float16"
