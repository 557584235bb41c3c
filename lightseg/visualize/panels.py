"""Panels of several pictures: a dashboard sample (image | truth | prediction) and rows of image / mask pairs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lightseg.visualize.masks import (
    PALETTE,
    SAMPLE_SIDE,
    display_scale,
    enlarge,
    legend,
    outline_width,
    overlay,
    shown_labels,
    with_legend,
)


def sample_panel(
    image: np.ndarray,
    target: np.ndarray,
    prediction: np.ndarray,
    names: Sequence[str] = (),
    ignore_index: int = 255,
    side: int = SAMPLE_SIDE,
    colours: np.ndarray = PALETTE,
) -> np.ndarray:
    """Image | ground truth over image | prediction over image, enlarged to ``side``, with a legend below."""
    factor = display_scale(image.shape[0], image.shape[1], side)
    big, big_target = enlarge(image, target, factor)
    big_prediction = prediction.repeat(factor, 0).repeat(factor, 1)  # the image is enlarged once
    assert big_target is not None
    gap = np.full((big.shape[0], 4, 3), 255, dtype=np.uint8)
    panel = np.concatenate(
        [big, gap, overlay(big, big_target, 0.5, outline_width(factor), ignore_index, colours), gap,
         overlay(big, big_prediction, 0.5, outline_width(factor), ignore_index, colours)], axis=1,
    )  # fmt: skip
    shown = shown_labels(target, prediction, ignore_index=ignore_index)
    return with_legend(panel, shown, names, ignore_index, colours)


def labelled_rows(
    rows: dict[str, list[tuple[np.ndarray, np.ndarray | None]]],
    colours: np.ndarray,
    legend: Sequence[tuple[int, str]],
    height: int = 160,
) -> Image.Image:
    """A grid of ``image | mask`` pairs (masks in ``colours``, ``[256, 3]``), a row per named group, a legend below.

    Each row starts with its name; ``legend`` lists the ``(label, name)`` entries to explain.
    """
    font = ImageFont.load_default()
    drawn = []
    for name, pairs in rows.items():
        tiles: list[Image.Image | None] = []
        for image, mask in pairs:
            size = (max(1, round(image.shape[1] * height / image.shape[0])), height)
            tiles.append(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
            if mask is not None:
                tiles.append(Image.fromarray(colours[mask]).resize(size, Image.Resampling.NEAREST))
            tiles.append(None)  # a wider gap between samples
        if not tiles:
            continue
        row = Image.new("RGB", (70 + sum(t.width + 2 if t is not None else 10 for t in tiles), height), "white")
        ImageDraw.Draw(row).text((4, height // 2 - 6), name, fill="black", font=font)
        x = 70
        for tile in tiles:
            if tile is not None:
                row.paste(tile, (x, 0))
            x += tile.width + 2 if tile is not None else 10
        drawn.append(row)
    key = Image.fromarray(_indented_legend(legend, colours, max([r.width for r in drawn] + [300])))
    canvas = Image.new(
        "RGB", (max([r.width for r in drawn] + [key.width]), sum(r.height + 6 for r in drawn) + key.height + 6), "white"
    )
    y = 0
    for row in drawn:
        canvas.paste(row, (0, y))
        y += row.height + 6
    canvas.paste(key, (0, y + 6))
    return canvas


def _indented_legend(entries: Sequence[tuple[int, str]], colours: np.ndarray, width: int) -> np.ndarray:
    """:func:`legend`, indented under the row names of :func:`labelled_rows`."""
    key = legend(entries, width - 70, colours)
    return np.concatenate([np.full((len(key), 70, 3), 255, dtype=np.uint8), key], axis=1)
