"""A large image's prediction written band by band, then as a tiled, compressed (Geo)TIFF."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from lightseg.datamodules.rasters import Raster, rasterio_module
from lightseg.errors import LightsegError

#: ``--prediction.probabilities`` for images predicted in tiles: none, the top class's, every class's
Probabilities = Literal["none", "top", "all"]
#: side of the written TIFF's tiles (the Cloud-Optimised GeoTIFF default)
BLOCK = 512
#: overviews are built down to this size, so that GIS viewers draw the whole image at once
SMALLEST_OVERVIEW = 256


class RasterOutput:
    """Where the bands of one large image's prediction go while it runs, and the files they become.

    Bands land in raw files (rows at their offsets: any order, any number of writers), then
    :meth:`finish` writes each as a tiled, compressed BigTIFF where needed, with the source's
    coordinate system, transform and an overview pyramid (nearest): the labels (a colour
    table of the class colours where they fit 8 bits; ``nodata`` where the source has no
    data), and optionally the top class's probability or every class's, as 0..255.

    Args:
        source: the image predicted.
        labels_path: the labels TIFF to write.
        num_classes: classes the model predicts.
        class_names: their names (the TIFF's metadata).
        palette: ``[256, 3]`` class colours (the labels' colour table).
        label_ids: label of each class index written instead of the index (Cityscapes' label ids).
        probabilities: also write the top class's probability (``top``) or every class's (``all``).
        probabilities_path: where those go.
        state: the folder that keeps the raw bands and the rows written (``<name>.json``) until
            the TIFFs are written, across runs: a run stopped half-way (Ctrl-C, a crash, a
            full disk) resumes at its first unwritten row when the same image is predicted
            again by the same model and settings into the same place.
        fingerprint: the model and settings that make the bands (what a resumed run must share).
        process: ``(rank, processes)``: under DDP each process writes its share of the rows
            (:attr:`rows`) into the same raw files, and process 0 writes the TIFFs once all
            have (:meth:`finish`): the files one process would write.
        stripes: the column ranges the image is predicted in (the whole width by default);
            each process writes its rows of every stripe, stripe after stripe.
    """

    def __init__(
        self,
        source: Raster,
        labels_path: Path,
        num_classes: int,
        class_names: Sequence[str],
        palette: np.ndarray,
        label_ids: np.ndarray | None = None,
        probabilities: Probabilities = "none",
        probabilities_path: Path | None = None,
        state: Path | None = None,
        fingerprint: str = "",
        process: tuple[int, int] = (0, 1),
        stripes: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        self.source = source
        self.labels_path = labels_path
        self.class_names = list(class_names)
        self.palette = palette
        self.label_ids = label_ids
        self.probabilities = probabilities
        self.probabilities_path = probabilities_path
        largest = int(label_ids.max()) if label_ids is not None else num_classes - 1
        # the label one past the largest marks nodata
        self.dtype = np.uint8 if largest < 255 else np.uint16
        self.nodata = int(np.iinfo(self.dtype).max)
        height, width = source.size
        self.size = (height, width)
        state = state or labels_path.parent
        rank, processes = process
        #: this process's rows ``(start, stop)``: all of them, or its share under DDP
        self.rows = (height * rank // processes, height * (rank + 1) // processes)
        self.stripes = list(stripes) if stripes is not None else [(0, width)]
        part = "" if processes == 1 else f".rank{rank}of{processes}"
        self.state = state / f"{labels_path.stem}{part}.json"
        self._stem = labels_path.stem
        self._raw = {"labels": (state / (labels_path.name + ".labels.raw"), self.dtype, 1)}
        if probabilities != "none":
            assert probabilities_path is not None
            bands = num_classes if probabilities == "all" else 1
            self._raw["probabilities"] = (state / (labels_path.name + ".probabilities.raw"), np.uint8, bands)
        stat = source.path.stat()
        self._key = {
            "image": str(source.path.resolve()), "bytes": stat.st_size, "modified_ns": stat.st_mtime_ns,
            "size": list(self.size), "model": fingerprint, "label_ids": label_ids is not None,
            "probabilities": probabilities, "dtype": np.dtype(self.dtype).name, "rows": list(self.rows),
            "stripes": [list(stripe) for stripe in self.stripes],
        }  # fmt: skip
        #: the stripe being written and its first row not written yet (where a stopped run left off)
        self.done = self._resumed()
        if self.done == (0, self.rows[0]):
            for path, dtype, bands in self._raw.values():
                path.parent.mkdir(parents=True, exist_ok=True)
                size = bands * height * width * np.dtype(dtype).itemsize
                # never truncated when there: other processes may be writing their rows into it
                with path.open("ab") as file:
                    if file.tell() != size:
                        file.truncate(size)  # sparse until written
            self._record()

    def _resumed(self) -> tuple[int, int]:
        """``(stripe, row)`` where a stopped run of the same image, model, settings and share stopped.

        The first stripe and the share's first row where there is none.
        """
        try:
            saved = json.loads(self.state.read_text())
        except (OSError, ValueError):
            return (0, self.rows[0])
        complete = all(
            path.is_file() and path.stat().st_size == bands * self.size[0] * self.size[1] * np.dtype(dtype).itemsize
            for path, dtype, bands in self._raw.values()
        )
        if saved.get("key") != self._key or not complete:
            return (0, self.rows[0])
        stripe, row = saved.get("done", (0, self.rows[0]))
        return (int(stripe), int(row))

    def _record(self) -> None:
        partial = self.state.with_name(self.state.name + ".partial")
        partial.write_text(json.dumps({"key": self._key, "done": list(self.done)}))
        partial.replace(self.state)

    def write(self, stripe: int, first: int, labels: torch.Tensor, probs: torch.Tensor) -> None:
        """Rows ``first .. first+n`` of stripe ``stripe``: labels ``[n,w]`` and probabilities ``[C,n,w]``."""
        left, right = self.stripes[stripe]
        values = labels.numpy().astype(self.dtype, copy=False)
        if self.label_ids is not None:
            values = self.label_ids[values].astype(self.dtype, copy=False)
        valid = self.source.valid_window(first, left, values.shape[0], right - left)
        if not valid.all():
            values = np.where(valid, values, self.dtype(self.nodata))
        self._put("labels", first, left, values[None])
        if self.probabilities != "none":
            kept = probs.max(0, keepdim=True).values if self.probabilities == "top" else probs
            self._put("probabilities", first, left, (kept * 255).round_().to(torch.uint8).cpu().numpy())
        self.done = (stripe, first + values.shape[0])
        self._record()  # after the rows: a stop in between rewrites them, never skips them

    def stripe_done(self, stripe: int) -> None:
        """Record that this process wrote all its rows of ``stripe``."""
        self.done = (stripe + 1, self.rows[0])
        self._record()

    def _put(self, name: str, first: int, left: int, values: np.ndarray) -> None:
        path = self._raw[name][0]
        try:
            self._write_rows(name, first, left, values)
        except OSError as err:
            raise LightsegError(
                f"cannot write the prediction of {self.source.path} to {path}: {err} (is the disk full?); the "
                "rows written are kept: the same command goes on from there"
            ) from None

    def _write_rows(self, name: str, first: int, left: int, values: np.ndarray) -> None:
        path, dtype, bands = self._raw[name]
        height, width = self.size
        itemsize = np.dtype(dtype).itemsize
        rows, columns = values.shape[-2:]
        with path.open("r+b") as file:
            for band in range(bands):
                if columns == width:  # whole rows: one write
                    file.seek((band * height + first) * width * itemsize)
                    file.write(np.ascontiguousarray(values[band]).tobytes())
                    continue
                for row in range(rows):
                    file.seek(((band * height + first + row) * width + left) * itemsize)
                    file.write(np.ascontiguousarray(values[band, row]).tobytes())

    def finish(self) -> None:
        """Write the TIFFs from the raw bands (a strip of tiles at a time) and remove the raw files."""
        path, dtype, _ = self._raw["labels"]
        tags = {"CLASSES": json.dumps(self.class_names)}
        colours = None
        if self.dtype == np.uint8 and self.label_ids is None:
            colours = {i: (*map(int, self.palette[i]), 255) for i in range(len(self.class_names))}
        self._tiff(path, self.labels_path, dtype, 1, self.nodata, tags, colours)
        if self.probabilities != "none":
            assert self.probabilities_path is not None
            raw, _, bands = self._raw["probabilities"]
            names = ["top class"] if self.probabilities == "top" else self.class_names
            self._tiff(raw, self.probabilities_path, np.uint8, bands, None, {"BANDS": json.dumps(names)}, None)
        self.discard()

    def discard(self) -> None:
        """Remove the raw bands and every process's record of the rows written."""
        for path, _, _ in self._raw.values():
            path.unlink(missing_ok=True)
        for state in [self.state.parent / f"{self._stem}.json", *self.state.parent.glob(f"{self._stem}.rank*of*.json")]:
            state.unlink(missing_ok=True)

    def _tiff(
        self,
        raw: Path,
        target: Path,
        dtype: Any,
        bands: int,
        nodata: int | None,
        tags: dict[str, str],
        colours: dict[int, tuple[int, ...]] | None,
    ) -> None:
        rasterio = rasterio_module()
        from rasterio.enums import Resampling
        from rasterio.transform import Affine
        from rasterio.windows import Window

        height, width = self.size
        profile: dict[str, Any] = {
            "driver": "GTiff", "height": height, "width": width, "count": bands, "dtype": np.dtype(dtype).name,
            "compress": "deflate", "BIGTIFF": "IF_SAFER", "nodata": nodata, "tiled": True, "blockxsize": BLOCK,
            "blockysize": BLOCK,
        }  # fmt: skip
        if self.source.crs is not None:
            profile["crs"] = self.source.crs
        if self.source.transform is not None:
            profile["transform"] = Affine(*self.source.transform)
        itemsize = np.dtype(dtype).itemsize
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with rasterio.open(target, "w", **profile) as out, raw.open("rb") as file:
                for band in range(bands):
                    for top in range(0, height, BLOCK):
                        rows = min(BLOCK, height - top)
                        file.seek((band * height + top) * width * itemsize)
                        strip = np.frombuffer(file.read(rows * width * itemsize), dtype=dtype).reshape(rows, width)
                        out.write(strip, band + 1, window=Window(0, top, width, rows))
                out.update_tags(**tags)
                if colours is not None:
                    out.write_colormap(1, colours)
                levels = [2**k for k in range(1, 32) if max(height, width) / 2**k >= SMALLEST_OVERVIEW]
                if levels:
                    out.build_overviews(levels, Resampling.nearest)
        except OSError as err:
            target.unlink(missing_ok=True)
            raise LightsegError(f"cannot write {target}: {err} (is the disk full?)") from None

    def polygons(self, target: Path) -> int:
        """Write one GeoJSON feature per connected region of a class (its ``class`` name and ``label``); their number.

        GDAL polygonizes the labels TIFF a few rows at a time (memory set by the regions open
        across a row, not the image); coordinates are in the image's coordinate system (map
        units; pixels where it has none), nodata left out.
        """
        rasterio = rasterio_module()
        from rasterio.features import shapes

        target.parent.mkdir(parents=True, exist_ok=True)
        count = 0
        with rasterio.open(self.labels_path) as labels, target.open("w") as out:
            out.write('{"type": "FeatureCollection", ')
            epsg = labels.crs.to_epsg() if labels.crs else None
            if epsg is not None:  # GeoJSON 2008's member, which GDAL and QGIS read for projected data
                out.write(f'"crs": {{"type": "name", "properties": {{"name": "urn:ogc:def:crs:EPSG::{epsg}"}}}}, ')
            out.write('"features": [\n')
            names = self.class_names
            inverse = {int(v): k for k, v in enumerate(self.label_ids)} if self.label_ids is not None else None
            for geometry, value in shapes(rasterio.band(labels, 1), connectivity=4, transform=labels.transform):
                label = int(value)
                if label == self.nodata:
                    continue
                index = inverse.get(label, -1) if inverse is not None else label
                name = names[index] if 0 <= index < len(names) else str(label)
                feature = {"type": "Feature", "properties": {"class": name, "label": label}, "geometry": geometry}
                out.write((",\n" if count else "") + json.dumps(feature))
                count += 1
            out.write("\n]}\n")
        return count

    def overview(self, longest: int) -> tuple[np.ndarray, np.ndarray]:
        """The image and its labels scaled down to ``longest`` pixels (nearest), for the overlay."""
        from rasterio.enums import Resampling

        image = self.source.overview(longest)
        with rasterio_module().open(self.labels_path) as labels:
            mask = labels.read(1, out_shape=image.shape[:2], resampling=Resampling.nearest)
        if self.label_ids is not None:  # back from label ids to the classes the legend names
            classes = np.full(int(np.iinfo(self.dtype).max) + 1, self.nodata, dtype=self.dtype)
            classes[self.label_ids] = np.arange(len(self.label_ids), dtype=self.dtype)
            mask = classes[mask]
        return image, mask
