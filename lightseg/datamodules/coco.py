"""COCO instances and keypoints (``annotations/{instances,person_keypoints}_{split}2017.json``) as downloaded.

The files are read by :mod:`lightseg.datamodules.coco_format`; evaluation runs COCO's own
evaluation against them (see :class:`lightseg.metrics.COCOEvaluator`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lightseg.datamodules.coco_format import (
    AnnotationFiles,
    COCODataset,
    Kind,
    UnknownCategories,
)
from lightseg.datamodules.detection import DetectionDataModule
from lightseg.datamodules.settings import DETECTION_LOADER, FlipAugmentation, LoaderSettings
from lightseg.datamodules.transforms import DetectionTransform
from lightseg.errors import LightsegError


class COCODataModule(DetectionDataModule, AnnotationFiles):
    """A COCO-format data set: image folders plus annotation files, paths relative to ``root``.

    Categories (and so ``num_classes`` = categories + background, and the class names) come
    from the validation annotation file, read when the data module is built; the training
    file must list the same ones. COCO 2017's test images have no public annotations, so
    ``test_*`` default to the validation files.

    Args:
        root: data set folder.
        train_images: training image folder.
        train_annotations: training annotation file.
        val_images: validation image folder.
        val_annotations: validation annotation file.
        test_images: test image folder.
        test_annotations: test annotation file.
        augmentation: random horizontal flips in training (keypoints swap left/right). (a
            :class:`~lightseg.datamodules.settings.FlipAugmentation`).
        flip_pairs: keypoint index pairs that swap under a horizontal flip (``None``: the names
            that differ by ``left``/``right``).
        train_skip_empty: leave images without usable annotations out of training (they always
            stay in evaluation).
        unknown_categories: ``error`` or ``skip`` for annotations of unlisted categories.
        loader: how batches are loaded (a :class:`~lightseg.datamodules.settings.LoaderSettings`).
        predict_dir: folder of images (or one image) for ``lightseg predict``.
        kwargs: the augmentation's and loader's settings in their older flat spelling (``batch_size=4``).
    """

    split_files: ClassVar[str] = "instances"

    def __init__(
        self,
        root: str,
        train_images: str = "train2017",
        train_annotations: str | None = None,
        val_images: str = "val2017",
        val_annotations: str | None = None,
        test_images: str = "val2017",
        test_annotations: str | None = None,
        augmentation: FlipAugmentation = FlipAugmentation(),  # noqa: B008 (frozen: one shared default is safe)
        flip_pairs: list[tuple[int, int]] | None = None,
        train_skip_empty: bool = True,
        unknown_categories: UnknownCategories = "error",
        loader: LoaderSettings = DETECTION_LOADER,
        predict_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        augmentation = FlipAugmentation.with_flat(augmentation, kwargs)
        super().__init__(loader, predict_dir, **kwargs)
        self.root = Path(root)
        prefix = self.split_files

        def resolve(value: str | None, default: str) -> Path:
            return self.root / (value if value is not None else default)  # an absolute value stays absolute

        self.paths = {
            "train": (self.root / train_images, resolve(train_annotations, f"annotations/{prefix}_train2017.json")),
            "val": (self.root / val_images, resolve(val_annotations, f"annotations/{prefix}_val2017.json")),
            "test": (self.root / test_images, resolve(test_annotations, f"annotations/{prefix}_val2017.json")),
        }
        self.augmentation = augmentation
        self.flip_pairs = [(int(a), int(b)) for a, b in flip_pairs] if flip_pairs is not None else None
        self.train_skip_empty = train_skip_empty
        self.unknown_categories: UnknownCategories = unknown_categories

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        """Categories plus background."""
        return self.reference.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:  # type: ignore[override]
        """``background`` and the category names, by label."""
        return self.reference.class_names

    @property
    def category_ids(self) -> list[int]:
        return self.reference.category_ids

    @property
    def keypoint_names(self) -> tuple[str, ...]:
        return self.reference.keypoint_names

    @property
    def skeleton(self) -> list[tuple[int, int]]:
        return self.reference.skeleton

    def keypoint_flip_pairs(self) -> list[tuple[int, int]]:
        """The keypoint pairs a training flip swaps: ``flip_pairs``, or those the names give."""
        if self.flip_pairs is None:
            return self.reference.flip_pairs()
        count = len(self.keypoint_names)
        bad = [p for p in self.flip_pairs if not all(0 <= i < count for i in p)] if count else []
        if bad:
            raise LightsegError(
                f"flip_pairs {bad} name keypoints outside 0..{count - 1} ({self.reference.source} has {count})"
            )
        return self.flip_pairs

    def make_dataset(self, split: str) -> COCODataset:
        """The dataset of ``split``; training gets the flip and (optionally) leaves out empty images."""
        annotations = self.annotations(split)
        if annotations.category_ids != self.category_ids:
            raise LightsegError(
                f"{annotations.source} has categories {annotations.category_ids[1:]} but "
                f"{self.reference.source} has {self.category_ids[1:]}; the splits must share their categories"
            )
        train = split == "train"
        transform = DetectionTransform(self.augmentation.hflip, self.keypoint_flip_pairs()) if train else None
        dataset = COCODataset(
            annotations,
            self.paths[split][0],
            self.kind,
            transform,
            skip_empty=train and self.train_skip_empty,
            unknown_categories=self.unknown_categories,
        )
        message = f"{type(self).__name__} {split} ({annotations.source}): {len(dataset)} images"
        if dataset.skipped_empty:
            message += f" ({dataset.skipped_empty} without usable annotations left out)"
        rank_zero_info(f"{message}; annotations not used as targets: {dataset.dropped.describe()}")
        if dataset.dropped.counts.get("unknown category"):
            rank_zero_warn(f"{annotations.source}: skipped {dataset.dropped.counts['unknown category']} "
                           "annotations of unlisted categories")  # fmt: skip
        return dataset


class COCOInstanceDataModule(COCODataModule):
    """COCO instance segmentation (``annotations/instances_{split}2017.json``) for Mask R-CNN.

    See :class:`COCODataModule` for the arguments.
    """

    kind: ClassVar[Kind] = "instances"
    split_files: ClassVar[str] = "instances"


class COCOKeypointDataModule(COCODataModule):
    """COCO person keypoints (``annotations/person_keypoints_{split}2017.json``) for Keypoint R-CNN.

    Horizontal flips swap the keypoints whose names differ by ``left``/``right``.
    See :class:`COCODataModule` for the arguments.
    """

    kind: ClassVar[Kind] = "keypoints"
    split_files: ClassVar[str] = "person_keypoints"
