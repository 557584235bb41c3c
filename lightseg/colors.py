"""Class colours: the PASCAL VOC palette and the palette of lightseg's mask PNGs."""

from __future__ import annotations

from typing import Any

import numpy as np


def voc_colormap(n: int = 256) -> np.ndarray:
    """The PASCAL VOC palette: ``[n, 3]`` uint8, class ``i`` -> RGB (255 is the void colour)."""
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


def mask_palette(datamodule: Any) -> np.ndarray:
    """The ``[256, 3]`` palette of mask PNGs: the data module's ``class_colors`` first, the VOC palette after."""
    palette = voc_colormap()
    colours = getattr(datamodule, "class_colors", None)
    if colours is not None and 0 < len(colours) <= 256:
        palette[: len(colours)] = np.asarray(colours, dtype=np.uint8).reshape(len(colours), 3)
    return palette
