"""Long on-device runs that survive the host: start detached, follow, reattach, stop.

The agent runs on the device detached (its own session, started by the agent session
that took the device's lock, which it inherits) and appends one JSON record per
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
from edgeq.devices.agent_client import AgentSession
from edgeq.devices.lock import acquire, owner_facts, to_stderr
from edgeq.devices.run import RunSpec, check_running_agent, job_values, prepare
from edgeq.errors import ConfigError, TransportError
from edgeq.results import refuse_larger, write_json_atomic

HANDLE_FILE = "soak.json"
RECORDS = "records.jsonl"
FINAL_STATES = ("finished", "stopped", "failed")
DEFAULT_RECONNECT_S = 60.0  # how long follow() rides out a lost device before giving up (--reconnect-timeout)
STATUS_CAP = 1 << 20  # bytes of status.json read; the agent writes a few hundred
FIRST_PASS_CAP = 64 << 20  # first_pass.json: ~11 bytes per sample of the input set
LOG_TAIL = 256 << 10  # the last bytes of agent.log that are pulled: a log can grow for hours
RECORD_LINE_MAX = 1 << 20  # one records.jsonl line; the agent writes ~1 KiB per window
# $0 python, $1 agent, $2 "soak", $3 job path: no user data is ever pasted into the script


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
        """The saved handle, checked: a hand-edited or truncated soak.json is one line, not a traceback."""
        path = Path(outdir) / HANDLE_FILE
        if not path.exists():
            raise ConfigError(f"{outdir}: no {HANDLE_FILE} here: not a soak output folder")
        try:
            handle = cls(**json.loads(path.read_text()))
            numbers = (handle.pid, handle.started, handle.duration_s, handle.window_s)
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
                raise TypeError("pid, started, duration_s and window_s must be numbers")
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{path}: not a soak handle ({exc})") from None
        if handle.duration_s <= 0 or handle.window_s <= 0:
            raise ConfigError(f"{path}: duration_s and window_s must be above 0")
        return handle


def check_soak(spec: RunSpec, duration_s: float, window_s: float, device: Device | None = None) -> dict:
    """The soak job's options, checked by the agent's own table (JOB_OPTIONS): call it before
    anything starts on a device, so a bad --window or --duration is one line on the host."""
    return job_values(spec, "soak", device, duration_s=duration_s, window_s=window_s)


def start_soak(device: Device, spec: RunSpec, outdir: Path, duration_s: float, window_s: float,
               wait_s: float = 0.0) -> SoakHandle:
    """Start a detached soak; its options (threads, sensors, sample rate) are the spec's soak options.

    The agent session takes the device's lock (queueing up to ``wait_s``) and starts the
    soak as its own detached child, which inherits the lock and holds it until it ends."""
    options = check_soak(spec, duration_s, window_s, device)
    prepared = prepare(spec, outdir)
    soak_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    with connect(device) as transport:
        deployer = Deployer(transport, device.workdir)
        agent = deployer.push_agent()
        with AgentSession(transport, device_python(device, transport), agent) as session:
            check_running_agent(device.name, session.hello())
            acquire(session, deployer.workdir, wait_s, to_stderr)
            deployer.hasher, deployer.free_space = session.sha256, session.free_bytes
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
            launched = session.request("launch_soak", job=job_remote, owner=owner_facts(), duration_s=duration_s,
                                       timeout=60)
    handle = SoakHandle(device.name, soak_id, remote_dir, int(launched["pid"]), time.time(),
                        duration_s, window_s)
    handle.save(outdir)
    return handle


def read_status(transport, handle: SoakHandle) -> dict:
    """status.json as a dict; anything else (garbled, not an object, too large) reads as "no status yet"."""
    try:
        status = json.loads(transport.read_from(posixpath.join(handle.remote_dir, "status.json"), 0, STATUS_CAP)
                            or b"{}")
    except ValueError:
        return {}
    if not isinstance(status, dict):
        return {}
    if isinstance(status.get("windows"), bool) or not isinstance(status.get("windows", 0), int):
        status["windows"] = 0
    return status


def pull_new_records(transport, handle: SoakHandle, outdir: Path) -> list[dict]:
    """Append complete lines the device wrote since the last pull to OUTDIR/records.jsonl.

    Every byte is kept locally as written (so the next pull starts at the right offset);
    only the valid records among the new lines are returned.
    """
    local = outdir / RECORDS
    have = local.stat().st_size if local.exists() else 0
    data = transport.read_from(posixpath.join(handle.remote_dir, RECORDS), have)
    complete = data[: data.rfind(b"\n") + 1]
    if not complete:
        if len(data) > RECORD_LINE_MAX:
            raise TransportError(f"{handle.device}: {RECORDS} of soak {handle.soak_id} holds a line longer than "
                                 f"{RECORD_LINE_MAX >> 20} MiB at byte {have}: not written by the agent")
        return []
    with open(local, "ab") as out:
        out.write(complete)
    return parse_records(complete.splitlines())[0]


def parse_records(lines) -> tuple[list[dict], int]:
    """(valid records, count of bad ones): one garbled line costs one record, never the soak."""
    records, bad = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if _valid_record(record):
            records.append(record)
        else:
            bad += 1
    return records, bad


def _number(value, optional=True) -> bool:
    if value is None:
        return optional
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _valid_record(record) -> bool:
    """What summarize() and the live log read: a window record with its numbers where they belong."""
    if not isinstance(record, dict):
        return False
    if record.get("type") != "window":
        return True  # other record types are kept and ignored by the window summaries
    latency, drift = record.get("latency_ms"), record.get("drift", {})
    return (isinstance(latency, dict) and all(_number(latency.get(k), False) for k in ("p50", "p99", "n"))
            and _number(record.get("index"), False) and isinstance(drift, dict)
            and all(_number(drift.get(k)) for k in ("checked", "mismatched"))
            and all(_number(record.get(k)) for k in ("elapsed_s", "rss_kb", "temp_c", "power_w", "throttled")))


def follow(device: Device, handle: SoakHandle, outdir: Path, on_records: Callable[[list[dict], dict], None],
           poll_s: float = 2.0, reconnect_for_s: float = DEFAULT_RECONNECT_S) -> dict:
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
                raise TransportError(f"{exc} (no connection for {reconnect_for_s:.0f} s); the soak keeps running "
                                     f"on the device: reattach with `edgeq soak --attach {outdir}`") from None
            on_records([], {"state": "reconnecting", "error": str(exc)})
            time.sleep(min(poll_s * 2, 10.0))


def _pull_files(transport, handle: SoakHandle, outdir: Path) -> None:
    """The soak's small files, each refused if over its cap; agent.log only as its tail."""
    for name, cap in (("status.json", STATUS_CAP), ("first_pass.json", FIRST_PASS_CAP)):
        remote = posixpath.join(handle.remote_dir, name)
        if transport.exists(remote):
            refuse_larger(transport, remote, cap, f"the {name} cap")
            transport.get(remote, outdir / "device" / name)
    _tail_log(transport, handle, outdir / "device" / "agent.log")


