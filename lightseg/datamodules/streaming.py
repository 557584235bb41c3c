"""Data modules that read a pack written by ``lightseg data pack``, from a folder or an object store.

The packed splits are read one record at a time (litdata's random access: from an object
store, only the record's bytes are fetched, so no disk the size of the data is needed) in the
order lightseg's samplers give: the training shuffle of the run's seed and epoch, each
sample's augmentation seed, every process its share under DDP, a resumed run going on from
the batch its checkpoint stopped at, and evaluation giving every sample to one process only
(:mod:`lightseg.datamodules.sampling`). Record ``i`` is sample ``i`` of the packed data
module, so a packed set trains and evaluates exactly as the data module it was packed from.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2

from lightseg.contract import DataDescription
from lightseg.datamodules.base import SplitDataModule
from lightseg.datamodules.coco_format import COCOAnnotations, COCODataset, Dropped, Kind
from lightseg.datamodules.detection import DetectionDataModule
from lightseg.datamodules.files import semantic_item
from lightseg.datamodules.io import read_image, read_mask
from lightseg.datamodules.packing import META, PACK_FORMAT, description_from_json, is_url, join, require_litdata
from lightseg.datamodules.settings import DETECTION_LOADER, FlipAugmentation, LoaderSettings, SemanticAugmentation
from lightseg.datamodules.transforms import DetectionTransform
from lightseg.errors import LightsegError, option
from lightseg.types import SemanticItem


class PackedRecords:
    """The records of one packed split, by index; each data loader worker opens the split itself."""

    def __init__(self, location: str, count: int, cache_dir: str | None = None) -> None:
        self.location = location
        self.count = count
        self.cache_dir = cache_dir
        self._dataset: Any = None
        self._pid = 0

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, Any]:
        # each process its own reader: a forked loader worker does not share its parent's (threads, handles)
        if self._dataset is None or self._pid != os.getpid():
            self._dataset = open_records(self.location, self.cache_dir)
            self._pid = os.getpid()
        return self._dataset[index]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_dataset": None}  # a worker opens its own reader

    def name_of(self, record: dict[str, Any], suffix: str = "") -> Path:
        """How messages call ``record``'s file: the split's location and the file's name in the source."""
        return Path(f"{self.location}/{record['name']}{suffix}")


def open_records(location: str, cache_dir: str | None = None) -> Any:
    """The litdata reader of the packed split at ``location``, with one-line errors."""
    litdata = require_litdata()
    if not is_url(location) and not (Path(location) / "index.json").is_file():
        raise LightsegError(f"{location} holds no packed split (no index.json); write one with lightseg data pack")
    try:
        return litdata.StreamingDataset(location, cache_dir=cache_dir)
    except Exception as err:
        raise LightsegError(f"cannot read the packed split at {location}: {err}") from None


def read_pack(source: str, cache_dir: str | None = None) -> dict[str, Any]:
    """The description of the pack at ``source`` (a folder or URL), checked."""
    if not is_url(source):
        folder = Path(source)
        if not folder.is_dir():
            raise LightsegError(f"source {source} is not a folder; write a pack there with lightseg data pack")
        if not (folder / META / "index.json").is_file():
            raise LightsegError(
                f"{source} is not a complete lightseg pack (no {META}/ description, written last): "
                "pack it again with lightseg data pack"
            )
    meta = json.loads(open_records(join(source, META), cache_dir)[0]["meta"])
    if meta.get("format") != PACK_FORMAT:
        raise LightsegError(
            f"{source} is a pack of format {meta.get('format')}; this lightseg reads format {PACK_FORMAT}: "
            "pack the data again with this version"
        )
    return meta


class PackedSegmentation(Dataset[SemanticItem]):
    """A packed semantic split: items as :class:`~lightseg.datamodules.files.SegmentationFiles` gives them."""

    def __init__(
        self,
        records: PackedRecords,
        num_classes: int,
        ignore_index: int = 255,
        transforms: Callable[..., Any] | None = None,
        name: str = "packed data",
    ) -> None:
        self.records = records
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.transforms = transforms
        self.name = name

    def __len__(self) -> int:
        return len(self.records)

    def _mask(self, record: dict[str, Any]) -> np.ndarray:
        where = self.records.name_of(record, " (mask)")
        return read_mask(where, self.num_classes, self.ignore_index, data=record["mask"])

    def read_mask(self, index: int) -> np.ndarray:
        """The untransformed ``[H,W]`` uint8 labels of sample ``index``."""
        return self._mask(self.records[index])

    def __getitem__(self, index: int) -> SemanticItem:
        record = self.records[index]
        image = read_image(self.records.name_of(record), record["image"])
        item = semantic_item(image, self._mask(record), self.transforms, str(record["id"]))
        if record["instances"]:
            with Image.open(io.BytesIO(record["instances"])) as img:
                item["instances"] = torch.from_numpy(np.asarray(img).astype(np.int32))
        return item


