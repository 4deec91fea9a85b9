"""``edgeq devices …``: the inventory, reachability, host keys and device setup."""

from __future__ import annotations

import json
import sys

import click

from edgeq.cli.common import console, output_file, path_arg, write_json_file
from edgeq.errors import EXIT_BAD_INPUT


@click.group()
def devices():
    """The device inventory."""


@devices.command("list")
@click.option("--inventory", type=path_arg, envvar="EDGEQ_INVENTORY")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--locks", is_flag=True, help="Also ask each device who holds it (connects to every device).")
def devices_list(inventory, as_json, locks):
    """List the devices edgeq knows (local is always there); --locks: and who is using each."""
    from edgeq.devices.inventory import load_inventory

    found = load_inventory(inventory)
    held = _lock_states(found) if locks else {}
    if as_json:  # strict JSON: a holder's NaN or Infinity (the device wrote them) becomes null
        from edgeq.results import strict_json

        listing = {name: dict(d.as_dict(), **({"lock": held[name]} if locks else {})) for name, d in found.items()}
        click.echo(json.dumps(strict_json(listing), indent=1, allow_nan=False, default=str))
        return
    for name, d in found.items():
        click.echo(_listing(d))
        if locks:
            click.echo(" " * 4 + _lock_line(held[name]))


def _lock_states(found: dict) -> dict:
    from edgeq.devices.fleet import run_fleet
    from edgeq.devices.probe import probe_lock

    fleet = run_fleet(list(found.values()), probe_lock)
    return {**{name: {"error": str(error)} for name, error in fleet.failed.items()}, **fleet.succeeded}


def _lock_line(state: dict) -> str:
    from edgeq.devices.fleet import printable
    from edgeq.devices.lock import describe_holder

    if not isinstance(state, dict):
        return "lock unknown: the agent's answer is not a lock state"
    if "error" in state:
        return printable(f"lock unknown: {state['error']}", 76)
    return describe_holder(state.get("holder")) if state.get("held") else "free"


def _listing(device) -> str:
    """Name, transport and where, then python, workdir and the transport's other settings, in 80 columns.

    The transport words its own settings (``Transport.summary``), so a new transport lists
    sensibly without a change here.
    """
    import textwrap

    from edgeq.devices.transport import transport_class

    where, *rest = transport_class(device.transport).summary(device.settings) or [""]
    words = [f"python={device.python or 'auto'}", f"workdir={device.workdir}", *rest]
    line = f"{device.name:20} {device.transport:6} {where:20} " + " ".join(words)
    return textwrap.fill(line, 80, subsequent_indent=" " * 28, break_long_words=False, break_on_hyphens=False)


@devices.command("check")
@click.argument("names", nargs=-1)
@click.option("--tag", help="Every inventory device with this tag.")
@click.option("--inventory", type=path_arg, envvar="EDGEQ_INVENTORY")
@click.option("--json", "json_path", type=output_file)
def devices_check(names, tag, inventory, json_path):
    """Connect, start the agent and report what each device has (all devices by default)."""
    from edgeq.devices.inventory import load_inventory, select_devices
    from edgeq.devices.fleet import run_fleet
    from edgeq.devices.probe import probe_device

    found = load_inventory(inventory)
    chosen = select_devices(",".join(names) if names else ",".join(found), found, tag=tag, flag="NAMES")
    fleet = run_fleet(chosen, probe_device)
    if len(chosen) == 1 and fleet.failed:  # one device and a bad setting: the one line, exit 2
        raise next(iter(fleet.failed.values()))
    results = {name: facts for name, facts in fleet.succeeded.items()}
    for name, error in fleet.failed.items():  # a bad setting (exit 2), not an unreachable device
        results[name] = {"ok": False, "stage": "settings", "error": str(error)}
    print_device_table(console(), {d.name: results[d.name] for d in chosen})
    write_json_file(json_path, results)
    if fleet.failed:
        sys.exit(fleet.exit_code)
    if not all(f.get("ok") for f in results.values()):
        sys.exit(3)


