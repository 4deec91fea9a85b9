"""Soak against bad records, bad arguments, big logs and a dead device: one line, nothing lost."""

from __future__ import annotations

import json
import socket
import time

from click.testing import CliRunner
from conftest import write_inventory

from edgeq.cli.main import main
from edgeq.devices.inventory import load_inventory
from edgeq.devices.soak import LOG_TAIL, SoakHandle, follow, read_records


def window(index: int) -> dict:
    return {"type": "window", "index": index, "elapsed_s": index + 1.0, "rss_kb": 1000,
            "latency_ms": {"n": 10, "p50": 1.0, "p90": 1.1, "p99": 1.2, "mean": 1.0, "max": 1.3},
            "drift": {"checked": 10 * index, "mismatched": 0}, "temp_c": None, "power_w": None, "throttled": 0}


def finished_soak(tmp_path, lines: list[bytes], log: bytes = b"agent log\n"):
    """A soak folder on the local device as a finished agent leaves it, and its host folder."""
    remote = tmp_path / "device" / "soaks" / "s1"
    remote.mkdir(parents=True)
    (remote / "records.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    (remote / "status.json").write_text(json.dumps({"state": "finished", "windows": 3}))
    (remote / "agent.log").write_bytes(log)
    out = tmp_path / "soak"
    SoakHandle("local", "s1", str(remote), 1, time.time(), 3.0, 1.0).save(out)
    inventory = write_inventory(tmp_path / "edgeq.toml", {"local": {"workdir": str(tmp_path / "device")}})
    return out, inventory


def test_malformed_records_are_skipped_and_counted_on_every_attach(tmp_path):
    good = [json.dumps(window(k)).encode() for k in range(3)]
    lines = [good[0], b'{"type": "window", "index": 1, "latency', good[1], b"[1, 2]",
             json.dumps({"type": "window", "index": 9, "latency_ms": "fast"}).encode(), good[2]]
    out, inventory = finished_soak(tmp_path, lines)
    for attempt in range(2):  # the second attach reads the host copy that holds the bad lines too
        result = CliRunner().invoke(main, ["soak", "--attach", str(out), "--inventory", str(inventory),
                                           "--no-history", "--json", str(tmp_path / "s.json")])
        assert result.exit_code == 0, result.output
        assert "skipped 3 malformed record(s)" in result.output
        summary = json.loads((tmp_path / "s.json").read_text())
        assert summary["windows"] == 3 and summary["bad_records"] == 3 and summary["state"] == "finished"
    records, bad = read_records(out)
    assert [r["index"] for r in records] == [0, 1, 2] and bad == 3


def test_a_garbled_line_in_a_real_soak_costs_one_record(local, example_tflite, small_inputs, tmp_path,
                                                       monkeypatch):
    monkeypatch.setenv("EDGEQ_LOCAL_WORKDIR", str(tmp_path / "device"))
    out = tmp_path / "soak"
    runner = CliRunner()
    started = runner.invoke(main, ["soak", "--device", "local", "--model", str(example_tflite[1]), "--inputs",
                                   str(small_inputs), "--duration", "3s", "--window", "1s", "-o", str(out),
                                   "--detach"])
    assert started.exit_code == 0, started.output
    handle = SoakHandle.load(out)
    with open(f"{handle.remote_dir}/records.jsonl", "ab") as records:  # one whole line, appended as the agent does
        records.write(b"\x00\xffnot a record\n")
    attached = runner.invoke(main, ["soak", "--attach", str(out), "--no-history",
                                    "--json", str(tmp_path / "s.json")])
    assert attached.exit_code == 0, attached.output
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["windows"] == 3 and summary["bad_records"] == 1


def test_agent_log_is_tailed_not_pulled_whole(tmp_path):
    log = b"".join(b"line %08d of a chatty agent\n" % k for k in range(100_000))  # ~3 MB
    out, _ = finished_soak(tmp_path, [json.dumps(window(0)).encode()], log=log)
    device = load_inventory(write_inventory(tmp_path / "i.toml", {"local": {"workdir": str(tmp_path / "d")}}))["local"]
    status = follow(device, SoakHandle.load(out), out, lambda new, st: None, poll_s=0.1)
    assert status["state"] == "finished"
    pulled = (out / "device" / "agent.log").read_bytes()
    assert len(pulled) == LOG_TAIL and log.endswith(pulled)


def test_bad_windows_and_durations_fail_before_anything_starts(example_tflite, small_inputs, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEQ_LOCAL_WORKDIR", str(tmp_path / "device"))
    for window_arg, duration, why in (("0", "1m", "window_s must be at least 1"),
                                      ("0.2s", "1m", "window_s must be at least 1"),
                                      ("10s", "0", "duration_s must be above 0")):
        out = tmp_path / f"soak-{window_arg}-{duration}"
        result = CliRunner().invoke(main, ["soak", "--device", "local", "--model", str(example_tflite[1]),
                                           "--inputs", str(small_inputs), "--duration", duration,
                                           "--window", window_arg, "-o", str(out), "--no-history"])
        assert result.exit_code == 2, result.output
        assert why in result.output and "Traceback" not in result.output
        assert not out.exists() and not (tmp_path / "device").exists()


def test_attach_to_a_dead_device_gives_up_after_the_reconnect_timeout(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inventory = write_inventory(tmp_path / "edgeq.toml", {"pi": {
        "transport": "ssh", "host": "127.0.0.1", "port": port, "user": "nobody", "retries": 0,
        "connect_timeout": 1.0, "known_hosts": str(tmp_path / "known_hosts"), "workdir": "/tmp/edgeq"}})
    (tmp_path / "known_hosts").write_text("")
    out = tmp_path / "soak"
    SoakHandle("pi", "s1", "/tmp/edgeq/soaks/s1", 1, time.time(), 3600.0, 60.0).save(out)
    result = CliRunner().invoke(main, ["soak", "--attach", str(out), "--inventory", str(inventory),
                                       "--reconnect-timeout", "1", "--no-history"])
    assert result.exit_code == 3, result.output
    said = " ".join(result.output.split())  # the console wraps long lines
    assert "no connection for 1 s" in said and "soak --attach" in said


def test_a_broken_handle_is_one_line(tmp_path):
    out = tmp_path / "soak"
    out.mkdir()
    for text in ('{"device": "pi"}', "[1, 2]", '{"device": "pi", "soak_id": "s", "remote_dir": "/x", "pid": 1, '
                 '"started": 0, "duration_s": 60, "window_s": 0}'):
        (out / "soak.json").write_text(text)
        result = CliRunner().invoke(main, ["soak", "--attach", str(out), "--no-history"])
        assert result.exit_code == 2 and "soak.json" in result.output and "Traceback" not in result.output, \
            result.output
