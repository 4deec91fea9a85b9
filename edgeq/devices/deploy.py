"""Content-addressed push of the agent, models and input sets to a device.

Everything lands in ``workdir/cas/<sha256><suffix>``; a file already there under its
hash is not sent again. The agent goes to ``workdir/agents/edgeq_agent-<sha12>.py``,
so a host and a device can never run different agent versions by accident.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from edgeq.errors import TransportError
from edgeq.devices.transport.base import Transfer, Transport, sha256_file

SPACE_MARGIN = 1 << 20  # room for the run's outputs next to the file

import device_agents

AGENT_SOURCE = Path(device_agents.__file__).resolve().parent / "edgeq_agent.py"


class Deployer:
    def __init__(self, transport: Transport, workdir: str):
        self.transport = transport
        self.workdir = transport.expand(workdir)
        self.transfers: list[Transfer] = []
        self.hasher = None  # set to hash device files through a running agent (no extra command)
        self.free_space = None  # likewise for free space
        self._made: set[str] = set()
        self._free: int | None = None

    def path(self, *parts: str) -> str:
        return posixpath.join(self.workdir, *parts)

    def push_agent(self) -> str:
        digest = sha256_file(AGENT_SOURCE)
        remote = self.path("agents", f"edgeq_agent-{digest[:12]}.py")
        self._push(AGENT_SOURCE, remote, digest)
        return remote

    def push(self, local: Path, force: bool = False) -> tuple[str, str]:
        """Push one file into the store; returns (remote path, sha256).

        ``force`` replaces a stored copy the agent found corrupted.
        """
        local = Path(local)
        digest = sha256_file(local)
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
        if not force and self.transport.exists(remote):
            size = local.stat().st_size
            self.transfers.append(Transfer(str(local), remote, size, digest, 0, 0.0, skipped=True))
            return
        folder = posixpath.dirname(remote)
        if folder not in self._made:
            self.transport.makedirs(folder)
            self._made.add(folder)
        self._check_space(local, remote)
        transfer = self.transport.put(local, remote, sha256=digest, hasher=self.hasher)
        if self._free is not None:
            self._free -= transfer.size
        if transfer.sha256 != digest:
            raise TransportError(f"{self.transport.device}: {local.name} arrived corrupted "
                                 f"(sha256 {transfer.sha256[:12]} != {digest[:12]})")
        self.transfers.append(transfer)
