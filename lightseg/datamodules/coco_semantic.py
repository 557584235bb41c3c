"""COCO as a semantic segmentation data set: torchvision's COCO-VOC protocol, or every category.

torchvision's published DeepLabV3/FCN/LR-ASPP numbers are trained and evaluated on COCO
2017 reduced to the 20 PASCAL VOC categories (background elsewhere): each image's label
map is made from its instance annotations (crowd regions included), pixels covered by more
than one object are set to 255 (ignored), and training leaves out the images whose VOC
objects cover 1,000 pixels or less (by annotation area). Evaluation uses every validation
image, resized so that its shorter side is 520 pixels (``eval_size``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import Dataset
from torchvision.transforms import v2

from lightseg.coco_masks import segmentation_mask
from lightseg.datamodules.base import SplitDataModule
from lightseg.datamodules.coco_format import AnnotationFiles, COCOAnnotations, check_listed_size
from lightseg.datamodules.files import CheckSamples, OnMissing, Sample, SegmentationFiles
from lightseg.datamodules.io import image_header, progress
from lightseg.datamodules.settings import LoaderSettings, SemanticAugmentation
from lightseg.datamodules.voc import VOC_CLASSES, VOC_COLORS
from lightseg.errors import LightsegError

#: COCO 2017 category ids of the 20 PASCAL VOC classes, in VOC's label order (label 1..20)
VOC_CATEGORY_IDS = (5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72)
#: their COCO names, to recognise a file whose ids mean something else
VOC_CATEGORY_NAMES = (
    "airplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "dining table", "dog",
    "horse", "motorcycle", "person", "potted plant", "sheep", "couch", "train", "tv",
)  # fmt: skip
#: torchvision's training filter: an image is kept when its objects' areas sum above this
MIN_TRAIN_AREA = 1000
OVERLAP = 255

Categories = Literal["voc", "all"]


def semantic_label_map(
    annotations: Sequence[dict[str, Any]], labels: dict[int, int], height: int, width: int
) -> np.ndarray:
    """One image's ``[H,W]`` uint8 label map from its COCO annotations.

    Each annotation of a category in ``labels`` (category id -> label) paints its label;
    pixels covered by two or more such annotations become 255. Others stay 0 (background).
    """
    kept = [(a, labels[int(a["category_id"])]) for a in annotations if int(a.get("category_id", -1)) in labels]
    if not kept:
        return np.zeros((height, width), dtype=np.uint8)
    masks = np.stack([segmentation_mask(a.get("segmentation") or [], height, width) for a, _ in kept])
    values = np.array([label for _, label in kept], dtype=np.uint8)
    target = (masks * values[:, None, None]).max(axis=0)
    target[masks.sum(axis=0, dtype=np.int64) > 1] = OVERLAP
    return target.astype(np.uint8)


class COCOSemanticDataset(SegmentationFiles):
    """The images of a COCO annotation file with label maps made from their instance annotations.

    Args:
        annotations: the parsed annotation file.
        images_dir: folder of the images.
        labels: category id -> label (1..K); other categories are background.
        num_classes: K + 1.
        transforms: joint image/mask transform.
        min_area: leave out images whose annotations of ``labels`` sum to this area or less
            (``None``: keep every image).
        on_missing: ``error`` or ``skip`` for images whose file is missing.
        name: how messages call this data set.
        ids: the images to read (``None``: every image of the file).
    """

    def __init__(
        self,
        annotations: COCOAnnotations,
        images_dir: Path,
        labels: dict[int, int],
        num_classes: int,
        transforms: Callable[..., Any] | None = None,
        min_area: float | None = None,
        on_missing: OnMissing = "error",
        name: str = "COCO",
        ids: Sequence[int] | None = None,
    ) -> None:
        self.annotations = annotations
        self.labels = labels
        if not images_dir.is_dir():
            raise LightsegError(f"image folder {images_dir} does not exist; check root and the *_images arguments")
        ids = sorted(annotations.images) if ids is None else list(ids)
        if min_area is not None:
            ids = [i for i in ids if self._area(i) > min_area]
            rank_zero_info(
                f"{name}: {len(ids)} of {len(annotations.images)} images have objects of the classes covering more "
                f"than {min_area:g} pixels (the others are left out of training)"
            )
        source = Path(annotations.source)
        samples = [Sample(str(i), images_dir / annotations.images[i]["file_name"], source) for i in ids]
        super().__init__(samples, num_classes, transforms, OVERLAP, on_missing=on_missing, name=name)

    def _area(self, image_id: int) -> float:
        items = self.annotations.by_image[image_id]
        return sum(float(a.get("area", 0)) for a in items if int(a.get("category_id", -1)) in self.labels)

    def read_mask(self, index: int) -> np.ndarray:
        """The label map of sample ``index``, at its image's size."""
        sample = self.samples[index]
        (height, width), _ = image_header(sample.image)
        return semantic_label_map(self.annotations.by_image[int(sample.id)], self.labels, height, width)

    def mask_kind(self, index: int) -> str:
        """Label maps are made from the annotation file's polygons and RLE."""
        return "COCO polygons/RLE"

    def check_samples(self, mode: CheckSamples = "auto") -> None:
        """Every image readable, and of the size the annotation file gives it (its polygons are drawn at that size)."""
        if mode == "none" or self._samples_checked:
            return
        self._samples_checked = True
        for sample in progress(self.samples, f"{self.name}: checking file headers"):
            size, _ = image_header(sample.image)
            check_listed_size(self.annotations.images[int(sample.id)], sample.image, size, self.annotations.source)


#: the training pipeline of this data set's recipes
COCO_SEMANTIC_AUGMENTATION = SemanticAugmentation(crop_size=480, scale_range=(0.5, 2.0))
#: this data set's recipes' batch
COCO_SEMANTIC_LOADER = LoaderSettings(batch_size=16)


