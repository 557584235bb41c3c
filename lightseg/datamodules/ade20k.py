"""ADE20K (the MIT Scene Parsing Benchmark, SceneParse150), read from ``ADEChallengeData2016`` as downloaded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch.utils.data import Dataset

from lightseg.datamodules.base import SplitDataModule
from lightseg.datamodules.files import Sample, SegmentationFiles
from lightseg.datamodules.settings import LoaderSettings, SemanticAugmentation
from lightseg.errors import LightsegError

#: the 150 evaluated classes in label order (value 1 of the annotation PNGs is ``wall``), as the
#: benchmark's ``objectInfo150`` names them (its first name of each)
ADE20K_CLASSES = (
    "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
    "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
    "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
    "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
    "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand", "path",
    "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge", "bookcase",
    "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove", "palm",
    "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus", "towel", "light",
    "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver", "airplane",
    "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle", "buffet", "poster",
    "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything", "swimming pool", "stool",
    "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven", "ball", "food", "step", "tank",
    "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher", "screen", "blanket", "sculpture",
    "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan", "pier", "crt screen", "plate", "monitor",
    "bulletin board", "shower", "radiator", "glass", "clock", "flag",
)  # fmt: skip
ADE20K_LAYOUT = "ADEChallengeData2016/{images,annotations}/{training,validation}/ADE_<split>_<n>.{jpg,png}"
#: lightseg's split names and the release's folder names
ADE20K_FOLDERS = {"train": "training", "val": "validation", "training": "training", "validation": "validation"}


def resolve_ade20k_root(root: str | Path) -> Path:
    """The ``ADEChallengeData2016`` folder, given it or the folder that holds it."""
    root = Path(root)
    for candidate in (root, root / "ADEChallengeData2016"):
        if (candidate / "images").is_dir() and (candidate / "annotations").is_dir():
            return candidate
    if not root.exists():
        raise LightsegError(f"data root {root} does not exist; expected the layout {ADE20K_LAYOUT}")
    raise LightsegError(
        f"{root} holds no ADE20K release; expected the layout {ADE20K_LAYOUT} (ADEChallengeData2016.zip "
        "from the MIT Scene Parsing Benchmark, extracted as it is)"
    )


def ade20k_samples(root: str | Path, split: str) -> list[Sample]:
    """The samples of ``split`` (``train`` / ``val``, or the release's ``training`` / ``validation``), by name."""
    if split not in ADE20K_FOLDERS:
        raise LightsegError(f"ADE20K has no split {split!r}; valid choices: train, val (training, validation)")
    folder = resolve_ade20k_root(root)
    name = ADE20K_FOLDERS[split]
    images = sorted((folder / "images" / name).glob("*.jpg"))
    if not images:
        raise LightsegError(f"{folder / 'images' / name} holds no .jpg images; expected the layout {ADE20K_LAYOUT}")
    return [Sample(p.stem, p, folder / "annotations" / name / f"{p.stem}.png") for p in images]


def ade20k_label_map(ignore_index: int = 255) -> np.ndarray:
    """The 256-entry lookup table of the annotation PNGs: 0 ("other objects", not evaluated) -> ignore, v -> v - 1."""
    lut = np.full(256, ignore_index, dtype=np.uint8)
    lut[1 : len(ADE20K_CLASSES) + 1] = np.arange(len(ADE20K_CLASSES), dtype=np.uint8)
    return lut


#: the training pipeline of this data set's recipes
ADE20K_AUGMENTATION = SemanticAugmentation(crop_size=512, scale_range=(0.5, 2.0))
#: this data set's recipes' batch
ADE20K_LOADER = LoaderSettings(batch_size=16)


class ADE20KDataModule(SplitDataModule):
    """ADE20K / SceneParse150: 150 classes, 20,210 train / 2,000 val images, read as released.

    The annotation PNGs hold 0 for "other objects" (not evaluated: read as ``ignore_index``) and
    1-150 for the classes, which become labels 0-149 (MMSegmentation's ``reduce_zero_label``):
    the model has 150 outputs, and every metric is over the 150 classes as the benchmark's.
    The defaults are the common recipe's (SegFormer, UPerNet, Mask2Former): random scale
    0.5-2.0, random crop 512, flip; validation at each image's own size.

    Args:
        root: ``ADEChallengeData2016`` or the folder that holds it.
        augmentation: the training augmentation (a
            :class:`~lightseg.datamodules.settings.SemanticAugmentation`); ``crop_size``: training crop (512;
            640 for the large models); ``scale_range``: random rescaling range in training.
        loader: how batches are loaded (a :class:`~lightseg.datamodules.settings.LoaderSettings`);
            ``batch_size``: samples per batch (16 in the 160K-iteration recipes, over all processes).
        **kwargs: splits, ``on_missing`` and the other options of :class:`~lightseg.datamodules.SplitDataModule`.
    """

    num_classes = len(ADE20K_CLASSES)
    class_names = ADE20K_CLASSES
    expected_counts: ClassVar[dict[str, int]] = {"train": 20210, "val": 2000}

    def __init__(
        self,
        root: str,
        augmentation: SemanticAugmentation = ADE20K_AUGMENTATION,
        loader: LoaderSettings = ADE20K_LOADER,
        **kwargs: Any,
    ) -> None:
        super().__init__(augmentation=augmentation, loader=loader, **kwargs)
        self.root = root

    def make_dataset(self, split: str, transforms: Callable[..., Any] | None) -> Dataset[Any]:
        return SegmentationFiles(
            ade20k_samples(self.root, split),
            self.num_classes,
            transforms,
            self.ignore_index,
            label_map=ade20k_label_map(self.ignore_index),
            raw_classes=self.num_classes + 1,
            on_missing=self.on_missing,
            name=f"ADE20K {split} ({self.root})",
        )
