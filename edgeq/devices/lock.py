"""One measuring job per board: the host side of the agent's device lock.

Two jobs on one board measure each other (latency, power, temperature), so a run or a
soak takes an flock in the device's workdir through its agent and holds it for as long
as the agent lives. The lock file names its holder (user, host, PID, command, start
time), which is what a blocked job and ``edgeq devices check`` show. A holder that
dies releases the lock with its process: there is no stale lock to clean up.
"""

from __future__ import annotations

import getpass
import os
import socket
import sys
import time
from typing import Callable

from edgeq.devices.agent_client import AgentSession
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
    """'alice@ws1 (pid 4242, edgeq evaluate) for 3 min' — or what is known of it."""
    if not holder:
        return "free"
    if holder.get("unknown"):
        return "held by an unknown job"
    now = time.time() if now is None else now
    who = f"{holder.get('user', '?')}@{holder.get('host', '?')}"
    what = ", ".join(str(p) for p in (f"pid {holder['pid']}" if "pid" in holder else None,
                                      holder.get("command")) if p)
    text = f"held by {who}" + (f" ({what})" if what else "")
    since = holder.get("since")
    if isinstance(since, (int, float)):
        text += f" for {_span(now - since)}"
    until = holder.get("until")
    if holder.get("job") == "soak" and isinstance(until, (int, float)):
        text += f", soak ends in {_span(until - now)}" if until > now else ", soak past its end"
    return text


def _span(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def acquire(session: AgentSession, root: str, wait_s: float = 0.0,
            on_wait: Callable[[str], None] | None = None) -> dict:
    """Take the board's lock for this session, waiting up to ``wait_s``; DeviceBusy if it stays held."""
    def event(message: dict) -> None:
        if on_wait and message.get("event") == "lock_wait":
            on_wait(f"{session.device}: waiting for the device ({describe_holder(message.get('holder'))}); "
                    f"{message.get('left_s', 0):.0f} s left")

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
