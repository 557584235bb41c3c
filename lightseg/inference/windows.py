"""The sliding window and test-time augmentation over images held in memory.

All functions take ``forward``, a callable mapping ``[B,C,h,w]`` images in [0, 1] to logits
``[B,K,h,w]`` at the same size (what every lightseg semantic model returns as ``"out"``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F

Forward = Callable[[torch.Tensor], torch.Tensor]
#: how overlapping windows' logits are weighted where they meet: equally (``mean``), or by a
#: ramp that trusts a window's centre more than its border (``gaussian``, as nnU-Net and
#: MONAI do; ``linear``, a tent falling to the border)
Blend = Literal["mean", "gaussian", "linear"]
#: lowest weight a ramp gives a window's border pixels (relative to its centre): never zero, so
#: that a pixel only one window covers (the image border) keeps that window's prediction
MIN_RAMP_WEIGHT = 1e-3


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
