"""Where and how to reach an SSH device: inventory entry + ``~/.ssh/config``.

Users already name their boards in ``~/.ssh/config``; a device whose ``host`` is such a
name gets that entry's HostName, User, Port, IdentityFile, UserKnownHostsFile and
ProxyJump. Keys set explicitly in the inventory win over the config file.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edgeq.errors import ConfigError

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


@dataclass(frozen=True)
class SshTarget:
    device: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[str, ...] = ()
    known_hosts: tuple[str, ...] = field(default_factory=tuple)
    proxy_jump: str | None = None

    @property
    def address(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"

    @property
    def known_hosts_key(self) -> str:
        """How OpenSSH names this host in known_hosts."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def ssh_config_path() -> Path:
    return Path(os.environ.get("EDGEQ_SSH_CONFIG", "~/.ssh/config")).expanduser()


def lookup_ssh_config(host: str) -> dict:
    path = ssh_config_path()
    if not path.exists():
        return {}
    import paramiko

    try:
        config = paramiko.SSHConfig.from_path(str(path))
    except Exception as exc:  # paramiko raises several types for bad syntax
        raise ConfigError(f"{path}: cannot parse SSH config: {exc}") from None
    return config.lookup(host)


def resolve_target(device: str, settings: Mapping) -> SshTarget:
    """Combine a device's SSH settings (``SshTransport.SETTINGS``) with the SSH config entry of its host."""
    host = settings.get("host")
    if not host:
        raise ConfigError(f"device {device}: no host in the inventory")
    found = lookup_ssh_config(host)
    hostname = found.get("hostname", host)
    port = settings.get("port") or int(found.get("port", 22))
    user = settings.get("user") or found.get("user") or getpass.getuser()
    identity = settings.get("identity_file")
    identities = [identity] if identity else list(found.get("identityfile", []))
    if settings.get("known_hosts"):
        known, source = [settings["known_hosts"]], "known_hosts"
    elif found.get("userknownhostsfile"):
        known, source = found["userknownhostsfile"].split(), f"UserKnownHostsFile in {ssh_config_path()}"
    else:
        known, source = [DEFAULT_KNOWN_HOSTS], "known_hosts (default)"
    _check_known_hosts(device, known, source)
    return SshTarget(device=device, hostname=hostname, port=port, user=user,
                     identity_files=tuple(str(Path(p).expanduser()) for p in identities),
                     known_hosts=tuple(str(Path(p).expanduser()) for p in known),
                     proxy_jump=found.get("proxyjump"))


def _check_known_hosts(device: str, paths: list[str], source: str) -> None:
    """A known_hosts file must be a file (or not exist yet: ``devices trust`` makes it).

    A folder there used to surface later as an unrelated failure (exit 3, naming another
    file); it is a bad setting, named as one (exit 2)."""
    for name in paths:
        path = Path(name).expanduser()
        if path.is_dir():
            raise ConfigError(f"device {device}: {source} {name} is a folder, not a file: name the file "
                              "of pinned host keys (e.g. ~/.ssh/known_hosts)")
        if path.exists() and not path.is_file():
            raise ConfigError(f"device {device}: {source} {name} is not a regular file")
