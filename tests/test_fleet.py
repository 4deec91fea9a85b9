"""Several devices in network namespaces, run in parallel; one broken device never stops the rest."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import write_inventory

from edgeq.cli.main import main


@pytest.fixture
def lab_inventory(netns_lab, tmp_path):
    devices = {d.name: dict(d.server.inventory_entry(), workdir=str(tmp_path / d.name), tags=["lab"])
               for d in netns_lab.devices}
    # a device that is in the inventory but not on the network: nothing listens on 10.77.x.1:2
    broken = netns_lab.devices[0]
    devices["pi-broken"] = dict(broken.server.inventory_entry(), host=broken.host_address, port=2, retries=0,
                                connect_timeout=2.0, tags=["lab"])
    return write_inventory(tmp_path / "edgeq.toml", devices), [d.name for d in netns_lab.devices]


def test_evaluate_on_a_fleet_with_one_broken_device(lab_inventory, example_tflite, small_inputs, tmp_path,
                                                    monkeypatch):
    inventory, names = lab_inventory
    monkeypatch.setenv("EDGEQ_LOCAL_WORKDIR", str(tmp_path / "host"))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["evaluate", str(example_tflite[0]), "--quant-model", str(example_tflite[1]),
                                       "--data", str(small_inputs), "--tag", "lab", "--inventory", str(inventory),
                                       "-o", str(out), "--max-per-category", "10"])
    assert result.exit_code == 3, result.output  # the lab is broken, and the job says so
    assert "1 of 4 device(s) failed" in result.output and "pi-broken" in result.output
    report = json.loads((out / "report.json").read_text())
    assert set(report["fleet"]["devices"]) == set(names)
    assert set(report["fleet"]["failed"]) == {"pi-broken"}
    assert "cannot reach" in report["fleet"]["failed"]["pi-broken"]["error"]
    assert report["verdict"] == "robust" and report["fleet"]["worst_device"] in names
    for name in names:
        device_report = json.loads((out / "devices" / name / "report.json").read_text())
        assert device_report["device"]["name"] == name
        assert device_report["device_vs_host"]["quant"]["flip_rate"] == 0.0
        assert (out / "devices" / name / "report.html").exists()


def test_run_and_check_on_a_fleet(lab_inventory, example_tflite, small_inputs, tmp_path):
    inventory, names = lab_inventory
    runner = CliRunner()
    ran = runner.invoke(main, ["run", "--device", ",".join(names), "--inventory", str(inventory), "--model",
                               str(example_tflite[1]), "--inputs", str(small_inputs), "-o", str(tmp_path / "runs"),
                               "--json", str(tmp_path / "runs.json")])
    assert ran.exit_code == 0, ran.output
    summary = json.loads((tmp_path / "runs.json").read_text())
    assert set(summary["devices"]) == set(names) and summary["failed"] == {}
    assert all((tmp_path / "runs" / name / "manifest.json").exists() for name in names)
    checked = runner.invoke(main, ["devices", "check", "--tag", "lab", "--inventory", str(inventory),
                                   "--json", str(tmp_path / "check.json")])
    assert checked.exit_code == 3  # pi-broken
    facts = json.loads((tmp_path / "check.json").read_text())
    assert all(facts[name]["ok"] and facts[name]["hostname"] == name for name in names)
    assert facts["pi-broken"]["reachable"] is False and facts["pi-broken"]["stage"] == "connect"


def test_soak_on_a_fleet_then_reattach(lab_inventory, example_tflite, small_inputs, tmp_path):
    import xml.etree.ElementTree as ET

    inventory, names = lab_inventory
    out = tmp_path / "soak"
    runner = CliRunner()
    result = runner.invoke(main, ["soak", "--device", ",".join(names), "--inventory", str(inventory), "--model",
                                  str(example_tflite[1]), "--inputs", str(small_inputs), "--duration", "3s",
                                  "--window", "1s", "-o", str(out), "--junit", str(tmp_path / "soak.xml"),
                                  "--json", str(tmp_path / "soak.json"), "--fail-on", "output-drift=0",
                                  "--no-history"])
    assert result.exit_code == 0, result.output
    summaries = json.loads((tmp_path / "soak.json").read_text())["devices"]
    assert set(summaries) == set(names)
    assert all(s["state"] == "finished" and s["windows"] == 3 for s in summaries.values())
    suites = ET.parse(tmp_path / "soak.xml").getroot().findall("testsuite")
    assert sorted(s.get("name") for s in suites) == sorted(f"edgeq soak on {n}" for n in names)
    again = runner.invoke(main, ["soak", "--attach", str(out), "--inventory", str(inventory), "--no-history",
                                 "--json", str(tmp_path / "again.json")])
    assert again.exit_code == 0, again.output  # finished soaks: attach just collects and judges again
    assert json.loads((tmp_path / "again.json").read_text())["devices"].keys() == summaries.keys()
