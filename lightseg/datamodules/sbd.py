"""The Semantic Boundaries Dataset (Hariharan et al. 2011) and the standard VOC-aug train set."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import Dataset

from lightseg.datamodules.base import SplitDataModule
from lightseg.datamodules.files import OnMissing, Sample, SegmentationFiles, read_split
from lightseg.datamodules.settings import LoaderSettings, SemanticAugmentation
from lightseg.datamodules.voc import VOC_CLASSES, VOC_COLORS, VOCSegmentationDataset, resolve_voc_root, voc_sample
from lightseg.errors import LightsegError

SBD_LAYOUT = "benchmark_RELEASE/dataset/{img/<id>.jpg, cls/<id>.mat, train.txt, val.txt}"


def resolve_sbd_root(root: str | Path) -> Path:
    """SBD's ``dataset`` folder, given it, ``benchmark_RELEASE`` or the folder that holds that."""
    root = Path(root)
    for candidate in (root, root / "dataset", root / "benchmark_RELEASE" / "dataset"):
        if (candidate / "cls").is_dir() or (candidate / "train.txt").is_file():
            return candidate
    if not root.exists():
        raise LightsegError(f"data root {root} does not exist; expected the SBD layout {SBD_LAYOUT}")
    raise LightsegError(f"{root} holds no SBD data set; expected the layout {SBD_LAYOUT} below it")


def sbd_sample(sbd_root: Path, image_id: str) -> Sample:
    """The SBD files of ``image_id``."""
    return Sample(image_id, sbd_root / "img" / f"{image_id}.jpg", sbd_root / "cls" / f"{image_id}.mat")


