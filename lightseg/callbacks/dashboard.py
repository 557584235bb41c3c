"""What a segmentation person looks at: masks over images, per-class tables, confusion matrices."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn
from PIL import Image
from typing_extensions import override

from lightseg.callbacks.boards import Histogram, MaskedPicture, Payload, Picture, Table, boards
from lightseg.callbacks.per_image import gather_lists
from lightseg.contract import (
    LightsegTask,
    SemanticPredictor,
    TaskContext,
    data_description,
    data_palette,
    datamodule_of,
    task_context,
)
from lightseg.errors import LightsegError
from lightseg.metrics.segmentation import PER_CLASS_SCORES, ImageCounts, image_confusion, image_scores
from lightseg.run_folder import run_dir
from lightseg.types import SemanticEvalOutput
from lightseg.visualize import (
    SAMPLE_SIDE,
    confusion_matrix_image,
    draw_detections,
    panoptic_overlay,
    to_uint8_image,
)


class SegmentationDashboard(Callback):
    """Logs the pictures of a segmentation run to W&B or TensorBoard.

    Instance and keypoint tasks get the fixed validation images drawn as ground truth |
    prediction (boxes with class names, masks, skeletons) and a per-class AP table for each
    IoU type; the rest below is for semantic tasks.

    - Every ``every_n_epochs`` validation epochs: the same ``num_samples`` validation images
      (drawn once with ``seed``), with ground-truth and predicted masks. On W&B they are
      ``wandb.Image`` mask overlays with the data module's class names; on TensorBoard,
      image | ground truth | prediction panels.
    - At test end: the ``worst_k`` test images with the lowest image IoU (mean over the
      classes in the image's ground truth or prediction), across all processes.
    - At each validation/test epoch end: a per-class table (IoU, accuracy, Dice; a
      ``wandb.Table``, or a Markdown table on TensorBoard) and the row-normalised
      confusion matrix as a heatmap. The heatmap is also written into the run folder
      (``confusion_matrix/{stage}_epoch{N}.png``) whatever the logger.

    With a logger that cannot show images (CSV) the images and tables are skipped, once
    with a warning.

    Args:
        num_samples: fixed validation images to log (0: none).
        worst_k: worst test images to log (0: none).
        seed: draws the fixed validation images (the same ones on every run and resume).
        every_n_epochs: log validation images every n epochs.
        class_table: log the per-class table.
        confusion_matrix: log the confusion-matrix heatmap and write its PNG.
        warn_unsupported: warn when the logger cannot show images (otherwise an info line).
        score_threshold: lowest score of a drawn detection (instance and keypoint tasks).
    """

    def __init__(
        self,
        num_samples: int = 8,
        worst_k: int = 8,
        seed: int = 0,
        every_n_epochs: int = 1,
        class_table: bool = True,
        confusion_matrix: bool = True,
        warn_unsupported: bool = True,
        score_threshold: float = 0.5,
    ) -> None:
        self.score_threshold = score_threshold
        self.detection = False
        self.num_samples = num_samples
        self.worst_k = worst_k
        self.seed = seed
        self.every_n_epochs = max(1, every_n_epochs)
        self.class_table = class_table
        self.confusion_matrix = confusion_matrix
        self.warn_unsupported = warn_unsupported
        self._told = False
        self._worst: list[tuple[float, int, dict[str, Any]]] = []
        self._image_mious: list[float] = []
        self._seen = 0

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        context = task_context(pl_module)
        if context is None:
            raise LightsegError(
                f"SegmentationDashboard draws lightseg's semantic, instance and keypoint results; "
                f"{type(pl_module).__name__} is none of those tasks: remove the callback from trainer.callbacks"
            )
        self.detection = context.kind == "detection"
        self.panoptic = context.kind == "panoptic"

    @staticmethod
    def _context(pl_module: LightningModule) -> TaskContext:
        return cast(LightsegTask, pl_module).context()

    # validation ---------------------------------------------------------------------------

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        self._log_results(trainer, pl_module, "val")
        due = trainer.state.fn != "fit" or (trainer.current_epoch + 1) % self.every_n_epochs == 0
        if self.num_samples > 0 and due and trainer.is_global_zero and self._can_show(trainer):
            self._log_samples(trainer, pl_module, "val_samples", self._fixed_samples(trainer, pl_module))

    def sample_indices(self, dataset_size: int) -> list[int]:
        """The validation images that are logged: ``num_samples`` drawn with ``seed``, in order."""
        generator = torch.Generator().manual_seed(self.seed)
        return sorted(torch.randperm(dataset_size, generator=generator)[: self.num_samples].tolist())

    def _fixed_samples(self, trainer: Trainer, pl_module: LightningModule) -> list[Picture | MaskedPicture]:
        loaders = trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
        dataset = getattr(loader, "dataset", None)
        if dataset is None or not hasattr(dataset, "__len__"):
            return []
        context = self._context(pl_module)
        samples: list[Picture | MaskedPicture] = []
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad(), trainer.precision_plugin.forward_context():
                for index in self.sample_indices(len(dataset)):
                    item = dataset[index]
                    image = item["image"].to(pl_module.device)
                    if self.panoptic:
                        prediction = pl_module([image])[0]
                        samples.append(self._panoptic_sample(trainer, context, index, item, prediction))
                        continue
                    if self.detection:
                        detections = {k: v.cpu() for k, v in pl_module([image])[0].items()}
                        truth = item["target"]
                        samples.append(
                            self._detection_sample(trainer, context, index, item["image"], truth, detections)
                        )
                        continue
                    labels = cast(SemanticPredictor, pl_module).predict_probs(image[None]).max(1).indices[0]
                    samples.append(self._sample(context, index, item["image"], item["mask"], labels)["picture"])
        finally:
            pl_module.train(was_training)
        return samples

    # test ---------------------------------------------------------------------------------

    @override
    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._worst, self._seen, self._image_mious = [], 0, []

    @override
    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not isinstance(outputs, SemanticEvalOutput):
            return
        if outputs.image_scores is not None:
            self._image_mious += [v for v in outputs.image_scores["miou"].tolist() if v == v]
        if self.worst_k <= 0:
            return
        context = self._context(pl_module)
        sizes = batch.get("size") or [tuple(batch["image"].shape[-2:])] * len(batch["image"])
        for i, (height, width) in enumerate(sizes):
            target = batch["mask"][i, :height, :width]
            if outputs.image_scores is not None:  # the task's own per-image scores: labels only when kept
                score = float(outputs.image_scores["miou"][i])
            else:
                score = image_iou(outputs.labels[i, :height, :width], target, context.num_classes,
                                  context.ignore_index)  # fmt: skip
            key = (-score, self._seen)  # a max-heap on IoU keeps the k lowest
            self._seen += 1
            if len(self._worst) < self.worst_k or key > (self._worst[0][0], self._worst[0][1]):
                labels = outputs.labels[i, :height, :width]
                image = batch["image"][i, :, :height, :width]
                entry = (key[0], key[1], self._sample(context, None, image, target, labels, score))
                if len(self._worst) < self.worst_k:
                    heapq.heappush(self._worst, entry)
                else:
                    heapq.heapreplace(self._worst, entry)

    @override
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log_results(trainer, pl_module, "test")
        self._log_distribution(trainer, "test_image_miou", gather_lists(self._image_mious))
        if self.worst_k <= 0:
            return
        entries = gather_lists([entry[2] for entry in self._worst])
        worst = [s["picture"] for s in sorted(entries, key=lambda s: s["iou"])[: self.worst_k]]
        if trainer.is_global_zero and worst and self._can_show(trainer):
            self._log_samples(trainer, pl_module, "test_worst", worst)

    # logging ------------------------------------------------------------------------------

    def _sample(
        self,
        context: TaskContext,
        index: int | None,
        image: torch.Tensor,
        target: torch.Tensor,
        labels: torch.Tensor,
        score: float | None = None,
    ) -> dict[str, Any]:
        if score is None:
            score = image_iou(labels, target.to(labels.device), context.num_classes, context.ignore_index)
        caption = f"IoU {100 * score:.1f}" if score == score else "IoU -"
        dtype = np.uint8 if context.num_classes <= 255 else np.int32
        picture = MaskedPicture(
            to_uint8_image(image),
            target.cpu().numpy().astype(dtype),
            labels.cpu().numpy().astype(dtype),
            caption if index is None else f"#{index} {caption}",
        )
        return {"iou": score, "picture": picture}

    def _detection_sample(
        self,
        trainer: Trainer,
        context: TaskContext,
        index: int,
        image: torch.Tensor,
        target: dict[str, Any],
        detections: dict[str, torch.Tensor],
    ) -> Picture:
        names = list(context.class_names)
        data = data_description(datamodule_of(trainer))
        skeleton = list(data.skeleton) if data is not None else []
        threshold = context.mask_threshold
        truth = {k: v for k, v in target.items() if isinstance(v, torch.Tensor)}
        truth["scores"] = torch.ones(len(truth["labels"]))
        palette = data_palette(datamodule_of(trainer))
        drawn_truth = draw_detections(image, truth, truth["scores"] > 0, truth.get("masks"), names, skeleton,
                                      show_scores=False, side=SAMPLE_SIDE, palette=palette)  # fmt: skip
        keep = detections["scores"] >= self.score_threshold
        masks = detections["masks"][:, 0] > threshold if "masks" in detections else None
        drawn = draw_detections(image, detections, keep, masks, names, skeleton, side=SAMPLE_SIDE, palette=palette)
        gap = np.full((drawn.shape[0], 2, 3), 255, dtype=np.uint8)
        caption = f"#{index}: {len(truth['labels'])} true | {int(keep.sum())} predicted >= {self.score_threshold}"
        return Picture(np.concatenate([drawn_truth, gap, drawn], axis=1), caption)

    def _panoptic_sample(
        self, trainer: Trainer, context: TaskContext, index: int, item: dict[str, Any], prediction: Any
    ) -> Picture:
        """The true and the predicted panoptic maps side by side, each over the image with its legend."""
        names = list(context.class_names)
        palette = data_palette(datamodule_of(trainer))
        image, target = to_uint8_image(item["image"]), item["target"]
        drawn = [
            panoptic_overlay(image, segments, list(labels), list(isthing), names, colours=palette, side=SAMPLE_SIDE)
            for segments, labels, isthing in (
                (target["segments"].numpy(), target["labels"].tolist(), target["isthing"].tolist()),
                (prediction.segments.cpu().numpy(), prediction.labels, prediction.isthing),
            )
        ]
        height = max(d.shape[0] for d in drawn)
        drawn = [np.pad(d, ((0, height - d.shape[0]), (0, 0), (0, 0)), constant_values=255) for d in drawn]
        gap = np.full((height, 2, 3), 255, dtype=np.uint8)
        caption = f"#{index}: {len(target['labels'])} true | {len(prediction.labels)} predicted segments"
        return Picture(np.concatenate([drawn[0], gap, drawn[1]], axis=1), caption)

    def _can_show(self, trainer: Trainer) -> bool:
        if boards(trainer):
            return True
        if not self._told:
            self._told = True
            kind = ", ".join(type(lg).__name__ for lg in trainer.loggers) or "no logger"
            message = (
                f"SegmentationDashboard: {kind} cannot show images or tables; use W&B or TensorBoard "
                "(--config configs/trainer/wandb.yaml or configs/trainer/tensorboard.yaml) to see them"
            )
            (rank_zero_warn if self.warn_unsupported else rank_zero_info)(message)
        return False

    def _log(self, trainer: Trainer, payload: Payload) -> None:
        for board in boards(trainer):
            board.log(payload, trainer.global_step)

    def _log_samples(
        self, trainer: Trainer, pl_module: LightningModule, key: str, samples: list[Picture | MaskedPicture]
    ) -> None:
        context = self._context(pl_module)
        labels = dict(enumerate(context.class_names))
        labels.setdefault(context.ignore_index, "ignore")
        palette = data_palette(datamodule_of(trainer))
        for sample in samples:
            if isinstance(sample, MaskedPicture):
                sample.class_labels = labels
                sample.colours = palette
        self._log(trainer, {key: samples})  # type: ignore[dict-item]

    def _log_distribution(self, trainer: Trainer, key: str, values: list[float]) -> None:
        """A histogram of per-image scores (e.g. each test image's mIoU)."""
        if values and trainer.is_global_zero and self._can_show(trainer):
            self._log(trainer, {key: Histogram(values)})

    def _log_results(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        task = cast(LightsegTask, pl_module)
        results = task.stage_results(stage)
        if results is None:
            return
        folder = run_dir(trainer)  # on every process: finding it may broadcast
        if not trainer.is_global_zero:
            return
        context = task.context()
        names = list(context.class_names)
        payload: Payload = {}
        if self.confusion_matrix and "confmat" in results:
            epoch = f"_epoch{trainer.current_epoch:03d}" if trainer.state.fn == "fit" else ""
            heatmap = confusion_matrix_image(results["confmat"], names, title=f"{stage}{epoch}: row-normalised (%)")
            write_png(heatmap, folder / "confusion_matrix" / f"{stage}{epoch}.png")
            payload[f"{stage}_confusion_matrix"] = Picture(heatmap)
        if self.class_table:
            if self.panoptic:
                data = data_description(datamodule_of(trainer))
                table = panoptic_table(results, names, (data.thing_classes if data is not None else None) or ())
            elif self.detection:
                table = ap_table(results, context.iou_types, names)
            else:
                table = class_table(results, names)
            payload[f"{stage}_per_class"] = table
        if payload and self._can_show(trainer):
            self._log(trainer, payload)


def class_table(results: dict[str, torch.Tensor], names: list[str]) -> Table:
    """A semantic task's per-class IoU, accuracy, Dice (and Boundary IoU / iIoU where computed)."""
    scores = [score for score in PER_CLASS_SCORES if score.key in results]
    columns = ["class", *(score.title for score in scores)]
    return Table(columns, [[name, *(_number(results[s.key][i]) for s in scores)] for i, name in enumerate(names)])


def ap_table(results: dict[str, torch.Tensor], iou_types: Sequence[str], names: list[str]) -> Table:
    """A detection task's AP per class (background left out) and IoU type."""
    per_class = [results[f"{t}_map_per_class"].reshape(-1) for t in iou_types]
    rows = [[name, *(_number(values[i]) for values in per_class)] for i, name in enumerate(names[1:])]
    return Table(["class", *(f"{t} AP" for t in iou_types)], rows)


def panoptic_table(results: dict[str, torch.Tensor], names: list[str], things: Sequence[int]) -> Table:
    """A panoptic task's PQ, SQ, RQ (and the semantic view's IoU) per class, with its kind."""
    scores = [s for s in ("pq", "sq", "rq", "iou") if f"{s}_per_class" in results]
    rows = [
        [name, "thing" if i in things else "stuff", *(_number(results[f"{s}_per_class"][i]) for s in scores)]
        for i, name in enumerate(names)
    ]
    titles = {"pq": "PQ", "sq": "SQ", "rq": "RQ", "iou": "IoU"}
    return Table(["class", "kind", *(titles[s] for s in scores)], rows)


def image_iou(prediction: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int) -> float:
    """Mean IoU of one image over the classes in its ground truth or prediction (ignored pixels left out).

    NaN when every pixel is ignored (the ``miou`` of :func:`~lightseg.metrics.image_scores`).
    """
    valid = target != ignore_index
    confusion = image_confusion(prediction[None], target[None], num_classes, valid[None])
    return float(image_scores(ImageCounts(confusion))["miou"][0])


@rank_zero_only
def write_png(image: np.ndarray, path: Path) -> None:
    """Write ``image`` ``[H,W,3]`` uint8 as a PNG, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def _number(value: torch.Tensor) -> float | None:
    number = float(value)
    return None if number != number else number
