"""COCO's mask encodings both ways: annotations (polygons, RLE) to masks, predicted masks to RLE; panoptic PNG ids."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightseg.errors import LightsegError


def require_pycocotools() -> Any:
    """``pycocotools.mask``, or one line naming the extra to install."""
    try:
        from pycocotools import mask
    except ImportError:
        raise LightsegError(
            'COCO data needs pycocotools: pip install "lightseg[coco]" (in a checkout: -e ".[coco]")'
        ) from None
    return mask


def segmentation_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO segmentation (polygons, compressed or uncompressed RLE) as a ``[H,W]`` uint8 mask."""
    mask_api = require_pycocotools()
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if isinstance(p, list) and len(p) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=np.uint8)
        rle = mask_api.merge(mask_api.frPyObjects(polygons, height, width))
    elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE (crowd regions)
        rle = mask_api.frPyObjects(segmentation, *segmentation["size"])
    else:
        counts = segmentation["counts"]
        rle = {"size": segmentation["size"], "counts": counts.encode() if isinstance(counts, str) else counts}
    return np.ascontiguousarray(mask_api.decode(rle), dtype=np.uint8)


def encode_masks(masks: torch.Tensor) -> list[bytes]:
    """Binary masks ``[N,1,H,W]`` or ``[N,H,W]`` as ``b"H W <compressed RLE counts>"`` each."""
    from pycocotools import mask as mask_api

    array = masks.reshape(-1, *masks.shape[-2:]).to(torch.uint8).cpu().numpy()
    height, width = array.shape[-2:]
    rles = mask_api.encode(np.asfortranarray(array.transpose(1, 2, 0)))
    return [f"{height} {width} ".encode() + rle["counts"] for rle in rles]


def rgb_to_id(picture: np.ndarray) -> np.ndarray:
    """Segment ids of a COCO panoptic PNG (``[H, W, 3]``): ``R + 256 G + 256² B``."""
    rgb = picture.astype(np.uint32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """The COCO panoptic PNG of a map of segment ids (the inverse of :func:`rgb_to_id`)."""
    ids = ids.astype(np.uint32)
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], axis=-1).astype(np.uint8)


def read_segment_ids(path: Path, what: str = "a panoptic PNG") -> np.ndarray:
    """The segment ids of the COCO panoptic PNG at ``path``; a missing or unreadable file is one line naming it."""
    from PIL import Image

    if not path.is_file():
        raise LightsegError(f"{path}: no such file ({what})")
    try:
        with Image.open(path) as picture:
            return rgb_to_id(np.asarray(picture.convert("RGB")))
    except OSError as err:
        raise LightsegError(f"{path}: not a readable PNG ({err})") from None


def semantic_map(target: dict[str, Any], ignore_index: int = 255) -> torch.Tensor:
    """The semantic view of a panoptic target: each pixel's class label, void pixels ``ignore_index``.

    ``target`` holds ``segments`` ``[H, W]`` (segment numbers 1..N, 0 void) and ``labels`` ``[N]``.
    """
    labels = target["labels"]
    table = torch.cat([torch.tensor([ignore_index], dtype=labels.dtype, device=labels.device), labels])
    return table[target["segments"].long().to(labels.device)]
