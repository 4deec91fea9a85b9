"""One device's install: evidence for its class, push, atomic switch, smoke check, restart, health.

Everything happens in one agent session holding the board's lock, so two deploys (or a deploy
and an evaluation) never interleave on a board. The model goes through edgeq's content-addressed
store like any pushed file (verified, resumable, sent once), then the agent installs it at the
application's path (``edgeq_agent.install``: a versioned release folder and an atomic switch of
the path, the previous version kept). A failed smoke check, restart or health check switches
the path back to the previous version before the lock is released, and says why.
"""

from __future__ import annotations

import getpass
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgeq.devices.inventory import Device
from edgeq.devices.session import open_session
from edgeq.errors import EXIT_DEVICE, EXIT_GATE, AgentError, ConfigError, EdgeqError, TransportError
from edgeq.install.evidence import Evidence, NoEvidence, choose, device_class_of
from edgeq.install.smoke import SmokeSet, build_smoke, compare_smoke, describe

KEEP_RELEASES = 3  # releases kept per path: the current one, the rollback target and one more


@dataclass
class InstallPlan:
    """What to install where, and the checks it must pass; shared by every device of a rollout."""

    model: Path
    sha256: str
    to: str | None  # None: each device's inventory install_path
    evidence: list
    require: str = "robust"
    force: bool = False
    report: str | None = None  # what --report named, recorded with the install
    tolerance: float = 0.0
    restart: str | None = None
    health: str | None = None
    command_timeout_s: float = 60.0
    keep: int = KEEP_RELEASES
    wait_s: float = 0.0
    smoke_rows: int = 16
    _smoke: dict = field(default_factory=dict, repr=False)
    _smoke_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _folder: tempfile.TemporaryDirectory = field(default_factory=tempfile.TemporaryDirectory, repr=False)

    def path_for(self, device: Device) -> str:
        return install_path_of(device, self.to)

    def smoke_for(self, evidence: Evidence | None) -> tuple[SmokeSet | None, str]:
        """Built once per evaluation and shared by every device of its class (devices install in parallel)."""
        if evidence is None:
            return None, "no evaluation (--force): the smoke check only loads the model"
        with self._smoke_lock:
            if evidence.report not in self._smoke:
                folder = Path(self._folder.name) / f"smoke-{len(self._smoke)}"
                folder.mkdir()
                self._smoke[evidence.report] = build_smoke(evidence, folder, self.smoke_rows)
            return self._smoke[evidence.report]

    def close(self) -> None:
        self._folder.cleanup()


def who() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (KeyError, OSError):
        return f"uid{__import__('os').getuid()}@{socket.gethostname()}"


def install_on(device: Device, plan: InstallPlan) -> dict:
    """Install on one device; the answer says what happened (also when it was rolled back)."""
    started = time.monotonic()
    with open_session(device, lock=True, wait_s=plan.wait_s) as opened:
        facts = opened.facts
        evidence, missing = choose(plan.evidence, device_class_of(facts), plan.require)
        if evidence is None and not plan.force:
            raise NoEvidence(f"{device.name}: {plan.model.name} ({plan.sha256[:12]}): {missing}; evaluate it on "
                             f"this device class, or deploy with --force")
        path = opened.transport.expand(plan.path_for(device))
        meta = {"by": who(), "report": str(evidence.report) if evidence and evidence.report else plan.report,
                "verdict": evidence.verdict if evidence else None, "forced": evidence is None,
                "model_name": plan.model.name, "edgeq": _version()}
        installed = _already_installed(opened, path, plan.sha256)  # then no push: a store copy pruned since
        if installed is not None:                                    # is not sent again
            answer = {"changed": False, "version": installed}
        else:
            remote, _ = opened.deployer.push(plan.model, sha256=plan.sha256)
            answer = opened.session.request("install", source=remote, sha256=plan.sha256, path=path, meta=meta,
                                            keep=plan.keep, root=None, timeout=600.0)
        result = {"device": device.name, "path": path, "sha256": plan.sha256, "version": answer.get("version"),
                  "previous": answer.get("previous"), "evidence": evidence.as_dict() if evidence else None,
                  "forced": evidence is None, "missing_evidence": missing or None,
                  "arch": facts.get("arch"), "runtime": device_class_of(facts)[1]}
        if not answer.get("changed"):
            return dict(result, status="unchanged", detail="already installed: nothing moved or changed",
                        duration_s=time.monotonic() - started)
        checks, failure = _checks(opened, plan, evidence, path)
        result.update(checks)
        if failure:
            result.update(_roll_back(opened, path, failure))
        else:
            result.update(status="installed", detail=checks["smoke"]["line"])
        return dict(result, duration_s=time.monotonic() - started)


