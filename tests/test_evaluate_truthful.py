"""The verdict on models people have: tabular data with a sentinel code, old-schema files.

A tabular model that loses ~45 points when one auxiliary feature reads its "missing"
code must come out catastrophic from its validation data alone (the suite finds the
code in the data), while its twin trained without codes is robust. An old-schema
.tflite (op codes in deprecated_builtin_code) is evaluated end to end.
"""

from __future__ import annotations

import json

from click.testing import CliRunner

from edgeq.cli.main import main


def evaluate(model, data, out, *extra):
    result = CliRunner().invoke(main, ["evaluate", str(model), "--data", str(data), "-o", str(out),
                                       "--max-per-category", "300", *extra])
    assert result.exit_code == 0, result.output
    return json.loads((out / "report.json").read_text()), result.output


def test_sentinel_coded_tabular_model_is_catastrophic_and_its_twin_robust(tabular_keras, tmp_path):
    report, output = evaluate(*tabular_keras["sentinel"], tmp_path / "sentinel")
    assert report["verdict"] == "catastrophic"
    assert report["inputs"]["range_modes"]["x"]["mode"] == "channel"  # tabular: per-feature ranges, said so
    assert "per feature" in output
    sentinel = report["categories"]["sentinel"]["severities"]["1"]
    assert sentinel["float_accuracy"] >= 0.8 and sentinel["accuracy_drop"] >= 0.10
    assert report["outputs"][report["deciding_output"]]["worst_value"] >= 0.10
    # on clean data only the ~2 % of rows that hold the code can collapse: the average hides it
    assert report["categories"]["clean"]["accuracy_drop"] < 0.05 < sentinel["accuracy_drop"]
    twin, _ = evaluate(*tabular_keras["twin"], tmp_path / "twin")
    assert twin["verdict"] == "robust", twin["worst_category"]
    worst = twin["outputs"][twin["deciding_output"]]
    assert worst["worst_value"] < 0.02


def test_old_schema_tflite_is_evaluated_end_to_end(example_tflite, example_data, tmp_path):
    from edgeq.models import model_rewrite

    model = model_rewrite.load(example_tflite[0])
    model_rewrite.to_old_schema(model)
    old = tmp_path / "old_schema.tflite"
    model_rewrite.save(model, old)
    report, output = evaluate(old, example_data, tmp_path / "out", "--max-per-category", "60")
    assert report["model"]["op_codes"] == "normalised from deprecated_builtin_code"
    assert report["model"]["weights_quantized"] == "3 of 3"
    assert report["verdict"] == "robust"
    assert "op codes normalised" in output
