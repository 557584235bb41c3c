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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from lightseg.coco_masks import read_segment_ids
from lightseg.datamodules.coco_format import check_listed_size, load_json, plain_target
from lightseg.datamodules.io import read_image
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
