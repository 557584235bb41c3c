"""Pictures for dashboards and run folders: masks over images, detections, legends, confusion-matrix heatmaps.

Pictures meant for a person (prediction overlays, dashboard samples) are drawn at a size one
can see (small images enlarged by a whole factor), in the data set's palette (:func:`~lightseg.colors.class_palette`)
with each region outlined, and carry a legend of the classes they show.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from scipy.ndimage import binary_dilation

from lightseg.colors import class_palette

#: the palette of a data set without colours of its own (:func:`~lightseg.colors.class_palette`)
PALETTE = class_palette()
#: the line drawn just outside each painted region (see :func:`overlay`)
HALO_COLOUR = (20, 20, 20)
#: pictures for people are enlarged until their shorter side is at least this many pixels
DISPLAY_SIDE = 256
#: the same for dashboard samples, which show two or three pictures side by side
SAMPLE_SIDE = 192


def to_uint8_image(image: torch.Tensor) -> np.ndarray:
    """A float ``[3,H,W]`` image in [0, 1] as a ``[H,W,3]`` uint8 array."""
    return (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


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
    out = image.copy()
    if not painted.any():
        return out
    # only the painted pixels are blended (float32, rounded): a fraction of the picture in most scenes
    index = labels[painted].astype(np.int64)
    shades = colours[np.where(index == ignore_index, 255, index % 256)].astype(np.float32)
    blended = (1 - alpha) * image[painted].astype(np.float32) + alpha * shades
    out[painted] = blended.round().clip(0, 255).astype(np.uint8)
    if outline > 0:
        edge = np.zeros_like(painted)
        for _ in range(outline):  # each pass takes the next ring of pixels inwards
            inside = ~edge
            edge[:, :-1] |= (labels[:, :-1] != labels[:, 1:]) | ~inside[:, 1:]
            edge[:, 1:] |= (labels[:, 1:] != labels[:, :-1]) | ~inside[:, :-1]
            edge[:-1] |= (labels[:-1] != labels[1:]) | ~inside[1:]
            edge[1:] |= (labels[1:] != labels[:-1]) | ~inside[:-1]
        solid = painted & (labels != ignore_index)
        edge &= solid
        out[edge] = colours[labels[edge].astype(np.int64) % 256].clip(0, 255).round().astype(np.uint8)
        # a dark line just outside each region: its border stands out even on a background of its own colour
        out[binary_dilation(solid) & ~painted] = HALO_COLOUR  # the 4-neighbours outside
    return out


def legend(entries: Sequence[tuple[int, str]], width: int, colours: np.ndarray = PALETTE) -> np.ndarray:
    """A white strip ``[h, width, 3]`` of colour swatches (``colours[label]``) and names, wrapped to ``width``."""
    font = ImageFont.load_default()
    if not entries:
        return np.full((0, width, 3), 255, dtype=np.uint8)
    cells = [22 + _text_width(font, name[:24]) + 12 for _, name in entries]
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
        width, height = _text_width(font, caption) + 6, 14
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
