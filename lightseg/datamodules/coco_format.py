"""The COCO annotation format, read from the official files as downloaded.

One annotation file is parsed once (:class:`COCOAnnotations`); :class:`COCODataset` turns
its annotations into torchvision detection targets. Evaluation never uses these targets:
it runs COCO's own evaluation against the annotation file (see
:class:`lightseg.metrics.COCOEvaluator`), so crowd regions, areas and images without
annotations count exactly as in the official numbers. The COCO data modules and the
Cityscapes instances (converted to COCO annotations) read through it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import Dataset
from torchvision import tv_tensors

from lightseg.coco_masks import segmentation_mask
from lightseg.datamodules.io import orientation_hint, read_image
from lightseg.errors import LightsegError

Kind = Literal["instances", "keypoints"]
UnknownCategories = Literal["error", "skip"]


def load_json(path: Path) -> dict[str, Any]:
    """A COCO annotation file, with errors that name the file."""
    if not path.is_file():
        raise LightsegError(f"annotation file {path} does not exist; check root and the *_annotations arguments")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LightsegError(f"annotation file {path} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise LightsegError(
            f"annotation file {path} holds a JSON {type(data).__name__}, not a COCO object "
            '{"images": [...], "annotations": [...], "categories": [...]}'
        )
    missing = [key for key in ("images", "annotations", "categories") if not isinstance(data.get(key), list)]
    if missing:
        raise LightsegError(f"annotation file {path} is not a COCO file: it has no {', '.join(missing)} list")
    return data


@dataclass
class COCOAnnotations:
    """A parsed COCO annotation file: categories mapped to contiguous labels 1..K, annotations per image.

    Attributes:
        source: the file (or a name for an in-memory data set).
        data: the file's content, as COCO evaluation reads it.
        category_ids: original category id of each label (index 0 is background, id 0).
        class_names: ``background`` plus the category names, by label.
        keypoint_names: the keypoint names of the (first) category that has them.
        skeleton: the keypoint skeleton (0-based index pairs).
    """

    source: str
    data: dict[str, Any]
    category_ids: list[int] = field(init=False)
    class_names: tuple[str, ...] = field(init=False)
    keypoint_names: tuple[str, ...] = field(init=False)
    skeleton: list[tuple[int, int]] = field(init=False)

    def __post_init__(self) -> None:
        for kind, required in (
            ("categories", ("id",)),
            ("images", ("id", "file_name")),
            ("annotations", ("image_id",)),
        ):
            for position, entry in enumerate(self.data[kind]):
                self._require(kind, position, entry, required)
        categories = sorted(self.data["categories"], key=lambda c: int(c["id"]))
        if not categories:
            raise LightsegError(f"{self.source} lists no categories")
        self.category_ids = [0] + [int(c["id"]) for c in categories]
        self.class_names = ("background", *(str(c.get("name", c["id"])) for c in categories))
        with_points = [c for c in categories if c.get("keypoints")]
        self.keypoint_names = tuple(with_points[0]["keypoints"]) if with_points else ()
        # COCO's skeleton is 1-based
        self.skeleton = [(int(a) - 1, int(b) - 1) for a, b in with_points[0].get("skeleton", [])] if with_points else []
        self.images = {int(image["id"]): image for image in self.data["images"]}
        self.by_image: dict[int, list[dict[str, Any]]] = {image_id: [] for image_id in self.images}
        #: annotations left out of training *and* evaluation because their content is broken, by reason
        self.invalid: Counter[str] = Counter()
        points = {int(c["id"]): len(c.get("keypoints") or []) for c in categories}
        kept = []
        for annotation in self.data["annotations"]:
            image_id = int(annotation["image_id"])
            if image_id not in self.by_image:
                raise LightsegError(
                    f"{self.source}: annotation {annotation.get('id')} refers to image_id {image_id}, "
                    "which is not in the file's images"
                )
            problem = self._broken(annotation, self.images[image_id], points)
            if problem:
                if not self.invalid:
                    first = f"annotation {annotation.get('id')} of image {image_id}: {problem}"
                self.invalid[problem.split(" (")[0]] += 1
                continue
            kept.append(annotation)
            self.by_image[image_id].append(annotation)
        if self.invalid:
            self.data = {**self.data, "annotations": kept}  # evaluation sees what training sees
            counts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.invalid.items()))
            rank_zero_warn(f"{self.source}: left out {counts} (first: {first})")

    def _require(self, kind: str, position: int, entry: Any, fields: tuple[str, ...]) -> None:
        what = f"{self.source}: {kind}[{position}]"
        if not isinstance(entry, dict):
            raise LightsegError(f"{what} is a {type(entry).__name__}, not an object")
        named = f"{what} (id {entry.get('id')})" if "id" in entry else what
        for key in fields:
            if key not in entry:
                raise LightsegError(f"{named} has no {key!r}; every entry of {kind} needs {', '.join(fields)}")
            if key.endswith("id"):
                try:
                    int(entry[key])
                except (TypeError, ValueError):
                    raise LightsegError(f"{named} has {key} {entry[key]!r}, not a whole number") from None

    @staticmethod
    def _broken(annotation: dict[str, Any], image: dict[str, Any], points: dict[int, int]) -> str | None:
        segmentation = annotation.get("segmentation")
        size = [image.get("height"), image.get("width")]
        if (
            isinstance(segmentation, dict)
            and "size" in segmentation
            and None not in size
            and [int(v) for v in segmentation["size"]] != [int(v or 0) for v in size]
        ):
            return f"RLE of another size (segmentation size {segmentation['size']}, image {size})"
        box = annotation.get("bbox")
        if box is not None and box != [] and not _numbers(box, 4):
            return f"malformed bbox (bbox {box!r}; expected [x, y, width, height])"
        if box and (float(box[2]) < 0 or float(box[3]) < 0):
            return f"negative box size (bbox {box})"
        if segmentation is not None and not isinstance(segmentation, list | dict):
            return f"malformed segmentation (segmentation {segmentation!r}; expected polygons or RLE)"
        if isinstance(segmentation, list):
            for polygon in segmentation:
                if not _numbers(polygon) or len(polygon) % 2:
                    return f"malformed polygon (polygon {polygon!r}; expected x1, y1, x2, y2, ...)"
                if len(polygon) < 6:
                    return f"polygon of fewer than 3 points (polygon {polygon})"
        expected = points.get(int(annotation.get("category_id", -1)), 0)
        keypoints = annotation.get("keypoints")
        if keypoints and expected and len(keypoints) != 3 * expected:
            return f"keypoints of another count ({len(keypoints)} values, 3 x {expected} expected)"
        return None

    @classmethod
    def from_file(cls, path: Path) -> COCOAnnotations:
        """Read and index an annotation file."""
        return cls(str(path), load_json(path))

    @cached_property
    def label_of(self) -> dict[int, int]:
        """Original category id -> contiguous label."""
        return {cat: label for label, cat in enumerate(self.category_ids) if label > 0}

    @property
    def num_classes(self) -> int:
        """Categories plus background."""
        return len(self.category_ids)

    def flip_pairs(self) -> list[tuple[int, int]]:
        """Keypoints that swap under a horizontal flip: names with ``left`` <-> ``right``."""
        names = list(self.keypoint_names)
        pairs = []
        for i, name in enumerate(names):
            if "left" in name and name.replace("left", "right") in names:
                pairs.append((i, names.index(name.replace("left", "right"))))
        return pairs


@dataclass
class Dropped:
    """Training annotations left out of the targets, by reason."""

    counts: Counter[str] = field(default_factory=Counter)
    #: the first annotation left out for each reason, and what it holds
    first: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """``"3 crowd/ignore, 1 empty box (first: annotation 7 of image 2, bbox [1, 2, 0, 5])"`` or ``"none"``."""
        return (
            ", ".join(
                f"{n} {reason}" + (f" (first: {self.first[reason]})" if reason in self.first else "")
                for reason, n in sorted(self.counts.items())
            )
            or "none"
        )


class COCODataset(Dataset[dict[str, Any]]):
    """Images of a COCO annotation file with torchvision detection targets.

    Items: ``{"image": float32 [3,H,W] in [0,1], "target": {"boxes": float [N,4] xyxy,
    "labels": int64 [N] in 1..K, "masks": uint8 [N,H,W] (instances) | "keypoints": float
    [N,K,3] (keypoints), "image_id": int}}``.

    Left out of the targets (and counted in :attr:`dropped`): crowd regions and annotations
    flagged ``ignore`` (they stay in the evaluation, as in COCO's), boxes of zero width or
    height, instance annotations without a usable segmentation (``[]``, no polygon with three
    points), keypoint annotations without keypoints, and, with
    ``unknown_categories="skip"``, annotations whose ``category_id`` is not in the categories.

    Args:
        annotations: the parsed annotation file.
        images_dir: folder of the images (``file_name`` is relative to it).
        kind: ``instances`` (boxes + masks) or ``keypoints`` (boxes + keypoints).
        transform: ``(image, target) -> (image, target)`` on tv_tensors (training augmentation).
        skip_empty: leave out images without any usable annotation (training).
        unknown_categories: ``error`` or ``skip`` for annotations of categories the file does not list.
    """

    def __init__(
        self,
        annotations: COCOAnnotations,
        images_dir: Path,
        kind: Kind,
        transform: Any = None,
        skip_empty: bool = False,
        unknown_categories: UnknownCategories = "error",
    ) -> None:
        self.annotations = annotations
        self.images_dir = images_dir
        self.kind = kind
        self.transform = transform
        self.dropped = Dropped()
        if not images_dir.is_dir():
            raise LightsegError(f"image folder {images_dir} does not exist; check root and the *_images arguments")
        self.usable: dict[int, list[dict[str, Any]]] = {}
        for image_id, items in annotations.by_image.items():
            self.usable[image_id] = [a for a in items if self._usable(a, unknown_categories)]
        ids = sorted(annotations.images)
        self.skipped_empty = 0
        if skip_empty:
            kept = [i for i in ids if self.usable[i]]
            self.skipped_empty = len(ids) - len(kept)
            ids = kept
        self.image_ids = ids
        missing = [i for i in ids if not (images_dir / annotations.images[i]["file_name"]).is_file()]
        if missing:
            first = annotations.images[missing[0]]["file_name"]
            raise LightsegError(
                f"{annotations.source}: {len(missing)} of {len(ids)} images are missing from {images_dir} "
                f"(e.g. {first}); check the *_images argument"
            )

    def _usable(self, annotation: dict[str, Any], unknown_categories: UnknownCategories) -> bool:
        category = int(annotation.get("category_id", -1))
        if category not in self.annotations.label_of:
            if unknown_categories == "error":
                raise LightsegError(
                    f"{self.annotations.source}: annotation {annotation.get('id')} has category_id {category}, "
                    f"which is not among the categories {self.annotations.category_ids[1:]}; fix the file or set "
                    "unknown_categories: skip"
                )
            return self._drop("unknown category")
        if annotation.get("iscrowd", 0) or annotation.get("ignore", 0):
            return self._drop("crowd/ignore")
        box = annotation.get("bbox") or []
        if len(box) != 4 or not (float(box[2]) > 0 and float(box[3]) > 0):
            return self._drop("empty box", annotation, f"bbox {box}")
        if self.kind == "instances" and not _has_segmentation(annotation.get("segmentation")):
            return self._drop("no segmentation", annotation, f"segmentation {annotation.get('segmentation')!r}")
        if self.kind == "keypoints" and not annotation.get("keypoints"):
            return self._drop("no keypoints", annotation, "no keypoints")
        return True

    def _drop(self, reason: str, annotation: dict[str, Any] | None = None, detail: str = "") -> bool:
        self.dropped.counts[reason] += 1
        if annotation is not None and reason not in self.dropped.first:
            self.dropped.first[reason] = (
                f"annotation {annotation.get('id')} of image {annotation.get('image_id')}, {detail}"
            )
        return False

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.image_ids[index]
        info = self.annotations.images[image_id]
        path = self.images_dir / info["file_name"]
        return self.make_item(read_image(path), info, self.usable[image_id], path)

    def make_item(
        self, image: torch.Tensor, info: dict[str, Any], items: list[dict[str, Any]], path: Path
    ) -> dict[str, Any]:
        """The item of an image read as ``image``, listed as ``info``, with its usable annotations ``items``."""
        image_id = int(info["id"])
        height, width = image.shape[-2:]
        # the boxes, polygons and keypoints are in the listed image's pixels: drawn on another
        # size they would be silently wrong
        check_listed_size(info, path, (height, width), self.annotations.source)
        boxes = torch.tensor([a["bbox"] for a in items], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        target: dict[str, Any] = {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
            "labels": torch.tensor(
                [self.annotations.label_of[int(a["category_id"])] for a in items], dtype=torch.int64
            ),
            "image_id": image_id,
        }
        if self.kind == "instances":
            masks = np.stack([segmentation_mask(a["segmentation"], height, width) for a in items]) if items else None
            target["masks"] = tv_tensors.Mask(
                torch.from_numpy(masks) if masks is not None else torch.zeros(0, height, width, dtype=torch.uint8)
            )
        else:
            k = len(self.annotations.keypoint_names) or (len(items[0]["keypoints"]) // 3 if items else 0)
            points = torch.tensor([a["keypoints"] for a in items], dtype=torch.float32).reshape(-1, k, 3)
            target["keypoints"] = points
        image_tv = tv_tensors.Image(image)
        if self.transform is not None:
            image_tv, target = self.transform(image_tv, target)
        return {"image": image_tv.as_subclass(torch.Tensor), "target": plain_target(target)}


def check_listed_size(info: dict[str, Any], path: Path, size: tuple[int, int], source: str) -> None:
    """Refuse an image whose size (H, W), as read, is not the one its annotation file lists."""
    height, width = info.get("height"), info.get("width")
    if height is None or width is None or (int(height), int(width)) == tuple(size):
        return
    listed = (int(height), int(width))
    raise LightsegError(
        f"image {path} is {tuple(size)} but {source} says {listed} (H, W); "
        f"the annotations were made for another image{orientation_hint(path, listed)}"
    )


def plain_target(target: dict[str, Any]) -> dict[str, Any]:
    """tv_tensors back to plain tensors (what torchvision's detection models expect)."""
    return {k: v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v for k, v in target.items()}


def _numbers(values: Any, count: int | None = None) -> bool:
    """Whether ``values`` is a list of numbers (of ``count`` of them)."""
    return (
        isinstance(values, list)
        and (count is None or len(values) == count)
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    )


def _has_segmentation(segmentation: Any) -> bool:
    if isinstance(segmentation, dict):
        return "counts" in segmentation and "size" in segmentation
    if isinstance(segmentation, list):
        return any(isinstance(p, list) and len(p) >= 6 for p in segmentation)
    return False


class AnnotationFiles:
    """A COCO data module's annotation files: each parsed once, the validation one defining the categories.

    Subclasses set ``paths``: split -> (image folder, annotation file).
    """

    paths: dict[str, tuple[Path, Path]]

    def annotations(self, split: str) -> COCOAnnotations:
        """The parsed annotation file of ``split`` (read once)."""
        if split not in self.paths:
            raise LightsegError(f"{type(self).__name__} has the splits {', '.join(self.paths)}, not {split!r}")
        path = self.paths[split][1]
        parsed: dict[Path, COCOAnnotations] = self.__dict__.setdefault("_parsed_annotations", {})
        if path not in parsed:
            parsed[path] = COCOAnnotations.from_file(path)
        return parsed[path]

    @cached_property
    def reference(self) -> COCOAnnotations:
        """The annotations that define the categories: validation's, or training's if there is no validation file."""
        val = self.paths["val"][1]
        return self.annotations("val" if val.is_file() or not self.paths["train"][1].is_file() else "train")
