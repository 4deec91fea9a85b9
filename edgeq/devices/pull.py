"""Pulling a run directory from a device: every file refused before it moves when it is larger
than its job can produce or its manifest says, checked against its sha256 after, the manifest
written last (a cut-short pull never looks whole); after a failed run, what the agent had
written, kept without a manifest for inspection.

It reads run directories as ``results`` defines them (``MANIFEST``, ``checked_manifest``) and
moves bytes through any ``Transport``, so it lives with the devices, above both.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from pathlib import Path
from typing import Mapping

from edgeq.devices.transport.base import Transport
from edgeq.errors import TransportError
from edgeq.results import MANIFEST, checked_manifest


MANIFEST_CAP = 1 << 20  # bytes: a manifest lists a handful of files
OTHER_FILE_CAP = 16 << 20  # a run file the job gives no bound for (meta.json)


def pull_run(transport: Transport, remote_dir: str, local_dir: Path,
             limits: Mapping[str, int | None] | None = None) -> dict:
    """Fetch a finished run, verifying every file; the manifest is written last.

    ``limits`` maps a file to the most bytes its job can produce (None: no bound known);
    a file over its bound, or larger than its manifest says, is refused before it moves,
    so a lying or broken agent cannot fill the host's disk.
    """
    local_dir.mkdir(parents=True, exist_ok=True)
    staging = local_dir / f".{MANIFEST}.incoming-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        manifest = _pull_manifest(transport, remote_dir, staging)
        for rel, entry in manifest["files"].items():
            size = _manifest_size(transport.device, rel, entry, _limit(limits, rel))
            pull_file(transport, posixpath.join(remote_dir, rel), local_dir / rel, size, entry["sha256"])
        os.replace(staging, local_dir / MANIFEST)
    finally:
        staging.unlink(missing_ok=True)
    return manifest


def _pull_manifest(transport: Transport, remote_dir: str, staging: Path) -> dict:
    remote = posixpath.join(remote_dir, MANIFEST)
    refuse_larger(transport, remote, MANIFEST_CAP, "the manifest cap")
    transport.get(remote, staging)
    try:
        manifest = json.loads(staging.read_text())
    except ValueError:
        raise TransportError(f"{transport.device}: {remote} is not valid JSON") from None
    if not isinstance(manifest, dict):
        raise TransportError(f"{transport.device}: {remote} is not a JSON object")
    return checked_manifest(manifest, f"{transport.device}:{remote_dir}")


def _limit(limits: Mapping[str, int | None] | None, rel: str) -> int | None:
    if limits is None:
        return None
    return limits.get(rel, OTHER_FILE_CAP)


def _manifest_size(device: str, rel: str, entry: dict, limit: int | None) -> int:
    """The size the manifest gives ``rel``, refused when the job cannot produce that much."""
    size = entry.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise TransportError(f"{device}: manifest entry {rel!r} has no valid size ({size!r})")
    if limit is not None and size > limit:
        raise TransportError(f"{device}: {rel} refused: manifest says {size} bytes, the job can produce "
                             f"at most {limit} bytes")
    return size


def refuse_larger(transport: Transport, remote: str, size: int, what: str) -> None:
    """Refuse a device file holding more than ``size`` bytes, by reading one byte past it
    (``read_from`` is what every transport has; nothing of the file is transferred)."""
    if transport.read_from(remote, size, 1):
        raise TransportError(f"{transport.device}: {posixpath.basename(remote)} refused: larger than "
                             f"{what} ({size} bytes)")


def pull_file(transport: Transport, remote: str, local: Path, size: int, sha256: str | None = None) -> None:
    """Fetch one file of known size, refused before transfer if it is larger, checked after."""
    refuse_larger(transport, remote, size, "its manifest size")
    transfer = transport.get(remote, local)
    if transfer.size > size:  # grew between the check and the transfer
        local.unlink(missing_ok=True)
        raise TransportError(f"{transport.device}: {posixpath.basename(remote)} refused: {transfer.size} bytes, "
                             f"its manifest says {size}")
    if sha256 is not None and transfer.sha256 != sha256:
        raise TransportError(f"{transport.device}: {posixpath.basename(remote)} arrived corrupted (sha256 mismatch)")


def pull_partial(transport: Transport, remote_dir: str, local_dir: Path,
                 limits: Mapping[str, int | None] | None = None) -> dict | None:
    """After a failed run, fetch what the agent had written; None if nothing usable.

    The files are kept for inspection but never get a manifest, so nothing mistakes
    them for a whole run. Each is refused (None) if over its bound in ``limits``.
    """
    try:
        local_dir.mkdir(parents=True, exist_ok=True)
        remote = posixpath.join(remote_dir, "progress.json")
        refuse_larger(transport, remote, MANIFEST_CAP, "the progress file cap")
        transport.get(remote, local_dir / "progress.json")
        progress = json.loads((local_dir / "progress.json").read_text())
        for rel in checked_manifest({"complete": True, "files": {f: {"sha256": ""} for f in progress["files"]}},
                                    f"{transport.device}:{remote_dir}/progress.json")["files"]:
            limit = _limit(limits, rel)
            if limit is not None:
                refuse_larger(transport, posixpath.join(remote_dir, rel), limit, "what the job can produce")
            transport.get(posixpath.join(remote_dir, rel), local_dir / rel)
    except (TransportError, OSError, ValueError, KeyError, TypeError):
        return None
    return progress
