"""A semantic dataset as a list of (id, image file, mask file) samples, whatever the layout."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from scipy import io as sio
from torch.utils.data import Dataset
from torchvision import tv_tensors

from lightseg.datamodules.io import image_header, orientation_hint, progress, read_image, read_mask, read_npy_mask
from lightseg.datamodules.rasters import raster_size, read_whole
from lightseg.errors import LightsegError, MaskLabelError
from lightseg.types import SemanticItem

OnMissing = Literal["error", "skip"]
#: ``headers``: every image's and mask's size and mode; ``full``: also every mask's labels; ``auto``:
#: ``full`` up to :data:`FULL_CHECK_LIMIT` samples, ``headers`` above; ``none``: no check
CheckSamples = Literal["auto", "headers", "full", "none"]
FULL_CHECK_LIMIT = 1000
MASK_MODES = ("P", "L", "I", "I;16", "RGB", "RGBA")
#: how each mask image mode is called in reports
MASK_KINDS = {"P": "palette PNG", "L": "8-bit index", "I;16": "16-bit index", "I": "32-bit index",
              "RGB": "RGB colour-coded", "RGBA": "RGB colour-coded"}  # fmt: skip


class BinaryMaskError(LightsegError):
    """Masks that hold only 0 and the ignore index: a binary data set read as background + void."""


@dataclass(frozen=True)
class Sample:
    """One sample: its id, its image file and its label file (``.png``, SBD ``.mat`` or labelme ``.npy``)."""

    id: str
    image: Path
    mask: Path | None


def read_sbd_mask(path: Path, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """Class labels of an SBD ``cls/*.mat`` file (``GTcls.Segmentation``) as ``[H,W]`` uint8."""
    try:
        mat = sio.loadmat(path, struct_as_record=False, squeeze_me=True)
    except FileNotFoundError:
        raise LightsegError(f"mask {path} does not exist") from None
    except Exception as err:
        raise LightsegError(f"cannot read SBD file {path}: {err}") from None
    if "GTcls" not in mat or not hasattr(mat["GTcls"], "Segmentation"):
        raise LightsegError(
            f"{path} has no GTcls.Segmentation (keys: {sorted(k for k in mat if not k.startswith('__'))}); "
            "SBD class labels live in dataset/cls/*.mat (dataset/inst/*.mat hold instances)"
        )
    labels = np.asarray(mat["GTcls"].Segmentation)
    bad = labels[(labels != ignore_index) & (labels >= num_classes)]
    if bad.size:
        values = sorted(set(bad.tolist()))
        raise MaskLabelError(f"{path} holds label value(s) {values[:5]} but there are {num_classes} classes", values)
    return labels.astype(np.uint8)


class SegmentationFiles(Dataset[SemanticItem]):
    """Images and masks read from a list of :class:`Sample`; the shared reader of every layout.

    Missing files are found when the dataset is built, before any training starts: with
    ``on_missing="error"`` the first missing ids are named; with ``"skip"`` those samples
    are dropped and counted in the log.

    Args:
        samples: the samples, in order (``ids`` follows it).
        num_classes: classes of the (mapped) masks; other values but ``ignore_index`` are an
            error naming the file.
        transforms: a joint transform of ``tv_tensors.Image`` and ``tv_tensors.Mask``.
        ignore_index: the void label.
        label_map: a 256-entry lookup table applied to raw mask values (e.g. Cityscapes label
            ids to train ids); ``raw_classes`` bounds the raw values then.
        raw_classes: number of valid raw values when ``label_map`` is given.
        on_missing: ``error`` or ``skip`` for samples whose image or mask file is absent.
        name: how error messages call this data set.
        colormap: ``[num_classes, 3]`` colours of RGB masks (``None``: the VOC palette).
        bands: the 1-based bands of each image read as its channels, through rasterio (multispectral
            TIFFs; ``None``: RGB as the image reader reads it).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        num_classes: int,
        transforms: Callable[..., Any] | None = None,
        ignore_index: int = 255,
        label_map: np.ndarray | None = None,
        raw_classes: int | None = None,
        on_missing: OnMissing = "error",
        name: str = "data set",
        colormap: np.ndarray | None = None,
        bands: Sequence[int] | None = None,
    ) -> None:
        self.num_classes = num_classes
        self.bands = tuple(bands) if bands is not None else None
        self.transforms = transforms
        self.ignore_index = ignore_index
        self.label_map = label_map
        self.raw_classes: int = raw_classes if label_map is not None and raw_classes is not None else num_classes
        self.name = name
        self.colormap = colormap
        self._masks_checked = False
        self._samples_checked = False
        #: the samples left out with ``on_missing="skip"``, and what each one lacks
        self.missing: list[tuple[Sample, str]] = []
        self.samples = self._check(list(samples), on_missing, name)

    def _check(self, samples: list[Sample], on_missing: OnMissing, name: str) -> list[Sample]:
        def missing(sample: Sample) -> str | None:
            if not sample.image.is_file():
                return f"image {sample.image}"
            if sample.mask is None or not sample.mask.is_file():
                return f"mask {sample.mask}" if sample.mask is not None else "mask file"
            return None

        problems = [(s, what) for s in progress(samples, f"{name}: checking files") if (what := missing(s)) is not None]
        if not problems:
            return samples
        if on_missing == "skip":
            self.missing = problems
            rank_zero_warn(f"{name}: skipped {len(problems)} of {len(samples)} samples whose files are missing")
            bad = {id(s) for s, _ in problems}
            return [s for s in samples if id(s) not in bad]
        first = "; ".join(f"{s.id}: no {what}" for s, what in problems[:3])
        raise LightsegError(
            f"{name}: {len(problems)} of {len(samples)} samples have missing files ({first}). "
            "Complete the data set, or set on_missing: skip to leave them out"
        )

    def check_masks_are_not_binary_255(self, count: int = 16) -> None:
        """Refuse 0/255 binary masks read as background + ignore, in one line.

        0/255 is the most common way to store a binary mask, and 255 is the ignore label:
        read as they are, every foreground pixel would silently drop out of the loss and the
        metrics. Reads the first ``count`` masks; refuses when they hold ``ignore_index``
        pixels but not one pixel of any class other than 0.
        """
        if self._masks_checked:
            return
        self._masks_checked = True
        checked = [(sample.mask, self.read_mask(k)) for k, sample in enumerate(self.samples[:count])]
        if not checked or self.num_classes < 2:
            return
        has_ignore = [path for path, mask in checked if (mask == self.ignore_index).any()]
        has_class = any(((mask > 0) & (mask != self.ignore_index)).any() for _, mask in checked)
        if has_ignore and not has_class:
            raise BinaryMaskError(
                f"{self.name}: the {len(checked)} masks checked (e.g. {has_ignore[0]}) hold only 0 and "
                f"{self.ignore_index}, and {self.ignore_index} is the ignore label: every foreground pixel would be "
                "dropped from the loss and the metrics. For a binary data set store the foreground as 1 "
                "(mask = (mask > 0).astype(np.uint8)) and declare 2 classes (background, foreground)"
            )

    def check_samples(self, mode: CheckSamples = "auto") -> None:
        """Check every sample before training: image and mask readable and of one size, mask labels valid.

        A bad sample otherwise surfaces only when a batch holds it, which may be hours into
        a run, or never when it falls in a dropped last batch. Headers cost a file open
        each; ``full`` decodes every mask (see ``benchmarks/sample_check.py``).
        """
        if mode == "none" or self._samples_checked:
            return
        self._samples_checked = True
        full = mode == "full" or (mode == "auto" and len(self.samples) <= FULL_CHECK_LIMIT)
        for sample in progress(self.samples, f"{self.name}: checking {'samples' if full else 'file headers'}"):
            size = image_header(sample.image)[0] if self.bands is None else raster_size(sample.image, self.bands)
            assert sample.mask is not None
            if full:
                mask_size: tuple[int, ...] | None = self.decode_mask(sample.mask).shape
            elif sample.mask.suffix == ".mat":
                mask_size = None  # a MATLAB file has no header to read the size from cheaply
            elif sample.mask.suffix == ".npy":
                mask_size = np.load(sample.mask, mmap_mode="r").shape
            elif sample.mask.suffix.lower() in (".jpg", ".jpeg"):
                mask_size = self.decode_mask(sample.mask).shape  # refused there, with the reason
            else:
                mask_size, mode_name = image_header(sample.mask, "mask", displayed=False)
                if mode_name not in MASK_MODES:
                    raise LightsegError(
                        f"mask {sample.mask} has image mode {mode_name!r}; expected a palette, grey or RGB PNG"
                    )
            if mask_size is not None and tuple(mask_size) != size:
                raise size_mismatch(sample, size, tuple(mask_size))

    @property
    def ids(self) -> list[str]:
        """The sample ids, in order."""
        return [s.id for s in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def read_mask(self, index: int) -> np.ndarray:
        """The untransformed ``[H,W]`` uint8 mask of sample ``index`` (label map applied)."""
        path = self.samples[index].mask
        assert path is not None
        return self.decode_mask(path)

    def read_instances(self, index: int) -> np.ndarray | None:
        """Sample ``index``'s ground-truth instance ids ``[H,W]`` (0: none) where evaluation uses them, else ``None``.

        (Cityscapes' iIoU.)
        """
        return None

    def mask_kind(self, index: int) -> str:
        """How sample ``index``'s mask is stored (``palette PNG``, ``16-bit index``, ...), from its header."""
        path = self.samples[index].mask
        assert path is not None
        if path.suffix == ".mat":
            return "SBD .mat"
        if path.suffix == ".npy":
            return "NumPy .npy"
        _, mode = image_header(path, "mask", displayed=False)
        return MASK_KINDS.get(mode, mode)

    def decode_mask(self, path: Path) -> np.ndarray:
        """Class indices of the label file ``path``: SBD ``.mat`` or PNG (through ``label_map``)."""
        if path.suffix == ".mat":
            return read_sbd_mask(path, self.num_classes, self.ignore_index)
        if path.suffix == ".npy":
            return read_npy_mask(path, self.num_classes, self.ignore_index)
        raw = read_mask(path, self.raw_classes, self.ignore_index, self.colormap)
        return raw if self.label_map is None else self.label_map[raw]

    def __getitem__(self, index: int) -> SemanticItem:
        sample = self.samples[index]
        image = read_image(sample.image) if self.bands is None else read_whole(sample.image, self.bands)
        mask = self.read_mask(index)
        if tuple(image.shape[-2:]) != mask.shape:
            raise size_mismatch(sample, tuple(image.shape[-2:]), mask.shape)
        return semantic_item(image, mask, self.transforms, sample.id)


def semantic_item(
    image: torch.Tensor, mask: np.ndarray, transforms: Callable[..., Any] | None, sample_id: str
) -> SemanticItem:
    """The item of an image and its ``[H,W]`` labels, through ``transforms`` (a joint image/mask transform)."""
    img = tv_tensors.Image(image)
    msk = tv_tensors.Mask(torch.from_numpy(mask).long())
    if transforms is not None:
        img, msk = transforms(img, msk)
    return {"image": img.as_subclass(torch.Tensor), "mask": msk.as_subclass(torch.Tensor), "id": sample_id}


def size_mismatch(sample: Sample, size: tuple[int, ...], mask_size: tuple[int, ...]) -> LightsegError:
    """The error for a sample whose image (as read) and mask differ in size."""
    return LightsegError(
        f"image {sample.image} is {tuple(size)} but its mask {sample.mask} is {tuple(mask_size)} (H, W); "
        f"image and label of a sample must have the same size{orientation_hint(sample.image, mask_size)}"
    )


def read_split(path: Path, layout: str) -> list[str]:
    """Ids listed one per line in a split file (first token of each line)."""
    if not path.is_file():
        raise LightsegError(f"split file {path} does not exist; expected the layout {layout}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise LightsegError(
            f"split file {path} is not a UTF-8 text file (byte {err.start}: {err.reason}); "
            "it should list one sample id per line"
        ) from None
    return [line.split()[0] for line in text.splitlines() if line.strip()]
