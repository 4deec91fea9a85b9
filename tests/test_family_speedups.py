"""The fast image and noise families against plain reference versions of the same arithmetic.

The families are written for speed (banded matrix products for blur, whole-plane DCT
products and half-resolution chroma for JPEG, block means taken once for pixelate, row
copies for translate, in-place arithmetic). The references here are the textbook forms
they replaced (a loop over the blur's taps, a per-block einsum, per-pixel gathers), kept
slow on purpose. Every family must give exactly the reference's numbers (the same draws
from the same generator, the same products and sums per element), except blur, which
sums its taps in another order: within float64 rounding of the range.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgeq.inputs.risky.families import FAMILIES, image_layout
from edgeq.inputs.risky.families.image import _CHROMA, _DCT, _LUMA, BLUR_MIN_SIDE, HAZE_GREY, quality_table
from edgeq.inputs.risky.observed import DataStats

# --- references: the plain forms of each family -------------------------------------------------


def _apply(x, data, work):
    layout = image_layout(x.shape[1:])
    vr = data.range
    lo, hi, span = (layout.to_hwc(np.broadcast_to(a, (1, *x.shape[1:]))) for a in (vr.lo, vr.hi, vr.span))
    out = work(layout.to_hwc(x), lo, hi, span, layout)
    return np.ascontiguousarray(layout.from_hwc(np.clip(out, lo, hi)))


def _gaussian_along(x, sigma, axis):
    radius = max(1, int(np.ceil(3 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius, radius)
    padded = np.pad(x, pad, mode="edge")
    out = np.zeros_like(x)
    for k, w in enumerate(taps):
        out += w * np.take(padded, np.arange(k, k + x.shape[axis]), axis=axis)
    return out


def blur(x, level, data, rng):
    def work(img, lo, hi, span, layout):
        sigma = level * max(min(layout.height, layout.width), BLUR_MIN_SIDE)
        return _gaussian_along(_gaussian_along(img, sigma, 1), sigma, 2)
    return _apply(x, data, work)


def _roundtrip(plane, table):
    n, h, w = plane.shape
    blocks = (plane - 128.0).reshape(n, h // 8, 8, w // 8, 8)
    coef = np.einsum("ij,nbjdk,lk->nbidl", _DCT, blocks, _DCT, optimize=True)
    coef = np.round(coef / table[:, None, :]) * table[:, None, :]
    back = np.einsum("ji,nbjdk,kl->nbidl", _DCT, coef, _DCT, optimize=True)
    return back.reshape(n, h, w) + 128.0


def _pad_to(img, multiple):
    h, w = img.shape[1:3]
    return np.pad(img, [(0, 0), (0, -h % multiple), (0, -w % multiple), (0, 0)], mode="edge")


def jpeg(x, quality, data, rng):
    def work(img, lo, hi, span, layout):
        h, w, c = img.shape[1:]
        v = np.clip(np.round((img - lo) / span * 255.0), 0, 255)
        luma, chroma = quality_table(_LUMA, quality), quality_table(_CHROMA, quality)
        if layout.colour:
            v = _pad_to(v, 16)
            r, g, b = v[..., 0], v[..., 1], v[..., 2]
            y = _roundtrip(0.299 * r + 0.587 * g + 0.114 * b, luma)
            cb = 128.0 - 0.168736 * r - 0.331264 * g + 0.5 * b
            cr = 128.0 + 0.5 * r - 0.418688 * g - 0.081312 * b
            n, hp, wp = y.shape
            planes = []
            for p in (cb, cr):
                half = p.reshape(n, hp // 2, 2, wp // 2, 2).mean(axis=(2, 4))
                half = _roundtrip(_pad_to(half[..., None], 8)[..., 0], chroma)[:, :hp // 2, :wp // 2]
                planes.append(np.repeat(np.repeat(half, 2, axis=1), 2, axis=2))
            cb, cr = planes
            rgb = [y + 1.402 * (cr - 128.0), y - 0.344136 * (cb - 128.0) - 0.714136 * (cr - 128.0),
                   y + 1.772 * (cb - 128.0)]
            out = np.stack(rgb + [_roundtrip(v[..., k], luma) for k in range(3, c)], axis=-1)
        else:
            v = _pad_to(v, 8)
            out = np.stack([_roundtrip(v[..., k], luma) for k in range(c)], axis=-1)
        out = np.clip(np.round(out[:, :h, :w]), 0, 255)
        return lo + out / 255.0 * span
    return _apply(x, data, work)


def _cell_means(img, cells, axis):
    size = img.shape[axis]
    owner = (np.arange(size) * cells) // size
    starts = np.searchsorted(owner, np.arange(cells))
    counts = np.diff(np.append(starts, size)).astype(np.float64)
    shape = [1] * img.ndim
    shape[axis] = cells
    return np.take(np.add.reduceat(img, starts, axis=axis) / counts.reshape(shape), owner, axis=axis)


def pixelate(x, keep, data, rng):
    def work(img, lo, hi, span, layout):
        rows, cols = max(1, int(round(layout.height * keep))), max(1, int(round(layout.width * keep)))
        return _cell_means(_cell_means(img, rows, 1), cols, 2)
    return _apply(x, data, work)


def haze(x, weight, data, rng):
    return _apply(x, data, lambda img, lo, hi, span, layout:
                  (1.0 - weight) * img + weight * (lo + HAZE_GREY * span))


def colour_cast(x, level, data, rng):
    def work(img, lo, hi, span, layout):
        direction = rng.standard_normal((img.shape[0], 3))
        direction -= direction.mean(axis=1, keepdims=True)
        direction /= np.maximum(np.abs(direction).max(axis=1, keepdims=True), 1e-12)
        out = img.copy()
        out[..., :3] += level * span[..., :3] * direction[:, None, None, :]
        return out
    return _apply(x, data, work)


def gamma(x, level, data, rng):
    def work(img, lo, hi, span, layout):
        n = img.shape[0]
        g = np.where(rng.random(n) < 0.5, level, 1.0 / level).reshape(n, 1, 1, 1)
        return lo + span * np.clip((img - lo) / span, 0.0, 1.0) ** g
    return _apply(x, data, work)


def occlusion(x, area, data, rng):
    def work(img, lo, hi, span, layout):
        n, h, w = img.shape[:3]
        ph, pw = max(1, int(round(np.sqrt(area) * h))), max(1, int(round(np.sqrt(area) * w)))
        top, left = rng.integers(0, h - ph + 1, size=n), rng.integers(0, w - pw + 1, size=n)
        level = rng.random(n).reshape(n, 1, 1, 1)
        rows, cols = np.arange(h), np.arange(w)
        inside = (((rows >= top[:, None]) & (rows < (top + ph)[:, None]))[:, :, None]
                  & ((cols >= left[:, None]) & (cols < (left + pw)[:, None]))[:, None, :])
        return np.where(inside[..., None], lo + level * span, img)
    return _apply(x, data, work)


def translate(x, level, data, rng):
    def work(img, lo, hi, span, layout):
        n, h, w = img.shape[:3]
        angle = rng.uniform(0.0, 2.0 * np.pi, size=n)
        dy, dx = level * h * np.sin(angle), level * w * np.cos(angle)
        at = np.arange(n)[:, None, None]

        def points(size, shift):
            pos = np.clip(np.arange(size)[None, :] - shift[:, None], 0, size - 1)
            low = np.floor(pos).astype(np.int64)
            return low, np.minimum(low + 1, size - 1), pos - low

        (y0, y1, fy), (x0, x1, fx) = points(h, dy), points(w, dx)
        fy, fx = fy[:, :, None, None], fx[:, None, :, None]
        top = img[at, y0[:, :, None], x0[:, None, :]] * (1 - fx) + img[at, y0[:, :, None], x1[:, None, :]] * fx
        bottom = img[at, y1[:, :, None], x0[:, None, :]] * (1 - fx) + img[at, y1[:, :, None], x1[:, None, :]] * fx
        return top * (1 - fy) + bottom * fy
    return _apply(x, data, work)


def noise(x, sigma, data, rng):
    vr = data.range
    return np.clip(x + rng.standard_normal(x.shape) * (sigma * vr.span), vr.lo, vr.hi)


REFERENCES = {"blur": blur, "jpeg": jpeg, "pixelate": pixelate, "haze": haze, "colour-cast": colour_cast,
              "gamma": gamma, "occlusion": occlusion, "translate": translate, "noise": noise}
# levels beyond the table too: the worst-shift search asks for any strength in between and past them
EXTRA = {"blur": (0.001, 0.2), "translate": (0.2, 0.6, 2.5), "pixelate": (0.9, 0.01), "jpeg": (100, 1, 37)}


# --- data ----------------------------------------------------------------------------------------


def _images(n=5, size=(24, 32), channels=3, seed=0, lo=10.0, hi=200.0):
    """Smooth blobs, a hard edge and a little texture in [lo, hi]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size[0], 0:size[1]] / max(size)
    f = rng.uniform(1, 6, (n, channels, 4))
    img = (np.sin(f[..., 0, None, None] * np.pi * yy + f[..., 2, None, None])
           * np.cos(f[..., 1, None, None] * np.pi * xx + f[..., 3, None, None]))
    img += (xx > 0.5) * rng.uniform(-1, 1, (n, channels, 1, 1)) + 0.1 * rng.random(img.shape)
    img = np.moveaxis(img, 1, -1)
    return lo + (hi - lo) * (img - img.min()) / (img.max() - img.min())


