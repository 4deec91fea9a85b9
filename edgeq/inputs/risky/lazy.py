"""The risky suite built lazily: only the rows a round of adaptive sampling runs (issue 24).

A fixed-n suite of 500 samples per cell of a 224×224×3 model is 15 GB, written, hashed and
pushed before the first inference; adaptive sampling then runs a fraction of it. Here the
suite is planned once (``SuitePlan``: the data, the cells, their seeds) and each round's rows
are made on demand (``SuitePlan.take``, exactly the rows a full build would hold there) into a
small input set of their own, tagged with their ``suite_row``. What was run is joined at the
end into one input set of the rows run (``join_rows``), which readers index through
``InputSet.positions``.

A suite built this way has no file of its own to hash, so its identity (``suite_identity``) is
the hash of its recipe: the data's sha256, the options that shape the suite, the float model's
sha256 and the host runtime's version when boundary cells are in it (they are made with both), the
sample index, and the generator's version (``SUITE_FORMAT``, with numpy's). The float-output cache
keys on it as it keys on an input set's sha256: the same recipe gives the same rows, byte for byte;
so does the cache of the boundary cells' bisections (``store.bisections``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import numpy as np

from edgeq.errors import InputSetError
from edgeq.inputs.inputset import SUITE_ID, SUITE_ROW, write_npz
from edgeq.inputs.npz import DiskArray, NpzWriter, open_npz, rows_per_block
from edgeq.inputs.risky.boundary import host_runtime

SUITE_FORMAT = 2  # bump when what a plan generates changes: every lazily built suite's identity changes with it
READ_WHOLE_BYTES = 64 << 20  # a round file's member up to this size is read whole when joining; larger: its rows


def suite_identity(plan, data_sha256: str, options: dict, model_sha256: str | None = None) -> str:
    """sha256 of the suite's recipe (see the module's docstring): equal recipes build equal rows."""
    recipe = {"format": SUITE_FORMAT, "numpy": np.__version__, "data_sha256": data_sha256,
              "options": options, "cells": [list(c) for c in plan.cells], "kinds": plan.kinds,
              "range_modes": {k: v[0] for k, v in plan.range_modes.items()},
              "index_sha256": hashlib.sha256(np.asarray(plan.index, dtype=np.int64).tobytes()).hexdigest(),
              "boundary_model_sha256": model_sha256 if plan.boundary is not None else None,
              "boundary_runtime": host_runtime() if plan.boundary is not None else None}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()


class LazySuite:
    """A planned suite whose rows are written on demand. ``identity``: ``suite_identity``; ``category`` and
    ``severity``: every row's tags (cheap: no input array is made for them). ``made``: called after rows are
    made (the caller keeps what making them learnt: the boundary pairs bisected)."""

    def __init__(self, plan, identity: str, made: Callable[[], None] | None = None):
        self.plan, self.identity, self.made = plan, identity, made
        tags = plan.tags()
        self.category, self.severity = tags["category"], tags.get("severity")

    @property
    def n(self) -> int:
        return self.plan.n

    def write_rows(self, rows, path: Path) -> Path:
        """Suite ``rows`` (sorted ascending, unique) as an input set at ``path``: every input array, every tag,
        ``suite_row`` and the suite's identity (``suite_sha256``); written atomically."""
        rows = np.asarray(rows, dtype=np.int64)
        payload = {name: self.plan.take(name, rows) for name in self.plan.inputs}
        if self.made is not None:
            self.made()
        payload.update(self.plan.tags(rows))
        payload.update({SUITE_ROW: rows, SUITE_ID: np.array(self.identity)})
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_npz(Path(path), payload)
        return Path(path)


def join_rows(files: list, out: Path) -> Path:
    """One input set at ``out`` of every row ``files`` hold (each one's ``suite_row``), in ascending suite row
    order, a row held twice (two devices ran it) once; written a block at a time, atomically."""
    opened = [open_npz(Path(f)) for f in files]
    if not opened:
        raise InputSetError(out, "no rows were run: nothing to join")
    held = [np.asarray(members[SUITE_ROW], dtype=np.int64) for members in opened]
    rows = np.concatenate(held)
    source = np.repeat(np.arange(len(held)), [len(h) for h in held])
    local = np.concatenate([np.arange(len(h)) for h in held])
    order = np.argsort(rows, kind="stable")
    rows, source, local = rows[order], source[order], local[order]
    first = np.concatenate(([True], np.diff(rows) > 0))
    source, local = source[first], local[first]
    names = list(opened[0])
    try:
        with NpzWriter(out) as writer:
            for name in names:
                part = opened[0][name]
                if np.ndim(part) == 0:  # one value for the set (the suite's identity): written once
                    writer.write(name, np.asarray(part))
                    continue
                row_bytes = max(1, int(np.prod(part.shape[1:], dtype=np.int64)) * np.dtype(part.dtype).itemsize)
                step = rows_per_block(row_bytes)
                with writer.member(name, (len(source),) + tuple(part.shape[1:]), part.dtype) as member:
                    for lo in range(0, len(source), step):
                        member.append(_gather([m[name] for m in opened], source[lo:lo + step], local[lo:lo + step]))
    except OSError as exc:
        raise InputSetError(out, f"cannot write: {exc.strerror or exc}") from None
    return out


def _gather(parts: list, source: np.ndarray, local: np.ndarray) -> np.ndarray:
    """The rows ``local[i]`` of ``parts[source[i]]``, in that order."""
    first = parts[int(source[0])]
    block = np.empty((len(source),) + tuple(first.shape[1:]), first.dtype)
    for s in np.unique(source):
        where = np.flatnonzero(source == s)
        block[where] = _read(parts[int(s)], local[where])
    return block


def _read(array, local: np.ndarray) -> np.ndarray:
    """``array[local]`` (ascending): a small or in-memory array whole, a large one on disk by runs of consecutive rows."""
    if not isinstance(array, DiskArray) or array.row_bytes * len(array) <= READ_WHOLE_BYTES:
        return np.asarray(array[:] if isinstance(array, DiskArray) else array)[local]
    breaks = np.flatnonzero(np.diff(local) != 1) + 1
    return np.concatenate([array.rows(int(run[0]), int(run[-1]) + 1) for run in np.split(local, breaks)])
