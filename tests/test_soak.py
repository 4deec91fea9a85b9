"""Soak: detached on the device, survives the host disconnecting, gates and JUnit for CI."""

from __future__ import annotations

import json
import threading
import time
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner
from conftest import write_inventory
from fake_sysfs import FakeSysfs
from lab import agent_processes

from edgeq.cli.main import main
from edgeq.devices.inventory import load_inventory
from edgeq.devices.run import RunSpec
from edgeq.devices.soak import SoakHandle, follow, load_records, parse_duration, start_soak
from edgeq.reports.soak import summarize
from edgeq.store.db import Store


def test_durations():
    assert parse_duration("8h") == 28800 and parse_duration("1h30m") == 5400 and parse_duration("90") == 90
    from edgeq.errors import ConfigError

    with pytest.raises(ConfigError, match="not like 8h"):
        parse_duration("eight hours")


def test_local_soak_with_sensors_gates_junit_and_history(example_tflite, small_inputs, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEQ_LOCAL_WORKDIR", str(tmp_path / "device"))
    sysfs = FakeSysfs(tmp_path / "sys")
    sysfs.thermal_zone(0, "cpu-thermal", 61.5)
    sysfs.hwmon(0, "ina226", power1_input=3_250_000)
    db = str(tmp_path / "h.sqlite")
    out = tmp_path / "soak"
    args = ["soak", "--device", "local", "--model", str(example_tflite[1]), "--inputs", str(small_inputs),
            "--duration", "3s", "--window", "1s", "-o", str(out), "--power", "hwmon", "--sysfs-root",
            str(tmp_path / "sys"), "--vcgencmd", "", "--junit", str(tmp_path / "soak.xml"), "--db", db,
            "--json", str(tmp_path / "summary.json")]
    passed = CliRunner().invoke(main, args + ["--fail-on", "p99-drift=10,output-drift=0"])
    assert passed.exit_code == 0, passed.output
    records = load_records(out)
    assert [r["index"] for r in records] == [0, 1, 2]
    assert all(r["temp_c"] == 61.5 and r["power_w"] == pytest.approx(3.25) for r in records)
    assert all(r["power_samples"] >= 1 for r in records)  # the mean of this window's readings, not a stale one
    assert records[-1]["drift"]["checked"] > 0 and records[-1]["drift"]["mismatched"] == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["state"] == "finished" and summary["windows"] == 3 and summary["rss_kb"]["start"] > 0
    suite = ET.parse(tmp_path / "soak.xml").getroot().find("testsuite")
    assert suite.get("tests") == "3" and suite.get("failures") == "0"
    with Store.open(db) as store:
        (stored,) = store.query(kind="soak")
    assert stored.device == "local" and stored.p99_ms == summary["p99_ms"]["end"]

    failing = CliRunner().invoke(main, args[:-2] + ["--no-history", "-o", str(tmp_path / "soak2"),
                                                    "--fail-on", "rss-growth=-1"])
    assert failing.exit_code == 1, failing.output
    suite = ET.parse(tmp_path / "soak.xml").getroot().find("testsuite")
    assert suite.get("failures") == "1" and suite.find("testcase[@name='rss-growth <= -1.0']/failure") is not None


def test_soak_survives_the_host_disconnecting(sshd_session, tcp_proxy_factory, example_tflite, small_inputs,
                                              tmp_path):
    proxy = tcp_proxy_factory(sshd_session)
    inventory = write_inventory(tmp_path / "edgeq.toml",
                                {"pi": dict(proxy.inventory_entry(), workdir=str(tmp_path / "w"), retries=0,
                                            connect_timeout=2.0)})
    device = load_inventory(inventory)["pi"]
    out = tmp_path / "soak"
    handle = start_soak(device, RunSpec(model=example_tflite[1], inputs=small_inputs), out, 6.0, 1.0)
    proxy.cut()  # the host is gone: no connection at all for a while
    time.sleep(2.5)
    assert agent_processes(handle.remote_dir + "/job.json"), "the agent died with the link"
    proxy.resume()
    cuts = threading.Timer(1.5, lambda: (proxy.cut(), time.sleep(2.0), proxy.resume()))
    cuts.start()  # and once more while we follow: follow() must reconnect and lose nothing
    seen_states = []
    status = follow(device, SoakHandle.load(out), out, lambda new, st: seen_states.append(st.get("state")),
                    poll_s=0.5)
    cuts.join()
    assert status["state"] == "finished"
    assert "reconnecting" in seen_states
    records = load_records(out)
    assert [r["index"] for r in records] == list(range(6))  # no record lost, none twice
    assert summarize(records, status)["output_drift"]["mismatched"] == 0


def test_attach_and_stop_a_detached_soak(ssh_device, example_tflite, small_inputs, tmp_path):
    device, inventory = ssh_device
    out = tmp_path / "soak"
    runner = CliRunner()
    started = runner.invoke(main, ["soak", "--device", "pi-loop", "--inventory", str(inventory), "--model",
                                   str(example_tflite[1]), "--inputs", str(small_inputs), "--duration", "10m",
                                   "--window", "1s", "-o", str(out), "--detach"])
    assert started.exit_code == 0, started.output
    assert "soak --attach" in started.output
    time.sleep(2.0)
    stopped = runner.invoke(main, ["soak", "--attach", str(out), "--stop", "--inventory", str(inventory),
                                   "--json", str(tmp_path / "s.json"), "--no-history"])
    assert stopped.exit_code == 0, stopped.output
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["state"] == "stopped" and 1 <= summary["windows"] < 60
    assert (out / "device" / "agent.log").exists()
    deadline = time.monotonic() + 10  # it wrote "stopped"; give it a moment to exit
    while agent_processes(str(tmp_path / "pi workdir" / "soaks")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not agent_processes(str(tmp_path / "pi workdir" / "soaks"))


def test_throttle_gate_ignores_bits_that_only_say_since_boot(tmp_path):
    """A board that once under-volted keeps bit 16 until reboot: that is no throttled window."""
    from device_agents.edgeq_agent import SoakSensors, check_job
    from edgeq.reports.soak import evaluate_soak_gates, parse_soak_gates
    from fake_sysfs import FakeVcgencmd

    vcgencmd = FakeVcgencmd(tmp_path / "bin")
    vcgencmd.temp(55.0)
    job = {"sysfs_root": str(tmp_path / "sys"), "vcgencmd": str(vcgencmd.path), "duration_s": 60}
    sensors = SoakSensors(dict(job, **check_job(job, "soak")))
    window = {"type": "window", "latency_ms": {"p99": 1.0, "p50": 1.0, "n": 10}}
    vcgencmd.throttled(0x50000)  # under-voltage and throttling occurred since boot, neither now
    since_boot = sensors.read()
    assert since_boot["throttled"] == 0 and since_boot["throttled_raw"] == 0x50000
    assert since_boot["throttled_flags"] == ["under_voltage_occurred", "throttled_occurred"]
    vcgencmd.throttled(0x50004)  # and now throttled
    now = sensors.read()
    assert now["throttled"] == 4 and "throttled" in now["throttled_flags"]
    gate = parse_soak_gates("throttled=0")
    quiet = summarize([dict(window, **since_boot)] * 3)
    assert quiet["throttled_windows"] == 0 and not evaluate_soak_gates(quiet, gate)[0]["failed"]
    old_agent = summarize([dict(window, throttled=0x50000)] * 2)  # records of an agent before the fix
    assert old_agent["throttled_windows"] == 0
    hot = summarize([dict(window, **since_boot), dict(window, **now)])
    assert hot["throttled_windows"] == 1 and evaluate_soak_gates(hot, gate)[0]["failed"]


def test_soak_by_tag_with_one_device_writes_where_the_readme_says(example_tflite, small_inputs, tmp_path):
    """`--tag` soaks into OUTDIR/<device>/ however many devices carry the tag, so a CI
    script's paths do not change when a board is added to or taken out of the lab."""
    import sys

    inventory = write_inventory(tmp_path / "edgeq.toml", {"bench-1": {
        "transport": "local", "python": sys.executable, "workdir": str(tmp_path / "device"), "tags": ["lab"]}})
    out = tmp_path / "soak"
    result = CliRunner().invoke(main, [
        "soak", "--tag", "lab", "--inventory", str(inventory), "--model", str(example_tflite[1]),
        "--inputs", str(small_inputs), "--duration", "1s", "--window", "1s", "-o", str(out), "--no-history"])
    assert result.exit_code == 0, result.output
    assert [r["index"] for r in load_records(out / "bench-1")] == [0]
    again = CliRunner().invoke(main, ["soak", "--attach", str(out), "--inventory", str(inventory), "--no-history"])
    assert again.exit_code == 0, again.output
