"""Shared type aliases, the batch contracts every task and data module keeps, and what steps return.

Tasks and callbacks talk through Lightning's own channel: a step returns one of the outputs
below, and callbacks read it in ``on_validation_batch_end`` / ``on_test_batch_end`` /
``on_predict_batch_end``. Nothing is switched on by setting flags on a task.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal, NotRequired, Protocol, TypedDict

import torch

Stage = Literal["train", "val", "test", "predict"]


class RasterSource(Protocol):
    """A large image read window by window (:class:`lightseg.datamodules.rasters.Raster`).

    What a predict batch carries, under ``rasters``, for each image too large to hold: the
    task runs the model on its windows, the prediction writer writes the labels band by band.
    """

    @property
    def path(self) -> Path:
        """The image's file."""
        ...

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` in pixels."""
        ...

    @property
    def channels(self) -> int:
        """Channels of the windows read (3 for RGB and grey images; the bands chosen otherwise)."""
        ...

    def read_windows(self, boxes: list[tuple[int, int]], size: tuple[int, int]) -> torch.Tensor:
        """The windows of ``size`` ``(h, w)`` at top-left corners ``boxes`` as float32 ``[k,C,h,w]`` in [0, 1]."""
        ...


class SemanticItem(TypedDict):
    """One semantic sample: ``image`` float32 ``[C,H,W]`` in [0, 1], ``mask`` int64 ``[H,W]``.

    ``C`` is 3 (RGB) or the count of the bands read (multispectral rasters).

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
    """One image to predict: the image, its path and its size ``(H, W)`` before padding.

    An image too large to hold has ``raster`` (read window by window) instead of ``image``.
    """

    image: NotRequired[torch.Tensor]
    raster: NotRequired[RasterSource]
    path: str
    size: tuple[int, int]


@dataclass(eq=False)
class SemanticEvalOutput:
    """What a semantic task's validation and test steps return to callbacks, for one batch.

    ``probs`` and ``labels`` are computed when a callback first reads them and cached for
    the batch; Lightning keeps no evaluation output after its batch, so neither outlives it.

    Attributes:
        scores: ``[B,C,H,W]`` per-pixel scores of the padded batch: logits in plain
            inference, averaged probabilities with a sliding window or test-time augmentation.
        scores_are_probs: whether ``scores`` are probabilities already.
        sizes: each image's ``(H, W)`` before padding (``None``: the batch's own size).
        loss: the batch's mean loss.
        image_scores: each image's scores (test only; see :func:`~lightseg.metrics.image_scores`).
        ids: each image's sample id (``None`` where the data set gives none; test only).
    """

    scores: torch.Tensor
    scores_are_probs: bool = False
    sizes: list[tuple[int, int]] | None = None
    loss: torch.Tensor | None = None
    image_scores: dict[str, torch.Tensor] | None = None
    ids: list[str | None] | None = None

    @cached_property
    def probs(self) -> torch.Tensor:
        """float32 class probabilities ``[B,C,H,W]`` (what the dense CRF refines)."""
        scores = self.scores.detach().float()
        return scores if self.scores_are_probs else scores.softmax(1)

    @cached_property
    def labels(self) -> torch.Tensor:
        """Predicted labels ``[B,H,W]`` (int64)."""
        return self.scores.detach().argmax(1)


class SemanticPrediction(TypedDict):
    """What a semantic task's predict step returns, per batch.

    ``mask`` (uint8, or int32 beyond 256 classes, on the CPU) holds the predicted labels of
    the padded batch, ``size`` each image's ``(H, W)``. ``probs`` (float32 ``[B,C,H,W]``, on
    the model's device) is there for the callbacks of the batch (the dense CRF refines it and
    writes the refined labels into ``mask``); the task drops it in its own
    ``on_predict_batch_end``, after the callbacks, so that kept predictions stay small.
    """

    mask: torch.Tensor
    path: list[str]
    size: list[tuple[int, int]]
    probs: NotRequired[torch.Tensor]
    tiled: NotRequired[list[TiledPrediction]]


@dataclass(eq=False)
class TiledPrediction:
    """A large image's prediction, in a semantic predict step's ``tiled``: computed band by band as it is read.

    Nothing runs until :meth:`bands` is iterated (by the prediction writer, which writes each
    band and lets it go), so that no more than a band of the image's rows is ever held.

    Attributes:
        source: the image.
        path: its path relative to the predict folder (as ``SemanticPrediction.path``).
        num_classes: classes the model predicts.
        logits: ``logits(rows, columns)`` yields ``(first row, [C,n,w] averaged logits)`` bands
            of the rows ``(start, stop)`` and columns ``[a, b)`` (one of :attr:`stripes`), top to
            bottom, running the model.
        stripes: the column ranges the image is predicted in: the whole width, or narrower
            stripes where a band of the full width would not fit in memory.
        fingerprint: a digest of the model's weights and inference settings: a writer resumes
            a stopped image only with the bands of the same fingerprint.
    """

    source: RasterSource
    path: str
    num_classes: int
    logits: Callable[[tuple[int, int], tuple[int, int]], Iterator[tuple[int, torch.Tensor]]]
    stripes: list[tuple[int, int]]
    fingerprint: str = ""

    def bands(
        self, rows: tuple[int, int], columns: tuple[int, int]
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """``(first row, labels [n,w], probabilities [C,n,w])`` per band of those rows and columns.

        Labels are uint8 (int32 beyond 256 classes), on the CPU; probabilities on the model's device.
        """
        dtype = torch.uint8 if self.num_classes <= 256 else torch.int32
        for first, logits in self.logits(rows, columns):
            probs = logits.softmax(0)
            yield first, probs.max(0).indices.to(dtype).cpu(), probs
