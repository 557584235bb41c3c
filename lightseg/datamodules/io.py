"""Reading images and label masks, with errors that name the file."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm.auto import tqdm

from lightseg.colors import voc_colormap
from lightseg.errors import LightsegError, MaskLabelError

#: read as images (an animated GIF: its first frame)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".gif")
T = TypeVar("T")


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """A progress bar over a long data-preparation loop (writing, scanning).

    Shown on a terminal once the loop has run for a second, so that short loops and
    logs stay quiet.
    """
    yield from tqdm(items, desc=description, total=total, delay=1.0, leave=False, disable=None, dynamic_ncols=True)


ORIENTATION_TAG = 0x0112  # EXIF "Orientation": how a viewer turns the stored pixels to show them
TURNED = (5, 6, 7, 8)  # orientations that swap height and width
ORIENTATION_NAMES = {  # of the orientations in TURNED, for messages
    5: "mirrored and turned 90 degrees",
    6: "turned 90 degrees clockwise",
    7: "mirrored and turned 90 degrees",
    8: "turned 90 degrees anticlockwise",
}


def exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation of an opened image (1, the pixels as stored, when it has none or it is unreadable)."""
    try:
        value = img.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # a damaged EXIF block is the camera's fault; the pixels are still good
        return 1
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def as_displayed(img: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says, as viewers and labelling tools show it."""
    if exif_orientation(img) == 1:
        return img
    turned = ImageOps.exif_transpose(img)
    return img if turned is None else turned


def check_depth(img: Image.Image, path: Path) -> None:
    """Refuse the pixel values lightseg cannot map to [0, 1]: 32-bit integers beyond 16 bits, floats outside [0, 1]."""
    if img.mode not in ("I", "F"):
        return
    values = np.asarray(img)
    if not values.size:
        return
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    if img.mode == "I" and (low < 0 or high > 65535):
        raise LightsegError(
            f"image {path} is a 32-bit integer image with values {low:.0f}..{high:.0f}; "
            "lightseg reads 8- and 16-bit images: save it as 16-bit (0..65535) or 8-bit"
        )
    if img.mode == "F" and (not np.isfinite(values).all() or low < 0 or high > 1):
        raise LightsegError(
            f"image {path} is a floating-point image with values {low:g}..{high:g}, not in [0, 1]; "
            "scale it to [0, 1] or save it as 8- or 16-bit"
        )


def _to_unit_rgb(img: Image.Image, path: Path) -> np.ndarray:
    """``[H,W,3]`` float32 in [0, 1]; 16-bit grey scaled from its full range (Pillow's conversion clips it at 255)."""
    check_depth(img, path)
    if img.mode.startswith("I;16") or img.mode == "I":
        grey = np.asarray(img, dtype=np.float32) / 65535
    elif img.mode == "F":
        grey = np.asarray(img, dtype=np.float32)
    else:
        rgb = np.array(img.convert("RGB"), dtype=np.float32)
        rgb /= 255  # in place: one float copy of the image per read, in the data loader
        return rgb
    return np.repeat(grey[..., None], 3, axis=2)


def read_image(path: Path, data: bytes | None = None) -> torch.Tensor:
    """An RGB image as float32 ``[3,H,W]`` in [0, 1], turned as its EXIF orientation says.

    ``data``: the file's bytes, already read (a packed data set's record); ``path`` then only
    names it in messages.

    Other modes are converted: grey, palette, RGBA (alpha dropped), CMYK; 16-bit grey is
    scaled by 1/65535 (Pillow's own conversion would clip it at 255). Photos are read as
    viewers and labelling tools show them: a phone's portrait photo stored as landscape
    pixels with an EXIF orientation is turned upright, as OpenCV and Detectron2 read it.
    """
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as img:
            array = _to_unit_rgb(as_displayed(img), path)
    except FileNotFoundError:
        raise LightsegError(f"image {path} does not exist") from None
    except Image.DecompressionBombError:
        raise LightsegError(
            f"image {path} has more pixels than the image reader takes whole (Pillow's limit, "
            f"{Image.MAX_IMAGE_PIXELS or 0:,} x 2); lightseg predict reads large TIFF images window by window: "
            "save it as a (tiled) TIFF, e.g. gdal_translate -of COG, with the geo extra installed"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise LightsegError(f"cannot read image {path}: {err}. Is the file truncated or not an image?") from None
    return torch.from_numpy(array).permute(2, 0, 1)


def read_image_uint8(path: Path) -> np.ndarray:
    """The image as :func:`read_image` reads it, as ``[H,W,3]`` uint8 (for pictures)."""
    return (read_image(path).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def read_mask(
    path: Path,
    num_classes: int,
    ignore_index: int = 255,
    colormap: np.ndarray | None = None,
    data: bytes | None = None,
) -> np.ndarray:
    """A label mask as ``[H,W]`` uint8 class indices (``data``: the file's bytes, already read).

    Palette (``P``) and grey (``L``) PNGs are read as indices, never as colours. An RGB
    mask is mapped through ``colormap`` (the VOC palette by default); a colour that is not
    in it is an error. Values other than ``ignore_index`` must be below ``num_classes``.
    """
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as img:
            refuse_lossy_mask(img, path)
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
    _refuse_values_beyond(path, array[array != ignore_index], num_classes, f"and {ignore_index} = ignore")
    return array.astype(np.uint8)


def _refuse_values_beyond(path: Path, labels: np.ndarray, num_classes: int, void: str) -> None:
    """Refuse a mask whose ``labels`` (void left out) reach beyond the classes, naming the values."""
    if labels.size and int(labels.max()) >= num_classes:
        bad = sorted({int(v) for v in np.unique(labels) if v >= num_classes})
        raise MaskLabelError(
            f"mask {path} holds label value(s) {bad[:5]} but the data set has {num_classes} classes "
            f"(valid: 0..{num_classes - 1} {void})",
            list(bad),
        )


def read_npy_mask(path: Path, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """A label mask saved as a NumPy array (labelme's ``SegmentationClassNpy``): class indices, -1 = void."""
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise LightsegError(f"mask {path} does not exist") from None
    except (OSError, ValueError) as err:
        raise LightsegError(f"cannot read mask {path}: {err}") from None
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise LightsegError(f"mask {path} holds a {array.dtype} array of shape {array.shape}; expected [H, W] integers")
    _refuse_values_beyond(path, array[(array >= 0) & (array != ignore_index)], num_classes, "and -1 = ignore")
    return np.where(array < 0, ignore_index, array).astype(np.uint8)


def refuse_lossy_mask(img: Image.Image, path: Path) -> None:
    """Refuse a mask stored as JPEG: its compression changes pixel values along every edge."""
    if img.format in ("JPEG", "MPO"):
        raise LightsegError(
            f"mask {path} is a JPEG file: JPEG compression changes the values along every edge (a class index "
            "becomes its neighbour's, 0/255 become 1..254), so it cannot hold labels. Save masks as PNG; for JPEG "
            "masks already made, re-export them from the labelling tool (binary ones can be thresholded at 128)"
        )


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


def image_header(path: Path, what: str = "image", *, displayed: bool = True) -> tuple[tuple[int, int], str]:
    """``((H, W), mode)`` of an image file from its header, without decoding the pixels.

    ``displayed``: the size as :func:`read_image` reads it (height and width swapped for an
    EXIF orientation that turns the image by 90 degrees); ``False`` for the stored size
    (label masks are read as stored).
    """
    try:
        with Image.open(path) as img:
            width, height = img.size
            if displayed and exif_orientation(img) in TURNED:
                width, height = height, width
            return (height, width), img.mode
    except FileNotFoundError:
        raise LightsegError(f"{what} {path} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise LightsegError(f"cannot read {what} {path}: {err}. Is the file truncated or not an image?") from None


def orientation_hint(image: Path, other: tuple[int, ...]) -> str:
    """Why ``image`` and a label of size ``other`` (H, W) differ, when its EXIF orientation is the cause; else ``""``.

    Labelling tools, like browsers, show a photo turned by its EXIF orientation and save
    labels for what they showed; a label made from the stored pixels has the stored size.
    """
    try:
        with Image.open(image) as img:
            orientation, (width, height) = exif_orientation(img), img.size
    except (OSError, SyntaxError, ValueError):
        return ""
    if orientation not in TURNED or tuple(other) != (height, width):
        return ""
    return (
        f". The image is stored as {height}x{width} pixels with EXIF orientation {orientation} "
        f"({ORIENTATION_NAMES[orientation]} when shown), and lightseg reads it as shown, as labelling tools and "
        "viewers do; its label was made for the stored pixels. Turn the image's pixels and drop the tag "
        "(exiftran -ai, or Pillow's ImageOps.exif_transpose and save), or turn the label to match"
    )
