"""The callback that writes predictions into a folder (the files of each kind of task: prediction_files)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, TQDMProgressBar
from typing_extensions import override

from lightseg.callbacks.prediction_files import (
    KINDS,
    Format,
    PredictionFiles,
    WriterOptions,
    prediction_context,
)
from lightseg.callbacks.raster_output import Probabilities
from lightseg.callbacks.staged_folder import StagedFolder
from lightseg.errors import LightsegError, option


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
        self.output_dir = Path(output_dir)
        self.overwrite = overwrite
        self.alpha = alpha
        self.score_threshold = score_threshold
        self._files: PredictionFiles | None = None
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
        self._output = StagedFolder(self.output_dir)
        options = WriterOptions(
            self._output, self.format, self.overlays, self.alpha, self.score_threshold, self.probabilities,
            self.polygons, self._resume,
        )  # fmt: skip
        self._files = KINDS[prediction_context(pl_module).kind](options, trainer, pl_module)
        self._images = 0
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
        assert self._files is not None, "SegmentationWriter writes in predict runs (set up for them)"
        # a large image's rows are shared by the processes: counted by process 0
        self._images += len(prediction["path"]) + (len(prediction.get("tiled", [])) if trainer.is_global_zero else 0)
        self._files.write(trainer, pl_module, prediction, batch)

    @override
    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        assert self._files is not None
        self._output.finish_pictures()
        self._files.finish(trainer)
        self._output.publish(merge=trainer.world_size > 1 or self.output_dir.exists())
        if self._resume.is_dir() and not any(p.is_file() for p in self._resume.rglob("*")):
            shutil.rmtree(self._resume, ignore_errors=True)
        count = torch.tensor(float(self._images), device=pl_module.device)
        images = int(trainer.strategy.reduce(count, reduce_op="sum"))  # every process has published by now
        if trainer.is_global_zero:
            if trainer.world_size > 1:
                type(self._files).join(self._output, trainer.world_size)
            written = self._files.written(self.output_dir)
            what = " and ".join([", ".join(written[:-1]), written[-1]] if len(written) > 1 else written)
            # the progress bar's line is still open here (its callback closes it after this one)
            lead = "\n" if isinstance(getattr(trainer, "progress_bar_callback", None), TQDMProgressBar) else ""
            print(f"{lead}lightseg: predicted {images} images: {what} in {self.output_dir}", file=sys.stderr)

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._output.discard()
        if trainer.is_global_zero and any(self._resume.rglob("*.json")):
            print(f"lightseg: the rows of large images predicted so far are kept in {self._resume}: the same "
                  "command goes on from there", file=sys.stderr)  # fmt: skip
