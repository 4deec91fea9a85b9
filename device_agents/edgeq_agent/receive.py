"""The receiving end of a push: files streamed on stdin are written, hashed and renamed in one pass.

The host starts ``python -I <agent.pyz> receive`` on an SSH channel of its own, beside the agent
session, and streams the files it pushes through it (``edgeq/devices/transport/stream_push.py``).
Each file is written to its part name while its sha256 is computed from the bytes as they are
written (no second read), then fsync'd; only when the digest and size equal what the host named is
the file recorded as edgeq's (when asked: before the rename, so the record keeps the part's inode),
renamed into place and the folder fsync'd. A digest that differs removes the part. A stream that
ends in the middle of a file (a cut link) leaves the part as it is: the next push resumes from its
size, hashing only that prefix again.

Wire, host to device, per file::

    one JSON line: {"part": P, "final": F, "sha256": HEX, "size": N, "offset": K, "record": bool}
    frames: 5 bytes ">BI" (kind, payload length), then the payload; kinds RAW (bytes of the file),
    ZLIB and XZ (one whole zlib or xz stream inflating to at most MAX_BLOCK bytes), END and
    ABORT (no payload)

Device to host, one JSON line each: ``{"ready": true, "protocol": 1}`` once started, then per file
``{"ok": true, "sha256": HEX, "size": N, "wire": W, "decode": {KIND: [bytes out, seconds]}}`` (what
inflating took here: the host weighs the device's speed when it picks a codec) or
``{"ok": false, "kind": K, "error": TEXT}``.
A line that breaks these rules ends the receiver (the stream cannot be trusted after it).
Standard library only; the bytes go to stdout's descriptor, logs to stderr.
"""

import errno
import hashlib
import json
import lzma
import os
import struct
import sys
import time
import zlib

from .files import fsync_folder
from .store import record_made

PROTOCOL = 1
FRAME = struct.Struct(">BI")
RAW, ZLIB, END, ABORT, XZ = 0, 1, 2, 3, 4
MAX_BLOCK = 4 << 20  # the most a frame carries or inflates to (the host sends 1 MiB blocks)
MAX_HEADER = 64 << 10
XZ_MEMORY = 64 << 20  # the most an xz frame may make its decoder take
PIECE = 1 << 20  # read and written as it arrives: a cut link loses at most what was in flight
READ_SIZE = 1 << 20
HEX = frozenset("0123456789abcdef")


class StreamBroken(Exception):
    """The stream does not follow the wire rules: nothing after it can be read as frames."""


def receive_main(stdin=None, stdout=None):
    """Serve files until stdin ends; 0 at a clean end or a cut mid-file, 2 after a broken stream."""
    source = stdin if stdin is not None else open_stdin()
    out = stdout if stdout is not None else os.fdopen(os.dup(1), "wb")
    if stdout is None:  # nothing else may write to the answer stream
        os.dup2(2, 1)
        sys.stdout = sys.stderr
    answer(out, {"ready": True, "protocol": PROTOCOL})
    while True:
        line = source.readline(MAX_HEADER)
        if not line:
            return 0
        try:
            header = parse_header(line)
            result = receive_file(source, header)
        except EOFError:  # the link was cut mid-file: the part stays for a resume
            return 0
        except StreamBroken as exc:
            answer(out, {"ok": False, "kind": "Protocol", "error": str(exc)})
            return 2
        answer(out, result)


def open_stdin():
    """Standard input read a MiB at a time, from a pipe enlarged to a MiB where Linux allows: with the
    default 8 KiB buffer and 64 KiB pipe this process, not the link, bounded a loopback push (~2x)."""
    if sys.platform.startswith("linux"):
        try:
            import fcntl

            fcntl.fcntl(0, getattr(fcntl, "F_SETPIPE_SZ", 1031), READ_SIZE)
        except (ImportError, OSError):  # not a pipe, or above the user's pipe limit: the default size
            pass
    return open(0, "rb", buffering=READ_SIZE, closefd=False)


def answer(out, payload):
    out.write((json.dumps(payload) + "\n").encode())
    out.flush()


def parse_header(line):
    try:
        header = json.loads(line.decode())
    except ValueError:
        raise StreamBroken("not a JSON header: %r" % line[:80]) from None
    if not isinstance(header, dict):
        raise StreamBroken("header is not an object")
    part, final, digest = header.get("part"), header.get("final"), header.get("sha256")
    if not (isinstance(part, str) and isinstance(final, str) and part and final):
        raise StreamBroken("header needs part and final: device paths")
    if os.path.dirname(part) != os.path.dirname(final):  # a rename is atomic within one folder only
        raise StreamBroken("part and final must share a folder")
    if not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= HEX):
        raise StreamBroken("header needs sha256: 64 lowercase hex digits")
    for key in ("size", "offset"):
        if not isinstance(header.get(key), int) or isinstance(header.get(key), bool) or header[key] < 0:
            raise StreamBroken("header needs %s: a whole number >= 0" % key)
    if header["offset"] > header["size"]:
        raise StreamBroken("offset beyond size")
    return header


def frame_head(source):
    """(kind, payload length) of the next frame; EOFError when the stream stops short."""
    head = source.read(FRAME.size)
    if len(head) < FRAME.size:
        raise EOFError()
    kind, length = FRAME.unpack(head)
    if kind not in (RAW, ZLIB, END, ABORT, XZ) or length > MAX_BLOCK or (kind in (END, ABORT) and length):
        raise StreamBroken("bad frame (kind %d, %d bytes)" % (kind, length))
    return kind, length


