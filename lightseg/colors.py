"""Class colours: one palette per data set (its own colours, or colours far apart), the VOC palette, CIEDE2000."""

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


def class_palette(class_colors: Any = None) -> np.ndarray:
    """The ``[256, 3]`` uint8 palette of a data set: its masks, pictures, overlays, dashboards and export metadata.

    The data set's own colours where it has them (VOC, Cityscapes, a CVAT ``labelmap.txt``, a
    class file's colours) for its classes; the other entries are :data:`DISTINCT` (background
    black), whose colours are at least 17 CIEDE2000 units apart from each other, from black and
    from white, then hues spaced by the golden angle, and white for 255 (void).
    """
    palette = _GENERATED.copy()
    if class_colors is not None and 0 < len(class_colors) <= 256:
        palette[: len(class_colors)] = np.asarray(class_colors, dtype=np.uint8).reshape(len(class_colors), 3)
    return palette


#: class colours told apart at a glance: a greedy max-min choice in CIEDE2000 over an RGB grid, away
#: from black (background), white (void) and greys, neither too dark nor too light to see on a photo
#: (L* 35-90); every pair is at least 17 CIEDE2000 units apart (tests/test_colors.py measures it)
DISTINCT = np.array(
    [[195, 0, 255], [225, 60, 0], [60, 135, 0], [0, 135, 195], [225, 165, 0], [120, 255, 0], [255, 135, 165],
     [0, 195, 180], [165, 0, 75], [120, 90, 30], [180, 180, 255], [90, 90, 135], [0, 105, 90], [165, 180, 120],
     [105, 210, 255], [255, 195, 165], [165, 105, 105], [0, 45, 255], [255, 120, 255], [0, 255, 180],
     [240, 0, 150], [225, 225, 0], [120, 120, 225], [165, 135, 90], [0, 90, 120], [255, 135, 45],
     [255, 210, 255], [255, 0, 75], [75, 90, 45], [165, 120, 165]],
    dtype=np.uint8,
)  # fmt: skip
#: the colour of ``ignore`` (void) pixels in generated palettes
VOID_COLOUR = (255, 255, 255)


def _generated_palette() -> np.ndarray:
    import colorsys

    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[1 : len(DISTINCT) + 1] = DISTINCT
    for i in range(len(DISTINCT) + 1, 255):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.85, 0.95)
        palette[i] = (round(255 * r), round(255 * g), round(255 * b))
    palette[255] = VOID_COLOUR
    return palette


#: the palette of a data set without colours of its own (computed once; :func:`class_palette` copies it)
_GENERATED = _generated_palette()


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """SRGB ``[..., 3]`` (0-255) in CIELAB (D65)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    to_xyz = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                       [0.0193339, 0.1191920, 0.9503041]])  # fmt: skip
    xyz = linear @ to_xyz.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """The CIEDE2000 colour difference of CIELAB colours (Sharma, Wu and Dalal 2005), broadcast."""
    l1, a1, b1 = np.moveaxis(np.asarray(lab1, dtype=np.float64), -1, 0)
    l2, a2, b2 = np.moveaxis(np.asarray(lab2, dtype=np.float64), -1, 0)
    c_mean = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(c_mean**7 / (c_mean**7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p, h2p = np.degrees(np.arctan2(b1, a1p)) % 360, np.degrees(np.arctan2(b2, a2p)) % 360
    chroma = c1p * c2p
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(chroma == 0, 0, dh)
    d_hue = 2 * np.sqrt(chroma) * np.sin(np.radians(dh / 2))
    l_mean, cp_mean, h_sum = (l1 + l2) / 2, (c1p + c2p) / 2, h1p + h2p
    wrapped = np.where(h_sum < 360, h_sum + 360, h_sum - 360) / 2
    h_mean = np.where(chroma == 0, h_sum, np.where(np.abs(h1p - h2p) <= 180, h_sum / 2, wrapped))
    t = (1 - 0.17 * np.cos(np.radians(h_mean - 30)) + 0.24 * np.cos(np.radians(2 * h_mean))
         + 0.32 * np.cos(np.radians(3 * h_mean + 6)) - 0.20 * np.cos(np.radians(4 * h_mean - 63)))  # fmt: skip
    rotation = (
        -np.sin(np.radians(60 * np.exp(-(((h_mean - 275) / 25) ** 2))))
        * 2
        * np.sqrt(cp_mean**7 / (cp_mean**7 + 25.0**7))
    )
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / np.sqrt(20 + (l_mean - 50) ** 2)
    s_c, s_h = 1 + 0.045 * cp_mean, 1 + 0.015 * cp_mean * t
    d_l, d_c, d_h = (l2 - l1) / s_l, (c2p - c1p) / s_c, d_hue / s_h
    return np.sqrt(d_l**2 + d_c**2 + d_h**2 + rotation * d_c * d_h)
