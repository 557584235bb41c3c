"""Joint image + mask pipelines on torchvision.transforms.v2 and tv_tensors."""

from __future__ import annotations

import math
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
    return v2.Compose(steps)
