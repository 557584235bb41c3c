"""Boundary IoU's contour band (Cheng et al., CVPR 2021) for label maps, on any device."""

from __future__ import annotations

import math

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
    ``(2 width + 1)``-square window holds another value or leaves the image, which two
    separable max-pools (of the labels and of their negation, padded with -1) find.

    Returns:
        bool ``[H,W]``.
    """
    x = labels.to(torch.float32)[None, None]
    x = F.pad(x, (width, width, width, width), value=-1.0)
    size = 2 * width + 1

    def window_max(t: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.max_pool2d(t, (size, 1), stride=1), (1, size), stride=1)

    low = -window_max(-x)
    return (window_max(x) != low)[0, 0]
