"""Group operations: one callable per device, in parallel, one failure never stops the rest.

Like Fabric's group results: ``FleetResult.succeeded`` / ``.failed`` map device names
to what each device produced or why it failed.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Generic, TypeVar

from edgeq.errors import EdgeqError

T = TypeVar("T")


@dataclass
class DeviceOutcome(Generic[T]):
    device: str
    value: T | None = None
    error: EdgeqError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class FleetResult(Generic[T]):
    outcomes: list[DeviceOutcome[T]] = field(default_factory=list)

    @property
    def succeeded(self) -> dict[str, T]:
        return {o.device: o.value for o in self.outcomes if o.ok}

    @property
    def failed(self) -> dict[str, EdgeqError]:
        return {o.device: o.error for o in self.outcomes if not o.ok}

    @property
    def exit_code(self) -> int:
        """0, or the worst failure's code (a broken device is 3, a bad input 2)."""
        return max((e.exit_code for e in self.failed.values()), default=0)


def run_fleet(devices: list, work: Callable[[object], T], max_workers: int | None = None) -> FleetResult[T]:
    """Run ``work(device)`` for every device at once; EdgeqErrors become failed outcomes.

    Anything else is a bug and propagates after every device has finished.
    """
    if len(devices) == 1:
        return FleetResult([_attempt(devices[0], work)])
    with ThreadPoolExecutor(max_workers=max_workers or len(devices), thread_name_prefix="edgeq-device") as pool:
        futures = [pool.submit(_attempt, device, work) for device in devices]
        return FleetResult([f.result() for f in futures])


def _attempt(device, work) -> DeviceOutcome:
    try:
        return DeviceOutcome(device.name, value=work(device))
    except EdgeqError as exc:
        return DeviceOutcome(device.name, error=exc)


def safe_dirname(name: str) -> str:
    """A folder name for a device name that may hold spaces, quotes or slashes."""
    import hashlib

    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "device"
    if cleaned == name:
        return name
    return f"{cleaned[:40]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


__all__ = ["DeviceOutcome", "FleetResult", "run_fleet", "safe_dirname"]
