"""Reading images and label masks, with errors that name the file."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from lightseg.colors import voc_colormap
from lightseg.errors import LightsegError, MaskLabelError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm")
T = TypeVar("T")


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """A progress bar over a long data-preparation loop (writing, scanning).

    Shown on a terminal once the loop has run for a second, so that short loops and
    logs stay quiet.
    """
    yield from tqdm(items, desc=description, total=total, delay=1.0, leave=False, disable=None, dynamic_ncols=True)


def read_image(path: Path) -> torch.Tensor:
    """An RGB image as float32 ``[3,H,W]`` in [0, 1]; other modes (grey, RGBA, CMYK) converted."""
    try:
        with Image.open(path) as img:
            array = np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise LightsegError(f"image {path} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise LightsegError(f"cannot read image {path}: {err}. Is the file truncated or not an image?") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255)


def read_mask(path: Path, num_classes: int, ignore_index: int = 255, colormap: np.ndarray | None = None) -> np.ndarray:
    """A label mask as ``[H,W]`` uint8 class indices.

    Palette (``P``) and grey (``L``) PNGs are read as indices, never as colours. An RGB
    mask is mapped through ``colormap`` (the VOC palette by default); a colour that is not
    in it is an error. Values other than ``ignore_index`` must be below ``num_classes``.
    """
    try:
        with Image.open(path) as img:
            mode = img.mode
            array = np.asarray(img)
    except FileNotFoundError:
        raise LightsegError(f"mask {path} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise LightsegError(f"cannot read mask {path}: {err}") from None
    if mode in ("RGB", "RGBA"):
        array = _colours_to_indices(array[..., :3], path, num_classes, ignore_index, colormap)
    elif mode not in ("P", "L", "I", "I;16"):
        raise LightsegError(f"mask {path} has image mode {mode!r}; expected a palette, grey or RGB PNG")
    labels = array[array != ignore_index]
    if labels.size and int(labels.max()) >= num_classes:
        bad = sorted({int(v) for v in np.unique(labels) if v >= num_classes})
        raise MaskLabelError(
            f"mask {path} holds label value(s) {bad[:5]} but the data set has {num_classes} classes "
            f"(valid: 0..{num_classes - 1} and {ignore_index} = ignore)",
            list(bad),
        )
    return array.astype(np.uint8)


def _colours_to_indices(
    rgb: np.ndarray, path: Path, num_classes: int, ignore_index: int, colormap: np.ndarray | None
) -> np.ndarray:
    cmap = voc_colormap() if colormap is None else colormap
    lookup = {tuple(int(v) for v in cmap[i]): i for i in range(num_classes)}
    lookup[tuple(int(v) for v in voc_colormap()[ignore_index])] = ignore_index
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    uniques, inverse = np.unique(codes, return_inverse=True)
    colours = [((code >> 16) & 255, (code >> 8) & 255, code & 255) for code in uniques.tolist()]
    unknown = [colour for colour in colours if colour not in lookup]
    if unknown:
        raise MaskLabelError(
            f"RGB mask {path} has colour {unknown[0]}, which is not a class colour "
            f"({'the VOC palette' if colormap is None else 'colors'}); add it to the class colours, "
            "fix the mask, or save masks as palette PNGs of class indices",
            list(unknown),
        )
    values = np.array([lookup[colour] for colour in colours], dtype=np.uint8)
    return values[inverse].reshape(rgb.shape[:2])


def image_header(path: Path, what: str = "image") -> tuple[tuple[int, int], str]:
    """``((H, W), mode)`` of an image file from its header, without decoding the pixels."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            return (height, width), img.mode
    except FileNotFoundError:
        raise LightsegError(f"{what} {path} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise LightsegError(f"cannot read {what} {path}: {err}. Is the file truncated or not an image?") from None
