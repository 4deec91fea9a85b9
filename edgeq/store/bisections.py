"""The host's cache of boundary bisections: where each interpolation pair of a suite's ``boundary`` cells lands.

Making a boundary row means bisecting its pair with the float model on the host (32 float inferences per
pair). The 500 pairs of a MediaPipe hand landmark suite (224×224×3) took ~140 s on this kind of host: more
than the device inference of a second evaluation of the same float model (a nightly run, another quantized
model), whose float outputs come from the float-run cache. The bisection depends only on the suite's recipe — the
data, the options, the float model and the host runtime that ran it, all in the suite's identity
(``inputs.risky.lazy.suite_identity``) — so it is kept under that identity and restored by the next plan
of the same suite; a restored pair gives the same t, so the same bytes, as a new bisection.

Layout: ``$EDGEQ_CACHE/bisections/<suite identity>.npz`` (else ``~/.cache/edgeq/bisections``): the plan's
pairs (checked against the new plan's before any t is taken) and the t and float margin of each pair done.
An entry is a few kB (a pair is two indices and four floats), written whole to a temporary file and renamed
over the old one, so a reader sees an old or a new entry, never half of one; two evaluations writing one
entry at once keep the later one (the other's new pairs are bisected again next time, never wrong).
Bound: the ``KEEP`` most recently used entries. The float-run cache's switch (``--no-float-cache``,
``EDGEQ_FLOAT_CACHE=off``) turns this one off too: both hold the float model's outputs on a suite.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Callable

import numpy as np

KEEP = 64  # entries kept (least recently used removed first)
_KEY = re.compile(r"[0-9a-f]{64}")


def bisections_root() -> Path:
    """$EDGEQ_CACHE/bisections, else ~/.cache/edgeq/bisections: beside the float runs and the built agents."""
    from device_agents.zipapp import agent_cache_dir

    return agent_cache_dir().parent / "bisections"


class BisectionCache:
    """Saved bisections by suite identity. ``warn(message)`` hears an entry that could not be read or written
    (default: nothing is said; the bisection simply runs again)."""

    def __init__(self, root: str | os.PathLike | None = None, keep: int = KEEP,
                 warn: Callable[[str], None] | None = None):
        self.root = Path(root) if root is not None else bisections_root()
        self.keep = max(1, int(keep))
        self._warn = warn or (lambda message: None)

    def entry(self, key: str) -> Path:
        if not _KEY.fullmatch(str(key)):
            raise ValueError(f"not a suite identity (64 hex digits): {key!r}")
        return self.root / f"{key}.npz"

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        """The arrays saved under ``key``, or None (none saved, or unreadable: then it is removed)."""
        path = self.entry(key)
        try:
            with np.load(path, allow_pickle=False) as saved:
                arrays = {name: saved[name] for name in saved.files}
        except FileNotFoundError:
            return None
        except (OSError, ValueError, EOFError) as exc:
            self._warn(f"boundary bisections {path.name} unreadable, bisected again: {exc}")
            path.unlink(missing_ok=True)
            return None
        os.utime(path)  # used: the last to be evicted
        return arrays

    def save(self, key: str, arrays: dict[str, np.ndarray]) -> Path | None:
        """Keep ``arrays`` under ``key`` (replacing what was there); then the oldest entries beyond ``keep`` go.
        A failure (a full disk, a read-only cache) costs the next evaluation the reuse, never this one."""
        path = self.entry(key)
        staging = path.with_name(f".{path.stem}.{uuid.uuid4().hex}.npz")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with open(staging, "wb") as out:
                np.savez(out, **arrays)
            os.replace(staging, path)
        except OSError as exc:
            staging.unlink(missing_ok=True)
            self._warn(f"boundary bisections not cached: {exc.strerror or exc}")
            return None
        self._evict(path)
        return path

    def _evict(self, kept: Path) -> None:
        entries = []
        for path in self.root.glob("*.npz"):
            try:
                entries.append((path.stat().st_mtime, path))
            except FileNotFoundError:  # another process evicted it
                continue
        entries.sort(reverse=True)
        for _, path in entries[self.keep:]:
            if path != kept:
                path.unlink(missing_ok=True)


__all__ = ["BisectionCache", "KEEP", "bisections_root"]
