"""``edgeq localize`` and ``edgeq fix`` with ``--device``: the drops and latencies come from the
device's own runs through the real agent (the local device and the loopback SSH server), the
per-op analysis stays on the host, and an unreachable device is exit 3 in one line."""

from __future__ import annotations

import json
import platform
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import write_inventory
from edgeq.cli.main import main


@pytest.fixture(scope="session")
def layered(tmp_path_factory, example_data):
    from fragile_layers import layered_files

    return layered_files(tmp_path_factory, example_data)


@pytest.fixture
def local_inventory(tmp_path):
    """An inventory whose ``local`` device has its own workdir (no state shared with other tests)."""
    return write_inventory(tmp_path / "edgeq.toml", {"local": {"workdir": str(tmp_path / "local device")}})


def run(args, code=0):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == code, (result.output, result.exception)
    return result


def recomputed_drops(float_run: str, cand_run: str) -> dict[str, float]:
    """The accuracy drop per condition, recomputed from two pulled device runs alone."""
    from edgeq.results import RunResult

    ref, cand = RunResult.load(float_run), RunResult.load(cand_run)
    y, category, severity = (np.asarray(ref.samples[k]) for k in ("y", "category", "severity"))
    condition = np.array([c if s == 0 else f"{c}/{s}" for c, s in zip(category, severity)])
    top = [np.asarray(r.outputs[0]).reshape(r.n, -1).argmax(1) for r in (ref, cand)]
    return {c: float(np.mean(top[0][condition == c] == y[condition == c])
                     - np.mean(top[1][condition == c] == y[condition == c])) for c in np.unique(condition)}


def check_device_fix(report: dict, device: str, target: float = 0.02) -> None:
    assert report["status"] == "fixed", report.get("reason")
    assert [r["layer"] for r in report["recipe"]] == ["culprit"]
    assert all(c["fixed"] <= target + 1e-9 for c in report["conditions"].values())
    # where: the device's name, arch and runtime, from its runs; the per-op analysis on the host
    assert report["device"]["name"] == device and report["device"]["arch"] == platform.machine()
    assert report["device"]["runtime"].startswith("ai_edge_litert")
    assert report["measured_on"].startswith(f"{device} ({platform.machine()}, ai_edge_litert")
    assert report["analysis_on"].startswith("host:") and "intermediate tensors" in report["analysis_note"]
    assert report["localize"]["device"]["name"] == device
    # latencies: the device's p50 per inference, from runs pulled from that device
    models = report["models"]
    for name in ("float", "quantized", "fixed"):
        m = models[name]
        assert m["latency_us"] == m["device_latency_us"] > 0 and "host_latency_us" not in m
        assert m["device_latency_ms"]["p50"] * 1000 == pytest.approx(m["device_latency_us"])
        pulled = json.loads((Path(m["run"]) / "run.json").read_text())
        assert pulled["device"] == device
    assert models["float"]["bytes"] / models["fixed"]["bytes"] > 2.0
    # the fixed drops are the device's: the same numbers come back from its pulled runs
    again = recomputed_drops(models["float"]["run"], models["fixed"]["run"])
    assert {c: round(v, 9) for c, v in again.items() if c in report["conditions"]} == \
        {c: round(v["fixed"], 9) for c, v in report["conditions"].items()}


def test_fix_on_the_local_device(layered, local_inventory, tmp_path):
    model, data = layered
    out = tmp_path / "out"
    result = run(["fix", str(model), "--data", str(data), "-o", str(out), "--device", "local",
                  "--inventory", str(local_inventory)])
    report = json.loads((out / "layered.fix.json").read_text())
    check_device_fix(report, "local")
    assert "local: running layered.float.tflite" in result.stderr
    assert "(device p50)" in result.stdout and "per-op analysis on host" in result.stdout
    assert "intermediate tensors" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines() if not line.startswith("/")) <= 80


def test_fix_over_ssh(layered, ssh_device, tmp_path):
    device, inventory = ssh_device
    model, data = layered
    out = tmp_path / "out"
    run(["fix", str(model), "--data", str(data), "-o", str(out), "--device", device.name,
         "--inventory", str(inventory), "--wait", "30"])
    report = json.loads((out / "layered.fix.json").read_text())
    check_device_fix(report, device.name)
    assert report["device"]["transport"] == "ssh"


def test_localize_on_the_local_device_ranks_the_culprit_first(layered, local_inventory, tmp_path):
    model, data = layered
    result = run(["localize", str(model), "--data", str(data), "--device", "local", "--inventory",
                  str(local_inventory), "--json", str(tmp_path / "l.json"), "-o", str(tmp_path / "work")])
    report = json.loads((tmp_path / "l.json").read_text())
    assert report["status"] == "localized"
    first = report["ranking"][0]
    assert first["layer"] == "culprit" and first["recovered_share"] > 0.9
    assert report["device"]["name"] == "local" and report["measured_on"].startswith("local (")
    assert "per-op analysis on host" in result.stdout
    # the confirmations ran on the device (their runs were pulled), the chosen conditions are its worst
    runs = sorted(p.name for p in (tmp_path / "work" / "device" / "device-runs").iterdir())
    assert [r.split("-", 1)[1] for r in runs] == ["float", "shipped", "rebuilt"] + [
        f"layered.keep{i}" for i in report["confirmed"]]
    worst = max(report["drops"]["rebuilt"].values(), key=lambda d: d["drop"])["drop"]
    assert report["drops"]["rebuilt"][report["conditions"][0]]["drop"] == worst


