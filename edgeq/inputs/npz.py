"""Arrays on disk, written and read a block of rows at a time.

A suite of any size must cost the host one block of memory, not the suite: the
suite is written as it is generated (``NpzWriter``), and what is read back — input
sets, run outputs, sample tags — is a ``DiskArray`` that reads the rows asked for
with plain file reads. Plain reads rather than a memory map, because every mapped
page that was touched counts in the process's RSS until the map is dropped, and a
comparison touches every output.

Headers are parsed by the agent's ``npz_members`` (one parser, on the board and
here), which also refuses pickles and members whose header promises more bytes than
the archive holds. ``open_npz`` also checks every member's zip CRC-32, streaming a block
at a time (``verify_crcs``): reading rows at their offsets never passes the zip layer's own
check, so without it a damaged set was "ok" here although numpy refuses it.
"""

from __future__ import annotations

import os
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
from numpy.lib import format as npy

from device_agents.edgeq_agent import AgentFailure, npz_members
from edgeq.errors import InputSetError
from edgeq.files import atomic_write

BLOCK_BYTES = 4 << 20  # rows per read: about this many bytes
CRC_BLOCK_BYTES = 1 << 20  # bytes per read while checking a member's CRC


def rows_per_block(row_bytes: int, block_bytes: int | None = None) -> int:
    return max(1, (block_bytes or BLOCK_BYTES) // max(1, row_bytes))


class DiskArray:
    """A read-only array in a file: rows are read when indexed, never kept.

    Enough of ndarray for the comparison and the checks (``shape``, ``dtype``,
    ``len``, slices, boolean masks, ``np.asarray``); ``blocks()`` walks it front to back.
    """

    def __init__(self, path: Path, dtype: np.dtype, shape: tuple, offset: int | None = None, member=None):
        self.path, self.dtype, self.shape = Path(path), np.dtype(dtype), tuple(shape)
        self.offset, self.member = offset, member  # offset: a plain file; member: a compressed npz member

    @classmethod
    def from_npy(cls, path: str | os.PathLike) -> "DiskArray":
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)  # parses the header; no page is touched
        if not mapped.flags.c_contiguous:
            raise ValueError(f"{path}: not a C-ordered array")
        array = cls(path, mapped.dtype, mapped.shape, offset=mapped.offset)
        del mapped
        return array

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        whole = self.rows(0, len(self))
        return whole if dtype is None else whole.astype(dtype)

    def __getitem__(self, key):
        if isinstance(key, slice) and key.step in (None, 1):
            lo, hi, _ = key.indices(len(self))
            return self.rows(lo, max(lo, hi))
        if isinstance(key, (int, np.integer)):
            index = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= index < len(self):
                raise IndexError(f"row {key} out of range for {len(self)} rows")
            return self.rows(index, index + 1)[0]
        key = np.asarray(key)
        if key.dtype == bool:
            if key.shape != (len(self),):
                raise IndexError(f"mask of shape {key.shape} for {len(self)} rows")
            parts = [block[key[lo:hi]] for lo, hi, block in self.blocks()]
            return np.concatenate(parts) if parts else np.empty((0,) + self.shape[1:], self.dtype)
        return np.asarray(self)[key]

    def rows(self, lo: int, hi: int) -> np.ndarray:
        if self.member is not None:
            return self.member.read(lo, hi)
        out = np.empty((hi - lo,) + self.shape[1:], dtype=self.dtype)
        view = memoryview(out.reshape(-1).view(np.uint8)) if out.size else memoryview(b"")
        with open(self.path, "rb") as handle:
            handle.seek(self.offset + lo * self.row_bytes)
            done = 0
            while done < len(view):
                got = handle.readinto(view[done:])
                if not got:
                    raise InputSetError(self.path, f"ends before row {hi} of {len(self)}")
                done += got
        return out

    def blocks(self, rows: int | None = None):
        """(lo, hi, rows) in order; a compressed member is inflated once, front to back."""
        step = rows or rows_per_block(self.row_bytes)
        if self.member is not None:
            yield from self.member.chunks(step)
            return
        for lo in range(0, len(self), step):
            yield lo, min(lo + step, len(self)), self.rows(lo, min(lo + step, len(self)))


def row_blocks(array, rows: int | None = None):
    """Blocks of rows of an ndarray (views) or a DiskArray (fresh reads)."""
    if isinstance(array, DiskArray):
        for _, _, block in array.blocks(rows):
            yield block
        return
    array = np.asarray(array)
    row_bytes = int(np.prod(array.shape[1:], dtype=np.int64)) * array.dtype.itemsize if array.ndim else 1
    step = rows or rows_per_block(row_bytes)
    for lo in range(0, max(len(array), 1) if array.ndim else 1, step):
        yield array[lo:lo + step] if array.ndim else array


