"""A job's input set, streamed: read a block of rows at a time and checked against the model's inputs;
the rows a job may name (a pushed .npy of row indices, checked: ``load_rows``, ``check_rows``); and the
check that a file the job names is there and is the one the host pushed (its sha256).
"""

import contextlib
import os

from .errors import AgentFailure
from .files import sha256_file
from .npz import npz_members
from .wire import dtype_name

BLOCK_BYTES = 8 << 20  # input rows (all inputs together) held at a time, whatever the size of the set
HASHED_MAX = 64  # files whose sha256 a session remembers (see file_sha256)
_HASHED = {}


class InputStream(object):
    """A job's input arrays, read a block of rows at a time through npz_members.

    Only the member headers are read up front, and checked against the model before any
    inference, so the agent's memory holds one block (~BLOCK_BYTES) however large the
    set is. Every pass reads the blocks afresh; the reads happen between invokes,
    never inside a timed one. Blocks are whole batches, so no batch spans two blocks.
    With ``rows`` (sorted, unique row indices: ``load_rows``) the stream is those rows of
    the set, in that order: ``count`` is theirs, ``set_count`` the whole set's.
    """

    def __init__(self, path, names, details, batch, rows=None, rows_name="rows"):
        members = npz_members(path)
        missing = [n for n in names if n not in members]
        if missing:
            raise AgentFailure("BadInputs", "%s has no array named %s" % (path, ", ".join(missing)))
        self.path, self.members = path, [members[n] for n in names]
        self.count = self.set_count = check_inputs(self.members, names, details)
        self.rows = None
        row_bytes = sum(m.row_items * m.dtype.itemsize for m in self.members)
        self.block_rows = max(1, BLOCK_BYTES // max(row_bytes, 1) // batch) * batch
        if rows is not None:
            self.rows = check_rows(rows, self.set_count, rows_name)
            self.count = len(rows)

    def head(self, rows):
        """The first ``rows`` samples of every input (first inference, warmup)."""
        with self._reading():
            if self.rows is None:
                return [m.read(0, rows) for m in self.members]
            return [next(m.picks(self.rows[:rows], rows))[2] for m in self.members]

    def blocks(self):
        """(lo, hi, [rows lo:hi of each input]) over the whole set (or its ``rows``), in order; each block's
        arrays are overwritten by the next block (one block of memory, no allocation per block)."""
        with self._reading():
            if self.rows is None:
                streams = [m.chunks(self.block_rows, reuse=True) for m in self.members]
            else:
                streams = [m.picks(self.rows, self.block_rows, reuse=True) for m in self.members]
            for parts in zip(*streams):
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


def load_rows(path, what="rows file"):
    """The row indices in a .npy file (a run job's rows_file): a 1-D int64 array, sorted ascending, unique, not
    negative (``check_rows``; the upper bound is checked against the set). The header is read first, so a file
    that is pickled, of another dtype or shape, or shorter or longer than its header says is refused (BadJob,
    one line naming it) before its data is read. The host reads a user's rows file with this too."""
    import numpy as np
    from numpy.lib import format as npy

    where = "%s %s" % (what, path)
    try:
        with open(path, "rb") as handle:
            version = npy.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = npy.read_array_header_1_0(handle)
            else:
                shape, fortran, dtype = npy.read_array_header_2_0(handle)
            dtype = np.dtype(dtype)
            if dtype.hasobject:
                raise AgentFailure("BadJob", "%s holds pickled/object data, which edgeq refuses to load" % where)
            if dtype.kind != "i" or dtype.itemsize != 8 or len(shape) != 1:
                raise AgentFailure("BadJob", "%s must be a 1-D int64 array of row indices, not %s of shape %s"
                                   % (where, dtype, list(shape)))
            left = os.fstat(handle.fileno()).st_size - handle.tell()
            if left != shape[0] * 8:
                raise AgentFailure("BadJob", "%s holds %d bytes of data, its header says %d" % (where, left, shape[0] * 8))
            rows = np.frombuffer(handle.read(left), dtype=dtype).astype(np.int64)
    except AgentFailure:
        raise
    except Exception as exc:  # no magic, a damaged header, unreadable: one line, never a traceback
        raise AgentFailure("BadJob", "%s is not a .npy array (%s)" % (where, str(exc)[:120]))
    return check_rows(rows, None, where)


def check_rows(rows, count, where):
    """``rows`` as int64 when they are sorted ascending, unique and in 0..count-1 (count None: not checked yet);
    otherwise BadJob naming the first problem."""
    import numpy as np

    rows = np.asarray(rows)
    if rows.ndim == 1 and not len(rows):
        raise AgentFailure("BadJob", "%s names no rows" % where)
    if rows.ndim != 1 or rows.dtype.kind not in "iu":
        raise AgentFailure("BadJob", "%s must be a 1-D array of whole row indices, not %s of shape %s"
                           % (where, rows.dtype, list(rows.shape)))
    if rows.dtype.kind == "u" and int(rows.max()) > np.iinfo(np.int64).max:
        raise AgentFailure("BadJob", "%s: row %d is out of range" % (where, int(rows.max())))
    rows = rows.astype(np.int64, copy=False)
    steps = np.diff(rows)
    bad = np.flatnonzero(steps <= 0)
    if len(bad):
        at = int(bad[0]) + 1
        if steps[bad[0]] == 0:
            raise AgentFailure("BadJob", "%s: row %d appears twice (positions %d and %d); rows must be unique"
                               % (where, rows[at], at - 1, at))
        raise AgentFailure("BadJob", "%s: rows must be sorted ascending, but row %d (position %d) follows row %d"
                           % (where, rows[at], at, rows[at - 1]))
    if rows[0] < 0:
        raise AgentFailure("BadJob", "%s: row %d is negative" % (where, rows[0]))
    if count is not None and rows[-1] >= count:
        raise AgentFailure("BadJob", "%s: row %d is out of range: the input set has %d rows (0 to %d)"
                           % (where, rows[-1], count, count - 1))
    return rows


def file_sha256(path):
    """sha256 of a file, hashed once per agent session while the file stays the same (device, inode, size,
    modification and change times): the rounds of one session run over the same pushed input set, and a
    set of gigabytes would otherwise be read again for every run. Any write to the file changes its ctime,
    which no one can set back, so a changed file is hashed again."""
    found = os.stat(path)
    key = (os.path.realpath(path), found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns)
    digest = _HASHED.get(key)
    if digest is None:
        digest = sha256_file(path)
        if len(_HASHED) >= HASHED_MAX:
            _HASHED.pop(next(iter(_HASHED)))
        _HASHED[key] = digest
    return digest


def check_expected_sha(path, expected):
    if path is None:
        raise AgentFailure("BadJob", "job names no model or inputs")
    if not os.path.isfile(path):
        raise AgentFailure("BadJob", "%s does not exist on the device" % path)
    if expected and file_sha256(path) != expected:
        raise AgentFailure("Corrupt", "%s does not match its sha256 %s" % (path, expected[:12]))