class COCOSemanticDataModule(SplitDataModule, AnnotationFiles):
    """COCO 2017 for semantic segmentation, read from the official instance annotations.

    ``categories: voc`` is torchvision's protocol for its published COCO numbers (e.g.
    DeepLabV3-ResNet101 67.4 mIoU): the 20 PASCAL VOC categories (VOC's class order and
    names) plus background, pixels of overlapping objects ignored (255), training images
    whose VOC objects cover 1,000 pixels or less left out, evaluation on every validation
    image with its shorter side resized to ``eval_size`` (520). ``categories: all`` keeps
    every category of the annotation file (the 80 COCO things) as labels 1..K in id order.

    Args:
        root: the COCO folder (holding ``train2017/``, ``val2017/``, ``annotations/``).
        categories: ``voc`` (21 classes) or ``all`` (the file's categories + background).
        train_images: training image folder.
        train_annotations: training instance annotations.
        val_images: validation image folder.
        val_annotations: validation instance annotations.
        train_skip_empty: leave out training images whose objects cover ``<= 1000`` pixels.
        eval_size: resize evaluation images (and label maps, nearest) so that the shorter
            side has this length; ``None`` evaluates at native size.
        augmentation: the training augmentation (a
            :class:`~lightseg.datamodules.settings.SemanticAugmentation`); ``crop_size``: training crop
            (torchvision: 480); ``scale_range``: random rescaling range in training.
        loader: how batches are loaded (a :class:`~lightseg.datamodules.settings.LoaderSettings`);
            ``batch_size``: samples per batch.
        **kwargs: ``on_missing``, ``check_samples`` and the other options of
            :class:`~lightseg.datamodules.SplitDataModule`.
    """

    def __init__(
        self,
        root: str,
        categories: Categories = "voc",
        train_images: str = "train2017",
        train_annotations: str = "annotations/instances_train2017.json",
        val_images: str = "val2017",
        val_annotations: str = "annotations/instances_val2017.json",
        train_skip_empty: bool = True,
        eval_size: int | None = 520,
        augmentation: SemanticAugmentation = COCO_SEMANTIC_AUGMENTATION,
        loader: LoaderSettings = COCO_SEMANTIC_LOADER,
        **kwargs: Any,
    ) -> None:
        if "ignore_index" in kwargs and kwargs["ignore_index"] != OVERLAP:
            raise LightsegError(
                f"COCOSemanticDataModule marks overlaps and void with {OVERLAP}; leave ignore_index out"
            )
        kwargs.pop("ignore_index", None)
        super().__init__(augmentation=augmentation, loader=loader, **kwargs)
        if eval_size is not None and eval_size < 1:
            raise LightsegError(f"eval_size must be a positive number of pixels (or null), got {eval_size}")
        self.root = Path(root)
        self.categories: Categories = categories
        self.paths = {
            "train": (self.root / train_images, self.root / train_annotations),
            "val": (self.root / val_images, self.root / val_annotations),
        }
        self.train_skip_empty = train_skip_empty
        self.eval_size = eval_size

    @property
    def num_classes(self) -> int:  # type: ignore[override]
        """21 for ``voc``; the categories + background for ``all``."""
        return len(VOC_CLASSES) if self.categories == "voc" else self.reference.num_classes

    @property
    def class_colors(self) -> tuple[tuple[int, ...], ...] | None:
        """VOC's colours for ``voc``; the generated palette for ``all``."""
        return VOC_COLORS if self.categories == "voc" else None

    @property
    def class_names(self) -> tuple[str, ...]:  # type: ignore[override]
        """VOC's class names for ``voc``; ``background`` and the category names for ``all``."""
        return VOC_CLASSES if self.categories == "voc" else self.reference.class_names

    def category_labels(self, annotations: COCOAnnotations) -> dict[int, int]:
        """Category id -> label for ``annotations``; refuses a file whose VOC ids name other things."""
        if self.categories == "all":
            if annotations.category_ids != self.reference.category_ids:
                raise LightsegError(
                    f"{annotations.source} has categories {annotations.category_ids[1:]} but {self.reference.source} "
                    f"has {self.reference.category_ids[1:]}; the splits must share their categories"
                )
            return dict(annotations.label_of)
        names = dict(zip(annotations.category_ids[1:], annotations.class_names[1:], strict=True))
        wrong = [
            f"{cid} is {names[cid]!r}, not {expected!r}"
            for cid, expected in sorted(zip(VOC_CATEGORY_IDS, VOC_CATEGORY_NAMES, strict=True))
            if cid in names and names[cid].lower() != expected
        ]
        if wrong:
            raise LightsegError(
                f"{annotations.source} does not use COCO's category ids (category {wrong[0]}); categories: voc is "
                "the protocol for COCO 2017 itself; use categories: all for other COCO-format files"
            )
        return {cid: label for label, cid in enumerate(VOC_CATEGORY_IDS, start=1)}

    def make_dataset(self, split: str, transforms: Callable[..., Any] | None) -> Dataset[Any]:
        split = "val" if split == "test" else split  # COCO's test annotations are not public
        annotations = self.annotations(split)
        if transforms is None and self.eval_size is not None:
            transforms = v2.Resize(self.eval_size, antialias=True)  # shorter side; masks nearest
        return COCOSemanticDataset(
            annotations,
            self.paths[split][0],
            self.category_labels(annotations),
            self.num_classes,
            transforms,
            min_area=MIN_TRAIN_AREA if split == "train" and self.train_skip_empty else None,
            on_missing=self.on_missing,
            name=f"COCO {split} ({annotations.source})",
        )
