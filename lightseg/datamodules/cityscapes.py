"""Cityscapes fine annotations, mapped to the 19 evaluated train ids on the fly."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import Cityscapes

from lightseg.contract import DataDescription, EvaluationProtocol
from lightseg.datamodules.base import SplitDataModule
from lightseg.datamodules.coco_format import COCOAnnotations, COCODataset
from lightseg.datamodules.detection import DetectionDataModule
from lightseg.datamodules.files import Sample, SegmentationFiles
from lightseg.datamodules.io import progress, read_mask
from lightseg.datamodules.settings import DETECTION_LOADER, FlipAugmentation, LoaderSettings, SemanticAugmentation
from lightseg.datamodules.transforms import DetectionTransform
from lightseg.errors import LightsegError
from lightseg.types import SemanticItem

CITYSCAPES_LAYOUT = (
    "{leftImg8bit/<split>/<city>/<frame>_leftImg8bit.png, gtFine/<split>/<city>/<frame>_gtFine_labelIds.png}"
)
# the official label table (cityscapesScripts' helpers/labels.py), as torchvision ships it
TRAIN_LABELS = sorted((c for c in Cityscapes.classes if 0 <= c.train_id < 255), key=lambda c: c.train_id)
CITYSCAPES_CLASSES = tuple(c.name for c in TRAIN_LABELS)
CITYSCAPES_COLORS = tuple(c.color for c in TRAIN_LABELS)
NUM_LABEL_IDS = 34  # label ids 0..33 occur in *_labelIds.png (license plate, -1, does not)


def label_id_to_train_id() -> np.ndarray:
    """A 256-entry lookup table: Cityscapes label id -> train id (0..18), everything else -> 255."""
    lut = np.full(256, 255, dtype=np.uint8)
    for c in Cityscapes.classes:
        if c.id >= 0 and 0 <= c.train_id < 255:
            lut[c.id] = c.train_id
    return lut


#: cityscapesScripts' average instance size in pixels per class (``evalPixelLevelSemanticLabeling``'s
#: ``avgClassSize``, over the training set): the weights of instance-level IoU (iIoU)
CITYSCAPES_AVERAGE_INSTANCE_SIZE = {
    "bicycle": 4672.3249222261, "caravan": 36771.8241758242, "motorcycle": 6298.7200839748,
    "rider": 3930.4788056518, "bus": 35732.1511111111, "train": 67583.7075812274, "car": 12794.0202738185,
    "person": 3462.4756337644, "truck": 27855.1264367816, "trailer": 16926.9763313609,
}  # fmt: skip


def cityscapes_protocol() -> EvaluationProtocol:
    """What the Cityscapes benchmark reports: categories, iIoU of the 8 thing classes, Boundary IoU at 0.005.

    Categories and instance classes come from the official label table; a category is
    evaluated with iIoU when all its labels have instances (human, vehicle), as in
    cityscapesScripts.
    """
    categories: dict[str, tuple[int, ...]] = {}
    for c in TRAIN_LABELS:
        categories[c.category] = (*categories.get(c.category, ()), c.train_id)
    sizes = {c.train_id: CITYSCAPES_AVERAGE_INSTANCE_SIZE[c.name] for c in TRAIN_LABELS if c.has_instances}
    labelled = [c for c in Cityscapes.classes if c.id >= 0]
    with_instances = tuple(name for name in categories if all(c.has_instances for c in labelled if c.category == name))
    return EvaluationProtocol(0.005, categories, sizes, with_instances)


def instance_ids_file(mask: Path) -> Path:
    """The ``*_gtFine_instanceIds.png`` beside a frame's label file."""
    frame = mask.name[: mask.name.index("_gtFine_")]
    return mask.with_name(f"{frame}_gtFine_instanceIds.png")


