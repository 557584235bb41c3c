"""Masks over images: the palette, enlarging for display, overlays with outlines, legends, panoptic shades."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from lightseg.colors import class_palette

#: the palette of a data set without colours of its own (:func:`~lightseg.colors.class_palette`)
PALETTE = class_palette()
#: the line drawn just outside each painted region (see :func:`overlay`)
HALO_COLOUR = (20, 20, 20)
#: pictures for people are enlarged until their shorter side is at least this many pixels
DISPLAY_SIDE = 256
#: the same for dashboard samples, which show two or three pictures side by side
SAMPLE_SIDE = 192


def text_width(font: ImageFont.ImageFont | ImageFont.FreeTypeFont, text: str) -> int:
    """The width in pixels of ``text`` in ``font``."""
    left, _, right, _ = font.getbbox(text)
    return int(right - left)


def to_uint8_image(image: torch.Tensor) -> np.ndarray:
    """A float ``[C,H,W]`` image in [0, 1] as a ``[H,W,3]`` uint8 picture.

    RGB as it is; other channel counts (multispectral bands) as :func:`display_rgb` shows them.
    """
    if image.shape[0] != 3:
        return display_rgb(image.detach().float().cpu().numpy())
    return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


#: the percent of pixels left out at either end of a band's range when a picture stretches it (GIS viewers' cut)
STRETCH_CUT = 2.0


def display_rgb(values: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Channels ``[C,H,W]`` in [0, 1] that are not an RGB image as a ``[H,W,3]`` uint8 picture.

    The first three channels show as red, green and blue (a band order such as ``[4, 3, 2, 8]``
    puts a natural-colour view first), one or two as the first in grey; each is stretched from
    its 2nd to its 98th percentile over the ``valid`` pixels (``[H,W]`` bool; all by default),
    as GIS viewers show multispectral bands: a 16-bit band often fills a small part of its
    range. Pixels that are not valid are black.
    """
    shown = values[:3] if len(values) >= 3 else np.repeat(values[:1], 3, axis=0)
    out = np.zeros(shown.shape, dtype=np.float32)
    for k, band in enumerate(shown):
        sample = band[valid] if valid is not None else band
        if not sample.size:
            continue
        low, high = (float(v) for v in np.percentile(sample, [STRETCH_CUT, 100 - STRETCH_CUT]))
        out[k] = np.clip((band - low) / (high - low), 0, 1) if high > low else (band > low).astype(np.float32)
    if valid is not None:
        out[:, ~valid] = 0
    return np.asarray((out.transpose(1, 2, 0) * 255).round().astype(np.uint8))


