"""Semantic segmentation losses: cross-entropy (class- and pixel-weighted), soft Dice, focal.

All take logits ``[B,C,H,W]`` and int64 targets ``[B,H,W]`` in which ``ignore_index`` marks
pixels that never contribute. Dice and focal are segmentation_models_pytorch's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from segmentation_models_pytorch.losses import DiceLoss, FocalLoss
from torch import nn

from lightseg.errors import LightsegError, closest_names

LossName = Literal["ce", "dice", "ce+dice", "focal"]
LOSSES: tuple[str, ...] = get_args(LossName)


def median_frequency_weights(class_pixels: np.ndarray, image_pixels: np.ndarray) -> np.ndarray:
    """Median frequency balancing (Eigen & Fergus 2015, used by SegNet).

    Args:
        class_pixels: ``[C]`` pixels of each class over the training set.
        image_pixels: ``[C]`` total pixels of the training images in which each class occurs.

    Returns:
        ``[C]`` weights ``median(freq) / freq(c)`` with ``freq(c) = class_pixels / image_pixels``;
        classes that never occur get weight 1.
    """
    class_pixels = np.asarray(class_pixels, dtype=np.float64)
    image_pixels = np.asarray(image_pixels, dtype=np.float64)
    present = class_pixels > 0
    if not present.any():
        raise LightsegError("cannot compute median-frequency class weights: the training masks hold no labelled pixel")
    freq = np.zeros_like(class_pixels)
    freq[present] = class_pixels[present] / image_pixels[present]
    weights = np.ones_like(freq)
    weights[present] = np.median(freq[present]) / freq[present]
    return weights


def unet_weight_map(mask: np.ndarray, w0: float = 10.0, sigma: float = 5.0, background: int = 0) -> np.ndarray:
    """The border term of U-Net's weight map (Ronneberger et al. 2015, eq. 2).

    ``w0 * exp(-(d1 + d2)^2 / (2 sigma^2))`` on background pixels, where ``d1`` and ``d2``
    are the distances to the nearest and second-nearest object (connected component of
    non-background, non-ignore pixels). Images with fewer than two objects get zeros.

    Args:
        mask: ``[H,W]`` integer labels; values > 255 are not expected.
        w0: border weight.
        sigma: border width in pixels.
        background: the background class.

    Returns:
        ``[H,W]`` float32 extra weights (add the class-balancing weights to get eq. 2).
    """
    foreground = (mask != background) & (mask != 255)
    labels, count = ndimage.label(foreground)
    out = np.zeros(mask.shape, dtype=np.float32)
    if count < 2:
        return out
    distances = np.stack([ndimage.distance_transform_edt(labels != k) for k in range(1, count + 1)])
    nearest_two = np.partition(distances, 1, axis=0)[:2]
    border = w0 * np.exp(-((nearest_two[0] + nearest_two[1]) ** 2) / (2 * sigma**2))
    out[mask == background] = border[mask == background]
    return out


class SegmentationLoss(nn.Module):
    """A configurable semantic loss.

    Args:
        name: ``ce``, ``dice`` (soft Dice per class, averaged), ``ce+dice`` (their sum) or
            ``focal``.
        num_classes: number of classes (background included).
        ignore_index: label that never contributes.
        class_weights: per-class weights for the cross-entropy term (``ce``, ``ce+dice``);
            set later with :meth:`set_class_weights` for median-frequency balancing.
        boundary_w0: U-Net border weight ``w0`` (0 disables the weight map); ``ce`` only.
        boundary_sigma: U-Net border width ``sigma`` in pixels.
    """

    class_weights: torch.Tensor

    def __init__(
        self,
        name: str = "ce",
        num_classes: int = 2,
        ignore_index: int = 255,
        class_weights: Sequence[float] | None = None,
        boundary_w0: float = 0.0,
        boundary_sigma: float = 5.0,
    ) -> None:
        super().__init__()
        if name not in LOSSES:
            raise LightsegError(f"unknown loss {name!r};{closest_names(name, LOSSES)}")
        if class_weights is not None and name not in ("ce", "ce+dice"):
            raise LightsegError(f"class_weights apply to the cross-entropy losses ('ce', 'ce+dice'), not {name!r}")
        if boundary_w0 and name != "ce":
            raise LightsegError(f"the U-Net boundary weight map (boundary_w0) applies to loss 'ce', not {name!r}")
        self.name = name
        self.ignore_index = ignore_index
        self.boundary_w0 = boundary_w0
        self.boundary_sigma = boundary_sigma
        self.register_buffer("class_weights", torch.ones(num_classes))
        if class_weights is not None:
            self.set_class_weights(class_weights)
        self.dice = DiceLoss("multiclass", ignore_index=ignore_index) if "dice" in name else None
        self.focal = FocalLoss("multiclass", ignore_index=ignore_index) if name == "focal" else None

    def set_class_weights(self, weights: Sequence[float] | torch.Tensor) -> None:
        """Replace the cross-entropy class weights (``[C]``)."""
        weights = torch.as_tensor(weights, dtype=torch.float32)
        if weights.shape != self.class_weights.shape:
            raise LightsegError(
                f"class_weights has {weights.numel()} values but there are {self.class_weights.numel()} classes"
            )
        if (weights < 0).any():
            raise LightsegError(f"class_weights must be >= 0, got {weights.tolist()}")
        self.class_weights.copy_(weights)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of ``logits`` ``[B,C,H,W]`` against ``target`` ``[B,H,W]`` (a scalar, computed in float32)."""
        logits = logits.float()  # under 16-bit autocast too: softmax and log in full precision
        if self.focal is not None:
            return self.focal(logits, target)
        loss = logits.new_zeros(())
        if "ce" in self.name:
            loss = loss + self._cross_entropy(logits, target)
        if self.dice is not None:
            loss = loss + self.dice(logits, target)
        return loss

    def _cross_entropy(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not self.boundary_w0:
            return F.cross_entropy(logits, target, weight=self.class_weights, ignore_index=self.ignore_index)
        per_pixel = F.cross_entropy(logits, target, ignore_index=self.ignore_index, reduction="none")
        valid = target != self.ignore_index
        class_term = self.class_weights[target.clamp(max=self.class_weights.numel() - 1)]
        border = torch.from_numpy(
            np.stack([unet_weight_map(m, self.boundary_w0, self.boundary_sigma) for m in target.cpu().numpy()])
        ).to(logits.device)
        weight = (class_term + border) * valid
        return (per_pixel * weight).sum() / weight.sum().clamp(min=1e-12)
