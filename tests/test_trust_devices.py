"""Issue 23 on the device side: bad input is exit 2 and one line naming the flag or file, a device
or lab failure exit 3, Ctrl-C 130; no traceback, no hang, and nothing a device (or whoever holds
its lock, or the lab) wrote reaches the terminal as an escape sequence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import write_inventory

from edgeq.cli.main import main
from edgeq.devices.soak import SoakHandle

ESCAPES = ("\x1b", "\r", "\x07", "\x9b", "\x9d")


def one_error_line(result, code: int, *words: str) -> str:
    """The result exited ``code`` with exactly one ``edgeq: error:`` line holding every word, and no traceback."""
    lines = [ln for ln in result.output.splitlines() if ln.startswith("edgeq: error:")]
    assert result.exit_code == code, result.output
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def soak_args(model, inputs, out, *extra):
    return ["soak", "--device", "local", "--model", str(model), "--inputs", str(inputs), "-o", str(out),
            "--no-history", *extra]


# ------------------------------------------------------------------ soak: bad timing and option mixes


@pytest.mark.parametrize("flags, words", [
    (["--duration", "100000000000000000000h"], ["--duration", "at most 720h"]),
    (["--duration", "1" + "0" * 400], ["--duration", "at most 720h"]),  # float('1e400') is inf
    (["--duration", "1e20h"], ["--duration", "not like 8h"]),
    (["--duration", "721h"], ["--duration", "at most 720h"]),
    (["--duration", "10m", "--window", "2h"], ["--window 2h", "longer than --duration 10m"]),
    (["--stop"], ["--stop", "--attach"]),
    (["--reconnect-timeout", "nan"], ["--reconnect-timeout", "finite"]),
    (["--reconnect-timeout", "inf"], ["--reconnect-timeout", "finite"]),
])
def test_soak_refuses_bad_timing_and_stop_without_attach_before_touching_a_device(example_tflite, small_inputs,
                                                                                 tmp_path, monkeypatch, flags, words):
    monkeypatch.setenv("EDGEQ_LOCAL_WORKDIR", str(tmp_path / "device"))
    out = tmp_path / "soak"
    result = CliRunner().invoke(main, soak_args(example_tflite[1], small_inputs, out, *flags))
    one_error_line(result, 2, *words)
    assert not out.exists() and not (tmp_path / "device").exists()  # no soak started, no board held


def finished_soak(tmp_path: Path, device: str = "local") -> tuple[Path, Path]:
    """A finished soak's folder on a local device, and the host folder that follows it."""
    remote = tmp_path / "device" / "soaks" / "s1"
    remote.mkdir(parents=True)
    record = {"type": "window", "index": 0, "elapsed_s": 1.0, "rss_kb": 1000, "drift": {"checked": 1, "mismatched": 0},
              "latency_ms": {"n": 10, "p50": 1.0, "p90": 1.1, "p99": 1.2, "mean": 1.0, "max": 1.3}}
    (remote / "records.jsonl").write_text(json.dumps(record) + "\n")
    (remote / "status.json").write_text(json.dumps({"state": "finished", "windows": 1}))
    out = tmp_path / "soak"
    SoakHandle(device, "s1", str(remote), 1, time.time(), 1.0, 1.0).save(out)
    inventory = write_inventory(tmp_path / "edgeq.toml", {"local": {"workdir": str(tmp_path / "device")}})
    return out, inventory


def test_attach_uses_device_to_choose_and_refuses_one_it_has_no_soak_for(tmp_path):
    out, inventory = finished_soak(tmp_path)
    base = ["soak", "--attach", str(out), "--inventory", str(inventory), "--no-history"]
    other = CliRunner().invoke(main, base + ["--device", "pi5"])
    one_error_line(other, 2, "--device pi5", "no soak on pi5", "ran on local")
    tagged = CliRunner().invoke(main, base + ["--tag", "lab"])
    one_error_line(tagged, 2, "--tag", "--attach")
    chosen = CliRunner().invoke(main, base + ["--device", "local", "--json", str(tmp_path / "s.json")])
    assert chosen.exit_code == 0, chosen.output
    assert json.loads((tmp_path / "s.json").read_text())["state"] == "finished"


