"""Which codec carries each block of a push: raw, zlib -1, xz -3 or xz -6, from what the link and the codecs measure.

Used by ``stream_push`` (the frames and their kinds are the agent receiver's wire rules, imported from
``device_agents/edgeq_agent/receive.py``). Compressing pays for payloads that usually shrink (input
sets, by suffix; any file once the link proved slow), and only when the compressor outruns the link:
each block takes the codec expected to move it fastest from this receiver's figures — the link while
sending, each compressor's speed and ratio here (``WORKERS`` blocks at once), the device's inflate
speed from its answers — so a fast link gets raw frames and a slow one xz. A file whose blocks do
not shrink goes raw after a few.
"""

from __future__ import annotations

import lzma
import os
import threading
import time
import zlib
from pathlib import Path

from device_agents.edgeq_agent.receive import FRAME, RAW, XZ, ZLIB

BLOCK = 1 << 20  # bytes of the file per frame (the receiver takes frames up to MAX_BLOCK)
COMPRESSIBLE = frozenset({".npz", ".npy", ".json", ".jsonl", ".csv", ".txt", ".tsv"})  # input sets and tables
MIN_COMPRESS = 64 << 10  # smaller files go raw: one frame, nothing to win
SLOW_LINK = 8e6  # bytes/s: below this every file is worth a try (a .tflite's fp16/float weights shrink ~10 %)
GIVE_UP = 3  # blocks in a row that did not shrink to 90 %: the rest of the file goes raw
TRUST_LINK = 4 << 20  # wire bytes sent before a send-time link figure is believed (no delivery counts)
MEASURE_S = 0.25  # link figures come from busy spells this long (or MEASURE_BYTES long, over 50 ms)
MEASURE_BYTES = 256 << 10
BUSY = 64 << 10  # the far end is busy while at least this much waits for it
WORKERS = max(1, min(4, os.cpu_count() or 1))  # blocks compressed at once (zlib and lzma release the GIL)


def _xz(preset: int):
    """xz of one block: a 1 MiB dictionary (a block is 1 MiB) and literals aligned to 4 bytes (float32 arrays)."""
    filters = [{"id": lzma.FILTER_LZMA2, "preset": preset, "dict_size": BLOCK, "lc": 0, "lp": 2, "pb": 2}]
    return lambda block: lzma.compress(block, format=lzma.FORMAT_XZ, check=lzma.CHECK_NONE, filters=filters)


# name: (frame kind, compress, speed until measured (input bytes/s per thread; None: zlib-1's), ratio until
# measured as a multiple of zlib-1's). Measured here, per 1 MiB block of input sets (an image risky suite; the
# example's): zlib -1 150-200 MB/s, ratio 2.6 / 4.5; xz -3 15-30 MB/s, 3.5 / 8.8; xz -6 ~4.6 MB/s, 3.8 / 10.6;
# the device inflates xz at 80-200 MB/s. xz pays on slow links only, which is where the codec picks it.
CODECS = {"zlib1": (ZLIB, lambda block: zlib.compress(block, 1), None, 1.0),
          "xz3": (XZ, _xz(3), 15e6, 1.3),
          "xz6": (XZ, _xz(6), 4.5e6, 1.4)}


