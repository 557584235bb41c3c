"""Class colours: the PASCAL VOC palette, the palette of lightseg's mask PNGs, and the colours of overlays."""

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


#: Kelly's colours of maximum contrast (1965), without white, black, grey and the two darkest:
#: told apart from each other and seen on photographs, where the VOC palette's dark reds and
#: olives vanish
KELLY = np.array(
    [[243, 195, 0], [135, 86, 146], [243, 132, 0], [161, 202, 241], [190, 0, 50], [0, 136, 86], [230, 143, 172],
     [0, 103, 165], [249, 147, 121], [96, 78, 151], [246, 166, 0], [179, 68, 108], [220, 211, 0], [136, 45, 23],
     [141, 182, 0], [226, 88, 34], [194, 178, 128]],
    dtype=np.uint8,
)  # fmt: skip
#: the colour of ``ignore`` (void) pixels in overlays
VOID_COLOUR = (255, 255, 255)


def overlay_colours(n: int = 256) -> np.ndarray:
    """``[n, 3]`` uint8 colours for drawing class ``i`` over images (overlays, dashboards, detections).

    Class 0 (background) is grey and normally left unpainted; classes 1-17 take Kelly's colours,
    later ones hues spaced by the golden angle at full saturation; 255 is white (void).
    """
    import colorsys

    colours = np.zeros((n, 3), dtype=np.uint8)
    colours[0] = (128, 128, 128)
    for i in range(1, n):
        if i <= len(KELLY):
            colours[i] = KELLY[i - 1]
        else:
            r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.85, 0.95)
            colours[i] = (round(255 * r), round(255 * g), round(255 * b))
    if n > 255:
        colours[255] = VOID_COLOUR
    return colours
