"""The base data modules (loaders, splits, the training pipeline) and the padding collate."""

from __future__ import annotations

import functools
import os
from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from lightseg.contract import DataDescription, EvaluationProtocol
from lightseg.datamodules.files import CheckSamples, OnMissing, SegmentationFiles
from lightseg.datamodules.predict_folder import Collate, ImageFolderDataset, predict_collate
from lightseg.datamodules.sampling import (
    ResumableLoader,
    SeededSamples,
    TrainingOrder,
    batches_done_in_epoch,
    evaluation_sampler,
    run_seed,
)
from lightseg.datamodules.settings import (
    LoaderSettings,
    SemanticAugmentation,
    Workers,
    in_process_loader,
    no_other_arguments,
)
from lightseg.datamodules.transforms import train_transforms
from lightseg.errors import LightsegError, option
from lightseg.groups import SettingsGroup

MAX_AUTO_WORKERS = 8


def resolve_workers(value: Workers) -> int:
    """The worker count ``value`` stands for; ``auto`` never starts more workers than there are cores."""
    if value == "auto":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return min(cores, MAX_AUTO_WORKERS)
    if not isinstance(value, int) or value < 0:
        raise LightsegError(f"num_workers must be >= 0 (0 loads in the main process) or auto, got {value!r}")
    return value


def pad_collate(items: Sequence[dict[str, Any]], ignore_index: int = 255) -> dict[str, Any]:
    """Stack items, padding images with 0 and masks with ``ignore_index`` at the bottom/right.

    Val/test images keep their native size; padded pixels never reach a metric or a loss.
    Instance ids are padded with 0 (no instance). Non-tensor fields (ids, paths, sizes)
    become lists; ``size`` holds every image's ``(H, W)`` before padding.
    """
    height = max(item["image"].shape[-2] for item in items)
    width = max(item["image"].shape[-1] for item in items)
    batch: dict[str, Any] = {}
    if "size" not in items[0]:  # each image's (H, W) before padding, for exact evaluation
        batch["size"] = [(int(item["image"].shape[-2]), int(item["image"].shape[-1])) for item in items]
    for key in items[0]:
        values = [item[key] for item in items]
        if key == "image":
            batch[key] = torch.stack([_pad(v, height, width, 0) for v in values])
        elif key == "mask":
            batch[key] = torch.stack([_pad(v, height, width, ignore_index) for v in values])
        elif key == "instances":
            batch[key] = torch.stack([_pad(v, height, width, 0) for v in values])
        else:
            batch[key] = values
    return batch


def _pad(tensor: torch.Tensor, height: int, width: int, value: float) -> torch.Tensor:
    dh, dw = height - tensor.shape[-2], width - tensor.shape[-1]
    return F.pad(tensor, (0, dw, 0, dh), value=value) if dh or dw else tensor


#: the loader of a data module built in Python with no settings: in this process, one batch of 8 at a time
PLAIN_LOADER = in_process_loader(8)


