"""Inference modes for semantic models: whole image, sliding window, multi-scale + flip.

All functions take ``forward``, a callable mapping ``[B,3,h,w]`` images in [0, 1] to logits
``[B,C,h,w]`` at the same size (what every lightseg semantic model returns as ``"out"``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import torch
import torch.nn.functional as F

from lightseg.errors import LightsegError, option

Forward = Callable[[torch.Tensor], torch.Tensor]
#: how overlapping windows' logits are weighted where they meet: equally (``mean``), or by a
#: ramp that trusts a window's centre more than its border (``gaussian``, as nnU-Net and
#: MONAI do; ``linear``, a tent falling to the border)
Blend = Literal["mean", "gaussian", "linear"]
#: lowest weight a ramp gives a window's border pixels (relative to its centre): never zero, so
#: that a pixel only one window covers (the image border) keeps that window's prediction
MIN_RAMP_WEIGHT = 1e-3


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
    """How a semantic model is run on an image in validation, test, predict and the dashboard.

    One value read by everything that runs the model outside training: the task's evaluation
    and prediction steps (and so the dense CRF, which refines what they return), and the
    export, which refuses settings its graph cannot hold. In YAML, under the task's
    ``inference:``; only what differs from the defaults needs writing.

    Args:
        mode: ``whole`` image in one pass, or ``slide``: overlapping windows, logits averaged.
        window_size: sliding-window size ``int`` or ``(H, W)``; smaller images run whole.
        window_stride: sliding-window stride ``int`` or ``(H, W)``, at most the window size;
            ``None``: two thirds of the window (341 for 512), the overlap the default has.
        window_batch_size: windows per forward pass (bounds memory).
        tta_scales: test-time scales; softmax averaged over them (``[1.0]``: none).
        tta_flip: also average over horizontally flipped inputs.
        blend: how overlapping windows are weighted: ``mean`` (equally), ``gaussian`` or
            ``linear`` (a window's centre counts more than its border: fewer seams between
            tiles); in the sliding window and in large images' tiles.
    """

    mode: Literal["whole", "slide"] = "whole"
    window_size: int | tuple[int, int] = 512
    window_stride: int | tuple[int, int] | None = None
    window_batch_size: int = 4
    tta_scales: tuple[float, ...] = (1.0,)
    tta_flip: bool = False
    blend: Blend = "mean"

    def __post_init__(self) -> None:
        if self.mode not in ("whole", "slide"):
            raise LightsegError(f"inference mode must be 'whole' or 'slide', got {self.mode!r}")
        sizes = {"window_size": self.window_size, "window_stride": self.stride}
        for name, value in sizes.items():
            if min(pair_of(value)) < 1:
                raise LightsegError(f"inference.{name} must be >= 1 (an int or [H, W]), got {value}")
        window, stride = pair_of(self.window_size), pair_of(self.stride)
        if stride[0] > window[0] or stride[1] > window[1]:
            raise LightsegError(
                f"inference.window_stride {self.stride} is larger than window_size {self.window_size}: the "
                "pixels between windows would get no prediction; set window_stride to at most the window (leave it "
                f"unset for two thirds of it: {[max(1, round(side * 2 / 3)) for side in window]})"
            )
        if self.blend not in ("mean", "gaussian", "linear"):
            raise LightsegError(f"inference.blend must be 'mean', 'gaussian' or 'linear', got {self.blend!r}")
        if self.window_batch_size < 1:
            raise LightsegError(f"inference.window_batch_size must be >= 1, got {self.window_batch_size}")
        if not self.tta_scales or min(self.tta_scales) <= 0:
            raise LightsegError(f"inference.tta_scales must be positive scales, e.g. [1.0], got {self.tta_scales}")
        # YAML gives lists; tuples keep the value hashable and comparable with the defaults
        object.__setattr__(self, "tta_scales", tuple(float(s) for s in self.tta_scales))
        for name, value in sizes.items():
            if not isinstance(value, int) and getattr(self, name) is not None:
                object.__setattr__(self, name, pair_of(value))

    @classmethod
    def of(cls, value: InferenceSettings | dict[str, Any] | None) -> InferenceSettings:
        """The settings from themselves, their dict form (as checkpoints keep them) or ``None`` (defaults)."""
        if isinstance(value, cls):
            return value
        if value is None:
            return cls()
        if isinstance(value, dict):
            unknown = set(value) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise LightsegError(
                    f"unknown inference setting(s) {sorted(unknown)}; known: "
                    f"{[f.name for f in dataclasses.fields(cls)]}"
                )
            return cls(**value)
        raise LightsegError(f"inference must be a mapping of settings (e.g. {{mode: slide}}), got {value!r}")

    @property
    def stride(self) -> int | tuple[int, int]:
        """The sliding window's stride: :attr:`window_stride`, or two thirds of the window where it is unset."""
        if self.window_stride is not None:
            return self.window_stride
        thirds = tuple(max(1, round(side * 2 / 3)) for side in pair_of(self.window_size))
        return thirds[0] if isinstance(self.window_size, int) else (thirds[0], thirds[1])

    def as_dict(self) -> dict[str, Any]:
        """Plain values (lists for tuples), as saved in checkpoints and ``hparams.yaml``."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @property
    def plain(self) -> bool:
        """Whether this is one whole-image pass (no sliding window, no test-time augmentation)."""
        return self.mode == "whole" and self.tta_scales == (1.0,) and not self.tta_flip

    def changes_for_one_pass(self) -> list[str]:
        """The options that would make these settings :attr:`plain` (what an export graph holds)."""
        changes = []
        if self.mode != "whole":
            changes.append(f"{option('model', 'inference.mode')} whole")
        if self.tta_scales != (1.0,) or self.tta_flip:
            changes.append(
                f"{option('model', 'inference.tta_scales')} [1.0] {option('model', 'inference.tta_flip')} false"
            )
        return changes

    def probs(self, forward: Forward, image: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[B,C,H,W]`` of ``image`` ``[B,3,H,W]``: sliding window and TTA as set."""

        def logits(x: torch.Tensor) -> torch.Tensor:
            if self.mode == "slide":
                return slide_logits(forward, x, self.window_size, self.stride, self.window_batch_size, self.blend)
            return forward(x)

        return tta_probs(logits, image, self.tta_scales, self.tta_flip)


