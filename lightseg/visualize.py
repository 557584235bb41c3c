"""Pictures for dashboards and run folders: masks over images, confusion-matrix heatmaps."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from lightseg.colors import voc_colormap

PALETTE = voc_colormap(256).astype(np.float32)


def to_uint8_image(image: torch.Tensor) -> np.ndarray:
    """A float ``[3,H,W]`` image in [0, 1] as a ``[H,W,3]`` uint8 array."""
    return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``image`` ``[H,W,3]`` uint8 with ``mask`` ``[H,W]`` painted in the VOC palette.

    Background (0) stays unpainted; 255 (ignore) takes VOC's void colour; labels beyond
    255 reuse the palette cyclically.
    """
    colours = PALETTE[mask.astype(np.int64) % 256]
    painted = mask != 0
    out = image.astype(np.float32)
    out[painted] = (1 - alpha) * out[painted] + alpha * colours[painted]
    return out.round().clip(0, 255).astype(np.uint8)


def sample_panel(image: np.ndarray, target: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Image | ground truth over image | prediction over image, side by side, ``[H, 3W + 4, 3]``."""
    gap = np.full((image.shape[0], 2, 3), 255, dtype=np.uint8)
    return np.concatenate([image, gap, overlay(image, target), gap, overlay(image, prediction)], axis=1)


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
    key = _legend(legend, colours, font)
    canvas = Image.new(
        "RGB", (max([r.width for r in drawn] + [key.width]), sum(r.height + 6 for r in drawn) + key.height + 6), "white"
    )
    y = 0
    for row in drawn:
        canvas.paste(row, (0, y))
        y += row.height + 6
    canvas.paste(key, (0, y + 6))
    return canvas


def _legend(
    entries: Sequence[tuple[int, str]],
    colours: np.ndarray,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    columns: int = 6,
) -> Image.Image:
    cell = 150
    legend = Image.new("RGB", (columns * cell + 70, (len(entries) + columns - 1) // columns * 18 + 4), "white")
    draw = ImageDraw.Draw(legend)
    for position, (label, name) in enumerate(entries):
        x, y = 70 + (position % columns) * cell, 2 + (position // columns) * 18
        draw.rectangle([x, y, x + 14, y + 14], fill=tuple(int(c) for c in colours[label]), outline=(90, 90, 90))
        draw.text((x + 20, y + 2), name[:22], fill="black", font=font)
    return legend


def confusion_matrix_image(confmat: torch.Tensor, class_names: Sequence[str], title: str = "") -> np.ndarray:
    """A row-normalised confusion-matrix heatmap (rows: ground truth, columns: prediction), ``[H,W,3]`` uint8.

    Each cell is the share of a true class's pixels predicted as each class, white (0) to
    dark blue (1); rows of classes absent from the ground truth are grey. Cells large
    enough carry their percentage.
    """
    counts = confmat.detach().double().cpu()
    totals = counts.sum(1, keepdim=True)
    shares = torch.where(totals > 0, counts / totals.clamp(min=1), torch.full_like(counts, float("nan"))).numpy()
    n = len(class_names)
    cell = int(np.clip(640 // max(n, 1), 8, 40))
    font = ImageFont.load_default()
    label_width = max(_text_width(font, name) for name in class_names) + 8
    title_height = 18 if title else 0
    left, top = label_width + 14, title_height + label_width + 14
    width, height = left + n * cell + 8, top + n * cell + 8
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 2), title, fill="black", font=font)
    draw.text((4, top - 12), "true \\ predicted", fill="dimgray", font=font)
    low, high = np.array([247, 251, 255.0]), np.array([8, 48, 107.0])
    for i in range(n):
        y = top + i * cell
        name = class_names[i]
        draw.text((left - 6 - _text_width(font, name), y + (cell - 10) // 2), name, fill="black", font=font)
        for j in range(n):
            x = left + j * cell
            value = shares[i, j]
            colour = (200, 200, 200) if np.isnan(value) else tuple(int(c) for c in low + value * (high - low))
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour, outline=(255, 255, 255))
            if cell >= 28 and not np.isnan(value):
                text = f"{100 * value:.0f}"
                draw.text(
                    (x + (cell - _text_width(font, text)) // 2, y + (cell - 10) // 2),
                    text,
                    fill="white" if value > 0.5 else "black",
                    font=font,
                )
    for j, name in enumerate(class_names):  # column names, written vertically above the columns
        label = Image.new("RGB", (_text_width(font, name) + 2, 12), "white")
        ImageDraw.Draw(label).text((1, 0), name, fill="black", font=font)
        rotated = label.rotate(90, expand=True)
        canvas.paste(rotated, (left + j * cell + (cell - rotated.width) // 2, top - 6 - rotated.height))
    return np.asarray(canvas)


def _text_width(font: ImageFont.ImageFont | ImageFont.FreeTypeFont, text: str) -> int:
    left, _, right, _ = font.getbbox(text)
    return int(right - left)


def draw_detections(
    image: torch.Tensor,
    detections: dict[str, torch.Tensor],
    keep: torch.Tensor,
    masks: torch.Tensor | None,
    class_names: Sequence[str],
    skeleton: Sequence[tuple[int, int]] = (),
    alpha: float = 0.5,
    show_scores: bool = True,
) -> np.ndarray:
    """Boxes with class name and score, masks and keypoint skeletons over ``image`` (``[3,H,W]`` in [0, 1]).

    Each detection takes the palette colour of its class; returns ``[H,W,3]`` uint8.
    """
    from torchvision.utils import draw_bounding_boxes, draw_keypoints, draw_segmentation_masks

    canvas = torch.from_numpy(to_uint8_image(image)).permute(2, 0, 1).contiguous()
    labels = detections["labels"][keep].tolist()
    colours = [tuple(int(c) for c in PALETTE[label % 256]) for label in labels]
    if masks is not None and keep.any():
        canvas = draw_segmentation_masks(canvas, masks[keep].bool(), alpha=alpha, colors=colours)
    if keep.any():
        captions = [
            f"{class_names[label] if label < len(class_names) else label}" + (f" {score:.2f}" if show_scores else "")
            for label, score in zip(labels, detections["scores"][keep].tolist(), strict=True)
        ]
        canvas = draw_bounding_boxes(canvas, detections["boxes"][keep], captions, colors=colours, width=1)
    if "keypoints" in detections and keep.any():
        points = detections["keypoints"][keep]
        visible = points[..., 2] > 0 if points.shape[-1] == 3 else None
        canvas = draw_keypoints(
            canvas, points[..., :2], connectivity=list(skeleton) or None, colors="yellow", radius=2, width=1,
            visibility=visible,
        )  # fmt: skip
    return canvas.permute(1, 2, 0).numpy()
