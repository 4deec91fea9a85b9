"""``edgeq deploy install|status|rollback``: the verified model at the application's own path, fleet-wide.

Not to be confused with the push of models and inputs into edgeq's own store for a run
(``edgeq.devices.deploy``): this installs the file the application opens.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import click

from edgeq.cli.common import (always, console, db_option, diagnostics, exit_interrupted, output_file, path_arg,
                              record_history, wait_option, write_json_file)
from edgeq.errors import ConfigError


@click.group()
def deploy():
    """Install an evaluated model where the application loads it, with canary, waves and rollback."""


def _devices(device, tag, inventory):
    from edgeq.devices.inventory import load_inventory, select_devices

    if not (device or tag):
        raise ConfigError("name the devices: --device NAME[,NAME…] or --tag TAG")
    return select_devices(device, load_inventory(inventory), tag=tag)


def target_options(f):
    for decorator in (
        click.option("--inventory", type=path_arg, envvar="EDGEQ_INVENTORY", help="Device inventory (edgeq.toml)."),
        click.option("--tag", help="Every inventory device with this tag (instead of --device)."),
        click.option("--device", help="Device name(s) from the inventory: NAME or NAME,NAME,…"),
        click.option("--to", "to", metavar="PATH", help="The path the application opens (default: each device's "
                     "install_path from the inventory)."),
    ):
        f = decorator(f)
    return f


@deploy.command("install")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@target_options
@click.option("--report", type=path_arg, help="The evaluate OUTDIR or report.json that vouches for MODEL "
              "(default: the newest matching evaluation in the history database).")
@click.option("--require", type=click.Choice(["robust", "degraded"]), default="robust", show_default=True,
              help="The weakest verdict that may ship.")
@click.option("--force", is_flag=True, help="Deploy without a passing evaluation (recorded as forced).")
@click.option("--canary", type=click.IntRange(min=0), default=0, show_default=True,
              help="Install on this many devices first; the rest follow only if they pass.")
@click.option("--wave", type=click.IntRange(min=0), default=0, show_default=True,
              help="Devices per step after the canary (0: all the rest at once).")
@click.option("--max-failures", type=click.IntRange(min=0), default=0, show_default=True,
              help="Stop the rollout when more devices than this have failed.")
@click.option("--rollback-on-abort", is_flag=True, help="When the rollout stops, send the devices it already "
              "moved back to their previous version.")
@click.option("--restart", metavar="CMD", help="Run on the device after the install (its shell), e.g. "
              "'systemctl restart app'.")
@click.option("--health", metavar="CMD", help="Run on the device after the restart; a non-zero exit rolls back.")
@click.option("--timeout", "command_timeout_s", type=click.FloatRange(min=1), default=60.0, show_default=True,
              metavar="SECONDS", help="Longest --restart / --health may run.")
@click.option("--tolerance", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Smoke check: largest output difference from the evaluation, relative to the output's "
                   "magnitude (0: bit-exact).")
@click.option("--keep", type=click.IntRange(min=2), default=3, show_default=True,
              help="Releases kept on each device (the current one and the rollback target always).")
@wait_option
@db_option
@click.option("--no-history", is_flag=True, help="Do not record the deploy in the results database.")
@click.option("--json", "json_path", type=output_file, help="Per-device results as JSON (- for stdout).")
@click.option("--junit", "junit_path", type=output_file, help="JUnit XML, one test per device.")
def deploy_install(model, device, tag, inventory, to, report, require, force, canary, wave, max_failures,
                   rollback_on_abort, restart, health, command_timeout_s, tolerance, keep, wait_s, db, no_history,
                   json_path, junit_path):
    """Install MODEL at --to PATH on each device: only with a passing evaluation on its device class."""
    from edgeq.files import sha256_file
    from edgeq.install.device import InstallPlan, install_on, rollback_on
    from edgeq.install.rollout import RolloutPolicy, roll_out

    targets = _devices(device, tag, inventory)
    sha = sha256_file(model)
    evidence = _evidence(model, sha, report, db, force)
    plan = InstallPlan(model=model, sha256=sha, to=to, evidence=evidence, require=require, force=force,
                       report=str(report) if report else None, tolerance=tolerance, restart=restart, health=health,
                       command_timeout_s=command_timeout_s, keep=keep, wait_s=wait_s)
    for target in targets:
        plan.path_for(target)  # every device has a path before any is touched
    notes = diagnostics()
    notes.print(f"deploy {model.name} ({sha[:12]}) to {len(targets)} device(s); require {require}"
                + (" (--force)" if force else "") + f"; evidence: {len(evidence)} evaluation(s)",
                highlight=False, markup=False)
    policy = RolloutPolicy(canary=canary, wave=wave, max_failures=max_failures, rollback_on_abort=rollback_on_abort)
    cancel = threading.Event()
    try:
        rollout = roll_out(targets, lambda d: install_on(d, plan), policy,
                           lambda d: rollback_on(d, plan.to, wait_s), announce=lambda line: notes.print(
                               line, highlight=False, markup=False), cancel=cancel)
    except KeyboardInterrupt:
        cancel.set()
        exit_interrupted("edgeq: interrupted: each device is on its old or its new version; "
                         "`edgeq deploy status` says which")
    finally:
        plan.close()
    _finish(rollout.results, model, sha, json_path, junit_path, db, no_history,
            extra={"model": str(model), "sha256": sha, "require": require, "forced": force, **rollout.as_dict()})
    if rollout.aborted:
        always(f"edgeq: {rollout.aborted}")
    sys.exit(rollout.exit_code)


def _evidence(model: Path, sha: str, report, db, force: bool) -> list:
    """Every evaluation of MODEL; none at all is refused here, before any device is touched."""
    from edgeq.install.evidence import NoEvidence, from_history, from_reports
    from edgeq.store.db import Store

    if report is not None:
        found = from_reports(report, sha)
        where = f"--report {report}"
    else:
        with Store.open(db) as store:
            found = from_history(store, sha)
            where = f"the history database {store.shown}"
    if not found and not force:
        raise NoEvidence(f"{model} ({sha[:12]}): no evaluation of this model in {where}: run `edgeq evaluate` "
                         f"on it (or pass --report OUTDIR), or deploy with --force")
    return found


def _finish(results: dict, model, sha, json_path, junit_path, db, no_history, extra: dict,
            action: str = "deploy") -> None:
    from edgeq.files import write_text
    from edgeq.install.records import deploy_records, junit_xml

    _table(results)
    for name, result in results.items():  # the table shortens details; a failure is said in full
        if result.get("status") in ("failed", "rolled-back"):
            always(f"edgeq: {name}: {result.get('detail')}")
    write_json_file(json_path, extra)
    if junit_path:
        write_text(junit_path, junit_xml(results, model.name if model else "rollback"))
    if not no_history:
        record_history(db, deploy_records(results, model, sha, action))


def _table(results: dict) -> None:
    out = console()
    width = max([6] + [len(n) for n in results])
    out.print(f"{'DEVICE':<{width}}  {'STATUS':<12} {'VER':>4}  DETAIL", highlight=False, markup=False)
    for name, r in results.items():
        detail = (r.get("detail") or "").replace("\n", " ")
        room = max(20, 80 - width - 21)
        detail = detail if len(detail) <= room else detail[:room - 1] + "…"
        version = r.get("version") if r.get("version") is not None else (r.get("to") or {}).get("version", "")
        out.print(f"{name:<{width}}  {r['status']:<12} {str(version if version is not None else ''):>4}  {detail}",
                  highlight=False, markup=False, soft_wrap=True)


@deploy.command("status")
@target_options
@click.option("--json", "json_path", type=output_file, help="Per-device install records as JSON (- for stdout).")
def deploy_status(device, tag, inventory, to, json_path):
    """What runs where: each device's installed model, version, when, by whom, and changes behind edgeq's back."""
    from edgeq.devices.fleet import printable, run_fleet
    from edgeq.install.device import status_of

    targets = _devices(device, tag, inventory)
    found = run_fleet(targets, lambda d: status_of(d, to))
    out = console()
    for name, state in found.succeeded.items():
        out.print(_status_line(state), highlight=False, markup=False, soft_wrap=True)
    for name, error in found.failed.items():
        always(f"edgeq: {name}: {printable(error)}")
    write_json_file(json_path, {"devices": found.succeeded, "failed": {n: str(e) for n, e in found.failed.items()}})
    if any(s.get("changed_outside") for s in found.succeeded.values()):
        always("edgeq: a model was changed outside edgeq (see above)")
        sys.exit(1)
    sys.exit(found.exit_code)


def _status_line(state: dict) -> str:
    current = state.get("current") or {}
    meta = current.get("meta") or {}
    head = f"{state['device']}: {state['path']}"
    if not state.get("managed"):
        return f"{head}: not installed by edgeq ({state.get('kind')})"
    when = _when(current.get("installed_at"))
    line = (f"{head}: v{current.get('version')} {str(current.get('sha256'))[:12]} {meta.get('model_name') or ''}"
            f" since {when} by {meta.get('by') or '?'}" + (" (forced)" if meta.get("forced") else "")
            + (f", from {meta['report']}" if meta.get("report") else ""))
    if state.get("changed_outside"):
        line += f"\n  CHANGED OUTSIDE EDGEQ: {state.get('why')}"
    return line


def _when(stamp) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if isinstance(stamp, (int, float)) else "?"


@deploy.command("rollback")
@target_options
@click.option("--version", "to_version", type=click.IntRange(min=0), help="Go back to this version (default: "
              "the one before the current).")
@wait_option
@db_option
@click.option("--no-history", is_flag=True, help="Do not record the rollback in the results database.")
@click.option("--json", "json_path", type=output_file, help="Per-device results as JSON (- for stdout).")
def deploy_rollback(device, tag, inventory, to, to_version, wait_s, db, no_history, json_path):
    """Switch each device's path back one version (atomically, holding its lock)."""
    from edgeq.devices.fleet import printable, run_fleet
    from edgeq.install.device import rollback_on

    targets = _devices(device, tag, inventory)
    done = run_fleet(targets, lambda d: rollback_on(d, to, wait_s, to_version))
    results = {name: dict(r, version=(r.get("to") or {}).get("version"),
                          detail=f"v{(r.get('from') or {}).get('version')} -> v{(r.get('to') or {}).get('version')}")
               for name, r in done.succeeded.items()}
    for name, error in done.failed.items():
        results[name] = {"device": name, "status": "failed", "detail": printable(error)}
    sha = next((str((r.get("to") or {}).get("sha256")) for r in done.succeeded.values()), None)
    _finish(results, None, sha, json_path, None, db, no_history, {"devices": results}, action="rollback")
    sys.exit(done.exit_code)
