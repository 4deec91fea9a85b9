"""Files on this host: the one atomic write, a file's sha256, and the check that a folder can take
edgeq's outputs.

The atomic write and the hash are the agent's own (``device_agents/edgeq_agent/files.py``, standard
library only): host and device write every file the same way — a temporary name beside it, fsync,
``os.replace``, the folder fsync'd, the temporary removed on any error — so there is one
implementation to trust. This module sits below every stage: anything may import it.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from device_agents.edgeq_agent.files import atomic_write, sha256_file, write_bytes, write_json, write_text
from edgeq.errors import ConfigError

__all__ = ["atomic_write", "write_bytes", "write_text", "write_json", "sha256_file", "copy_file",
           "ensure_writable_dir"]


def copy_file(source, destination) -> None:
    """Copy ``source`` over ``destination`` atomically (a reader sees the old file or the whole new one)."""
    with open(source, "rb") as src, atomic_write(destination) as dst:
        for block in iter(lambda: src.read(1 << 20), b""):
            dst.write(block)


def ensure_writable_dir(path: Path) -> None:
    """Make ``path`` and prove a file can be created in it, before any work whose results would go there."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        probe = Path(path) / f".edgeq-write-test-{uuid.uuid4().hex[:6]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{path}: output folder is not writable ({exc.strerror or exc})") from None