def test_the_library_takes_a_device_and_keeps_its_signature(layered, local, tmp_path):
    """What ``edgeq evaluate`` calls: prepare(...) with an inventory Device, then localize/fix unchanged."""
    from edgeq.repair.bench import prepare
    from edgeq.repair.device import DeviceMeasurer
    from edgeq.repair.fix import fix_model
    from edgeq.repair.localize import localize

    model, data = layered
    bench = prepare(model, tmp_path / "work", data=data, device=local)
    try:
        assert isinstance(bench.measurer, DeviceMeasurer)
        located = localize(bench, 0.02, worst=2, confirm=1)
        assert located["ranking"][0]["layer"] == "culprit" and located["device"]["name"] == "local"
        fixed = fix_model(bench, tmp_path / "out", target_drop=0.02, max_float=2)
        assert fixed.report["status"] == "fixed" and fixed.report["models"]["fixed"]["device_latency_us"] > 0
    finally:
        bench.close()
    assert bench.measurer._stack is None  # the session (and the device's lock) ended


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("command", ["localize", "fix"])
def test_an_unreachable_device_is_exit_3_in_one_line(layered, tmp_path, command):
    model, data = layered
    inventory = write_inventory(tmp_path / "edgeq.toml", {"gone": {
        "host": "127.0.0.1", "port": free_port(), "user": "nobody", "retries": 0, "connect_timeout": 2.0,
        "python": sys.executable, "workdir": str(tmp_path / "w")}})
    result = run([command, str(model), "--data", str(data), "--device", "gone", "--inventory", str(inventory),
                  "-o", str(tmp_path / "out")], code=3)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeq: error: gone: cannot reach"), result.stderr
    assert not list((tmp_path / "out").rglob("*.tflite"))  # it failed before converting anything


def test_an_unknown_device_is_bad_input(layered, local_inventory):
    model, data = layered
    result = run(["fix", str(model), "--data", str(data), "--device", "nope", "--inventory",
                  str(local_inventory)], code=2)
    assert result.stderr.startswith("edgeq: error: unknown device nope") and \
        len(result.stderr.strip().splitlines()) == 1


def test_the_job_holds_the_device_and_a_busy_device_is_exit_3(layered, local_inventory, small_inputs,
                                                               example_tflite, tmp_path):
    """A measurer holds the board's lock from open to close (one job per board, across all its
    runs); another fix on that board fails at once in one line, and runs once it is free."""
    from edgeq.devices.inventory import load_inventory
    from edgeq.devices.run import RunSpec, run_on_device
    from edgeq.errors import DeviceBusy
    from edgeq.repair.device import DeviceMeasurer

    model, data = layered
    device = load_inventory(local_inventory)["local"]
    spec = RunSpec(model=example_tflite[1], inputs=small_inputs, label="other", warmup=0)
    with DeviceMeasurer(device, tmp_path / "held"):
        with pytest.raises(DeviceBusy):
            run_on_device(device, [spec], [tmp_path / "other"])
        result = run(["fix", str(model), "--data", str(data), "--device", "local", "--inventory",
                      str(local_inventory), "-o", str(tmp_path / "out")], code=3)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("edgeq: error: local: device busy"), result.stderr
    (other,) = run_on_device(device, [spec], [tmp_path / "other"])
    assert other.n == 40


def test_evaluate_fix_measures_on_the_device_it_evaluated(layered, ssh_device, tmp_path):
    """``evaluate --device BOARD --fix``: the fix's drops and latencies come from that board's runs under
    evaluate's own resolver, not from this host."""
    device, inventory = ssh_device
    model, data = layered
    out = tmp_path / "eval"
    run(["evaluate", str(model), "--data", str(data), "-o", str(out), "--device", device.name, "--inventory",
         str(inventory), "--wait", "30", "--max-per-category", "80", "--fix", "--no-history"])
    report = json.loads((out / "report.json").read_text())
    fix = report["fix"]
    assert fix["status"] == "fixed", fix.get("reason")
    assert fix["device"]["name"] == device.name and fix["device"]["transport"] == "ssh"
    assert fix["measured_on"].startswith(f"{device.name} (") and fix["resolver"] == "AUTO"
    assert fix["models"]["fixed"]["device_latency_us"] > 0
    assert any(n.startswith(f"fix: drop target 0.02 (the degraded threshold) on the field conditions, searched and "
                            f"verified on {device.name}, the device evaluated") for n in report["notes"])
