"""The base of the instance and keypoint data modules: list batches, COCO ground truth for evaluation."""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

from lightseg.contract import DataDescription
from lightseg.datamodules.base import BaseDataModule
from lightseg.datamodules.coco_format import COCOAnnotations, COCODataset, Kind
from lightseg.datamodules.settings import FlipAugmentation
from lightseg.datamodules.transforms import detection_collate
from lightseg.errors import LightsegError


class DetectionDataModule(BaseDataModule):
    """Base of the instance and keypoint data modules: list batches, the evaluation ground truth.

    Subclasses fill the datasets in ``setup`` and give :meth:`ground_truth` for evaluation.
    Batches are ``{"images": [Tensor], "targets": [dict], "size": [(H, W)]}``.
    """

    kind: ClassVar[Kind] = "instances"
    drop_last_train = False
    #: random flips in training (set by the subclass's ``__init__``)
    augmentation: FlipAugmentation

    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """See :func:`detection_collate`."""
        return detection_collate(items)

    @abstractmethod
    def make_dataset(self, split: str) -> COCODataset:
        """The dataset of ``split`` (``train``, ``val`` or ``test``)."""

    def setup(self, stage: str) -> None:
        self.setup_named_splits(stage, self.make_dataset)

    def ground_truth(self, stage: str) -> COCOAnnotations:
        """The annotations that evaluation of ``stage`` (``val`` or ``test``) compares against."""
        dataset = self.val_dataset if stage == "val" else self.test_dataset
        if not isinstance(dataset, COCODataset):
            raise LightsegError(f"{type(self).__name__} has no {stage} annotations (setup() did not create them)")
        return dataset.annotations

    @property
    def category_ids(self) -> list[int]:
        """Original category id of each contiguous label (0: background)."""
        raise NotImplementedError

    def describe(self) -> DataDescription:
        """The base description with the category ids and the keypoints."""
        return dataclasses.replace(
            super().describe(),
            category_ids=tuple(self.category_ids),
            keypoint_names=tuple(self.keypoint_names),
            skeleton=tuple((int(a), int(b)) for a, b in self.skeleton),
        )

    @property
    def keypoint_names(self) -> tuple[str, ...]:
        """Keypoint names (keypoint data modules)."""
        return ()

    @property
    def skeleton(self) -> list[tuple[int, int]]:
        """Keypoint skeleton as 0-based index pairs (keypoint data modules)."""
        return []