def _chw(x):
    return np.ascontiguousarray(np.moveaxis(x, -1, 1))


CASES = {
    "hwc": lambda: (_images(), "global"),
    "chw": lambda: (_chw(_images()), "global"),
    "per-channel": lambda: (_images() * np.array([1.0, 0.1, 3.0]) + np.array([0.0, 500.0, -40.0]), "channel"),
    "chw per-column": lambda: (_chw(_images(size=(16, 12))), "channel"),
    "odd size": lambda: (_images(size=(13, 9)), "global"),
    "grey": lambda: (_images(channels=1, size=(20, 28)), "global"),
    "grey chw": lambda: (_chw(_images(channels=1, size=(17, 8))), "global"),
    "rgba": lambda: (_images(channels=4, size=(21, 37)), "global"),
    "8-bit": lambda: (np.round(_images(lo=0.0, hi=255.0, size=(40, 48))), "global"),
    "thumbnail": lambda: (_images(size=(4, 4)), "global"),
    "one column": lambda: (_images(size=(9, 1)), "global"),
}


def _runs(name):
    for case in CASES:
        for level in (*FAMILIES[name].levels, *EXTRA.get(name, ())):
            yield case, level


@pytest.mark.parametrize("name", [n for n in REFERENCES if n != "blur"])
def test_family_equals_its_reference(name):
    family = FAMILIES[name]
    for case, level in _runs(name):
        x, mode = CASES[case]()
        if not family.applies_to_shape(x.shape[1:]):
            continue
        data = DataStats(x, mode)
        fast = family.transform(x, level, data, np.random.default_rng(7))
        slow = REFERENCES[name](x, level, data, np.random.default_rng(7))
        assert fast.dtype == np.float64 and fast.flags.c_contiguous, (case, level)
        np.testing.assert_array_equal(fast, slow, err_msg=f"{name} {case} level {level}")