def _status(handle: SoakHandle) -> dict:
    try:
        return json.loads(Path(handle.remote_dir, "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _wait_running(handle: SoakHandle, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while _status(handle).get("state") != "running":
        assert time.monotonic() < deadline, "the soak never started"
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


def test_stop_is_prompt_not_at_the_end_of_a_long_window(example_tflite, small_inputs, tmp_path, monkeypatch):
    """A 60 s window: --attach --stop ends the soak in seconds (it used to wait for the window's end)."""
    monkeypatch.setenv("EDGEQ_LOCAL_WORKDIR", str(tmp_path / "device"))
    out = tmp_path / "soak"
    started = CliRunner().invoke(main, soak_args(example_tflite[1], small_inputs, out, "--duration", "10m",
                                                 "--window", "60s", "--detach"))
    assert started.exit_code == 0, started.output
    handle = SoakHandle.load(out)
    _wait_running(handle)
    began = time.monotonic()
    stopped = CliRunner().invoke(main, ["soak", "--attach", str(out), "--stop", "--json", str(tmp_path / "s.json")])
    took = time.monotonic() - began
    assert stopped.exit_code == 0, stopped.output
    assert took < 30, f"--stop took {took:.0f} s: it waited for the window's end"
    # the agent sees the stop request within STOP_POLL_S and ends the soak itself, keeping the window in
    # progress as a partial one (an older agent is ended by the host instead, and that window is lost)
    assert "the agent ended it" in stopped.output and "soak stopped: 1 windows" in stopped.output
    assert json.loads((tmp_path / "s.json").read_text())["state"] == "stopped"  # and history took a 0-window soak
    assert not _alive(handle.pid)
    again = CliRunner().invoke(main, soak_args(example_tflite[1], small_inputs, tmp_path / "next", "--duration",
                                               "1s", "--window", "1s"))
    assert again.exit_code == 0, again.output  # the board is free at once


def test_ctrl_c_while_following_is_130_and_leaves_the_soak_running(example_tflite, small_inputs, tmp_path):
    env = dict(os.environ, EDGEQ_LOCAL_WORKDIR=str(tmp_path / "device"))
    out = tmp_path / "soak"
    argv = [sys.executable, "-m", "edgeq", *soak_args(example_tflite[1], small_inputs, out, "--duration", "10m",
                                                      "--window", "1s")]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal
    try:
        for line in proc.stdout:  # following once it said where the records go
            if "running on local" in line:
                break
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "soak keeps running" in err and f"--attach {out}" in err
    handle = SoakHandle.load(out)
    assert _alive(handle.pid)
    stopped = CliRunner().invoke(main, ["soak", "--attach", str(out), "--stop", "--no-history"], env=env)
    assert stopped.exit_code == 0, stopped.output
    assert not _alive(handle.pid)


def test_following_a_soak_whose_process_died_ends_instead_of_waiting_forever(example_tflite, small_inputs, tmp_path,
                                                                            monkeypatch):
    """kill -9 (or the OOM killer, or a reboot) leaves status.json "running" for ever: once it stops
    moving, follow() looks for the process, marks the soak failed and ends with exit 3."""
    import edgeq.devices.soak as soak_module

    monkeypatch.setenv("EDGEQ_LOCAL_WORKDIR", str(tmp_path / "device"))
    monkeypatch.setattr(soak_module, "STALL_MIN_S", 1.0)  # instead of 2 minutes
    out = tmp_path / "soak"
    started = CliRunner().invoke(main, soak_args(example_tflite[1], small_inputs, out, "--duration", "10m",
                                                 "--window", "1s", "--detach"))
    assert started.exit_code == 0, started.output
    handle = SoakHandle.load(out)
    _wait_running(handle)
    os.kill(handle.pid, signal.SIGKILL)
    attached = CliRunner().invoke(main, ["soak", "--attach", str(out), "--no-history", "--json",
                                         str(tmp_path / "s.json")])
    assert attached.exit_code == 3, attached.output
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["state"] == "failed" and "gone without a final state" in summary["error"]


# ------------------------------------------------------------------ soak folders and the store


def test_devices_clean_removes_finished_soak_folders_never_a_running_one(ssh_device, example_tflite, small_inputs,
                                                                        tmp_path):
    device, inventory = ssh_device
    workdir = Path(device.workdir)
    runner = CliRunner()
    base = ["soak", "--device", "pi-loop", "--inventory", str(inventory), "--model", str(example_tflite[1]),
            "--inputs", str(small_inputs), "--window", "1s", "--no-history"]
    done = runner.invoke(main, base + ["--duration", "1s", "-o", str(tmp_path / "done")])
    assert done.exit_code == 0, done.output
    running = runner.invoke(main, base + ["--duration", "10m", "-o", str(tmp_path / "running"), "--detach"])
    assert running.exit_code == 0, running.output
    finished_id, running_id = SoakHandle.load(tmp_path / "done").soak_id, SoakHandle.load(tmp_path / "running").soak_id
    mine = workdir / "soaks" / "my-notes"  # the user's own folder there, old: edgeq never made it
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    os.utime(mine, (time.time() - 7200, time.time() - 7200))
    cleaned = runner.invoke(main, ["devices", "clean", "pi-loop", "--inventory", str(inventory)])
    assert cleaned.exit_code == 0, cleaned.output
    assert not (workdir / "soaks" / finished_id).exists()
    assert (workdir / "soaks" / running_id).exists() and running_id in cleaned.output
    job = json.loads((workdir / "soaks" / running_id / "job.json").read_text())
    assert Path(job["model"]).exists() and Path(job["inputs"]).exists()  # what the running soak reads stays
    follow = runner.invoke(main, ["soak", "--attach", str(tmp_path / "running"), "--stop", "--no-history",
                                  "--inventory", str(inventory), "--json", str(tmp_path / "s.json")])
    assert follow.exit_code == 0, follow.output
    assert json.loads((tmp_path / "s.json").read_text())["state"] == "stopped"
    cleaned = runner.invoke(main, ["devices", "clean", "pi-loop", "--inventory", str(inventory)])
    assert cleaned.exit_code == 0, cleaned.output
    assert [p.name for p in (workdir / "soaks").iterdir()] == ["my-notes"]  # only what edgeq made went
    assert (mine / "notes.txt").read_text() == "mine"
    gone = runner.invoke(main, ["soak", "--attach", str(tmp_path / "running"), "--no-history", "--inventory",
                                str(inventory)])
    assert gone.exit_code == 0, gone.output  # collected before it went: the host copy answers, no wait


def test_the_store_budget_drops_collected_soak_folders_when_the_next_soak_starts(example_tflite, small_inputs,
                                                                               tmp_path):
    inventory = write_inventory(tmp_path / "edgeq.toml", {"local": {"workdir": str(tmp_path / "device"),
                                                                    "store_mb": 0}})
    base = ["soak", "--device", "local", "--inventory", str(inventory), "--model", str(example_tflite[1]),
            "--inputs", str(small_inputs), "--duration", "1s", "--window", "1s", "--no-history"]
    first = CliRunner().invoke(main, base + ["-o", str(tmp_path / "a")])  # followed to its end: collected
    assert first.exit_code == 0, first.output
    collected = SoakHandle.load(tmp_path / "a")
    detached = CliRunner().invoke(main, base + ["-o", str(tmp_path / "b"), "--detach"])  # finishes, never collected
    assert detached.exit_code == 0, detached.output
    assert not Path(collected.remote_dir).exists() and "removed 1 collected soak folder" in detached.output, \
        detached.output
    uncollected = SoakHandle.load(tmp_path / "b")
    deadline = time.monotonic() + 60
    while _status(uncollected).get("state") != "finished":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    third = CliRunner().invoke(main, base + ["-o", str(tmp_path / "c")])
    assert third.exit_code == 0, third.output
    assert Path(uncollected.remote_dir).exists()  # its records were never pulled: not the budget's to drop
    assert "collected soak folder" not in third.output


# ------------------------------------------------------------------ what a lock holder wrote


HOSTILE = {"user": "mallory\x1b]0;pwned\x07", "host": "ws1\rALL GOOD                      ",
           "command": "edgeq run\x1b[2J\x9b31m", "pid": "1\n2", "since": float("nan"),
           "until": float("inf"), "job": "soak"}


@pytest.fixture
def hostile_holder(tmp_path):
    """A process holding the local board's lock, its facts written to hurt whoever prints them."""
    workdir = tmp_path / "device"
    workdir.mkdir()
    code = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600); "
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, sys.argv[2].encode()); print('held', flush=True); "
            "time.sleep(3600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(workdir / "lock"), json.dumps(HOSTILE)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    yield write_inventory(tmp_path / "edgeq.toml", {"local": {"workdir": str(workdir)}})
    holder.kill()
    holder.wait()


