"""Content-addressed push of the agent, models and input sets to a device.

Everything lands in ``workdir/cas/<sha256><suffix>``; a file already there under its
hash is not sent again. The agent, built as one zipapp from ``device_agents/edgeq_agent/``
(``device_agents.zipapp.build_agent``, cached on the host under its sha256), goes to
``workdir/agents/edgeq_agent-<sha12>.pyz``, so a host and a device can never run different
agent versions by accident. The local device runs that same pushed archive.

Every file pushed while an agent session is open is recorded on the device as made by
edgeq (the agent's ``record_made``), before its upload is renamed into place: the store's
tidy deletes only what those records name, never a file of the user's that happened to be
in a ``cas/`` or ``runs/`` of the workdir.

Once the agent is on the device, ``push_agent`` starts its receiver beside it (a transport that
has one: SSH), and later pushes stream through it (``transport/stream_push.py``): the device
hashes while it writes, inflates compressed input sets as they arrive, records and renames.
Without it (the agent's own push, a transport without one, a receiver that cannot start) files
go up through ``Transport.put`` and are hashed on the device afterwards.
"""

from __future__ import annotations

import hashlib
import posixpath
import sys
from pathlib import Path

from edgeq.errors import TransportError
from edgeq.devices.transport.base import Transfer, Transport, sha256_file

SPACE_MARGIN = 1 << 20  # room for the run's outputs next to the file

_AGENT: Path | None = None


def agent_archive() -> Path:
    """The agent zipapp built from this host's sources (``edgeq_agent-<sha12>.pyz`` in the agent cache,
    ``device_agents.zipapp.agent_cache_dir``); built once per process, again if the file went away."""
    global _AGENT
    if _AGENT is None or not _AGENT.is_file():
        from device_agents.zipapp import build_agent

        _AGENT = build_agent()
    return _AGENT