class BaseDataModule(LightningDataModule):
    """Loaders and the predict folder, shared by the semantic and the detection data modules.

    Subclasses fill ``train_dataset``, ``val_dataset`` and ``test_dataset`` in ``setup`` and
    give their batch layout in :meth:`collate`. Under DDP, validation and test give every
    sample to exactly one process (no padding), so metrics do not depend on the process count;
    a process may get none.

    Args:
        loader: how batches are loaded (batch size, workers, pinning; a
            :class:`~lightseg.datamodules.settings.LoaderSettings`), e.g. ``loader: {batch_size: 16}``.
        predict_dir: folder of images (or one image) for ``lightseg predict``.
        kwargs: the loader's settings in their older flat spelling (``batch_size=16``), read into ``loader``.
    """

    num_classes: int
    class_names: tuple[str, ...]
    #: images per split in the official release, by split name (``lightseg data check`` compares)
    expected_counts: ClassVar[dict[str, int]] = {}
    #: drop the last incomplete training batch (a lone image breaks BatchNorm in pooled heads)
    drop_last_train: bool = True
    #: what the validation score does not mean for this data (printed in the run's summary), if anything
    score_caveat: str | None = None
    #: what evaluation reports besides the confusion-matrix metrics (``None``: the default)
    evaluation_protocol: ClassVar[EvaluationProtocol | None] = None
    #: the training augmentation's settings group (``None``: a module without one)
    augmentation: SettingsGroup | None = None

    def __init__(
        self,
        loader: LoaderSettings = PLAIN_LOADER,
        predict_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        loader = LoaderSettings.with_flat(loader, kwargs)
        no_other_arguments(self, kwargs)
        super().__init__()
        #: how batches are loaded (see ``loader``)
        self.loader = loader
        self.batch_size = loader.batch_size
        self.predict_batch_size = loader.predict_batch_size
        self.num_workers = resolve_workers(loader.num_workers)
        self.pin_memory = torch.cuda.is_available() if loader.pin_memory == "auto" else bool(loader.pin_memory)
        self.persistent_workers = loader.persistent_workers and self.num_workers > 0
        self.predict_dir = predict_dir
        #: predict TIFF images with a side longer than this in tiles (None: never; the semantic modules set it)
        self.predict_tile_above: int | None = None
        #: the 1-based bands of every image read as the channels (None: RGB; the raster module sets it)
        self.bands: tuple[int, ...] | None = None
        self.train_dataset: Dataset[Any] | None = None
        self.val_dataset: Dataset[Any] | None = None
        self.test_dataset: Dataset[Any] | None = None
        self.predict_dataset: Dataset[Any] | None = None
        # fewer evaluation samples than processes leaves a process none (EvaluationShardSampler)
        self.allow_zero_length_dataloader_with_multiple_devices = True

    @abstractmethod
    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Make a batch of dataset items."""

    @property
    def class_colors(self) -> Sequence[tuple[int, ...]] | None:
        """Each class's RGB colour where the data set has its own (``None``: lightseg's generated palette)."""
        return None

    def split_names(self) -> list[str]:
        """The names of the data's splits as its files call them (what ``lightseg data check`` reads)."""
        return ["train", "val", "test"]

    def describe(self) -> DataDescription:
        """What the tasks, callbacks, export and the CLI know of this data (see :mod:`lightseg.contract`)."""
        colors = self.class_colors
        return DataDescription(
            self.num_classes,
            tuple(self.class_names),
            tuple(tuple(c) for c in colors) if colors is not None else None,
            self.evaluation_protocol,
            self.batch_size,
            score_caveat=self.score_caveat,
            in_channels=len(self.bands) if self.bands else 3,
            bands=self.bands,
        )

    def setup_named_splits(self, stage: str, make: Callable[[str], Dataset[Any]]) -> None:
        """``setup`` of a data module whose datasets ``make(split)`` builds by name (``train``, ``val``, ``test``)."""
        if stage == "fit":
            self.train_dataset = make("train")
        if stage in ("fit", "validate"):
            self.val_dataset = make("val")
        if stage == "test":
            self.test_dataset = make("test")
        if stage == "predict":
            self.setup_predict()

    def setup_predict(self) -> None:
        """Fill ``predict_dataset`` from ``predict_dir``."""
        if self.predict_dir is None:
            raise LightsegError(
                f"lightseg predict needs a folder of images: pass {option('data', 'predict_dir')} <folder>"
            )
        self.predict_dataset = ImageFolderDataset(self.predict_dir, self.predict_tile_above, self.bands)

    def _loader(
        self,
        dataset: Dataset[Any] | None,
        name: str,
        shuffle: bool = False,
        batch_size: int | None = None,
        collate: Collate | None = None,
    ) -> DataLoader[Any]:
        if dataset is None:
            raise LightsegError(f"{type(self).__name__} has no {name} split (setup() did not create it)")
        size = len(dataset)  # type: ignore[arg-type]
        if size == 0:
            source = getattr(dataset, "name", None) or getattr(getattr(dataset, "annotations", None), "source", None)
            raise LightsegError(
                f"the {name} split of {type(self).__name__} is empty"
                + (f" ({source})" if source else "")
                + ": no usable sample in it (an empty split file, or every sample left out); "
                "check the split and its files"
            )
        batch_size = batch_size or self.batch_size
        options: dict[str, Any] = {
            "batch_size": batch_size,
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.persistent_workers,
            "collate_fn": collate or self.collate,
        }
        if not shuffle:
            shared = dataset.every_process if isinstance(dataset, ImageFolderDataset) else None
            return DataLoader(dataset, sampler=evaluation_sampler(dataset, shared), **options)
        seed = run_seed()
        order = TrainingOrder(dataset, seed, batch_size, lambda: batches_done_in_epoch(self.trainer))
        return ResumableLoader(
            SeededSamples(dataset),
            sampler=order,
            drop_last=self.drop_last_train and size > batch_size,
            # worker seeds from a generator of the loader's own, not the global stream the model draws from
            generator=torch.Generator().manual_seed(seed),
            **options,
        )

    def train_dataloader(self) -> DataLoader[Any]:
        return self._loader(self.train_dataset, "train", shuffle=True)

    def val_dataloader(self) -> DataLoader[Any]:
        return self._loader(self.val_dataset, "val")

    def test_dataloader(self) -> DataLoader[Any]:
        return self._loader(self.test_dataset, "test")

    def predict_dataloader(self) -> DataLoader[Any]:
        if self.predict_dataset is None:
            self.setup_predict()
        collate = None if self.predict_tile_above is None else functools.partial(predict_collate, collate=self.collate)
        return self._loader(self.predict_dataset, "predict", batch_size=self.predict_batch_size, collate=collate)


