"""PASCAL VOC 2012 segmentation, read from the layout as downloaded."""

from __future__ import annotations

import urllib.error
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from torch.utils.data import Dataset

from lightseg.colors import voc_colormap
from lightseg.datamodules.base import SplitDataModule
from lightseg.datamodules.files import OnMissing, Sample, SegmentationFiles, read_split
from lightseg.datamodules.settings import LoaderSettings, SemanticAugmentation
from lightseg.errors import LightsegError

#: the VOC palette's colours of the 21 classes, used in every picture of a VOC data set
VOC_COLORS = tuple(tuple(int(v) for v in c) for c in voc_colormap(21))
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip

VOC_LAYOUT = "VOCdevkit/VOC2012/{JPEGImages/<id>.jpg, SegmentationClass/<id>.png, ImageSets/Segmentation/<split>.txt}"


def resolve_voc_root(root: str | Path) -> Path:
    """The ``VOC2012`` folder, given it, ``VOCdevkit`` or the folder that holds ``VOCdevkit``."""
    root = Path(root)
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir() or (candidate / "ImageSets").is_dir():
            return candidate
    if not root.exists():
        raise LightsegError(f"data root {root} does not exist; expected the layout {VOC_LAYOUT}")
    raise LightsegError(f"{root} holds no VOC 2012 data set; expected the layout {VOC_LAYOUT} below it")


class VOCSegmentationDataset(SegmentationFiles):
    """One split of a folder in the VOC 2012 layout (also the embedded shapes set's layout).

    Masks are ``SegmentationClass/<id>.png``: palette PNGs read as indices; RGB masks mapped
    through the VOC colormap; 255 is void.

    Args:
        root: ``VOC2012`` itself, ``VOCdevkit``, or the folder holding ``VOCdevkit``.
        split: ``ImageSets/Segmentation/<split>.txt`` (``train``, ``val``, ``trainval``).
        num_classes: classes in the masks, background included.
        transforms: a joint transform of ``tv_tensors.Image`` and ``tv_tensors.Mask``.
        ignore_index: the void label.
        on_missing: ``error`` or ``skip`` for ids without image or mask.
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
        self.root = resolve_voc_root(root)
        self.split = split
        ids = read_split(self.root / "ImageSets" / "Segmentation" / f"{split}.txt", VOC_LAYOUT)
        samples = [voc_sample(self.root, i) for i in ids]
        super().__init__(
            samples, num_classes, transforms, ignore_index, on_missing=on_missing, name=f"VOC {split} ({self.root})"
        )


def voc_sample(voc_root: Path, image_id: str) -> Sample:
    """The VOC 2012 files of ``image_id``."""
    return Sample(
        image_id, voc_root / "JPEGImages" / f"{image_id}.jpg", voc_root / "SegmentationClass" / f"{image_id}.png"
    )


#: the training pipeline of this data set's recipes
VOC_AUGMENTATION = SemanticAugmentation(crop_size=513, scale_range=(0.5, 2.0))
#: this data set's recipes' batch
VOC_LOADER = LoaderSettings(batch_size=16)


class VOCDataModule(SplitDataModule):
    """PASCAL VOC 2012 segmentation (21 classes, 1,464 train / 1,449 val images).

    Defaults follow the DeepLab recipe: random scale 0.5-2.0, pad and random crop 513,
    horizontal flip; val/test at native resolution.

    Args:
        root: ``VOC2012``, ``VOCdevkit`` or the folder that holds ``VOCdevkit``.
        download: fetch and extract VOCtrainval_11-May-2012.tar (2 GB) into ``root`` with
            torchvision's downloader if the data are not there.
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
    expected_counts: ClassVar[dict[str, int]] = {"train": 1464, "val": 1449, "trainval": 2913}

    def __init__(
        self,
        root: str,
        download: bool = False,
        augmentation: SemanticAugmentation = VOC_AUGMENTATION,
        loader: LoaderSettings = VOC_LOADER,
        **kwargs: Any,
    ) -> None:
        super().__init__(augmentation=augmentation, loader=loader, **kwargs)
        self.root = root
        self.download = download

    def prepare_data(self) -> None:
        if self.download:
            download_voc(Path(self.root))

    def make_dataset(self, split: str, transforms: Callable[..., Any] | None) -> Dataset[Any]:
        return VOCSegmentationDataset(
            self.root, split, self.num_classes, transforms, self.ignore_index, on_missing=self.on_missing
        )


def download_voc(root: Path) -> None:
    """Download and extract VOC 2012 trainval into ``root`` unless it is already there."""
    try:
        resolve_voc_root(root)
        return
    except LightsegError:
        pass
    from torchvision.datasets import VOCSegmentation
    from torchvision.datasets.voc import DATASET_YEAR_DICT

    url = DATASET_YEAR_DICT["2012"]["url"]
    try:
        VOCSegmentation(str(root), year="2012", image_set="train", download=True)
    except (urllib.error.URLError, OSError) as err:
        raise LightsegError(
            f"could not download VOC 2012 from {url} ({err}). Offline? Download VOCtrainval_11-May-2012.tar "
            f"elsewhere and extract it into {root}, so that {root / 'VOCdevkit' / 'VOC2012' / 'JPEGImages'} exists"
        ) from None
