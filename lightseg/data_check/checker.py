"""``lightseg data check``: what a data set holds and what is wrong with it, before a run finds out.

Reads every sample of every split of any lightseg data module the way training does
(the same readers, the same label mapping) and reports, per split: the number of samples,
image sizes, the mask formats found, each class's share of the labelled pixels and the
number of images it occurs in; and every problem with the file it is in: missing images
or masks, masks without an image, unreadable files, label values or colours that are not
classes, image/mask size mismatches, identical images in two splits, into a
:class:`~lightseg.data_check.report.DataReport` (its tables, JSON and picture: :mod:`lightseg.data_check.report`;
the command: :mod:`lightseg.cli.data_command`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from lightseg.contract import data_palette
from lightseg.data_check.report import DataReport, Finding, SplitStats
from lightseg.data_check.samples import (
    Inspected,
    detection_picture,
    inspect_semantic,
    picture_of,
    raster_picture,
    read_image_file,
)
from lightseg.datamodules.base import BaseDataModule, SplitDataModule
from lightseg.datamodules.coco_format import COCODataset
from lightseg.datamodules.coco_panoptic import PanopticDataModule
from lightseg.datamodules.detection import DetectionDataModule
from lightseg.datamodules.files import BinaryMaskError, SegmentationFiles
from lightseg.datamodules.folder import SegmentationFolderDataModule
from lightseg.datamodules.io import orientation_hint, progress, read_image_uint8
from lightseg.datamodules.panoptic_files import COCOPanopticDataset
from lightseg.datamodules.raster_windows import RasterPair, RasterWindowsDataModule, raster_pairs
from lightseg.datamodules.streaming import StreamingDetectionDataModule, StreamingSegmentationDataModule
from lightseg.errors import LightsegError


class _Checker:
    def __init__(self, datamodule: BaseDataModule, workers: int, limit: int, pictures: int) -> None:
        self.datamodule = datamodule
        self.workers = max(1, workers)
        self.limit = limit
        self.pictures = pictures
        instances = isinstance(datamodule, DetectionDataModule)
        palette = data_palette(datamodule)  # the colours of every picture of this data set
        self.report = DataReport(type(datamodule).__name__, tuple(datamodule.class_names), palette, instances)
        self.seen: dict[str, tuple[str, str]] = {}  # image digest -> (split, file)

    def note_digest(self, digest: str | None, split: str, path: str) -> None:
        if digest is None:
            return
        first = self.seen.setdefault(digest, (split, path))
        if first[0] != split:
            self.report.findings.append(Finding("leakage", split, path, f"identical to {first[1]} in split {first[0]}"))

    def check_count(self, split: str, found: int) -> None:
        expected = type(self.datamodule).expected_counts.get(split)
        if expected is not None and found != expected:
            self.report.findings.append(
                Finding(
                    "count", split, "", f"{found} samples; the official release has {expected:,}", severity="warning"
                )
            )

    def run(self) -> DataReport:
        if isinstance(self.datamodule, StreamingSegmentationDataModule | StreamingDetectionDataModule):
            raise LightsegError(
                f"lightseg data check reads a data set's files, and {type(self.datamodule).__name__} reads a pack "
                "(checked sample by sample as it was written): check the data module it was packed from"
            )
        if isinstance(self.datamodule, RasterWindowsDataModule):
            self.check_rasters(self.datamodule)
        elif isinstance(self.datamodule, SplitDataModule):
            on_missing = self.datamodule.on_missing
            self.datamodule.on_missing = "skip"  # list what is missing instead of stopping at it
            try:
                names = self.datamodule.split_names()
            except LightsegError as err:  # the splits themselves cannot be found: said in the report
                self.report.findings.append(Finding("split", "all", "", str(err)))
                names = []
            try:
                self.check_semantic(self.datamodule, names)
            finally:
                self.datamodule.on_missing = on_missing
        elif isinstance(self.datamodule, DetectionDataModule):
            self.check_detection(self.datamodule)
        elif isinstance(self.datamodule, PanopticDataModule):
            self.check_panoptic(self.datamodule)
        else:
            raise LightsegError(
                f"lightseg data check reads semantic (SplitDataModule), COCO-style detection and panoptic data "
                f"modules; {type(self.datamodule).__name__} is none of them"
            )
        return self.report

    def _limited(self, items: list[Any]) -> list[Any]:
        return items[: self.limit] if self.limit > 0 else items

    def check_semantic(self, datamodule: SplitDataModule, names: list[str]) -> None:
        orphaned = datamodule.orphans if isinstance(datamodule, SegmentationFolderDataModule) else {}
        for orphan_split, orphans in orphaned.items():
            for path in orphans:
                self.report.findings.append(Finding("orphan_mask", orphan_split, str(path), "no image"))
        for split in names:
            try:
                with warnings.catch_warnings():  # what is skipped is listed in the report
                    warnings.filterwarnings("ignore", message=".*samples whose files are missing")
                    dataset = datamodule.make_dataset(split, None)
            except LightsegError as err:
                self.report.findings.append(Finding("split", split, "", str(err)))
                continue
            if not isinstance(dataset, SegmentationFiles):
                kind = type(datamodule).__name__
                raise LightsegError(f"lightseg data check cannot read the {split} split of {kind}")
            try:
                dataset.check_masks_are_not_binary_255()
            except BinaryMaskError as err:
                self.report.findings.append(Finding("split", split, "", str(err)))
            except LightsegError:
                pass  # a mask that cannot be read: reported with its file below
            self.check_semantic_split(dataset, split)

    def check_rasters(self, datamodule: RasterWindowsDataModule) -> None:
        """Every raster pair's headers (size, grid), every mask's labels (a strip at a time), a window of each drawn."""
        num_classes, ignore_index = datamodule.num_classes, datamodule.ignore_index
        for split in datamodule.split_names():
            try:
                pairs = self._limited(raster_pairs(datamodule.root, split))
            except LightsegError as err:
                self.report.findings.append(Finding("split", split, "", str(err)))
                continue
            stats = SplitStats(split, num_classes)
            self.report.splits[split] = stats
            readable = []
            for image, mask in progress(pairs, f"checking {split}", len(pairs)):
                try:
                    pair = RasterPair(image, mask, datamodule.bands)
                    counts, ignored, wrong = pair.label_counts(num_classes, ignore_index)
                except LightsegError as err:
                    text = str(err)
                    kind = "unreadable_image" if text.startswith(("image", "cannot read image")) else "unreadable_mask"
                    if "but its mask" in text or "same grid" in text:
                        kind = "size_mismatch"
                    self.report.findings.append(Finding(kind, split, str(mask if "mask" in kind else image), text))
                    continue
                stats.samples += 1
                stats.sizes.append(pair.size)
                stats.mask_kinds["GeoTIFF / TIFF raster"] += 1
                stats.class_pixels += counts
                stats.class_images += counts > 0
                stats.ignore_pixels += ignored
                moments = pair.channel_moments()
                stats.band_moments = moments if stats.band_moments is None else stats.band_moments + moments
                if wrong:
                    detail = f"values {wrong[:8]} are no class (0..{num_classes - 1}, {ignore_index} ignore)"
                    self.report.findings.append(Finding("bad_labels", split, str(mask), detail))
                readable.append(pair)
            self.report.pictures[split] = [raster_picture(pair, datamodule.window_size, ignore_index)
                                           for pair in readable[: self.pictures]]  # fmt: skip

    def check_semantic_split(self, dataset: SegmentationFiles, split: str) -> None:
        stats = SplitStats(split, dataset.num_classes)
        self.report.splits[split] = stats
        for sample, what in dataset.missing:
            if what.startswith("image"):
                self.report.findings.append(Finding("missing_image", split, str(sample.image), "image file is missing"))
            else:
                detail = f"{what} is missing" if sample.mask is not None else "no mask of this name"
                self.report.findings.append(Finding("missing_mask", split, str(sample.image), detail))
        indices = self._limited(list(range(len(dataset))))
        stats.samples = len(indices)
        self.check_count(split, len(dataset.samples) + len(dataset.missing))
        with ThreadPoolExecutor(self.workers) as pool:
            results = pool.map(lambda k: inspect_semantic(dataset, k, split), indices)
            for k, result in progress(zip(indices, results, strict=True), f"checking {split}", len(indices)):
                sample = dataset.samples[k]
                self.report.findings += result.findings
                self.note_digest(result.digest, split, str(sample.image))
                if result.size is not None:
                    stats.sizes.append(result.size)
                    stats.exif_oriented += result.orientation != 1
                if result.mask_kind is not None:
                    stats.mask_kinds[result.mask_kind] += 1
                if result.moments is not None:
                    stats.band_moments = result.moments + (0 if stats.band_moments is None else stats.band_moments)
                if result.counts is not None:
                    stats.class_pixels += result.counts
                    stats.class_images += result.counts > 0
                    stats.ignore_pixels += result.ignore_pixels
        failed = {f.file for f in self.report.errors if f.kind != "leakage"}  # files that cannot be drawn
        self.report.pictures[split] = [
            (picture_of(dataset.samples[k].image, dataset.bands), dataset.read_mask(k))
            for k in _spread(indices, self.pictures)
            if str(dataset.samples[k].image) not in failed and str(dataset.samples[k].mask) not in failed
        ]

    def check_each_split(
        self, make: Callable[[str], Any], files: Callable[[Any], tuple[str, str]], check: Callable[[Any, str], None]
    ) -> None:
        """``check`` each split's dataset (``make(split)``) once: test often reads val's ``files``."""
        done: set[tuple[str, str]] = set()
        for stage in ("train", "val", "test"):
            try:
                dataset = make(stage)
            except LightsegError as err:
                self.report.findings.append(Finding("split", stage, "", str(err)))
                continue
            if files(dataset) not in done:
                done.add(files(dataset))
                check(dataset, stage)

    def check_detection(self, datamodule: DetectionDataModule) -> None:
        def files(dataset: COCODataset) -> tuple[str, str]:
            return (str(dataset.annotations.source), str(dataset.images_dir))

        self.check_each_split(datamodule.make_dataset, files, self.check_detection_split)

    def check_detection_split(self, dataset: COCODataset, split: str) -> None:
        annotations = dataset.annotations
        stats = SplitStats(split, annotations.num_classes)
        self.report.splits[split] = stats
        for reason, count in sorted(annotations.invalid.items()):
            self.report.findings.append(
                Finding("invalid_annotation", split, annotations.source, f"{count} {reason}", severity="warning")
            )
        image_ids = self._limited(sorted(annotations.images))
        stats.samples = len(image_ids)
        stats.mask_kinds["COCO annotations"] = len(image_ids)

        def inspect(image_id: int) -> Inspected:
            info = annotations.images[image_id]
            path = dataset.images_dir / info["file_name"]
            result = read_image_file(path, split)
            listed = (info.get("height"), info.get("width"))
            if result.size is not None and None not in listed and tuple(int(v) for v in listed) != result.size:
                listed = (int(listed[0]), int(listed[1]))
                detail = f"image is {result.size}, the annotation file says {listed} (H, W)"
                detail += orientation_hint(path, listed)
                result.findings.append(Finding("size_mismatch", split, str(path), detail))
            return result

        with ThreadPoolExecutor(self.workers) as pool:
            for image_id, result in progress(
                zip(image_ids, pool.map(inspect, image_ids), strict=True), f"checking {split}", len(image_ids)
            ):
                self.report.findings += result.findings
                self.note_digest(result.digest, split, annotations.images[image_id]["file_name"])
                if result.size is not None:
                    stats.sizes.append(result.size)
                    stats.exif_oriented += result.orientation != 1
                usable = dataset.usable.get(image_id, [])
                labels = [annotations.label_of.get(int(a.get("category_id", -1)), -1) for a in usable]
                counts = np.bincount([label for label in labels if label >= 0], minlength=stats.num_classes)
                stats.class_pixels += counts[: stats.num_classes]
                stats.class_images += counts[: stats.num_classes] > 0
        transform, dataset.transform = dataset.transform, None  # the pictures show the files as they are
        try:
            chosen = [dataset.image_ids.index(i) for i in _spread(image_ids, self.pictures) if i in dataset.image_ids]
            self.report.pictures[split] = [detection_picture(dataset, k) for k in chosen]
        finally:
            dataset.transform = transform

    def check_panoptic(self, datamodule: PanopticDataModule) -> None:
        def files(dataset: COCOPanopticDataset) -> tuple[str, str]:
            return (str(dataset.annotations.source), str(dataset.images))

        self.check_each_split(datamodule.make_dataset, files, self.check_panoptic_split)

    def check_panoptic_split(self, dataset: COCOPanopticDataset, split: str) -> None:
        annotations = dataset.annotations
        stats = SplitStats(split, len(annotations.categories.ids))
        self.report.splits[split] = stats
        indices = self._limited(list(range(len(dataset))))
        stats.samples = len(indices)
        stats.mask_kinds["COCO panoptic PNG"] = len(indices)
        self.check_count(split, len(dataset))
        label_of = annotations.categories.label_of

        def inspect(index: int) -> tuple[Inspected, np.ndarray | None]:
            info, annotation = annotations.items[index]
            result = read_image_file(dataset.images / info["file_name"], split)
            png = annotations.png_folder / annotation["file_name"]
            try:
                numbers, segments = annotations.read_segment_map(index)
            except LightsegError as err:
                kind = "unreadable_mask" if "readable PNG" in str(err) or "no such file" in str(err) else "bad_labels"
                result.findings.append(Finding(kind, split, str(png), str(err).removeprefix(f"{png}: ")))
                return result, None
            if result.size is not None and numbers.shape != result.size:
                result.findings.append(
                    Finding("size_mismatch", split, str(png), f"image is {result.size}, PNG is {numbers.shape} (H, W)")
                )
            semantic = np.concatenate([[255], [label_of[s.category_id] for s in segments]]).astype(np.uint8)[numbers]
            void = semantic == 255
            result.ignore_pixels = int(void.sum())
            result.counts = np.bincount(semantic[~void].ravel(), minlength=stats.num_classes)[: stats.num_classes]
            return result, semantic

        pictures = set(_spread(indices, self.pictures))
        with ThreadPoolExecutor(self.workers) as pool:
            results = pool.map(inspect, indices)
            for index, (result, semantic) in progress(zip(indices, results, strict=True), f"checking {split}",
                                                      len(indices)):  # fmt: skip
                info = annotations.items[index][0]
                self.report.findings += result.findings
                self.note_digest(result.digest, split, str(dataset.images / info["file_name"]))
                if result.size is not None:
                    stats.sizes.append(result.size)
                    stats.exif_oriented += result.orientation != 1
                if result.counts is not None:
                    stats.class_pixels += result.counts
                    stats.class_images += result.counts > 0
                    stats.ignore_pixels += result.ignore_pixels
                if index in pictures and semantic is not None and result.size == semantic.shape:
                    image = read_image_uint8(dataset.images / info["file_name"])
                    self.report.pictures.setdefault(split, []).append((image, semantic))


def _spread(items: Sequence[Any], count: int) -> list[Any]:
    """``count`` items spread evenly over ``items`` (the first and the last included)."""
    if count <= 0 or not items:
        return []
    if len(items) <= count:
        return list(items)
    return [items[round(k * (len(items) - 1) / max(count - 1, 1))] for k in range(count)]


def unreadable_data(name: str, problem: LightsegError) -> DataReport:
    """The report on a data set whose data module cannot even be made (a missing root, a bad class list)."""
    report = DataReport(name, (), data_palette(None), instances=False)
    report.findings.append(Finding("data", "all", "", str(problem)))
    return report


def check_data(datamodule: BaseDataModule, workers: int | None = None, limit: int = 0, pictures: int = 4) -> DataReport:
    """Read every sample of every split of ``datamodule`` and report what it holds and what is wrong.

    Args:
        datamodule: any lightseg semantic (``SplitDataModule``) or COCO-style detection data module.
        workers: reading threads (default: up to 8, the CPU count).
        limit: read only the first ``limit`` samples of each split (0: all).
        pictures: samples per split drawn in the picture.
    """
    return _Checker(datamodule, workers or min(8, os.cpu_count() or 1), limit, pictures).run()