def pieces(source, length):
    """A frame's payload as it arrives (a cut link keeps what came before it); EOFError when it stops short."""
    while length:
        piece = source.read1(min(length, PIECE))
        if not piece:
            raise EOFError()
        length -= len(piece)
        yield piece


class Decoder:
    """A frame's payload to the file's bytes, a piece at a time: raw as it is; a zlib or xz stream inflated,
    never beyond MAX_BLOCK, and whole (``finish``) by the frame's end."""

    def __init__(self, kind):
        self.kind, self.made = kind, 0
        if kind == ZLIB:
            self.stream = zlib.decompressobj()
        elif kind == XZ:
            self.stream = lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=XZ_MEMORY)

    def feed(self, piece):
        if self.kind == RAW:
            return piece
        room = MAX_BLOCK - self.made
        data = self.stream.decompress(piece, room + 1)
        self.made += len(data)
        if self.made > MAX_BLOCK or getattr(self.stream, "unconsumed_tail", b""):
            raise ValueError("a compressed frame inflates beyond %d bytes" % MAX_BLOCK)
        return data

    def finish(self):
        if self.kind != RAW and not (self.stream.eof and not self.stream.unused_data):
            raise ValueError("a compressed frame is not one whole stream")


class Part:
    """The part file being written from ``offset`` on, with the sha256 of everything in it so far."""

    def __init__(self, path, offset):
        self.path, self.digest, self.size = path, hashlib.sha256(), offset
        if offset == 0:  # the host's part names are its own: a new transfer starts the file afresh
            self.handle = open(path, "wb")
            return
        self.handle = open(path, "r+b")  # a resume: the prefix must be there, and is hashed once more
        try:
            have = os.fstat(self.handle.fileno()).st_size
            if have < offset:
                raise ValueError("the part holds %d bytes, fewer than the offset %d" % (have, offset))
            self.handle.truncate(offset)
            left = offset
            while left:
                block = self.handle.read(min(left, 1 << 20))
                if not block:
                    raise ValueError("the part ended while its prefix was hashed")
                self.digest.update(block)
                left -= len(block)
        except BaseException:
            self.handle.close()
            raise

    def write(self, data):
        self.handle.write(data)
        self.digest.update(data)
        self.size += len(data)

    def finish(self):
        """Flush and fsync; the hex digest of the whole part."""
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        return self.digest.hexdigest()

    def discard(self):
        self.handle.close()
        try:
            os.remove(self.path)
        except OSError:
            pass


def receive_file(source, header):
    """Write one file's frames to its part; verify, record and rename it. The answer, as a dict."""
    part, failure, wire, decode = None, None, 0, {}
    try:
        part = Part(header["part"], header["offset"])
    except (OSError, ValueError) as exc:
        failure = ("Offset" if isinstance(exc, ValueError) or header["offset"] else "OSError", exc)
    try:
        while True:
            kind, length = frame_head(source)
            if kind == END:
                break
            if kind == ABORT:
                failure = failure or ("Aborted", "the host gave up on this file")
                break
            decoder = Decoder(kind) if failure is None else None  # after a failure frames are read and dropped
            made, busy = 0, 0.0
            for piece in pieces(source, length):
                wire += len(piece)
                if decoder is None:
                    continue
                started = time.perf_counter()
                try:
                    data = decoder.feed(piece)
                    made += len(data)
                    part.write(data)
                except (OSError, ValueError, EOFError, zlib.error, lzma.LZMAError) as exc:
                    failure, decoder = (failure_kind(exc), exc), None
                busy += time.perf_counter() - started
            if decoder is not None and kind != RAW:
                try:
                    decoder.finish()
                except ValueError as exc:
                    failure = (failure_kind(exc), exc)
                spent = decode.setdefault(str(kind), [0, 0.0])  # inflating and writing: the device's own pace
                spent[0] += made
                spent[1] += busy
    except EOFError:
        if part is not None:
            part.handle.close()
        raise
    except BaseException:
        if part is not None:
            part.discard()
        raise
    if failure is not None:
        if part is not None:
            part.discard()
        return {"ok": False, "kind": failure[0], "error": str(failure[1]), "wire": wire}
    answer = finish_file(part, header, wire)
    answer["decode"] = decode
    return answer


def failure_kind(exc):
    if getattr(exc, "errno", None) == errno.ENOSPC:
        return "NoSpace"
    return "OSError" if isinstance(exc, OSError) else "Corrupt"


def finish_file(part, header, wire):
    size = part.size
    try:
        digest = part.finish()
    except OSError as exc:
        part.discard()
        return {"ok": False, "kind": failure_kind(exc), "error": str(exc), "wire": wire}
    if digest != header["sha256"] or size != header["size"]:
        part.discard()
        return {"ok": False, "kind": "Mismatch", "sha256": digest, "size": size, "wire": wire,
                "error": "got sha256 %s (%d bytes), expected %s (%d bytes)" % (
                    digest[:12], size, header["sha256"][:12], header["size"])}
    try:
        if header.get("record"):
            record_made(header["final"], part.path)
        os.replace(part.path, header["final"])
    except OSError as exc:
        part.discard()
        return {"ok": False, "kind": "OSError", "error": str(exc), "wire": wire}
    fsync_folder(os.path.dirname(os.path.abspath(header["final"])))
    return {"ok": True, "sha256": digest, "size": size, "wire": wire}
