"""Long on-device runs that survive the host: start detached, follow, reattach, stop.

The agent runs on the device under ``setsid nohup`` and appends one JSON record per
window (latency stats, temperature, throttling, power, its own RSS, output drift) to
``records.jsonl`` with fsync. The host only reads: it can disconnect, come back with
``edgeq soak --attach``, and pull what exists; nothing is lost because nothing lives
on the host until it is pulled.
"""

from __future__ import annotations

import json
import posixpath
import re
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from edgeq.devices.deploy import Deployer
from edgeq.devices.inventory import Device, connect, device_python
from edgeq.devices.run import RunSpec, job_values, prepare
from edgeq.errors import ConfigError, TransportError
from edgeq.results import write_json_atomic

HANDLE_FILE = "soak.json"
RECORDS = "records.jsonl"
FINAL_STATES = ("finished", "stopped", "failed")
# $0 python, $1 agent, $2 "soak", $3 job path: no user data is ever pasted into the script
LAUNCH = 'cd "$(dirname "$3")" && setsid nohup "$0" "$@" > agent.log 2>&1 < /dev/null & echo $!'


def parse_duration(text: str) -> float:
    """``8h``, ``30m``, ``90s``, ``1h30m`` or plain seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ConfigError(f"duration {text!r} is not like 8h, 30m, 90s or 1h30m")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


@dataclass(frozen=True)
class SoakHandle:
    """Everything needed to find a soak again, saved as OUTDIR/soak.json."""

    device: str
    soak_id: str
    remote_dir: str
    pid: int
    started: float
    duration_s: float
    window_s: float

    def save(self, outdir: Path) -> None:
        write_json_atomic(outdir / HANDLE_FILE, asdict(self))

    @classmethod
    def load(cls, outdir: Path) -> "SoakHandle":
        path = Path(outdir) / HANDLE_FILE
        if not path.exists():
            raise ConfigError(f"{outdir}: no {HANDLE_FILE} here: not a soak output folder")
        return cls(**json.loads(path.read_text()))


def start_soak(device: Device, spec: RunSpec, outdir: Path, duration_s: float, window_s: float) -> SoakHandle:
    """Start a detached soak; its options (threads, sensors, sample rate) are the spec's soak options."""
    prepared = prepare(spec, outdir)
    options = job_values(spec, "soak", device, duration_s=duration_s, window_s=window_s)
    soak_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    with connect(device) as transport:
        deployer = Deployer(transport, device.workdir)
        agent = deployer.push_agent()
        model, model_sha = deployer.push(spec.model)
        inputs, inputs_sha = deployer.push(spec.inputs)
        remote_dir = deployer.path("soaks", soak_id)
        transport.makedirs(remote_dir)
        job = {"dir": remote_dir, "model": model, "model_sha256": model_sha, "inputs": inputs,
               "inputs_sha256": inputs_sha, "input_arrays": prepared.input_arrays, **options}
        job_remote = posixpath.join(remote_dir, "job.json")
        with tempfile.TemporaryDirectory() as scratch:
            local_job = Path(scratch) / "job.json"
            local_job.write_text(json.dumps(job))
            transport.put(local_job, job_remote)
        python = device_python(device, transport)
        launched = transport.run(["sh", "-c", LAUNCH, python, agent, "soak", job_remote], timeout=60)
    handle = SoakHandle(device.name, soak_id, remote_dir, int(launched.stdout.split()[-1]), time.time(),
                        duration_s, window_s)
    handle.save(outdir)
    return handle


def read_status(transport, handle: SoakHandle) -> dict:
    try:
        return json.loads(transport.read_from(posixpath.join(handle.remote_dir, "status.json"), 0) or b"{}")
    except ValueError:
        return {}


def pull_new_records(transport, handle: SoakHandle, outdir: Path) -> list[dict]:
    """Append complete lines the device wrote since the last pull to OUTDIR/records.jsonl."""
    local = outdir / RECORDS
    have = local.stat().st_size if local.exists() else 0
    data = transport.read_from(posixpath.join(handle.remote_dir, RECORDS), have)
    complete = data[: data.rfind(b"\n") + 1]
    if not complete:
        return []
    with open(local, "ab") as out:
        out.write(complete)
    return [json.loads(line) for line in complete.decode().splitlines() if line.strip()]


def follow(device: Device, handle: SoakHandle, outdir: Path, on_records: Callable[[list[dict], dict], None],
           poll_s: float = 2.0, reconnect_for_s: float = 600.0) -> dict:
    """Pull records until the soak ends; ride out dropped connections for ``reconnect_for_s``."""
    lost_since = None
    while True:
        try:
            with connect(device) as transport:
                while True:
                    status = read_status(transport, handle)
                    on_records(pull_new_records(transport, handle, outdir), status)
                    lost_since = None
                    if status.get("state") in FINAL_STATES:
                        pull_new_records(transport, handle, outdir)
                        _pull_files(transport, handle, outdir)
                        return status
                    time.sleep(poll_s)
        except TransportError as exc:
            lost_since = lost_since or time.monotonic()
            if time.monotonic() - lost_since > reconnect_for_s:
                raise TransportError(f"{exc}; the soak keeps running on the device: reattach with "
                                     f"`edgeq soak --attach {outdir}`") from None
            on_records([], {"state": "reconnecting", "error": str(exc)})
            time.sleep(min(poll_s * 2, 10.0))


def _pull_files(transport, handle: SoakHandle, outdir: Path) -> None:
    for name in ("status.json", "agent.log", "first_pass.json"):
        remote = posixpath.join(handle.remote_dir, name)
        if transport.exists(remote):
            transport.get(remote, outdir / "device" / name)


def stop_soak(device: Device, handle: SoakHandle) -> None:
    """Ask the agent to finish its current window and stop (a file, so no signal races)."""
    with connect(device) as transport, tempfile.TemporaryDirectory() as scratch:
        flag = Path(scratch) / "stop"
        flag.write_text("stop requested by the host\n")
        transport.put(flag, posixpath.join(handle.remote_dir, "stop"))


def load_records(outdir: Path) -> list[dict]:
    path = Path(outdir) / RECORDS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
