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
import math
import posixpath
import re
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from edgeq.devices.deploy import Deployer
from edgeq.devices.inventory import Device, connect, device_python
from edgeq.devices.agent_client import AgentSession
from edgeq.devices.fleet import printable
from edgeq.devices.lock import owner_facts
from edgeq.devices.run import RunSpec, job_values, prepare
from edgeq.devices.session import OpenSession, open_session
from edgeq.errors import AgentError, ConfigError, EdgeqError, TransportError
from edgeq.devices.pull import refuse_larger
from edgeq.results import write_json_atomic

HANDLE_FILE = "soak.json"
RECORDS = "records.jsonl"
FINAL_STATES = ("finished", "stopped", "failed")
DEFAULT_RECONNECT_S = 60.0  # how long follow() rides out a lost device before giving up (--reconnect-timeout)
STATUS_CAP = 1 << 20  # bytes of status.json read; the agent writes a few hundred
FIRST_PASS_CAP = 64 << 20  # first_pass.json: ~11 bytes per sample of the input set
LOG_TAIL = 256 << 10  # the last bytes of agent.log that are pulled: a log can grow for hours
RECORD_LINE_MAX = 1 << 20  # one records.jsonl line; the agent writes ~1 KiB per window
# $0 python, $1 agent, $2 "soak", $3 job path: no user data is ever pasted into the script
MAX_DURATION_S = 30 * 86400.0  # a soak holds its board: longer than a month is a typo, not a test
STOP_GRACE_S = 2.0  # --stop: how long the agent gets to end the soak itself before it is signalled
STOP_KILL_S = 10.0  # after SIGTERM, how long before SIGKILL
STALL_MIN_S = 120.0  # follow(): no new window for max(3 windows, this) → is the soak process still there?
STARTING_GRACE_S = 600.0  # a soak folder without status.json younger than this may be a soak starting now
COLLECTED = "collected"  # marker in a soak folder: the host pulled it whole (the store budget may drop it)


def parse_duration(text: str, flag: str = "--duration") -> float:
    """``8h``, ``30m``, ``90s``, ``1h30m`` or plain seconds; ConfigError naming ``flag`` otherwise."""
    given = text
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        seconds = float(text)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ConfigError(f"{flag} {printable(given, 40)!r}: duration is not like 8h, 30m, 90s or 1h30m")
        seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    if not math.isfinite(seconds) or seconds > MAX_DURATION_S:
        raise ConfigError(f"{flag} {printable(given, 40)}: longer than a soak may run "
                          f"(at most {_hours(MAX_DURATION_S)}, 30 days)")
    return seconds


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:g}h"