def test_lock_holder_facts_are_printed_without_terminal_escapes(hostile_holder, example_tflite, small_inputs,
                                                              tmp_path):
    runner = CliRunner()
    listed = runner.invoke(main, ["devices", "list", "--locks", "--inventory", str(hostile_holder)])
    assert listed.exit_code == 0, listed.output
    assert not any(c in listed.output for c in ESCAPES), repr(listed.output)
    assert "mallory\\x1b]0;pwned\\x07" in listed.output and "nan" not in listed.output
    checked = runner.invoke(main, ["devices", "check", "local", "--inventory", str(hostile_holder)])
    assert not any(c in checked.output for c in ESCAPES), repr(checked.output)
    busy = runner.invoke(main, ["run", "--device", "local", "--inventory", str(hostile_holder), "--model",
                                str(example_tflite[1]), "--inputs", str(small_inputs), "-o", str(tmp_path / "r"),
                                "--no-history"])
    assert busy.exit_code == 3 and "device busy" in busy.output, busy.output
    assert not any(c in busy.output for c in ESCAPES), repr(busy.output)


def test_devices_list_locks_json_is_strict(hostile_holder):
    listed = CliRunner().invoke(main, ["devices", "list", "--locks", "--json", "--inventory", str(hostile_holder)])
    assert listed.exit_code == 0, listed.output

    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    holder = json.loads(listed.output, parse_constant=refuse)["local"]["lock"]["holder"]
    assert holder["since"] is None and holder["until"] is None and holder["user"] == HOSTILE["user"]


