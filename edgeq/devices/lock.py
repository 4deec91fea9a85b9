"""One measuring job per board: the host side of the agent's device lock.

Two jobs on one board measure each other (latency, power, temperature), so a run or a
soak takes an flock in the device's workdir through its agent and holds it for as long
as the agent lives. The lock file names its holder (user, host, PID, command, start
time), which is what a blocked job and ``edgeq devices check`` show. A holder that
dies releases the lock with its process: there is no stale lock to clean up.
"""

from __future__ import annotations

import getpass
import math
import os
import socket
import sys
import time
from typing import Callable

from edgeq.devices.agent_client import AgentSession
from edgeq.devices.fleet import printable
from edgeq.errors import DeviceBusy

WAIT_ANSWER_S = 120.0  # beyond --wait: the agent's own answer time


def to_stderr(line: str) -> None:
    """Waiting is progress: stderr, flushed, so CI logs show it as it happens."""
    print(line, file=sys.stderr, flush=True)


def owner_facts() -> dict:
    """Who is asking: what a blocked user needs to find the holder and talk to them."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    command = " ".join(["edgeq"] + sys.argv[1:3]) if sys.argv and "edgeq" in os.path.basename(sys.argv[0]) \
        else os.path.basename(sys.argv[0] if sys.argv else "python")
    return {"user": user, "host": socket.gethostname(), "pid": os.getpid(), "command": command[:120],
            "started": time.time()}


def describe_holder(holder: dict | None, now: float | None = None) -> str:
    """'alice@ws1 (pid 4242, edgeq evaluate) for 3 min' — or what is known of it.

    The facts are whatever the holder wrote into the lock file: every string passes
    ``printable`` (no terminal escapes, no carriage returns, one line) and only finite numbers
    count as times, so a hostile or garbled holder cannot retitle the terminal, overwrite the
    line or print ``nan s``.
    """
    if not holder:
        return "free"
    if not isinstance(holder, dict) or holder.get("unknown"):
        return "held by an unknown job"
    now = time.time() if now is None else now
    who = f"{_fact(holder.get('user', '?'))}@{_fact(holder.get('host', '?'))}"
    pid = holder.get("pid")
    what = ", ".join(p for p in (f"pid {_fact(pid, 20)}" if pid is not None else None,
                                 _fact(holder["command"]) if holder.get("command") else None) if p)
    text = f"held by {who}" + (f" ({what})" if what else "")
    since = _time(holder.get("since"))
    if since is not None:
        text += f" for {_span(now - since)}"
    until = _time(holder.get("until"))
    if holder.get("job") == "soak" and until is not None:
        text += f", soak ends in {_span(until - now)}" if until > now else ", soak past its end"
    return text


def _fact(value, limit: int = 80) -> str:
    return printable(value, limit)


def _time(value) -> float | None:
    """A holder's time stamp, if it is one: a finite number (NaN, ±inf, text and bools are not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _span(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 1000 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days" if seconds < 100 * 365 * 86400 else "more than a century"


def acquire(session: AgentSession, root: str, wait_s: float = 0.0,
            on_wait: Callable[[str], None] | None = None) -> dict:
    """Take the board's lock for this session, waiting up to ``wait_s``; DeviceBusy if it stays held."""
    def event(message: dict) -> None:
        if on_wait and message.get("event") == "lock_wait":
            on_wait(f"{session.device}: waiting for the device ({describe_holder(message.get('holder'))}); "
                    f"{_time(message.get('left_s')) or 0:.0f} s left")

    answer = session.request("lock", root=root, owner=owner_facts(), wait_s=float(wait_s), on_event=event,
                             timeout=WAIT_ANSWER_S)
    if not answer.get("acquired"):
        waited = f" after waiting {wait_s:g} s" if wait_s else ""
        raise DeviceBusy(f"{session.device}: device busy{waited}: {describe_holder(answer.get('holder'))}; "
                         f"run again later or with --wait SECONDS to queue")
    return answer


def status(session: AgentSession, root: str) -> dict:
    """{"held": bool, "holder": facts | None} without taking the lock."""
    return session.request("lock_status", root=root, timeout=60)
