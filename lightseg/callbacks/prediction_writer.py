"""Writes predictions: semantic masks, COCO results of detections, COCO panoptic PNGs and JSON; overlays."""

from __future__ import annotations

import functools
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, TQDMProgressBar
from PIL import Image
from torchvision.datasets import Cityscapes
from tqdm.auto import tqdm
from typing_extensions import override

from lightseg.callbacks.raster_output import Probabilities, RasterOutput
from lightseg.callbacks.staged_folder import StagedFolder
from lightseg.coco_masks import encode_masks, id_to_rgb
from lightseg.colors import class_palette
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


class SegmentationWriter(BasePredictionWriter):
    """Writes what ``lightseg predict`` finds, for every task, into ``output_dir``.

    Semantic tasks: for each input image, a mask of the input's size and
    ``overlays/<name>.png``, a picture for people: each class in a colour told apart on any
    image (Kelly's colours, region borders opaque; background left as is), small images
    enlarged by a whole factor to 256 pixels or more, and a legend of the classes shown.
    The mask, by ``format``:

    - ``palette``: ``masks/<name>.png``, a palette PNG of class indices, in the data set's own
      class colours (Cityscapes', a folder's ``class_colors``; the VOC palette otherwise);
    - ``cityscapes``: ``labelIds/<name>.png``, 8-bit label ids (the 19 train ids mapped back
      through the official label table), named as the input: what the Cityscapes server and
      ``cityscapesscripts``' evaluation read;
    - ``voc``: ``results/VOC2012/Segmentation/comp6_test_cls/<id>.png``, palette PNGs of the
      21 class indices: the layout the PASCAL VOC server takes (as a tar of ``results/``).

    An image predicted in tiles (a TIFF larger than the data's ``predict_tile_above``) gets
    ``masks/<name>.tif`` (``labelIds/<name>.tif`` in the ``cityscapes`` format) instead: a
    tiled, compressed BigTIFF written band by band as the model goes, with the image's
    coordinate system and transform, nodata (255, or 65535 beyond 255 classes) where the
    image has none, the class colours as its colour table and an overview pyramid; and an
    overlay of the whole image scaled down to 2048 pixels.

    Instance and keypoint tasks: ``results.json`` in COCO's results format (``image_id`` =
    position of the image in the sorted input folder, from 1, plus its ``file_name``;
    original ``category_id``; ``bbox`` ``[x, y, w, h]``; ``score``; ``segmentation`` as
    compressed RLE; ``keypoints``), and ``overlays/<name>.png`` with boxes, masks and
    skeletons of the detections scoring at least ``score_threshold``, each captioned with its
    class and score on a backing box (captions never cover each other; small images enlarged).
    Under DDP the processes' results are joined into one ``results.json``, in the order one
    process writes it.

    Panoptic tasks: ``panoptic/<name>.png`` (segment ids as ``R + 256 G + 256² B``, 0 void) and
    ``panoptic.json`` in the COCO panoptic format (``annotations`` with ``image_id`` = the file
    name's number, or the name where it has none (less a Cityscapes ``_leftImg8bit``),
    ``file_name`` and ``segments_info``: ``id``, the data's ``category_id``, ``isthing``,
    ``score``; ``categories``), which panopticapi's ``pq_compute`` and
    :func:`lightseg.metrics.pq_compute` evaluate as they are; and
    ``overlays/<name>.png``: stuff in its class colour, each instance in a shade of its class's,
    every segment outlined, a legend of the classes. Under DDP the processes' annotations are
    joined into one ``panoptic.json``, in the order one process writes it. The same files are
    Cityscapes' panoptic format (category ids are label ids, image ids the frame names):
    ``format: cityscapes`` checks that the data is Cityscapes panoptic with label ids; ``voc``
    is refused.

    Sub-folders of the input folder are mirrored. An existing, non-empty ``output_dir`` is
    refused unless ``overwrite`` is set, before anything is predicted. Everything is
    written into ``<output_dir>.partial-<pid>`` beside it and moved into ``output_dir``
    only once every image is done: a run that stops half-way (an unreadable image, Ctrl-C)
    leaves no output folder of partial results behind.

    Args:
        output_dir: where to write.
        overwrite: allow writing into an existing, non-empty folder.
        alpha: opacity of the class colours in the overlay.
        score_threshold: lowest score of a detection drawn in the overlays (all go to the JSON).
        format: semantic masks as ``palette`` PNGs, ``cityscapes`` label ids or the ``voc``
            server layout.
        overlays: also write ``overlays/`` (drawn on a thread of their own while the model runs;
            about 12 ms of CPU per 512² image, docs/benchmarks.md); ``false`` writes only the
            masks, ``results.json`` or the panoptic files.
        probabilities: for images predicted in tiles (larger than the data's ``predict_tile_above``),
            also write ``probabilities/<name>.tif``: the top class's probability (``top``, one
            band) or every class's (``all``, one band per class), as 0..255.
        polygons: for images predicted in tiles, also write ``polygons/<name>.geojson``: one
            feature per connected region of a class (its ``class`` name and ``label``), in the
            image's coordinate system, for GIS work.
    """

    def __init__(
        self,
        output_dir: str = "predictions",
        overwrite: bool = False,
        alpha: float = 0.5,
        score_threshold: float = 0.5,
        format: Format = "palette",
        overlays: bool = True,
        probabilities: Probabilities = "none",
        polygons: bool = False,
    ) -> None:
        super().__init__(write_interval="batch")
        self.format: Format = format
        self.overlays = overlays
        self.probabilities: Probabilities = probabilities
        self.polygons = polygons
        self._label_ids: np.ndarray | None = None
        self.output_dir = Path(output_dir)
        self.overwrite = overwrite
        self.alpha = alpha
        self.score_threshold = score_threshold
        self.palette = class_palette()
        self._results: list[dict[str, Any]] = []
        self._detections_seen = False
        self._panoptic_categories: list[dict[str, Any]] = []
        self._panoptic_palette = self.palette
        self._images = 0
        self._output = StagedFolder(self.output_dir)
        #: the rows of large images written so far, kept across runs until their TIFFs are written
        self._resume = self.output_dir.with_name(f"{self.output_dir.name}.resume")

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        if self.output_dir.exists() and not self.output_dir.is_dir():
            raise LightsegError(
                f"{option('prediction', 'output_dir')} {self.output_dir} is a file, not a folder; choose a folder "
                "to write into"
            )
        if self.output_dir.exists() and any(self.output_dir.iterdir()) and not self.overwrite:
            raise LightsegError(
                f"output folder {self.output_dir} already exists and is not empty; choose another with "
                f"{option('prediction', 'output_dir')} or pass {option('prediction', 'overwrite')} true"
            )
        self._check_format(trainer, pl_module)
        self.palette = data_palette(datamodule_of(trainer))
        self._results = []
        self._detections_seen = False
        self._panoptic_categories = []
        self._images = 0
        self._output = StagedFolder(self.output_dir)
        self._output.open()

    @override
    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        # a large image's rows are shared by the processes: counted by process 0
        self._images += len(prediction["path"]) + (len(prediction.get("tiled", [])) if trainer.is_global_zero else 0)
        if "detections" in prediction:
            self._write_detections(trainer, pl_module, prediction, batch)
            return
        if "panoptic" in prediction:
            self._write_panoptic(trainer, prediction, batch)
            return
        images = batch["image"].detach().cpu() if "image" in batch else None
        context = _context(pl_module)
        names, ignore_index = list(context.class_names), context.ignore_index
        for i, (relative, (height, width)) in enumerate(zip(prediction["path"], prediction["size"], strict=True)):
            mask = prediction["mask"][i, :height, :width].numpy()
            name = Path(relative).with_suffix(".png")
            if self.format == "cityscapes":
                assert self._label_ids is not None
                path = self._output.work / FOLDERS["cityscapes"] / name
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(self._label_ids[mask], mode="L").save(path)
            else:
                self._save_mask(
                    mask, self._output.work / FOLDERS[self.format] / (name.name if self.format == "voc" else name)
                )
            if self.overlays and images is not None:
                self._save_overlay(
                    functools.partial(
                        _semantic_overlay, images[i, :, :height, :width], mask, names, self.alpha, ignore_index,
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
        source = tiled.source
        if not isinstance(source, Raster):
            raise LightsegError(f"SegmentationWriter writes large images read by lightseg (a Raster), not {source!r}")
        if self.format == "voc":
            raise LightsegError(
                f"{option('prediction', 'format')} voc writes PASCAL VOC's PNG layout; image {source.path} is "
                "predicted in tiles (a GeoTIFF): use palette"
            )
        name = Path(tiled.path).with_suffix(".tif")
        output = RasterOutput(
            source, self._output.work / FOLDERS[self.format] / name, tiled.num_classes, names, self.palette,
            self._label_ids, self.probabilities, self._output.work / "probabilities" / name,
            state=self._resume / name.parent, fingerprint=tiled.fingerprint,
            process=(trainer.global_rank, trainer.world_size), stripes=tiled.stripes,
        )  # fmt: skip
        start, stop = output.rows
        resumed_stripe, resumed_row = output.done
        if output.done != (0, start):
            where = f"row {resumed_row:,} of {source.size[0]:,}"
            if len(tiled.stripes) > 1:
                where += f" in column stripe {resumed_stripe + 1} of {len(tiled.stripes)}"
            print(f"lightseg: {tiled.path}: resuming after {where} (kept in {self._resume})", file=sys.stderr)
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
                    f"written are kept in {self._resume}"
                )
        if failure is not None:
            raise failure
        if not trainer.is_global_zero:
            return
        output.finish()
        if self.polygons:
            output.polygons(self._output.work / "polygons" / name.with_suffix(".geojson"))
        if self.overlays:
            render = functools.partial(_tiled_overlay, output, names, self.alpha, ignore_index, self.palette)
            self._save_overlay(render, name.with_suffix(".png"))

    def _write_detections(self, trainer: Trainer, pl_module: LightningModule, prediction: Any, batch: Any) -> None:
        self._detections_seen = True
        data = data_description(datamodule_of(trainer))
        context = _context(pl_module)
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
            if not self.overlays:
                continue
            keep = detections["scores"] >= self.score_threshold
            drawn = functools.partial(
                draw_detections, image.detach().cpu(), detections, keep, masks, names, skeleton, self.alpha,
                side=DISPLAY_SIDE, palette=self.palette,
            )  # fmt: skip
            self._save_overlay(drawn, Path(relative).with_suffix(".png"))

    def _write_panoptic(self, trainer: Trainer, prediction: Any, batch: Any) -> None:
        data = data_description(datamodule_of(trainer))
        if data is None:
            raise LightsegError("a panoptic prediction needs the data module that describes its classes (things, ids)")
        if not self._panoptic_categories:
            ids = data.category_ids or tuple(range(data.num_classes))
            names = data.class_names or tuple(map(str, range(data.num_classes)))
            things = set(data.thing_classes or ())
            self._panoptic_categories = [
                {"id": int(ids[c]), "name": names[c], "isthing": int(c in things)} for c in range(data.num_classes)
            ]
            self._panoptic_palette = data_palette(datamodule_of(trainer))
        categories = self._panoptic_categories
        class_names = [str(c["name"]) for c in categories]
        (self._output.work / "panoptic").mkdir(exist_ok=True)
        for image, relative, result in zip(batch["images"], prediction["path"], prediction["panoptic"], strict=True):
            name = Path(relative).with_suffix(".png")
            path = self._output.work / "panoptic" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            segments = result.segments.numpy().astype(np.int64)
            write_png(path, id_to_rgb(segments))
            # a Cityscapes frame's id is its name without _leftImg8bit, as in the ground truth's JSON
            stem = Path(relative).stem.removesuffix("_leftImg8bit")
            self._results.append(
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
            if self.overlays:
                picture = functools.partial(
                    _panoptic_overlay, image.detach().cpu(), segments, result.labels, result.isthing, class_names,
                    self.alpha, self._panoptic_palette,
                )  # fmt: skip
                self._save_overlay(picture, name)

    @override
    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._output.finish_pictures()
        if self._detections_seen:
            name = "results.json" if trainer.world_size == 1 else f"results.rank{trainer.global_rank}.json"
            (self._output.work / name).write_text(json.dumps(self._results))
        if self._panoptic_categories:
            name = "panoptic.json" if trainer.world_size == 1 else f"panoptic.rank{trainer.global_rank}.json"
            content = {"annotations": self._results, "categories": self._panoptic_categories}
            (self._output.work / name).write_text(json.dumps(content))
        self._output.publish(merge=trainer.world_size > 1 or self.output_dir.exists())
        if self._resume.is_dir() and not any(p.is_file() for p in self._resume.rglob("*")):
            shutil.rmtree(self._resume, ignore_errors=True)
        count = torch.tensor(float(self._images), device=pl_module.device)
        images = int(trainer.strategy.reduce(count, reduce_op="sum"))  # every process has published by now
        if trainer.is_global_zero:
            if trainer.world_size > 1:
                self._output.join_process_files(trainer.world_size)
            written = (
                ["results.json"] if (self.output_dir / "results.json").is_file()
                else ["panoptic.json", "panoptic/"] if (self.output_dir / "panoptic.json").is_file()
                else [f"{FOLDERS[self.format]}/"]
            ) + [f"{extra}/" for extra in ("probabilities", "polygons") if (self.output_dir / extra).is_dir()] + (
                ["overlays/"] if self.overlays else [])  # fmt: skip
            what = " and ".join([", ".join(written[:-1]), written[-1]] if len(written) > 1 else written)
            # the progress bar's line is still open here (its callback closes it after this one)
            lead = "\n" if isinstance(getattr(trainer, "progress_bar_callback", None), TQDMProgressBar) else ""
            print(f"{lead}lightseg: predicted {images} images: {what} in {self.output_dir}", file=sys.stderr)

    def _check_format(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if _context(pl_module).kind == "panoptic":
            self._check_panoptic_format(trainer)
        elif self.format == "cityscapes":
            data = data_description(datamodule_of(trainer))
            label_ids = data.label_ids if data is not None else None
            if label_ids is None:
                raise LightsegError(
                    f"{option('prediction', 'format')} cityscapes writes Cityscapes label ids, which needs the "
                    "Cityscapes data module (CityscapesDataModule: its 19 train ids map back to label ids); use "
                    "palette for other data"
                )
            self._label_ids = np.array(label_ids, dtype=np.uint8)
        elif self.format == "voc" and _context(pl_module).num_classes != 21:
            raise LightsegError(
                f"{option('prediction', 'format')} voc writes the 21 PASCAL VOC classes; this model has "
                f"{_context(pl_module).num_classes} classes; use palette"
            )

    def _check_panoptic_format(self, trainer: Trainer) -> None:
        # the COCO panoptic layout is also Cityscapes' (what evalPanopticSemanticLabeling reads): with label ids
        if self.format == "voc":
            raise LightsegError(
                f"{option('prediction', 'format')} voc writes semantic masks; a panoptic model writes the COCO "
                "panoptic format (palette), or cityscapes for Cityscapes panoptic data"
            )
        if self.format == "cityscapes":
            data = data_description(datamodule_of(trainer))
            evaluated = tuple(c.id for c in Cityscapes.classes if not c.ignore_in_eval)
            if data is None or tuple(sorted(data.category_ids)) != tuple(sorted(evaluated)):
                raise LightsegError(
                    f"{option('prediction', 'format')} cityscapes writes Cityscapes panoptic predictions (label ids), "
                    "which needs CityscapesPanopticDataModule with label ids (not the _trainId JSON); use palette "
                    "for other data"
                )

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._output.discard()
        if trainer.is_global_zero and any(self._resume.rglob("*.json")):
            print(f"lightseg: the rows of large images predicted so far are kept in {self._resume}: the same "
                  "command goes on from there", file=sys.stderr)  # fmt: skip

    def _save_overlay(self, render: Callable[[], np.ndarray], name: Path) -> None:
        self._output.save_picture(render, Path("overlays") / name)

    def _save_mask(self, mask: np.ndarray, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if mask.dtype != np.uint8:  # more than 256 classes: a 16-bit grey PNG of indices
            Image.fromarray(mask.astype(np.uint16)).save(path)
            return
        png = Image.fromarray(mask, mode="P")
        png.putpalette(self.palette.ravel().tolist())
        png.save(path)


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


def _context(pl_module: LightningModule) -> TaskContext:
    context = task_context(pl_module)
    if context is None:
        raise LightsegError(
            f"SegmentationWriter writes what lightseg's tasks predict; {type(pl_module).__name__} is not one (it has "
            "no context(): see lightseg.contract)"
        )
    return context
