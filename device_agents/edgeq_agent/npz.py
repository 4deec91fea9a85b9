""".npz files, a chunk at a time: the checked reader of input sets (``npz_members``) and the writer
of sensors.npz (``save_npz``). The host imports ``npz_members`` too: one reader of the format.
"""

import contextlib
import os

from .errors import AgentFailure


def save_npz(path, arrays):
    """An .npz of plain arrays, written with allow_pickle=False on any numpy (1.26 has no savez flag)."""
    import zipfile

    from numpy.lib import format as npy_format

    with open(path, "wb") as raw:
        with zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, array in arrays.items():
                with archive.open(name + ".npy", "w", force_zip64=True) as member:
                    npy_format.write_array(member, array, allow_pickle=False)
        raw.flush()
        os.fsync(raw.fileno())


class NpzMember(object):
    """One array of an .npz, read without loading it: its header is parsed once, its
    rows are read on demand. Runs on the board and on the host (which imports it), so
    a suite of any size costs one chunk of memory, and a member whose header promises
    more data than the archive holds (a truncated file, a zip bomb) is refused before
    anything is read."""

    def __init__(self, path, info, dtype, shape, fortran_order, header_len):
        self.path, self.info, self.name = path, info, info.filename[:-4]
        self.dtype, self.shape, self.fortran_order = dtype, shape, fortran_order
        self.header_len = header_len  # magic + npy header, bytes before the data
        self.stored = info.compress_type == 0
        self.data_offset = None  # absolute file offset of the data (stored members only)

    @property
    def rows(self):
        return int(self.shape[0]) if self.shape else 1

    @property
    def row_items(self):
        items = 1
        for dim in self.shape[1:]:
            items *= int(dim)
        return items

    @property
    def nbytes(self):
        return self.rows * self.row_items * self.dtype.itemsize if self.shape else self.dtype.itemsize

    @property
    def chunkable(self):
        """Rows can be read one block at a time (C order, at least one axis)."""
        return bool(self.shape) and (not self.fortran_order or len(self.shape) == 1)

    def read(self, lo=0, hi=None):
        """Rows lo:hi as a writable array (the whole array when it has no axis)."""
        if not self.shape:
            return self._read_bytes(0, self.dtype.itemsize).view(self.dtype).reshape(())
        if not self.chunkable:
            if lo == 0 and hi in (None, self.rows):
                return self._read_fortran()
            return self._read_fortran()[lo:hi]
        hi = self.rows if hi is None else min(hi, self.rows)
        lo = max(0, min(lo, hi))
        row_bytes = self.row_items * self.dtype.itemsize
        raw = self._read_bytes(lo * row_bytes, (hi - lo) * row_bytes)
        return raw.view(self.dtype).reshape((hi - lo,) + tuple(self.shape[1:]))

    def chunks(self, rows_per_chunk, reuse=False):
        """(lo, hi, rows) blocks in order, read front to back (a compressed member is inflated once).

        With reuse, every block is read into the same buffer, valid until the next block is
        read: a pass over the member then costs one block of memory and no allocation per block.
        """
        step = max(1, int(rows_per_chunk))
        if not self.chunkable:  # no axis, or Fortran order (rows not contiguous): read once, whole
            whole = self.read()
            for lo in range(0, self.rows, step):
                yield lo, min(lo + step, self.rows), whole[lo:lo + step] if self.shape else whole
            return
        import numpy as np

        row_bytes = self.row_items * self.dtype.itemsize
        shared = np.empty(min(step, self.rows) * row_bytes, dtype=np.uint8) if reuse else None
        with self._data_stream() as handle:
            for lo in range(0, self.rows, step):
                hi = min(lo + step, self.rows)
                size = (hi - lo) * row_bytes
                block = shared[:size] if reuse else np.empty(size, dtype=np.uint8)
                _readinto_exact(handle, block, self)
                yield lo, hi, block.view(self.dtype).reshape((hi - lo,) + tuple(self.shape[1:]))

    def picks(self, rows, rows_per_chunk, reuse=False):
        """Like ``chunks`` over only ``rows`` (sorted ascending, unique, in range): (lo, hi, block) where block
        holds rows[lo:hi]. A stored member reads each run of consecutive rows where it lies; a compressed one
        is inflated front to back once, the rows between skipped. Never more than a block in memory."""
        import numpy as np

        step, count = max(1, int(rows_per_chunk)), len(rows)
        if not self.chunkable:  # read whole anyway (see chunks)
            whole = self.read()
            for lo in range(0, count, step):
                yield lo, min(lo + step, count), whole[rows[lo:lo + step]]
            return
        row_bytes = self.row_items * self.dtype.itemsize
        shared = np.empty(min(step, count) * row_bytes, dtype=np.uint8) if reuse else None
        with self._data_stream() as handle:
            position = 0  # the next row an inflating stream gives
            for lo in range(0, count, step):
                hi = min(lo + step, count)
                size = (hi - lo) * row_bytes
                block = shared[:size] if reuse else np.empty(size, dtype=np.uint8)
                done = 0
                for first, last in _runs(rows[lo:hi]):
                    if self.stored:
                        handle.seek(self.data_offset + first * row_bytes)
                    else:
                        _skip(handle, (first - position) * row_bytes, self)
                        position = last
                    _readinto_exact(handle, block[done:done + (last - first) * row_bytes], self)
                    done += (last - first) * row_bytes
                yield lo, hi, block.view(self.dtype).reshape((hi - lo,) + tuple(self.shape[1:]))

    @contextlib.contextmanager
    def _data_stream(self):
        """A file object at the member's first data byte: the archive file itself when the member
        is stored, else the inflating stream past the .npy header."""
        if self.stored:
            with open(self.path, "rb") as handle:
                handle.seek(self.data_offset)
                yield handle
        else:
            with _zip_of(self.path) as archive, archive.open(self.info) as handle:
                _read_exact(handle, self.header_len, self)
                yield handle

    def _read_bytes(self, start, count):
        import numpy as np

        block = np.empty(count, dtype=np.uint8)
        if self.stored:
            with open(self.path, "rb") as handle:
                handle.seek(self.data_offset + start)
                _readinto_exact(handle, block, self)
            return block
        with _zip_of(self.path) as archive, archive.open(self.info) as handle:
            _skip(handle, self.header_len + start, self)
            _readinto_exact(handle, block, self)
        return block

    def _read_fortran(self):
        import numpy as np

        flat = self._read_bytes(0, self.nbytes).view(self.dtype)
        return np.asfortranarray(flat.reshape(tuple(self.shape), order="F"))


