"""The files each kind of task's predictions become: semantic masks, COCO detection results, COCO panoptic files.

:class:`~lightseg.callbacks.SegmentationWriter` (the callback ``lightseg predict`` runs) picks
one :class:`PredictionFiles` by the task's kind at setup and hands it every batch; what the
kinds share — the staged output folder, the overlays' painter thread, the run's summary — stays
with the writer. A new kind of task is a new subclass here and one entry in :data:`KINDS`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from PIL import Image
from torchvision.datasets import Cityscapes
from tqdm.auto import tqdm

from lightseg.callbacks.raster_output import Probabilities, RasterOutput
from lightseg.callbacks.staged_folder import StagedFolder, part_name
from lightseg.coco_masks import encode_masks, id_to_rgb
from lightseg.contract import TaskContext, data_description, data_palette, datamodule_of, task_context
from lightseg.datamodules.predict_folder import ImageFolderDataset
from lightseg.datamodules.rasters import Raster
from lightseg.errors import LightsegError, option
from lightseg.types import TiledPrediction
from lightseg.visualize import DISPLAY_SIDE, annotated_overlay, draw_detections, panoptic_overlay, to_uint8_image
from lightseg.visualize.png import write_png

#: ``lightseg predict --prediction.format``: what the semantic masks are written as
Format = Literal["palette", "cityscapes", "voc"]
#: where the VOC evaluation server expects the segmentation results (competition 6: any training data)
VOC_RESULTS = Path("results") / "VOC2012" / "Segmentation" / "comp6_test_cls"
FOLDERS = {"palette": Path("masks"), "cityscapes": Path("labelIds"), "voc": VOC_RESULTS}
#: longer side of the overlay of an image predicted in tiles (drawn from a scaled-down copy)
LARGE_OVERLAY_SIDE = 2048


@dataclasses.dataclass(frozen=True)
class WriterOptions:
    """What :class:`~lightseg.callbacks.SegmentationWriter` was given, as every kind of files reads it."""

    output: StagedFolder
    format: Format
    overlays: bool
    alpha: float
    score_threshold: float
    probabilities: Probabilities
    polygons: bool
    #: where the rows of large images written so far are kept across runs
    resume: Path


class PredictionFiles:
    """One kind of task's prediction files, written batch by batch (``write``) and completed once (``finish``).

    Args:
        options: the writer's options and its staged output folder.
        trainer: the predicting trainer (its data module describes the classes).
        pl_module: the task, which the formats are checked against.
    """

    #: what :meth:`written` names for the run's summary, before the optional folders
    files: tuple[str, ...] = ()

    def __init__(self, options: WriterOptions, trainer: Trainer, pl_module: LightningModule) -> None:
        self.options = options
        self.palette = data_palette(datamodule_of(trainer))

    def write(self, trainer: Trainer, pl_module: LightningModule, prediction: Any, batch: Any) -> None:
        """Write one batch's predictions (``prediction``: what the task's ``predict_step`` returned)."""
        raise NotImplementedError

    def finish(self, trainer: Trainer) -> None:
        """Write what covers every image (a JSON), once all were written: this process's share under DDP."""

    @classmethod
    def join(cls, output: StagedFolder, processes: int) -> None:
        """Join the processes' shares of what :meth:`finish` wrote, in the published folder (process 0, DDP)."""

    def written(self, folder: Path) -> list[str]:
        """What the run wrote into the published ``folder``, as the summary line names it."""
        extras = [f"{extra}/" for extra in ("probabilities", "polygons") if (folder / extra).is_dir()]
        return [*self.files, *extras] + (["overlays/"] if self.options.overlays else [])

    def _save_overlay(self, render: Callable[[], np.ndarray], name: Path) -> None:
        self.options.output.save_picture(render, Path("overlays") / name)

    def _json_part(self, trainer: Trainer, stem: str) -> Path:
        # under DDP each process writes its own part; process 0 joins them (join)
        return self.options.output.work / part_name(stem, trainer.global_rank, trainer.world_size)


