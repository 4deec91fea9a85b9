"""Blocks of a suite's rows kept between the rounds of adaptive sampling.

A family transforms a cell's rows a block at a time (``risky.transform_rows``: ~4 MB of float64,
so a 64-feature cell of 500 samples is one block). A round takes a few rows of every open cell,
and would transform each whole block again for them: on a small model that was most of a
round's host time. The plan keeps the blocks it made here, up to a byte limit.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np


class MadeBlocks:
    """Blocks made, by key, up to ``limit`` bytes (least recently used dropped first); one lock, as the
    devices of a fleet make their rounds' rows at once."""

    def __init__(self, limit: int):
        self.limit, self.bytes = int(limit), 0
        self._blocks: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key, make: Callable[[], np.ndarray]) -> np.ndarray:
        with self._lock:
            if key in self._blocks:
                self._blocks.move_to_end(key)
                return self._blocks[key]
        block = make()
        block.flags.writeable = False  # shared by every round that reads it
        with self._lock:
            if key not in self._blocks and block.nbytes <= self.limit:
                self._blocks[key] = block
                self.bytes += block.nbytes
                while self.bytes > self.limit:
                    self.bytes -= self._blocks.popitem(last=False)[1].nbytes
        return block