class CityscapesLabels(SegmentationFiles):
    """Cityscapes frames with the best label file each has.

    ``*_labelIds.png`` are mapped to train ids, ``*_labelTrainIds.png`` read as they are,
    and ``*_instanceIds.png`` decoded (label id = value // 1000 for instances, the value
    itself otherwise) and mapped. With ``instances``, items also carry ``instances``: the
    frame's ``*_instanceIds.png`` values above 1000 (label id * 1000 + instance number; 0
    elsewhere), for iIoU.
    """

    def __init__(self, *args: Any, instances: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.instances = instances

    def __getitem__(self, index: int) -> SemanticItem:
        item = super().__getitem__(index)
        instances = self.read_instances(index)
        if instances is not None:
            item["instances"] = torch.from_numpy(instances)
        return item

    def read_instances(self, index: int) -> np.ndarray | None:
        """The frame's instance ids (label id * 1000 + instance number, 0 elsewhere) with ``instances``."""
        if not self.instances:
            return None
        mask = self.samples[index].mask
        assert mask is not None
        raw = self._read_instance_ids(instance_ids_file(mask))
        return np.where(raw > 1000, raw, 0).astype(np.int32)

    @staticmethod
    def _read_instance_ids(path: Path) -> np.ndarray:
        return read_instance_ids(path)

    def decode_mask(self, path: Path) -> np.ndarray:
        if path.name.endswith("_labelTrainIds.png"):
            return read_mask(path, self.num_classes, self.ignore_index)
        if not path.name.endswith("_instanceIds.png"):
            return super().decode_mask(path)
        raw = self._read_instance_ids(path)
        ids = np.where(raw >= 1000, raw // 1000, raw)
        if ids.size and (ids.max() >= NUM_LABEL_IDS or ids.min() < 0):
            raise LightsegError(f"{path} holds label ids outside 0..{NUM_LABEL_IDS - 1}")
        assert self.label_map is not None
        return self.label_map[ids]


def read_instance_ids(path: Path) -> np.ndarray:
    """A ``*_gtFine_instanceIds.png`` (16-bit: label id, or label id * 1000 + instance) as int64."""
    try:
        with Image.open(path) as img:
            return np.asarray(img).astype(np.int64)
    except OSError as err:
        raise LightsegError(f"cannot read label file {path}: {err}") from None


def cityscapes_samples(root: Path, split: str) -> list[Sample]:
    """Frames of ``split`` (sorted by city and name) with their best available label file."""
    images_dir = root / "leftImg8bit" / split
    if not root.is_dir():
        raise LightsegError(f"data root {root} does not exist; expected the Cityscapes layout {CITYSCAPES_LAYOUT}")
    if not images_dir.is_dir():
        raise LightsegError(f"{images_dir} does not exist; expected the Cityscapes layout {CITYSCAPES_LAYOUT}")
    samples = []
    for image in sorted(images_dir.glob("*/*_leftImg8bit.png")):
        frame = image.name[: -len("_leftImg8bit.png")]
        labels = root / "gtFine" / split / image.parent.name
        candidates = [labels / f"{frame}_gtFine_{kind}.png" for kind in ("labelIds", "labelTrainIds", "instanceIds")]
        mask = next((c for c in candidates if c.is_file()), candidates[0])
        samples.append(Sample(frame, image, mask))
    if not samples:
        raise LightsegError(f"{images_dir} holds no *_leftImg8bit.png; expected the layout {CITYSCAPES_LAYOUT}")
    return samples


#: DeepLab v3+'s Cityscapes training pipeline
CITYSCAPES_AUGMENTATION = SemanticAugmentation(crop_size=(512, 1024), scale_range=(0.5, 2.0))


class CityscapesDataModule(SplitDataModule):
    """Cityscapes fine (19 evaluated classes; 2,975 train / 500 val), no preprocessing step.

    Labels come from ``*_gtFine_labelIds.png`` mapped to train ids on the fly (all other ids
    -> 255); where only ``*_labelTrainIds.png`` (or ``*_instanceIds.png``) exist, those are
    used. Class names and colours come from the official label table.

    Args:
        root: the folder holding ``leftImg8bit`` and ``gtFine``.
        augmentation: the training augmentation (a
            :class:`~lightseg.datamodules.settings.SemanticAugmentation`): crop 512x1024 as in DeepLab v3+
            (769x769 is the other common one), random scale 0.5-2.0, flips.
        loader: how batches are loaded (a :class:`~lightseg.datamodules.settings.LoaderSettings`): 8 per batch.
        **kwargs: splits, ``on_missing`` and the other options of :class:`~lightseg.datamodules.SplitDataModule`.

    """

    num_classes = len(CITYSCAPES_CLASSES)
    class_names = CITYSCAPES_CLASSES
    expected_counts: ClassVar[dict[str, int]] = {"train": 2975, "val": 500, "test": 1525}
    class_colors = CITYSCAPES_COLORS
    #: the official label id of each train id: predictions are submitted as label ids
    label_ids: ClassVar[tuple[int, ...]] = tuple(c.id for c in TRAIN_LABELS)
    #: class IoU, iIoU, category IoU/iIoU and Boundary IoU (band 0.005 of the diagonal), as the benchmark
    evaluation_protocol = cityscapes_protocol()

    def __init__(
        self,
        root: str,
        augmentation: SemanticAugmentation = CITYSCAPES_AUGMENTATION,
        loader: LoaderSettings = LoaderSettings(),  # noqa: B008 (frozen: one shared default is safe)
        **kwargs: Any,
    ) -> None:
        super().__init__(augmentation=augmentation, loader=loader, **kwargs)
        self.root = root

    def describe(self) -> DataDescription:
        """The base description with the official label id of each train id (for submissions)."""
        return dataclasses.replace(super().describe(), label_ids=self.label_ids)

    def make_dataset(self, split: str, transforms: Callable[..., Any] | None) -> Dataset[Any]:
        samples = cityscapes_samples(Path(self.root), split)
        name = f"Cityscapes {split} ({self.root})"
        # evaluation reads the instance ids for iIoU, when every frame has them
        instances = transforms is None
        if instances:
            lacking = [s.id for s in samples if s.mask is not None and not instance_ids_file(s.mask).is_file()]
            if lacking:
                instances = False
                rank_zero_warn(
                    f"{name}: {len(lacking)} of {len(samples)} frames have no *_gtFine_instanceIds.png "
                    f"(e.g. {lacking[0]}): iIoU and category iIoU are not reported"
                )
        return CityscapesLabels(
            samples,
            self.num_classes,
            transforms,
            self.ignore_index,
            label_map=label_id_to_train_id(),
            raw_classes=NUM_LABEL_IDS,
            on_missing=self.on_missing,
            name=name,
            instances=instances,
        )


#: the 8 evaluated Cityscapes "thing" classes: label id and name (caravan and trailer are not evaluated)
CITYSCAPES_THINGS = ((24, "person"), (25, "rider"), (26, "car"), (27, "truck"), (28, "bus"), (31, "train"),
                     (32, "motorcycle"), (33, "bicycle"))  # fmt: skip


def cityscapes_instances(root: Path, split: str) -> dict[str, Any]:
    """The instances of a Cityscapes split in COCO form, from its ``*_gtFine_instanceIds.png``.

    A value ``v >= 1000`` is instance ``v % 1000`` of label id ``v // 1000``; of the 8 thing
    classes each becomes an annotation (compressed RLE, box and area from its mask). Pixels
    whose value is a thing's label id itself (groups such as "cars" too crowded to split)
    become a crowd annotation, ignored by COCO evaluation as Cityscapes' own ignores them.
    Category ids are the Cityscapes label ids.
    """
    from pycocotools import mask as mask_api

    things = dict(CITYSCAPES_THINGS)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_id, sample in enumerate(progress(cityscapes_samples(root, split), f"Cityscapes {split}: instances"), 1):
        path = root / "gtFine" / split / sample.image.parent.name / f"{sample.id}_gtFine_instanceIds.png"
        if not path.is_file():
            raise LightsegError(
                f"{path} does not exist: instance segmentation needs the *_gtFine_instanceIds.png files"
            )
        try:
            with Image.open(path) as img:
                raw = np.asarray(img).astype(np.int64)
        except OSError as err:
            raise LightsegError(f"cannot read label file {path}: {err}") from None
        height, width = raw.shape
        images.append({"id": image_id, "file_name": str(sample.image.relative_to(root)), "height": height,
                       "width": width})  # fmt: skip
        for value in np.unique(raw).tolist():
            label = value // 1000 if value >= 1000 else value
            if label not in things:
                continue
            mask = np.asfortranarray((raw == value).astype(np.uint8))
            rle = mask_api.encode(mask)
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": label,
                "segmentation": {"size": [height, width], "counts": rle["counts"].decode()},
                "bbox": [float(v) for v in mask_api.toBbox(rle)],
                "area": float(mask_api.area(rle)),
                "iscrowd": int(value < 1000),
            })  # fmt: skip
    categories = [{"id": label, "name": name, "supercategory": "thing"} for label, name in CITYSCAPES_THINGS]
    return {"images": images, "annotations": annotations, "categories": categories}


