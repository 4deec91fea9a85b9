"""What a run writes: outputs and timelines as they are produced, then meta.json and manifest.json last,
in a folder of its own that edgeq made."""

import errno
import os

from .archive import AGENT_VERSION
from .errors import AgentFailure
from .files import fsync_path, sha256_file, write_json
from .npz import save_npz
from .store import made_by_edgeq, record_made


class RunWriter:
    """Results go straight into .npy files as they are produced.

    Outputs are written with positioned writes (NpyRows), not memory maps, so they cost
    no resident memory however large they are; the latency timelines (8 bytes per
    invocation) are memory-mapped. progress.json says how far they got, so if the agent
    is killed the host can still pull what exists; manifest.json, written last, is what
    marks a run complete.
    """

    def __init__(self, out_dir, count, steps, repeats, sample_outputs, record_starts=False):
        self.out_dir, self.count, self.steps = out_dir, count, steps
        self.outputs = [NpyRows(os.path.join(out_dir, "outputs", "output_%d.npy" % k), value.dtype,
                                (count,) + tuple(value.shape[1:]))
                        for k, value in enumerate(sample_outputs)]
        self.passes = repeats
        self.latency = self._timeline("latency_ns.npy", repeats)
        self.starts = self._timeline("invoke_start_ns.npy", repeats) if record_starts else None
        for rel in self.files():  # reserve the space now: a full disk is ENOSPC here, not SIGBUS later
            _reserve(os.path.join(out_dir, rel))
        self.samples_done = 0
        self.invocations_done = 0

    def _timeline(self, rel, passes, old=None):
        """A (passes, invocations per pass) int64 .npy; with old, a resized copy replacing it."""
        from numpy.lib.format import open_memmap

        path = os.path.join(self.out_dir, rel)
        target = path + ".resize" if old is not None else path
        array = open_memmap(target, mode="w+", dtype="int64", shape=(passes, len(self.steps)))
        if old is not None:
            _reserve(target)
            keep = min(passes, old.shape[0])
            array[:keep] = old[:keep]
            array.flush()
            os.replace(target, path)
        return array

    def timelines(self):
        return [("latency_ns.npy", self.latency)] + ([("invoke_start_ns.npy", self.starts)] if self.starts is not None
                                                     else [])

    def resize(self, passes):
        self.latency = self._timeline("latency_ns.npy", passes, self.latency)
        if self.starts is not None:
            self.starts = self._timeline("invoke_start_ns.npy", passes, self.starts)
        self.passes = passes

    def files(self):
        return ["outputs/output_%d.npy" % k for k in range(len(self.outputs))] + [rel for rel, _ in self.timelines()]

    def store(self, values, lo, hi):
        for target, value in zip(self.outputs, values):
            target.write(lo, hi, value)
        self.samples_done = hi

    def checkpoint(self, invocations_done):
        self.invocations_done = invocations_done
        for target in self.outputs + [a for _, a in self.timelines()]:
            target.flush()
        write_json(os.path.join(self.out_dir, "progress.json"),
                    {"samples_done": self.samples_done, "samples": self.count,
                     "invocations_done": invocations_done, "files": self.files()}, sync=False)

    def finish(self, meta, sensors=None, rows=None):
        """Close the files, add batch_sizes.npy (and sensors.npz; rows.npy: the set's row of each sample, when
        the job named rows), then meta.json and the manifest."""
        import numpy as np

        rels = self.files()
        for target in self.outputs:
            target.close()
        for _, array in self.timelines():
            array.flush()
        self.outputs = self.latency = self.starts = None  # close the maps before hashing
        batch_sizes = self.steps.sizes()
        with open(os.path.join(self.out_dir, "batch_sizes.npy"), "wb") as handle:
            np.save(handle, batch_sizes, allow_pickle=False)
        rels.append("batch_sizes.npy")
        if rows is not None:
            with open(os.path.join(self.out_dir, "rows.npy"), "wb") as handle:
                np.save(handle, np.asarray(rows, dtype=np.int64), allow_pickle=False)
            rels.append("rows.npy")
        if sensors is not None:
            save_npz(os.path.join(self.out_dir, "sensors.npz"), sensors)
            rels.append("sensors.npz")
        for rel in rels:
            fsync_path(os.path.join(self.out_dir, rel))
        return write_manifest(self.out_dir, rels, meta)


