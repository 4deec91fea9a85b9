"""``edgeq fix``: the smallest float-kept set, written and verified; nothing to fix on a robust
model; an unreachable target is a failed gate that reports the best set found."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgeq.cli.main import main


@pytest.fixture(scope="session")
def layered(tmp_path_factory, example_data):
    from fragile_layers import layered_files

    return layered_files(tmp_path_factory, example_data)


def run(args, code=0):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code, (result.output, result.exception)
    return result


def test_fix_keeps_only_the_culprit_float_and_verifies_it(layered, tmp_path):
    model, data = layered
    result = run(["fix", str(model), "--data", str(data), "-o", str(tmp_path), "--target-drop", "0.02"])
    report = json.loads((tmp_path / "layered.fix.json").read_text())
    assert report["status"] == "fixed"
    assert [r["layer"] for r in report["recipe"]] == ["culprit"]
    assert all(c["fixed"] <= 0.02 + 1e-9 for c in report["conditions"].values())
    assert max(c["rebuilt"] for c in report["conditions"].values()) > 0.3
    models = report["models"]
    assert (tmp_path / "layered.fixed.tflite").stat().st_size == models["fixed"]["bytes"]
    ratio = models["float"]["bytes"] / models["fixed"]["bytes"]
    assert ratio > 2.0, ratio
    assert models["quantized"]["bytes"] < models["fixed"]["bytes"]
    assert all(m["host_latency_us"] > 0 for m in models.values())
    # without --device everything is measured on the host, said the same way as before
    assert all(m["latency_us"] == m["host_latency_us"] for m in models.values())
    assert report["measured_on"].startswith("host:") and "device" not in report
    # whole-model numbers under the target's kernels (AUTO, as evaluate), the per-op analysis on the built-in ones
    assert report["resolver"] == "AUTO" and report["analysis_resolver"] == "BUILTIN_WITHOUT_DEFAULT_DELEGATES"
    assert "resolver AUTO" in report["measured_on"] and "resolver AUTO" in " ".join(result.stdout.split())
    # a fix still holds int8 weights (the float model holds none)
    assert models["fixed"]["int8_weights"] > 0 and models["float"]["int8_weights"] == 0
    assert report["latency_basis"].startswith("host:")
    assert "search order" in result.stderr and "fixed:" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines() if not line.startswith("/")) <= 80


def test_the_fixed_model_holds_on_the_suite_it_was_not_searched_on(layered, tmp_path):
    """The fixed model, run again by hand on a suite built with another seed."""
    from edgeq.inputs.risky import build_risky_suite
    from edgeq.repair.measure import Suite, condition_drops, predict, top1

    model, data = layered
    run(["fix", str(model), "--data", str(data), "-o", str(tmp_path)])
    report = json.loads((tmp_path / "layered.fix.json").read_text())
    with np.load(data) as d:
        built = build_risky_suite({"x": d["x"]}, d["y"], seed=7, max_per_category=200,
                                  categories=["clean", "brightness+", "contrast-"])
    condition = np.array([f"{c}/{s}" if s else c for c, s in zip(built["category"], built["severity"])])
    suite = Suite([built["x"]], condition, list(dict.fromkeys(condition)), built["y"])
    ref = top1(predict(report["models"]["float"]["path"], suite))
    drops = condition_drops(suite, ref, top1(predict(tmp_path / "layered.fixed.tflite", suite)))
    assert max(d["drop"] for d in drops.values()) <= 0.05, drops


def test_a_robust_model_has_nothing_to_fix(example_keras, example_data, tmp_path):
    result = run(["fix", str(example_keras), "--data", str(example_data), "-o", str(tmp_path)])
    assert result.stdout.startswith("nothing to fix")
    assert not list(tmp_path.glob("*.fixed.tflite"))


def test_an_unreachable_target_fails_the_gate_and_reports_the_best(layered, tmp_path):
    model, data = layered
    result = run(["fix", str(model), "--data", str(data), "-o", str(tmp_path), "--target-drop", "0.001",
                  "--max-float", "1", "--json", str(tmp_path / "out.json")], code=1)
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["status"] == "unreachable" and report["best"]["kept_float"]
    assert "cannot bring every field condition under 0.001 with at most 1 ops float" in report["reason"]
    best = report["best"]  # the best partial variant: what it keeps float, its worst condition, its size
    assert best["worst"] and best["int8_weights"] > 0 and 0 < best["size_vs_float"] < 1
    kept = ", ".join(f"op {o['op_index']} {o['op_type']} {o['layer']}" for o in best["ops"])
    assert f"best partial variant: keeps {kept} float, worst field condition {best['worst']}" in \
        " ".join(result.stdout.split())
    assert "gate failed" in result.stderr and not list(tmp_path.glob("*.fixed.tflite"))


@pytest.mark.parametrize("target", ["0", "1", "2"])
def test_a_target_outside_0_1_is_bad_input(example_keras, example_data, target):
    result = run(["fix", str(example_keras), "--data", str(example_data), "--target-drop", target], code=2)
    assert result.stderr.startswith("edgeq: error: ") and len(result.stderr.strip().splitlines()) == 1


def test_without_outdir_the_fix_json_names_no_deleted_file(layered, tmp_path, monkeypatch):
    """No -o: the fixed model and its JSON land in the current folder; the work folder is deleted, so
    the JSON names none of its files (null) and says they were not kept."""
    from pathlib import Path

    model, data = layered
    monkeypatch.chdir(tmp_path)
    run(["fix", str(model), "--data", str(data), "--target-drop", "0.02"])
    report = json.loads((tmp_path / "layered.fix.json").read_text())
    assert report["status"] == "fixed" and Path(report["fixed"]).is_file()
    assert report["models"]["float"]["path"] is None and report["models"]["quantized"]["path"] is None
    assert report["models"]["fixed"]["path"] == report["fixed"]
    assert "not kept" in report["work_files"]

    def paths(value):
        if isinstance(value, dict):
            return [p for v in value.values() for p in paths(v)]
        if isinstance(value, list):
            return [p for v in value for p in paths(v)]
        return [value] if isinstance(value, str) and value.startswith("/") and value.endswith(".tflite") else []

    assert all(Path(p).exists() for p in paths(report)), paths(report)