def __getattr__(name: str):
    """``AGENT_SOURCE``: the agent file the host pushes and checks a running agent against (the zipapp),
    built when first asked for."""
    if name == "AGENT_SOURCE":
        return agent_archive()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Deployer:
    def __init__(self, transport: Transport, workdir: str):
        self.transport = transport
        self.workdir = transport.expand(workdir)
        self.transfers: list[Transfer] = []
        self.recorder = None  # records a pushed file as edgeq's on the device (AgentSession.record_made)
        self.hasher = None  # set to hash device files through a running agent (no extra command)
        self.free_space = None  # likewise for free space
        self._made: set[str] = set()
        self._free: int | None = None

    def use_session(self, session) -> None:
        """Hash, measure free space and record pushed files through a running agent session; the agent's
        receiver (started by ``push_agent``) ends with it."""
        self.hasher, self.free_space, self.recorder = session.sha256, session.free_bytes, session.record_made
        self.transport.bind_receiver(session.process)

    @property
    def hasher(self):
        return self._hasher

    @hasher.setter
    def hasher(self, hasher) -> None:
        """Call sites that set ``hasher = session.sha256`` (as before ``use_session``) get the session's
        recorder too: a file pushed without a record would never be tidied."""
        self._hasher = hasher
        record = getattr(getattr(hasher, "__self__", None), "record_made", None)
        if callable(record):
            self.recorder = record

    def path(self, *parts: str) -> str:
        return posixpath.join(self.workdir, *parts)

    def push_agent(self) -> str:
        """Push the agent zipapp unless the device holds it byte for byte; returns its device path.

        The stored copy is what runs next, so it is checked every time, not trusted for its
        name: a copy edited on the device (by hand, a bad disk, an intruder) is replaced, and
        stderr says so.
        """
        agent = agent_archive()
        digest = sha256_file(agent)
        remote = self.path("agents", f"edgeq_agent-{digest[:12]}.pyz")
        stored = self._stored_digest(remote, agent.stat().st_size)
        if stored not in (None, digest):
            print(f"{self.transport.device}: stored agent {remote} was changed on the device "
                  f"(sha256 {stored[:12]}, expected {digest[:12]}); pushing it again", file=sys.stderr)
        if stored == digest:
            self._skipped(agent, remote, digest)
        else:
            self._push(agent, remote, digest, force=True)
        self.transport.use_receiver(remote)  # started in the background while the agent session starts
        return remote

    def _stored_digest(self, remote: str, size: int) -> str | None:
        """sha256 of a small device file, hashed here from its bytes (no tool needed on the device); None if absent.

        One byte more than expected is read, so a copy with something appended does not match.
        """
        if not self.transport.exists(remote):
            return None
        return hashlib.sha256(self.transport.read_from(remote, 0, size + 1)).hexdigest()

    def push(self, local: Path, force: bool = False, sha256: str | None = None) -> tuple[str, str]:
        """Push one file into the store; returns (remote path, sha256).

        ``force`` replaces a stored copy the agent found corrupted. A device that shares
        this host's files (the local one) reads the file where it is: nothing is copied, and
        the agent's sha256 check before the run still catches a file changed since.
        ``sha256``: the file's digest when the caller hashed it already (the rounds of one
        session push the same input set each round: a file of gigabytes is hashed once, and
        each later push is the store's existence check alone; the agent checks the digest).
        """
        local = Path(local)
        digest = sha256 or sha256_file(local)
        if self.transport.SHARES_HOST_FILES:
            shared = str(local.resolve())
            self._skipped(local, shared, digest)
            return shared, digest
        remote = self.path("cas", digest + "".join(local.suffixes[-1:]))
        self._push(local, remote, digest, force)
        return remote, digest

    def _check_space(self, local: Path, remote: str) -> None:
        """Say "disk full" before sending, instead of failing half-way through."""
        if self._free is None:  # asked once per session, then kept up to date as files go out
            self._free = (self.free_space or self.transport.free_bytes)(posixpath.dirname(remote))
        free = self._free
        need = local.stat().st_size + SPACE_MARGIN
        if free is not None and free < need:
            raise TransportError(f"{self.transport.device}: not enough free space in {self.workdir} for "
                                 f"{local.name}: need {need / 1e6:.1f} MB, {free / 1e6:.1f} MB free")

    def run_dir(self, run_id: str) -> str:
        return self.path("runs", run_id)

    def _push(self, local: Path, remote: str, digest: str, force: bool = False) -> None:
        """Send ``local`` to ``remote`` unless it is there already (``force``: send it anyway)."""
        if not force and self.transport.exists(remote):
            self._skipped(local, remote, digest)
            return
        folder = posixpath.dirname(remote)
        if folder not in self._made:
            self.transport.makedirs(folder)
            self._made.add(folder)
        self._check_space(local, remote)
        transfer = self.transport.push_streamed(local, remote, digest, record=self.recorder is not None)
        if transfer is None:
            transfer = self._put(local, remote, digest)
        if self._free is not None:
            self._free -= transfer.size
        if transfer.sha256 != digest:
            raise TransportError(f"{self.transport.device}: {local.name} arrived corrupted "
                                 f"(sha256 {transfer.sha256[:12]} != {digest[:12]})")
        self.transfers.append(transfer)

    def _put(self, local: Path, remote: str, digest: str) -> Transfer:
        """``Transport.put``, the device hashing the upload afterwards (through the agent when one runs)."""
        recorded: list[str] = []
        hasher = self.hasher
        if self.recorder is not None and self.hasher is not None:
            def hasher(part: str) -> str:  # the upload's part, before its rename to ``remote``
                got = self.hasher(part)
                if got == digest:
                    self.recorder(remote, part)
                    recorded.append(part)
                return got
        transfer = self.transport.put(local, remote, sha256=digest, hasher=hasher)
        if self.recorder is not None and not recorded:  # a transport that copied without asking for a hash
            self.recorder(remote)
        return transfer

    def _skipped(self, local: Path, remote: str, digest: str) -> None:
        self.transfers.append(Transfer(str(local), remote, local.stat().st_size, digest, 0, 0.0, skipped=True))