def _words(seconds: float) -> str:
    """600 → 10m, 7200 → 2h, 90 → 90s: as --duration and --window are written."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def check_timing(duration_s: float, window_s: float) -> None:
    """--duration and --window together: finite, at most MAX_DURATION_S, and a window that fits.

    A window longer than the duration is refused, not clipped: the agent ends a soak only at a
    window's end, so it would run the whole window (a 2h window holds the board 2 h for a 10m soak)."""
    for flag, value in (("--duration", duration_s), ("--window", window_s)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{flag} {value!r}: not a finite number of seconds")
    if duration_s > MAX_DURATION_S:
        raise ConfigError(f"--duration {_words(duration_s)}: longer than a soak may run (at most "
                          f"{_hours(MAX_DURATION_S)}, 30 days)")
    if window_s > duration_s:
        raise ConfigError(f"--window {_words(window_s)} is longer than --duration {_words(duration_s)}: a soak records "
                          "whole windows, so it would run the whole window; use a --window of at most the duration")


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
    values = job_values(spec, "soak", device, duration_s=duration_s, window_s=window_s)
    check_timing(duration_s, window_s)
    return values


def start_soak(device: Device, spec: RunSpec, outdir: Path, duration_s: float, window_s: float,
               wait_s: float = 0.0) -> SoakHandle:
    """Start a detached soak; its options (threads, sensors, sample rate) are the spec's soak options.

    The agent session takes the device's lock (queueing up to ``wait_s``) and starts the
    soak as its own detached child, which inherits the lock and holds it until it ends."""
    options = check_soak(spec, duration_s, window_s, device)
    prepared = prepare(spec, outdir)
    soak_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    with open_session(device, lock=True, wait_s=wait_s) as opened:
        remote_dir, launched = _launch(opened, spec, soak_id, prepared.input_arrays, options, duration_s)
    pid = launched.get("pid") if isinstance(launched, dict) else None
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise AgentError(f"{device.name}: the agent did not say which process runs soak {soak_id} "
                         f"(answer {printable(launched, 80)})")
    handle = SoakHandle(device.name, soak_id, remote_dir, pid, time.time(), duration_s, window_s)
    handle.save(outdir)
    return handle


def _launch(opened: OpenSession, spec: RunSpec, soak_id: str, input_arrays: list, options: dict,
            duration_s: float) -> tuple[str, object]:
    """Push the model and inputs, write the job into the soak's folder and have the locked agent start
    it (the soak inherits the lock); (the folder, the agent's answer as it came: it should hold the pid)."""
    device, transport, deployer, session = opened.device, opened.transport, opened.deployer, opened.session
    model, model_sha = deployer.push(spec.model)
    inputs, inputs_sha = deployer.push(spec.inputs)
    remote_dir = deployer.path("soaks", soak_id)
    transport.makedirs(remote_dir)
    job = {"dir": remote_dir, "model": model, "model_sha256": model_sha, "inputs": inputs,
           "inputs_sha256": inputs_sha, "input_arrays": input_arrays, **options}
    job_remote = posixpath.join(remote_dir, "job.json")
    with tempfile.TemporaryDirectory() as scratch:
        local_job = Path(scratch) / "job.json"
        local_job.write_text(json.dumps(job))
        transport.put(local_job, job_remote)
    _tidy_before_launch(device, transport, session, deployer, keep=[model, inputs])
    return remote_dir, session.request("launch_soak", job=job_remote, owner=owner_facts(), duration_s=duration_s,
                                       timeout=60)


def _tidy_before_launch(device: Device, transport, session: AgentSession, deployer: Deployer, keep: list) -> None:
    """The store budget (``store_mb``) counts soak folders too: while this session holds the board's
    lock no soak runs on it, so soak folders the host has collected go, oldest first, while the
    store is over budget. A failure costs disk space, never the soak: it only warns."""
    budget = device.store_mb << 20
    try:
        measured = session.tidy_store(deployer.workdir, 1 << 62, keep=keep)  # measures, removes nothing
        tidied = tidy_soaks(device, transport, deployer.workdir, budget, int(measured["after_bytes"]),
                            collected_only=True)
    except (EdgeqError, KeyError, TypeError, ValueError) as exc:
        print(f"{device.name}: could not tidy the device's soak folders: {printable(exc)}", file=sys.stderr)
        return
    if tidied["removed"]:
        print(f"{device.name}: store over {device.store_mb} MB: removed {len(tidied['removed'])} collected soak "
              f"folder(s), oldest first", file=sys.stderr)


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


class Cancelled(Exception):
    """follow() was asked to stop following (Ctrl-C on the host); the soak keeps running."""


def follow(device: Device, handle: SoakHandle, outdir: Path, on_records: Callable[[list[dict], dict], None],
           poll_s: float = 2.0, reconnect_for_s: float = DEFAULT_RECONNECT_S,
           cancel: threading.Event | None = None) -> dict:
    """Pull records until the soak ends; ride out dropped connections for ``reconnect_for_s``.

    Never waits forever: a soak folder that is gone from the device ends it (with what the host
    pulled before), and a soak whose status stops moving is checked for its process — one that is
    gone without a final state (killed, out of memory, a reboot) is marked failed. ``cancel`` set
    (Ctrl-C) raises Cancelled within a poll."""
    cancel = cancel or threading.Event()
    lost_since = None
    stall = _Stall(handle)
    while True:
        try:
            with connect(device) as transport:
                while True:
                    if cancel.is_set():
                        raise Cancelled()
                    status = read_status(transport, handle)
                    if not status and not transport.exists(handle.remote_dir):
                        return _vanished(handle, outdir)
                    on_records(pull_new_records(transport, handle, outdir), status)
                    lost_since = None
                    if status.get("state") not in FINAL_STATES and stall.stalled(status):
                        status = settle_soak(device, transport, handle) or status
                    if status.get("state") in FINAL_STATES:
                        pull_new_records(transport, handle, outdir)
                        _pull_files(transport, handle, outdir)
                        _mark_collected(transport, handle)
                        return status
                    cancel.wait(poll_s)
        except TransportError as exc:
            lost_since = lost_since or time.monotonic()
            if time.monotonic() - lost_since > reconnect_for_s:
                raise TransportError(f"{exc} (no connection for {reconnect_for_s:.0f} s); the soak keeps running "
                                     f"on the device: reattach with `edgeq soak --attach {outdir}`") from None
            on_records([], {"state": "reconnecting", "error": str(exc)})
            cancel.wait(min(poll_s * 2, 10.0))


class _Stall:
    """When a soak's status has not moved for max(3 windows, STALL_MIN_S): time to look for its process."""

    def __init__(self, handle: SoakHandle):
        self.after_s = max(3 * handle.window_s, STALL_MIN_S)
        self.seen, self.since = None, time.monotonic()

    def stalled(self, status: dict) -> bool:
        mark = (status.get("state"), status.get("windows"), status.get("updated"))
        if mark != self.seen:
            self.seen, self.since = mark, time.monotonic()
            return False
        if time.monotonic() - self.since < self.after_s:
            return False
        self.since = time.monotonic()  # look again only after another stall period
        return True


def _vanished(handle: SoakHandle, outdir: Path) -> dict:
    """The soak's folder is gone from the device (cleaned): what the host pulled before is all there is."""
    local = Path(outdir) / "device" / "status.json"
    try:
        status = json.loads(local.read_text()) if local.exists() else {}
    except (OSError, ValueError):
        status = {}
    if isinstance(status, dict) and status.get("state") in FINAL_STATES:
        return status
    raise TransportError(f"{handle.device}: soak {handle.soak_id} is gone from the device ({handle.remote_dir} "
                         f"does not exist: removed by `edgeq devices clean`?); what was pulled before is in {outdir}")


def _mark_collected(transport, handle: SoakHandle) -> None:
    """Tell the store budget this finished soak is on the host now (its folder may go when space is short)."""
    try:
        if not transport.exists(posixpath.join(handle.remote_dir, COLLECTED)):
            with tempfile.TemporaryDirectory() as scratch:
                marker = Path(scratch) / COLLECTED
                marker.write_text("pulled by the host\n")
                transport.put(marker, posixpath.join(handle.remote_dir, COLLECTED))
    except TransportError:
        pass  # only the budget's business: the folder is then kept until `devices clean`


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


def stop_soak(device: Device, handle: SoakHandle, grace_s: float = STOP_GRACE_S,
              kill_s: float = STOP_KILL_S) -> dict:
    """Stop a soak now, not at the end of its window; {"how": …, "state": …} says how it went.

    The stop file comes first: an agent that looks for it while it measures ends the soak itself
    within ``grace_s`` and records the partial window ("agent"). Today's agent looks only at a
    window's end, which can be an hour away: then the soak process — checked to be this soak by its
    command line — gets SIGTERM (SIGKILL after ``kill_s``), and status.json says "stopped", with
    the window in progress not recorded ("signal"). A soak whose process is already gone is marked
    failed ("gone"); one already over is left as it is ("final"). A device without /proc, where the
    process cannot be identified, only gets the stop file ("flag": it stops at its window's end).
    """
    with connect(device) as transport:
        answer = _soak_tool(device, transport, "stop", timeout=grace_s + kill_s + 60,
                            dir=handle.remote_dir, pid=handle.pid, job=posixpath.join(handle.remote_dir, "job.json"),
                            grace_s=grace_s, kill_s=kill_s)
    if answer.get("how") == "stuck":
        raise TransportError(f"{handle.device}: soak {handle.soak_id} (pid {handle.pid}) did not end after SIGKILL")
    return answer


def settle_soak(device: Device, transport, handle: SoakHandle) -> dict | None:
    """A soak whose status stopped moving: if its process is gone, mark it failed and return that status."""
    answer = _soak_tool(device, transport, "stop", timeout=60, dir=handle.remote_dir, pid=handle.pid,
                        job=posixpath.join(handle.remote_dir, "job.json"), grace_s=0.0, kill_s=0.0, signal=False)
    status = answer.get("status")
    return status if answer.get("how") == "gone" and isinstance(status, dict) else None


def tidy_soaks(device: Device, transport, workdir: str, budget_bytes: int, other_bytes: int,
               collected_only: bool) -> dict:
    """Remove soak folders no soak runs in, oldest first, while ``other_bytes`` + the soak folders
    exceed ``budget_bytes`` (0: all of them). A running soak's folder is never removed (its process
    is looked up by its command line; a device without /proc keeps every unfinished soak), nor a
    folder that may be a soak starting now. ``collected_only`` (the store budget) removes only
    finished soaks the host has pulled whole; ``devices clean`` removes every finished or dead one.

    {"removed": [ids], "running": [ids], "before_bytes", "after_bytes", "keep": [files of running soaks]}
    """
    scan = _soak_tool(device, transport, "scan", timeout=300, root=workdir, starting_s=STARTING_GRACE_S)
    entries = [e for e in scan.get("soaks", []) if isinstance(e, dict)]
    running = [e for e in entries if e.get("running")]
    removable = [e for e in entries if not e.get("running") and not e.get("young")
                 and (e.get("collected") if collected_only else True)
                 and (e.get("state") in FINAL_STATES or e.get("dead"))]
    before = int(other_bytes) + sum(int(e.get("bytes") or 0) for e in entries)
    total, chosen = before, []
    for entry in sorted(removable, key=lambda e: e.get("used") or 0):
        if total <= budget_bytes and budget_bytes > 0:
            break
        chosen.append(entry["path"])
        total -= int(entry.get("bytes") or 0)
    removed = _soak_tool(device, transport, "remove", timeout=600, root=workdir, paths=chosen).get("removed", []) \
        if chosen else []
    gone = set(removed)
    after = before - sum(int(e.get("bytes") or 0) for e in entries if e["path"] in gone)
    return {"removed": [posixpath.basename(p) for p in removed],
            "running": [printable(posixpath.basename(e["path"]), 60) for e in running],
            "keep": [f for e in running for f in e.get("files", []) if isinstance(f, str)],
            "before_bytes": before, "after_bytes": after}


def clean_store_and_soaks(device: Device, keep_mb: int = 0) -> dict:
    """``devices clean``: the agent empties the store (pushed files, run folders) down to ``keep_mb``,
    keeping the model and inputs of a soak still running; then soak folders no soak runs in go,
    oldest first, until the whole store fits (all of them with 0). A running soak is never touched."""
    budget = keep_mb << 20
    with connect(device) as transport:
        with open_session(device, transport=transport, lock=False, hello=False) as opened:  # clean takes no lock
            workdir = opened.workdir
            scan = tidy_soaks(device, transport, workdir, 1 << 62, 0, collected_only=False)  # only looks
            tidied = dict(opened.session.tidy_store(workdir, budget, keep=scan["keep"], protect_s=0.0))
        soaks = tidy_soaks(device, transport, workdir, budget, int(tidied["after_bytes"]), collected_only=False)
    soak_before = soaks["before_bytes"] - int(tidied["after_bytes"])
    tidied.update(before_bytes=int(tidied["before_bytes"]) + soak_before, after_bytes=soaks["after_bytes"],
                  removed=int(tidied["removed"]) + len(soaks["removed"]),
                  soaks={"removed": soaks["removed"], "running": soaks["running"]})
    return tidied


def _soak_tool(device: Device, transport, op: str, timeout: float, **args) -> dict:
    """Run SOAK_TOOL (below) on the device with its Python: arguments as JSON on stdin, one JSON line back."""
    python = device_python(device, transport)
    result = transport.run([python, "-I", "-c", SOAK_TOOL], stdin=json.dumps(dict(args, op=op)).encode(),
                           timeout=timeout, check=False)
    lines = result.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else None
    except ValueError:
        answer = None
    if result.exit_code != 0 or not isinstance(answer, dict):
        tail = printable(" ".join(result.stderr.split()[-30:]) or result.stdout[-200:], 300)
        raise TransportError(f"{device.name}: soak {op} on the device failed (exit {result.exit_code}): {tail}")
    return answer


# Runs on the device (``python -I -c``: no file beside it is imported), stdlib only; its arguments
# come as JSON on stdin, never pasted into the text. A soak is "running" when the process named in
# its status (or handle) is alive, not a zombie, and has this soak's job.json on its command line.
SOAK_TOOL = r"""
import json, os, shutil, signal, sys, time
FINAL = ("finished", "stopped", "failed")
req = json.loads(sys.stdin.read())

def read_status(folder):
    try:
        with open(os.path.join(folder, "status.json")) as f:
            status = json.load(f)
        return status if isinstance(status, dict) else {}
    except (OSError, ValueError):
        return None

def write_status(folder, status):
    tmp = os.path.join(folder, ".status.json.host-%d" % os.getpid())
    with open(tmp, "w") as f:
        json.dump(status, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(folder, "status.json"))

def process(pid, job):
    # "running" (this soak), "gone" (no such process, a zombie, or another program), "unknown" (no /proc)
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return "gone"
    if not os.path.isdir("/proc/self"):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return "gone"
        except OSError:
            pass
        return "unknown"
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read()
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return "gone"
    if stat[stat.rfind(b")") + 2:][:1] in (b"Z", b"X"):
        return "gone"
    want = os.path.realpath(job)
    for arg in args:
        if arg.endswith(b"job.json") and os.path.realpath(os.fsdecode(arg)) == want:
            return "running"
    return "gone"

def exited(pid, job, wait_s):
    deadline = time.time() + wait_s
    while process(pid, job) == "running" and time.time() < deadline:
        time.sleep(0.05)
    return process(pid, job) != "running"

def settle(folder, status, state, note):
    status = dict(status or {}, state=state, updated=time.time())
    status["stopped_by" if state == "stopped" else "error"] = note
    write_status(folder, status)
    return status

def stop(req):
    folder, pid, job = req["dir"], req["pid"], req["job"]
    if not os.path.isdir(folder):
        return {"how": "missing"}
    if req.get("signal", True):
        with open(os.path.join(folder, "stop"), "w") as f:
            f.write("stop requested by the host\n")
    status = read_status(folder) or {}
    if status.get("state") in FINAL:
        return {"how": "final", "state": status["state"], "status": status}
    seen = process(pid, job)
    if seen == "gone":
        status = read_status(folder) or {}
        if status.get("state") in FINAL:
            return {"how": "final", "state": status["state"], "status": status}
        status = settle(folder, status, "failed", "the soak process (pid %s) is gone without a final state: "
                        "killed, out of memory or a reboot" % pid)
        return {"how": "gone", "state": "failed", "status": status}
    if seen == "unknown" or not req.get("signal", True):
        return {"how": "flag", "state": status.get("state")}
    deadline = time.time() + float(req.get("grace_s", 0))
    while time.time() < deadline:
        status = read_status(folder) or {}
        if status.get("state") in FINAL:  # it ended itself: wait for it to exit, so its lock is free too
            if exited(pid, job, float(req.get("kill_s", 10))):
                return {"how": "agent", "state": status["state"], "status": status}
            break  # its final state is written but it lingers: the signals below end it
        time.sleep(0.1)
    used = None
    for sig, wait_s in ((signal.SIGTERM, float(req.get("kill_s", 10))), (signal.SIGKILL, 5.0)):
        if process(pid, job) != "running":
            break
        try:
            os.kill(pid, sig)
        except OSError:  # gone meanwhile, or not ours to signal (then it is "stuck" below)
            break
        used = sig
        deadline = time.time() + wait_s
        while process(pid, job) == "running" and time.time() < deadline:
            time.sleep(0.05)
    if process(pid, job) == "running":
        return {"how": "stuck"}
    status = read_status(folder) or {}
    if status.get("state") in FINAL:
        return {"how": "agent", "state": status["state"], "status": status}
    name = "SIGKILL" if used == signal.SIGKILL else "SIGTERM"
    status = settle(folder, status, "stopped", "the host (edgeq soak --stop, %s): the window in progress "
                    "was not recorded" % name)
    return {"how": "signal", "signal": name, "state": "stopped", "status": status}

def size_of(path):
    total = 0
    for base, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(base, name)).st_size
            except OSError:
                pass
    return total

def scan(req):
    root = os.path.realpath(os.path.expanduser(req["root"]))
    base = os.path.join(root, "soaks")
    found, now = [], time.time()
    for name in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        path = os.path.join(base, name)
        if not os.path.isdir(path) or os.path.islink(path):
            continue
        status = read_status(path)
        job_path = os.path.join(path, "job.json")
        try:
            with open(job_path) as f:
                job = json.load(f)
        except (OSError, ValueError):
            job = {}
        job = job if isinstance(job, dict) else {}
        if os.path.realpath(str(job.get("dir", ""))) != os.path.realpath(path) and not _recent(path, now, req):
            continue  # no job.json of edgeq's naming this folder: not a soak edgeq made, never touched
        files = [job[k] for k in ("model", "inputs") if isinstance(job.get(k), str)]
        state = (status or {}).get("state")
        seen = process((status or {}).get("pid"), job_path) if status is not None else "gone"
        used = max([os.lstat(path).st_mtime] + [os.lstat(os.path.join(path, n)).st_mtime for n in
                    ("status.json", "records.jsonl", "collected") if os.path.exists(os.path.join(path, n))])
        # no status.json yet: a soak being set up now (young) or one that never started (old)
        young = status is None and now - used < float(req.get("starting_s", 600))
        # without /proc an unfinished soak cannot be told from a dead one: it counts as running
        running = seen == "running" or (seen == "unknown" and state not in FINAL)
        found.append({"path": path, "state": state, "running": running, "young": young,
                      "dead": not running and not young and state not in FINAL,
                      "collected": os.path.exists(os.path.join(path, "collected")),
                      "bytes": size_of(path), "used": used, "files": files if running else []})
    return {"soaks": found}

def _recent(path, now, req):
    # a folder made in the last starting_s: a soak being set up (its job.json not written yet)
    return now - os.lstat(path).st_mtime < float(req.get("starting_s", 600))


def remove(req):
    root = os.path.realpath(os.path.expanduser(req["root"]))
    base = os.path.join(root, "soaks")
    removed = []
    for path in req.get("paths") or []:
        real = os.path.realpath(path)
        if os.path.dirname(real) != base or not os.path.isdir(real) or os.path.islink(path):
            continue
        status = read_status(real)
        if status is not None and process(status.get("pid"), os.path.join(real, "job.json")) == "running":
            continue  # started again, or still there: never remove a running soak
        shutil.rmtree(real, ignore_errors=True)
        if not os.path.exists(real):
            removed.append(path)
    return {"removed": removed}

print(json.dumps({"stop": stop, "scan": scan, "remove": remove}[req["op"]](req)))
"""


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