def print_device_table(out, results: dict) -> None:
    """One row per device in 80 columns; sensors, OS and any problem on lines below it."""
    from rich.markup import escape
    from rich.table import Table

    from edgeq.devices.fleet import printable
    from edgeq.devices.lock import describe_holder

    def shown(value, limit: int = 60) -> str:  # what the device said: no escapes, no rich markup
        return escape(printable(value if value is not None else "", limit))

    table = Table(title="devices", title_justify="left", width=min(out.width, 80))
    for column in ("device", "state", "arch", "python", "TFLite runtime", "free"):
        table.add_column(column, overflow="fold")
    details = []
    for name, f in results.items():
        runtime = _dict(f.get("runtime"))
        free = _dict(f.get("disk")).get("free")
        table.add_row(escape(name), _state(f), shown(f.get("arch", "")), shown(f.get("python", "")),
                      shown(f"{runtime.get('name', '')} {runtime.get('version', '')}".strip()),
                      f"{free / 1e9:.1f} GB" if _finite(free) else "")
        if f.get("ok"):
            lock = _dict(f.get("lock"))
            details.append(f"{name}: {describe_holder(lock.get('holder')) if lock.get('held') else 'free'}; "
                           f"sensors {_sensors(f)}; {printable(f.get('os') or '', 40)}")
        else:
            details.append(f"{name}: {printable(f.get('stage', ''), 40)}: {printable(f.get('error', ''))}")
    out.print(table)
    for line in details:
        out.print(line, highlight=False, markup=False)


def _dict(value) -> dict:
    """A part of a device's answer that should be an object; anything else reads as empty."""
    return value if isinstance(value, dict) else {}


def _finite(value) -> bool:
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _state(facts: dict) -> str:
    from rich.markup import escape

    from edgeq.devices.fleet import printable

    if facts.get("ok"):
        return "[yellow]busy[/]" if _dict(facts.get("lock")).get("held") else "[green]ok[/]"
    return f"[red]{escape(printable(facts.get('stage') or 'failed', 20))}[/]"


def _sensors(facts: dict) -> str:
    from edgeq.devices.fleet import printable

    sensors = _dict(facts.get("sensors"))
    found = [f"{printable(k, 20)} {len(v)}" for k, v in sensors.items() if isinstance(v, list) and v]
    if sensors.get("vcgencmd"):
        found.append("vcgencmd")
    return ", ".join(found) or "none"


@devices.command("clean")
@click.argument("names", nargs=-1)
@click.option("--tag", help="Every inventory device with this tag.")
@click.option("--inventory", type=path_arg, envvar="EDGEQ_INVENTORY")
@click.option("--keep-mb", type=click.IntRange(min=0), default=0, show_default=True,
              help="Keep this many MB of the most recently used files instead of none.")
def devices_clean(names, tag, inventory, keep_mb):
    """Free a device's disk: remove pushed models, input sets and run folders (the agent stays)."""
    from edgeq.devices.fleet import printable, run_fleet
    from edgeq.devices.inventory import load_inventory, select_devices
    from edgeq.devices.soak import clean_store_and_soaks

    found = load_inventory(inventory)
    chosen = select_devices(",".join(names) if names else None, found, tag=tag, flag="NAMES")
    fleet = run_fleet(chosen, lambda device: clean_store_and_soaks(device, keep_mb))
    for name, tidied in fleet.succeeded.items():
        freed = tidied["before_bytes"] - tidied["after_bytes"]
        click.echo(f"{name}: freed {freed / 2**20:.1f} MB ({tidied['removed']} entries); "
                   f"{tidied['after_bytes'] / 2**20:.1f} MB kept")
        soaks = tidied["soaks"]
        if soaks["removed"] or soaks["running"]:
            running = f"; kept {len(soaks['running'])} still running: {', '.join(soaks['running'])}" \
                if soaks["running"] else ""
            click.echo(f"{name}: removed {len(soaks['removed'])} folder(s) of soaks that ended{running}")
    for name, error in fleet.failed.items():
        click.echo(f"{name}: {printable(error)}", err=True)
    if fleet.failed:
        sys.exit(fleet.exit_code)


@devices.command("trust")
@click.argument("name")
@click.option("--inventory", type=path_arg, envvar="EDGEQ_INVENTORY")
@click.option("--fingerprint", help="Pin only if the device presents this key (SHA256:...). For scripts.")
@click.option("--yes", is_flag=True, help="Pin (or replace a changed key) without asking: you checked the "
                                          "fingerprint another way.")