class PackedCOCODataset(COCODataset):
    """A packed instance or keypoint split: items as :class:`COCODataset` gives them."""

    def __init__(
        self,
        records: PackedRecords,
        annotations: COCOAnnotations,
        image_ids: list[int],
        kind: Kind,
        transform: Any = None,
    ) -> None:
        # not COCODataset's own set-up: the pack holds each image's usable annotations already
        self.records = records
        self.annotations = annotations
        self.images_dir = Path(records.location)
        self.kind = kind
        self.transform = transform
        self.dropped = Dropped()
        self.usable = {}
        self.skipped_empty = 0
        self.image_ids = image_ids

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        path = self.records.name_of(record)
        return self.make_item(
            read_image(path, record["image"]), json.loads(record["info"]), json.loads(record["annotations"]), path
        )


class _Pack:
    """A pack's description and the locations of its splits, shared by both streaming modules."""

    def __init__(self, source: str, cache_dir: str | None) -> None:
        self.source = source
        self.cache_dir = cache_dir

    @cached_property
    def meta(self) -> dict[str, Any]:
        return read_pack(self.source, self.cache_dir)

    def records(self, stage: str) -> tuple[PackedRecords, dict[str, Any]]:
        stages = self.meta["stages"]
        if stage not in stages:
            why = self.meta["missing"].get(stage, "")
            raise LightsegError(
                f"the pack {self.source} has no {stage} split (it has {', '.join(stages)})"
                + (f"; it was left out when packing: {why}" if why else "")
            )
        entry = stages[stage]
        return PackedRecords(join(self.source, entry["folder"]), int(entry["count"]), self.cache_dir), entry

    def description(self, batch_size: int, kind: str) -> DataDescription:
        if self.meta["kind"] != kind:
            reader = "Segmentation" if self.meta["kind"] == "semantic" else "Detection"
            raise LightsegError(
                f"{self.source} is a pack of {self.meta['kind']} data, not {kind}: "
                f"read it with Streaming{reader}DataModule"
            )
        return dataclasses.replace(description_from_json(self.meta["description"]), batch_size=batch_size)


class StreamingSegmentationDataModule(SplitDataModule):
    """A packed semantic data set (``lightseg data pack``) read from a folder or an object-store URL.

    The classes, their colours and the evaluation protocol (Cityscapes' iIoU and category
    scores, Boundary IoU's band) come from the pack; the training augmentation is this
    module's (as in every :class:`~lightseg.datamodules.base.SplitDataModule`). The splits are
    the pack's ``train``, ``val`` and ``test``.

    Args:
        source: the pack: a folder, or a URL litdata reads (``s3://bucket/prefix``, ``gs://...``).
        cache_dir: where litdata keeps what it downloads of a remote pack (``None``: its default).
        eval_size: resize evaluation images (and labels, nearest) so that the shorter side has
            this many pixels; ``packed``: as the packed data module did (COCO's 520), ``None``: never.
        augmentation: the training augmentation (a :class:`~lightseg.datamodules.settings.SemanticAugmentation`;
            ``lightseg data pack`` writes the packed module's into the config it prints).
        loader: how batches are loaded (a :class:`~lightseg.datamodules.settings.LoaderSettings`).
        ignore_index: the void label of the packed masks (the pack's; 255 unless packed otherwise).
        **kwargs: ``predict_dir``, ``predict_tile_above``, and the augmentation's and loader's settings in
            their older flat spelling.
    """

    def __init__(
        self,
        source: str,
        cache_dir: str | None = None,
        eval_size: int | Literal["packed"] | None = "packed",
        augmentation: SemanticAugmentation = SemanticAugmentation(),  # noqa: B008 (frozen: one shared default is safe)
        loader: LoaderSettings = LoaderSettings(),  # noqa: B008 (frozen: one shared default is safe)
        ignore_index: int = 255,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            "train", "val", "test", augmentation, "error", "none", loader, ignore_index=ignore_index, **kwargs
        )
        if isinstance(eval_size, int) and eval_size < 1:
            raise LightsegError(f"{option('data', 'eval_size')} must be a positive number of pixels, packed or null")
        self.pack = _Pack(source, cache_dir)
        self.eval_size = eval_size

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        """The packed data's classes."""
        return self.describe().num_classes

    @property
    def class_names(self) -> tuple[str, ...]:  # type: ignore[override]
        """The packed data's class names."""
        names = self.describe().class_names
        return names if names is not None else tuple(str(k) for k in range(self.num_classes))

    @property
    def class_colors(self) -> tuple[tuple[int, ...], ...] | None:
        """The packed data's class colours (``None``: it had none of its own)."""
        return self.describe().class_colors

    def describe(self) -> DataDescription:
        """The packed data module's description."""
        return self.pack.description(self.batch_size, "semantic")

    def split_names(self) -> list[str]:
        """The pack's splits."""
        return list(self.pack.meta["stages"])

    def make_dataset(self, split: str, transforms: Callable[..., Any] | None) -> Dataset[Any]:
        records, _ = self.pack.records(split)
        packed_ignore = self.pack.meta["ignore_index"]
        if packed_ignore != self.ignore_index:
            raise LightsegError(
                f"the masks of {self.pack.source} use {packed_ignore} as the ignore label, not {self.ignore_index}: "
                f"set {option('data', 'ignore_index')} {packed_ignore}"
            )
        size = self.pack.meta.get("eval_size") if self.eval_size == "packed" else self.eval_size
        if transforms is None and size is not None:
            transforms = v2.Resize(int(size), antialias=True)  # shorter side; masks nearest
        name = f"{split} of {self.pack.source}"
        return PackedSegmentation(records, self.num_classes, self.ignore_index, transforms, name)


