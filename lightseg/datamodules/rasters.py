"""Images too large to hold, read window by window: what ``lightseg predict`` tiles.

TIFF, BigTIFF, GeoTIFF and Cloud-Optimised GeoTIFF files are opened with rasterio (the
``geo`` extra; its wheels carry GDAL), which reads a window without decoding the rest of
the image, and knows a GeoTIFF's coordinate system, transform and nodata. Pixels become
the floats in [0, 1] that :func:`lightseg.datamodules.io.read_image` makes of a small
image's (the same numbers for the same file), so a large image's tiles see what the
in-memory path would. By default a raster is read as RGB (its red, green and blue bands, or
its one grey band repeated); given ``bands``, exactly those bands, in that order, as the
channels of a multispectral model (RGB + near infrared, Sentinel-2's 13 bands, ...).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightseg.errors import LightsegError, option
from lightseg.visualize import display_rgb

#: files read window by window when they are larger than the predict threshold
TILED_SUFFIXES = (".tif", ".tiff")
#: what the reader divides each pixel type by to reach [0, 1] (read_image's scaling)
SCALES = {"uint8": 255.0, "uint16": 65535.0, "float32": 1.0, "float64": 1.0}
#: GDAL's block cache, in MB, unless the user set GDAL_CACHEMAX: its default is 5 % of the
#: machine's memory, which on a large machine is more than a tiled prediction needs
GDAL_CACHE_MB = "128"
GEO_EXTRA = 'pip install "lightseg[geo]"'


def rasterio_module() -> Any:
    """rasterio, or a one-line error naming the extra that installs it."""
    os.environ.setdefault("GDAL_CACHEMAX", GDAL_CACHE_MB)
    try:
        import rasterio
    except ImportError:
        raise LightsegError(f"reading large TIFF images window by window needs rasterio: {GEO_EXTRA}") from None
    return rasterio


class Raster:
    """A large image on disk and how its pixels become an image in [0, 1]: RGB, or the chosen bands.

    Picklable (it crosses to data-loader workers); each thread opens the file itself when
    it first reads. Implements :class:`lightseg.types.RasterSource`. A plain class, not a
    dataclass: Lightning moves a batch's dataclasses to the device field by field.

    Attributes:
        path: the file.
        size: ``(H, W)`` in pixels.
        bands: the 1-based bands read: as red, green, blue (or the one grey band, repeated) when
            ``chosen`` is false, else as the channels, in this order.
        dtype: the pixels' type (``uint8``, ``uint16``, ``float32``...).
        crs: the coordinate reference system as WKT (``None`` without one).
        transform: the pixel-to-map affine transform (6 numbers, GDAL order) or ``None``.
        nodata: the file's nodata value, if it has one.
        chosen: the bands were chosen by the user (``data.bands``), not found as RGB / grey.
    """

    def __init__(
        self,
        path: Path,
        size: tuple[int, int],
        bands: tuple[int, ...],
        dtype: str,
        crs: str | None = None,
        transform: tuple[float, ...] | None = None,
        nodata: float | None = None,
        chosen: bool = False,
    ) -> None:
        self.path, self.size, self.bands, self.dtype = path, size, bands, dtype
        self.crs, self.transform, self.nodata, self.chosen = crs, transform, nodata, chosen
        self._local = threading.local()

    @property
    def channels(self) -> int:
        """Channels of what is read: the chosen bands', else 3 (RGB, or grey repeated)."""
        return len(self.bands) if self.chosen else 3

    def _as_channels(self, values: np.ndarray) -> np.ndarray:
        """Read bands ``[b,...]`` as the channels the model takes (a grey band repeated as RGB unless chosen)."""
        return values if self.chosen or len(self.bands) == 3 else np.repeat(values, 3, axis=0)

    def __repr__(self) -> str:
        return f"Raster({str(self.path)!r}, {self.size[0]}x{self.size[1]}, bands {self.bands}, {self.dtype})"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_local"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["_local"] = threading.local()
        self.__dict__.update(state)

    def _dataset(self) -> Any:
        handle = getattr(self._local, "dataset", None)
        if handle is None or getattr(self._local, "pid", None) != os.getpid():
            handle = rasterio_module().open(self.path)
            self._local.dataset, self._local.pid = handle, os.getpid()
        return handle

    def read_windows(self, boxes: list[tuple[int, int]], size: tuple[int, int]) -> torch.Tensor:
        """The windows of ``size`` ``(h, w)`` at ``boxes`` (top-left ``(y, x)``) as float32 ``[k,C,h,w]`` in [0, 1]."""
        from rasterio.windows import Window

        height, width = size
        dataset = self._dataset()
        out = np.empty((len(boxes), self.channels, height, width), dtype=np.float32)
        for k, (y, x) in enumerate(boxes):
            try:
                pixels = dataset.read(indexes=list(self.bands), window=Window(x, y, width, height))
            except Exception as err:  # rasterio's errors carry GDAL's text: which block, what failed
                raise LightsegError(
                    f"cannot read image {self.path} at rows {y}..{y + height}, columns {x}..{x + width}: {err}. "
                    "Is the file truncated or damaged?"
                ) from None
            values = pixels.astype(np.float32)
            values /= SCALES[self.dtype]
            if self.dtype.startswith("float"):  # nodata in a float image is often -9999 or NaN: not a pixel value
                values[:, ~self.valid_window(y, x, height, width)] = 0
            out[k] = self._as_channels(values)
        if self.dtype.startswith("float") and _outside_unit(out):
            raise LightsegError(
                f"image {self.path} holds floating-point values outside [0, 1] (in the windows at {boxes[0]}...); "
                "scale it to [0, 1] or save it as 8- or 16-bit"
            )
        return torch.from_numpy(out)

    def valid_window(self, y: int, x: int, height: int, width: int) -> np.ndarray:
        """Which pixels of the window hold data (``[h, w]`` bool): not nodata, not transparent."""
        from rasterio.windows import Window

        # GDAL's dataset mask: nodata where every band holds its nodata value, or alpha / an internal mask says so
        mask = self._dataset().dataset_mask(window=Window(x, y, width, height))
        valid: np.ndarray = mask > 0
        return valid

    def overview(self, longest: int) -> np.ndarray:
        """The image scaled down to ``longest`` pixels on its longer side, ``[h,w,3]`` uint8 (for pictures).

        Chosen bands show as lightseg shows every image that is not RGB
        (:func:`lightseg.visualize.display_rgb`: the first three, each stretched).
        """
        from rasterio.enums import Resampling

        scale = min(1.0, longest / max(self.size))
        shape = (max(1, round(self.size[0] * scale)), max(1, round(self.size[1] * scale)))
        shown = list(self.bands[:3]) if self.chosen else list(self.bands)
        dataset = self._dataset()
        pixels = dataset.read(indexes=shown, out_shape=(len(shown), *shape), resampling=Resampling.nearest)
        unit = np.clip(pixels.astype(np.float32) / SCALES[self.dtype], 0, 1)
        if not self.chosen:
            rgb = self._as_channels(unit)
            return (rgb.transpose(1, 2, 0) * 255).round().astype(np.uint8)
        valid = dataset.dataset_mask(out_shape=shape, resampling=Resampling.nearest) > 0
        return display_rgb(unit, valid)

    def close(self) -> None:
        """Close this thread's handle on the file."""
        handle = getattr(self._local, "dataset", None)
        if handle is not None:
            handle.close()
            self._local.dataset = None