#: the flat task arguments the settings replaced (checkpoints written before they were grouped
#: keep them) and the setting each became
LEGACY_KEYS = {"inference": "mode", **{k: k for k in ("window_size", "window_stride", "window_batch_size",
                                                      "tta_scales", "tta_flip")}}  # fmt: skip


def migrate_flat_settings(hparams: dict[str, Any]) -> dict[str, Any]:
    """Saved hyperparameters with older checkpoints' flat inference arguments moved into ``inference``."""
    flat = [k for k in LEGACY_KEYS if k in hparams and not (k == "inference" and not isinstance(hparams[k], str))]
    if not flat:
        return hparams
    migrated = {k: v for k, v in hparams.items() if k not in flat}
    migrated["inference"] = InferenceSettings.of({LEGACY_KEYS[k]: hparams[k] for k in flat}).as_dict()
    return migrated


def pair_of(value: int | Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` of a size given as one int or a pair."""
    if isinstance(value, int):
        return value, value
    height, width = value
    return int(height), int(width)


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows covering ``length``; the last one is aligned to the end.

    A ``length`` no larger than ``window`` gives one window, the whole extent.
    """
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    return [*starts, length - window]


def window_weights(height: int, width: int, blend: Blend) -> torch.Tensor | None:
    """Per-pixel weights ``[1,1,H,W]`` of one window under ``blend`` (``None`` for ``mean``: every pixel 1)."""
    if blend == "mean":
        return None
    axes = []
    for size in (height, width):
        position = torch.arange(size, dtype=torch.float64) + 0.5
        if blend == "gaussian":  # sigma an eighth of the window, as nnU-Net's and MONAI's default
            ramp = torch.exp(-((position - size / 2) ** 2) / (2 * (size / 8) ** 2))
        else:
            ramp = torch.minimum(position, size - position) / (size / 2)
        axes.append(ramp / ramp.max())
    weights = (axes[0][:, None] * axes[1][None, :]).clamp_min(MIN_RAMP_WEIGHT).float()
    return weights[None, None]


def window_boxes(
    height: int, width: int, window: int | Sequence[int], stride: int | Sequence[int]
) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """The window size clipped to the image and the windows' top-left corners, in raster order.

    The one definition of the sliding window's tiles, shared by the in-memory
    :func:`slide_logits` and the streamed :func:`tiled_logits`, so that both cut, batch and
    sum the same windows.
    """
    win_h, win_w = pair_of(window)
    stride_h, stride_w = pair_of(stride)
    if min(win_h, win_w, stride_h, stride_w) < 1:
        raise ValueError("window size and stride must be >= 1")
    win_h, win_w = min(win_h, height), min(win_w, width)
    boxes = [(y, x) for y in window_starts(height, win_h, stride_h) for x in window_starts(width, win_w, stride_w)]
    return (win_h, win_w), boxes


def slide_logits(
    forward: Forward,
    image: torch.Tensor,
    window: int | Sequence[int],
    stride: int | Sequence[int],
    batch_size: int = 4,
    blend: Blend = "mean",
) -> torch.Tensor:
    """Logits of ``image`` ``[B,3,H,W]`` averaged over overlapping windows.

    Windows are clipped to the image, so an image smaller than the window (in either
    dimension) is processed whole in that dimension: the model pads it to what it needs,
    and a window at least as large as the image gives exactly whole-image inference.
    At most ``batch_size`` windows go through the model at once, which bounds memory.
    ``blend`` weights each window's pixels (:data:`Blend`) in the average.
    """
    if batch_size < 1:
        raise ValueError("window batch size must be >= 1")
    height, width = image.shape[-2:]
    (win_h, win_w), boxes = window_boxes(height, width, window, stride)
    weights = window_weights(win_h, win_w, blend)
    total: torch.Tensor | None = None
    count = image.new_zeros(1, 1, height, width)
    for first in range(0, len(boxes), batch_size):
        chunk = boxes[first : first + batch_size]
        crops = torch.cat([image[..., y : y + win_h, x : x + win_w] for y, x in chunk])
        logits = forward(crops).float()
        if total is None:
            total = logits.new_zeros(image.shape[0], logits.shape[1], height, width)
        if weights is not None:
            weights = weights.to(logits.device)
        for k, (y, x) in enumerate(chunk):
            part = logits[k * image.shape[0] : (k + 1) * image.shape[0]]
            if weights is None:
                total[..., y : y + win_h, x : x + win_w] += part
                count[..., y : y + win_h, x : x + win_w] += 1
            else:
                total[..., y : y + win_h, x : x + win_w] += part * weights
                count[..., y : y + win_h, x : x + win_w] += weights.to(count.device)
    assert total is not None
    return total / count


class RowBlend:
    """The sliding window's weighted sum over a band of rows, for images too large to hold.

    Windows are added in raster order; a window starting at row ``y`` makes every row above
    ``y`` final (no later window reaches it), and :meth:`add` hands those rows back, averaged,
    before adding. The sums live in a circular buffer of one window's height across the
    columns ``[left, right)`` (``C x win_h x (right - left)`` floats), whatever the image's
    height; windows are clipped to those columns. Rows are summed in the order
    :func:`slide_logits` sums them, so the averages are the same numbers.
    """

    def __init__(self, columns: tuple[int, int], window_height: int, weights: torch.Tensor | None) -> None:
        self.left, self.right = columns
        self.rows = window_height
        self.weights = weights
        self.total: torch.Tensor | None = None
        self.count: torch.Tensor | None = None
        self.top: int | None = None  # first row not handed back yet

    def add(self, y: int, x: int, logits: torch.Tensor, max_rows: int) -> Iterator[tuple[int, torch.Tensor]]:
        """Hand back the rows above ``y`` (first row, ``[C,n,w]`` averages; ``n <= max_rows``), then add the window."""
        if self.total is None:
            self.total = logits.new_zeros(logits.shape[0], self.rows, self.right - self.left)
            self.count = logits.new_zeros(1, self.rows, self.right - self.left)
            self.top = y
        yield from self.emit(y, max_rows)
        height, width = logits.shape[-2:]
        low, high = max(x, self.left), min(x + width, self.right)  # the window's columns inside the band's
        inside = slice(low - x, high - x)
        columns = slice(low - self.left, high - self.left)
        weights = None if self.weights is None else self.weights[0].to(logits.device)
        for rows, part in self._segments(y, height):
            chunk = logits[:, part, inside]
            assert self.total is not None and self.count is not None
            if weights is None:
                self.total[:, rows, columns] += chunk
                self.count[:, rows, columns] += 1
            else:
                self.total[:, rows, columns] += chunk * weights[:, part, inside]
                self.count[:, rows, columns] += weights[:, part, inside]

    def emit(self, until: int, max_rows: int) -> Iterator[tuple[int, torch.Tensor]]:
        """Hand back the averages of the rows from the first not handed back to ``until`` (excluded)."""
        assert self.top is not None and self.total is not None and self.count is not None
        while self.top < until:
            n = min(until - self.top, max_rows)
            pieces = []
            for rows, _ in self._segments(self.top, n):
                pieces.append(self.total[:, rows] / self.count[:, rows])
                self.total[:, rows] = 0
                self.count[:, rows] = 0
            yield self.top, pieces[0] if len(pieces) == 1 else torch.cat(pieces, 1)
            self.top += n

    def _segments(self, y: int, n: int) -> list[tuple[slice, slice]]:
        """Rows ``y .. y+n`` of the image as (buffer rows, rows of the n) slices: one, or two where the buffer wraps."""
        start = y % self.rows
        first = min(n, self.rows - start)
        segments = [(slice(start, start + first), slice(0, first))]
        if first < n:
            segments.append((slice(0, n - first), slice(first, n)))
        return segments


#: memory a band of class scores may take (sums, averages, probabilities) before the image is
#: predicted in column stripes
BAND_BYTES = 2**30


def band_columns(classes: int, window_height: int) -> int:
    """The widest band (columns) of ``classes`` scores ``window_height`` rows high that fits :data:`BAND_BYTES`."""
    return max(1, BAND_BYTES // (classes * window_height * 4 * 3))


def column_stripes(width: int, settings: InferenceSettings, max_columns: int) -> list[tuple[int, int]]:
    """Column ranges ``[a, b)`` of at most ``max_columns`` (or one window stride), cut where windows start.

    One range, the whole width, where it fits: the usual case. Narrower stripes bound the
    memory of :func:`tiled_logits` on very wide images with many classes.
    """
    win_w = min(pair_of(settings.window_size)[1], width)
    starts = window_starts(width, win_w, pair_of(settings.stride)[1])
    cuts = [0]
    candidate: int | None = None
    for x in [*starts[1:], width]:
        if x - cuts[-1] > max_columns and candidate is not None and candidate > cuts[-1]:
            cuts.append(candidate)
        candidate = x
    return list(zip(cuts, [*cuts[1:], width], strict=True))


def tiled_logits(
    forward: Forward,
    read: Callable[[list[tuple[int, int]], tuple[int, int]], torch.Tensor],
    size: tuple[int, int],
    settings: InferenceSettings,
    rows: tuple[int, int] | None = None,
    max_rows: int = 128,
    columns: tuple[int, int] | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """The sliding window's averaged logits of an image read window by window, a band of rows at a time.

    ``read(boxes, (h, w))`` returns the windows at ``boxes`` (top-left corners) as
    ``[k,3,h,w]`` in [0, 1]; the next batch is read on a thread while the model runs. Yields
    ``(first row, [C,n,w] logits)`` from top to bottom, ``n <= max_rows``; ``rows``
    ``(start, stop)`` limits them to those rows (resuming, or one process's share), computing
    only the windows that reach them, batched as for those of all rows. ``columns`` ``[a, b)``
    (a stripe of :func:`column_stripes`) limits them to those columns, the windows that reach
    them batched among themselves. Over the whole width, the windows, their batches and the
    sums are those of :func:`slide_logits`: the averages are equal to its, bit for bit, on the
    same device; every stripe and row share of the same image is computed the same way
    whatever the others.
    """
    height, width = size
    (win_h, win_w), boxes = window_boxes(height, width, settings.window_size, settings.stride)
    left, right = columns if columns is not None else (0, width)
    boxes = [(y, x) for y, x in boxes if x < right and x + win_w > left]
    start, stop = rows if rows is not None else (0, height)
    batch = settings.window_batch_size
    needed = [i for i, (y, _) in enumerate(boxes) if y < stop and y + win_h > start]
    if not needed or start >= stop:
        return
    batches = [boxes[i : i + batch] for i in range(needed[0] // batch * batch, needed[-1] + 1, batch)]
    blend = RowBlend((left, right), win_h, window_weights(win_h, win_w, settings.blend))

    def clipped(bands: Iterator[tuple[int, torch.Tensor]]) -> Iterator[tuple[int, torch.Tensor]]:
        for first, values in bands:
            low, high = max(first, start), min(first + values.shape[1], stop)
            if low < high:
                yield low, values[:, low - first : high - first]

    with ThreadPoolExecutor(1, thread_name_prefix="lightseg-windows") as reader:
        pending = reader.submit(read, batches[0], (win_h, win_w))
        for k, chunk in enumerate(batches):
            crops = pending.result()
            if k + 1 < len(batches):
                pending = reader.submit(read, batches[k + 1], (win_h, win_w))
            logits = forward(crops).float()
            for i, (y, x) in enumerate(chunk):
                yield from clipped(blend.add(y, x, logits[i], max_rows))
            assert blend.top is not None
            if blend.top >= stop:
                return
        yield from clipped(blend.emit(height, max_rows))


def tta_probs(
    logits_fn: Forward,
    image: torch.Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> torch.Tensor:
    """Softmax probabilities averaged over rescaled (and horizontally flipped) copies of ``image``.

    Each copy's logits are resized back to the input size (bilinear) before the softmax.
    """
    height, width = image.shape[-2:]
    total = None
    passes = 0
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = image if size == (height, width) else F.interpolate(image, size, mode="bilinear", align_corners=False)
        variants = [(scaled, False), (scaled.flip(-1), True)] if flip else [(scaled, False)]
        for inputs, flipped in variants:
            logits = logits_fn(inputs).float()
            if flipped:
                logits = logits.flip(-1)
            if logits.shape[-2:] != (height, width):
                logits = F.interpolate(logits, (height, width), mode="bilinear", align_corners=False)
            probs = logits.softmax(1)
            total = probs if total is None else total + probs
            passes += 1
    assert total is not None
    return total / passes