class StreamingDetectionDataModule(DetectionDataModule):
    """A packed instance or keypoint data set (``lightseg data pack``) read from a folder or an object-store URL.

    Categories, keypoints, the flip pairs and the evaluation splits' annotation files come from
    the pack; the splits are its ``train``, ``val`` and ``test``.

    Args:
        source: the pack: a folder, or a URL litdata reads (``s3://bucket/prefix``, ``gs://...``).
        cache_dir: where litdata keeps what it downloads of a remote pack (``None``: its default).
        augmentation: random horizontal flips in training, keypoints swapped as the pack's flip pairs say
            (a :class:`~lightseg.datamodules.settings.FlipAugmentation`).
        loader: how batches are loaded (a :class:`~lightseg.datamodules.settings.LoaderSettings`): 2 per batch.
        predict_dir: folder of images (or one image) for ``lightseg predict``.
        **kwargs: the augmentation's and loader's settings in their older flat spelling.
    """

    def __init__(
        self,
        source: str,
        cache_dir: str | None = None,
        augmentation: FlipAugmentation = FlipAugmentation(),  # noqa: B008 (frozen: one shared default is safe)
        loader: LoaderSettings = DETECTION_LOADER,
        predict_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        augmentation = FlipAugmentation.with_flat(augmentation, kwargs)
        super().__init__(loader, predict_dir, **kwargs)
        self.pack = _Pack(source, cache_dir)
        self.augmentation = augmentation

    @property
    def packed_kind(self) -> Kind:
        """``instances`` or ``keypoints``, as packed (a semantic pack is refused by :meth:`describe`)."""
        self.describe()
        return self.pack.meta["kind"]

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        """Categories plus background."""
        return self.describe().num_classes

    @property
    def class_names(self) -> tuple[str, ...]:  # type: ignore[override]
        """``background`` and the category names, by label."""
        return self.describe().class_names or ()

    @property
    def category_ids(self) -> list[int]:
        return list(self.describe().category_ids)

    @property
    def keypoint_names(self) -> tuple[str, ...]:
        return self.describe().keypoint_names

    @property
    def skeleton(self) -> list[tuple[int, int]]:
        return [(int(a), int(b)) for a, b in self.describe().skeleton]

    def keypoint_flip_pairs(self) -> list[tuple[int, int]]:
        """The keypoint pairs a training flip swaps, as packed."""
        return [(int(a), int(b)) for a, b in self.pack.meta["flip_pairs"]]

    def describe(self) -> DataDescription:
        """The packed data module's description."""
        kind = self.pack.meta["kind"]
        return self.pack.description(self.batch_size, kind if kind != "semantic" else "instances")

    def split_names(self) -> list[str]:
        """The pack's splits."""
        return list(self.pack.meta["stages"])

    def make_dataset(self, split: str) -> COCODataset:
        records, entry = self.pack.records(split)
        packed = self.pack.meta["annotations"][entry["folder"]]
        annotations = COCOAnnotations(packed["source"], packed["data"])
        kind = self.packed_kind
        training = split == "train"
        transform = DetectionTransform(self.augmentation.hflip, self.keypoint_flip_pairs()) if training else None
        return PackedCOCODataset(records, annotations, [int(i) for i in entry["image_ids"]], kind, transform)
