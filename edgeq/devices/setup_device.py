"""``edgeq devices setup``: a Python on the device that can run the agent.

Makes ``workdir/venv`` with numpy and a TFLite runtime, installed from the network or,
for air-gapped labs, from wheels the host downloads for the device's platform and
Python and pushes. Runs that don't name a python then use this venv automatically.
"""

from __future__ import annotations

import json
import posixpath
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

from edgeq.devices.fleet import printable
from edgeq.devices.inventory import SETUP_VENV, Device, connect
from edgeq.devices.session import open_session
from edgeq.errors import ConfigError, RemoteCommandFailed, TransportError

RUNTIMES = {
    "ai-edge-litert": ("numpy", "ai-edge-litert"),
    "tflite-runtime": ("numpy<2", "tflite-runtime"),  # last release 2.14 (2023), for boards without litert wheels
}
PROBE = ("import json, platform, sys; print(json.dumps({'python': '%d.%d' % sys.version_info[:2], "
         "'machine': platform.machine(), 'libc': platform.libc_ver()}))")


def setup_device(device: Device, *, offline: bool = False, runtime: str = "ai-edge-litert",
                 base_python: str = "python3", wheel_dir: Path | None = None,
                 log: Callable[[str], None] = lambda message: None) -> dict:
    """Create or update the device's venv and check it with the agent; returns its facts."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r} (choose from {', '.join(RUNTIMES)})")
    packages = RUNTIMES[runtime]
    with connect(device) as transport:
        workdir = transport.expand(device.workdir)
        venv_python = posixpath.join(workdir, SETUP_VENV, "bin", "python")
        platform_facts = _probe(transport, base_python)
        log(f"{device.name}: Python {platform_facts['python']} on {platform_facts['machine']}")
        transport.makedirs(workdir)
        _checked(transport, [base_python, "-m", "venv", posixpath.join(workdir, SETUP_VENV)], "create a venv",
                 hint="on Debian/Raspberry Pi OS: sudo apt install python3-venv")
        if offline:
            remote_wheels = _push_wheels(transport, workdir, platform_facts, packages, wheel_dir, log)
            install = [venv_python, "-m", "pip", "install", "--no-index", "--find-links", remote_wheels, *packages]
        else:
            install = [venv_python, "-m", "pip", "install", "--upgrade", *packages]
        log(f"{device.name}: installing {' '.join(packages)}{' from pushed wheels' if offline else ''}")
        _checked(transport, install, "install packages", timeout=3600,
                 hint="no network on the device? use --offline")
        # the new venv's runtime, as the agent sees it; setting up takes no lock and runs nothing measured
        with open_session(device, transport=transport, python=venv_python, lock=False, verify=False) as opened:
            facts = opened.facts
    facts["python_path"] = venv_python
    return facts


def _probe(transport, base_python: str) -> dict:
    """The device Python's version, machine and libc, checked: what the device printed is data (a
    garbled answer is one line, exit 3; its strings are shown through ``printable``)."""
    result = transport.run([base_python, "-c", PROBE], check=False, timeout=60)
    if result.exit_code != 0:
        raise TransportError(f"{transport.device}: cannot run {base_python!r} on the device "
                             f"(exit {result.exit_code}): {printable(result.stderr.strip()[-200:])}")
    try:
        facts = json.loads((result.stdout.strip().splitlines() or [""])[-1])
    except ValueError:
        facts = None
    libc = facts.get("libc") if isinstance(facts, dict) else None
    if not (isinstance(facts, dict) and isinstance(facts.get("python"), str)
            and re.fullmatch(r"\d+\.\d+", facts["python"]) and isinstance(facts.get("machine"), str)
            and isinstance(libc, (list, tuple)) and all(isinstance(x, str) for x in libc)):
        raise TransportError(f"{transport.device}: {base_python!r} on the device answered "
                             f"{printable(result.stdout.strip()[-120:])!r}, not its version and platform")
    facts["machine"] = printable(facts["machine"], 40)
    return facts


def _checked(transport, argv: list[str], what: str, timeout: float = 600, hint: str = "") -> None:
    try:
        transport.run(argv, timeout=timeout)
    except RemoteCommandFailed as exc:
        raise TransportError(f"{transport.device}: could not {what}: {exc}" + (f" ({hint})" if hint else "")) from None


def platform_tags(machine: str, libc: list | tuple) -> list[str]:
    """pip --platform tags a device with this glibc accepts, newest first."""
    name, version = (list(libc) + ["", ""])[:2]
    if name != "glibc" or not version:
        raise ConfigError(f"device libc is {printable(name or 'unknown', 40)}: only glibc (manylinux) wheels can be "
                          "downloaded")
    numbers = re.match(r"(\d+)\.(\d+)", version)
    if numbers is None:
        raise TransportError(f"device glibc version {printable(version, 40)!r} is not like 2.36")
    major, minor = int(numbers.group(1)), int(numbers.group(2))
    arch = {"arm64": "aarch64", "armv8l": "armv7l"}.get(machine, machine)
    tags = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 16, -1)]
    return tags + [f"manylinux2014_{arch}", "any"]


def wheel_fits(filename: str, facts: dict) -> bool:
    """Whether the board can install this wheel (its Python and platform tags, PEP 427 names): a --wheels
    folder shared by several kinds of board holds others' wheels too, and those are not pushed."""
    parts = filename[:-len(".whl")].split("-")
    if not filename.endswith(".whl") or len(parts) < 5:
        return False
    python_tags, abi, platforms = parts[-3].split("."), parts[-2], parts[-1].split(".")
    major, minor = (int(x) for x in str(facts["python"]).split(".")[:2])
    exact = f"cp{major}{minor}"
    stable = abi == "abi3" and any(re.fullmatch(rf"cp{major}(\d+)", t) and int(t[3:]) <= minor for t in python_tags)
    pure = any(t in ("py3", f"py{major}{minor}") for t in python_tags)
    accepted = set(platform_tags(facts["machine"], facts["libc"]))
    return (exact in python_tags or stable or pure) and any(p in accepted for p in platforms)


def download_wheels(facts: dict, packages: tuple[str, ...], dest: Path) -> list[Path]:
    """Host-side ``pip download`` of wheels for the device's platform and Python."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", str(dest),
               "--python-version", facts["python"], "--implementation", "cp"]
    for tag in platform_tags(facts["machine"], facts["libc"]):
        command += ["--platform", tag]
    done = subprocess.run(command + list(packages), capture_output=True, text=True)
    if done.returncode != 0:
        tail = " ".join(done.stderr.strip().splitlines()[-2:])
        raise TransportError(f"no wheels for Python {facts['python']} on {facts['machine']} "
                             f"({' '.join(packages)}): {tail}")
    return sorted(dest.glob("*.whl"))


def _push_wheels(transport, workdir: str, facts: dict, packages, wheel_dir: Path | None, log) -> str:
    remote = posixpath.join(workdir, "wheels")
    transport.makedirs(remote)
    with tempfile.TemporaryDirectory(prefix="edgeq-wheels-") as scratch:
        folder = Path(wheel_dir) if wheel_dir else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        wheels = [w for w in download_wheels(facts, packages, folder) if wheel_fits(w.name, facts)]
        log(f"{transport.device}: pushing {len(wheels)} wheels ({sum(w.stat().st_size for w in wheels) / 1e6:.0f} MB)")
        for wheel in wheels:
            target = posixpath.join(remote, wheel.name)
            if not transport.exists(target):
                transport.put(wheel, target)
    return remote
