"""The confusion matrix as a heatmap."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from lightseg.visualize.masks import text_width


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
    label_width = max(text_width(font, name) for name in class_names) + 8
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
        draw.text((left - 6 - text_width(font, name), y + (cell - 10) // 2), name, fill="black", font=font)
        for j in range(n):
            x = left + j * cell
            value = shares[i, j]
            colour = (200, 200, 200) if np.isnan(value) else tuple(int(c) for c in low + value * (high - low))
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour, outline=(255, 255, 255))
            if cell >= 28 and not np.isnan(value):
                text = f"{100 * value:.0f}"
                draw.text(
                    (x + (cell - text_width(font, text)) // 2, y + (cell - 10) // 2),
                    text,
                    fill="white" if value > 0.5 else "black",
                    font=font,
                )
    for j, name in enumerate(class_names):  # column names, written vertically above the columns
        label = Image.new("RGB", (text_width(font, name) + 2, 12), "white")
        ImageDraw.Draw(label).text((1, 0), name, fill="black", font=font)
        rotated = label.rotate(90, expand=True)
        canvas.paste(rotated, (left + j * cell + (cell - rotated.width) // 2, top - 6 - rotated.height))
    return np.asarray(canvas)
