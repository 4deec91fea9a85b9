"""Shared labs through labgrid: a real coordinator and exporter (labgrid from PyPI), a real sshd
behind the exported NetworkService, and the real agent on it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import write_inventory
from lab import SshServer, require_tools
from labgrid_lab import LabgridLab

from edgeq.cli.main import main

PLACE = "pi5-1"


@pytest.fixture(scope="module")
def labgrid(tmp_path_factory):
    require_tools("sshd", "ssh-keygen")
    root = tmp_path_factory.mktemp("labgrid")
    server = SshServer(root / "sshd").start()
    lab = LabgridLab(root / "lab")
    try:
        yield lab.start({PLACE: server})
    finally:
        lab.close()
        server.close()


@pytest.fixture
def inventory(labgrid, tmp_path):
    entry = dict(labgrid.inventory_entry(PLACE), workdir=str(tmp_path / "board"))
    yield write_inventory(tmp_path / "edgeq.toml", {"lab-pi": entry})
    if labgrid.holder(PLACE):  # a failed test must not leave the place held for the next
        labgrid.client("-p", PLACE, "release", "--kick", check=False)


def run_args(inventory, example_tflite, small_inputs, out, *extra):
    return ["run", "--device", "lab-pi", "--inventory", str(inventory), "--model", str(example_tflite[1]),
            "--inputs", str(small_inputs), "-o", str(out), "--no-history", *extra]


def test_a_run_acquires_the_place_uses_its_ssh_service_and_releases_it(labgrid, inventory, example_tflite,
                                                                       small_inputs, tmp_path):
    done = CliRunner().invoke(main, run_args(inventory, example_tflite, small_inputs, tmp_path / "run"))
    assert done.exit_code == 0, done.output
    server = labgrid.boards[PLACE]
    assert f"acquired labgrid place {PLACE} (ssh {server.user}@{server.host}:{server.port})" in done.output
    assert labgrid.holder(PLACE) is None  # released after (held during: test_ctrl_c_releases_the_place)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["device"] == "lab-pi"
    assert any((tmp_path / "board").rglob("edgeq_agent-*.pyz"))  # the agent ran on the exported board
    listed = CliRunner().invoke(main, ["devices", "list", "--inventory", str(inventory)])
    assert "labgrid" in listed.output and f"place {PLACE}" in listed.output


def test_a_place_someone_else_holds_is_a_busy_device_or_a_queue(labgrid, inventory, example_tflite,
                                                                small_inputs, tmp_path):
    labgrid.client("-p", PLACE, "acquire", user="bob")
    try:
        busy = CliRunner().invoke(main, run_args(inventory, example_tflite, small_inputs, tmp_path / "a"))
        assert busy.exit_code == 3, busy.output
        assert "already acquired by" in busy.output and "bob" in busy.output and "Traceback" not in busy.output
        queued = _queued_run(labgrid, inventory, example_tflite, small_inputs, tmp_path)
    finally:
        if labgrid.holder(PLACE) and labgrid.holder(PLACE).endswith("/bob"):
            labgrid.client("-p", PLACE, "release", user="bob")
    assert queued.returncode == 0, queued.stderr[-2000:]
    assert "waiting for labgrid place" in queued.stderr and labgrid.holder(PLACE) is None


def _queued_run(labgrid, inventory, example_tflite, small_inputs, tmp_path):
    """With labgrid_wait the job waits; bob releases once it says it is waiting (no timer race)."""
    text = inventory.read_text().replace('transport = "labgrid"', 'transport = "labgrid"\nlabgrid_wait = 600')
    inventory.write_text(text)
    proc = subprocess.Popen([sys.executable, "-m", "edgeq", *run_args(inventory, example_tflite, small_inputs,
                                                                       tmp_path / "b")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "waiting for labgrid place" in line:
            labgrid.client("-p", PLACE, "release", user="bob")
            break
    out, rest = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "".join(seen) + rest)


def test_ctrl_c_releases_the_place(labgrid, inventory, example_tflite, small_inputs, tmp_path):
    # SIGINT as a terminal sends it: a CI shell may start jobs with SIGINT ignored, and Python
    # then installs no KeyboardInterrupt at all, so the child gets the default disposition back
    proc = subprocess.Popen([sys.executable, "-m", "edgeq", *run_args(inventory, example_tflite, small_inputs,
                                                                       tmp_path / "run", "--min-duration", "600")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        holder = _wait_until_held(labgrid, proc)  # a 600 s run: it holds the place until interrupted
        assert holder and holder.endswith("/" + _me())
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0 and labgrid.holder(PLACE) is None


def test_a_place_acquired_beforehand_is_used_and_kept(labgrid, inventory, example_tflite, small_inputs, tmp_path):
    labgrid.client("-p", PLACE, "acquire")
    done = CliRunner().invoke(main, run_args(inventory, example_tflite, small_inputs, tmp_path / "run"))
    assert done.exit_code == 0, done.output
    assert labgrid.holder(PLACE).endswith("/" + _me())  # still the user's: edgeq did not take it away
    labgrid.client("-p", PLACE, "release")


def test_coordinator_down_and_missing_labgrid_are_one_line_errors(labgrid, tmp_path, example_tflite, small_inputs):
    entry = dict(labgrid.inventory_entry(PLACE), workdir=str(tmp_path / "board"), labgrid_coordinator="127.0.0.1:1")
    down = write_inventory(tmp_path / "down.toml", {"lab-pi": entry})
    result = CliRunner().invoke(main, run_args(down, example_tflite, small_inputs, tmp_path / "a"))
    assert result.exit_code == 3 and "labgrid place pi5-1" in result.output and "coordinator" in result.output
    assert len([ln for ln in result.output.splitlines() if ln.startswith("edgeq:")]) == 1, result.output
    no_labgrid = write_inventory(tmp_path / "none.toml", {"lab-pi": dict(entry, labgrid_python=sys.executable)})
    result = CliRunner().invoke(main, run_args(no_labgrid, example_tflite, small_inputs, tmp_path / "b"))
    assert result.exit_code == 2 and "no labgrid module" in result.output, result.output
    missing = write_inventory(tmp_path / "bad.toml", {"lab-pi": {"transport": "labgrid"}})
    result = CliRunner().invoke(main, run_args(missing, example_tflite, small_inputs, tmp_path / "c"))
    assert result.exit_code == 2 and "labgrid_place" in result.output, result.output


def _wait_until_held(labgrid, proc=None, timeout_s: float = 300.0) -> str | None:
    """Poll the coordinator (not a timer race: returns as soon as the place is held, or the job ended)."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        holder = labgrid.holder(PLACE)
        if holder:
            return holder
        if proc is not None and proc.poll() is not None:
            return None
        time.sleep(0.2)
    return None


