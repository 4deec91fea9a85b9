"""A board in a shared labgrid lab: acquire its place, use its SSH service, release it.

labgrid's coordinator already does what a shared lab needs (places, who holds which,
reservations), so edgeq does not keep a second booking system: a device with
``transport = "labgrid"`` and ``labgrid_place = "pi5-1"`` acquires that place when edgeq
connects, takes the address, port and user of the place's ``NetworkService`` resource,
and runs everything through edgeq's own SSH transport (host keys, retries, transfers);
closing the transport releases the place — also after Ctrl-C, which unwinds through the
``with connect(...)`` that opened it. A place the user acquired beforehand (with
``labgrid-client acquire``) is used and left acquired.

The coordinator comes from ``labgrid_coordinator``, else ``$LG_COORDINATOR`` as for
labgrid-client, else labgrid's default. labgrid itself runs in the lab's own Python
(``labgrid_python``, else the one whose ``labgrid-client`` is on PATH): it is not an edgeq
dependency (see ``labgrid_helper.py``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from edgeq.devices.transport.settings import Setting, Settings
from edgeq.devices.transport.ssh import SshTransport
from edgeq.errors import ConfigError, DeviceBusy, TransportError

HELPER = Path(__file__).with_name("labgrid_helper.py")
DEFAULT_COORDINATOR = "127.0.0.1:20408"
POLL_S = 2.0
HELPER_TIMEOUT_S = 120.0
SSH_KEYS = ("user", "identity_file", "known_hosts", "connect_timeout", "retries")


class LabgridTransport(SshTransport):
    """SSH to the board behind a labgrid place, held for as long as this transport is open."""

    SETTINGS = (
        Setting("labgrid_place", str, None, "the labgrid place to acquire (required)"),
        Setting("labgrid_coordinator", str, None, "HOST:PORT; default $LG_COORDINATOR, else 127.0.0.1:20408"),
        Setting("labgrid_python", str, None, "a Python with labgrid; default: labgrid-client's on PATH"),
        Setting("labgrid_wait", float, 0.0, "seconds to wait while someone else holds the place", low=0),
        *(s for s in SshTransport.SETTINGS if s.name in SSH_KEYS),
    )

    def __init__(self, device, **ssh_options):
        settings = self.settings_of(device)
        if not settings["labgrid_place"]:
            raise ConfigError(f"device {device.name}: transport labgrid needs labgrid_place = \"PLACE\"")
        self.place = settings["labgrid_place"]
        self.coordinator = settings["labgrid_coordinator"] or os.environ.get("LG_COORDINATOR") \
            or DEFAULT_COORDINATOR
        self.python = labgrid_python(settings["labgrid_python"], device.name)
        self.acquired = False
        answer = self._acquire(device.name, settings["labgrid_wait"])
        self.acquired = not answer.get("already_ours")
        try:
            super().__init__(_ssh_device(device, settings, answer["service"]), **ssh_options)
        except BaseException:
            self.close()
            raise
        how = "using the labgrid place you hold" if answer.get("already_ours") else "acquired labgrid place"
        print(f"{device.name}: {how} {self.place} (ssh {self.target.address})", file=sys.stderr, flush=True)

    @classmethod
    def read_settings(cls, device, entry, where=None):
        return super(SshTransport, cls).read_settings(device, entry, where)

    @classmethod
    def summary(cls, settings) -> list[str]:
        where = f"place {settings.get('labgrid_place')}"
        rest = [f"{s.name}={settings.get(s.name)}" for s in cls.SETTINGS
                if s.name != "labgrid_place" and settings.get(s.name) != s.default]
        return [where, *rest]

    def _acquire(self, name: str, wait_s: float) -> dict:
        deadline = time.monotonic() + wait_s
        while True:
            answer = self._helper("acquire")
            if answer.get("ok"):
                return answer
            if answer.get("kind") != "busy" or time.monotonic() >= deadline:
                raise _error(name, self.place, answer, wait_s)
            print(f"{name}: waiting for labgrid place {self.place}: {answer['error']}", file=sys.stderr, flush=True)
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))

    def _helper(self, op: str) -> dict:
        argv = [self.python, str(HELPER), op, self.coordinator, self.place]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=HELPER_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return {"ok": False, "kind": "unreachable", "error": f"labgrid did not answer: {exc}"}
        last = (done.stdout.strip().splitlines() or [""])[-1]
        try:
            return json.loads(last)
        except ValueError:
            tail = " ".join(done.stderr.split()[-40:])
            return {"ok": False, "kind": "labgrid", "error": f"labgrid helper exited {done.returncode}: {tail}"}

    def close(self):
        if hasattr(self, "_client"):  # the SSH side was set up
            super().close()
        if self.acquired:
            self.acquired = False
            answer = self._helper("release")
            if not answer.get("ok"):
                print(f"edgeq: warning: labgrid place {self.place} was not released: {answer.get('error')}; "
                      f"release it with: labgrid-client -p {self.place} release", file=sys.stderr, flush=True)


def labgrid_python(configured: str | None, device: str) -> str:
    """The interpreter that has labgrid: configured, else labgrid-client's (its shebang), else this one."""
    if configured:
        return os.path.expanduser(configured)
    client = shutil.which("labgrid-client")
    if client:
        with open(client, "rb") as handle:
            first = handle.readline().decode(errors="replace").strip()
        if first.startswith("#!") and os.path.isabs(first[2:].split()[0]):
            return first[2:].split()[0]
    return sys.executable


def _ssh_device(device, settings: Settings, service: dict):
    """The same device as an SSH device at the place's NetworkService (inventory keys win for the user)."""
    ssh = {key: settings[key] for key in SSH_KEYS if settings.get(key) is not None}
    ssh.update(host=service["address"], port=int(service["port"]))
    ssh.setdefault("user", service.get("username"))
    return dataclasses.replace(device, transport="ssh", settings=Settings(ssh))


def _error(device: str, place: str, answer: dict, wait_s: float) -> Exception:
    text = f"{device}: labgrid place {place}: {answer.get('error', 'failed')}"
    kind = answer.get("kind")
    if kind == "busy":
        waited = f" (waited {wait_s:g} s)" if wait_s else " (labgrid_wait = SECONDS to queue)"
        return DeviceBusy(text + waited)
    if kind == "missing":
        return ConfigError(text + '; set labgrid_python to a Python with labgrid (pip install labgrid)')
    if kind in ("config", "usage"):
        return ConfigError(text)
    return TransportError(text)


TRANSPORT = LabgridTransport