def test_blur_equals_the_tap_loop_to_float64_rounding():
    family = FAMILIES["blur"]
    for case, level in _runs("blur"):
        x, mode = CASES[case]()
        data = DataStats(x, mode)
        fast = family.transform(x, level, data, None)
        slow = blur(x, level, data, None)
        assert fast.dtype == np.float64 and fast.flags.c_contiguous, (case, level)
        scale = float(np.max(data.range.span))
        np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-13 * scale, err_msg=f"blur {case} level {level}")
        # what the suite writes (the data's own dtype) is the same
        np.testing.assert_array_equal(fast.astype(np.float32), slow.astype(np.float32))


def test_translate_columns_any_shift():
    """Shifts that clamp the middle of the image, or indices that are no shift at all, take
    the per-pixel path and still give the gathered columns."""
    from edgeq.inputs.risky.families.image import _columns

    img = _images(n=4, size=(7, 9))
    n, h, w = img.shape[:3]
    at = np.arange(n)[:, None]
    for dx in ([0.3, -2.7, 5.5, -20.0], [0.0, 1.0, -1.0, 8.9], [40.0, -40.0, 0.5, 0.0]):
        pos = np.clip(np.arange(w)[None, :] - np.array(dx)[:, None], 0, w - 1)
        x0 = np.floor(pos).astype(np.int64)
        x1, fx = np.minimum(x0 + 1, w - 1), pos - x0
        left, right = _columns(img, x0, x1, fx)
        np.testing.assert_array_equal(left, np.moveaxis(img[at, :, x0], 1, 2))
        # the right column may differ only where its weight is 0
        weight = fx[:, None, :, None]
        np.testing.assert_array_equal(right * weight, np.moveaxis(img[at, :, x1], 1, 2) * weight)
    x0, x1 = (np.random.default_rng(s).integers(0, w, (n, w)) for s in (1, 2))
    left, right = _columns(img, x0, x1, np.full((n, w), 0.5))
    np.testing.assert_array_equal(left, np.moveaxis(img[at, :, x0], 1, 2))
    np.testing.assert_array_equal(right, np.moveaxis(img[at, :, x1], 1, 2))