def display_scale(height: int, width: int, side: int = DISPLAY_SIDE) -> int:
    """The whole factor (1-8) that brings the shorter side of a ``height`` x ``width`` picture to ``side``."""
    return int(min(8, max(1, -(-side // max(1, min(height, width))))))


def enlarge(image: np.ndarray, mask: np.ndarray | None, factor: int) -> tuple[np.ndarray, np.ndarray | None]:
    """``image`` (bilinear) and ``mask`` (nearest: labels stay labels) ``factor`` times larger."""
    if factor == 1:
        return image, mask
    height, width = image.shape[:2]
    size = (width * factor, height * factor)
    big = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    return big, None if mask is None else mask.repeat(factor, 0).repeat(factor, 1)


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    alpha: float = 0.5,
    outline: int = 1,
    ignore_index: int = 255,
    colours: np.ndarray = PALETTE,
) -> np.ndarray:
    """``image`` ``[H,W,3]`` uint8 with ``mask`` ``[H,W]`` painted in ``colours`` (``[256, 3]``), at the same size.

    Background (0) stays unpainted; ``ignore_index`` is washed white; other labels are blended
    with ``alpha``, and the ``outline`` pixels (0: none) along each region's border are drawn
    opaque, with a dark line just outside them, so that a region and its class stay visible
    over any colour. Labels beyond 255 reuse the palette cyclically.
    """
    labels = mask if mask.dtype.kind in "iu" and mask.dtype.itemsize <= 2 else mask.astype(np.int64)
    painted = labels != 0
    if not painted.any():
        return image.copy()
    code = labels if labels.dtype == np.uint8 else (labels % 256).astype(np.uint8)
    ignored = labels == ignore_index
    if ignored.any():
        code = np.where(ignored, np.uint8(255), code)
    table = colours if colours.dtype == np.uint8 else np.asarray(colours).clip(0, 255).round().astype(np.uint8)
    shade = np.take(table, code, axis=0)
    # whole-picture table lookups and selections: boolean gathers and scatters of the painted
    # pixels took three times as long on the speckled masks of an early checkpoint
    blended = np.take(_blend_table(float(alpha)), (image.astype(np.uint16) << 8) | shade)
    out = np.where(painted[..., None], blended, image)
    if outline > 0:
        edge = np.zeros_like(painted)
        for _ in range(outline):  # each pass takes the next ring of pixels inwards
            inside = ~edge
            edge[:, :-1] |= (labels[:, :-1] != labels[:, 1:]) | ~inside[:, 1:]
            edge[:, 1:] |= (labels[:, 1:] != labels[:, :-1]) | ~inside[:, :-1]
            edge[:-1] |= (labels[:-1] != labels[1:]) | ~inside[1:]
            edge[1:] |= (labels[1:] != labels[:-1]) | ~inside[:-1]
        solid = painted & ~ignored
        out = np.where((edge & solid)[..., None], shade, out)
        # a dark line just outside each region: its border stands out even on a background of its own colour
        near = solid.copy()  # solid and its 4-neighbours
        near[:, :-1] |= solid[:, 1:]
        near[:, 1:] |= solid[:, :-1]
        near[:-1] |= solid[1:]
        near[1:] |= solid[:-1]
        out[near & ~painted] = HALO_COLOUR
    return out


@functools.lru_cache(maxsize=8)
def _blend_table(alpha: float) -> np.ndarray:
    """``(1 - alpha) * pixel + alpha * shade`` for every pair of 8-bit values, at index ``pixel * 256 + shade``."""
    values = np.arange(256, dtype=np.float32)
    table = ((1 - alpha) * values[:, None] + alpha * values[None, :]).round().clip(0, 255).astype(np.uint8).ravel()
    table.flags.writeable = False  # one array for every caller (cached)
    return table


def legend(entries: Sequence[tuple[int, str]], width: int, colours: np.ndarray = PALETTE) -> np.ndarray:
    """A white strip ``[h, width, 3]`` of colour swatches (``colours[label]``) and names, wrapped to ``width``."""
    font = ImageFont.load_default()
    if not entries:
        return np.full((0, width, 3), 255, dtype=np.uint8)
    cells = [22 + text_width(font, name[:24]) + 12 for _, name in entries]
    rows: list[list[int]] = [[]]
    used = 4
    for k, cell in enumerate(cells):
        if rows[-1] and used + cell > width:
            rows.append([])
            used = 4
        rows[-1].append(k)
        used += cell
    strip = Image.new("RGB", (width, 18 * len(rows) + 4), "white")
    draw = ImageDraw.Draw(strip)
    for r, row in enumerate(rows):
        x, y = 4, 3 + 18 * r
        for k in row:
            label, name = entries[k]
            colour = tuple(int(c) for c in colours[label % len(colours)])
            draw.rectangle([x, y, x + 14, y + 14], fill=colour, outline=(60, 60, 60))
            draw.text((x + 20, y + 2), name[:24], fill="black", font=font)
            x += cells[k]
    return np.asarray(strip)


def with_legend(
    picture: np.ndarray,
    labels: Sequence[int],
    names: Sequence[str],
    ignore_index: int = 255,
    colours: np.ndarray = PALETTE,
) -> np.ndarray:
    """``picture`` with the :func:`legend` of ``labels`` below it ("ignore" for ``ignore_index``)."""
    entries = [
        (255 if label == ignore_index else label,
         "ignore" if label == ignore_index else names[label] if 0 <= label < len(names) else str(label))
        for label in labels
    ]  # fmt: skip
    key = legend(entries, picture.shape[1], colours)
    return np.concatenate([picture, key], axis=0) if len(key) else picture


def shown_labels(*masks: np.ndarray, ignore_index: int = 255) -> list[int]:
    """The painted labels of ``masks`` (not background), ignore last."""
    present = sorted(set().union(*(np.unique(m).tolist() for m in masks)) - {0})
    return [label for label in present if label != ignore_index] + [ignore_index] * (ignore_index in present)


def outline_width(factor: int) -> int:
    """Pixels of opaque border around each region in a picture enlarged ``factor`` times (at least 2)."""
    return max(2, factor // 2)


def annotated_overlay(
    image: np.ndarray,
    mask: np.ndarray,
    names: Sequence[str],
    alpha: float = 0.5,
    ignore_index: int = 255,
    colours: np.ndarray = PALETTE,
) -> np.ndarray:
    """What ``lightseg predict`` writes to ``overlays/``: :func:`overlay` at a size one can see, with a legend.

    Regions are filled translucently (the image shows through) inside an opaque border of the
    legend's colour, so a class reads from its border on any background.
    """
    factor = display_scale(mask.shape[0], mask.shape[1])
    big, big_mask = enlarge(image, mask, factor)
    assert big_mask is not None
    painted = overlay(big, big_mask, alpha, outline_width(factor), ignore_index, colours)
    return with_legend(painted, shown_labels(mask, ignore_index=ignore_index), names, ignore_index, colours)


def instance_shades(labels: Sequence[int], isthing: Sequence[bool], colours: np.ndarray) -> np.ndarray:
    """The colour of each segment (``[N, 3]`` uint8), from its class colour in ``colours``.

    Stuff keeps its class colour; the ``k``-th instance of a thing class gets a shade of it
    (alternately lighter and darker, further each time), so that neighbouring instances differ.
    """
    seen: dict[int, int] = {}
    shades = np.zeros((len(labels), 3), dtype=np.float32)
    for n, (label, thing) in enumerate(zip(labels, isthing, strict=True)):
        base = colours[label % len(colours)].astype(np.float32)
        k = seen.get(label, 0)
        seen[label] = k + 1
        if thing and k:
            step = min(0.6, 0.2 * ((k + 1) // 2))
            target = 255.0 if k % 2 else 0.0
            base = base + step * (target - base)
        shades[n] = base
    return shades.round().astype(np.uint8)


def panoptic_overlay(
    image: np.ndarray,
    segments: np.ndarray,
    labels: Sequence[int],
    isthing: Sequence[bool],
    names: Sequence[str],
    alpha: float = 0.5,
    colours: np.ndarray = PALETTE,
    side: int = DISPLAY_SIDE,
) -> np.ndarray:
    """What ``lightseg predict`` writes for a panoptic prediction: each segment painted and outlined, a legend.

    ``segments`` ``[H, W]`` holds segment numbers (1..N, 0 void: left unpainted); segment ``n`` has
    class ``labels[n - 1]`` (its colour: ``colours[label]``). Stuff is painted in its class colour,
    each instance of a thing in a shade of its class's (:func:`instance_shades`), and every segment
    has its own opaque border, so that touching instances of one class stay apart. Small maps are
    enlarged until their shorter side is ``side`` pixels or more.
    """
    table = np.zeros((256, 3), dtype=np.uint8)
    shades = instance_shades(labels, isthing, colours)
    numbers = segments.astype(np.int64)
    if len(labels) > 255:  # an 8-bit colour table: renumber so that each segment keeps its own entry where it can
        numbers = np.where(numbers > 0, (numbers - 1) % 255 + 1, 0)
    for n in range(len(labels)):
        table[n % 255 + 1] = shades[n]
    factor = display_scale(segments.shape[0], segments.shape[1], side)
    big, big_segments = enlarge(image, numbers, factor)
    assert big_segments is not None
    painted = overlay(big, big_segments, alpha, outline_width(factor), -1, table)
    shown = sorted({labels[n - 1] for n in np.unique(segments).tolist() if n > 0})
    entries = [(label, names[label] if 0 <= label < len(names) else str(label)) for label in shown]
    key = legend(entries, painted.shape[1], colours)
    return np.concatenate([painted, key], axis=0) if len(key) else painted
