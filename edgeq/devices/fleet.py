"""Group operations: one callable per device, in parallel, one failure never stops the rest.

Like Fabric's group results: ``FleetResult.succeeded`` / ``.failed`` map device names
to what each device produced or why it failed.
"""

from __future__ import annotations

import re
import threading
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


def run_fleet(devices: list, work: Callable[[object], T], max_workers: int | None = None,
              cancel: threading.Event | None = None) -> FleetResult[T]:
    """Run ``work(device)`` for every device at once; EdgeqErrors become failed outcomes.

    Anything else is a bug and propagates after every device has finished. Ctrl-C while the
    devices work sets ``cancel`` (work that watches it ends within its poll) before the
    interrupt goes on, so the worker threads are not waited for until a long job ends.
    """
    if len(devices) == 1:
        return FleetResult([_attempt(devices[0], work)])
    pool = ThreadPoolExecutor(max_workers=max_workers or len(devices), thread_name_prefix="edgeq-device")
    try:
        futures = [pool.submit(_attempt, device, work) for device in devices]
        return FleetResult([f.result() for f in futures])
    except KeyboardInterrupt:
        if cancel is not None:
            cancel.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _attempt(device, work) -> DeviceOutcome:
    try:
        return DeviceOutcome(device.name, value=work(device))
    except EdgeqError as exc:
        return DeviceOutcome(device.name, error=exc)


def printable(value, limit: int = 300) -> str:
    """Text a device (or a lab, or whoever holds a board) wrote, made safe to print: one line, no
    terminal escapes. The one place every device-provided string passes before it is shown.

    Lock-holder facts, agent messages, soak states and labgrid answers are written by whoever
    controls the board or holds the lock: an OSC sequence in them retitles the terminal or writes
    the clipboard, a carriage return overwrites the line (with "ALL GOOD"). Every character that is
    not printable (C0 controls with CR, LF and ESC, DEL, the C1 controls that include CSI and OSC,
    bidi overrides, lone surrogates that would make printing itself fail) is shown as an escape
    (``\\x1b``, ``\\u202e``): what was sent stays visible, and nothing acts on the terminal.
    Longer text is cut at ``limit`` characters. Rich markup is the printing side's to escape.
    """
    text = value if isinstance(value, str) else str(value)
    if not text.isprintable():
        text = "".join(c if c.isprintable() else _escaped(c) for c in text)
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def _escaped(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def safe_dirname(name: str) -> str:
    """A folder name for a device name that may hold spaces, quotes or slashes."""
    import hashlib

    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "device"
    if cleaned == name:
        return name
    return f"{cleaned[:40]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


__all__ = ["DeviceOutcome", "FleetResult", "printable", "run_fleet", "safe_dirname"]