def _outside_unit(values: np.ndarray) -> bool:
    return bool(values.size) and (not np.isfinite(values).all() or values.min() < 0 or values.max() > 1)


def open_raster(path: Path, bands: Sequence[int] | None = None) -> Raster:
    """The header of ``path`` as a :class:`Raster`: size, bands read, georeferencing.

    ``bands``: the 1-based bands to read as the model's channels, in order; ``None``: the
    image's red, green and blue bands (or its grey one). One line when the file cannot be
    read, lacks a band, or its bands or pixel type are not an image the model reads.
    """
    rasterio = rasterio_module()
    try:
        with rasterio.open(path) as dataset:
            read = _rgb_bands(path, dataset) if bands is None else _chosen_bands(path, dataset, bands)
            kinds = {str(dataset.dtypes[b - 1]) for b in read}
            if len(kinds) > 1:
                raise LightsegError(
                    f"image {path}: bands {list(read)} hold different pixel types ({', '.join(sorted(kinds))}); "
                    "write them with one type (gdal_translate -ot)"
                )
            crs = dataset.crs.to_wkt() if dataset.crs else None
            transform = tuple(dataset.transform)[:6] if not dataset.transform.is_identity else None
            size = (dataset.height, dataset.width)
            raster = Raster(Path(path), size, read, kinds.pop(), crs, transform, dataset.nodata, bands is not None)
    except LightsegError:
        raise
    except Exception as err:
        raise LightsegError(f"cannot read image {path}: {err}. Is the file truncated or not an image?") from None
    if raster.dtype not in SCALES:
        raise LightsegError(
            f"image {path} holds {raster.dtype} pixels; lightseg reads 8- and 16-bit images and floats in [0, 1]: "
            "convert it (e.g. gdal_translate -ot UInt16 -scale)"
        )
    return raster


