"""`edgeq deploy install|status|rollback` against real devices: the local agent and a loopback sshd.

Two evaluations of the built-in example (session fixtures) are the evidence: model A is the
dynamic-range model, model B the float model judged against itself. Both ran on `local`, which
shares this host's architecture and runtime with the loopback sshd device, so they vouch for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import write_inventory
from edgeq.cli.main import main
from edgeq.evaluate import EXAMPLE_DATA


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cli(*args, env=None):
    result = CliRunner().invoke(main, [str(a) for a in args], env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.fixture(scope="session")
def evaluations(example_tflite, tmp_path_factory):
    """{"A": (model, outdir), "B": (model, outdir), "db": history database both were recorded in}."""
    root = tmp_path_factory.mktemp("deploy-evidence")
    env = {"EDGEQ_LOCAL_WORKDIR": str(root / "device")}
    found = {"db": root / "history.sqlite"}
    for name, quant in (("A", example_tflite[1]), ("B", example_tflite[0])):
        out = root / name
        done = cli("evaluate", example_tflite[0], "--quant-model", quant, "--data", EXAMPLE_DATA, "--device", "local",
                   "-o", out, "--max-per-category", 30, "--sampling", "fixed", "--db", found["db"], "-q", env=env)
        assert done.exit_code == 0, done.output
        report = json.loads((out / "report.json").read_text())
        assert report["model"]["quant"]["sha256"] == sha(quant)
        assert report["verdict"] in ("robust", "degraded"), report["verdict"]
        found[name] = (Path(quant), out)
    return found


@pytest.fixture
def board(ssh_device, tmp_path):
    """The loopback ssh device and the path its application loads the model from."""
    device, inventory = ssh_device
    return device, inventory, tmp_path / "app" / "model.tflite"


def install(board, model, report, *extra):
    device, inventory, path = board
    return cli("deploy", "install", model, "--device", device.name, "--inventory", inventory, "--to", path,
               "--report", report, "--no-history", "--require", "degraded", *extra)  # small fixed suites: low-n


def test_install_smoke_checks_and_a_redeploy_changes_nothing(board, evaluations, tmp_path):
    device, inventory, path = board
    model, report = evaluations["A"]
    done = install(board, model, report, "--json", tmp_path / "d.json", "--junit", tmp_path / "d.xml")
    assert done.exit_code == 0, done.output
    assert path.is_symlink() and sha(path) == sha(model)  # the application opens the evaluated bytes
    result = json.loads((tmp_path / "d.json").read_text())["devices"][device.name]
    assert result["status"] == "installed" and result["version"] == 1
    assert result["smoke"]["ok"] and all(c["bit_exact"] for c in result["smoke"]["outputs"])
    assert result["smoke"]["rows"] == 16 and result["evidence"]["report"].startswith(str(report))
    assert 'failures="0"' in (tmp_path / "d.xml").read_text()
    link, target = os.readlink(path), path.resolve().stat()
    again = install(board, model, report, "--json", tmp_path / "e.json")
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "e.json").read_text())["devices"][device.name]["status"] == "unchanged"
    assert os.readlink(path) == link and path.resolve().stat().st_mtime_ns == target.st_mtime_ns


def test_a_model_without_a_passing_evaluation_is_refused_in_one_line(board, evaluations, tmp_path):
    device, inventory, path = board
    model_a, report_a = evaluations["A"]
    model_b, _ = evaluations["B"]
    done = install(board, model_b, report_a)  # A's report does not name B
    assert done.exit_code == 2, done.output
    lines = done.output.strip().splitlines()
    assert len(lines) == 1 and model_b.name in lines[0] and "no evaluation of this model" in lines[0], lines
    assert not path.exists() and not path.parent.exists()  # no device was touched
    catastrophic = tmp_path / "bad"
    shutil.copytree(report_a, catastrophic)
    report = json.loads((catastrophic / "report.json").read_text())
    (catastrophic / "report.json").write_text(json.dumps(dict(report, verdict="catastrophic")))
    done = install(board, model_a, catastrophic)
    assert done.exit_code == 2 and "says catastrophic" in done.output and "--require degraded" in done.output
    assert not path.exists()
    forced = install(board, model_a, catastrophic, "--force", "--json", tmp_path / "f.json")
    assert forced.exit_code == 0, forced.output
    result = json.loads((tmp_path / "f.json").read_text())["devices"][device.name]
    assert result["forced"] and sha(path) == sha(model_a)


def test_evidence_from_another_device_class_is_refused(board, evaluations, tmp_path):
    model, report = evaluations["A"]
    other = tmp_path / "other"
    shutil.copytree(report, other)
    data = json.loads((other / "report.json").read_text())
    data["device"] = dict(data["device"], arch="aarch64")
    (other / "report.json").write_text(json.dumps(data))
    done = install(board, model, other)
    assert done.exit_code == 2, done.output
    assert "no evaluation on" in done.output and "evaluated on: aarch64" in done.output
    assert not board[2].exists()


def test_failing_health_check_rolls_back_and_rollback_goes_both_ways(board, evaluations, tmp_path):
    device, inventory, path = board
    (model_a, report_a), (model_b, report_b) = evaluations["A"], evaluations["B"]
    assert install(board, model_a, report_a).exit_code == 0
    marker = tmp_path / "restarted"
    done = install(board, model_b, report_b, "--restart", f"touch {marker}", "--health", "echo unhealthy >&2; exit 3",
                   "--json", tmp_path / "h.json")
    assert done.exit_code == 1, done.output
    result = json.loads((tmp_path / "h.json").read_text())["devices"][device.name]
    assert result["status"] == "rolled-back" and "health command failed" in result["detail"]
    assert "unhealthy" in result["health"]["line"] and marker.exists()
    assert sha(path) == sha(model_a)  # back on A
    assert install(board, model_b, report_b).exit_code == 0 and sha(path) == sha(model_b)
    back = cli("deploy", "rollback", "--device", device.name, "--inventory", inventory, "--to", path, "--no-history")
    assert back.exit_code == 0, back.output
    assert sha(path) == sha(model_a)
    forth = cli("deploy", "rollback", "--device", device.name, "--inventory", inventory, "--to", path, "--no-history")
    assert forth.exit_code == 0 and sha(path) == sha(model_b)


def test_status_reports_versions_and_a_file_changed_behind_edgeqs_back(board, evaluations, tmp_path):
    device, inventory, path = board
    model, report = evaluations["A"]
    assert install(board, model, report).exit_code == 0
    status = cli("deploy", "status", "--device", device.name, "--inventory", inventory, "--to", path,
                 "--json", tmp_path / "s.json")
    assert status.exit_code == 0, status.output
    state = json.loads((tmp_path / "s.json").read_text())["devices"][device.name]
    assert state["managed"] and not state["changed_outside"] and state["current"]["sha256"] == sha(model)
    assert state["current"]["meta"]["report"].startswith(str(report)) and "@" in state["current"]["meta"]["by"]
    assert f"v1 {sha(model)[:12]}" in status.output
    path.resolve().write_bytes(b"edited in place")  # someone edits the installed file
    status = cli("deploy", "status", "--device", device.name, "--inventory", inventory, "--to", path)
    assert status.exit_code == 1 and "CHANGED OUTSIDE EDGEQ" in status.output, status.output
    path.unlink()
    path.write_bytes(b"replaced by hand")  # or replaces the link with a file
    status = cli("deploy", "status", "--device", device.name, "--inventory", inventory, "--to", path)
    assert status.exit_code == 1 and "CHANGED OUTSIDE EDGEQ" in status.output, status.output


def test_evidence_from_history_and_the_deploy_recorded_there(ssh_device, evaluations, tmp_path):
    device, inventory = ssh_device
    model, _ = evaluations["A"]
    db = tmp_path / "history.sqlite"
    shutil.copy(evaluations["db"], db)
    path = tmp_path / "app" / "m.tflite"
    inventory.write_text(inventory.read_text() + f'install_path = "{path}"\n')  # the device's default path
    done = cli("deploy", "install", model, "--device", device.name, "--inventory", inventory, "--db", db,
               "--require", "degraded")
    assert done.exit_code == 0, done.output
    assert sha(path) == sha(model)
    from edgeq.store.db import Store

    with Store.open(str(db)) as store:
        rows = store.query(kind="deploy")
    assert [(r.device, r.quant_sha256, r.location) for r in rows] == [(device.name, sha(model), str(path))]


def test_the_device_lock_keeps_two_deploys_apart(board, evaluations, tmp_path):
    from edgeq.devices.session import open_session

    device, inventory, path = board
    model, report = evaluations["A"]
    with open_session(device, lock=True):  # another edgeq job holds the board
        busy = install(board, model, report)
    assert busy.exit_code == 3 and "busy" in busy.output.lower(), busy.output
    assert not path.exists()
    assert install(board, model, report).exit_code == 0


def test_a_cut_link_mid_transfer_leaves_the_old_version(sshd_session, tcp_proxy_factory, evaluations, tmp_path):
    proxy = tcp_proxy_factory(sshd_session)
    entry = dict(proxy.inventory_entry(), workdir=str(tmp_path / "w"), retries=0)
    inventory = write_inventory(tmp_path / "edgeq.toml", {"cut": entry})
    path = tmp_path / "app" / "model.tflite"
    (model_a, report_a), (model_b, report_b) = evaluations["A"], evaluations["B"]
    base = ["deploy", "install", "--device", "cut", "--inventory", inventory, "--to", path, "--no-history",
            "--require", "degraded"]
    assert cli(*base[:2], model_a, *base[2:], "--report", report_a).exit_code == 0
    proxy.cut_after(40_000, refuse_after=True)  # B is ~70 kB: the link goes mid-upload
    cut = cli(*base[:2], model_b, *base[2:], "--report", report_b)
    assert cut.exit_code == 3, cut.output
    assert sha(path) == sha(model_a)
    proxy.resume()
    assert cli(*base[:2], model_b, *base[2:], "--report", report_b).exit_code == 0 and sha(path) == sha(model_b)
    shutil.rmtree(tmp_path / "w" / "cas")  # the store was tidied since: the installed model is still not sent
    sent = proxy.bytes_forwarded["up"]
    assert cli(*base[:2], model_b, *base[2:], "--report", report_b).exit_code == 0
    assert proxy.bytes_forwarded["up"] - sent < model_b.stat().st_size / 2


def test_kill_9_of_the_host_at_any_moment_leaves_old_or_new(board, evaluations, tmp_path):
    """The host dies at a spread of moments (connecting, pushing, switching, smoke checking, health):
    the path always holds model A or model B whole, and the next deploy completes."""
    device, inventory, path = board
    (model_a, report_a), (model_b, report_b) = evaluations["A"], evaluations["B"]
    assert install(board, model_a, report_a).exit_code == 0
    env = dict(os.environ)
    seen = set()
    for delay in (0.3, 0.8, 1.3, 1.8, 2.5, 3.5):
        target = model_b if sha(path) == sha(model_a) else model_a
        report = report_b if target == model_b else report_a
        proc = subprocess.Popen([sys.executable, "-m", "edgeq", "deploy", "install", str(target), "--device",
                                 device.name, "--inventory", str(inventory), "--to", str(path), "--report",
                                 str(report), "--no-history", "--require", "degraded", "--health", "sleep 2"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        seen.add(sha(path))
        assert sha(path) in (sha(model_a), sha(model_b))
    final = install(board, model_b, report_b, "--wait", "30")  # a killed host's agent may still hold the lock
    assert final.exit_code == 0, final.output
    assert sha(path) == sha(model_b)


@pytest.fixture
def fleet(netns_lab, tmp_path):
    """The three namespace devices, each with its own workdir and its own install path (one filesystem)."""
    entries, paths = {}, {}
    for index, lab_device in enumerate(netns_lab.devices):
        paths[lab_device.name] = tmp_path / f"app-{index}" / "model.tflite"
        entries[lab_device.name] = dict(lab_device.server.inventory_entry(), workdir=str(tmp_path / f"w{index}"),
                                        install_path=str(paths[lab_device.name]), tags=["lab"])
    return write_inventory(tmp_path / "edgeq.toml", entries), paths


def test_canary_then_waves_stop_at_the_failure_threshold(fleet, evaluations, tmp_path):
    inventory, paths = fleet
    first, second, third = list(paths)
    (model_a, report_a), (model_b, report_b) = evaluations["A"], evaluations["B"]
    base = ["deploy", "install", "--tag", "lab", "--inventory", inventory, "--no-history", "--require", "degraded"]
    assert cli(*base[:2], model_a, *base[2:], "--report", report_a).exit_code == 0
    assert all(sha(p) == sha(model_a) for p in paths.values())
    # the second device's health check fails: canary (first) passes, wave 1 (second) fails, third never starts
    health = f'test "$(hostname)" != {second}'
    done = cli(*base[:2], model_b, *base[2:], "--report", report_b, "--canary", 1, "--wave", 1, "--health", health,
               "--json", tmp_path / "r.json", "--junit", tmp_path / "r.xml")
    assert done.exit_code == 1, done.output
    result = json.loads((tmp_path / "r.json").read_text())
    status = {name: r["status"] for name, r in result["devices"].items()}
    assert status == {first: "installed", second: "rolled-back", third: "skipped"}, status
    assert [s["devices"] for s in result["steps"]] == [[first], [second]] and "rollout stopped" in result["aborted"]
    assert [sha(paths[n]) for n in (first, second, third)] == [sha(model_b), sha(model_a), sha(model_a)]
    assert 'tests="3" failures="2"' in (tmp_path / "r.xml").read_text()
    # one failure allowed: the third device goes ahead; a failing canary with the default stops everything
    back = cli(*base[:2], model_a, *base[2:], "--report", report_a)
    assert back.exit_code == 0 and sha(paths[first]) == sha(model_a)
    done = cli(*base[:2], model_b, *base[2:], "--report", report_b, "--canary", 1, "--wave", 1, "--health", health,
               "--max-failures", 1, "--json", tmp_path / "t.json")
    status = {n: r["status"] for n, r in json.loads((tmp_path / "t.json").read_text())["devices"].items()}
    assert done.exit_code == 1 and status == {first: "installed", second: "rolled-back", third: "installed"}, status
    canary_fails = f'test "$(hostname)" != {first}'
    assert cli(*base[:2], model_a, *base[2:], "--report", report_a).exit_code == 0
    done = cli(*base[:2], model_b, *base[2:], "--report", report_b, "--canary", 1, "--health", canary_fails,
               "--json", tmp_path / "c.json")
    status = {n: r["status"] for n, r in json.loads((tmp_path / "c.json").read_text())["devices"].items()}
    assert done.exit_code == 1 and status == {first: "rolled-back", second: "skipped", third: "skipped"}, status
    assert all(sha(p) == sha(model_a) for p in paths.values())


def test_rollback_on_abort_returns_the_devices_already_moved(fleet, evaluations, tmp_path):
    inventory, paths = fleet
    first, second, third = list(paths)
    (model_a, report_a), (model_b, report_b) = evaluations["A"], evaluations["B"]
    base = ["deploy", "install", "--tag", "lab", "--inventory", inventory, "--no-history", "--require", "degraded"]
    assert cli(*base[:2], model_a, *base[2:], "--report", report_a).exit_code == 0
    done = cli(*base[:2], model_b, *base[2:], "--report", report_b, "--canary", 1, "--wave", 1,
               "--health", f'test "$(hostname)" != {second}', "--rollback-on-abort", "--json", tmp_path / "r.json")
    assert done.exit_code == 1, done.output
    status = {n: r["status"] for n, r in json.loads((tmp_path / "r.json").read_text())["devices"].items()}
    assert status == {first: "aborted-back", second: "rolled-back", third: "skipped"}, status
    assert all(sha(p) == sha(model_a) for p in paths.values())
