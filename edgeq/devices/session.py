"""One way to open a working agent session on a device, locked when the job measures.

Connecting, pushing the agent, starting it, checking that the agent that answered is the
one this host ships, handing the session to the deployer and taking the board's lock
must happen in that order for every job: the lock is asked of a verified agent only, and
a store push records its files only through a running session. Written out once here,
the order, the error texts and the clean-up on a failure (or Ctrl-C) are the same for
``run``, ``soak``, search batches, localize/fix on a device, ``devices check`` and
``devices setup``.

Releasing is the reverse: the agent session closes first — the agent's exit is what
frees the lock (an flock the kernel drops with its holder, see ``devices.lock``) — then
the connection, if the opener made it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator

from edgeq.devices.agent_client import AgentSession
from edgeq.devices.deploy import Deployer, agent_archive
from edgeq.devices.inventory import Device, connect, device_python
from edgeq.devices.lock import acquire, to_stderr
from edgeq.devices.transport.base import Transport, sha256_file
from edgeq.errors import TransportError


@dataclass(frozen=True)
class OpenSession:
    """What ``open_session`` yields; valid only inside its ``with``.

    ``facts`` is the agent's hello ({} when not asked); ``lock`` the lock op's answer
    (``acquired``, ``holder``, ``path``), None when the caller did not lock.
    """

    device: Device
    transport: Transport
    deployer: Deployer
    session: AgentSession
    facts: dict
    lock: dict | None

    @property
    def workdir(self) -> str:
        """The device's workdir as the device spells it (``~`` expanded): the lock's and store's root."""
        return self.deployer.workdir


@contextlib.contextmanager
def open_session(device: Device, *, lock: bool, wait_s: float = 0.0,
                 on_wait: Callable[[str], None] | None = to_stderr, hello: bool = True, verify: bool = True,
                 python: str | None = None, transport: Transport | None = None) -> Iterator[OpenSession]:
    """Open an agent session on ``device``; everything is released on exit, also on errors and Ctrl-C.

    ``lock``: take the board's lock (queueing up to ``wait_s``, each wait reported to
    ``on_wait``; DeviceBusy naming the holder after that) — required, so a job that must
    not lock (a check, a setup, a clean) says so. ``hello``: ask the agent's facts, which
    fails clearly on a device without a TFLite runtime; ``verify``: the answering agent
    must report this host's agent sha256 (only with ``hello``). ``python``: the
    interpreter to start the agent with (default: the inventory's or the setup venv's).
    ``transport``: a connection the caller already made and keeps (the opener then does
    not close it); otherwise the opener connects and closes.
    """
    with contextlib.ExitStack() as stack:
        if transport is None:
            transport = stack.enter_context(connect(device))
        deployer = Deployer(transport, device.workdir)
        agent_path = deployer.push_agent()
        session = stack.enter_context(
            AgentSession(transport, python or device_python(device, transport), agent_path))
        facts = _hello(device, session, verify) if hello else {}
        answer = acquire(session, deployer.workdir, wait_s, on_wait) if lock else None
        deployer.use_session(session)
        yield OpenSession(device, transport, deployer, session, facts, answer)


def _hello(device: Device, session: AgentSession, verify: bool) -> dict:
    """The agent's facts, checked before anything else asks it for work."""
    facts = session.hello()
    if verify:
        check_running_agent(device.name, facts)
    return facts


def check_running_agent(device: str, facts: dict) -> None:
    """The agent that answered must be the one this host ships: the stored file was checked
    before the start, and this closes the gap between that check and the start."""
    expected, reported = sha256_file(agent_archive()), str(facts.get("agent_sha256"))
    if reported != expected:
        raise TransportError(f"{device}: the agent that started reports sha256 {reported[:12]}, expected "
                             f"{expected[:12]}: its file was changed on the device; run again to replace it")


__all__ = ["OpenSession", "check_running_agent", "open_session"]
