"""A tiny PNG encoder (numpy + zlib) for the report's example images: no imaging library needed."""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png_bytes(pixels: np.ndarray) -> bytes:
    """An 8-bit PNG of (H, W) grey, (H, W, 1) grey, (H, W, 3) RGB or (H, W, 4) RGBA uint8 pixels."""
    a = np.asarray(pixels)
    if a.dtype != np.uint8:
        raise ValueError(f"png_bytes needs uint8 pixels, got {a.dtype}")
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        colour_type = 0
    elif a.ndim == 3 and a.shape[-1] in (3, 4):
        colour_type = 2 if a.shape[-1] == 3 else 6
    else:
        raise ValueError(f"png_bytes: not an image shape {a.shape}")
    height, width = a.shape[:2]
    rows = np.ascontiguousarray(a).reshape(height, -1)
    raw = np.hstack([np.zeros((height, 1), np.uint8), rows]).tobytes()  # filter type 0 on every row
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 9))
            + _chunk(b"IEND", b""))


def to_uint8(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Values scaled from [lo, hi] to 0–255 (clipped); non-finite values shown as 0."""
    x = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=lo, posinf=hi, neginf=lo)
    span = hi - lo if hi > lo else 1.0
    return np.clip(np.round((x - lo) / span * 255.0), 0, 255).astype(np.uint8)


def data_uri(pixels: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(pixels)).decode("ascii")