def _me() -> str:
    import getpass

    return os.environ.get("LG_USERNAME") or getpass.getuser()


def test_a_place_left_acquired_by_a_killed_run_is_recognised_and_recovered(labgrid, inventory, example_tflite,
                                                                          small_inputs, tmp_path):
    """kill -9 runs no cleanup: the place stays acquired, tagged with the dead edgeq's PID. While that run
    lives, another run is told it is in use; once it is gone, the next run takes the place over, says so,
    and releases it at its end."""
    proc = subprocess.Popen([sys.executable, "-m", "edgeq", *run_args(inventory, example_tflite, small_inputs,
                                                                       tmp_path / "killed", "--min-duration", "600")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_until_held(labgrid, proc), "the run never acquired the place"
        shown = labgrid.client("-p", PLACE, "show").stdout
        assert f"edgeq_owner=" in shown and f"_{proc.pid}_" in shown  # recognisable as edgeq's, and whose
        busy = CliRunner().invoke(main, run_args(inventory, example_tflite, small_inputs, tmp_path / "busy"))
        assert busy.exit_code == 3 and f"in use by another edgeq run (pid {proc.pid}" in busy.output, busy.output
        proc.kill()
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert labgrid.holder(PLACE).endswith("/" + _me())  # left acquired: nothing released it
    done = CliRunner().invoke(main, run_args(inventory, example_tflite, small_inputs, tmp_path / "next",
                                             "--wait", "120"))
    assert done.exit_code == 0, done.output
    assert f"left acquired by edgeq pid {proc.pid} on this host, which is gone: taking it over" in done.output
    assert labgrid.holder(PLACE) is None  # released, as its own acquisition would be
    assert "edgeq_owner" not in labgrid.client("-p", PLACE, "show").stdout
