"""Your own data: a folder of images and a folder of masks, paired by name."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image
from torch.utils.data import Dataset

from lightseg.datamodules.base import SplitDataModule
from lightseg.datamodules.files import Sample, SegmentationFiles, read_split
from lightseg.datamodules.io import IMAGE_EXTENSIONS, progress, refuse_lossy_mask
from lightseg.errors import LightsegError

MaskFormat = Literal["auto", "index", "palette", "rgb", "binary"]
SPLITS = ("train", "val", "test")


def _scan(folder: Path, suffix: str, what: str) -> dict[str, Path]:
    """Files under ``folder`` (recursively) by key: the path relative to it, without extension and ``suffix``.

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
            if ext.lower() not in IMAGE_EXTENSIONS:
                continue
            key = prefix + stem
            if suffix and key.endswith(suffix):
                key = key[: -len(suffix)]
            path = Path(directory, name)
            if key in found:
                raise LightsegError(f"{what} {found[key]} and {path} have the same name; keep one of them")
            found[key] = path
    return found


def hash_split(key: str, val_fraction: float, test_fraction: float, seed: int) -> str:
    """``train``, ``val`` or ``test`` for ``key``, from a hash of it: adding files never moves the others."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    if position < test_fraction:
        return "test"
    if position < test_fraction + val_fraction:
        return "val"
    return "train"


def load_class_names(value: Sequence[str] | str) -> tuple[tuple[str, ...], list[tuple[int, int, int]] | None]:
    """Class names (and colours, if the file gives them) from a list or a YAML/JSON file.

    The file holds a list of names, or a list of ``{name: ..., color: [r, g, b]}``.
    """
    if not isinstance(value, str):
        return tuple(value), None
    path = Path(value)
    if not path.is_file():
        raise LightsegError(f"class_names file {path} does not exist; give a list of names or a YAML/JSON file")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML too
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise LightsegError(f"class_names file {path} is not YAML/JSON: {str(err).splitlines()[0]}") from None
    if not isinstance(content, list) or not content:
        raise LightsegError(f"class_names file {path} must hold a list of names (or of {{name, color}} entries)")
    if all(isinstance(c, str) for c in content):
        return tuple(content), None
    try:
        names = tuple(str(c["name"]) for c in content)
        colors = [tuple(int(v) for v in c["color"]) for c in content] if all("color" in c for c in content) else None
    except (TypeError, KeyError, ValueError):
        raise LightsegError(
            f"class_names file {path}: every entry needs a name (and, for all or none, a color)"
        ) from None
    return names, colors  # type: ignore[return-value]


class SegmentationFolderDataModule(SplitDataModule):
    """Your own images and masks: ``root/images`` + ``root/masks``, paired by file name.

    Images and masks pair by their path relative to their folder, without extension (any of
    JPEG, PNG, TIFF, BMP, WebP), optionally after removing ``image_suffix`` / ``mask_suffix``
    (``x_img.jpg`` with ``x_gt.png``). Splits come from, in this order: ``train/``, ``val/``,
    ``test/`` subfolders of both folders; split files ``root/splits/{train,val,test}.txt``
    listing the names; or a split by a hash of each name (``val_fraction``,
    ``test_fraction``): stable when files are added, logged with its counts.

    Masks (``mask_format``; ``auto`` reads the first mask and says what it found):

    - ``index``: one channel (8- or 16-bit PNG, TIFF) of class indices, ``ignore_index`` for void;
    - ``palette``: a palette PNG, read as indices (never as colours);
    - ``rgb``: colour-coded, with the colour of each class in ``colors`` (or the class file);
    - ``binary``: 0 = background, any other value (1 or 255) = foreground; two classes.

    Masks holding only 0 and 255 are ambiguous (binary foreground, or background + void?):
    ``auto`` stops and asks for ``binary`` or ``index``.

    Args:
        root: the data set folder.
        class_names: the classes, background first: a list, or a YAML/JSON file of names (or
            of ``{name, color}`` entries).
        images: the image folder under ``root``.
        masks: the mask folder under ``root``.
        image_suffix: removed from image names before pairing.
        mask_suffix: removed from mask names before pairing.
        mask_format: ``auto``, ``index``, ``palette``, ``rgb`` or ``binary``.
        colors: the RGB colour of each class, for ``rgb`` masks and pictures.
        ignore_index: the void label of the masks (``index`` / ``palette``).
        val_fraction: share of names in ``val`` for a hash split.
        test_fraction: share of names in ``test`` for a hash split (``test`` is ``val`` when 0).
        split_seed: seed of the hash split.
        crop_size: training crop; ``None`` trains on whole images (then of one size).
        scale_range: random rescaling range in training.
        **kwargs: pipeline (``hflip``, ``vflip``, ``photometric``), ``on_missing``,
            ``check_samples`` and loader options of :class:`~lightseg.datamodules.SplitDataModule`.
    """

    def __init__(
        self,
        root: str,
        class_names: list[str] | str,
        images: str = "images",
        masks: str = "masks",
        image_suffix: str = "",
        mask_suffix: str = "",
        mask_format: MaskFormat = "auto",
        colors: list[tuple[int, int, int]] | None = None,
        ignore_index: int = 255,
        val_fraction: float = 0.0,
        test_fraction: float = 0.0,
        split_seed: int = 0,
        crop_size: int | tuple[int, int] | None = None,
        scale_range: tuple[float, float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(crop_size=crop_size, scale_range=scale_range, ignore_index=ignore_index, **kwargs)
        names, file_colors = load_class_names(class_names)
        if len(names) < 2:
            raise LightsegError(f"class_names: give the background and at least one class, got {list(names)}")
        self.class_names = names
        self.num_classes = len(names)
        self.colors = [tuple(c) for c in colors] if colors is not None else file_colors
        if self.colors is not None and len(self.colors) != self.num_classes:
            raise LightsegError(f"colors has {len(self.colors)} entries for {self.num_classes} classes")
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise LightsegError(
                f"val_fraction {val_fraction} and test_fraction {test_fraction} must be in [0, 1) and sum below 1"
            )
        self.root = Path(root)
        self.folders = (self.root / images, self.root / masks)
        self.suffixes = (image_suffix, mask_suffix)
        self.mask_format: MaskFormat = mask_format
        self.fractions = (val_fraction, test_fraction)
        self.split_seed = split_seed
        self._samples: dict[str, list[Sample]] | None = None
        #: masks without an image, by the folder they were found in (``all`` without split subfolders)
        self.orphans: dict[str, list[Path]] = {}

    @property
    def class_colors(self) -> Sequence[tuple[int, ...]] | None:
        """The class colours (for pictures), if given."""
        return self.colors

    def samples(self) -> dict[str, list[Sample]]:
        """The samples of each split (scanned once)."""
        if self._samples is None:
            self._samples = self._find_samples()
        return self._samples

    def _find_samples(self) -> dict[str, list[Sample]]:
        image_dir, mask_dir = self.folders
        for folder, what in ((self.root, "root"), (image_dir, "image folder"), (mask_dir, "mask folder")):
            if not folder.is_dir():
                raise LightsegError(
                    f"{what} {folder} does not exist; SegmentationFolderDataModule reads root/images and root/masks "
                    "(the names are settable: images, masks)"
                )
        if (image_dir / "train").is_dir():
            return {s: self._pair(image_dir / s, mask_dir / s, s) for s in SPLITS if (image_dir / s).is_dir()}
        pairs = self._pair(image_dir, mask_dir, "all")
        if (self.root / "splits").is_dir():
            by_key = {s.id: s for s in pairs}
            result = {}
            for split in SPLITS:
                path = self.root / "splits" / f"{split}.txt"
                if path.is_file():
                    keys = read_split(path, "splits/<split>.txt with one name per line")
                    unknown = [k for k in keys if k not in by_key]
                    if unknown:
                        raise LightsegError(
                            f"split file {path} names {len(unknown)} sample(s) with no image and mask "
                            f"(e.g. {unknown[0]})"
                        )
                    result[split] = [by_key[k] for k in keys]
            return result
        result = {split: [] for split in SPLITS}
        for sample in pairs:
            result[hash_split(sample.id, *self.fractions, self.split_seed)].append(sample)
        rank_zero_info(
            f"{self.root}: split by name hash (seed {self.split_seed}): "
            + ", ".join(f"{len(v)} {k}" for k, v in result.items())
        )
        return result

    def _pair(self, image_dir: Path, mask_dir: Path, split: str) -> list[Sample]:
        images = _scan(image_dir, self.suffixes[0], "image")
        masks = _scan(mask_dir, self.suffixes[1], "mask")
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
        mask_format = self.mask_format
        first = next((s.mask for s in samples if s.mask is not None and s.mask.is_file()), None)
        if mask_format == "auto" and first is not None:
            mask_format = self.detect_format(first)
            rank_zero_info(f"{self.root}: masks read as mask_format {mask_format} (from {first.name})")
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
            name=f"{split} of {self.root}",
            colormap=colormap,
        )