def open_npz(path: Path) -> dict[str, np.ndarray | DiskArray]:
    """Every member of an .npz, its CRC checked: scalars and small members as arrays, the rest on disk."""
    try:
        members = npz_members(str(path))
    except AgentFailure as exc:
        raise _input_error(path, str(exc)) from None
    verify_crcs(path)
    out = {}
    for name, member in members.items():
        try:
            if not member.shape or not member.chunkable or member.nbytes <= BLOCK_BYTES:
                out[name] = member.read()
            elif member.stored:
                out[name] = DiskArray(path, member.dtype, member.shape, offset=member.data_offset)
            else:
                out[name] = DiskArray(path, member.dtype, member.shape, member=member)
        except AgentFailure as exc:
            raise _input_error(path, str(exc)) from None
    return out


def verify_crcs(path: Path, block_bytes: int = CRC_BLOCK_BYTES) -> None:
    """InputSetError naming the member when a member's bytes do not match its zip CRC-32 (or do
    not inflate). Reads each member once, front to back, ``block_bytes`` at a time: the zip
    layer checks the CRC when a member is read to its end."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, NotImplementedError, RuntimeError, ValueError, EOFError) as exc:
        raise InputSetError(path, f"is not a readable .npz archive ({exc})") from None
    with archive:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            try:
                with archive.open(info) as handle:
                    while handle.read(block_bytes):
                        pass
            except zipfile.BadZipFile as exc:
                why = "its zip CRC-32 does not match its bytes" if "CRC" in str(exc) else str(exc)
                raise InputSetError(path, f"is damaged: {why} (changed or corrupted after it was written; "
                                          "numpy refuses it too)", array=name) from None
            except (zlib.error, EOFError, OSError, ValueError, NotImplementedError, RuntimeError) as exc:
                raise InputSetError(path, f"is damaged: its compressed bytes cannot be read ({exc})",
                                    array=name) from None


def _input_error(path: Path, message: str) -> InputSetError:
    """The agent's "PATH: array NAME does X" as an InputSetError that names the array."""
    for prefix in (f"{path}: ", f"{path} "):
        if message.startswith(prefix):
            message = message[len(prefix):]
    if message.startswith("array "):
        name, _, rest = message[len("array "):].partition(" ")
        return InputSetError(path, rest, array=name)
    return InputSetError(path, message)


class NpzWriter:
    """An .npz written member by member, each member row block by row block.

    Members are stored (not compressed), so readers can seek to any row. The file
    appears under its name only when closed without error: it is written through the
    one atomic write (``edgeq.files.atomic_write``), a temporary file beside it that
    is fsync'd and renamed, or removed on any error.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writing = atomic_write(self.path)
        handle = self._writing.__enter__()
        try:
            self.archive = zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        except BaseException:
            self._writing.__exit__(*sys.exc_info())
            raise

    def __enter__(self) -> "NpzWriter":
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    def write(self, name: str, array: np.ndarray) -> None:
        with self.archive.open(_entry(name), "w", force_zip64=True) as handle:
            npy.write_array(handle, np.asarray(array), allow_pickle=False)

    def member(self, name: str, shape: tuple, dtype) -> "MemberWriter":
        return MemberWriter(self.archive.open(_entry(name), "w", force_zip64=True), name, tuple(shape),
                            np.dtype(dtype))

    def close(self) -> Path:
        try:
            self.archive.close()
        except BaseException:
            self._writing.__exit__(*sys.exc_info())
            raise
        self._writing.__exit__(None, None, None)  # fsync, rename into place, fsync the folder
        return self.path

    def abort(self) -> None:
        try:
            self.archive.close()
        finally:
            self._writing.__exit__(RuntimeError, RuntimeError("aborted"), None)  # the temporary goes


def _entry(name: str) -> zipfile.ZipInfo:
    """A member's zip entry with a fixed date and mode, so the same arrays give the same file bytes
    (and sha256) whenever they are written: a rebuilt suite is recognised by its hash (the device's
    store does not receive it again; cached float outputs for it are reused)."""
    info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type, info.external_attr = zipfile.ZIP_STORED, 0o644 << 16
    return info


class MemberWriter:
    """One member whose shape is known up front; rows are appended until it is full."""

    def __init__(self, handle, name: str, shape: tuple, dtype: np.dtype):
        self.handle, self.name, self.shape, self.dtype = handle, name, shape, dtype
        self.done = 0
        header = {"descr": npy.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
        try:
            npy.write_array_header_1_0(handle, header)
        except ValueError:
            npy.write_array_header_2_0(handle, header)

    def __enter__(self) -> "MemberWriter":
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None and self.done != self.shape[0]:
            self.handle.close()
            raise ValueError(f"{self.name}: {self.done} rows written, {self.shape[0]} declared")
        self.handle.close()

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        if rows.shape[1:] != self.shape[1:] or self.done + len(rows) > self.shape[0]:
            raise ValueError(f"{self.name}: rows of shape {rows.shape} do not fit {self.shape} "
                             f"after {self.done} rows")
        self.handle.write(rows.tobytes())
        self.done += len(rows)
