"""Comparing two saved runs: they must differ only in the model, or the report says what else."""

from __future__ import annotations

from edgeq.analysis.compare import compare_runs
from edgeq.devices.run import RunSpec, run_on_device


def test_runs_with_other_threads_or_resolver_are_flagged(local, example_tflite, small_inputs, tmp_path):
    specs = [RunSpec(model=example_tflite[0], inputs=small_inputs, label="float", warmup=0),
             RunSpec(model=example_tflite[1], inputs=small_inputs, label="quant", warmup=0, threads=2,
                     resolver="BUILTIN")]
    ref, cand = run_on_device(local, specs, [tmp_path / "f", tmp_path / "q"])
    warnings = compare_runs(ref, cand)["warnings"]
    assert any("differ in threads: 1 vs 2" in w for w in warnings)
    assert any("differ in resolver: AUTO vs BUILTIN" in w for w in warnings)
    same = compare_runs(ref, ref)["warnings"]
    assert not any("the runs differ" in w for w in same)
