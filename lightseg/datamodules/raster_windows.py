"""Training on windows of large rasters: image / mask pairs read a window at a time (rasterio, the ``geo`` extra)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lightseg.datamodules.base import SplitDataModule
from lightseg.datamodules.files import semantic_item
from lightseg.datamodules.rasters import SCALES, TILED_SUFFIXES, chosen_bands, open_raster, rasterio_module
from lightseg.datamodules.settings import LoaderSettings, SemanticAugmentation
from lightseg.errors import LightsegError, option
from lightseg.types import SemanticItem

RASTER_LAYOUT = "<root>/<split>/images/<name>.tif and <root>/<split>/masks/<name>.tif"
#: every how many pixels the masks are sampled to find where each class lies (balanced windows)
CLASS_SAMPLING_STEP = 16


def raster_pairs(root: Path, split: str) -> list[tuple[Path, Path]]:
    """The ``(image, mask)`` files of ``split``: ``<root>/<split>/images/*.tif`` and the masks of the same names."""
    folder = root / split
    images = sorted(p for p in (folder / "images").glob("*") if p.suffix.lower() in TILED_SUFFIXES)
    if not images:
        raise LightsegError(f"{folder / 'images'} holds no .tif image; expected the layout {RASTER_LAYOUT}")
    masks = {p.stem: p for p in (folder / "masks").glob("*") if p.suffix.lower() in TILED_SUFFIXES}
    missing = [p.name for p in images if p.stem not in masks]
    if missing:
        raise LightsegError(
            f"{len(missing)} image(s) of {folder / 'images'} have no mask in {folder / 'masks'} (e.g. {missing[0]}); "
            f"expected the layout {RASTER_LAYOUT}"
        )
    unused = sorted(set(masks) - {p.stem for p in images})
    if unused:
        raise LightsegError(f"mask {masks[unused[0]]} has no image in {folder / 'images'}; remove it or add the image")
    return [(p, masks[p.stem]) for p in images]


class RasterPair:
    """A large image and its label raster, checked to lie on the same grid.

    ``bands``: the image's 1-based bands read as channels (``None``: RGB or grey). Picklable;
    each process and thread opens the mask itself.
    """

    def __init__(self, image: Path, mask: Path, bands: Sequence[int] | None = None) -> None:
        self.image = open_raster(image, bands)
        self.mask_path = mask
        self._local = threading.local()
        rasterio = rasterio_module()
        try:
            with rasterio.open(mask) as labels:
                size, count, crs = (labels.height, labels.width), labels.count, labels.crs
                transform = tuple(labels.transform)[:6] if not labels.transform.is_identity else None
                self.mask_nodata = labels.nodata
                kind = str(labels.dtypes[0])
        except Exception as err:
            raise LightsegError(f"cannot read mask {mask}: {err}. Is the file truncated or not an image?") from None
        if count != 1 or not kind.startswith(("uint", "int")):
            raise LightsegError(f"mask {mask} has {count} band(s) of {kind}; a mask is one band of integer labels")
        if size != self.image.size:
            raise LightsegError(
                f"image {image} is {self.image.size} but its mask {mask} is {size} (H, W); they must cover the "
                "same pixels"
            )
        mask_crs = crs.to_wkt() if crs else None
        if (mask_crs, transform) != (self.image.crs, self.image.transform) and None not in (mask_crs, self.image.crs):
            raise LightsegError(
                f"image {image} and its mask {mask} are not on the same grid (coordinate system or transform "
                "differ); warp the mask onto the image's (gdalwarp -te/-tr, or rasterio.warp.reproject)"
            )

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_local": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({**state, "_local": threading.local()})

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return self.image.size

    def read(self, y: int, x: int, height: int, width: int, ignore_index: int) -> tuple[torch.Tensor, np.ndarray]:
        """The window's image ``[C,h,w]`` in [0, 1] and labels ``[h,w]`` (either's nodata -> ``ignore_index``)."""
        image = self.image.read_windows([(y, x)], (height, width))[0]
        return image, self.read_labels(y, x, height, width, ignore_index)

    def read_labels(self, y: int, x: int, height: int, width: int, ignore_index: int) -> np.ndarray:
        """The window's labels ``[h,w]`` int64, the image's and the mask's nodata as ``ignore_index``."""
        from rasterio.windows import Window

        dataset = getattr(self._local, "mask", None)
        if dataset is None:
            dataset = self._local.mask = rasterio_module().open(self.mask_path)
        window = Window(x, y, width, height)
        try:
            labels = dataset.read(1, window=window).astype(np.int64)
        except Exception as err:
            raise LightsegError(f"cannot read mask {self.mask_path} at rows {y}..{y + height}: {err}") from None
        invalid = ~self.image.valid_window(y, x, height, width)
        if self.mask_nodata is not None:
            invalid |= labels == int(self.mask_nodata)
        labels[invalid] = ignore_index
        return labels

    def label_counts(self, num_classes: int, ignore_index: int, strip: int = 1024) -> tuple[np.ndarray, int, list[int]]:
        """Each class's pixels, the ignored pixels (nodata, ignore) and the values that are no class: the whole mask.

        Read a strip of rows at a time (bounded memory, whatever the raster's size).
        """
        counts = np.zeros(num_classes, dtype=np.int64)
        ignored, wrong = 0, set()
        for top in range(0, self.size[0], strip):
            rows = min(strip, self.size[0] - top)
            labels = self.read_labels(top, 0, rows, self.size[1], ignore_index)
            skip = labels == ignore_index
            ignored += int(skip.sum())
            values = labels[~skip]
            wrong |= set(np.unique(values[(values < 0) | (values >= num_classes)]).tolist())
            counts += np.bincount(values[(values >= 0) & (values < num_classes)], minlength=num_classes)
        return counts, ignored, sorted(wrong)

    def channel_moments(self, step: int = CLASS_SAMPLING_STEP) -> np.ndarray:
        """``[3, C]``: valid pixels sampled every ``step``, per channel as the model reads it: count, sum, squares."""
        from rasterio.enums import Resampling

        shape = (max(1, self.size[0] // step), max(1, self.size[1] // step))
        with rasterio_module().open(self.image.path) as dataset:
            pixels = dataset.read(list(self.image.bands), out_shape=(len(self.image.bands), *shape),
                                  resampling=Resampling.nearest).astype(np.float64)  # fmt: skip
            valid = dataset.dataset_mask(out_shape=shape, resampling=Resampling.nearest) > 0
        values = pixels / SCALES[self.image.dtype]
        if self.image.dtype.startswith("float"):  # a float image's nodata (-9999, NaN) reads as 0, as in training
            values[:, ~valid] = 0
        if self.image.channels != len(self.image.bands):  # a grey band read as RGB
            values = np.repeat(values, 3, axis=0)
        kept = values[:, valid]
        channels = self.image.channels
        return np.stack([np.full(channels, kept.shape[1], dtype=np.float64), kept.sum(1), (kept**2).sum(1)])

    def class_points(self, num_classes: int, ignore_index: int) -> list[np.ndarray]:
        """Per class, the ``[n, 2]`` pixel positions (every :data:`CLASS_SAMPLING_STEP` pixels) where it lies."""
        from rasterio.enums import Resampling

        step = CLASS_SAMPLING_STEP
        with rasterio_module().open(self.mask_path) as dataset:
            shape = (max(1, self.size[0] // step), max(1, self.size[1] // step))
            labels = dataset.read(1, out_shape=shape, resampling=Resampling.nearest)
        rows, cols = np.indices(labels.shape)
        scale = (self.size[0] / shape[0], self.size[1] / shape[1])
        points = []
        for label in range(num_classes):
            hit = labels == label
            points.append(
                np.stack([(rows[hit] * scale[0]).astype(np.int64), (cols[hit] * scale[1]).astype(np.int64)], 1)
            )
        return points


class RasterWindows(Dataset[SemanticItem]):
    """Windows of large image / mask rasters: random ones (training) or a grid covering every pixel once (evaluation).

    Only the window is read from disk. Random windows are drawn from torch's generator, so
    lightseg's training order seeds them per sample (reproducible, resumable mid-epoch); a
    raster is picked in proportion to its area, or, with ``balance``, a class first (each
    class present equally likely) and a window around a pixel of it. The grid's windows
    are ``window`` apart, those at the right and bottom edges clipped to the raster, so
    that evaluation scores each pixel exactly once.
    """

    def __init__(
        self,
        pairs: Sequence[RasterPair],
        window: int,
        num_classes: int,
        ignore_index: int = 255,
        count: int | None = None,
        balance: bool = False,
        transforms: Callable[..., Any] | None = None,
        name: str = "raster windows",
    ) -> None:
        self.pairs = list(pairs)
        self.window = window
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.count = count
        self.transforms = transforms
        self.name = name
        self.grid = [
            (k, y, x, min(window, pair.size[0] - y), min(window, pair.size[1] - x))
            for k, pair in enumerate(self.pairs)
            for y in range(0, pair.size[0], window)
            for x in range(0, pair.size[1], window)
        ]
        self.areas = torch.tensor([float(p.size[0] * p.size[1]) for p in self.pairs], dtype=torch.float64)
        self.points: list[list[np.ndarray]] | None = None
        if balance:
            per_pair = [pair.class_points(num_classes, ignore_index) for pair in self.pairs]
            self.points = [[points[c] for points in per_pair] for c in range(num_classes)]

    def __len__(self) -> int:
        return self.count if self.count is not None else len(self.grid)

    def __getitem__(self, index: int) -> SemanticItem:
        if self.count is None:
            k, y, x, height, width = self.grid[index]
        else:
            k, y, x, height, width = self._random_window()
        pair = self.pairs[k]
        image, labels = pair.read(y, x, height, width, self.ignore_index)
        wrong = (labels >= self.num_classes) & (labels != self.ignore_index) | (labels < 0)
        if wrong.any():
            raise LightsegError(
                f"mask {pair.mask_path} holds label {int(labels[wrong][0])} at rows {y}..{y + height}, columns "
                f"{x}..{x + width}; the data has {self.num_classes} classes (0..{self.num_classes - 1}) and "
                f"{self.ignore_index} for ignore"
            )
        return semantic_item(image, labels, self.transforms, f"{pair.image.path.stem}@{y},{x}")

    def _random_window(self) -> tuple[int, int, int, int, int]:
        if self.points is not None:
            present = [c for c, per_pair in enumerate(self.points) if sum(len(p) for p in per_pair) > 0]
            label = present[int(torch.randint(len(present), ()))]
            sizes = torch.tensor([float(len(p)) for p in self.points[label]])
            k = int(torch.multinomial(sizes, 1))
            cy, cx = self.points[label][k][int(torch.randint(len(self.points[label][k]), ()))]
            height, width = (min(self.window, s) for s in self.pairs[k].size)
            y = int(np.clip(cy - height // 2, 0, self.pairs[k].size[0] - height))
            x = int(np.clip(cx - width // 2, 0, self.pairs[k].size[1] - width))
            return k, y, x, height, width
        k = int(torch.multinomial(self.areas, 1))
        height, width = (min(self.window, s) for s in self.pairs[k].size)
        y = int(torch.randint(self.pairs[k].size[0] - height + 1, ()))
        x = int(torch.randint(self.pairs[k].size[1] - width + 1, ()))
        return k, y, x, height, width


#: the windows' training augmentation: flips both ways (an aerial or microscope view has no up)
RASTER_AUGMENTATION = SemanticAugmentation(vflip=True)


class RasterWindowsDataModule(SplitDataModule):
    """Large image / mask rasters (GeoTIFF, BigTIFF, TIFF), trained on random windows and evaluated on a grid.

    Layout: ``<root>/<split>/images/<name>.tif`` and ``<root>/<split>/masks/<name>.tif`` (one band
    of class indices; the mask's nodata, and the image's, read as ``ignore_index``), image and
    mask on the same grid (size, coordinate system and transform: checked). Each epoch draws
    ``windows_per_epoch`` random windows of ``window_size`` (then the usual augmentation:
    ``crop_size``, flips...); validation and test cover every pixel of their rasters once with
    a grid of windows. Prediction on such rasters is ``lightseg predict``'s large-image path.
    Small rasters (image chips) work the same way: a window larger than a raster is the whole raster.

    Multispectral images: ``bands`` lists the bands the model reads, e.g. ``[4, 3, 2, 8]`` for
    red, green, blue and near infrared of a Sentinel-2 file (pictures show the first three as
    RGB, so a natural-colour order first is easiest to look at); the task is then built with
    ``in_channels`` equal to their count and their ``mean`` / ``std``, which ``lightseg data
    check`` prints. ``lightseg predict`` reads the same bands of every image.

    Args:
        root: the folder of the splits.
        class_names: the class of each mask value 0, 1, ...
        class_colors: their ``[R, G, B]`` colours (the generated palette otherwise).
        window_size: side of the windows read from the rasters.
        windows_per_epoch: random training windows per epoch.
        balance_classes: draw training windows around a pixel of a class chosen uniformly
            among the classes present (rare classes are seen as often as common ones), not
            uniformly over the area.
        bands: the 1-based bands of every image read as the model's channels, in this order
            (``None``: the image's red, green and blue bands, or its one grey band as RGB).
        augmentation: the windows' training augmentation (a
            :class:`~lightseg.datamodules.settings.SemanticAugmentation`): flips both ways by default (an
            aerial or microscope view has no up).
        loader: how batches of windows are loaded (a :class:`~lightseg.datamodules.settings.LoaderSettings`).
        **kwargs: splits (``train_split``: ``train``; ``val_split`` / ``test_split``: ``val``) and the other
            options of :class:`~lightseg.datamodules.SplitDataModule`.
    """

    def __init__(
        self,
        root: str,
        class_names: list[str],
        class_colors: list[tuple[int, int, int]] | None = None,
        window_size: int = 512,
        windows_per_epoch: int = 1000,
        balance_classes: bool = False,
        bands: list[int] | None = None,
        augmentation: SemanticAugmentation = RASTER_AUGMENTATION,
        loader: LoaderSettings = LoaderSettings(),  # noqa: B008 (frozen: one shared default is safe)
        **kwargs: Any,
    ) -> None:
        augmentation = SemanticAugmentation.with_flat(augmentation, kwargs)
        chosen = chosen_bands(bands, augmentation.photometric)
        super().__init__(augmentation=augmentation, loader=loader, **kwargs)
        self.bands = chosen
        if not class_names:
            raise LightsegError(f"{option('data', 'class_names')} must name the classes of the mask values 0, 1, ...")
        for name, value in (("window_size", window_size), ("windows_per_epoch", windows_per_epoch)):
            if value < 1:
                raise LightsegError(f"{option('data', name)} must be >= 1, got {value}")
        self.root = Path(root)
        self.class_names = tuple(class_names)
        self.num_classes = len(class_names)
        self._colors = [tuple(c) for c in class_colors] if class_colors else None
        self.window_size = window_size
        self.windows_per_epoch = windows_per_epoch
        self.balance_classes = balance_classes

    @property
    def class_colors(self) -> Sequence[tuple[int, ...]] | None:
        """The configured class colours, if any."""
        return self._colors

    def make_dataset(self, split: str, transforms: Callable[..., Any] | None) -> Dataset[Any]:
        pairs = [RasterPair(image, mask, self.bands) for image, mask in raster_pairs(self.root, split)]
        training = transforms is not None
        return RasterWindows(
            pairs, self.window_size, self.num_classes, self.ignore_index,
            count=self.windows_per_epoch if training else None, balance=self.balance_classes and training,
            transforms=transforms, name=f"rasters {split} ({self.root / split})",
        )  # fmt: skip
