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

from edgeq.devices.fleet import printable
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
            super().__init__(_ssh_device(device, settings, _service(device.name, self.place, answer)), **ssh_options)
        except BaseException:
            self.close()
            raise
        adopted = answer.get("adopted")
        if isinstance(adopted, dict):
            print(f"{device.name}: labgrid place {self.place} was left acquired by edgeq pid "
                  f"{printable(adopted.get('pid'), 20)} on this host, which is gone: taking it over (released when "
                  "this run ends)", file=sys.stderr, flush=True)
        how = "using the labgrid place you hold" if answer.get("already_ours") else "acquired labgrid place"
        print(f"{device.name}: {how} {self.place} (ssh {printable(self.target.address, 120)})", file=sys.stderr,
              flush=True)

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
            print(f"{name}: waiting for labgrid place {self.place}: {printable(answer.get('error'))}", file=sys.stderr,
                  flush=True)
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))

    def _helper(self, op: str) -> dict:
        """The helper's one-line answer; anything that is not a JSON object is a labgrid failure, in words."""
        argv = [self.python, str(HELPER), op, self.coordinator, self.place, str(os.getpid())]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=HELPER_TIMEOUT_S)
        except PermissionError as exc:
            return {"ok": False, "kind": "config", "error": f"labgrid_python {self.python} cannot be run: "
                                                            f"{exc.strerror}"}
        except (OSError, subprocess.TimeoutExpired) as exc:
            return {"ok": False, "kind": "unreachable", "error": f"labgrid did not answer: {exc}"}
        last = (done.stdout.strip().splitlines() or [""])[-1]
        try:
            answer = json.loads(last)
        except ValueError:
            tail = " ".join(done.stderr.split()[-40:])
            return {"ok": False, "kind": "labgrid", "error": f"labgrid helper exited {done.returncode}: {tail}"}
        if not isinstance(answer, dict):
            return {"ok": False, "kind": "labgrid", "error": f"labgrid answered {printable(last, 80)}, not an object"}
        return answer

    def close(self):
        if hasattr(self, "_client"):  # the SSH side was set up
            super().close()
        if self.acquired:
            self.acquired = False
            answer = self._helper("release")
            if not answer.get("ok"):
                print(f"edgeq: warning: labgrid place {self.place} was not released: "
                      f"{printable(answer.get('error'))}; "
                      f"release it with: labgrid-client -p {self.place} release", file=sys.stderr, flush=True)


def labgrid_python(configured: str | None, device: str) -> str:
    """The interpreter that has labgrid: configured, else labgrid-client's (its shebang), else this one.

    A configured one that does not exist or cannot be run is a bad setting (ConfigError, exit 2),
    not a broken lab."""
    if configured:
        given = os.path.expanduser(configured)
        found = shutil.which(given)
        if found is None:
            why = "is a folder" if os.path.isdir(given) else "is not executable" if os.path.exists(given) \
                else "does not exist"
            raise ConfigError(f"device {device}: labgrid_python {configured} {why}: set it to a Python with "
                              "labgrid (pip install labgrid)")
        return found
    client = shutil.which("labgrid-client")
    if client:
        try:
            with open(client, "rb") as handle:
                first = handle.readline().decode(errors="replace").strip()
        except OSError:
            first = ""
        words = first[2:].split() if first.startswith("#!") else []
        if words and os.path.isabs(words[0]) and shutil.which(words[0]):
            return words[0]
    return sys.executable


def _service(device: str, place: str, answer: dict) -> dict:
    """The place's NetworkService as labgrid gave it, checked: an address, a port 1-65535, a user name.

    Whatever the lab's exporter sends is refused here in one line naming the place and the field
    (exit 3: the lab is misconfigured), never a traceback further on."""
    service = answer.get("service")
    if not isinstance(service, dict):
        raise TransportError(f"{device}: labgrid place {place}: its answer has no NetworkService "
                             f"(got {printable(repr(service), 60)})")
    address, port, user = service.get("address"), service.get("port", 22), service.get("username")
    if not isinstance(address, str) or not address.strip() or not address.isprintable() or any(
            c.isspace() for c in address):
        raise TransportError(f"{device}: labgrid place {place}: NetworkService address "
                             f"{printable(repr(address), 60)} is not a host name or address")
    if isinstance(port, str) and port.strip().isdigit():
        port = int(port)
    if port is None:
        port = 22
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise TransportError(f"{device}: labgrid place {place}: NetworkService port {printable(repr(port), 60)} "
                             "is not a port number (1-65535)")
    if user is not None and (not isinstance(user, str) or not user.isprintable() or any(c.isspace() for c in user)):
        raise TransportError(f"{device}: labgrid place {place}: NetworkService username "
                             f"{printable(repr(user), 60)} is not a user name")
    return {"address": address.strip(), "port": port, "username": user or None}


def _ssh_device(device, settings: Settings, service: dict):
    """The same device as an SSH device at the place's NetworkService (inventory keys win for the user)."""
    ssh = {key: settings[key] for key in SSH_KEYS if settings.get(key) is not None}
    ssh.update(host=service["address"], port=service["port"])
    if service.get("username"):
        ssh.setdefault("user", service["username"])
    return dataclasses.replace(device, transport="ssh", settings=Settings(ssh))


def _error(device: str, place: str, answer: dict, wait_s: float) -> Exception:
    text = f"{device}: labgrid place {place}: {printable(answer.get('error', 'failed'), 400)}"
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