class Codec:
    """Raw or one of ``CODECS`` for the next block: the one expected to move it fastest, from figures measured
    on this receiver: the link, each codec's speed and ratio here and the device's inflate speed (from its
    answers). The link is what the far end took per second while data waited for it (``Process.in_flight``:
    SSH window accounting; while nothing waits the host is the bottleneck, not the link), else the wire
    bytes per second of sending, believed only after ``TRUST_LINK`` bytes (SSH and TCP buffers swallow the
    first MiBs at once). The first block of a file goes with zlib level 1 (cheap on any link) while it
    measures; when the intake can be counted the next blocks wait for that figure, MEASURE_S or so: a far
    end never kept busy that long takes whatever comes, and the link counts as twice that (raw wins)."""

    def __init__(self):
        self.link: float | None = None
        self.sent = 0
        self.delivery = False  # the link figure comes from delivery counts
        self.counting = False  # the receiver can count delivery: encoders wait for the first figure
        self.measured = threading.Event()
        self._start, self._last, self._busy = 0.0, None, [0, 0.0]
        self.speed: dict[str, float] = {}  # codec -> input bytes per second, a moving average
        self.ratio: dict[str, float] = {}  # codec -> input bytes per output byte
        self.device: dict[int, float] = {}  # frame kind -> output bytes per second inflated on the device

    def note_link(self, nbytes: int, seconds: float) -> None:
        """One frame's send time, when the far end's intake cannot be counted."""
        self.sent += nbytes
        if nbytes >= 4096 and seconds > 0 and not self.delivery:
            self.link = _average(self.link, nbytes / seconds)

    def begin_file(self, now: float) -> None:
        self._start, self._last, self._busy = now, None, [0, 0.0]

    def note_delivery(self, delivered: int, waiting: int, now: float) -> None:
        """``delivered``: wire bytes of this file the far end has taken; ``waiting``: sent, not taken yet."""
        last, self._last = self._last, (delivered, waiting, now)
        if last is not None and last[1] >= BUSY and delivered - last[0] < last[1]:
            busy = self._busy  # data waited for the far end all along: its intake is the link's speed
            busy[0] += delivered - last[0]
            busy[1] += now - last[2]
            if busy[1] >= MEASURE_S or (busy[0] >= MEASURE_BYTES and busy[1] >= 0.05):
                self.link = _average(self.link if self.delivery else None, busy[0] / busy[1])
                self.delivery, self._busy = True, [0, 0.0]
                self.measured.set()
        elif not self.measured.is_set() and now - self._start >= MEASURE_S:
            self.link = max(self.link or 0.0, 2 * max(delivered, 1) / (now - self._start))
            self.delivery = True
            self.measured.set()

    def note_device(self, decode: dict) -> None:
        for kind, (nbytes, seconds) in (decode or {}).items():
            if nbytes >= BLOCK and seconds > 0:
                self.device[int(kind)] = _average(self.device.get(int(kind)), nbytes / seconds)

    @property
    def link_known(self) -> bool:
        return self.link is not None and (self.delivery or self.sent >= TRUST_LINK)

    def start(self, local: Path, size: int) -> "_FileCodec":
        slow = self.link_known and self.link < SLOW_LINK
        return _FileCodec(self, size >= MIN_COMPRESS and (local.suffix.lower() in COMPRESSIBLE or slow))

    def choose(self) -> str | None:
        """A name in ``CODECS``, or None for raw: the largest expected min(compressor, link x ratio, device)."""
        if not self.link_known or "zlib1" not in self.ratio:
            return "zlib1"  # cheap, and it measures the figures the others are guessed from
        best, best_rate = None, self.link
        for name, (kind, _, prior_speed, prior_factor) in CODECS.items():
            speed = self.speed.get(name, prior_speed or self.speed["zlib1"])
            ratio = self.ratio.get(name, self.ratio["zlib1"] * prior_factor)
            rate = min(speed * WORKERS, self.link * ratio, self.device.get(kind, float("inf")))
            if rate > best_rate * 1.05:
                best, best_rate = name, rate
        return best


class _FileCodec:
    def __init__(self, codec: Codec, candidate: bool):
        self.codec, self.candidate, self.misses = codec, candidate, 0

    def frame(self, block: bytes, index: int) -> bytes:
        if self.candidate and index and self.codec.counting:
            self.codec.measured.wait(2 * MEASURE_S)  # block 0 measures the link meanwhile
        name = self.codec.choose() if self.candidate else None
        if name:
            kind, compress = CODECS[name][:2]
            started = time.perf_counter()
            packed = compress(block)  # zlib and lzma release the GIL: the sender keeps sending meanwhile
            seconds = time.perf_counter() - started
            if seconds > 0:
                self.codec.speed[name] = _average(self.codec.speed.get(name), len(block) / seconds)
            self.codec.ratio[name] = _average(self.codec.ratio.get(name), len(block) / max(len(packed), 1))
            if len(packed) < 0.9 * len(block):
                self.misses = 0
                return FRAME.pack(kind, len(packed)) + packed
            self.misses += 1
            self.candidate = self.misses < GIVE_UP
        return FRAME.pack(RAW, len(block)) + block


def _average(old: float | None, new: float, weight: float = 0.3) -> float:
    return new if old is None else old + weight * (new - old)