def _runs(rows):
    """[first, last) of each run of consecutive values in sorted, unique ``rows``."""
    import numpy as np

    if not len(rows):
        return
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    for start, end in zip([0] + breaks.tolist(), breaks.tolist() + [len(rows)]):
        yield int(rows[start]), int(rows[end - 1]) + 1


def _zip_of(path):
    import zipfile

    return zipfile.ZipFile(path)


def _skip(handle, count, member):
    while count > 0:
        got = _guarded(member, handle.read, min(count, 1 << 20))
        if not got:
            raise AgentFailure("BadInputs", "%s: array %s is truncated" % (member.path, member.name))
        count -= len(got)


def _read_exact(handle, count, member):
    data = _guarded(member, handle.read, count)
    if len(data) != count:
        raise AgentFailure("BadInputs", "%s: array %s is truncated" % (member.path, member.name))
    return data


def _readinto_exact(handle, block, member, piece=1 << 20):
    """Fill block from handle, a piece at a time: an inflating zip stream builds each read
    as new bytes objects, so a whole block in one read would cost the block several times over."""
    view, done = memoryview(block), 0
    while done < len(block):
        got = _guarded(member, handle.readinto, view[done:done + piece])
        if not got:
            raise AgentFailure("BadInputs", "%s: array %s is truncated" % (member.path, member.name))
        done += got


def _guarded(member, read, argument):
    """One read; a damaged archive (bad CRC, corrupt deflate data) becomes a BadInputs naming the array."""
    import zipfile
    import zlib

    try:
        return read(argument)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise AgentFailure("BadInputs", "%s: array %s is damaged (%s)" % (member.path, member.name, exc))


def npz_members(path):
    """{name: NpzMember} of an .npz, checked: plain dtypes only (no pickles), and every
    member's declared size must match the bytes the archive holds for it."""
    import zipfile

    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, EOFError) as exc:
        raise AgentFailure("BadInputs", "%s is not a readable .npz archive (%s)" % (path, exc))
    members = {}
    with archive, open(path, "rb") as raw:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise AgentFailure("BadInputs", "%s holds %s, which is not an array" % (path, info.filename))
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise AgentFailure("BadInputs", "%s: array %s uses a compression numpy does not write"
                                   % (path, info.filename[:-4]))
            member = _parse_member(path, archive, info)
            if member.stored:
                member.data_offset = _data_offset(raw, info, path) + member.header_len
            members[member.name] = member
    return members


def _parse_member(path, archive, info):
    import numpy as np
    from numpy.lib import format as npy

    name = info.filename[:-4]
    try:
        with archive.open(info) as handle:
            version = npy.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = npy.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, fortran, dtype = npy.read_array_header_2_0(handle)
            else:
                shape, fortran, dtype = npy._read_array_header(handle, version)
            header_len = handle.tell()
    except AgentFailure:
        raise
    except Exception as exc:
        raise AgentFailure("BadInputs", "%s: array %s has no valid .npy header (%s)" % (path, name, exc))
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise AgentFailure("BadInputs", "%s: array %s holds pickled/object data, which edgeq refuses to load"
                           % (path, name))
    member = NpzMember(path, info, dtype, tuple(int(s) for s in shape), bool(fortran), header_len)
    if any(s < 0 for s in member.shape) or info.file_size != header_len + member.nbytes:
        raise AgentFailure("BadInputs", "%s: array %s declares shape %s of %s (%d bytes) but holds %d bytes"
                           % (path, name, list(member.shape), dtype, member.nbytes, info.file_size - header_len))
    return member


def _data_offset(raw, info, path):
    """Where a stored member's bytes start: after its local header, whose extra field may
    differ from the central directory's."""
    import struct

    raw.seek(info.header_offset)
    local = raw.read(30)
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise AgentFailure("BadInputs", "%s: damaged archive (no local header for %s)" % (path, info.filename))
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    return info.header_offset + 30 + name_len + extra_len
