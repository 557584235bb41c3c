"""The PASCAL VOC segmentation layout reader (``JPEGImages``, ``SegmentationClass``, ``ImageSets``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from lightseg.datamodules.io import read_image, read_mask
from lightseg.errors import LightsegError
from lightseg.types import SemanticItem

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

VOC_LAYOUT = "VOC2012/{JPEGImages/<id>.jpg, SegmentationClass/<id>.png, ImageSets/Segmentation/<split>.txt}"


class VOCSegmentationDataset(Dataset[SemanticItem]):
    """Images and masks of one split of a folder in the VOC 2012 layout.

    Args:
        root: the folder that holds ``JPEGImages``, ``SegmentationClass`` and ``ImageSets``.
        split: name of the list ``ImageSets/Segmentation/<split>.txt``.
        num_classes: classes in the masks (background included); other values but
            ``ignore_index`` are an error naming the file.
        transforms: a joint transform of ``tv_tensors.Image`` and ``tv_tensors.Mask``.
        ignore_index: the void label.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        num_classes: int = len(VOC_CLASSES),
        transforms: Callable[..., Any] | None = None,
        ignore_index: int = 255,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.num_classes = num_classes
        self.transforms = transforms
        self.ignore_index = ignore_index
        if not self.root.is_dir():
            raise LightsegError(f"data root {self.root} does not exist; expected the layout {VOC_LAYOUT}")
        split_file = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not split_file.is_file():
            raise LightsegError(f"split file {split_file} does not exist; expected the layout {VOC_LAYOUT}")
        self.ids: list[str] = [line.split()[0] for line in split_file.read_text().splitlines() if line.strip()]

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, index: int) -> Path:
        """Path of the image of sample ``index``."""
        return self.root / "JPEGImages" / f"{self.ids[index]}.jpg"

    def mask_path(self, index: int) -> Path:
        """Path of the mask of sample ``index``."""
        return self.root / "SegmentationClass" / f"{self.ids[index]}.png"

    def read_mask(self, index: int) -> np.ndarray:
        """The untransformed ``[H,W]`` uint8 mask of sample ``index``."""
        return read_mask(self.mask_path(index), self.num_classes, self.ignore_index)

    def __getitem__(self, index: int) -> SemanticItem:
        image = read_image(self.image_path(index))
        mask = self.read_mask(index)
        if tuple(image.shape[-2:]) != mask.shape:
            raise LightsegError(
                f"image {self.image_path(index)} is {tuple(image.shape[-2:])} but its mask "
                f"{self.mask_path(index)} is {mask.shape} (H, W)"
            )
        img = tv_tensors.Image(image)
        msk = tv_tensors.Mask(torch.from_numpy(mask).long())
        if self.transforms is not None:
            img, msk = self.transforms(img, msk)
        return {"image": img.as_subclass(torch.Tensor), "mask": msk.as_subclass(torch.Tensor)}