def _already_installed(opened, path: str, sha256: str) -> int | None:
    """The installed version when PATH is edgeq's, whole and already this model; else None."""
    state = opened.session.request("install_status", path=path, root=None, timeout=120.0)
    current = state.get("current") or {}
    if state.get("managed") and not state.get("changed_outside") and current.get("sha256") == sha256:
        return current.get("version")
    return None


def _checks(opened, plan: InstallPlan, evidence: Evidence | None, path: str) -> tuple[dict, str | None]:
    """Smoke, then restart, then health; the first failure stops the rest and names itself."""
    smoke = _smoke(opened, plan, evidence, path)
    checks = {"smoke": smoke}
    if not smoke["ok"]:
        return checks, smoke["line"]
    for name, command in (("restart", plan.restart), ("health", plan.health)):
        if command:
            checks[name] = _command(opened, command, plan.command_timeout_s)
            if not checks[name]["ok"]:
                return checks, f"{name} command failed: {checks[name]['line']}"
    return checks, None


def _smoke(opened, plan: InstallPlan, evidence: Evidence | None, path: str) -> dict:
    from edgeq.devices.run import RunSpec, run_in_session

    smoke, why = plan.smoke_for(evidence)
    try:
        if smoke is None:
            loaded = opened.session.request("load", model=path, threads=1, resolver="AUTO", timeout=300.0)
            return {"ok": True, "skipped": why, "line": f"{why}: it loads ({len(loaded['outputs'])} outputs)"}
        with tempfile.TemporaryDirectory(prefix="edgeq-smoke-") as folder:
            spec = RunSpec(model=plan.model, inputs=smoke.inputs, label="smoke", threads=smoke.threads,
                           resolver=smoke.resolver, warmup=0)
            run = run_in_session(opened, spec, Path(folder) / "run", model_at=path)
            check = compare_smoke(smoke, [run.outputs[k][:] for k in range(len(run.outputs))], plan.tolerance)
    except EdgeqError as exc:  # a file that does not load or run at the path is what this check is for
        return {"ok": False, "line": f"smoke check could not run the installed file: {exc}"}
    return dict(check, line=describe(check))


def _command(opened, command: str, timeout_s: float) -> dict:
    """The user's --restart/--health command, run by the device's shell (it is the user's shell text)."""
    try:
        done = opened.transport.run(["sh", "-c", command], timeout=timeout_s, check=False)
    except TransportError as exc:
        return {"ok": False, "command": command, "line": str(exc)}
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
    line = f"`{command}` exit {done.exit_code}" + (f": {tail[0][:200]}" if tail[0] else "")
    return {"ok": done.ok, "command": command, "exit_code": done.exit_code, "line": line,
            "output_tail": (done.stdout + done.stderr)[-2000:], "duration_s": done.duration_s}


def _roll_back(opened, path: str, failure: str) -> dict:
    try:
        back = opened.session.request("rollback", path=path, root=None, to=None, timeout=300.0)
    except AgentError as exc:
        if exc.kind == "NoPrevious":
            return {"status": "failed", "exit_code": EXIT_GATE,
                    "detail": f"{failure}; no earlier version to go back to, the new one stays"}
        return {"status": "failed", "exit_code": EXIT_DEVICE, "detail": f"{failure}; rollback failed too: {exc}"}
    return {"status": "rolled-back", "exit_code": EXIT_GATE, "detail": f"{failure}; rolled back to version {back['to'].get('version')}",
            "rolled_back_to": back.get("to")}


def status_of(device: Device, path: str | None) -> dict:
    """What the device's install records say about its path. Takes no board lock: the agent only repairs its
    record from where the path points, under the path's own lock, when no install is running."""
    with open_session(device, lock=False, hello=False) as opened:
        where = opened.transport.expand(install_path_of(device, path))
        answer = opened.session.request("install_status", path=where, root=None, timeout=120.0)
    return dict(answer, device=device.name, path=where)


def rollback_on(device: Device, path: str | None, wait_s: float = 0.0, to: int | None = None) -> dict:
    """Switch the device's path back one version (or to version ``to``), holding its lock."""
    with open_session(device, lock=True, wait_s=wait_s) as opened:
        where = opened.transport.expand(install_path_of(device, path))
        answer = opened.session.request("rollback", path=where, root=None, to=to, timeout=300.0)
    return dict(answer, device=device.name, path=where, status="rolled-back")


def install_path_of(device: Device, to: str | None) -> str:
    """``--to`` if given, else the device's inventory ``install_path``."""
    if not (to or device.install_path):
        raise ConfigError(f"{device.name}: no install path: give --to PATH or install_path in its inventory entry")
    return to or device.install_path


def _version() -> str:
    from edgeq import __version__

    return __version__


__all__ = ["InstallPlan", "KEEP_RELEASES", "install_on", "install_path_of", "rollback_on", "status_of", "who"]
