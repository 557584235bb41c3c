"""Your own data: a folder of images and a folder of masks, paired by name."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from torch.utils.data import Dataset

from lightseg.datamodules.base import SplitDataModule
from lightseg.datamodules.coco_format import COCOAnnotations
from lightseg.datamodules.coco_semantic import COCOSemanticDataset
from lightseg.datamodules.exports import Layout, LayoutName, check_class_names, read_class_list, recognise
from lightseg.datamodules.files import Sample, SegmentationFiles, read_split
from lightseg.datamodules.io import IMAGE_EXTENSIONS, progress, refuse_lossy_mask
from lightseg.datamodules.labelstudio import BrushFiles, brush_labels, brush_samples
from lightseg.datamodules.rasters import chosen_bands
from lightseg.datamodules.settings import SemanticAugmentation
from lightseg.datamodules.splits import SPLITS, split_by_hash
from lightseg.errors import LightsegError, option

MaskFormat = Literal["auto", "index", "palette", "rgb", "binary"]


def _scan(
    folder: Path, suffix: str, what: str, extensions: Sequence[str] = IMAGE_EXTENSIONS, paired: str = ""
) -> dict[str, Path]:
    """Files under ``folder`` (recursively) by key: the path relative to it, without extension and ``suffix``.

    ``paired``: images and masks share the folder and masks end with this suffix: with
    ``suffix == paired`` only those are read (masks), else only the others (images).

    ``os.walk`` tells files from folders by the directory entry, without a ``stat`` per file:
    100,000 files scan in well under a second (``benchmarks/data_check.py``).
    """
    found: dict[str, Path] = {}
    for directory, subfolders, files in progress(os.walk(folder), f"scanning {folder}"):
        subfolders.sort()
        relative = os.path.relpath(directory, folder)
        prefix = "" if relative == "." else relative + os.sep
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext.lower() not in extensions:
                continue
            if paired and stem.endswith(paired) != (suffix == paired):
                continue
            key = prefix + stem
            if suffix and key.endswith(suffix):
                key = key[: -len(suffix)]
            path = Path(directory, name)
            if key in found:
                raise LightsegError(f"{what} {found[key]} and {path} have the same name; keep one of them")
            found[key] = path
    return found


def load_class_names(value: Sequence[str] | str) -> tuple[tuple[str, ...], list[tuple[int, int, int]] | None]:
    """Class names (and colours, if the file gives them) from a list or a class file of any format.

    See :func:`~lightseg.datamodules.exports.read_class_list` for the file formats.
    """
    if not isinstance(value, str):
        names = tuple(value)
        check_class_names(names, "class_names")
        return names, None
    classes = read_class_list(Path(value))
    return classes.names, classes.colors


class SegmentationFolderDataModule(SplitDataModule):
    """Your own images and masks, or a labelling tool's export read as it is.

    The layout is recognised from the folder at ``root`` (``layout: auto``) and said in one
    line when the data is first read (``read as a labelme export (labelme2voc): 3 images, 4
    classes``); the class list comes from the export's own file where ``class_names`` is not
    given:

    - ``folder``: ``root/images`` + ``root/masks`` paired by file name (``classes.yaml`` or
      ``classes.txt`` beside them);
    - ``labelme``: ``labelme2voc``'s ``JPEGImages/``, ``SegmentationClass/`` palette PNGs (or
      ``SegmentationClassPNG/``, or ``.npy`` arrays), ``class_names.txt``;
    - ``cvat``: CVAT's "Segmentation mask 1.1": ``JPEGImages/``, colour masks in
      ``SegmentationClass/`` with the colours of ``labelmap.txt``, subsets in
      ``ImageSets/Segmentation/``;
    - ``roboflow``: Roboflow's "Semantic Segmentation Masks": ``train/``, ``valid/``, ``test/``
      with ``x.jpg`` beside ``x_mask.png`` and ``_classes.csv``;
    - ``labelstudio``: Label Studio's COCO export (``result.json`` + ``images/``) or its brush
      PNG export (with the project's JSON export beside it, which names each task's image).

    Images and masks pair by their path relative to their folder, without extension (any of
    JPEG, PNG, TIFF, BMP, WebP), optionally after removing ``image_suffix`` / ``mask_suffix``
    (``x_img.jpg`` with ``x_gt.png``). Splits come from, in this order: ``train/``, ``val/``,
    ``test/`` subfolders of both folders (Roboflow's ``valid/`` is ``val``); split files
    (``root/splits/{train,val,test}.txt``, CVAT's ``ImageSets/Segmentation/``) listing the
    names; or a split by a hash of each name (``val_fraction``, ``test_fraction``): stable
    when files are added, logged with its counts (:mod:`lightseg.datamodules.splits`; a set
    of fewer than 10 images is split so that training keeps an image of every class where it
    can); ``validate_on_train`` validates on the training images instead.

    Masks (``mask_format``; ``auto`` reads the first mask and says what it found):

    - ``index``: one channel (8- or 16-bit PNG, TIFF) of class indices, ``ignore_index`` for void;
    - ``palette``: a palette PNG, read as indices (never as colours);
    - ``rgb``: colour-coded, with the colour of each class in ``colors`` (or the class file);
    - ``binary``: 0 = background, any other value (1 or 255) = foreground; two classes.

    Masks holding only 0 and 255 are ambiguous (binary foreground, or background + void?):
    ``auto`` stops and asks for ``binary`` or ``index``.

    Args:
        root: the data set folder.
        class_names: the classes, background first: a list, or a class file (a YAML/JSON list
            of names or of ``{name, color}`` entries, a text file with one name per line, CVAT's
            ``labelmap.txt``, Roboflow's ``_classes.csv``); ``None`` reads the export's own.
        layout: ``auto`` (recognised from the folder), ``folder``, ``labelme``, ``cvat``,
            ``roboflow`` or ``labelstudio``.
        images: the image folder under ``root`` (setting it reads the ``folder`` layout).
        masks: the mask folder under ``root`` (setting it reads the ``folder`` layout).
        image_suffix: removed from image names before pairing.
        mask_suffix: removed from mask names before pairing.
        mask_format: ``auto``, ``index``, ``palette``, ``rgb`` or ``binary``.
        colors: the RGB colour of each class, for ``rgb`` masks and pictures.
        ignore_index: the void label of the masks (``index`` / ``palette``).
        val_fraction: share of names in ``val`` for a hash split.
        test_fraction: share of names in ``test`` for a hash split (``test`` is ``val`` when 0).
        split_seed: seed of the hash split.
        validate_on_train: validate (and test) on the training images: for a handful of images
            that all have to be learned; the validation score is then a training score, and the
            run's summary says so.
        augmentation: the training augmentation (a
            :class:`~lightseg.datamodules.settings.SemanticAugmentation`); ``crop_size``: training crop;
            ``None`` trains on whole images (then of one size); ``scale_range``: random rescaling range in
            training.
        bands: multispectral images (TIFF chips of RGB + near infrared, Sentinel-2, ...): the
            1-based bands of each image read as the model's channels, in order, through rasterio
            (the ``geo`` extra); the model is built with ``in_channels`` equal to their count and
            their ``mean`` / ``std``, which ``lightseg data check`` prints. The ``folder`` layout only.
        **kwargs: ``loader``, ``on_missing``, ``check_samples`` and the other options of
            :class:`~lightseg.datamodules.SplitDataModule`.
    """

    def __init__(
        self,
        root: str,
        class_names: list[str] | str | None = None,
        layout: LayoutName = "auto",
        images: str | None = None,
        masks: str | None = None,
        image_suffix: str = "",
        mask_suffix: str = "",
        mask_format: MaskFormat = "auto",
        colors: list[tuple[int, int, int]] | None = None,
        ignore_index: int = 255,
        val_fraction: float = 0.0,
        test_fraction: float = 0.0,
        split_seed: int = 0,
        validate_on_train: bool = False,
        augmentation: SemanticAugmentation = SemanticAugmentation(),  # noqa: B008 (frozen: one shared default is safe)
        bands: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        augmentation = SemanticAugmentation.with_flat(augmentation, kwargs)
        chosen = chosen_bands(bands, augmentation.photometric)
        super().__init__(augmentation=augmentation, ignore_index=ignore_index, **kwargs)
        self.bands = chosen
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise LightsegError(
                f"val_fraction {val_fraction} and test_fraction {test_fraction} must be in [0, 1) and sum below 1"
            )
        self.root = Path(root)
        self._layout_choice: tuple[LayoutName, str | None, str | None] = (layout, images, masks)
        self._layout: Layout | None = None
        self.suffixes = (image_suffix, mask_suffix)
        names, file_colors = self._classes(class_names)
        self.class_names = names
        self.num_classes = len(names)
        self.colors = [tuple(c) for c in colors] if colors is not None else file_colors
        if self.colors is not None and len(self.colors) != self.num_classes:
            raise LightsegError(f"colors has {len(self.colors)} entries for {self.num_classes} classes")
        self.mask_format: MaskFormat = mask_format
        self.fractions = (val_fraction, test_fraction)
        self.split_seed = split_seed
        self.validate_on_train = validate_on_train
        if validate_on_train:
            self.score_caveat = (
                "validate_on_train is set: the validation score is measured on the training images; it says how "
                "well they were learned, not how the model does on images it has not seen"
            )
        self._samples: dict[str, list[Sample]] | None = None
        self._detected_format: MaskFormat | None = None
        #: masks without an image, by the folder they were found in (``all`` without split subfolders)
        self.orphans: dict[str, list[Path]] = {}

    @property
    def layout(self) -> Layout:
        """Where this data set's files are (recognised from the folder on first use)."""
        if self._layout is None:
            self._layout = recognise(self.root, *self._layout_choice)
        return self._layout

    @cached_property
    def _coco_export(self) -> tuple[COCOAnnotations, Path]:
        """A Label Studio COCO export's annotations (parsed once) and the folder its image names are relative to.

        Label Studio writes ``images/x.jpg`` names beside ``images/``; other tools name the files in it.
        """
        assert self.layout.annotations is not None
        annotations = COCOAnnotations.from_file(self.layout.annotations)
        first = next(iter(annotations.images.values()), None)
        root = self.layout.images
        return annotations, root if first is None or (root / first["file_name"]).is_file() else root / "images"

    @property
    def folders(self) -> tuple[Path, Path]:
        """The image folder and the mask folder."""
        return self.layout.images, self.layout.masks

    def _classes(self, value: list[str] | str | None) -> tuple[tuple[str, ...], list[tuple[int, int, int]] | None]:
        if value is not None:
            return load_class_names(value)
        layout = self.layout
        if layout.name == "labelstudio-coco":
            return self._coco_export[0].class_names, None
        if layout.name == "labelstudio":
            assert layout.annotations is not None
            names = ("background", *brush_labels(layout.annotations)[1])
            check_class_names(names, str(layout.annotations))
            return names, None
        if layout.class_file is None:
            raise LightsegError(
                f"{self.root} ({layout.title}) has no class list (classes.yaml or classes.txt): give class_names, "
                "a list of names (background first) or a class file"
            )
        return load_class_names(str(layout.class_file))

    @property
    def class_colors(self) -> Sequence[tuple[int, ...]] | None:
        """The class colours (for pictures), if given."""
        return self.colors

    def split_names(self) -> list[str]:
        """The splits the folder has samples of."""
        return [name for name, found in self.samples().items() if found]

    def samples(self) -> dict[str, list[Sample]]:
        """The samples of each split (scanned once)."""
        if self._samples is None:
            self._samples = self._find_samples()
            if self.validate_on_train:
                train = self._samples.get("train") or [s for v in self._samples.values() for s in v]
                self._samples = {"train": train, "val": train, "test": train}
            counts = ", ".join(f"{len(v)} {k}" for k, v in self._samples.items() if v)
            total = len({s.id for v in self._samples.values() for s in v})
            rank_zero_info(
                f"{self.root}: read as {self.layout.title}: {total} images, {self.num_classes} classes ({counts})"
                + (" - validating on the training images" if self.validate_on_train else "")
            )
        return self._samples

    def _find_samples(self) -> dict[str, list[Sample]]:
        layout = self.layout
        if layout.name == "labelstudio-coco":
            annotations, images = self._coco_export
            source, listed = Path(annotations.source), annotations.images
            samples = [Sample(str(i), images / listed[i]["file_name"], source) for i in sorted(listed)]
            return self._split_by_hash(samples)
        if layout.name == "labelstudio":
            assert layout.annotations is not None
            samples, self._regions = brush_samples(layout.annotations, layout.masks, layout.images, self.class_names)
            return self._split_by_hash(samples)
        image_dir, mask_dir = self.folders
        for folder, what in ((image_dir, "image folder"), (mask_dir, "mask folder")):
            if not folder.is_dir():
                raise LightsegError(
                    f"{what} {folder} does not exist; {self.root} was read as {layout.title}"
                    + (" (the folder names are settable: images, masks)" if layout.name == "folder" else "")
                )
        if layout.split_folders:
            return {
                split: self._pair(image_dir / folder, mask_dir / folder, split)
                for split, folder in layout.split_folders.items()
            }
        if (image_dir / "train").is_dir():
            return {s: self._pair(image_dir / s, mask_dir / s, s) for s in SPLITS if (image_dir / s).is_dir()}
        pairs = self._pair(image_dir, mask_dir, "all")
        if "all" in layout.split_files:  # one list (CVAT's default subset): the samples it names, split by hash
            return self._split_by_hash(self._listed(pairs, layout.split_files["all"]))
        if layout.split_files:
            return {split: self._listed(pairs, path) for split, path in layout.split_files.items() if path.is_file()}
        return self._split_by_hash(pairs)

    def _listed(self, pairs: list[Sample], path: Path) -> list[Sample]:
        by_key = {s.id: s for s in pairs}
        keys = read_split(path, "a list of sample names, one per line")
        unknown = [k for k in keys if k not in by_key]
        if unknown:
            raise LightsegError(
                f"split file {path} names {len(unknown)} sample(s) with no image and mask (e.g. {unknown[0]})"
            )
        return [by_key[k] for k in keys]

    def _split_by_hash(self, pairs: list[Sample]) -> dict[str, list[Sample]]:
        if self.validate_on_train:
            return {"train": pairs}
        return split_by_hash(pairs, *self.fractions, self.split_seed, self._classes_of, str(self.root))

    def _classes_of(self, sample: Sample) -> set[int]:
        dataset = self._dataset([sample], None, "small split")
        try:
            mask = dataset.read_mask(0)  # type: ignore[attr-defined]
        except LightsegError:
            return set()  # the sample check names the problem
        return {int(v) for v in np.unique(mask) if v != self.ignore_index}

    def _pair(self, image_dir: Path, mask_dir: Path, split: str) -> list[Sample]:
        paired = self.layout.mask_suffix if image_dir == mask_dir else ""
        image_suffix = self.suffixes[0] or self.layout.image_suffix
        mask_suffix = self.suffixes[1] or self.layout.mask_suffix
        images = _scan(image_dir, image_suffix, "image", paired=paired)
        masks = _scan(mask_dir, mask_suffix, "mask", (*IMAGE_EXTENSIONS, ".npy"), paired=paired)
        if not images:
            raise LightsegError(f"image folder {image_dir} holds no image ({', '.join(IMAGE_EXTENSIONS)})")
        orphans = sorted(set(masks) - set(images))
        self.orphans[split] = [masks[key] for key in orphans]
        if orphans and self.on_missing == "error":
            raise LightsegError(
                f"{mask_dir}: {len(orphans)} mask(s) without an image of the same name (e.g. {masks[orphans[0]]}); "
                "name them as their images (image_suffix / mask_suffix remove suffixes), or set on_missing: skip "
                "to leave them out"
            )
        if orphans:
            rank_zero_info(f"{mask_dir}: {len(orphans)} mask(s) without an image left out (e.g. {orphans[0]})")
        return [Sample(key, path, masks.get(key)) for key, path in images.items()]

    def detect_format(self, mask: Path) -> MaskFormat:
        """The mask format of ``mask`` (``auto``), or a one-line error where it cannot be told."""
        if mask.suffix == ".npy":
            return "index"
        with Image.open(mask) as img:
            refuse_lossy_mask(img, mask)
            mode = img.mode
            values = np.unique(np.asarray(img)) if mode not in ("RGB", "RGBA") else None
        if mode == "P":
            return "palette"
        if mode in ("RGB", "RGBA"):
            if self.colors is None:
                raise LightsegError(
                    f"mask {mask} is an RGB image: colour-coded masks need the colour of each class "
                    "(colors: [[r, g, b], ...], or a class file of {name, color} entries), with mask_format: rgb"
                )
            return "rgb"
        assert values is not None
        if set(values.tolist()) <= {0, 255} and 255 in values:
            raise LightsegError(
                f"mask {mask} holds only 0 and 255: set mask_format: binary (255 is the foreground) or "
                f"mask_format: index (255 = ignore_index, void)"
            )
        return "index"

    def make_dataset(self, split: str, transforms: Callable[..., Any] | None) -> Dataset[Any]:
        samples = self.samples().get(split) or (self.samples().get("val") if split == "test" else None) or []
        return self._dataset(samples, transforms, f"{split} of {self.root}")

    def _resolved_format(self, samples: Sequence[Sample]) -> MaskFormat:
        """``mask_format``, with ``auto`` decided once from the first mask (and said once)."""
        if self.mask_format != "auto":
            return self.mask_format
        if self._detected_format is None:
            first = next((s.mask for s in samples if s.mask is not None and s.mask.is_file()), None)
            if first is None:
                return "auto"
            self._detected_format = self.detect_format(first)
            rank_zero_info(f"{self.root}: masks read as mask_format {self._detected_format} (from {first.name})")
        return self._detected_format

    def _dataset(self, samples: Sequence[Sample], transforms: Callable[..., Any] | None, name: str) -> Dataset[Any]:
        layout = self.layout
        if self.bands is not None and layout.name != "folder":
            raise LightsegError(
                f"{option('data', 'bands')} reads multispectral images of the folder layout (images/ and masks/); "
                f"{self.root} is {layout.title}, whose images are RGB: remove bands"
            )
        if layout.name == "labelstudio-coco":
            annotations, images = self._coco_export
            return COCOSemanticDataset(
                annotations,
                images,
                dict(annotations.label_of),
                self.num_classes,
                transforms,
                on_missing=self.on_missing,
                name=name,
                ids=[int(s.id) for s in samples],
            )
        if layout.name == "labelstudio":  # the regions were found with the samples
            return BrushFiles(list(samples), self._regions, self.num_classes, transforms, self.ignore_index,
                              on_missing=self.on_missing, name=name)  # fmt: skip
        mask_format = self._resolved_format(samples)
        label_map, raw_classes, colormap = None, None, None
        if mask_format == "binary":
            if self.num_classes != 2:
                raise LightsegError(
                    f"mask_format binary needs 2 classes (background, foreground), got {self.num_classes}"
                )
            label_map = np.ones(256, dtype=np.uint8)
            label_map[0] = 0
            raw_classes = 256
        elif mask_format == "rgb":
            if self.colors is None:
                raise LightsegError("mask_format rgb needs colors: the [r, g, b] of each class")
            colormap = np.array(self.colors, dtype=np.uint8)
        return SegmentationFiles(
            samples,
            self.num_classes,
            transforms,
            self.ignore_index,
            label_map=label_map,
            raw_classes=raw_classes,
            on_missing=self.on_missing,
            name=name,
            colormap=colormap,
            bands=self.bands,
        )