class CityscapesInstanceDataModule(DetectionDataModule):
    """Cityscapes fine instances of the 8 thing classes, for Mask R-CNN, from ``*_gtFine_instanceIds.png``.

    Each split's instance PNGs are read once at setup into COCO form (see
    :func:`cityscapes_instances`), which evaluation uses as ground truth; nothing is written
    to disk.

    Args:
        root: the folder holding ``leftImg8bit`` and ``gtFine``.
        train_split: split used for training.
        val_split: split used for validation.
        test_split: split used by ``lightseg test`` (``val``: the test labels are not public).
        augmentation: random horizontal flips in training (a :class:`~lightseg.datamodules.settings.FlipAugmentation`).
        train_skip_empty: leave frames without instances out of training.
        loader: how batches are loaded (a :class:`~lightseg.datamodules.settings.LoaderSettings`): 2 per batch.
        predict_dir: folder of images (or one image) for ``lightseg predict``.
        kwargs: the augmentation's and loader's settings in their older flat spelling (``batch_size=4``).
    """

    num_classes = len(CITYSCAPES_THINGS) + 1
    class_names = ("background", *(name for _, name in CITYSCAPES_THINGS))
    #: Boundary AP's band on Cityscapes (the official Boundary IoU API's 0.005 of the diagonal)
    evaluation_protocol = EvaluationProtocol(boundary_ratio=0.005)

    def __init__(
        self,
        root: str,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "val",
        augmentation: FlipAugmentation = FlipAugmentation(),  # noqa: B008 (frozen: one shared default is safe)
        train_skip_empty: bool = True,
        loader: LoaderSettings = DETECTION_LOADER,
        predict_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        augmentation = FlipAugmentation.with_flat(augmentation, kwargs)
        super().__init__(loader, predict_dir, **kwargs)
        self.root = Path(root)
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self.augmentation = augmentation
        self.train_skip_empty = train_skip_empty

    def split_names(self) -> list[str]:
        """The configured splits' names (``train_split``, ``val_split``, ``test_split``)."""
        return list(dict.fromkeys(self.splits.values()))

    @property
    def category_ids(self) -> list[int]:
        return [0, *(label for label, _ in CITYSCAPES_THINGS)]

    def make_dataset(self, split: str) -> COCODataset:
        """The COCO-form dataset of the split configured for ``split`` (``train``, ``val``, ``test``)."""
        stage, split = split, self.splits[split]
        annotations = COCOAnnotations(f"Cityscapes {split} ({self.root})", cityscapes_instances(self.root, split))
        train = stage == "train"
        transform = DetectionTransform(self.augmentation.hflip) if train else None
        return COCODataset(annotations, self.root, "instances", transform, skip_empty=train and self.train_skip_empty)
