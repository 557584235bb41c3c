"""The panoptic data modules: the base (list batches, loaders, description) and COCO panoptic as downloaded.

The files themselves (``panoptic_{split}2017.json`` and its PNG folder: segments, categories,
the checked segment maps) are read by :mod:`lightseg.datamodules.panoptic_files`.
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightseg.coco_masks import encode_masks
from lightseg.colors import class_palette
from lightseg.contract import DataDescription, ThingTruth
from lightseg.datamodules.base import BaseDataModule
from lightseg.datamodules.io import progress
from lightseg.datamodules.panoptic_files import (
    VOID,
    COCOPanopticDataset,
    PanopticAnnotations,
    PanopticCategories,
)
from lightseg.datamodules.settings import DETECTION_LOADER, CropAugmentation, LoaderSettings
from lightseg.datamodules.transforms import detection_collate, train_transforms
from lightseg.errors import LightsegError


class PanopticDataModule(BaseDataModule):
    """Base of the panoptic data modules: list batches ``{"images", "targets", "size", "path"}``.

    Subclasses give :meth:`make_dataset` and :attr:`categories`; ``num_classes`` counts the
    categories (things and stuff; void is no class).
    """

    drop_last_train = False
    #: random scale, crop and flip in training (set by the subclass's ``__init__``)
    augmentation: CropAugmentation
    #: each evaluated split's thing instances, with the annotations they were read from
    _thing_truth: dict[str, tuple[PanopticAnnotations, ThingTruth]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._thing_truth = {}

    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Images keep their sizes: see :func:`~lightseg.datamodules.transforms.detection_collate`."""
        return detection_collate(items)

    @property
    @abstractmethod
    def categories(self) -> PanopticCategories:
        """The data set's categories."""

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        """Things and stuff categories."""
        return len(self.categories.ids)

    @property
    def class_names(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.categories.names

    @property
    def class_colors(self) -> Sequence[tuple[int, ...]] | None:
        """The categories' own colours (COCO panoptic's ``color``) where the file gives them.

        Otherwise lightseg's distinct colours from the first on: class 0 is a category here, not
        the background that the palette's black is kept for.
        """
        colors = self.categories.colors
        if colors is not None:
            return colors
        palette = class_palette()
        return tuple(tuple(int(v) for v in palette[label + 1]) for label in range(len(self.categories.ids)))

    @property
    def thing_classes(self) -> list[int]:
        """The class labels that are things (``isthing``); the CLI links them to the task."""
        return [i for i, thing in enumerate(self.categories.isthing) if thing]

    def describe(self) -> DataDescription:
        """The base description, with the things and each class's category id (for predictions)."""
        return dataclasses.replace(
            super().describe(), thing_classes=tuple(self.thing_classes), category_ids=tuple(self.categories.ids)
        )

    @abstractmethod
    def make_dataset(self, split: str) -> COCOPanopticDataset:
        """The dataset of ``split`` (``train``, ``val`` or ``test``)."""

    def thing_ground_truth(self, stage: str) -> ThingTruth:
        """The thing instances of ``stage``'s split (``val`` or ``test``) as COCO instance annotations.

        Read once per split (every PNG of it, checked as training reads them): what the instance
        view of a panoptic prediction (mask AP of its things) is scored against. Crowd regions
        stay crowd annotations, so that COCO's evaluation ignores detections on them.
        """
        dataset = self.val_dataset if stage == "val" else self.test_dataset
        if not isinstance(dataset, COCOPanopticDataset):
            raise LightsegError(f"{type(self).__name__} has no {stage} annotations (setup() did not create them)")
        annotations = dataset.annotations
        cached = self._thing_truth.get(stage)
        if cached is not None and cached[0] is annotations:
            return cached[1]
        categories = self.categories
        things = [label for label, thing in enumerate(categories.isthing) if thing]
        images: list[dict[str, Any]] = []
        instances: list[dict[str, Any]] = []
        image_ids: dict[Any, int] = {}
        label_of = categories.label_of
        for index in progress(range(len(annotations)), f"reading the {stage} things for mask AP", len(annotations)):
            image_info, _ = annotations.items[index]
            segment_map, segments = annotations.read_segment_map(index)
            height, width = segment_map.shape
            images.append({"id": index + 1, "height": height, "width": width})
            image_ids[image_info["id"]] = index + 1
            masks, entries = [], []
            for number, segment in enumerate(segments, start=1):
                mask = segment_map == number
                if not categories.isthing[label_of[segment.category_id]] or not mask.any():
                    continue
                ys, xs = np.nonzero(mask)
                box = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
                entries.append({"image_id": index + 1, "category_id": segment.category_id, "bbox": box,
                                "area": int(mask.sum()), "iscrowd": int(segment.iscrowd)})  # fmt: skip
                masks.append(mask)
            encodings = encode_masks(torch.from_numpy(np.stack(masks))) if masks else []
            for entry, encoded in zip(entries, encodings, strict=True):
                _, _, counts = encoded.decode().split(" ", 2)
                entry["segmentation"] = {"size": [height, width], "counts": counts}
                instances.append({"id": len(instances) + 1, **entry})
        kinds = [{"id": categories.ids[label], "name": categories.names[label]} for label in things]
        data = {"images": images, "annotations": instances, "categories": kinds}
        truth = ThingTruth(data, (0, *(categories.ids[label] for label in things)), image_ids)
        self._thing_truth[stage] = (annotations, truth)
        return truth

    def setup(self, stage: str) -> None:
        self.setup_named_splits(stage, self.make_dataset)


class COCOPanopticDataModule(PanopticDataModule):
    """COCO panoptic as downloaded (or a labelling tool's COCO panoptic export): paths relative to ``root``.

    Categories come from the validation file; the training file must list the same ones.
    COCO 2017's test images have no public panoptic annotations: ``test_*`` default to val.

    Args:
        root: data set folder.
        train_images: training image folder.
        train_annotations: training panoptic JSON.
        train_panoptic: its PNG folder (default: the JSON's path without ``.json``).
        val_images: validation image folder.
        val_annotations: validation panoptic JSON.
        val_panoptic: its PNG folder.
        test_images: test image folder.
        test_annotations: test panoptic JSON.
        test_panoptic: its PNG folder.
        augmentation: random scale, crop and flip in training (a
            :class:`~lightseg.datamodules.settings.CropAugmentation`; none but the flip by default).
        loader: how batches are loaded (a :class:`~lightseg.datamodules.settings.LoaderSettings`).
        predict_dir: folder of images (or one image) for ``lightseg predict``.
        kwargs: the augmentation's and loader's settings in their older flat spelling (``batch_size=4``).
    """

    def __init__(
        self,
        root: str,
        train_images: str = "train2017",
        train_annotations: str = "annotations/panoptic_train2017.json",
        train_panoptic: str | None = None,
        val_images: str = "val2017",
        val_annotations: str = "annotations/panoptic_val2017.json",
        val_panoptic: str | None = None,
        test_images: str = "val2017",
        test_annotations: str = "annotations/panoptic_val2017.json",
        test_panoptic: str | None = None,
        augmentation: CropAugmentation = CropAugmentation(),  # noqa: B008 (frozen: one shared default is safe)
        loader: LoaderSettings = DETECTION_LOADER,
        predict_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        augmentation = CropAugmentation.with_flat(augmentation, kwargs)
        super().__init__(loader, predict_dir, **kwargs)
        self.root = Path(root)
        self.paths = {
            "train": (train_images, train_annotations, train_panoptic),
            "val": (val_images, val_annotations, val_panoptic),
            "test": (test_images, test_annotations, test_panoptic),
        }
        self.augmentation = augmentation
        self.crop_size, self.scale_range, self.hflip = (
            augmentation.crop_size,
            augmentation.scale_range,
            augmentation.hflip,
        )
        self._annotations: dict[str, PanopticAnnotations] = {}

    def annotations(self, split: str) -> PanopticAnnotations:
        """The panoptic file of ``split`` (read once)."""
        if split not in self._annotations:
            _, json_file, png_folder = self.paths[split]
            folder = self.root / png_folder if png_folder is not None else None
            self._annotations[split] = PanopticAnnotations(self.root / json_file, folder)
        return self._annotations[split]

    @property
    def categories(self) -> PanopticCategories:
        return self.annotations("val").categories

    def make_dataset(self, split: str) -> COCOPanopticDataset:
        annotations = self.annotations(split)
        if annotations.categories != self.categories:
            raise LightsegError(
                f"{annotations.source} lists other categories than {self.annotations('val').source}: "
                "a model's classes must mean the same in every split"
            )
        transforms = None
        if split == "train":
            a = self.augmentation
            transforms = train_transforms(a.crop_size, a.scale_range, a.hflip, ignore_index=VOID)
        return COCOPanopticDataset(self.root / self.paths[split][0], annotations, transforms)