class SemanticDataModule(BaseDataModule):
    """Base of the semantic data modules: loaders, padding collate, predict folder.

    Subclasses set :attr:`num_classes` and :attr:`class_names` and fill ``train_dataset``,
    ``val_dataset`` and ``test_dataset`` in ``setup``. Items are
    ``{"image": float32 [3,H,W] in [0,1], "mask": int64 [H,W]}``; val/test items are
    unaugmented at native resolution.

    Args:
        loader: how batches are loaded (a :class:`~lightseg.datamodules.settings.LoaderSettings`).
        predict_dir: folder of images (or one image) for ``lightseg predict``.
        ignore_index: mask value that never counts (void, padding).
        predict_tile_above: ``lightseg predict`` reads a TIFF / GeoTIFF image with a side longer
            than this window by window and writes its labels band by band (a tiled GeoTIFF), in
            memory set by the window, not the image (docs/inference.md, "Large images").
        kwargs: the loader's settings in their older flat spelling.
    """

    #: what evaluation reports besides the confusion-matrix metrics (Boundary IoU at 0.02 of the diagonal)
    evaluation_protocol: ClassVar[EvaluationProtocol] = EvaluationProtocol()

    def __init__(
        self,
        loader: LoaderSettings = PLAIN_LOADER,
        predict_dir: str | None = None,
        ignore_index: int = 255,
        predict_tile_above: int = 4096,
        **kwargs: Any,
    ) -> None:
        super().__init__(loader, predict_dir, **kwargs)
        if predict_tile_above < 1:
            raise LightsegError(f"{option('data', 'predict_tile_above')} must be >= 1 pixel, got {predict_tile_above}")
        self.ignore_index = ignore_index
        self.predict_tile_above: int | None = predict_tile_above

    def collate(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Images and masks padded to the largest in the batch (see :func:`pad_collate`)."""
        return pad_collate(items, self.ignore_index)

    def class_pixel_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """Per class: labelled pixels in the training masks, and total pixels of the images it occurs in.

        Reads the untransformed masks (the dataset's ``read_mask``); used for median-frequency
        class weights.
        """
        dataset = self.train_dataset
        if dataset is None or not hasattr(dataset, "read_mask"):
            raise LightsegError(f"{type(self).__name__} cannot provide training masks for class statistics")
        class_pixels = np.zeros(self.num_classes, dtype=np.int64)
        image_pixels = np.zeros(self.num_classes, dtype=np.int64)
        for index in range(len(dataset)):  # type: ignore[arg-type]
            mask = dataset.read_mask(index)
            counts = np.bincount(mask[mask != self.ignore_index].ravel(), minlength=self.num_classes)
            class_pixels += counts[: self.num_classes]
            image_pixels[counts[: self.num_classes] > 0] += mask.size
        return class_pixels, image_pixels


class SplitDataModule(SemanticDataModule):
    """A semantic data module whose train/val/test datasets come from named splits.

    Subclasses implement :meth:`make_dataset`; this class builds the training pipeline
    (the DeepLab recipe: random scale, pad to the crop with image 0 / mask ``ignore_index``,
    random crop, flips, optional photometric distortion) and keeps val/test unaugmented at
    native resolution.

    Args:
        train_split: split used for training.
        val_split: split used for validation.
        test_split: split used by ``lightseg test``.
        augmentation: the training pipeline (crop, scale, flips, photometric distortion; a
            :class:`~lightseg.datamodules.settings.SemanticAugmentation`), e.g. ``augmentation:
            {crop_size: 513, scale_range: [0.5, 2.0]}``.
        on_missing: ``error`` names samples whose files are missing; ``skip`` leaves them out.
        check_samples: before a run, check the training and validation samples: ``headers``
            (every image and mask readable and of the same size), ``full`` (also every mask's
            labels), ``auto`` (full up to 1,000 samples, headers above) or ``none``.
        loader: how batches are loaded (a :class:`~lightseg.datamodules.settings.LoaderSettings`), e.g.
            ``loader: {batch_size: 16, num_workers: 4}``.
        kwargs: ``predict_dir``, ``ignore_index``, ``predict_tile_above`` (see
            :class:`SemanticDataModule`), and the augmentation's and loader's settings in their older
            flat spelling (``crop_size=513``, ``batch_size=16``), read into the groups.
    """

    def __init__(
        self,
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "val",
        augmentation: SemanticAugmentation = SemanticAugmentation(),  # noqa: B008 (frozen: one shared default is safe)
        on_missing: OnMissing = "error",
        check_samples: CheckSamples = "auto",
        loader: LoaderSettings = LoaderSettings(),  # noqa: B008 (frozen: one shared default is safe)
        **kwargs: Any,
    ) -> None:
        augmentation = SemanticAugmentation.with_flat(augmentation, kwargs)
        super().__init__(loader, **kwargs)
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self.on_missing: OnMissing = on_missing
        self.check_samples: CheckSamples = check_samples
        #: the training augmentation (``lightseg data pack`` carries it to the packed set's config)
        self.augmentation: SemanticAugmentation = augmentation
        a = augmentation
        self.train_transform = train_transforms(
            a.crop_size, a.scale_range, a.hflip, a.vflip, a.photometric, self.ignore_index
        )

    def split_names(self) -> list[str]:
        """The configured splits' names (``train_split``, ``val_split``, ``test_split``)."""
        return list(dict.fromkeys(self.splits.values()))

    @abstractmethod
    def make_dataset(self, split: str, transforms: Callable[..., Any] | None) -> Dataset[Any]:
        """The dataset of ``split`` with ``transforms`` (``None`` for evaluation)."""

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.train_dataset = self.make_dataset(self.splits["train"], self.train_transform)
        if stage in ("fit", "validate"):
            self.val_dataset = self.make_dataset(self.splits["val"], None)
        if stage == "test":
            self.test_dataset = self.make_dataset(self.splits["test"], None)
        if stage == "predict":
            self.setup_predict()
        for dataset in (self.train_dataset, self.val_dataset, self.test_dataset):
            if isinstance(dataset, SegmentationFiles):
                dataset.check_masks_are_not_binary_255()
                dataset.check_samples(self.check_samples)
