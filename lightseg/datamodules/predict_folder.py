"""The images ``lightseg predict`` reads: a folder (or one file), large TIFFs left to be read window by window."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from lightseg.datamodules.io import IMAGE_EXTENSIONS, read_image
from lightseg.datamodules.rasters import probe, read_whole
from lightseg.errors import LightsegError
from lightseg.types import PredictItem

#: what makes a batch of a loader's items
Collate = Callable[[Sequence[dict[str, Any]]], dict[str, Any]]


class ImageFolderDataset(Dataset[PredictItem]):
    """Every image under ``root`` (recursively, sorted), or the image ``root`` is, for ``lightseg predict``.

    Items carry the image's path relative to ``root`` and its ``(H, W)`` so that writers can
    crop the padding away and mirror the folder structure. With ``tile_above``, a TIFF with
    a side longer than that is not read: its item carries a
    :class:`~lightseg.datamodules.rasters.Raster` under ``raster`` (read window by window
    by the task) instead of ``image``. With ``bands``, every image is read through rasterio
    as those 1-based bands, in order (a multispectral model's channels).
    """

    def __init__(self, root: str | Path, tile_above: int | None = None, bands: Sequence[int] | None = None) -> None:
        self.root = Path(root)
        self.tile_above = tile_above
        self.bands = tuple(bands) if bands is not None else None
        if self.root.is_file() and self.root.suffix.lower() in IMAGE_EXTENSIONS:  # one image: a scene, a slide
            self.paths = [self.root]
            self.root = self.root.parent
            return
        if not self.root.is_dir():
            raise LightsegError(
                f"predict_dir {self.root} is neither a folder nor an image ({', '.join(IMAGE_EXTENSIONS)}); pass a "
                "folder of images or one image"
            )
        self.paths = sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not self.paths:
            raise LightsegError(f"predict_dir {self.root} holds no image ({', '.join(IMAGE_EXTENSIONS)})")

    def __len__(self) -> int:
        return len(self.paths)

    def every_process(self) -> list[int]:
        """The large images: under DDP every process reads them and predicts its share of their rows."""
        if self.tile_above is None:
            return []
        return [i for i, path in enumerate(self.paths) if probe(path, self.tile_above, self.bands) is not None]

    def __getitem__(self, index: int) -> PredictItem:
        path = self.paths[index]
        relative = str(path.relative_to(self.root))
        raster = probe(path, self.tile_above, self.bands) if self.tile_above is not None else None
        if raster is not None:
            return {"raster": raster, "path": relative, "size": raster.size}
        image = read_image(path) if self.bands is None else read_whole(path, self.bands)
        return {"image": image, "path": relative, "size": (int(image.shape[-2]), int(image.shape[-1]))}


def predict_collate(items: Sequence[dict[str, Any]], collate: Collate) -> dict[str, Any]:
    """A predict batch: the images ``collate`` makes a batch of, and ``rasters``, ``(raster, path)`` of the large ones.

    A batch of large images only has no ``image``, ``path`` or ``size``.
    """
    held = [item for item in items if "raster" not in item]
    batch = collate(held) if held else {}
    rasters = [(item["raster"], item["path"]) for item in items if "raster" in item]
    if rasters:
        batch["rasters"] = rasters
    return batch
