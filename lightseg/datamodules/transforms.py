"""Joint image + target pipelines on torchvision.transforms.v2 and tv_tensors (masks, boxes, keypoints)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF


class RandomScale(v2.Transform):
    """Resize image and mask by one random factor drawn from ``scale_range`` (DeepLab's 0.5-2.0).

    The mask is resized with nearest neighbour (torchvision does that for ``tv_tensors.Mask``).
    """

    def __init__(self, scale_range: tuple[float, float] = (0.5, 2.0)) -> None:
        super().__init__()
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must be 0 < low <= high, got {scale_range}")
        self.scale_range = scale_range

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        scale = torch.empty(()).uniform_(*self.scale_range).item()
        return {"size": [max(1, math.floor(height * scale)), max(1, math.floor(width * scale))]}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        return self._call_kernel(TF.resize, inpt, size=params["size"], antialias=True)


def train_transforms(
    crop_size: int | tuple[int, int] | None = None,
    scale_range: tuple[float, float] | None = None,
    hflip: bool = True,
    vflip: bool = False,
    photometric: bool = False,
    ignore_index: int = 255,
) -> v2.Compose:
    """The training pipeline: random scale, pad + random crop, flips, optional colour jitter.

    Padding fills the image with 0 and the mask with ``ignore_index`` so padded pixels never
    count (the DeepLab recipe).
    """
    steps: list[v2.Transform] = []
    if scale_range is not None:
        steps.append(RandomScale(scale_range))
    if crop_size is not None:
        fill = {tv_tensors.Image: 0.0, tv_tensors.Mask: ignore_index}
        steps.append(v2.RandomCrop(crop_size, pad_if_needed=True, fill=fill))
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if vflip:
        steps.append(v2.RandomVerticalFlip())
    if photometric:
        steps.append(v2.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.25, hue=0.05))
    return v2.Compose(steps or [v2.Identity()])  # no augmentation: still a training pipeline


class DetectionTransform:
    """Training augmentation on tv_tensors: horizontal flip that also swaps left/right keypoints.

    Boxes and masks move with the image through torchvision's functional transforms; the
    keypoints' x flips and the ``flip_pairs`` exchange places, and invisible keypoints
    keep COCO's ``(0, 0, 0)``.

    Args:
        hflip: flip with probability 0.5.
        flip_pairs: index pairs of keypoints that swap (left/right).
    """

    def __init__(self, hflip: bool = True, flip_pairs: Sequence[tuple[int, int]] = ()) -> None:
        self.hflip = hflip
        self.flip_pairs = list(flip_pairs)

    def __call__(self, image: tv_tensors.Image, target: dict[str, Any]) -> tuple[tv_tensors.Image, dict[str, Any]]:
        if not self.hflip or torch.rand(()) >= 0.5:
            return image, target
        width = image.shape[-1]
        image = TF.horizontal_flip(image)
        target = dict(target)
        target["boxes"] = TF.horizontal_flip(target["boxes"])
        if "masks" in target:
            target["masks"] = TF.horizontal_flip(target["masks"])
        if "keypoints" in target:
            target["keypoints"] = flip_keypoints(target["keypoints"], width, self.flip_pairs)
        return image, target


def flip_keypoints(keypoints: torch.Tensor, width: int, flip_pairs: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Mirror ``[N,K,3]`` COCO keypoints in an image of ``width`` and swap the ``flip_pairs``."""
    flipped = keypoints.clone()
    flipped[..., 0] = width - keypoints[..., 0]
    order = list(range(keypoints.shape[1]))
    for a, b in flip_pairs:
        order[a], order[b] = b, a
    flipped = flipped[:, order]
    flipped[flipped[..., 2] == 0] = 0
    return flipped


def detection_collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Detection batches stay lists (each image keeps its size; the model batches them itself)."""
    batch: dict[str, Any] = {"images": [item["image"] for item in items]}
    if "target" in items[0]:
        batch["targets"] = [item["target"] for item in items]
    for key in ("path", "size"):
        if key in items[0]:
            batch[key] = [item[key] for item in items]
    if "size" not in batch:
        batch["size"] = [tuple(item["image"].shape[-2:]) for item in items]
    return batch