def _rgb_bands(path: Path, dataset: Any) -> tuple[int, ...]:
    """Red, green and blue (by the file's colour interpretation, else the first three of three), or the grey band."""
    from rasterio.enums import ColorInterp

    interpretation = list(dataset.colorinterp)
    count = dataset.count
    if count == 1:
        return (1,)
    named = [interpretation.index(c) + 1 for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
             if c in interpretation]  # fmt: skip
    if len(named) == 3:
        return tuple(named)
    extra = [c for c in interpretation[3:] if c != ColorInterp.alpha]
    if count in (3, 4) and not extra:
        return (1, 2, 3)
    raise LightsegError(
        f"image {path} has {count} bands ({', '.join(c.name for c in interpretation)}); an RGB model reads red, "
        "green and blue: choose the bands the model reads with data.bands (e.g. [4, 3, 2], or all of them for a "
        "model built with in_channels and their mean / std)"
    )


def _chosen_bands(path: Path, dataset: Any, bands: Sequence[int]) -> tuple[int, ...]:
    """``bands`` checked against the file's band count."""
    missing = [b for b in bands if not 1 <= b <= dataset.count]
    if missing:
        raise LightsegError(
            f"image {path} has {dataset.count} band(s) but data.bands asks for band {missing[0]} "
            f"(bands are numbered from 1 to {dataset.count}); fix data.bands or the image"
        )
    return tuple(int(b) for b in bands)


def chosen_bands(bands: Sequence[int] | None, photometric: bool) -> tuple[int, ...] | None:
    """A data module's ``bands`` checked: one line for no band, a band below 1, or colour jitter on other than RGB."""
    if bands is None:
        return None
    if not bands:
        raise LightsegError(f"{option('data', 'bands')} must list at least one band (numbered from 1), or be null")
    if min(bands) < 1:
        raise LightsegError(f"{option('data', 'bands')}: bands are numbered from 1, got {list(bands)}")
    if len(bands) != 3 and photometric:
        raise LightsegError(
            f"{option('data', 'augmentation.photometric')} jitters the colours of RGB images (brightness, contrast, "
            f"saturation, hue); {len(bands)} bands have none: turn it off"
        )
    return tuple(int(b) for b in bands)


def raster_size(path: Path, bands: Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` of an image read as ``bands`` (its bands checked), the file closed again."""
    raster = open_raster(path, bands)
    raster.close()
    return raster.size


def read_whole(path: Path, bands: Sequence[int]) -> torch.Tensor:
    """The chosen ``bands`` of an image that fits in memory, ``[C,H,W]`` float32 in [0, 1] (nodata as 0)."""
    raster = open_raster(path, bands)
    try:
        return raster.read_windows([(0, 0)], raster.size)[0]
    finally:
        raster.close()


def probe(path: Path, tile_above: int, bands: Sequence[int] | None = None) -> Raster | None:
    """``path`` as a :class:`Raster` to predict in tiles when it is a TIFF with a side longer than ``tile_above``.

    ``None`` for every other image (read whole, as before). Without rasterio a TIFF is read
    whole too; one too large for that is refused by the image reader, naming the extra.
    """
    if path.suffix.lower() not in TILED_SUFFIXES:
        return None
    try:
        rasterio = rasterio_module()
    except LightsegError:
        return None
    try:
        with rasterio.open(path) as dataset:
            large = max(dataset.height, dataset.width) > tile_above
    except Exception:  # not for GDAL: the image reader says what is wrong with it
        return None
    return open_raster(path, bands) if large else None
