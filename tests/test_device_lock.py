"""One measuring job per board: a second job queues (--wait) or fails naming the holder;
a holder that dies frees the board; a detached soak keeps it for its whole run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeq.cli.main import main
from edgeq.devices.agent_client import AgentSession
from edgeq.devices.deploy import Deployer
from edgeq.devices.inventory import connect, device_python
from edgeq.devices.lock import acquire, describe_holder, status
from edgeq.devices.run import RunSpec, run_on_device
from edgeq.errors import DeviceBusy

PATIENCE_S = 180  # generous bound for "eventually" on a loaded machine; never a timing assertion


class Holder:
    """Another edgeq job holding the board: a real agent session that took the lock."""

    def __init__(self, device):
        self.device = device
        self.transport = connect(device).__enter__()
        deployer = Deployer(self.transport, device.workdir)
        self.workdir = deployer.workdir
        self.session = AgentSession(self.transport, device_python(device, self.transport), deployer.push_agent())
        self.session.hello()
        self.answer = acquire(self.session, self.workdir)

    def release(self):
        self.session.close()
        self.transport.__exit__(None, None, None)


def _spec(model, inputs):
    return RunSpec(model=model, inputs=inputs, label="run", warmup=0)


@pytest.fixture(params=["local", "ssh_device"])
def board(request):
    if request.param == "local":
        return request.getfixturevalue("local")
    return request.getfixturevalue("ssh_device")[0]


def test_a_second_job_fails_at_once_naming_the_holder(board, example_tflite, small_inputs, tmp_path):
    holder = Holder(board)
    try:
        assert holder.answer["acquired"]
        with pytest.raises(DeviceBusy) as caught:
            run_on_device(board, [_spec(example_tflite[1], small_inputs)], [tmp_path / "r"])
        message = str(caught.value)
        assert "device busy" in message and f"pid {os.getpid()}" in message and "--wait" in message
        assert not (tmp_path / "r" / "manifest.json").exists()
    finally:
        holder.release()
    (run,) = run_on_device(board, [_spec(example_tflite[1], small_inputs)], [tmp_path / "again"])
    assert run.n == 40  # released with the session: the board is free again


def test_the_cli_exits_3_with_one_line_when_the_device_is_busy(ssh_device, example_tflite, small_inputs, tmp_path):
    device, inventory = ssh_device
    holder = Holder(device)
    try:
        result = CliRunner().invoke(main, ["run", "--device", "pi-loop", "--inventory", str(inventory),
                                           "--model", str(example_tflite[1]), "--inputs", str(small_inputs),
                                           "-o", str(tmp_path / "r"), "--no-history"])
    finally:
        holder.release()
    assert result.exit_code == 3, result.output
    assert "pi-loop: device busy" in result.output and "held by" in result.output


def test_wait_queues_until_the_holder_lets_go(local, example_tflite, small_inputs, tmp_path, capfd):
    holder = Holder(local)
    outcome = {}

    def second_job():
        try:
            outcome["runs"] = run_on_device(local, [_spec(example_tflite[1], small_inputs)], [tmp_path / "r"],
                                            wait_s=PATIENCE_S * 2)
        except Exception as exc:  # reported by the assertion below
            outcome["error"] = exc

    waiter = threading.Thread(target=second_job)
    waiter.start()
    seen, deadline = "", time.monotonic() + PATIENCE_S
    while "waiting for the device" not in seen and time.monotonic() < deadline and waiter.is_alive():
        time.sleep(0.2)
        seen += capfd.readouterr().err
    holder.release()
    waiter.join(PATIENCE_S * 3)
    assert "waiting for the device" in seen and "held by" in seen
    assert "error" not in outcome, outcome.get("error")
    assert outcome["runs"][0].n == 40


def test_a_holder_that_dies_frees_the_board(local, example_tflite, small_inputs, tmp_path):
    """Killed with SIGKILL: no cleanup ran, the lock file still names it, and the board is free."""
    workdir = Path(local.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    code = ("import fcntl, json, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600); "
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, json.dumps({'user': 'ghost', 'host': 'gone', "
            "'pid': os.getpid()}).encode()); print('held', flush=True); time.sleep(3600)")
    ghost = subprocess.Popen([sys.executable, "-c", code, str(workdir / "lock")], stdout=subprocess.PIPE, text=True)
    assert ghost.stdout.readline().strip() == "held"
    with pytest.raises(DeviceBusy, match="held by ghost@gone"):
        run_on_device(local, [_spec(example_tflite[1], small_inputs)], [tmp_path / "r"])
    ghost.send_signal(signal.SIGKILL)
    ghost.wait()
    assert "ghost" in (workdir / "lock").read_text()  # stale facts stay in the file ...
    (run,) = run_on_device(local, [_spec(example_tflite[1], small_inputs)], [tmp_path / "r2"])
    assert run.n == 40  # ... and are never believed: the kernel dropped the lock with the process


def test_a_detached_soak_holds_the_board_until_it_ends(ssh_device, example_tflite, small_inputs, tmp_path):
    device, inventory = ssh_device
    runner = CliRunner()
    started = runner.invoke(main, ["soak", "--device", "pi-loop", "--inventory", str(inventory), "--model",
                                   str(example_tflite[1]), "--inputs", str(small_inputs), "--duration", "10m",
                                   "--window", "1s", "-o", str(tmp_path / "soak"), "--detach", "--no-history"])
    assert started.exit_code == 0, started.output
    # the session that started it has gone; the soak process kept the lock
    with pytest.raises(DeviceBusy, match="soak ends in"):
        run_on_device(device, [_spec(example_tflite[1], small_inputs)], [tmp_path / "r"])
    checked = runner.invoke(main, ["devices", "check", "pi-loop", "--inventory", str(inventory),
                                   "--json", str(tmp_path / "check.json")])
    facts = json.loads((tmp_path / "check.json").read_text())["pi-loop"]
    assert facts["lock"]["held"] and facts["lock"]["holder"]["job"] == "soak", checked.output
    assert "busy" in checked.output
    listed = runner.invoke(main, ["devices", "list", "--locks", "--inventory", str(inventory)])
    assert listed.exit_code == 0 and "soak ends in" in listed.output, listed.output
    listed = json.loads(runner.invoke(main, ["devices", "list", "--locks", "--json", "--inventory",
                                             str(inventory)]).output)
    assert listed["pi-loop"]["lock"]["holder"]["job"] == "soak" and listed["local"]["lock"]["held"] is False
    stopped = runner.invoke(main, ["soak", "--attach", str(tmp_path / "soak"), "--stop", "--no-history",
                                   "--inventory", str(inventory)])
    assert stopped.exit_code == 0, stopped.output
    (run,) = run_on_device(device, [_spec(example_tflite[1], small_inputs)], [tmp_path / "r2"], wait_s=PATIENCE_S)
    assert run.n == 40


def test_status_reads_without_taking_the_lock(local):
    holder = Holder(local)
    try:
        with connect(local) as transport:
            deployer = Deployer(transport, local.workdir)
            with AgentSession(transport, device_python(local, transport), deployer.push_agent()) as session:
                seen = status(session, deployer.workdir)
    finally:
        holder.release()
    assert seen["held"] and seen["holder"]["pid"] == os.getpid()
    assert describe_holder(seen["holder"]).startswith("held by ")


def test_describe_holder_words():
    now = 1_000_000.0
    assert describe_holder(None) == "free"
    assert describe_holder({"unknown": True}) == "held by an unknown job"
    text = describe_holder({"user": "ann", "host": "ws1", "pid": 7, "command": "edgeq evaluate", "since": now - 300},
                           now)
    assert text == "held by ann@ws1 (pid 7, edgeq evaluate) for 5 min"
    soak = describe_holder({"user": "ci", "host": "h", "job": "soak", "since": now - 10, "until": now + 7200}, now)
    assert soak.endswith("soak ends in 2.0 h")


def test_ctrl_c_mid_run_ends_the_agent_and_frees_the_board(local, example_tflite, small_inputs, tmp_path):
    """The agent is busy mid-run and cannot answer a polite shutdown: Ctrl-C kills it, so the
    board is not held (and not measured) for the rest of a run nobody is waiting for."""
    from lab import agent_processes

    env = dict(os.environ, EDGEQ_LOCAL_WORKDIR=local.workdir)
    argv = [sys.executable, "-m", "edgeq", "run", "--device", "local", "--model", str(example_tflite[1]),
            "--inputs", str(small_inputs), "-o", str(tmp_path / "run"), "--min-duration", "600", "--no-history"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal
    try:
        for line in proc.stderr:  # the run is under way once the agent reports progress
            if "local:" in line:
                break
        assert agent_processes(local.workdir), "the agent should be running"
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=PATIENCE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    deadline = time.monotonic() + PATIENCE_S
    while agent_processes(local.workdir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not agent_processes(local.workdir)
    (run,) = run_on_device(local, [_spec(example_tflite[1], small_inputs)], [tmp_path / "again"])  # no wait: free
    assert run.n == 40
