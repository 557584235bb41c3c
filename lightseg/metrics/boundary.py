"""Boundary IoU's contour band (Cheng et al., CVPR 2021) for label maps, on any device."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F


def boundary_width(height: int, width: int, ratio: float) -> int:
    """The band width ``d = round(ratio * image diagonal)``, at least 1 pixel (as the official API)."""
    return max(1, round(ratio * math.hypot(height, width)))


def boundary_band(labels: torch.Tensor, width: int) -> torch.Tensor:
    """Pixels within ``width`` pixels (chessboard distance) of a pixel of another label or of the image border.

    For a label map ``[H,W]`` this is, for every class ``c`` at once, the official API's
    ``mask_to_boundary`` of the binary mask ``labels == c`` restricted to that class's
    pixels: the mask minus its erosion by a 3x3 kernel ``width`` times, with zero padding
    (so the image border counts as contour). A pixel belongs to that set exactly when its
    ``(2 width + 1)``-square window holds another value or leaves the image: where the
    window's maximum and minimum differ, with the image padded by -1.

    Returns:
        bool ``[H,W]``.
    """
    x = F.pad(labels.to(torch.int32)[None], (width, width, width, width), value=-1)[0]
    size = 2 * width + 1
    high = _window(_window(x, size, 0, torch.maximum), size, 1, torch.maximum)
    low = _window(_window(x, size, 0, torch.minimum), size, 1, torch.minimum)
    return high != low


def _window(
    t: torch.Tensor, size: int, dim: int, pick: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    # sliding max/min of ``size`` along ``dim`` (length n - size + 1) by doubling windows: log2(size)
    # elementwise passes, ~20x faster than max_pool2d's wide kernels on a CPU
    covered = 1
    while covered * 2 <= size:
        n = t.shape[dim] - covered
        t = pick(t.narrow(dim, 0, n), t.narrow(dim, covered, n))
        covered *= 2
    if covered < size:
        rest = size - covered
        n = t.shape[dim] - rest
        t = pick(t.narrow(dim, 0, n), t.narrow(dim, rest, n))
    return t
