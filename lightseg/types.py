"""Shared type aliases and the batch contracts every task and data module keeps."""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

import torch

Stage = Literal["train", "val", "test", "predict"]


class SemanticItem(TypedDict):
    """One semantic sample: ``image`` float32 ``[3,H,W]`` in [0, 1], ``mask`` int64 ``[H,W]``.

    ``id`` names the sample (per-image scores); ``instances`` int ``[H,W]`` holds ground-truth
    instance ids (0: none) where the data set has them and evaluation uses them (iIoU).
    """

    image: torch.Tensor
    mask: torch.Tensor
    id: NotRequired[str]
    instances: NotRequired[torch.Tensor]


class SemanticBatch(TypedDict):
    """A collated semantic batch; images padded with 0, masks with ``ignore_index``.

    ``size`` lists each image's ``(H, W)`` before padding (added by the collate); ``id`` the
    sample ids; ``instances`` (padded with 0) the ground-truth instance ids.
    """

    image: torch.Tensor
    mask: torch.Tensor
    size: NotRequired[list[tuple[int, int]]]
    id: NotRequired[list[str]]
    instances: NotRequired[torch.Tensor]


class PredictItem(TypedDict):
    """One image to predict: the image, its path and its size ``(H, W)`` before padding."""

    image: torch.Tensor
    path: str
    size: tuple[int, int]
