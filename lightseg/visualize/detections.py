"""Detections drawn over an image: boxes, masks, keypoints with their skeleton, captions that never overlap."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from lightseg.visualize.masks import (
    PALETTE,
    display_scale,
    enlarge,
    text_width,
    to_uint8_image,
)


def draw_detections(
    image: torch.Tensor,
    detections: dict[str, torch.Tensor],
    keep: torch.Tensor,
    masks: torch.Tensor | None,
    class_names: Sequence[str],
    skeleton: Sequence[tuple[int, int]] = (),
    alpha: float = 0.5,
    show_scores: bool = True,
    side: int = 0,
    palette: np.ndarray = PALETTE,
) -> np.ndarray:
    """Boxes, masks and keypoint skeletons over ``image`` (``[3,H,W]`` in [0, 1]), captioned; ``[H',W',3]`` uint8.

    Each detection takes its class's colour; its caption (class name and score) sits on a
    box of that colour above the detection, moved down where it would cover an earlier
    (higher-scoring) caption. With ``side``, a small image is first enlarged by a whole factor
    until its shorter side reaches ``side`` pixels (the drawing scaled with it).
    """
    from torchvision.utils import draw_bounding_boxes, draw_keypoints, draw_segmentation_masks

    factor = display_scale(image.shape[-2], image.shape[-1], side) if side else 1
    picture, _ = enlarge(to_uint8_image(image), None, factor)
    canvas = torch.from_numpy(picture.copy()).permute(2, 0, 1).contiguous()
    order = torch.argsort(detections["scores"], descending=True)
    order = order[keep[order]]
    labels = detections["labels"][order].tolist()
    colours = [tuple(int(c) for c in palette[label % 256]) for label in labels]
    boxes = detections["boxes"][order].float() * factor
    if masks is not None and len(order):
        chosen = masks[order].bool()
        if factor > 1:
            chosen = chosen.repeat_interleave(factor, -2).repeat_interleave(factor, -1)
        canvas = draw_segmentation_masks(canvas, chosen, alpha=alpha, colors=colours)
    if len(order):
        canvas = draw_bounding_boxes(canvas, boxes, colors=colours, width=max(1, factor // 2))
    if "keypoints" in detections and len(order):
        points = detections["keypoints"][order]
        visible = points[..., 2] > 0 if points.shape[-1] == 3 else None
        canvas = draw_keypoints(
            canvas, points[..., :2] * factor, connectivity=list(skeleton) or None, colors="yellow",
            radius=max(2, factor), width=max(1, factor // 2), visibility=visible,
        )  # fmt: skip
    drawn = Image.fromarray(canvas.permute(1, 2, 0).numpy())
    scores = detections["scores"][order].tolist()
    captions = [
        f"{class_names[label] if label < len(class_names) else label}" + (f" {score:.2f}" if show_scores else "")
        for label, score in zip(labels, scores, strict=True)
    ]
    _draw_captions(drawn, boxes.tolist(), captions, colours)
    return np.asarray(drawn)


def _draw_captions(
    picture: Image.Image, boxes: list[list[float]], captions: list[str], colours: list[tuple[int, ...]]
) -> list[tuple[float, float, float, float]]:
    """Draw each caption on a box of its colour, highest score first; returns where each went."""
    font = ImageFont.load_default()
    draw = ImageDraw.Draw(picture)
    placed: list[tuple[float, float, float, float]] = []
    for (x1, y1, _, _), caption, colour in zip(boxes, captions, colours, strict=True):
        width, height = text_width(font, caption) + 6, 14
        x = min(max(0.0, x1), max(0.0, picture.width - width))
        y = y1 - height if y1 >= height else y1
        for _ in range(20):  # step down past earlier captions it would cover
            clash = [p for p in placed if x < p[2] and p[0] < x + width and y < p[3] and p[1] < y + height]
            if not clash:
                break
            y = max(p[3] for p in clash)
        y = min(y, max(0.0, picture.height - height))
        placed.append((x, y, x + width, y + height))
        draw.rectangle([x, y, x + width - 1, y + height - 1], fill=colour)
        text = "black" if sum(c * w for c, w in zip(colour, (0.299, 0.587, 0.114), strict=True)) > 140 else "white"
        draw.text((x + 3, y + 2), caption, fill=text, font=font)
    return placed
