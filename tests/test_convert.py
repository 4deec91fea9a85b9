"""edgeq convert on real Keras, SavedModel and .tflite inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgeq.cli import main
from edgeq.convert import convert_model
from edgeq.errors import ConfigError, ModelError, QuantizedNothing
from edgeq.modelinfo import read_model
from edgeq.runtime_compat import incompatible_ops
from edgeq.transport.base import sha256_file


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
