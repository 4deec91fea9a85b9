"""A job's input set, streamed: read a block of rows at a time and checked against the model's inputs;
and the check that a file the job names is there and is the one the host pushed (its sha256).
"""

import contextlib
import os

from .errors import AgentFailure
from .files import sha256_file
from .npz import npz_members
from .wire import dtype_name

BLOCK_BYTES = 8 << 20  # input rows (all inputs together) held at a time, whatever the size of the set


class InputStream(object):
    """A job's input arrays, read a block of rows at a time through npz_members.

    Only the member headers are read up front, and checked against the model before any
    inference, so the agent's memory holds one block (~BLOCK_BYTES) however large the
    set is. Every pass reads the blocks afresh; the reads happen between invokes,
    never inside a timed one. Blocks are whole batches, so no batch spans two blocks.
    """

    def __init__(self, path, names, details, batch):
        members = npz_members(path)
        missing = [n for n in names if n not in members]
        if missing:
            raise AgentFailure("BadInputs", "%s has no array named %s" % (path, ", ".join(missing)))
        self.path, self.members = path, [members[n] for n in names]
        self.count = check_inputs(self.members, names, details)
        row_bytes = sum(m.row_items * m.dtype.itemsize for m in self.members)
        self.block_rows = max(1, BLOCK_BYTES // max(row_bytes, 1) // batch) * batch

    def head(self, rows):
        """The first ``rows`` samples of every input (first inference, warmup)."""
        with self._reading():
            return [m.read(0, rows) for m in self.members]

    def blocks(self):
        """(lo, hi, [rows lo:hi of each input]) over the whole set, in order; each block's
        arrays are overwritten by the next block (one block of memory, no allocation per block)."""
        with self._reading():
            for parts in zip(*(m.chunks(self.block_rows, reuse=True) for m in self.members)):
                yield parts[0][0], parts[0][1], [block for _, _, block in parts]

    @contextlib.contextmanager
    def _reading(self):
        """A read that fails part-way (bad CRC, corrupt deflate data, I/O error) is BadInputs naming the set."""
        try:
            yield
        except AgentFailure:
            raise
        except Exception as exc:
            raise AgentFailure("BadInputs", "cannot read input set %s: %s: %s"
                               % (self.path, exc.__class__.__name__, exc))


def check_inputs(members, names, details):
    """The sample count, once every array's samples, dtype and sample shape fit the model's inputs."""
    count = members[0].rows
    for name, member, detail in zip(names, members, details):
        if not member.shape:
            raise AgentFailure("BadInputs", "array %s is a single value, not samples" % name)
        if member.rows != count:
            raise AgentFailure("BadInputs", "array %s has %d samples, expected %d" % (name, member.rows, count))
        if dtype_name(member.dtype) != dtype_name(detail["dtype"]):
            raise AgentFailure("BadInputs", "array %s is %s but model input %s wants %s"
                               % (name, member.dtype, detail["name"], dtype_name(detail["dtype"])))
        want = [int(s) for s in detail.get("shape_signature", detail["shape"])][1:]
        got = list(member.shape[1:])
        if len(want) != len(got) or any(w not in (-1, g) for w, g in zip(want, got)):
            raise AgentFailure("BadInputs", "array %s has sample shape %s but model input %s wants %s"
                               % (name, got, detail["name"], want))
    return count


def check_expected_sha(path, expected):
    if path is None:
        raise AgentFailure("BadJob", "job names no model or inputs")
    if not os.path.isfile(path):
        raise AgentFailure("BadJob", "%s does not exist on the device" % path)
    if expected and sha256_file(path) != expected:
        raise AgentFailure("Corrupt", "%s does not match its sha256 %s" % (path, expected[:12]))