class SemanticFiles(PredictionFiles):
    """A mask per image in the chosen format (tiled GeoTIFFs for large images) and its overlay."""

    def __init__(self, options: WriterOptions, trainer: Trainer, pl_module: LightningModule) -> None:
        super().__init__(options, trainer, pl_module)
        self._label_ids: np.ndarray | None = None
        if options.format == "cityscapes":
            data = data_description(datamodule_of(trainer))
            label_ids = data.label_ids if data is not None else None
            if label_ids is None:
                raise LightsegError(
                    f"{option('prediction', 'format')} cityscapes writes Cityscapes label ids, which needs the "
                    "Cityscapes data module (CityscapesDataModule: its 19 train ids map back to label ids); use "
                    "palette for other data"
                )
            self._label_ids = np.array(label_ids, dtype=np.uint8)
        elif options.format == "voc" and prediction_context(pl_module).num_classes != 21:
            raise LightsegError(
                f"{option('prediction', 'format')} voc writes the 21 PASCAL VOC classes; this model has "
                f"{prediction_context(pl_module).num_classes} classes; use palette"
            )
        self.files = (f"{FOLDERS[options.format]}/",)

    def write(self, trainer: Trainer, pl_module: LightningModule, prediction: Any, batch: Any) -> None:
        """Masks of the input's size (and overlays); each large image's tiles, band by band."""
        options = self.options
        images = batch["image"].detach().cpu() if "image" in batch else None
        context = prediction_context(pl_module)
        names, ignore_index = list(context.class_names), context.ignore_index
        for i, (relative, (height, width)) in enumerate(zip(prediction["path"], prediction["size"], strict=True)):
            mask = prediction["mask"][i, :height, :width].numpy()
            name = Path(relative).with_suffix(".png")
            if options.format == "cityscapes":
                assert self._label_ids is not None
                path = options.output.work / FOLDERS["cityscapes"] / name
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(self._label_ids[mask], mode="L").save(path)
            else:
                folder = options.output.work / FOLDERS[options.format]
                self._save_mask(mask, folder / (name.name if options.format == "voc" else name))
            if options.overlays and images is not None:
                self._save_overlay(
                    functools.partial(
                        _semantic_overlay, images[i, :, :height, :width], mask, names, options.alpha, ignore_index,
                        self.palette,
                    ),
                    name,
                )  # fmt: skip
        for tiled in prediction.get("tiled", []):
            self._write_tiled(trainer, pl_module, tiled, names, ignore_index)

    def _write_tiled(
        self, trainer: Trainer, pl_module: LightningModule, tiled: TiledPrediction, names: list[str], ignore_index: int
    ) -> None:
        """An image too large to hold: its bands as the model makes them, then tiled (Geo)TIFFs and a small overlay.

        Under DDP every process reads the image (the predict sampler gives it to all) and
        writes its share of the rows; process 0 writes the files once every process is done.
        """
        options, source = self.options, tiled.source
        if not isinstance(source, Raster):
            raise LightsegError(f"SegmentationWriter writes large images read by lightseg (a Raster), not {source!r}")
        if options.format == "voc":
            raise LightsegError(
                f"{option('prediction', 'format')} voc writes PASCAL VOC's PNG layout; image {source.path} is "
                "predicted in tiles (a GeoTIFF): use palette"
            )
        name = Path(tiled.path).with_suffix(".tif")
        work = options.output.work
        output = RasterOutput(
            source, work / FOLDERS[options.format] / name, tiled.num_classes, names, self.palette,
            self._label_ids, options.probabilities, work / "probabilities" / name,
            state=options.resume / name.parent, fingerprint=tiled.fingerprint,
            process=(trainer.global_rank, trainer.world_size), stripes=tiled.stripes,
        )  # fmt: skip
        start, stop = output.rows
        resumed_stripe, resumed_row = output.done
        if output.done != (0, start):
            where = f"row {resumed_row:,} of {source.size[0]:,}"
            if len(tiled.stripes) > 1:
                where += f" in column stripe {resumed_stripe + 1} of {len(tiled.stripes)}"
            print(f"lightseg: {tiled.path}: resuming after {where} (kept in {options.resume})", file=sys.stderr)
        failure: Exception | None = None
        total = (stop - start) * len(tiled.stripes)
        try:
            with tqdm(total=total, initial=resumed_stripe * (stop - start) + resumed_row - start,
                      desc=f"{tiled.path} (rows)", unit="row", delay=1.0, leave=False,
                      disable=None if trainer.is_global_zero else True, dynamic_ncols=True) as bar:  # fmt: skip
                for stripe, columns in enumerate(tiled.stripes):
                    if stripe < resumed_stripe:
                        continue
                    first_row = resumed_row if stripe == resumed_stripe else start
                    for first, labels, probs in tiled.bands((first_row, stop), columns):
                        output.write(stripe, first, labels, probs)
                        bar.update(labels.shape[0])
                    output.stripe_done(stripe)
        except Exception as err:  # the other processes wait for this one's rows: tell them, then stop
            failure = err
        if trainer.world_size > 1:
            flag = torch.tensor(float(failure is not None), device=pl_module.device)
            failed = trainer.strategy.reduce(flag, reduce_op="sum")
            if failure is None and float(failed) > 0:
                raise LightsegError(
                    f"another process stopped while predicting {tiled.path} (its message says why); the rows "
                    f"written are kept in {options.resume}"
                )
        if failure is not None:
            raise failure
        if not trainer.is_global_zero:
            return
        output.finish()
        if options.polygons:
            output.polygons(work / "polygons" / name.with_suffix(".geojson"))
        if options.overlays:
            render = functools.partial(_tiled_overlay, output, names, options.alpha, ignore_index, self.palette)
            self._save_overlay(render, name.with_suffix(".png"))

    def _save_mask(self, mask: np.ndarray, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if mask.dtype != np.uint8:  # more than 256 classes: a 16-bit grey PNG of indices
            Image.fromarray(mask.astype(np.uint16)).save(path)
            return
        png = Image.fromarray(mask, mode="P")
        png.putpalette(self.palette.ravel().tolist())
        png.save(path)


class DetectionFiles(PredictionFiles):
    """``results.json`` in COCO's results format and an overlay per image (Mask R-CNN, Keypoint R-CNN)."""

    files = ("results.json",)

    def __init__(self, options: WriterOptions, trainer: Trainer, pl_module: LightningModule) -> None:
        super().__init__(options, trainer, pl_module)
        if options.format != "palette":
            raise LightsegError(
                f"{option('prediction', 'format')} {options.format} writes semantic masks; an instance or keypoint "
                "model writes COCO results (results.json): leave the format at palette"
            )
        self._results: list[dict[str, Any]] = []
        self._seen = False

    def write(self, trainer: Trainer, pl_module: LightningModule, prediction: Any, batch: Any) -> None:
        """Each detection as a COCO result (compressed RLE masks, keypoints); the confident ones drawn."""
        self._seen = True
        options = self.options
        data = data_description(datamodule_of(trainer))
        context = prediction_context(pl_module)
        category_ids = list((data.category_ids if data is not None else ()) or range(context.num_classes))
        names = list((data.class_names if data is not None else None) or map(str, range(len(category_ids))))
        skeleton = list(data.skeleton) if data is not None else []
        loaders = trainer.predict_dataloaders
        dataset = getattr(loaders[0] if isinstance(loaders, list) else loaders, "dataset", None)
        folder = dataset if isinstance(dataset, ImageFolderDataset) else None
        positions = {str(p.relative_to(folder.root)): i + 1 for i, p in enumerate(folder.paths)} if folder else {}
        mask_threshold = context.mask_threshold
        for image, relative, detections in zip(
            batch["images"], prediction["path"], prediction["detections"], strict=True
        ):
            image_id = positions.get(relative, len(self._results) + 1)
            masks = detections["masks"][:, 0] > mask_threshold if "masks" in detections else None
            encoded = encode_masks(masks) if masks is not None and len(masks) else []
            for k in range(len(detections["boxes"])):
                x1, y1, x2, y2 = (float(v) for v in detections["boxes"][k])
                result: dict[str, Any] = {
                    "image_id": image_id,
                    "file_name": relative,
                    "category_id": int(category_ids[int(detections["labels"][k])]),
                    "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                    "score": round(float(detections["scores"][k]), 5),
                }
                if encoded:
                    height, width, counts = encoded[k].decode().split(" ", 2)
                    result["segmentation"] = {"size": [int(height), int(width)], "counts": counts}
                if "keypoints" in detections:
                    result["keypoints"] = [round(float(v), 2) for v in detections["keypoints"][k].flatten()]
                self._results.append(result)
            if not options.overlays:
                continue
            keep = detections["scores"] >= options.score_threshold
            drawn = functools.partial(
                draw_detections, image.detach().cpu(), detections, keep, masks, names, skeleton, options.alpha,
                side=DISPLAY_SIDE, palette=self.palette,
            )  # fmt: skip
            self._save_overlay(drawn, Path(relative).with_suffix(".png"))

    def finish(self, trainer: Trainer) -> None:
        """``results.json``: every detection of the run."""
        if self._seen:
            self._json_part(trainer, "results").write_text(json.dumps(self._results))

    @classmethod
    def join(cls, output: StagedFolder, processes: int) -> None:
        """One ``results.json``, ordered by image id (positions in the sorted folder)."""
        output.join_parts(
            "results", processes, lambda parts: sorted((r for part in parts for r in part), key=lambda r: r["image_id"])
        )


class PanopticFiles(PredictionFiles):
    """``panoptic/<name>.png`` and ``panoptic.json`` in the COCO panoptic format, and an overlay per image."""

    files = ("panoptic.json", "panoptic/")

    def __init__(self, options: WriterOptions, trainer: Trainer, pl_module: LightningModule) -> None:
        super().__init__(options, trainer, pl_module)
        self._annotations: list[dict[str, Any]] = []
        self._categories: list[dict[str, Any]] = []
        # the COCO panoptic layout is also Cityscapes' (what evalPanopticSemanticLabeling reads): with label ids
        if options.format == "voc":
            raise LightsegError(
                f"{option('prediction', 'format')} voc writes semantic masks; a panoptic model writes the COCO "
                "panoptic format (palette), or cityscapes for Cityscapes panoptic data"
            )
        if options.format == "cityscapes":
            data = data_description(datamodule_of(trainer))
            evaluated = tuple(c.id for c in Cityscapes.classes if not c.ignore_in_eval)
            if data is None or tuple(sorted(data.category_ids)) != tuple(sorted(evaluated)):
                raise LightsegError(
                    f"{option('prediction', 'format')} cityscapes writes Cityscapes panoptic predictions (label ids), "
                    "which needs CityscapesPanopticDataModule with label ids (not the _trainId JSON); use palette "
                    "for other data"
                )

    def write(self, trainer: Trainer, pl_module: LightningModule, prediction: Any, batch: Any) -> None:
        """Each image's segment ids as a COCO panoptic PNG, its segments in the JSON, its overlay."""
        options = self.options
        if not self._categories:
            data = data_description(datamodule_of(trainer))
            if data is None:
                raise LightsegError(
                    "a panoptic prediction needs the data module that describes its classes (things, ids)"
                )
            ids = data.category_ids or tuple(range(data.num_classes))
            names = data.class_names or tuple(map(str, range(data.num_classes)))
            things = set(data.thing_classes or ())
            self._categories = [
                {"id": int(ids[c]), "name": names[c], "isthing": int(c in things)} for c in range(data.num_classes)
            ]
        categories = self._categories
        class_names = [str(c["name"]) for c in categories]
        (options.output.work / "panoptic").mkdir(exist_ok=True)
        for image, relative, result in zip(batch["images"], prediction["path"], prediction["panoptic"], strict=True):
            name = Path(relative).with_suffix(".png")
            path = options.output.work / "panoptic" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            segments = result.segments.numpy().astype(np.int64)
            write_png(path, id_to_rgb(segments))
            # a Cityscapes frame's id is its name without _leftImg8bit, as in the ground truth's JSON
            stem = Path(relative).stem.removesuffix("_leftImg8bit")
            self._annotations.append(
                {
                    "image_id": int(stem) if stem.isdigit() else stem,
                    "file_name": name.as_posix(),
                    "segments_info": [
                        {
                            "id": n,
                            "category_id": categories[label]["id"],
                            "isthing": int(thing),
                            "score": round(score, 5),
                        }
                        for n, (label, thing, score) in enumerate(
                            zip(result.labels, result.isthing, result.scores, strict=True), 1
                        )
                    ],
                }
            )
            if options.overlays:
                picture = functools.partial(
                    _panoptic_overlay, image.detach().cpu(), segments, result.labels, result.isthing, class_names,
                    options.alpha, self.palette,
                )  # fmt: skip
                self._save_overlay(picture, name)

    def finish(self, trainer: Trainer) -> None:
        """``panoptic.json``: the run's annotations and the categories."""
        if self._categories:
            content = {"annotations": self._annotations, "categories": self._categories}
            self._json_part(trainer, "panoptic").write_text(json.dumps(content))

    @classmethod
    def join(cls, output: StagedFolder, processes: int) -> None:
        """One ``panoptic.json``, its annotations in the order of the sorted folder, as one process writes them."""

        def joined(parts: list[dict[str, Any]]) -> dict[str, Any]:
            annotations = (a for part in parts for a in part["annotations"])
            return {
                "annotations": sorted(annotations, key=lambda a: Path(a["file_name"])),
                "categories": parts[0]["categories"],
            }

        output.join_parts("panoptic", processes, joined)


#: the files of each kind of task (:attr:`lightseg.contract.TaskContext.kind`)
KINDS: dict[str, type[PredictionFiles]] = {
    "semantic": SemanticFiles,
    "detection": DetectionFiles,
    "panoptic": PanopticFiles,
}


def prediction_context(pl_module: LightningModule) -> TaskContext:
    """The task's :class:`~lightseg.contract.TaskContext`; a module without one is refused in one line."""
    context = task_context(pl_module)
    if context is None:
        raise LightsegError(
            f"SegmentationWriter writes what lightseg's tasks predict; {type(pl_module).__name__} is not one (it has "
            "no context(): see lightseg.contract)"
        )
    return context


def _semantic_overlay(
    image: torch.Tensor, mask: np.ndarray, names: list[str], alpha: float, ignore_index: int, palette: np.ndarray
) -> np.ndarray:
    return annotated_overlay(to_uint8_image(image), mask, names, alpha, ignore_index, palette)


def _tiled_overlay(
    output: RasterOutput, names: list[str], alpha: float, ignore_index: int, palette: np.ndarray
) -> np.ndarray:
    image, mask = output.overview(LARGE_OVERLAY_SIDE)
    return annotated_overlay(image, mask, names, alpha, ignore_index, palette)


def _panoptic_overlay(image: torch.Tensor, *args: Any) -> np.ndarray:
    return panoptic_overlay(to_uint8_image(image), *args)
