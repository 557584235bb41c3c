"""COCO instances and keypoints, read from the official annotation files as downloaded.

One annotation file is parsed once (:class:`COCOAnnotations`); :class:`COCODataset` turns
its annotations into torchvision detection targets. Evaluation never uses these targets:
it runs COCO's own evaluation against the annotation file (see
:class:`lightseg.metrics.COCOEvaluator`), so crowd regions, areas and images without
annotations count exactly as in the official numbers.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import Dataset
from torchvision import tv_tensors

from lightseg.datamodules.base import BaseDataModule
from lightseg.datamodules.io import read_image
from lightseg.datamodules.transforms import DetectionTransform, detection_collate
from lightseg.errors import LightsegError

Kind = Literal["instances", "keypoints"]
UnknownCategories = Literal["error", "skip"]


def require_pycocotools() -> Any:
    """``pycocotools.mask``, or one line naming the extra to install."""
    try:
        from pycocotools import mask
    except ImportError:
        raise LightsegError(
            'COCO data needs pycocotools: pip install "lightseg[coco]" (in a checkout: -e ".[coco]")'
        ) from None
    return mask


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

    def describe(self) -> str:
        """``"3 crowd, 1 empty box"`` or ``"none"``."""
        return ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items())) or "none"


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
            return self._drop("empty box")
        if self.kind == "instances" and not _has_segmentation(annotation.get("segmentation")):
            return self._drop("no segmentation")
        if self.kind == "keypoints" and not annotation.get("keypoints"):
            return self._drop("no keypoints")
        return True

    def _drop(self, reason: str) -> bool:
        self.dropped.counts[reason] += 1
        return False

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.image_ids[index]
        info = self.annotations.images[image_id]
        image = read_image(self.images_dir / info["file_name"])
        height, width = image.shape[-2:]
        items = self.usable[image_id]
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


def plain_target(target: dict[str, Any]) -> dict[str, Any]:
    """tv_tensors back to plain tensors (what torchvision's detection models expect)."""
    return {k: v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v for k, v in target.items()}


def _has_segmentation(segmentation: Any) -> bool:
    if isinstance(segmentation, dict):
        return "counts" in segmentation and "size" in segmentation
    if isinstance(segmentation, list):
        return any(isinstance(p, list) and len(p) >= 6 for p in segmentation)
    return False


def segmentation_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A COCO segmentation (polygons, compressed or uncompressed RLE) as a ``[H,W]`` uint8 mask."""
    mask_api = require_pycocotools()
    if isinstance(segmentation, list):
        polygons = [p for p in segmentation if isinstance(p, list) and len(p) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=np.uint8)
        rle = mask_api.merge(mask_api.frPyObjects(polygons, height, width))
    elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE (crowd regions)
        rle = mask_api.frPyObjects(segmentation, *segmentation["size"])
    else:
        counts = segmentation["counts"]
        rle = {"size": segmentation["size"], "counts": counts.encode() if isinstance(counts, str) else counts}
    return np.ascontiguousarray(mask_api.decode(rle), dtype=np.uint8)


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


class DetectionDataModule(BaseDataModule):
    """Base of the instance and keypoint data modules: list batches, the evaluation ground truth.

    Subclasses fill the datasets in ``setup`` and give :meth:`ground_truth` for evaluation.
    Batches are ``{"images": [Tensor], "targets": [dict], "size": [(H, W)]}``.
    """

    kind: ClassVar[Kind] = "instances"
    drop_last_train = False

    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """See :func:`detection_collate`."""
        return detection_collate(items)

    @abstractmethod
    def make_dataset(self, split: str) -> COCODataset:
        """The dataset of ``split`` (``train``, ``val`` or ``test``)."""

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.train_dataset = self.make_dataset("train")
        if stage in ("fit", "validate"):
            self.val_dataset = self.make_dataset("val")
        if stage == "test":
            self.test_dataset = self.make_dataset("test")
        if stage == "predict":
            self.setup_predict()

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

    @property
    def keypoint_names(self) -> tuple[str, ...]:
        """Keypoint names (keypoint data modules)."""
        return ()

    @property
    def skeleton(self) -> list[tuple[int, int]]:
        """Keypoint skeleton as 0-based index pairs (keypoint data modules)."""
        return []


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
        hflip: random horizontal flips in training (keypoints swap left/right).
        flip_pairs: keypoint index pairs that swap under a horizontal flip (``None``: the names
            that differ by ``left``/``right``).
        train_skip_empty: leave images without usable annotations out of training (they always
            stay in evaluation).
        unknown_categories: ``error`` or ``skip`` for annotations of unlisted categories.
        batch_size: images per batch (per process).
        num_workers: data loader worker processes.
        pin_memory: pin batches in page-locked memory.
        persistent_workers: keep workers alive between epochs.
        predict_dir: folder of images for ``lightseg predict``.
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
        hflip: bool = True,
        flip_pairs: list[tuple[int, int]] | None = None,
        train_skip_empty: bool = True,
        unknown_categories: UnknownCategories = "error",
        batch_size: int = 2,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        predict_dir: str | None = None,
    ) -> None:
        super().__init__(batch_size, num_workers, pin_memory, persistent_workers, predict_dir)
        self.root = Path(root)
        prefix = self.split_files

        def resolve(value: str | None, default: str) -> Path:
            return self.root / (value if value is not None else default)  # an absolute value stays absolute

        self.paths = {
            "train": (self.root / train_images, resolve(train_annotations, f"annotations/{prefix}_train2017.json")),
            "val": (self.root / val_images, resolve(val_annotations, f"annotations/{prefix}_val2017.json")),
            "test": (self.root / test_images, resolve(test_annotations, f"annotations/{prefix}_val2017.json")),
        }
        self.hflip = hflip
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
        transform = DetectionTransform(self.hflip, self.keypoint_flip_pairs()) if train else None
        dataset = COCODataset(
            annotations,
            self.paths[split][0],
            self.kind,
            transform,
            skip_empty=train and self.train_skip_empty,
            unknown_categories=self.unknown_categories,
        )
        message = f"{type(self).__name__} {split}: {len(dataset)} images"
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
