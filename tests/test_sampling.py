"""Latency method, thermal and power sampling: the real agent against a sysfs-shaped tree.

Every run here is the real agent (local transport, real .tflite) reading a temporary
directory laid out like /sys and a stand-in vcgencmd (tests/fake_sysfs.py).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fake_sysfs import PMIC_SAMPLE, PMIC_SAMPLE_W, FakeSysfs, FakeVcgencmd

from edgeq.errors import AgentError, ConfigError
from edgeq.analysis.power import (decode_throttled, energy_per_inference, latency_temperature_series, perf_to_utc_s,
                         thermal_summary)
from edgeq.results import RunResult
from edgeq.devices.run import RunSpec, run_on_device

THROTTLED = 0x50005  # under-voltage + throttled now, both have occurred
THROTTLED_NAMES = ["under_voltage", "throttled", "under_voltage_occurred", "throttled_occurred"]


@pytest.fixture
def tree(tmp_path) -> FakeSysfs:
    """A Pi-like board with an INA226 on I2C, a battery, and two CPUs with cpufreq."""
    fs = FakeSysfs(tmp_path / "sys")
    fs.thermal_zone(0, "cpu-thermal", 45.0)
    fs.thermal_zone(1, "gpu-thermal", 41.5)
    fs.hwmon(0, "cpu_thermal", temp1_input=45000)  # not a power chip: must be skipped
    fs.hwmon(1, "ina226", power1_input=4_500_000, in0_input=2, in1_input=5000, curr1_input=800)
    fs.power_supply("battery", "Battery", voltage_now=3_800_000, current_now=-500_000)
    fs.power_supply("usb", "USB", online=1)
    fs.cpufreq(0, "performance", 1_800_000, 600_000, 1_800_000)
    fs.cpufreq(1, "schedutil", 1_500_000, 600_000, 1_800_000)
    return fs


@pytest.fixture
def vcgencmd(tmp_path) -> FakeVcgencmd:
    fake = FakeVcgencmd(tmp_path / "bin")
    fake.temp(48.3)
    fake.throttled(THROTTLED)
    fake.answer("pmic_read_adc", PMIC_SAMPLE)
    return fake


def run_one(local, model, inputs, rundir, **options) -> RunResult:
    (run,) = run_on_device(local, [RunSpec(model=model, inputs=inputs, **options)], [rundir])
    return run


def test_hwmon_run_records_power_thermal_throttling_cpufreq_and_runs_min_duration(
        local, example_tflite, small_inputs, tree, vcgencmd, tmp_path):
    run = run_one(local, example_tflite[1], small_inputs, tmp_path / "run", power="hwmon", sysfs_root=str(tree.root),
                  vcgencmd=str(vcgencmd.path), sample_hz=40, idle_s=0.3, min_duration_s=0.6)
    s, meta = run.sensors, run.meta
    n = s["t_ns"].size
    assert n > 5 and all(s[k].shape[0] == n for k in ("power_w", "temp_c", "throttled", "zone_temp_c"))
    assert np.allclose(s["power_w"], 4.5)  # power1_input (uW) wins over in1 x curr1
    assert np.allclose(s["temp_c"], 45.0)  # the hottest zone
    assert np.allclose(s["zone_temp_c"], [45.0, 41.5])
    assert (s["throttled"] == THROTTLED).all()
    sampling = meta["sampling"]
    assert sampling["power_source"] == {"backend": "hwmon", "chip": "hwmon1", "name": "ina226",
                                        "files": ["power1_input"]}
    assert 10 < sampling["achieved_hz"] < 60 and sampling["samples_timed"] > 0 and not sampling["errors"]
    assert sampling["throttled_seen"] == THROTTLED_NAMES and decode_throttled(THROTTLED) == THROTTLED_NAMES
    assert meta["thermal"]["start"]["vcgencmd_temp_c"] == 48.3 and meta["thermal"]["end"]["zones"] == {
        "thermal_zone0": 45.0, "thermal_zone1": 41.5}
    assert "hwmon1:ina226" in meta["device"]["sensors"]["hwmon"]

    cpufreq = meta["cpufreq"]
    assert cpufreq["governors"] == ["performance", "schedutil"]
    assert cpufreq["start"]["cpu0"] == {"governor": "performance", "cur_khz": 1_800_000, "min_khz": 600_000,
                                        "max_khz": 1_800_000}
    assert cpufreq["end"]["cpu1"]["governor"] == "schedutil" and cpufreq["end"]["cpu1"]["cur_khz"] == 1_500_000

    # min_duration_s: one repeat asked, the timed loop kept going for 0.6 s in whole passes
    assert run.latency_ns.shape[0] == meta["passes"] > 1 and run.latency_ns.shape[1] == 40
    assert meta["timed_s"] >= 0.6 and (run.latency_ns > 0).all()
    starts = run.invoke_start_ns.ravel()
    assert run.invoke_start_ns.shape == run.latency_ns.shape
    assert (np.diff(starts) > 0).all() and (starts[:-1] + run.latency_ns.ravel()[:-1] <= starts[1:]).all()
    timed, idle = meta["windows"]["timed"], meta["windows"]["idle"]
    assert idle[1] <= timed[0] <= starts[0] and starts[-1] <= timed[1]
    assert (idle[1] - idle[0]) / 1e9 >= 0.3
    utc = perf_to_utc_s(run, timed)
    assert meta["started"] - 1 < utc[0] < utc[1] < meta["finished"] + 1

    manifest = json.loads((run.path / "manifest.json").read_text())
    assert {"sensors.npz", "invoke_start_ns.npy", "latency_ns.npy"} <= set(manifest["files"])
    assert meta["op_profile"]["available"] is False and "benchmark_model" in meta["op_profile"]["why"]

    summary = thermal_summary(run)
    assert summary["throttled_ever"] and summary["throttled_flags"] == THROTTLED_NAMES
    assert summary["max_c"] == 45.0 and summary["n_throttled"] == run.latency_ns.size
    series = latency_temperature_series(run)
    assert series.t_s.shape == series.latency_ms.shape == series.temp_c.shape == (run.latency_ns.size,)
    assert np.allclose(series.temp_c, 45.0) and 0 <= series.t_s[0] < series.t_s[-1] <= meta["timed_s"]
    energy = energy_per_inference(run)  # constant power: nothing above the idle baseline
    assert energy["energy_mj"] == pytest.approx(0.0, abs=1e-12) and energy["idle_power_w"] == 4.5
    assert energy["inferences"] == run.latency_ns.size and energy["samples_idle"] > 0


@pytest.mark.parametrize("sensor, expected_w", [(None, 5.0 * 0.8), ("ina219", 1.25)])
def test_hwmon_multiplies_bus_volts_by_current_and_picks_a_named_chip(local, example_tflite, small_inputs, tree,
                                                                      tmp_path, sensor, expected_w):
    (tree.root / "class/hwmon/hwmon1/power1_input").unlink()  # only in<N>_input (mV) x curr<N>_input (mA) left
    tree.hwmon(2, "ina219", power1_input=1_250_000)
    run = run_one(local, example_tflite[1], small_inputs, tmp_path / "run", power="hwmon", power_sensor=sensor,
                  sysfs_root=str(tree.root), vcgencmd="", idle_s=0)
    assert np.allclose(run.sensors["power_w"], expected_w)  # in0 (the shunt voltage) is not curr1's partner
    assert (run.sensors["throttled"] == -1).all() and np.allclose(run.sensors["temp_c"], 45.0)
    assert "idle" not in run.meta["windows"]


@pytest.mark.parametrize("files, expected_w", [({}, 3.8 * 0.5), ({"power_now": 7_250_000}, 7.25)])
def test_power_supply_backend(local, example_tflite, small_inputs, tree, tmp_path, files, expected_w):
    tree.power_supply("battery", "Battery", **files)
    run = run_one(local, example_tflite[0], small_inputs, tmp_path / "run", power="power_supply",
                  sysfs_root=str(tree.root), vcgencmd="", idle_s=0.2)
    assert np.allclose(run.sensors["power_w"], expected_w)
    assert run.meta["sampling"]["power_source"]["supply"] == "battery"


def test_pi5_pmic_power_and_temperature_from_vcgencmd(local, example_tflite, small_inputs, vcgencmd, tmp_path):
    bare = FakeSysfs(tmp_path / "bare-sys")  # no thermal zones: the temperature comes from vcgencmd
    bare.cpufreq(0, "ondemand", 2_400_000, 1_500_000, 2_400_000)
    run = run_one(local, example_tflite[1], small_inputs, tmp_path / "run", power="pi5-pmic",
                  sysfs_root=str(bare.root), vcgencmd=str(vcgencmd.path), sample_hz=20, idle_s=0.2)
    assert np.allclose(run.sensors["power_w"], PMIC_SAMPLE_W)
    assert np.allclose(run.sensors["temp_c"], 48.3) and run.sensors["zone_temp_c"].shape[1] == 0
    assert (run.sensors["throttled"] == THROTTLED).all()
    assert run.meta["sampling"]["temperature_source"] == "vcgencmd"
    assert run.meta["sampling"]["power_source"]["rails"] == ["3V3_SYS", "3V7_WL_SW", "DDR_VDD2", "VDD_CORE"]
    assert run.meta["cpufreq"]["governors"] == ["ondemand"]


@pytest.mark.parametrize("power, vcgencmd_answers, match", [
    ("hwmon", True, r"power 'hwmon': no hwmon chip under .*class/hwmon has power<N>_input .* found hwmon0:cpu_thermal"),
    ("power_supply", True, r"power 'power_supply': no supply under .*class/power_supply has power_now .*"
                           r"current_now .* found usb:USB"),
    ("pi5-pmic", False, r"power 'pi5-pmic' needs vcgencmd"),
    ("pi5-pmic", True, r"pmic_read_adc` gave no rail with both a current"),
])
def test_a_named_backend_that_is_missing_fails_clearly(local, example_tflite, small_inputs, tmp_path, vcgencmd,
                                                       power, vcgencmd_answers, match):
    fs = FakeSysfs(tmp_path / "sys")
    fs.hwmon(0, "cpu_thermal", temp1_input=50000)
    fs.power_supply("usb", "USB", online=1)
    (vcgencmd.answers / "pmic_read_adc").unlink()  # a Pi 4: vcgencmd has no pmic_read_adc
    started = time.monotonic()
    with pytest.raises(AgentError, match=match) as failure:
        run_one(local, example_tflite[1], small_inputs, tmp_path / "run", power=power, sysfs_root=str(fs.root),
                vcgencmd=str(vcgencmd.path) if vcgencmd_answers else "", min_duration_s=30)
    assert failure.value.kind == "NoPowerSensor"
    assert time.monotonic() - started < 20  # refused before the 30 s timed loop started
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_power_none_samples_temperature_only_and_default_runs_sample_nothing(local, example_tflite, small_inputs,
                                                                             tree, tmp_path):
    run = run_one(local, example_tflite[1], small_inputs, tmp_path / "none", power="none", sysfs_root=str(tree.root),
                  vcgencmd="")
    assert np.isnan(run.sensors["power_w"]).all() and run.sensors["power_w"].size > 0
    assert np.allclose(run.sensors["temp_c"], 45.0)
    assert energy_per_inference(run) is None
    assert "idle" not in run.meta["windows"] and run.meta["sampling"]["idle_s"] == 0.0
    assert thermal_summary(run)["max_c"] == 45.0 and thermal_summary(run)["throttled_known"] is False

    plain = run_one(local, example_tflite[1], small_inputs, tmp_path / "plain")
    assert plain.sensors is None and plain.invoke_start_ns is None and "sampling" not in plain.meta
    assert energy_per_inference(plain) is None and thermal_summary(plain) is None
    assert latency_temperature_series(plain) is None
    assert plain.meta["passes"] == 1 and plain.meta["op_profile"]["available"] is False


def test_cooldown_gate_waits_until_the_temperature_drops(local, example_tflite, small_inputs, tree, tmp_path):
    """The board cools only after the agent has said it is waiting (its second cooldown event),
    so the test holds however slowly a loaded machine starts the agent."""
    tree.set_temp(0, 70.0)
    waits = []

    def cool_once_waiting(label, event):
        if event.get("event") == "cooldown":
            waits.append(event)
            if len(waits) == 2:
                tree.set_temp(0, 45.0)

    (run,) = run_on_device(local, [RunSpec(model=example_tflite[1], inputs=small_inputs, power="none",
                                           cooldown_c=50.0, cooldown_timeout_s=300, sysfs_root=str(tree.root),
                                           vcgencmd="", sample_hz=20)], [tmp_path / "run"], events=cool_once_waiting)
    cooldown = run.meta["cooldown"]
    assert len(waits) >= 2 and waits[0]["temp_c"] == 70.0 and waits[0]["target_c"] == 50.0
    assert cooldown["timed_out"] is False and cooldown["waited_s"] >= waits[1]["waited_s"] > 0
    assert cooldown["start_temp_c"] == 70.0 and cooldown["end_temp_c"] == 45.0
    windows = run.meta["windows"]
    assert windows["cooldown"][1] <= windows["timed"][0]
    summary = thermal_summary(run)
    assert summary["max_c_all"] == 70.0 and summary["max_c"] == 45.0  # hot while waiting, cool when measured
    assert summary["cooldown"]["waited_s"] == cooldown["waited_s"]


def test_cooldown_gate_gives_up_after_its_timeout_and_says_so(local, example_tflite, small_inputs, tree, tmp_path):
    tree.set_temp(0, 90.0)
    run = run_one(local, example_tflite[1], small_inputs, tmp_path / "run", cooldown_c=50.0, cooldown_timeout_s=0.6,
                  sysfs_root=str(tree.root), vcgencmd="")
    cooldown = run.meta["cooldown"]
    assert cooldown["timed_out"] is True and 0.5 < cooldown["waited_s"] < 5 and cooldown["end_temp_c"] == 90.0
    assert run.latency_ns.shape == (1, 40)  # it still measured, and the record says the device was hot


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "?"
    return stat.rsplit(")", 1)[1].split()[0]


class BusyPowerMeter:
    """Writes power1_input like a meter on the board would see it: 5 W while the agent's main
    thread is running (state R), 2 W while it sleeps (the idle baseline).

    It logs every value it writes with its perf_counter_ns (CLOCK_MONOTONIC, the agent's
    clock too), so a test can compute the power the agent should have seen in any window
    from what was really written, not from an ideal that a loaded machine never meets."""

    IDLE_W, BUSY_W = 2.0, 5.0

    def __init__(self, tree: FakeSysfs, agents_dir: str):
        self.tree, self.agents_dir = tree, agents_dir
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.log: list[tuple[int, float]] = [(time.perf_counter_ns(), self.IDLE_W)]

    def mean_w(self, window: list[int]) -> float:
        """Time-weighted mean of the written power over [start, end) in perf_counter_ns."""
        start, end = window
        times = [t for t, _ in self.log] + [end]
        total = 0.0
        for (t, watts), t_next in zip(self.log, times[1:]):
            overlap = min(t_next, end) - max(t, start)
            total += watts * max(overlap, 0)
        return total / (end - start)

    def _loop(self):
        from lab import agent_processes

        pids: list[int] = []
        last = None
        while not self.stop.is_set():
            if not pids:
                pids = agent_processes(self.agents_dir)
                time.sleep(0.01)
            watts = self.BUSY_W if any(_state(pid) == "R" for pid in pids) else self.IDLE_W
            if watts != last:
                self.tree.set("class/hwmon/hwmon1/power1_input", int(watts * 1e6))
                self.log.append((time.perf_counter_ns(), watts))
                last = watts
            time.sleep(0.002)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def test_energy_per_inference_matches_the_analytic_value(local, example_tflite, small_inputs, tree, tmp_path):
    tree.set("class/hwmon/hwmon1/power1_input", 2_000_000)
    with BusyPowerMeter(tree, str(Path(local.workdir) / "agents")) as meter:
        run = run_one(local, example_tflite[1], small_inputs, tmp_path / "run", power="hwmon", sample_hz=50,
                      idle_s=1.0, min_duration_s=1.0, sysfs_root=str(tree.root), vcgencmd="")
    energy = energy_per_inference(run)
    idle_w, busy_w = meter.mean_w(run.meta["windows"]["idle"]), meter.mean_w(run.meta["windows"]["timed"])
    assert idle_w < busy_w  # the meter saw the agent idle, then busy (on any machine load)
    assert energy["idle_power_w"] == pytest.approx(idle_w, abs=0.3)
    assert energy["mean_power_w"] == pytest.approx(busy_w, abs=0.5)
    analytic_mj = (busy_w - idle_w) * energy["window_s"] / energy["inferences"] * 1e3
    assert energy["energy_mj"] == pytest.approx(analytic_mj, rel=0.15)
    assert energy["ci95_mj"][0] <= energy["energy_mj"] <= energy["ci95_mj"][1]
    assert energy["inferences"] == run.latency_ns.size and energy["window_s"] >= 1.0
    assert energy["backend"] == "hwmon" and 10 < energy["sample_hz"] <= 60


def test_bad_sampling_options_are_refused_on_the_host(example_tflite, small_inputs, tmp_path):
    from edgeq.devices.run import prepare

    for options, match in [({"power": "battery"}, "unknown power backend"), ({"sample_hz": 0}, "sample_hz"),
                           ({"min_duration_s": -1}, "min_duration_s")]:
        with pytest.raises(ConfigError, match=match):
            prepare(RunSpec(model=example_tflite[1], inputs=small_inputs, **options), tmp_path / "r")


def test_device_power_uses_the_inventory_key(local, example_tflite, small_inputs, tree, tmp_path):
    import dataclasses

    device = dataclasses.replace(local, power="power_supply")
    (run,) = run_on_device(device, [RunSpec(model=example_tflite[1], inputs=small_inputs, power="device",
                                            sysfs_root=str(tree.root), vcgencmd="", idle_s=0.1)], [tmp_path / "r"])
    assert run.meta["sampling"]["power"] == "power_supply" and np.allclose(run.sensors["power_w"], 1.9)


def test_sampling_over_ssh(ssh_device, example_tflite, small_inputs, vcgencmd, tmp_path):
    device, _ = ssh_device
    board = FakeSysfs(tmp_path / "pi5-sys")
    board.thermal_zone(0, "cpu-thermal", 61.0)
    run = run_one(device, example_tflite[1], small_inputs, tmp_path / "run", power="pi5-pmic",
                  sysfs_root=str(board.root), vcgencmd=str(vcgencmd.path), idle_s=0.2, min_duration_s=0.3)
    assert np.allclose(run.sensors["power_w"], PMIC_SAMPLE_W) and np.allclose(run.sensors["temp_c"], 61.0)
    assert (run.sensors["throttled"] == THROTTLED).all() and run.latency_ns.shape[0] > 1
    assert thermal_summary(run)["throttled_flags"] == THROTTLED_NAMES


def test_sampling_runs_on_an_old_numpy_1_device(local, tflite214_python, example_keras, small_inputs, tree, vcgencmd,
                                                tmp_path):
    """numpy 1.26 has no np.savez(allow_pickle=...): sensors.npz must still be a plain archive."""
    import dataclasses

    from edgeq.models.convert import convert_model

    old = convert_model(example_keras, tmp_path / "m", target_runtime="tflite-runtime-2.14")
    device = dataclasses.replace(local, python=tflite214_python)
    run = run_one(device, old.quant_path, small_inputs, tmp_path / "run", power="hwmon", sysfs_root=str(tree.root),
                  vcgencmd=str(vcgencmd.path), idle_s=0.2, min_duration_s=0.3)
    assert run.meta["device"]["numpy"].startswith("1.")
    assert set(run.sensors) == {"t_ns", "power_w", "temp_c", "throttled", "zone_temp_c"}
    assert np.allclose(run.sensors["power_w"], 4.5) and (run.sensors["throttled"] == THROTTLED).all()
    assert run.latency_ns.shape[0] > 1 and run.invoke_start_ns.shape == run.latency_ns.shape


# --------------------------------------------------------------------------- edgeq.analysis.power on synthetic runs


def synthetic_run(idle_w, busy_w, *, idle=(0.0, 1.0), timed=(1.0, 3.0), hz=20, passes=100, per_pass=10,
                  throttled=None, temp=None, latency_ms=None) -> RunResult:
    """A RunResult built in memory: power sampled at hz over the idle and timed windows."""
    windows = {"timed": [int(timed[0] * 1e9), int(timed[1] * 1e9)]}
    t = np.arange(timed[0], timed[1], 1 / hz)
    power = np.broadcast_to(busy_w, t.shape).astype(float) if np.ndim(busy_w) == 0 else np.asarray(busy_w, float)
    if idle is not None:
        windows["idle"] = [int(idle[0] * 1e9), int(idle[1] * 1e9)]
        t_idle = np.arange(idle[0], idle[1], 1 / hz)
        idle_power = np.broadcast_to(idle_w, t_idle.shape) if np.ndim(idle_w) == 0 else np.asarray(idle_w, float)
        t, power = np.concatenate([t_idle, t]), np.concatenate([idle_power, power])
    n = t.size
    count = passes * per_pass
    starts = np.linspace(timed[0], timed[1], count, endpoint=False)
    latency = np.full(count, 1.0) if latency_ms is None else np.asarray(latency_ms, float)
    sensors = {"t_ns": (t * 1e9).astype(np.int64), "power_w": power,
               "temp_c": np.full(n, 50.0) if temp is None else np.asarray(temp, float),
               "throttled": np.zeros(n, np.int64) if throttled is None else np.asarray(throttled, np.int64),
               "zone_temp_c": np.zeros((n, 0))}
    meta = {"windows": windows, "sampling": {"achieved_hz": float(hz), "sample_hz": float(hz), "power": "hwmon",
                                             "temperature_source": "thermal_zone"},
            "clock": {"wall_ns": 1_700_000_000 * 10**9, "perf_ns": 0}}
    return RunResult(Path("."), meta, {}, [], (latency * 1e6).astype(np.int64).reshape(passes, per_pass),
                     np.ones(per_pass, np.int32), {}, (starts * 1e9).astype(np.int64).reshape(passes, per_pass),
                     sensors)


def test_energy_of_constant_idle_and_busy_power_is_exact():
    energy = energy_per_inference(synthetic_run(2.0, 5.0))
    # (5 W - 2 W) x 2 s / 1000 inferences = 6 mJ
    assert energy["energy_mj"] == pytest.approx(6.0) and energy["ci95_mj"] == pytest.approx([6.0, 6.0])
    assert energy["inferences"] == 1000 and energy["window_s"] == 2.0 and energy["baseline"] == "idle"
    gross = energy_per_inference(synthetic_run(2.0, 5.0, idle=None))
    assert gross["energy_mj"] == pytest.approx(10.0) and gross["baseline"] == "none" and gross["idle_power_w"] is None


def test_energy_interval_covers_the_true_value_with_noisy_samples():
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(200):
        run = synthetic_run(2.0 + rng.normal(0, 0.3, 20), 5.0 + rng.normal(0, 0.3, 40))
        low, high = energy_per_inference(run)["ci95_mj"]
        hits += low <= 6.0 <= high
    assert 180 <= hits <= 200  # ~95 % coverage


def test_thermal_summary_splits_p99_by_throttling_and_temperature():
    t = np.arange(1.0, 3.0, 0.1)  # timed samples at 10 Hz; the second second is throttled and hot
    hot = t >= 2.0
    throttled = np.where(hot, 0x40004, 0)
    temp = np.where(hot, 82.0, 70.0)
    starts = np.linspace(1.0, 3.0, 400, endpoint=False)
    latency = np.where(starts >= 2.0, 3.0, 1.0)
    run = synthetic_run(2.0, np.full(t.size, 5.0), idle=None, hz=10, passes=40, per_pass=10,
                        throttled=throttled, temp=temp, latency_ms=latency)
    summary = thermal_summary(run)
    assert summary["throttled_ever"] and summary["throttled_flags"] == ["throttled", "throttled_occurred"]
    assert summary["throttle_temp_c"] == 82.0 and summary["max_c"] == 82.0 and summary["mean_c"] == 76.0
    assert summary["p99_when_throttled"] == pytest.approx(3.0) and summary["p99_not_throttled"] == pytest.approx(1.0)
    assert summary["p99_when_hot"] == pytest.approx(3.0) and summary["p99_when_cool"] == pytest.approx(1.0)
    assert 190 <= summary["n_throttled"] <= 210 and summary["n_unmatched"] == 0
    series = latency_temperature_series(run)
    assert series.t_s[0] == pytest.approx(0.0) and series.t_s[-1] == pytest.approx(1.995)
    assert (series.temp_c[series.t_s < 0.9] == 70.0).all() and (series.temp_c[series.t_s > 1.1] == 82.0).all()
