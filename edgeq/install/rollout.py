"""A fleet rollout: a canary first, then waves, stopped when too many devices fail.

The canary devices install first (all of them in parallel); if they pass, the rest follow in
waves of ``wave`` devices. After every step the failures so far are counted: more than
``max_failures`` stops the rollout, the devices not reached are reported as ``skipped``, and
the devices already on the new version stay there unless ``rollback_on_abort`` sends them back.
A device whose own checks failed was rolled back by its install already (``device.install_on``).

Outcomes per device: installed, unchanged (it already had the model), rolled-back (its checks
failed; it is on its previous version), failed (nothing changed, or nothing to go back to),
skipped (the rollout stopped first), aborted-back (installed, then rolled back by the abort).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from edgeq.devices.fleet import printable, run_fleet
from edgeq.errors import EXIT_DEVICE, EdgeqError

FAILED = ("rolled-back", "failed")
ON_NEW = ("installed",)


@dataclass
class RolloutPolicy:
    canary: int = 0  # devices first, alone; 0: no canary step
    wave: int = 0  # devices per later step; 0: all the rest at once
    max_failures: int = 0  # failures tolerated before the rollout stops
    rollback_on_abort: bool = False


@dataclass
class Rollout:
    """Per-device results in inventory order, the steps taken and why it stopped (if it did)."""

    results: dict = field(default_factory=dict)
    steps: list = field(default_factory=list)
    aborted: str | None = None

    @property
    def failures(self) -> list[str]:
        return [name for name, r in self.results.items() if r["status"] in FAILED]

    @property
    def exit_code(self) -> int:
        """The worst device's: 0 all good, 1 a check failed (rolled back), 2 refused (no passing evaluation,
        no path), 3 a device or connection failed."""
        return max((r.get("exit_code", EXIT_DEVICE) for r in self.results.values() if r["status"] in FAILED),
                   default=0)

    def as_dict(self) -> dict:
        return {"devices": self.results, "steps": self.steps, "aborted": self.aborted,
                "failures": len(self.failures), "exit_code": self.exit_code}


def plan_steps(names: list[str], policy: RolloutPolicy) -> list[list[str]]:
    """The devices of each step: the canary, then waves of ``wave`` (all the rest when 0)."""
    canary = names[:policy.canary]
    rest = names[policy.canary:]
    size = policy.wave or len(rest) or 1
    return ([canary] if canary else []) + [rest[i:i + size] for i in range(0, len(rest), size)]


def roll_out(devices: list, install: Callable[[object], dict], policy: RolloutPolicy,
             roll_back: Callable[[object], dict], announce: Callable[[str], None] = lambda _: None,
             cancel=None) -> Rollout:
    """Run ``install(device)`` step by step under ``policy``; ``roll_back(device)`` for the abort."""
    by_name = {d.name: d for d in devices}
    steps = plan_steps(list(by_name), policy)
    rollout = Rollout()
    for index, names in enumerate(steps):
        label = "canary" if index == 0 and policy.canary else f"wave {index + (0 if policy.canary else 1)}"
        if len(steps) > 1:
            announce(f"{label}: {', '.join(names)}")
        outcome = run_fleet([by_name[n] for n in names], install, cancel=cancel)
        rollout.steps.append({"step": label, "devices": names})
        for name in names:
            rollout.results[name] = outcome.succeeded.get(name) or _failed(name, outcome.failed[name])
            announce(f"{name}: {rollout.results[name]['status']}")
        if len(rollout.failures) > policy.max_failures and index + 1 < len(steps):
            rollout.aborted = (f"{len(rollout.failures)} device(s) failed after the {label} "
                               f"(--max-failures {policy.max_failures}): rollout stopped")
            announce(rollout.aborted)
            _skip_rest(rollout, steps[index + 1:])
            if policy.rollback_on_abort:
                _undo(rollout, by_name, roll_back, announce, cancel)
            break
    return rollout


def _failed(name: str, error: EdgeqError) -> dict:
    detail = printable(error)
    detail = detail[len(name) + 2:] if detail.startswith(f"{name}: ") else detail  # the table names the device
    return {"device": name, "status": "failed", "detail": detail, "exit_code": error.exit_code}


def _skip_rest(rollout: Rollout, steps: list[list[str]]) -> None:
    for names in steps:
        for name in names:
            rollout.results[name] = {"device": name, "status": "skipped", "detail": "not reached: rollout stopped"}


def _undo(rollout: Rollout, by_name: dict, roll_back, announce, cancel) -> None:
    """--rollback-on-abort: the devices the rollout moved to the new version go back to their previous one."""
    moved = [by_name[n] for n, r in rollout.results.items() if r["status"] in ON_NEW]
    if not moved:
        return
    announce(f"rolling back {', '.join(d.name for d in moved)}")
    undone = run_fleet(moved, roll_back, cancel=cancel)
    for name in undone.succeeded:
        rollout.results[name] = dict(rollout.results[name], status="aborted-back",
                                     detail="installed, then rolled back because the rollout stopped")
    for name, error in undone.failed.items():
        rollout.results[name] = dict(rollout.results[name], status="failed", exit_code=error.exit_code,
                                     detail=f"installed; the abort's rollback failed: {printable(error)}")


__all__ = ["RolloutPolicy", "Rollout", "plan_steps", "roll_out"]