class SBDSegmentationDataset(SegmentationFiles):
    """One split (``train``: 8,498, ``val``: 2,857 images) of SBD's class labels (``cls/*.mat``).

    Args:
        root: SBD's ``dataset`` folder, ``benchmark_RELEASE``, or the folder holding that.
        split: ``train`` or ``val`` (the files ``<split>.txt``).
        num_classes: 21 (VOC's classes).
        transforms: a joint transform of ``tv_tensors.Image`` and ``tv_tensors.Mask``.
        ignore_index: the void label.
        on_missing: ``error`` or ``skip`` for ids without image or ``.mat``.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        num_classes: int = len(VOC_CLASSES),
        transforms: Callable[..., Any] | None = None,
        ignore_index: int = 255,
        on_missing: OnMissing = "error",
    ) -> None:
        self.root = resolve_sbd_root(root)
        ids = read_split(self.root / f"{split}.txt", SBD_LAYOUT)
        samples = [sbd_sample(self.root, i) for i in ids]
        super().__init__(
            samples, num_classes, transforms, ignore_index, on_missing=on_missing, name=f"SBD {split} ({self.root})"
        )


#: the training pipeline of this data set's recipes
SBD_AUGMENTATION = SemanticAugmentation(crop_size=513, scale_range=(0.5, 2.0))
#: this data set's recipes' batch
SBD_LOADER = LoaderSettings(batch_size=16)


class SBDDataModule(SplitDataModule):
    """SBD class segmentation (21 VOC classes) from the release layout, labels read from ``.mat``.

    Args:
        root: SBD's ``dataset`` folder, ``benchmark_RELEASE``, or the folder holding that.
        augmentation: the training augmentation (a
            :class:`~lightseg.datamodules.settings.SemanticAugmentation`); ``crop_size``: training crop;
            ``scale_range``: random rescaling range in training.
        loader: how batches are loaded (a :class:`~lightseg.datamodules.settings.LoaderSettings`);
            ``batch_size``: samples per batch.
        **kwargs: splits, ``on_missing`` and the other options of :class:`~lightseg.datamodules.SplitDataModule`.

    """

    num_classes = len(VOC_CLASSES)
    class_names = VOC_CLASSES
    class_colors = VOC_COLORS
    expected_counts: ClassVar[dict[str, int]] = {"train": 8498, "val": 2857}

    def __init__(
        self,
        root: str,
        augmentation: SemanticAugmentation = SBD_AUGMENTATION,
        loader: LoaderSettings = SBD_LOADER,
        **kwargs: Any,
    ) -> None:
        super().__init__(augmentation=augmentation, loader=loader, **kwargs)
        self.root = root

    def make_dataset(self, split: str, transforms: Callable[..., Any] | None) -> Dataset[Any]:
        return SBDSegmentationDataset(
            self.root, split, self.num_classes, transforms, self.ignore_index, on_missing=self.on_missing
        )


def voc_aug_samples(voc_root: str | Path, sbd_root: str | Path) -> tuple[list[Sample], list[str]]:
    """The "trainaug" samples, (VOC train + SBD train + SBD val) minus VOC val, and the VOC val ids.

    A sample's label is VOC's PNG where VOC has one, SBD's ``.mat`` otherwise; its image is
    VOC's JPEG where present (SBD's images are VOC 2011 images), SBD's otherwise.
    """
    voc = resolve_voc_root(voc_root)
    sbd = resolve_sbd_root(sbd_root)
    voc_layout = "VOC2012/ImageSets/Segmentation/<split>.txt"
    voc_train = read_split(voc / "ImageSets" / "Segmentation" / "train.txt", voc_layout)
    voc_val = read_split(voc / "ImageSets" / "Segmentation" / "val.txt", voc_layout)
    sbd_ids = read_split(sbd / "train.txt", SBD_LAYOUT) + read_split(sbd / "val.txt", SBD_LAYOUT)
    excluded = set(voc_val)
    train_ids = sorted(set(voc_train).union(sbd_ids) - excluded)
    samples = []
    for image_id in train_ids:
        voc_files = voc_sample(voc, image_id)
        sbd_files = sbd_sample(sbd, image_id)
        image = voc_files.image if voc_files.image.is_file() else sbd_files.image
        mask = voc_files.mask if voc_files.mask is not None and voc_files.mask.is_file() else sbd_files.mask
        samples.append(Sample(image_id, image, mask))
    return samples, voc_val


class VOCAugDataModule(SplitDataModule):
    """The standard VOC "trainaug" set: 10,582 training images from VOC 2012 and SBD, VOC 2012 val.

    train = (VOC train + SBD train + SBD val) minus VOC val, with VOC's labels where they exist
    and SBD's otherwise; val (and test) = VOC 2012 val (1,449). The counts are logged, and a
    val id in train stops the run (a leak would inflate every number).

    Args:
        voc_root: ``VOC2012``, ``VOCdevkit`` or the folder that holds ``VOCdevkit``.
        sbd_root: SBD's ``dataset`` folder, ``benchmark_RELEASE``, or the folder holding that.
        augmentation: the training augmentation (a
            :class:`~lightseg.datamodules.settings.SemanticAugmentation`); ``crop_size``: training crop;
            ``scale_range``: random rescaling range in training.
        loader: how batches are loaded (a :class:`~lightseg.datamodules.settings.LoaderSettings`);
            ``batch_size``: samples per batch.
        **kwargs: ``val_split`` / ``test_split`` (VOC splits), ``on_missing`` and the other options of
            :class:`~lightseg.datamodules.SplitDataModule`.

    """

    num_classes = len(VOC_CLASSES)
    class_names = VOC_CLASSES
    class_colors = VOC_COLORS
    expected_counts: ClassVar[dict[str, int]] = {"trainaug": 10582, "val": 1449}

    def __init__(
        self,
        voc_root: str,
        sbd_root: str,
        augmentation: SemanticAugmentation = SBD_AUGMENTATION,
        loader: LoaderSettings = SBD_LOADER,
        **kwargs: Any,
    ) -> None:
        super().__init__(train_split="trainaug", augmentation=augmentation, loader=loader, **kwargs)
        self.voc_root = voc_root
        self.sbd_root = sbd_root

    def make_dataset(self, split: str, transforms: Callable[..., Any] | None) -> Dataset[Any]:
        if split != "trainaug":
            return VOCSegmentationDataset(
                self.voc_root, split, self.num_classes, transforms, self.ignore_index, on_missing=self.on_missing
            )
        samples, val_ids = voc_aug_samples(self.voc_root, self.sbd_root)
        leaked = sorted({s.id for s in samples} & set(val_ids))
        if leaked:
            raise LightsegError(f"VOC-aug: {len(leaked)} VOC val ids are in the training set (e.g. {leaked[:3]})")
        from_voc = sum(1 for s in samples if s.mask is not None and s.mask.suffix == ".png")
        rank_zero_info(
            f"VOC-aug: {len(samples)} training images ({from_voc} labelled by VOC, {len(samples) - from_voc} by SBD), "
            f"{len(val_ids)} val images (VOC 2012 val)"
        )
        return SegmentationFiles(
            samples, self.num_classes, transforms, self.ignore_index, on_missing=self.on_missing, name="VOC-aug train"
        )
