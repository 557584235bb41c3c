"""Cityscapes panoptic: the files cityscapesScripts' ``createPanopticImgs`` writes, or the same built on the fly.

``createPanopticImgs`` turns each ``*_gtFine_instanceIds.png`` into a COCO panoptic PNG and
``gtFine/cityscapes_panoptic_{split}.json``: a pixel's segment id is its instance id; ids
below 1000 are a class's region (a crowd where the class has instances), ids ``class * 1000 +
k`` the instances; classes not evaluated are left void. Where that JSON is absent, the same
segments are read from the instance ids directly, so the raw download trains and evaluates.
The 19 evaluated classes are the categories (their label ids, or train ids where the
``_trainId`` file is the one present), 8 of them things.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torchvision.datasets import Cityscapes

from lightseg.datamodules.cityscapes import read_instance_ids
from lightseg.datamodules.coco_panoptic import PanopticDataModule
from lightseg.datamodules.panoptic_files import (
    COCOPanopticDataset,
    PanopticAnnotations,
    PanopticCategories,
    PanopticSegment,
)
from lightseg.datamodules.settings import DETECTION_LOADER, CropAugmentation, LoaderSettings
from lightseg.datamodules.transforms import train_transforms
from lightseg.errors import LightsegError

#: the evaluated classes in train-id order, as createPanopticImgs lists its categories
EVALUATED = sorted((c for c in Cityscapes.classes if not c.ignore_in_eval), key=lambda c: c.train_id)
BY_ID = {c.id: c for c in Cityscapes.classes}
LAYOUT = (
    "{leftImg8bit/<split>/<city>/<frame>_leftImg8bit.png, gtFine/<split>/<city>/<frame>_gtFine_instanceIds.png "
    "or gtFine/cityscapes_panoptic_<split>.json with its PNG folder}"
)


def cityscapes_categories(train_ids: bool = False) -> PanopticCategories:
    """The 19 evaluated classes as createPanopticImgs' categories (label ids, or train ids)."""
    return PanopticCategories(
        tuple(c.train_id if train_ids else c.id for c in EVALUATED),
        tuple(c.name for c in EVALUATED),
        tuple(c.has_instances for c in EVALUATED),
        tuple(c.color for c in EVALUATED),
    )


