"""Shared type aliases and the batch contracts every task and data module keeps."""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict

import torch

Stage = Literal["train", "val", "test", "predict"]


class SemanticItem(TypedDict):
    """One semantic sample: ``image`` float32 ``[3,H,W]`` in [0, 1], ``mask`` int64 ``[H,W]``."""

    image: torch.Tensor
    mask: torch.Tensor


class SemanticBatch(TypedDict):
    """A collated semantic batch; images padded with 0, masks with ``ignore_index``.

    ``size`` lists each image's ``(H, W)`` before padding (added by the collate).
    """

    image: torch.Tensor
    mask: torch.Tensor
    size: NotRequired[list[tuple[int, int]]]


class PredictItem(TypedDict):
    """One image to predict: the image, its path and its size ``(H, W)`` before padding."""

    image: torch.Tensor
    path: str
    size: tuple[int, int]
