"""The family registry: every risky family registers itself here, once.

A family is one module in this folder (or a module named by a package's
``edgeq.risky_families`` entry point) that calls ``register(Family(...))``: its
transform, a description generated from its levels, and which inputs it applies to.
Nothing else needs editing: the suite, the CLI's category list and the reports read
this registry. A family also says *what it stands for* on each input kind: on the kinds
in ``applies_to`` it models a shift the field really sends (it may decide the verdict);
on the kinds in ``stress_for`` it is applied but stands for no field population (a pixel
at 16× the sensor's range, a preprocessing mistake), so it is reported as stress only. Built-in families take their levels from the one strength table
(``severities.py``) and keep its order; other families bring their own three levels
and follow in name order.

A family's generator is keyed by its position in that table (built-ins) or by a hash
of its name (all others), so adding a family never changes another one's draws.
"""

from __future__ import annotations

import importlib
import pkgutil
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from edgeq.inputs.risky.observed import DataStats
from edgeq.inputs.risky.severities import SEVERITIES

Transform = Callable[[np.ndarray, float, DataStats, np.random.Generator], np.ndarray]
# what one sample of an input array is (``input_kind`` tells from the shape; ``--input-kind`` sets it)
INPUT_KINDS = ("features", "audio", "grid", "sensor-window", "image", "tensor")
KIND_AXES = {"features": 1, "audio": 1, "grid": 2, "sensor-window": 2, "image": 3, "tensor": None}
AUDIO_MIN_SAMPLES = 4000  # a 1-D sample this long is a waveform (0.25 s at 16 kHz), not a row of features
WINDOW_MAX_CHANNELS = 12  # a 2-D sample (time, channels) with at most this many channels is a sensor window
ENTRY_POINT_GROUP = "edgeq.risky_families"


@dataclass(frozen=True)
class Family:
    """One risky family. ``levels``: its three strengths (None: the severity table's), or
    one for a mistake that has no strength (a preprocessing error); ``applies_to``: the
    input kinds where it models a real field shift (None: every kind); ``stress_for``:
    kinds where it is applied as an out-of-domain stress only, each with the reason."""

    name: str
    transform: Transform
    describe: Callable[[tuple], str]  # levels → one line for reports
    levels: tuple | None = None
    applies_to: frozenset[str] | None = None
    # a further test on one sample's shape beyond its kind (colour images only, ...), and what
    # it asks for in words, for the note that says why a family was left out
    fits: Callable[[tuple], bool] | None = None
    needs: str = ""
    stress_for: Mapping[str, str] | None = None

    def __post_init__(self):
        if self.levels is None:
            if self.name not in SEVERITIES:
                raise ValueError(f"risky family {self.name!r} has no levels and no row in the severity table")
            object.__setattr__(self, "levels", tuple(SEVERITIES[self.name]))
        if len(self.levels) not in (1, 3):
            raise ValueError(f"risky family {self.name!r} needs three levels (or one, for a mistake), "
                             f"has {len(self.levels)}")
        stress = dict(self.stress_for or {})
        unknown = (set(self.applies_to or ()) | set(stress)) - set(INPUT_KINDS)
        if unknown:
            raise ValueError(f"risky family {self.name!r}: unknown input kinds {sorted(unknown)}")
        if self.applies_to is not None:
            object.__setattr__(self, "applies_to", frozenset(self.applies_to) - set(stress))
        object.__setattr__(self, "stress_for", stress)

    @property
    def description(self) -> str:
        return self.describe(self.levels)

    @property
    def seed_key(self) -> int:
        table = list(SEVERITIES)
        return table.index(self.name) + 1 if self.name in table else zlib.crc32(self.name.encode())

    @property
    def severities(self) -> tuple[int, ...]:
        return tuple(range(1, len(self.levels) + 1))

    def applies(self, kind: str) -> bool:
        return kind in self.stress_for or self.applies_to is None or kind in self.applies_to

    def role(self, kind: str) -> tuple[str, str]:
        """("field", "") where the family models a real shift of this input kind, else ("stress", why)."""
        if kind in self.stress_for:
            return "stress", self.stress_for[kind]
        return "field", ""

    def applies_to_shape(self, sample_shape: tuple, kind: str | None = None) -> bool:
        """Whether the family transforms an array whose samples have this shape (and kind, when set)."""
        sample_shape = tuple(sample_shape)
        kind = kind or input_kind(sample_shape)
        return self.applies(kind) and (self.fits is None or bool(self.fits(sample_shape)))


_REGISTERED: dict[str, Family] = {}


def register(family: Family) -> Family:
    if family.name == "clean" or family.name in _REGISTERED:
        raise ValueError(f"risky family {family.name!r} is registered twice")
    _REGISTERED[family.name] = family
    return family


