"""``edgeq localize`` on real models and the real interpreter: the known culprit comes first,
a robust model has nothing to localize, a CNN's ranking is the same for the same seed."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgeq.cli.main import main


def run(args, code=0):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code, (result.output, result.exception)
    return result


@pytest.fixture(scope="session")
def layered(tmp_path_factory, example_data):
    """(keras, data): the four-layer model whose ``culprit`` layer breaks under shifted inputs."""
    from fragile_layers import layered_files

    return layered_files(tmp_path_factory, example_data)


@pytest.fixture(scope="session")
def small_cnn(tmp_path_factory, example_data):
    from fragile_layers import make_small_cnn, scaled_digits

    out = tmp_path_factory.mktemp("cnn")
    with np.load(example_data) as d:
        x, y = d["x"], d["y"]
    return make_small_cnn(x, y, out / "cnn.keras"), scaled_digits(x, y, out / "img.npz", image=True)


@pytest.fixture(scope="session")
def layered_localized(layered, tmp_path_factory):
    model, data = layered
    out = tmp_path_factory.mktemp("layered_localize")
    result = run(["localize", str(model), "--data", str(data), "--json", str(out / "l.json"), "-o", str(out)])
    return result, json.loads((out / "l.json").read_text())


def test_the_culprit_is_ranked_first_and_confirmed(layered_localized):
    result, report = layered_localized
    assert report["status"] == "localized"
    first = report["ranking"][0]
    assert first["layer"] == "culprit" and first["op_type"] == "FULLY_CONNECTED"
    assert first["recovered_share"] > 0.9
    assert first["stretch"] > 100 * max(e["stretch"] for e in report["ranking"][1:])
    assert first["op_index"] in report["confirmed"]
    assert [e["rank"] for e in report["ranking"]] == list(range(1, len(report["ranking"]) + 1))
    # the automatic choices are printed and stored
    assert len(report["conditions"]) == 3 and all(c in result.stderr for c in report["conditions"])
    assert "confirmed op" in result.stderr
    assert report["graph"] and any(op["hybrid"] for op in report["graph"])
    # whole-model drops use the target's kernels (evaluate's default); the per-op analysis needs the built-in ones
    assert report["resolver"] == "AUTO" and report["analysis_resolver"] == "BUILTIN_WITHOUT_DEFAULT_DELEGATES"
    assert report["measured_on"].startswith("host:")
    assert "device" not in report


def test_the_table_fits_80_columns(layered_localized):
    result, report = layered_localized
    assert "culprit" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines() if not line.startswith("/")) <= 80


def test_json_on_stdout_is_the_document_alone(layered):
    model, data = layered
    result = run(["localize", str(model), "--data", str(data), "--json", "-", "--confirm", "1"])
    report = json.loads(result.stdout)
    assert report["ranking"][0]["layer"] == "culprit"


def test_a_robust_model_has_nothing_to_localize(example_keras, example_data):
    result = run(["localize", str(example_keras), "--data", str(example_data), "--json", "-"])
    report = json.loads(result.stdout)
    assert report["status"] == "nothing-to-localize"
    assert "nothing to localize" in result.stderr


def test_a_model_without_quantized_ops_has_nothing_to_localize(tmp_path, example_data):
    import keras

    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(8), keras.layers.Dense(10)])
    model.save(tmp_path / "tiny.keras")
    result = run(["localize", str(tmp_path / "tiny.keras"), "--data", str(example_data)])
    assert result.stdout.startswith("nothing to localize")


def test_a_cnn_ranking_is_the_same_for_one_seed(small_cnn, tmp_path):
    model, data = small_cnn
    reports = []
    for k in range(2):
        path = tmp_path / f"run{k}.json"
        run(["localize", str(model), "--data", str(data), "--seed", "3", "--target-drop", "0.001",
             "--json", str(path)])
        reports.append(json.loads(path.read_text()))
    assert reports[0]["status"] == "localized", reports[0].get("reason")
    assert {e["op_type"] for e in reports[0]["ranking"]} >= {"CONV_2D", "FULLY_CONNECTED"}
    keys = ("op_index", "flip_share", "recovered_share", "sqnr_db", "stretch")
    assert [[e[k] for k in keys] for e in reports[0]["ranking"]] == [[e[k] for k in keys] for e in
                                                                      reports[1]["ranking"]]
    assert reports[0]["conditions"] == reports[1]["conditions"]


@pytest.mark.parametrize("target", ["0", "1", "-0.1", "1.5", "nan"])
def test_a_target_outside_0_1_is_bad_input(example_keras, example_data, target):
    result = run(["localize", str(example_keras), "--data", str(example_data), "--target-drop", target], code=2)
    assert result.stderr.startswith("edgeq: error: ") and len(result.stderr.strip().splitlines()) == 1


def test_no_condition_set_is_bad_input(example_keras):
    result = run(["localize", str(example_keras)], code=2)
    assert "--data" in result.stderr and len(result.stderr.strip().splitlines()) == 1
