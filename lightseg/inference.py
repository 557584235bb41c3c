"""Inference modes for semantic models: whole image, sliding window, multi-scale + flip.

All functions take ``forward``, a callable mapping ``[B,3,h,w]`` images in [0, 1] to logits
``[B,C,h,w]`` at the same size (what every lightseg semantic model returns as ``"out"``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

Forward = Callable[[torch.Tensor], torch.Tensor]


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
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


def slide_logits(
    forward: Forward,
    image: torch.Tensor,
    window: int | Sequence[int],
    stride: int | Sequence[int],
    batch_size: int = 4,
) -> torch.Tensor:
    """Logits of ``image`` ``[B,3,H,W]`` averaged over overlapping windows.

    Windows are clipped to the image, so an image smaller than the window (in either
    dimension) is processed whole in that dimension: the model pads it to what it needs,
    and a window at least as large as the image gives exactly whole-image inference.
    At most ``batch_size`` windows go through the model at once, which bounds memory.
    """
    win_h, win_w = _pair(window)
    stride_h, stride_w = _pair(stride)
    if min(win_h, win_w, stride_h, stride_w, batch_size) < 1:
        raise ValueError("window size, stride and window batch size must be >= 1")
    height, width = image.shape[-2:]
    win_h, win_w = min(win_h, height), min(win_w, width)
    boxes = [(y, x) for y in window_starts(height, win_h, stride_h) for x in window_starts(width, win_w, stride_w)]
    total: torch.Tensor | None = None
    count = image.new_zeros(1, 1, height, width)
    for first in range(0, len(boxes), batch_size):
        chunk = boxes[first : first + batch_size]
        crops = torch.cat([image[..., y : y + win_h, x : x + win_w] for y, x in chunk])
        logits = forward(crops).float()
        if total is None:
            total = logits.new_zeros(image.shape[0], logits.shape[1], height, width)
        for k, (y, x) in enumerate(chunk):
            total[..., y : y + win_h, x : x + win_w] += logits[k * image.shape[0] : (k + 1) * image.shape[0]]
            count[..., y : y + win_h, x : x + win_w] += 1
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
