"""What a segmentation person looks at: masks over images, per-class tables, confusion matrices."""

from __future__ import annotations

import heapq
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn
from PIL import Image
from typing_extensions import override

from lightseg.callbacks.per_image import gather_lists
from lightseg.errors import LightsegError
from lightseg.metrics.segmentation import PER_CLASS_KEYS, ImageCounts, image_confusion, image_scores
from lightseg.run_folder import run_dir
from lightseg.tasks.base import BaseTask
from lightseg.tasks.detection import DetectionTask
from lightseg.tasks.semantic import SemanticSegmentationTask
from lightseg.types import SemanticEvalOutput
from lightseg.visualize import confusion_matrix_image, draw_detections, sample_panel, to_uint8_image


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
        self.detection = isinstance(pl_module, DetectionTask)
        if not isinstance(pl_module, SemanticSegmentationTask | DetectionTask):
            raise LightsegError(
                f"SegmentationDashboard draws lightseg's semantic, instance and keypoint results; "
                f"{type(pl_module).__name__} is none of those tasks: remove the callback from trainer.callbacks"
            )

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

    def _fixed_samples(self, trainer: Trainer, pl_module: LightningModule) -> list[dict[str, Any]]:
        loaders = trainer.val_dataloaders
        loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
        dataset = getattr(loader, "dataset", None)
        if dataset is None or not hasattr(dataset, "__len__"):
            return []
        task = cast(Any, pl_module)
        samples = []
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad(), trainer.precision_plugin.forward_context():
                for index in self.sample_indices(len(dataset)):
                    item = dataset[index]
                    image = item["image"].to(pl_module.device)
                    if self.detection:
                        detections = {k: v.cpu() for k, v in task([image])[0].items()}
                        samples.append(self._detection_sample(task, index, item["image"], item["target"], detections))
                        continue
                    labels = task.predict_probs(image[None]).max(1).indices[0]
                    samples.append(self._sample(task, index, item["image"], item["mask"], labels))
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
        task = cast(Any, pl_module)
        sizes = batch.get("size") or [tuple(batch["image"].shape[-2:])] * len(batch["image"])
        for i, (height, width) in enumerate(sizes):
            target = batch["mask"][i, :height, :width]
            if outputs.image_scores is not None:  # the task's own per-image scores: labels only when kept
                score = float(outputs.image_scores["miou"][i])
            else:
                score = image_iou(outputs.labels[i, :height, :width], target, task.hparams["num_classes"],
                                  task.hparams["ignore_index"])  # fmt: skip
            key = (-score, self._seen)  # a max-heap on IoU keeps the k lowest
            self._seen += 1
            if len(self._worst) < self.worst_k or key > (self._worst[0][0], self._worst[0][1]):
                labels = outputs.labels[i, :height, :width]
                image = batch["image"][i, :, :height, :width]
                entry = (key[0], key[1], self._sample(task, None, image, target, labels, score))
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
        worst = sorted(entries, key=lambda s: s["iou"])[: self.worst_k]
        if trainer.is_global_zero and worst and self._can_show(trainer):
            self._log_samples(trainer, pl_module, "test_worst", worst)

    # logging ------------------------------------------------------------------------------

    def _sample(
        self,
        task: Any,
        index: int | None,
        image: torch.Tensor,
        target: torch.Tensor,
        labels: torch.Tensor,
        score: float | None = None,
    ) -> dict[str, Any]:
        hp = task.hparams
        if score is None:
            score = image_iou(labels, target.to(labels.device), hp["num_classes"], hp["ignore_index"])
        caption = f"IoU {100 * score:.1f}" if score == score else "IoU -"
        return {
            "image": to_uint8_image(image),
            "target": target.cpu().numpy().astype(np.uint8 if hp["num_classes"] <= 255 else np.int32),
            "prediction": labels.cpu().numpy().astype(np.uint8 if hp["num_classes"] <= 255 else np.int32),
            "iou": score,
            "caption": caption if index is None else f"#{index} {caption}",
        }

    def _detection_sample(
        self, task: Any, index: int, image: torch.Tensor, target: dict[str, Any], detections: dict[str, torch.Tensor]
    ) -> dict[str, Any]:
        names = task.class_names_or_indices
        skeleton = list(getattr(getattr(task.trainer, "datamodule", None), "skeleton", []) or [])
        threshold = float(task.hparams.get("mask_threshold", 0.5))
        truth = {k: v for k, v in target.items() if isinstance(v, torch.Tensor)}
        truth["scores"] = torch.ones(len(truth["labels"]))
        drawn_truth = draw_detections(image, truth, truth["scores"] > 0, truth.get("masks"), names, skeleton,
                                      show_scores=False)  # fmt: skip
        keep = detections["scores"] >= self.score_threshold
        masks = detections["masks"][:, 0] > threshold if "masks" in detections else None
        drawn = draw_detections(image, detections, keep, masks, names, skeleton)
        gap = np.full((drawn.shape[0], 2, 3), 255, dtype=np.uint8)
        return {
            "panel": np.concatenate([drawn_truth, gap, drawn], axis=1),
            "caption": f"#{index}: {len(truth['labels'])} true | {int(keep.sum())} predicted >= {self.score_threshold}",
        }

    def _can_show(self, trainer: Trainer) -> bool:
        if any(isinstance(lg, WandbLogger | TensorBoardLogger) for lg in trainer.loggers):
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

    def _log_samples(
        self, trainer: Trainer, pl_module: LightningModule, key: str, samples: list[dict[str, Any]]
    ) -> None:
        if samples and "panel" in samples[0]:  # detection: truth | prediction drawings
            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    import wandb

                    images = [wandb.Image(s["panel"], caption=s["caption"]) for s in samples]
                    _wandb_log(logger, trainer, {key: images})
                elif isinstance(logger, TensorBoardLogger):
                    for i, s in enumerate(samples):
                        logger.experiment.add_image(f"{key}/{i}", s["panel"], trainer.global_step, dataformats="HWC")
            return
        names = cast(BaseTask, pl_module).class_names_or_indices
        ignore_index = int(cast(Any, pl_module).hparams["ignore_index"])
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                labels = {i: name for i, name in enumerate(names)}
                labels.setdefault(ignore_index, "ignore")
                images = [
                    wandb.Image(
                        s["image"],
                        masks={
                            "ground_truth": {"mask_data": s["target"], "class_labels": labels},
                            "predictions": {"mask_data": s["prediction"], "class_labels": labels},
                        },
                        caption=s["caption"],
                    )
                    for s in samples
                ]
                _wandb_log(logger, trainer, {key: images})
            elif isinstance(logger, TensorBoardLogger):
                for i, s in enumerate(samples):
                    panel = sample_panel(s["image"], s["target"], s["prediction"])
                    logger.experiment.add_image(f"{key}/{i}", panel, trainer.global_step, dataformats="HWC")
                logger.experiment.add_text(
                    f"{key}/captions", " | ".join(s["caption"] for s in samples), trainer.global_step
                )

    def _log_distribution(self, trainer: Trainer, key: str, values: list[float]) -> None:
        """A histogram of per-image scores (e.g. each test image's mIoU)."""
        if not values or not trainer.is_global_zero or not self._can_show(trainer):
            return
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                _wandb_log(logger, trainer, {key: wandb.Histogram(values, num_bins=20)})
            elif isinstance(logger, TensorBoardLogger):
                bins = np.linspace(0, 1, 21)
                logger.experiment.add_histogram(key, np.asarray(values), trainer.global_step, bins=bins)

    def _log_results(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        results = cast(Any, pl_module).epoch_results.get(stage)
        if results is None:
            return
        folder = run_dir(trainer)  # on every process: finding it may broadcast
        if not trainer.is_global_zero:
            return
        names = cast(BaseTask, pl_module).class_names_or_indices
        heatmap = None
        if self.confusion_matrix and "confmat" in results:
            epoch = f"_epoch{trainer.current_epoch:03d}" if trainer.state.fn == "fit" else ""
            heatmap = confusion_matrix_image(results["confmat"], names, title=f"{stage}{epoch}: row-normalised (%)")
            write_png(heatmap, folder / "confusion_matrix" / f"{stage}{epoch}.png")
        if not self._can_show(trainer):
            return
        if self.detection:  # AP per class and IoU type
            types = list(cast(Any, pl_module).iou_types)
            columns = ["class", *(f"{t} AP" for t in types)]
            per_class = [results[f"{t}_map_per_class"].reshape(-1) for t in types]
            rows = [[name, *(_number(values[i]) for values in per_class)] for i, name in enumerate(names[1:])]
        else:
            keys = [*PER_CLASS_KEYS, *(k for k in ("biou_per_class", "iiou_per_class") if k in results)]
            titles = {"biou_per_class": "Boundary IoU", "iiou_per_class": "iIoU"}
            columns = ["class", "IoU", "accuracy", "Dice", *(titles[k] for k in keys[len(PER_CLASS_KEYS) :])]
            rows = [[name, *(_number(results[k][i]) for k in keys)] for i, name in enumerate(names)]
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                import wandb

                payload: dict[str, Any] = {}
                if self.class_table:
                    payload[f"{stage}_per_class"] = wandb.Table(columns=list[str | int](columns), data=rows)
                if heatmap is not None:
                    payload[f"{stage}_confusion_matrix"] = wandb.Image(heatmap)
                _wandb_log(logger, trainer, payload)
            elif isinstance(logger, TensorBoardLogger):
                if self.class_table:
                    logger.experiment.add_text(f"{stage}_per_class", markdown_table(columns, rows), trainer.global_step)
                if heatmap is not None:
                    logger.experiment.add_image(
                        f"{stage}_confusion_matrix", heatmap, trainer.global_step, dataformats="HWC"
                    )


def image_iou(prediction: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int) -> float:
    """Mean IoU of one image over the classes in its ground truth or prediction (ignored pixels left out).

    NaN when every pixel is ignored (the ``miou`` of :func:`~lightseg.metrics.image_scores`).
    """
    valid = target != ignore_index
    confusion = image_confusion(prediction[None], target[None], num_classes, valid[None])
    return float(image_scores(ImageCounts(confusion))["miou"][0])


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    """Per-class rows ``[name, value, ...]`` (fractions) as a Markdown table in %."""
    lines = [f"| {' | '.join(columns)} |", "|---|" + "---:|" * (len(columns) - 1)]
    for name, *values in rows:
        cells = ["-" if v is None else f"{100 * v:.1f}" for v in values]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines)


@rank_zero_only
def write_png(image: np.ndarray, path: Path) -> None:
    """Write ``image`` ``[H,W,3]`` uint8 as a PNG, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


def _number(value: torch.Tensor) -> float | None:
    number = float(value)
    return None if number != number else number


def _wandb_log(logger: Logger, trainer: Trainer, payload: dict[str, Any]) -> None:
    # the step axis Lightning's WandbLogger defines for every metric
    cast(WandbLogger, logger).experiment.log({**payload, "trainer/global_step": trainer.global_step})
