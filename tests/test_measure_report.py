"""Sensors all the way to the report: evaluate with power sampling on a sysfs-shaped tree."""

from __future__ import annotations

import json

from click.testing import CliRunner
from fake_sysfs import FakeSysfs, FakeVcgencmd

from edgeq.cli.main import main


def test_evaluate_reports_energy_temperature_and_throttling(example_tflite, small_inputs, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEQ_LOCAL_WORKDIR", str(tmp_path / "device"))
    sysfs = FakeSysfs(tmp_path / "sys")
    sysfs.thermal_zone(0, "cpu-thermal", 83.0)
    sysfs.hwmon(0, "ina226", power1_input=4_000_000)
    sysfs.cpufreq(0, "ondemand", 1_500_000, 600_000, 1_800_000)
    vcgencmd = FakeVcgencmd(tmp_path / "bin")
    vcgencmd.throttled(0x50005)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [
        "evaluate", str(example_tflite[0]), "--quant-model", str(example_tflite[1]), "--data", str(small_inputs),
        "-o", str(out), "--max-per-category", "5", "--power", "hwmon", "--sysfs-root", str(tmp_path / "sys"),
        "--vcgencmd", str(vcgencmd.path), "--min-duration", "0.6", "--idle-s", "0.3", "--sample-hz", "50",
        "--no-history"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    for which in ("float", "quant"):
        energy = report["energy"][which]
        assert energy["mean_power_w"] == 4.0 and energy["idle_power_w"] == 4.0
        assert abs(energy["energy_mj"]) < 1e-9  # busy == idle: no energy above the baseline
        thermal = report["thermal"][which]
        assert thermal["max_c"] == 83.0 and thermal["throttled_ever"]
        assert "under_voltage" in " ".join(thermal["throttled_flags"])
    assert report["device"]["cpu_governors"] == ["ondemand"]
    assert report["device"]["per_op_profile"] is False
    page = (out / "report.html").read_text()
    assert "Energy per inference" in page and "latency and temperature over time" in page
    assert "the SoC throttled" in page
