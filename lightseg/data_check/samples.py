"""What ``lightseg data check`` learns of one sample, and the pictures it draws of some.

The readers here look at one file (or one image and its mask) and say what they found;
:mod:`lightseg.data_check.checker` walks the splits with them and sums it up.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from lightseg.data_check.report import Finding
from lightseg.datamodules.coco_format import COCODataset
from lightseg.datamodules.files import SegmentationFiles
from lightseg.datamodules.io import TURNED, check_depth, exif_orientation, orientation_hint, read_image_uint8
from lightseg.datamodules.raster_windows import CLASS_SAMPLING_STEP, RasterPair
from lightseg.datamodules.rasters import open_raster, read_whole
from lightseg.errors import LightsegError, MaskLabelError
from lightseg.visualize import to_uint8_image


@dataclass
class Inspected:
    """What reading one sample found."""

    size: tuple[int, int] | None = None
    digest: str | None = None
    mask_kind: str | None = None
    counts: np.ndarray | None = None
    ignore_pixels: int = 0
    orientation: int = 1
    findings: list[Finding] = field(default_factory=list)
    #: of the chosen bands of a multispectral image: per channel, the count, sum and squares of every 16th pixel
    moments: np.ndarray | None = None


def file_digest(data: bytes) -> str:
    """The content hash that finds identical files."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def read_image_file(path: Path, split: str) -> Inspected:
    """The image's ``(H, W)`` as read (turned by its EXIF orientation) and content hash, decoding it whole.

    A truncated file fails here, not in epoch 12.
    """
    result = Inspected()
    try:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            check_depth(img, path)
            result.orientation = exif_orientation(img)
            result.size = (img.width, img.height) if result.orientation in TURNED else (img.height, img.width)
            result.digest = file_digest(data)
    except FileNotFoundError:
        result.findings.append(Finding("missing_image", split, str(path), "image file is missing"))
    except UnidentifiedImageError:
        result.findings.append(Finding("unreadable_image", split, str(path), "not an image file"))
    except LightsegError as err:
        result.findings.append(Finding("unreadable_image", split, str(path), str(err)))
    except (OSError, SyntaxError, ValueError) as err:
        result.findings.append(Finding("unreadable_image", split, str(path), f"cannot decode: {err}"))
    return result


def read_band_file(path: Path, bands: tuple[int, ...], split: str) -> Inspected:
    """A multispectral image's chosen bands as the model reads them: size, content hash and channel moments."""
    result = Inspected()
    try:
        raster = open_raster(path, bands)
        try:
            image = raster.read_windows([(0, 0)], raster.size)[0].numpy()
            valid = raster.valid_window(0, 0, *raster.size)
        finally:
            raster.close()
        result.digest = file_digest(path.read_bytes())
    except LightsegError as err:
        kind = "missing_image" if not path.is_file() else "unreadable_image"
        result.findings.append(Finding(kind, split, str(path), str(err)))
        return result
    result.size = raster.size
    step = CLASS_SAMPLING_STEP  # nodata left out, as for rasters
    kept = image[:, ::step, ::step][:, valid[::step, ::step]].astype(np.float64)
    result.moments = np.stack([np.full(len(bands), kept.shape[1], np.float64), kept.sum(1), (kept**2).sum(1)])
    return result


def inspect_semantic(dataset: SegmentationFiles, index: int, split: str) -> Inspected:
    """One sample of a semantic data set read as training reads it: its image, its mask, their agreement."""
    sample = dataset.samples[index]
    bands = dataset.bands
    result = read_image_file(sample.image, split) if bands is None else read_band_file(sample.image, bands, split)
    if sample.mask is None:
        return result
    try:
        result.mask_kind = dataset.mask_kind(index)
        labels = dataset.read_mask(index)
    except MaskLabelError as err:
        what = "colours" if err.values and isinstance(err.values[0], tuple) else "values"
        detail = f"{what} {', '.join(map(str, err.values[:8]))} are not classes"
        if what == "values":
            detail += f" (0..{dataset.num_classes - 1}, {dataset.ignore_index} = ignore)"
        result.findings.append(Finding("bad_labels", split, str(sample.mask), detail))
        return result
    except (LightsegError, UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        result.findings.append(Finding("unreadable_mask", split, str(sample.mask), str(err)))
        return result
    if result.size is not None and labels.shape != result.size:
        result.findings.append(
            Finding(
                "size_mismatch",
                split,
                str(sample.mask),
                f"image is {result.size}, mask is {labels.shape} (H, W){orientation_hint(sample.image, labels.shape)}",
            )
        )
    ignored = labels == dataset.ignore_index
    result.ignore_pixels = int(ignored.sum())
    result.counts = np.bincount(labels[~ignored].ravel(), minlength=dataset.num_classes)[: dataset.num_classes]
    return result


def detection_picture(dataset: COCODataset, index: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A detection sample: its image beside the image with its boxes, masks and keypoints drawn."""
    from lightseg.visualize import draw_detections

    item = dataset[index]
    target = item["target"]
    detections = {"boxes": target["boxes"], "labels": target["labels"], "scores": target["labels"].float()}
    if "keypoints" in target:
        detections["keypoints"] = target["keypoints"]
    keep = target["labels"] >= 0
    names, skeleton = dataset.annotations.class_names, dataset.annotations.skeleton
    drawn = draw_detections(item["image"], detections, keep, target.get("masks"), names, skeleton, show_scores=False)
    image = to_uint8_image(item["image"])
    return np.concatenate([image, np.full((image.shape[0], 4, 3), 255, np.uint8), drawn], axis=1), None


def picture_of(path: Path, bands: tuple[int, ...] | None) -> np.ndarray:
    """The image as a ``[H,W,3]`` uint8 picture: RGB as read, chosen bands as lightseg shows them."""
    return read_image_uint8(path) if bands is None else to_uint8_image(read_whole(path, bands))


def raster_picture(pair: RasterPair, window: int, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """A window at the raster's centre: its pixels and labels as training reads them."""
    height, width = (min(window, side) for side in pair.size)
    y, x = (pair.size[0] - height) // 2, (pair.size[1] - width) // 2
    image, labels = pair.read(y, x, height, width, ignore_index)
    return to_uint8_image(image), labels