class NpyRows(object):
    """An .npy file filled a block of rows at a time with positioned writes (os.pwrite).

    The header is written first and the file allocated at its full size at once, so a
    full disk is ENOSPC here, before any inference, never half-way. No memory map:
    written rows go to the page cache, not into the agent's resident memory.
    """

    def __init__(self, path, dtype, shape):
        import numpy as np
        from numpy.lib import format as npy_format

        self.dtype, self.shape = np.dtype(dtype), tuple(int(s) for s in shape)
        self.row_bytes = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))
        self.handle = open(path, "wb+")
        npy_format.write_array_header_1_0(self.handle, {"descr": npy_format.dtype_to_descr(self.dtype),
                                                        "fortran_order": False, "shape": self.shape})
        self.handle.flush()
        self.data_offset = self.handle.tell()
        self.handle.truncate(self.data_offset + self.shape[0] * self.row_bytes)
        _reserve(path)

    def write(self, lo, hi, rows):
        """Rows lo:hi (broadcast and cast like an assignment into the array would be)."""
        import numpy as np

        rows = np.ascontiguousarray(np.broadcast_to(rows, (hi - lo,) + self.shape[1:]), dtype=self.dtype)
        data, offset = memoryview(rows.reshape(-1).view(np.uint8)), self.data_offset + lo * self.row_bytes
        while len(data):
            done = os.pwrite(self.handle.fileno(), data, offset)
            data, offset = data[done:], offset + done

    def flush(self):
        """To disk, like the msync of a memory map's flush: a checkpoint survives a power cut."""
        os.fsync(self.handle.fileno())

    def close(self):
        self.handle.close()


def prepare_out_dir(out_dir):
    """The run's own folder: made here and recorded as edgeq's (``record_made``), or one this agent made before
    (a run repeated into it). A folder edgeq did not make is refused: a run never writes into, or clears files
    from, a folder of the user's."""
    os.makedirs(os.path.dirname(os.path.abspath(out_dir)), exist_ok=True)
    try:
        os.mkdir(out_dir)
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise
        if not made_by_edgeq(out_dir):
            raise AgentFailure("BadJob", "%s already exists and was not made by edgeq: a run writes only into a "
                                         "folder of its own" % out_dir)
    else:
        record_made(out_dir)
    os.makedirs(os.path.join(out_dir, "outputs"), exist_ok=True)
    for stale in ("manifest.json", "progress.json", "sensors.npz", "invoke_start_ns.npy", "rows.npy"):
        if os.path.exists(os.path.join(out_dir, stale)):
            os.remove(os.path.join(out_dir, stale))


def write_manifest(out_dir, rels, meta):
    """Write meta.json, then manifest.json (atomically) last: the mark of a whole run."""
    meta_path = os.path.join(out_dir, "meta.json")
    write_json(meta_path, meta)
    listing = {}
    for rel in rels + ["meta.json"]:
        path = os.path.join(out_dir, rel)
        listing[rel] = {"sha256": sha256_file(path), "size": os.path.getsize(path)}
    write_json(os.path.join(out_dir, "manifest.json"),
                {"complete": True, "agent_version": AGENT_VERSION, "files": listing})
    return {"out": out_dir, "samples": meta["samples"], "files": len(listing),
            "manifest_sha256": sha256_file(os.path.join(out_dir, "manifest.json"))}


def _reserve(path):
    if hasattr(os, "posix_fallocate"):
        with open(path, "rb+") as handle:
            os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