def instance_segments(ids: np.ndarray, train_ids: bool = False) -> list[PanopticSegment]:
    """The segments createPanopticImgs makes of an instance-id map (ascending ids, classes not evaluated left out)."""
    segments = []
    for value in np.unique(ids).tolist():
        label = BY_ID.get(value if value < 1000 else value // 1000)
        if label is None or label.ignore_in_eval:
            continue
        crowd = value < 1000 and label.has_instances
        segments.append(PanopticSegment(int(value), label.train_id if train_ids else label.id, crowd))
    return segments


class InstanceIdAnnotations(PanopticAnnotations):
    """Cityscapes frames read from ``*_gtFine_instanceIds.png`` as createPanopticImgs would convert them.

    Args:
        root: the folder holding ``gtFine``.
        split: ``train``, ``val`` or ``test``.
    """

    def __init__(self, root: Path, split: str) -> None:
        folder = root / "gtFine" / split
        self.source = folder
        self.png_folder = folder
        self.categories = cityscapes_categories()
        files = sorted(folder.glob("*/*_gtFine_instanceIds.png"))
        if not files:
            raise LightsegError(
                f"{folder} holds no */*_gtFine_instanceIds.png and {root / 'gtFine'} no cityscapes_panoptic_{split}"
                f".json; expected the Cityscapes layout {LAYOUT}"
            )
        self.items = []
        for path in files:
            frame = path.name.removesuffix("_gtFine_instanceIds.png")
            image = {"id": frame, "file_name": f"{path.parent.name}/{frame}_leftImg8bit.png"}
            self.items.append((image, {"image_id": frame, "file_name": f"{path.parent.name}/{path.name}"}))

    def segments(self, index: int) -> list[PanopticSegment]:
        """The segments of item ``index`` (read from its instance ids)."""
        return self.read_segment_map(index)[1]

    def read_segment_map(self, index: int) -> tuple[np.ndarray, list[PanopticSegment]]:
        """Item ``index``'s segment map (segments numbered 1..N by ascending id, 0 void) and segments."""
        _, annotation = self.items[index]
        ids = read_instance_ids(self.png_folder / annotation["file_name"])
        segments = instance_segments(ids)
        lookup = np.zeros(int(ids.max()) + 1, dtype=np.int32)
        for number, segment in enumerate(segments, start=1):
            lookup[segment.id] = number
        return lookup[ids], segments


class CityscapesPanopticDataModule(PanopticDataModule):
    """Cityscapes fine as panoptic data: 19 classes (11 stuff, 8 things), 2,975 train / 500 val frames.

    Each split reads ``gtFine/cityscapes_panoptic_{split}.json`` with its PNG folder where
    cityscapesScripts' ``createPanopticImgs`` wrote them (``..._trainId.json`` too), and otherwise
    builds the same segments from ``gtFine/{split}/*/*_gtFine_instanceIds.png`` on the fly.
    Images are ``leftImg8bit/{split}/{city}/{frame}_leftImg8bit.png``. The test split's annotations
    are not public: ``test_split`` defaults to ``val``.

    Args:
        root: the folder holding ``leftImg8bit`` and ``gtFine``.
        test_split: the split ``lightseg test`` reads.
        augmentation: random scale, crop and flip in training (a
            :class:`~lightseg.datamodules.settings.CropAugmentation`; none but the flip by default).
        loader: how batches are loaded (a :class:`~lightseg.datamodules.settings.LoaderSettings`).
        predict_dir: folder of images (or one image) for ``lightseg predict``.
        kwargs: the augmentation's and loader's settings in their older flat spelling (``batch_size=4``).
    """

    def __init__(
        self,
        root: str,
        test_split: str = "val",
        augmentation: CropAugmentation = CropAugmentation(),  # noqa: B008 (frozen: one shared default is safe)
        loader: LoaderSettings = DETECTION_LOADER,
        predict_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        augmentation = CropAugmentation.with_flat(augmentation, kwargs)
        super().__init__(loader, predict_dir, **kwargs)
        self.root = Path(root)
        self.test_split = test_split
        self.augmentation = augmentation
        self.crop_size, self.scale_range, self.hflip = (
            augmentation.crop_size,
            augmentation.scale_range,
            augmentation.hflip,
        )
        self._annotations: dict[str, PanopticAnnotations] = {}

    def annotations(self, split: str) -> PanopticAnnotations:
        """The panoptic annotations of ``split`` (``train``, ``val`` or ``test``), read once."""
        folder = self.test_split if split == "test" else split
        if folder not in self._annotations:
            if not (self.root / "leftImg8bit" / folder).is_dir():
                raise LightsegError(
                    f"{self.root / 'leftImg8bit' / folder} does not exist; expected the Cityscapes layout {LAYOUT}"
                )
            files = [self.root / "gtFine" / f"cityscapes_panoptic_{folder}{suffix}.json" for suffix in ("", "_trainId")]
            json_file = next((f for f in files if f.is_file()), None)
            if json_file is None:
                self._annotations[folder] = InstanceIdAnnotations(self.root, folder)
            else:
                annotations = PanopticAnnotations(json_file)
                for image, _ in annotations.items:
                    # the image is found by its frame id: the JSON's file_name lacks the city folder, and the
                    # script names it <frame>_gtFine_leftImg8bit.png, a file the download does not have
                    frame = str(image["id"])
                    image["file_name"] = f"{frame.split('_')[0]}/{frame}_leftImg8bit.png"
                self._annotations[folder] = annotations
        return self._annotations[folder]

    @property
    def categories(self) -> PanopticCategories:
        """The 19 evaluated classes (with the ids of the JSON where one is read)."""
        train_ids = (self.root / "gtFine" / "cityscapes_panoptic_val_trainId.json").is_file() and not (
            self.root / "gtFine" / "cityscapes_panoptic_val.json"
        ).is_file()
        return cityscapes_categories(train_ids)

    def make_dataset(self, split: str) -> COCOPanopticDataset:
        annotations = self.annotations(split)
        if annotations.categories.ids != self.categories.ids:
            raise LightsegError(
                f"{annotations.source} lists other categories than Cityscapes' 19 evaluated classes; write it with "
                "cityscapesScripts' createPanopticImgs"
            )
        transforms = None
        if split == "train":
            a = self.augmentation
            transforms = train_transforms(a.crop_size, a.scale_range, a.hflip, ignore_index=0)
        folder = self.test_split if split == "test" else split
        return COCOPanopticDataset(self.root / "leftImg8bit" / folder, annotations, transforms)


__all__ = ["CityscapesPanopticDataModule", "InstanceIdAnnotations", "cityscapes_categories", "instance_segments"]
