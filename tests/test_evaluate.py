"""edgeq evaluate end to end on the local device: verdicts, report contract, gates."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from edgeq.cli.main import main
from edgeq.inputs.risky import CATEGORIES
from edgeq.inputs.risky.families import FAMILIES

# the digits are rows of 64 features: image-only families are left out of their suite
TABULAR = [c for c in CATEGORIES if c == "clean" or FAMILIES[c].applies("features")]

CONTRACT_METRICS = {"n", "float_accuracy", "quant_accuracy", "accuracy_drop", "agreement", "sqnr_db",
                    "kl_mean", "max_abs_error"}


@pytest.fixture(scope="module")
def fragile_report(fragile_keras, example_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("fragile_eval")
    result = CliRunner().invoke(main, ["evaluate", str(fragile_keras), "--data", str(example_data), "-o",
                                       str(out), "--max-per-category", "200", "--json", str(out / "copy.json"),
                                       "--sampling", "fixed"])  # every row: the recounts below index the suite
    assert result.exit_code == 0, result.output
    return json.loads((out / "report.json").read_text()), out, result.output


def test_fragile_twin_is_catastrophic(fragile_report):
    report, _, output = fragile_report
    assert report["verdict"] == "catastrophic"
    assert report["categories"]["clean"]["accuracy_drop"] == 0.0  # clean validation hides the problem
    assert report["categories"]["brightness+"]["accuracy_drop"] >= 0.10
    assert report["worst_category"] in ("brightness+", "contrast-", "noise")
    assert "verdict: catastrophic" in output


def test_normal_twin_is_robust_through_the_real_command(example_keras, example_data, tmp_path):
    """The README's main job, as a real process: exit 0, report.json per the contract."""
    out = tmp_path / "eval"
    done = subprocess.run([sys.executable, "-m", "edgeq", "evaluate", str(example_keras), "--data",
                           str(example_data), "--device", "local", "-o", str(out), "--json",
                           str(tmp_path / "out.json")], capture_output=True, text=True,
                          env={**os.environ, "EDGEQ_LOCAL_WORKDIR": str(tmp_path / "dev")})
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "out.json").read_text())
    assert report == json.loads((out / "report.json").read_text())
    assert report["verdict"] == "robust"
    assert set(report["overall"]) >= CONTRACT_METRICS
    for entry in report["categories"].values():
        assert set(entry) >= CONTRACT_METRICS
        for key in ("float_accuracy", "quant_accuracy", "agreement"):
            assert 0.0 <= entry[key] <= 1.0
    assert set(report["categories"]) == {*TABULAR, "boundary"}  # boundary: from the float model edgeq converted
    assert {"noise", "outlier", "sentinel", "stuck", "dropout-zero"} <= set(CATEGORIES)
    assert set(report["categories"]["boundary"]["severities"]) == {"1", "2", "3"}
    assert any(note.startswith("risky families blur, jpeg") and note.endswith("fits none of the inputs (features)")
               for note in report["notes"])
    assert report["inputs"]["range_modes"]["x"]["mode"] == "global"  # digits pixels share one range
    assert report["deciding_output"] and report["worst_severity"] in (None, "1", "2", "3")
    assert any("value ranges of 'x'" in note for note in report["notes"])
    assert {"name", "arch", "runtime", "resolver", "threads"} <= set(report["device"])
    assert report["device"]["name"] == "local" and report["device"]["runtime"].startswith("ai_edge_litert ")
    for which in ("float", "quant"):
        assert {"p50", "p90", "p99"} <= set(report["latency_ms"][which])
        assert 0 < report["latency_ms"][which]["p50"] <= report["latency_ms"][which]["p99"]
    assert set(report["timings_s"]) == {"convert", "risky inputs", "device runs", "compare"}
    assert "<svg" in (out / "report.html").read_text()