def input_kind(sample_shape: tuple) -> str:
    """What one sample of an array looks like, from its shape alone (``describe_kind`` says why).

    1 axis: a feature vector (tabular), or an audio waveform when it has at least
    AUDIO_MIN_SAMPLES values (no table has that many columns; 0.25 s of 16 kHz audio
    has); 2 axes: a sensor window (time × a few channels, channels last: an IMU's 6 or 9
    axes) when the last axis has at most WINDOW_MAX_CHANNELS and the first is at least
    3× longer, else a grid (a spectrogram, a grey image without a channel axis); 3
    axes with a 1-, 3- or 4-wide first or last axis: an image; anything else: a tensor.
    """
    if len(sample_shape) == 1:
        return "audio" if sample_shape[0] >= AUDIO_MIN_SAMPLES else "features"
    if len(sample_shape) == 2:
        steps, channels = sample_shape
        return "sensor-window" if channels <= WINDOW_MAX_CHANNELS and steps >= 3 * channels else "grid"
    if len(sample_shape) == 3 and (sample_shape[-1] in (1, 3, 4) or sample_shape[0] in (1, 3, 4)):
        return "image"
    return "tensor"


KIND_WORDS = {"features": "a row of tabular features", "audio": "an audio waveform",
              "grid": "a 2-D grid (a spectrogram or a grey image without a channel axis)",
              "sensor-window": "a window of sensor readings (time × channels)", "image": "an image",
              "tensor": "a tensor of another shape"}


def describe_kind(sample_shape: tuple, kind: str, source: str = "auto") -> str:
    """One sentence: what the samples were read as, and whether the user said so."""
    size = "×".join(str(v) for v in sample_shape)
    how = "set by --input-kind" if source != "auto" else "from the sample shape"
    return f"samples of {size} read as {KIND_WORDS[kind]} ({kind}, {how})"


def check_kind(sample_shape: tuple, kind: str, where: str) -> None:
    """Refuse a kind the sample shape cannot be (an image needs its channel axis, ...)."""
    from edgeq.errors import ConfigError

    if kind not in INPUT_KINDS:
        raise ConfigError(f"{where}: unknown input kind {kind!r} (known: {', '.join(INPUT_KINDS)})")
    axes = KIND_AXES[kind]
    if kind == "image" and input_kind(tuple(sample_shape)) != "image":
        raise ConfigError(f"{where}: samples of shape {list(sample_shape)} cannot be read as images: an image "
                          "needs 3 axes with a channel axis of 1, 3 or 4 first or last (add the channel axis)")
    if axes is not None and len(sample_shape) != axes:
        raise ConfigError(f"{where}: samples of shape {list(sample_shape)} cannot be {kind} "
                          f"(it needs {axes} ax{'is' if axes == 1 else 'es'} per sample)")


CHANNEL_COUNTS = (1, 3, 4)  # grey, RGB/BGR, RGBA


@dataclass(frozen=True)
class ImageLayout:
    """How an image sample is laid out: ``order`` "HWC" or "CHW", its size and channels."""

    order: str
    height: int
    width: int
    channels: int

    @property
    def colour(self) -> bool:
        return self.channels >= 3

    def describe(self) -> str:
        tone = "colour" if self.colour else "grey"
        shape = "×".join(str(v) for v in ((self.height, self.width, self.channels) if self.order == "HWC"
                                           else (self.channels, self.height, self.width)))
        return f"{self.order} {tone} images ({shape}: {self.height}×{self.width} pixels, {self.channels} channel(s))"

    def to_hwc(self, x: np.ndarray) -> np.ndarray:
        """A stack (n, *sample_shape) as (n, H, W, C) (a view for CHW, no copy)."""
        return x if self.order == "HWC" else np.moveaxis(x, 1, -1)

    def from_hwc(self, x: np.ndarray) -> np.ndarray:
        return x if self.order == "HWC" else np.moveaxis(x, -1, 1)


def image_layout(sample_shape: tuple) -> ImageLayout | None:
    """The layout of an ``image`` sample (None for any other kind), from its shape alone.

    The channel axis is the last (HWC, TFLite's own layout) or the first (CHW, models
    converted from PyTorch) axis that is 1, 3 or 4 wide; when both are, the narrower one
    is the channel axis and a tie reads as HWC. The rule is symmetric, so a transposed
    sample is read as the transposed layout. 3 or 4 channels are colour (RGB, RGBA),
    1 is grey.
    """
    shape = tuple(int(v) for v in sample_shape)
    if input_kind(shape) != "image":
        return None
    last, first = shape[-1] in CHANNEL_COUNTS, shape[0] in CHANNEL_COUNTS
    if last and (not first or shape[-1] <= shape[0]):
        return ImageLayout("HWC", shape[0], shape[1], shape[2])
    return ImageLayout("CHW", shape[1], shape[2], shape[0])


def _load_all() -> dict[str, Family]:
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{module}")
    _load_entry_points()
    table = list(SEVERITIES)
    order = sorted(_REGISTERED.values(), key=lambda f: (table.index(f.name) if f.name in table else len(table), f.name))
    missing = [name for name in table if name not in _REGISTERED]
    if missing:
        raise ImportError(f"edgeq.inputs.risky: the severity table names families nobody registered: {missing}")
    return {f.name: f for f in order}


def _load_entry_points() -> None:
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP):
        point.load()


FAMILIES: dict[str, Family] = _load_all()
CATEGORIES: tuple[str, ...] = ("clean", *FAMILIES)


def describe_categories() -> dict[str, str]:
    """One line per category for reports, generated from the levels so it never lies."""
    return {"clean": "the data unchanged (reference for every other category)",
            **{name: f.description for name, f in FAMILIES.items()}}
