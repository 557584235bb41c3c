"""COCO panoptic annotations as downloaded: ``panoptic_{split}2017.json`` and its PNG folder.

Each annotation names a PNG whose pixels hold segment ids (``R + 256 G + 256² B``, 0 void)
and lists the segments: ``id``, ``category_id``, ``iscrowd``, ``area``, ``bbox``. The
categories carry ``isthing``. :class:`COCOPanopticDataset` checks each PNG against its
segments as it reads it (a colour without a segment, a segment without pixels, an unknown
category, a repeated id: one line naming the file) and returns the image with a target that
both views of the task use: the segment map (segments numbered 1..N in the order of the
JSON, 0 void) and per segment its class, crowd and thing flags.
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from lightseg.coco_masks import encode_masks, read_segment_ids
from lightseg.colors import class_palette
from lightseg.contract import DataDescription, ThingTruth
from lightseg.datamodules.base import BaseDataModule, Pinning, Workers
from lightseg.datamodules.coco_format import check_listed_size, load_json, plain_target
from lightseg.datamodules.io import progress, read_image
from lightseg.datamodules.transforms import detection_collate, train_transforms
from lightseg.errors import LightsegError

#: the segment id of unlabelled pixels
VOID = 0


@dataclass(frozen=True)
class PanopticCategories:
    """A panoptic file's categories, numbered 0..K-1 in the file's order (the class labels).

    Attributes:
        ids: each class's category id.
        names: each class's name.
        isthing: whether each class is a thing (has instances) or stuff.
        colors: each class's RGB colour where the file gives every category one (COCO's does).
    """

    ids: tuple[int, ...]
    names: tuple[str, ...]
    isthing: tuple[bool, ...]
    colors: tuple[tuple[int, int, int], ...] | None = None

    @property
    def label_of(self) -> dict[int, int]:
        """Category id to class label."""
        return {category: label for label, category in enumerate(self.ids)}


@dataclass(frozen=True)
class PanopticSegment:
    """One segment of an image: its id in the PNG, category id and crowd flag."""

    id: int
    category_id: int
    iscrowd: bool


class PanopticAnnotations:
    """A COCO panoptic JSON file with its PNG folder (default: the file's path without ``.json``).

    Args:
        json_file: the annotation file.
        png_folder: the folder of segment PNGs.
    """

    def __init__(self, json_file: str | Path, png_folder: str | Path | None = None) -> None:
        self.source = Path(json_file)
        self.png_folder = Path(png_folder) if png_folder is not None else self.source.with_suffix("")
        data = load_json(self.source)
        self.data = data
        categories = data["categories"]
        bad = [c for c in categories if not isinstance(c, dict) or "id" not in c or "isthing" not in c]
        if bad:
            raise LightsegError(
                f"annotation file {self.source}: category {bad[0]!r} lacks an id or isthing "
                "(a COCO panoptic file marks each category a thing or stuff)"
            )
        colors = [c.get("color") for c in categories]
        self.categories = PanopticCategories(
            tuple(int(c["id"]) for c in categories),
            tuple(str(c.get("name", c["id"])) for c in categories),
            tuple(int(c["isthing"]) == 1 for c in categories),
            tuple((int(r), int(g), int(b)) for r, g, b in colors)
            if colors and all(isinstance(c, list) and len(c) == 3 for c in colors)
            else None,
        )
        images = {image["id"]: image for image in data["images"]}
        self.items: list[tuple[dict[str, Any], dict[str, Any]]] = []
        for annotation in data["annotations"]:
            if not isinstance(annotation, dict) or "segments_info" not in annotation or "file_name" not in annotation:
                raise LightsegError(
                    f"annotation file {self.source}: an annotation without file_name and segments_info "
                    f"({str(annotation)[:80]}): not a COCO panoptic file (instances_*.json is read by COCODataModule)"
                )
            image = images.get(annotation.get("image_id"))
            if image is None:
                raise LightsegError(
                    f"annotation file {self.source}: the annotation of {annotation['file_name']} names image_id "
                    f"{annotation.get('image_id')!r}, which is not among its images"
                )
            self.items.append((image, annotation))

    def __len__(self) -> int:
        return len(self.items)

    def segments(self, index: int) -> list[PanopticSegment]:
        """The segments of item ``index``, as its JSON lists them."""
        _, annotation = self.items[index]
        return [
            PanopticSegment(int(s["id"]), int(s["category_id"]), bool(s.get("iscrowd", 0)))
            for s in annotation["segments_info"]
        ]

    def read_segment_map(self, index: int) -> tuple[np.ndarray, list[PanopticSegment]]:
        """Item ``index``'s segment map (``[H, W]``, segments numbered 1..N in JSON order, 0 void) and segments.

        The PNG must hold exactly the JSON's segments: any other colour, a segment without a
        pixel, a repeated id or an unknown category is one line naming the PNG.
        """
        _, annotation = self.items[index]
        path = self.png_folder / annotation["file_name"]
        ids = read_segment_ids(path, f"the panoptic PNG of {self.source.name}'s annotation")
        segments = self.segments(index)
        numbers = [s.id for s in segments]
        repeated = sorted({n for n in numbers if numbers.count(n) > 1})
        if repeated:
            raise LightsegError(f"{path}: the JSON lists segment id {repeated[0]} more than once")
        unknown = sorted({s.category_id for s in segments} - set(self.categories.ids))
        if unknown:
            raise LightsegError(
                f"{path}: segments of category {unknown[0]}, which {self.source.name} does not list among its "
                "categories"
            )
        present, inverse = np.unique(ids, return_inverse=True)
        position = {segment: number for number, segment in enumerate(numbers, start=1)}
        stray = [int(v) for v in present if v != VOID and int(v) not in position]
        if stray:
            colour = (stray[0] % 256, stray[0] // 256 % 256, stray[0] // 65536)
            raise LightsegError(
                f"{path}: the colour RGB{colour} (segment id {stray[0]}) has no segment in {self.source.name}"
                + (f" ({len(stray)} such colours)" if len(stray) > 1 else "")
            )
        missing = sorted(set(numbers) - {int(v) for v in present})
        if missing:
            raise LightsegError(f"{path}: segment {missing[0]} of {self.source.name} has no pixel in the PNG")
        lookup = np.array([position.get(int(v), 0) for v in present], dtype=np.int32)
        return lookup[inverse.reshape(ids.shape)], segments


class COCOPanopticDataset(Dataset):
    """Images with their panoptic targets.

    Each item is ``{"image", "target", "path"}``: the image ``[3, H, W]`` (float, 0..1), the
    target ``{"segments": [H, W] (1..N, 0 void), "labels": [N] class labels, "iscrowd": [N]
    bool, "isthing": [N] bool, "segment_ids": [N] the PNG's ids, "image_id"}``. After a crop a
    segment may have no pixel left: its entries stay (consumers count pixels).

    Args:
        images: the image folder.
        annotations: the annotation file with its PNG folder.
        transforms: applied to ``(image, target)`` (torchvision v2: the map resizes as a mask; pad
            it with 0, void).
    """

    def __init__(self, images: str | Path, annotations: PanopticAnnotations, transforms: Any = None) -> None:
        self.images = Path(images)
        self.annotations = annotations
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.annotations)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_info, annotation = self.annotations.items[index]
        path = self.images / image_info["file_name"]
        image = read_image(path)
        check_listed_size(image_info, path, (int(image.shape[-2]), int(image.shape[-1])), str(self.annotations.source))
        segment_map, segments = self.annotations.read_segment_map(index)
        if tuple(segment_map.shape) != tuple(image.shape[-2:]):
            raise LightsegError(
                f"{self.annotations.png_folder / annotation['file_name']} is {segment_map.shape[1]}x"
                f"{segment_map.shape[0]} pixels (W x H) but its image {image_info['file_name']} is "
                f"{image.shape[-1]}x{image.shape[-2]}: the segments were drawn for another image"
            )
        label_of = self.annotations.categories.label_of
        isthing = self.annotations.categories.isthing
        target: dict[str, Any] = {
            "segments": tv_tensors.Mask(torch.from_numpy(segment_map.astype(np.int64))),
            "labels": torch.tensor([label_of[s.category_id] for s in segments], dtype=torch.long),
            "iscrowd": torch.tensor([s.iscrowd for s in segments], dtype=torch.bool),
            "isthing": torch.tensor([isthing[label_of[s.category_id]] for s in segments], dtype=torch.bool),
            "segment_ids": torch.tensor([s.id for s in segments], dtype=torch.long),
            "image_id": image_info["id"],
        }
        image_tv = tv_tensors.Image(image)
        if self.transforms is not None:
            image_tv, target = self.transforms(image_tv, target)
        return {"image": image_tv.as_subclass(torch.Tensor), "target": plain_target(target), "path": str(path)}


class PanopticDataModule(BaseDataModule):
    """Base of the panoptic data modules: list batches ``{"images", "targets", "size", "path"}``.

    Subclasses give :meth:`make_dataset` and :attr:`categories`; ``num_classes`` counts the
    categories (things and stuff; void is no class).
    """

    drop_last_train = False
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
        crop_size: random training crop (padded with void where the image is smaller; ``None``: none).
        scale_range: random training rescale range (``None``: none).
        hflip: random horizontal flips in training.
        batch_size: images per batch (per process).
        num_workers: data loader worker processes (``auto``: the CPU cores, at most 8).
        pin_memory: pin batches in page-locked memory (``auto``: where a GPU is).
        persistent_workers: keep workers alive between epochs.
        predict_dir: folder of images (or one image) for ``lightseg predict``.
        predict_batch_size: images per batch in ``lightseg predict`` (1: one at a time; raise it on a GPU).
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
        crop_size: int | None = None,
        scale_range: tuple[float, float] | None = None,
        hflip: bool = True,
        batch_size: int = 2,
        num_workers: Workers = "auto",
        pin_memory: Pinning = "auto",
        persistent_workers: bool = True,
        predict_dir: str | None = None,
        predict_batch_size: int = 1,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory, persistent_workers, predict_dir, predict_batch_size)
        self.root = Path(root)
        self.paths = {
            "train": (train_images, train_annotations, train_panoptic),
            "val": (val_images, val_annotations, val_panoptic),
            "test": (test_images, test_annotations, test_panoptic),
        }
        self.crop_size, self.scale_range, self.hflip = crop_size, scale_range, hflip
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
            transforms = train_transforms(self.crop_size, self.scale_range, self.hflip, ignore_index=VOID)
        return COCOPanopticDataset(self.root / self.paths[split][0], annotations, transforms)