def test_report_numbers_match_an_independent_recount(fragile_report, fragile_keras):
    """Recompute clean accuracy from the Keras model itself and from the pulled outputs."""
    import keras

    report, out, _ = fragile_report
    with np.load(out / "inputs" / "risky.npz") as suite:
        x, y, category = suite["x"], suite["y"], suite["category"]
    clean = category == "clean"
    keras_pred = keras.models.load_model(fragile_keras).predict(x[clean], verbose=0).argmax(axis=1)
    assert report["categories"]["clean"]["float_accuracy"] == pytest.approx(np.mean(keras_pred == y[clean]))
    quant = np.load(out / "runs" / "quant" / "outputs" / "output_0.npy")
    bright = category == "brightness+"
    assert report["categories"]["brightness+"]["quant_accuracy"] == pytest.approx(
        np.mean(quant[bright].argmax(axis=1) == y[bright]))
    boundary = np.count_nonzero(category == "boundary")
    assert boundary == 3 * 200  # the 200 lowest-margin samples (a tenth of 540 is too few); 200 interpolations × 2
    assert report["overall"]["n"] == len(y) == 200 * (1 + 3 * (len(TABULAR) - 1)) + boundary


def test_gates_exit_1_and_compare_reruns_offline(fragile_report, tmp_path):
    _, out, _ = fragile_report
    runner = CliRunner()
    crossed = runner.invoke(main, ["compare", str(out / "runs" / "float"), str(out / "runs" / "quant"),
                                   "--fail-on", "drop=0.05", "--json", str(tmp_path / "c.json"),
                                   "--html", str(tmp_path / "c.html")])
    assert crossed.exit_code == 1, crossed.output
    assert "FAILED" in crossed.output
    rerun = json.loads((tmp_path / "c.json").read_text())
    original = json.loads((out / "report.json").read_text())
    assert rerun["categories"] == original["categories"] and rerun["verdict"] == original["verdict"]
    assert (tmp_path / "c.html").read_text().count("<svg") >= 1
    lenient = runner.invoke(main, ["compare", str(out / "runs" / "float"), str(out / "runs" / "quant"),
                                   "--fail-on", "drop=0.9"])
    assert lenient.exit_code == 0, lenient.output


def test_evaluate_with_given_tflite_pair_needs_no_conversion(example_tflite, small_inputs, tmp_path):
    float_path, quant_path = example_tflite
    result = CliRunner().invoke(main, ["evaluate", str(float_path), "--quant-model", str(quant_path), "--data",
                                       str(small_inputs), "-o", str(tmp_path), "--fail-on", "verdict=degraded",
                                       "--max-per-category", "10", "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["timings_s"]["convert"] < 1.0
    assert report["gates"] == [{"gate": "verdict", "limit": "degraded", "observed": "robust",
                                "where": None, "failed": False}]


def test_inputs_run_and_devices_commands(example_tflite, example_data, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEQ_LOCAL_WORKDIR", str(tmp_path / "device"))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    risky = tmp_path / "risky.npz"
    built = runner.invoke(main, ["inputs", "risky", "--model", str(example_tflite[0]), "--data", str(example_data),
                                 "-o", str(risky), "--max-per-category", "20", "--seed", "3"])
    assert built.exit_code == 0, built.output
    total = 20 * (1 + 3 * (len(TABULAR) - 1)) + 3 * 20  # boundary (--model): 20 per severity
    assert f"{total} samples in {len(TABULAR) + 1} categories" in built.output
    checked = runner.invoke(main, ["inputs", "check", str(risky), "--model", str(example_tflite[1])])
    assert checked.exit_code == 0 and f"ok, {total} samples" in checked.output
    ran = runner.invoke(main, ["run", "--device", "local", "--model", str(example_tflite[1]), "--inputs", str(risky),
                               "-o", str(tmp_path / "run"), "--json", str(tmp_path / "run.json"), "--repeats", "2"])
    assert ran.exit_code == 0, ran.output
    summary = json.loads((tmp_path / "run.json").read_text())
    assert summary["samples"] == total and summary["latency_ms"]["n"] == 2 * total
    listed = runner.invoke(main, ["devices", "list"])
    assert listed.exit_code == 0 and listed.output.startswith("local")
    probed = runner.invoke(main, ["devices", "check", "local", "--json", str(tmp_path / "probe.json")])
    assert probed.exit_code == 0, probed.output
    assert json.loads((tmp_path / "probe.json").read_text())["local"]["runtime"]["name"] == "ai_edge_litert"


def test_float_tflite_source_keeps_a_clean_stem(example_tflite, tmp_path):
    from edgeq.models.convert import convert_model

    result = convert_model(example_tflite[0], tmp_path)
    assert result.quant_path.name == "digits_mlp.dynamic-range.tflite"
    assert result.float_path.name == "digits_mlp.float.tflite"