def devices_trust(name, inventory, fingerprint, yes):
    """Show a device's SSH host key fingerprint and pin it in its known_hosts file.

    A key pinned before for that host is replaced, after showing both fingerprints: a device
    that was reinstalled gets one new key, not a second one beside the old (which would keep
    failing). Declining exits 2.
    """
    from edgeq.devices.inventory import load_inventory, select_devices
    from edgeq.errors import TransportError
    from edgeq.devices.probe import fetch_host_key, pin_host_key, pinned_keys
    from edgeq.devices.transport.ssh import fingerprint as fingerprint_of

    (device,) = select_devices(name, load_inventory(inventory))
    target, key = fetch_host_key(device)
    shown = fingerprint_of(key)
    click.echo(f"{name} ({target.known_hosts_key}) presents {key.get_name()} {shown}")
    if fingerprint and fingerprint != shown:
        raise TransportError(f"{name}: presents {shown}, not the expected {fingerprint}; nothing pinned")
    pinned = pinned_keys(target)
    old = [(path, known) for path, known in pinned if known != f"{key.get_name()} {key.get_base64()}"]
    if pinned and not old:
        click.echo(f"already pinned in {pinned[0][0]}")
        return
    for path, known in old:
        click.echo(f"HOST KEY CHANGED: {path} pins {_fingerprint_line(known)} for {target.known_hosts_key}")
    question = "Replace the pinned key with the new one?" if old else "Trust this key?"
    if not (fingerprint or yes or click.confirm(question, default=False)):
        click.echo("not pinned: known_hosts unchanged", err=True)
        sys.exit(EXIT_BAD_INPUT)
    path = pin_host_key(target, key)
    click.echo(f"{'replaced the old key; ' if old else ''}pinned in {path}")


def _fingerprint_line(pinned: str) -> str:
    """``type SHA256:…`` of a ``type base64`` known_hosts key (a key that is not base64 is shown as it is)."""
    import base64
    import hashlib

    kind, _, blob = pinned.partition(" ")
    try:
        digest = hashlib.sha256(base64.b64decode(blob, validate=True)).digest()
    except ValueError:
        return pinned[:60]
    return f"{kind} SHA256:{base64.b64encode(digest).decode().rstrip('=')}"


@devices.command("setup")
@click.argument("names", nargs=-1, required=True)
@click.option("--inventory", type=path_arg, envvar="EDGEQ_INVENTORY")
@click.option("--offline", is_flag=True, help="Download wheels on this host and push them (air-gapped labs).")
@click.option("--runtime", type=click.Choice(["ai-edge-litert", "tflite-runtime"]), default="ai-edge-litert",
              show_default=True, help="tflite-runtime (2.14, numpy<2) for boards without ai-edge-litert wheels.")
@click.option("--base-python", default="python3", show_default=True, help="Device Python that creates the venv.")
@click.option("--wheels", "wheel_dir", type=path_arg, help="Keep downloaded wheels here (--offline).")
@click.option("--json", "json_path", type=output_file)
def devices_setup(names, inventory, offline, runtime, base_python, wheel_dir, json_path):
    """Make WORKDIR/venv on each device with numpy and a TFLite runtime; runs then use it."""
    from edgeq.devices.inventory import load_inventory, select_devices
    from edgeq.devices.fleet import printable, run_fleet
    from edgeq.devices.setup_device import setup_device

    out = console()
    chosen = select_devices(",".join(names), load_inventory(inventory), flag="NAMES")
    fleet = run_fleet(chosen, lambda d: setup_device(d, offline=offline, runtime=runtime, base_python=base_python,
                                                     wheel_dir=wheel_dir,
                                                     log=lambda line: out.log(line, markup=False, highlight=False)))
    for name, facts in fleet.succeeded.items():
        rt = _dict(facts.get("runtime"))
        said = printable(f"{facts.get('python_path')} (Python {facts.get('python')}, numpy {facts.get('numpy')}, "
                         f"{rt.get('name')} {rt.get('version')})")
        click.echo(f"{name}: ready: {said}")
    for name, error in fleet.failed.items():
        click.echo(f"{name}: FAILED: {printable(error)}", err=True)
    write_json_file(json_path, {"ready": fleet.succeeded, "failed": {n: str(e) for n, e in fleet.failed.items()}})
    sys.exit(fleet.exit_code)