def _tail_log(transport, handle: SoakHandle, local: Path) -> None:
    """The last LOG_TAIL bytes of agent.log (a soak's log can grow for hours; its end says why it stopped)."""
    remote = posixpath.join(handle.remote_dir, "agent.log")
    if not transport.exists(remote):
        return
    tail = transport.run(["tail", "-c", str(LOG_TAIL), "--", remote], timeout=60, check=False)
    if tail.ok:
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(tail.stdout)


def stop_soak(device: Device, handle: SoakHandle) -> None:
    """Ask the agent to finish its current window and stop (a file, so no signal races)."""
    with connect(device) as transport, tempfile.TemporaryDirectory() as scratch:
        flag = Path(scratch) / "stop"
        flag.write_text("stop requested by the host\n")
        transport.put(flag, posixpath.join(handle.remote_dir, "stop"))


def read_records(outdir: Path) -> tuple[list[dict], int]:
    """(valid records, count of malformed lines) of OUTDIR/records.jsonl."""
    path = Path(outdir) / RECORDS
    if not path.exists():
        return [], 0
    with open(path, "rb") as handle:
        return parse_records(handle)


def load_records(outdir: Path) -> list[dict]:
    """The valid records of OUTDIR/records.jsonl; malformed lines are skipped (read_records counts them)."""
    return read_records(outdir)[0]
