"""Build the device agent as one reproducible zipapp, ``edgeq_agent-<sha12>.pyz`` (standard library only).

The archive's bytes depend on the agent's sources only (``edgeq_agent/archive.py``: sorted entries,
stored, dated 1980-01-01, mode 0644, a ``#!/usr/bin/env python3`` line and a root ``__main__.py``),
so the same sources give the same sha256 on any host, whatever the files' times or the umask. It
runs as ``python -I edgeq_agent-<sha12>.pyz``.

    build_agent(dest_dir=None, source=None) -> Path
        writes the archive into dest_dir (default: agent_cache_dir()), or reuses the file already
        there when its bytes have the right sha256; the write is atomic (a temporary name, then
        os.replace), so builders running side by side never see half an archive.
    agent_cache_dir() -> Path
        $EDGEQ_CACHE/agents, else ~/.cache/edgeq/agents.

    python -m device_agents.zipapp [OUTDIR]
        builds it (into OUTDIR, else the cache) and prints "<sha256>  <path>" (sha256sum's format).
"""

import hashlib
import os
import sys
from pathlib import Path

from .edgeq_agent.archive import PACKAGE_DIR, archive_bytes
from .edgeq_agent.files import sha256_file, write_bytes

ARCHIVE_PERMS = 0o644


def agent_cache_dir() -> Path:
    """Where the host keeps built agents: $EDGEQ_CACHE/agents, else ~/.cache/edgeq/agents."""
    base = os.environ.get("EDGEQ_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "edgeq")
    return Path(base) / "agents"


def archive_name(digest: str) -> str:
    """The archive's file name for its sha256: edgeq_agent-<first 12 hex digits>.pyz."""
    return "edgeq_agent-%s.pyz" % digest[:12]


def build_agent(dest_dir=None, source=None) -> Path:
    """The agent zipapp built from ``source`` (a package folder; default: this agent's) in ``dest_dir``
    (default: ``agent_cache_dir()``); an archive already there with the right sha256 is reused."""
    data = archive_bytes(str(source) if source is not None else PACKAGE_DIR)
    digest = hashlib.sha256(data).hexdigest()
    folder = Path(dest_dir) if dest_dir is not None else agent_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / archive_name(digest)
    try:
        if path.is_file() and sha256_file(path) == digest:
            return path
    except OSError:
        pass  # unreadable: written again below
    write_bytes(path, data, perms=ARCHIVE_PERMS)
    return path


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or any(a.startswith("-") for a in args):
        sys.stderr.write("usage: python -m device_agents.zipapp [OUTDIR]\n")
        return 2
    path = build_agent(args[0] if args else None)
    print("%s  %s" % (sha256_file(path), path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