def test_printable_shows_controls_as_escapes():
    from edgeq.devices.fleet import printable

    assert printable("a\x1b]0;t\x07b\rc\n\u202e\ud800") == "a\\x1b]0;t\\x07b\\x0dc\\x0a\\u202e\\ud800"
    assert printable("x" * 10, 5) == "xxxx…" and printable(3.5) == "3.5" and printable("ok é") == "ok é"


# ------------------------------------------------------------------ duplicate devices, known_hosts


def test_a_device_named_twice_is_refused(example_tflite, small_inputs, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEQ_LOCAL_WORKDIR", str(tmp_path / "device"))
    run = CliRunner().invoke(main, ["run", "--device", "local,local", "--model", str(example_tflite[1]), "--inputs",
                                    str(small_inputs), "-o", str(tmp_path / "r"), "--no-history"])
    one_error_line(run, 2, "--device local,local", "more than once")
    soak = CliRunner().invoke(main, ["soak", "--device", "local, local", "--model", str(example_tflite[1]),
                                     "--inputs", str(small_inputs), "-o", str(tmp_path / "s"), "--duration", "1s",
                                     "--window", "1s", "--no-history"])
    one_error_line(soak, 2, "more than once")
    check = CliRunner().invoke(main, ["devices", "check", "local", "local"])
    one_error_line(check, 2, "NAMES local,local", "more than once")


def test_known_hosts_that_is_a_folder_is_a_bad_setting(tmp_path, example_tflite, small_inputs):
    (tmp_path / "keys").mkdir()
    inventory = write_inventory(tmp_path / "edgeq.toml", {"pi": {
        "host": "127.0.0.1", "port": 9, "retries": 0, "connect_timeout": 1.0, "known_hosts": str(tmp_path / "keys")}})
    for args in (["devices", "check", "pi"], ["run", "--device", "pi", "--model", str(example_tflite[1]),
                                               "--inputs", str(small_inputs), "-o", str(tmp_path / "r"),
                                               "--no-history"]):
        result = CliRunner().invoke(main, [*args, "--inventory", str(inventory)])
        one_error_line(result, 2, "known_hosts", str(tmp_path / "keys"), "is a folder")


# ------------------------------------------------------------------ what labgrid answers


def fake_labgrid(tmp_path: Path, answer) -> str:
    """A 'labgrid Python' that answers every helper call with ``answer`` (a lab whose exporter sends it)."""
    script = tmp_path / "fake-labgrid-python"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{json.dumps(answer)}\nEOF\n")
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize("service, field", [
    ({"address": "127.0.0.1", "port": "ssh", "username": "pi"}, "port 'ssh'"),
    ({"address": "127.0.0.1", "port": 70000, "username": "pi"}, "port 70000"),
    ({"port": 22, "username": "pi"}, "address None"),
    ({"address": ["10.0.0.1", "10.0.0.2"], "port": 22}, "address ['10.0.0.1'"),
    ({"address": "127.0.0.1", "port": 22, "username": ["pi"]}, "username ['pi']"),
    ([1, 2], "no NetworkService"),
])
def test_a_bad_network_service_from_labgrid_is_exit_3_naming_place_and_field(tmp_path, example_tflite, small_inputs,
                                                                            service, field):
    python = fake_labgrid(tmp_path, {"ok": True, "service": service, "already_ours": False})
    inventory = write_inventory(tmp_path / "edgeq.toml", {"lab-pi": {
        "transport": "labgrid", "labgrid_place": "pi5-1", "labgrid_python": python, "workdir": "/tmp/x"}})
    result = CliRunner().invoke(main, ["run", "--device", "lab-pi", "--inventory", str(inventory), "--model",
                                       str(example_tflite[1]), "--inputs", str(small_inputs), "-o",
                                       str(tmp_path / "r"), "--no-history"])
    line = " ".join(result.output.split())
    assert result.exit_code == 3 and "Traceback" not in result.output, result.output
    assert "labgrid place pi5-1" in line and field in line, line


def test_labgrid_answering_a_list_is_exit_3(tmp_path, example_tflite, small_inputs):
    python = fake_labgrid(tmp_path, [1, 2, 3])
    inventory = write_inventory(tmp_path / "edgeq.toml", {"lab-pi": {
        "transport": "labgrid", "labgrid_place": "pi5-1", "labgrid_python": python}})
    result = CliRunner().invoke(main, ["devices", "check", "lab-pi", "--inventory", str(inventory)])
    assert result.exit_code == 3 and "Traceback" not in result.output, result.output
    assert "labgrid place pi5-1" in " ".join(result.output.split())


def test_a_missing_labgrid_python_is_a_bad_setting(tmp_path, example_tflite, small_inputs):
    inventory = write_inventory(tmp_path / "edgeq.toml", {"lab-pi": {
        "transport": "labgrid", "labgrid_place": "pi5-1", "labgrid_python": str(tmp_path / "no" / "python")}})
    result = CliRunner().invoke(main, ["run", "--device", "lab-pi", "--inventory", str(inventory), "--model",
                                       str(example_tflite[1]), "--inputs", str(small_inputs), "-o",
                                       str(tmp_path / "r"), "--no-history"])
    one_error_line(result, 2, "labgrid_python", "does not exist")
