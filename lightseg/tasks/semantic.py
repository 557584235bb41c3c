"""Semantic segmentation: FCN, U-Net, DeepLab v2/v3/v3+ by name, one loop."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
from collections.abc import Iterator
from typing import Any, ClassVar, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from typing_extensions import override

from lightseg.contract import PixelStatistics, TaskContext, data_description, datamodule_of
from lightseg.errors import LightsegError, class_count_mismatch, option
from lightseg.inference import (
    InferenceSettings,
    band_columns,
    column_stripes,
    migrate_flat_settings,
    pair_of,
    tiled_logits,
)
from lightseg.losses import LossName, SegmentationLoss, median_frequency_weights
from lightseg.metrics import EvaluationProtocol, SegmentationMetrics, format_class_table, image_scores
from lightseg.metrics.segmentation import PER_CATEGORY_SCORES, PER_CLASS_SCORES, PROTOCOL_SCALAR_KEYS, SCALAR_KEYS
from lightseg.models.semantic import ARCHITECTURES, ModelSpec, applicable_options, build_semantic_model
from lightseg.models.wrapper import SegmentationModel, channel_mismatch
from lightseg.tasks.base import BaseTask
from lightseg.types import (
    RasterSource,
    SemanticBatch,
    SemanticEvalOutput,
    SemanticPrediction,
    Stage,
    TiledPrediction,
)


class SemanticSegmentationTask(BaseTask):
    """Per-pixel classification with any architecture of :mod:`lightseg.models.semantic`.

    Images arrive in [0, 1] (the model normalises them); the model returns
    ``{"out": logits[, "aux": logits]}`` at input resolution. Logs ``{stage}_loss`` and the
    dataset-level ``{stage}_miou``, ``_pixel_acc``, ``_macc``, ``_fwiou``, ``_mdice`` and
    ``{stage}_iou_<class>``; in validation and test also Boundary IoU (``{stage}_biou``,
    ``{stage}_biou_<class>``) and what the data set's :class:`~lightseg.metrics.EvaluationProtocol`
    adds (Cityscapes: ``{stage}_iiou``, ``{stage}_category_iou``, ``{stage}_category_iiou``
    and their per-class/per-category values); prints a per-class table at the end of
    ``validate``/``test``. Validation and test steps return a
    :class:`~lightseg.types.SemanticEvalOutput` (probabilities, labels and, in test, each
    image's scores) and predict steps a :class:`~lightseg.types.SemanticPrediction`, which
    callbacks such as :class:`~lightseg.callbacks.PerImageScores`,
    :class:`~lightseg.callbacks.DenseCRF` and the dashboard read in their ``on_*_batch_end``.

    Args:
        network: the architecture, its backbone and their options, as one group (a
            :class:`~lightseg.models.semantic.ModelSpec`), e.g. ``network: {arch: deeplabv3,
            backbone: resnet101, output_stride: 8}``; only what differs from the defaults
            (``unet`` on smp's default encoder with ImageNet weights) needs writing. The older flat
            spelling (``arch: deeplabv3`` beside ``num_classes``) is still read, in configs,
            command lines, Python and checkpoints.
        num_classes: classes including background; the CLI links it from the data module.
        ignore_index: label that never counts in loss or metrics.
        aux_weight: weight of the auxiliary head's loss (``fcn``, ``deeplabv3`` on ResNets);
            0 removes the head.
        loss: ``ce``, ``dice``, ``ce+dice`` or ``focal``.
        class_weights: per-class cross-entropy weights, or ``median_frequency`` to compute them
            from the training masks before training.
        boundary_w0: U-Net border weight ``w0`` (10 in the paper); 0 disables the weight map.
        boundary_sigma: U-Net border width ``sigma`` in pixels (5 in the paper).
        inference: how validate, test, predict and the dashboard run the model (whole image or
            sliding window, multi-scale / flip test-time augmentation): an
            :class:`~lightseg.inference.InferenceSettings`, e.g. ``inference: {mode: slide,
            window_size: [512, 1024]}``.
        boundary_ratio: Boundary IoU's band width as a fraction of each image's diagonal in
            validation and test; ``None`` takes the data set's protocol (0.005 for Cityscapes,
            0.02 otherwise, as the official Boundary IoU API); 0 turns Boundary IoU off.
        kwargs: the optimiser and speed settings of :class:`~lightseg.tasks.BaseTask` (``optimizer``,
            ``lr_scheduler``, ``lr_interval``, ``head_lr_mult``, ``no_weight_decay_on``,
            ``init_from``, ``freeze_backbone``, ``layer_decay``, ``lora``, ``channels_last``, ``compile``).
    """

    monitor: ClassVar[str] = "val_miou"
    mode: ClassVar[Literal["min", "max"]] = "max"
    network_spec: ClassVar[type[ModelSpec]] = ModelSpec
    network: ModelSpec

    def __init__(
        self,
        network: ModelSpec = ModelSpec(),  # noqa: B008 (frozen: one shared default is safe)
        num_classes: int = 21,
        ignore_index: int = 255,
        aux_weight: float = 0.5,
        loss: LossName = "ce",
        class_weights: list[float] | Literal["median_frequency"] | None = None,
        boundary_w0: float = 0.0,
        boundary_sigma: float = 5.0,
        inference: InferenceSettings = InferenceSettings(),  # noqa: B008 (frozen: one shared default is safe)
        boundary_ratio: float | None = None,
        **kwargs: Any,
    ) -> None:
        self.take_network(network, kwargs)
        settings = InferenceSettings.of(inference)
        # hyperparameters (read from this frame by save_hyperparameters) keep plain values, so
        # that checkpoints load with weights_only and hparams.yaml is readable
        inference = settings.as_dict()  # type: ignore[assignment]
        super().__init__(**kwargs)
        #: how the model runs outside training (see ``inference``)
        self.inference = settings
        #: what validation and test report (set from the data module at setup)
        self.protocol: EvaluationProtocol | None = None
        # images whose pixels are all void have no loss (NaN): left out of the mean
        self.loss_metrics = nn.ModuleDict({f"{s}_loss": MeanMetric(nan_strategy="ignore") for s in ("val", "test")})

    @override
    def build_model(self) -> nn.Module:
        spec, aux_weight = self.network, self.hparams["aux_weight"]
        if aux_weight not in (0, 0.5) and spec.arch in ARCHITECTURES and "aux" not in applicable_options(spec):
            raise LightsegError(
                f"aux_weight={aux_weight} does not apply to arch {spec.arch!r} with backbone "
                f"{spec.resolved_backbone!r}, which has no auxiliary head (fcn and deeplabv3 on ResNet-50/101 have "
                "one); remove it"
            )
        return build_semantic_model(spec, self.hparams["num_classes"], aux=aux_weight > 0)

    @override
    def build_loss(self) -> nn.Module:
        hp = self.hparams
        weights = hp["class_weights"]
        entry = ARCHITECTURES.get(self.network.arch)
        if entry is not None and entry.query:
            settings = {
                "loss": ("ce", hp["loss"]),
                "class_weights": (None, weights),
                "boundary_w0": (0.0, hp["boundary_w0"]),
            }
            changed = [f"{k}={v!r}" for k, (default, v) in settings.items() if v != default]
            if changed:
                raise LightsegError(
                    f"{', '.join(changed)} does not apply to arch {self.network.arch!r}, which trains with its own "
                    "set-prediction loss (set its class_weight, mask_weight, dice_weight or no_object_weight "
                    "through arch_options); remove it"
                )
        return SegmentationLoss(
            hp["loss"],
            hp["num_classes"],
            hp["ignore_index"],
            class_weights=None if weights in (None, "median_frequency") else weights,
            boundary_w0=hp["boundary_w0"],
            boundary_sigma=hp["boundary_sigma"],
        )

    @override
    def build_metrics(self) -> nn.Module:
        return SegmentationMetrics(self.hparams["num_classes"], self.hparams["ignore_index"])

    def _configure_evaluation(self, datamodule: Any) -> None:
        # validation and test score with the data set's protocol (training keeps the confusion matrix only)
        data = data_description(datamodule)
        protocol = (data.evaluation_protocol if data is not None else None) or EvaluationProtocol()
        ratio = self.hparams.get("boundary_ratio")
        if ratio is not None:
            if ratio < 0:
                raise LightsegError(f"boundary_ratio must be >= 0 (0 turns Boundary IoU off), got {ratio}")
            protocol = dataclasses.replace(protocol, boundary_ratio=ratio)
        if protocol == self.protocol:
            return
        self.protocol = protocol
        for stage in ("val", "test"):
            metric = SegmentationMetrics(self.hparams["num_classes"], self.hparams["ignore_index"], protocol)
            self.metrics[f"{stage}_metrics"] = metric.to(self.device)

    @override
    def context(self) -> TaskContext:
        return dataclasses.replace(
            super().context(), protocol=self.protocol or EvaluationProtocol(), in_channels=self.in_channels
        )

    @property
    def in_channels(self) -> int:
        """Channels of the images the model takes (3: RGB)."""
        return self.network.in_channels

    @override
    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """``[B,in_channels,H,W]`` images in [0, 1] -> ``{"out": [B,C,H,W], "aux"?: [B,C,H,W]}`` logits."""
        if self.hparams.get("channels_last"):
            image = image.contiguous(memory_format=torch.channels_last)
        return self.model(image)

    def compute_loss(self, outputs: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """Main loss plus ``aux_weight`` times the auxiliary head's loss.

        A mask-classification model (``mask2former``, ``eomt``) is scored by its own set-prediction loss.
        """
        if "mask_queries" in outputs:
            model = cast(SegmentationModel, self.model)
            ignore = self.hparams["ignore_index"]
            return model.net.set_loss(outputs, model.pad_target(mask, ignore), ignore)  # type: ignore[operator]
        loss = self.criterion(outputs["out"], mask)
        if "aux" in outputs:
            loss = loss + self.hparams["aux_weight"] * self.criterion(outputs["aux"], mask)
        return loss

    @classmethod
    @override
    def migrate_hparams(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        return super().migrate_hparams(migrate_flat_settings(hparams))

    def predict_probs(self, image: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[B,C,H,W]`` of images in [0, 1], run as :attr:`inference` says."""
        return self.inference.probs(lambda x: self(x)["out"], image)

    def evaluate(self, batch: SemanticBatch, stage: Stage) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and per-pixel scores (logits, or probabilities when inference is not plain) of a batch.

        Training returns the batch loss. Evaluation returns one loss per image, so that the
        epoch's loss does not depend on how images are grouped into batches or processes
        (Dice, for one, is not additive over images). Sliding-window / test-time-augmented
        evaluation scores the averaged probabilities with the same criterion (their
        logarithm is a valid logit); the auxiliary head only counts in plain evaluation.
        """
        mask = batch["mask"]
        sizes = batch.get("size")
        if stage != "train" and sizes is not None and len(set(sizes)) > 1:
            # Images of different sizes share a padded batch, and the padding would reach the
            # border logits: each is evaluated at its own size, so that results do not depend
            # on batching (batch size, process count).
            images, masks = crops(batch["image"], sizes), crops(mask, sizes)
            each = [self.evaluate({"image": i, "mask": m}, stage) for i, m in zip(images, masks, strict=True)]
            return torch.cat([loss for loss, _ in each]), padded([score for _, score in each], mask.shape[-2:])
        if stage == "train" or self.inference.plain:
            outputs = self(batch["image"])
            if stage == "train":
                return self.compute_loss(outputs, mask), outputs["out"]
            per_image = [
                self.compute_loss({k: v[i : i + 1] for k, v in outputs.items()}, mask[i : i + 1])
                for i in range(len(mask))
            ]
            return torch.stack(per_image), outputs["out"]
        probs = self.predict_probs(batch["image"])
        log_probs = probs.clamp_min(1e-8).log()
        return torch.stack([self.criterion(log_probs[i : i + 1], mask[i : i + 1]) for i in range(len(mask))]), probs

    @override
    def step(self, batch: SemanticBatch, stage: Stage) -> torch.Tensor:
        return self._step(batch, stage)[0]

    def _step(self, batch: SemanticBatch, stage: Stage) -> tuple[torch.Tensor, torch.Tensor]:
        loss, scores = self.evaluate(batch, stage)
        batch_size = batch["image"].shape[0]
        if stage == "train":
            self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=batch_size)
        else:
            # a torchmetrics mean over images: summed across processes, exact for any batching
            cast(MeanMetric, self.loss_metrics[f"{stage}_loss"]).update(loss.detach())
            loss = loss.nanmean()
        if stage == "train":
            self.stage_metrics(stage).update(scores.detach(), batch["mask"])
        else:
            instances = batch.get("instances")
            self.stage_metrics(stage).update(scores.detach(), batch["mask"], batch.get("size"), instances)
        return loss, scores

    def _eval_outputs(self, batch: SemanticBatch, stage: Stage) -> SemanticEvalOutput:
        loss, scores = self._step(batch, stage)
        output = SemanticEvalOutput(scores, not self.inference.plain, batch.get("size"), loss)
        counts = cast(SegmentationMetrics, self.stage_metrics(stage)).last_counts
        if counts is not None and stage == "test":
            # each image's scores (small: [B, C]) for the test callbacks (per-image CSV, worst images);
            # validation inside fit has no reader for them
            output.image_scores = {k: v.cpu() for k, v in image_scores(counts).items()}
            ids: list[str | None] = list(batch.get("id") or [])
            output.ids = ids or [None] * len(batch["mask"])
        return output

    @override
    def validation_step(self, batch: SemanticBatch, batch_idx: int) -> SemanticEvalOutput:  # type: ignore[override]
        return self._eval_outputs(batch, "val")

    @override
    def test_step(self, batch: SemanticBatch, batch_idx: int) -> SemanticEvalOutput:  # type: ignore[override]
        return self._eval_outputs(batch, "test")

    @override
    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> SemanticPrediction:
        tiled = [self.predict_tiled(source, path) for source, path in batch.get("rasters", [])]
        dtype = torch.uint8 if self.hparams["num_classes"] <= 256 else torch.int32
        if "image" not in batch:  # only images too large to hold: they are predicted as they are written
            empty = torch.zeros(0, 0, 0, dtype=dtype)
            return {"mask": empty, "path": [], "size": [], "tiled": tiled}
        sizes, image = batch["size"], batch["image"]
        if image.shape[1] != self.in_channels:
            names = ", ".join(batch["path"][:3])
            raise LightsegError(channel_mismatch(self.in_channels, int(image.shape[1]), f"images {names}"))
        if len(set(sizes)) > 1:  # as in evaluation: each image at its own size
            probs = padded([self.predict_probs(crop) for crop in crops(image, sizes)], image.shape[-2:])
        else:
            probs = self.predict_probs(image)
        labels = probs.max(1).indices.to(dtype)
        prediction: SemanticPrediction = {
            "mask": labels.cpu(), "path": batch["path"], "size": batch["size"], "probs": probs.float(),
        }  # fmt: skip
        if tiled:
            prediction["tiled"] = tiled
        return prediction

    def predict_tiled(self, source: RasterSource, path: str) -> TiledPrediction:
        """The prediction of an image too large to hold, read and run window by window as it is written.

        The windows are the sliding window's (``inference.window_size`` / ``window_stride`` /
        ``window_batch_size`` / ``blend``, whatever ``inference.mode``); the labels equal those
        of the in-memory sliding window on the same image. Test-time augmentation needs the
        whole image and is refused.
        """
        settings = self.inference
        if source.channels != self.in_channels:
            raise LightsegError(channel_mismatch(self.in_channels, source.channels, f"image {source.path} as read"))
        if settings.tta_scales != (1.0,) or settings.tta_flip:
            raise LightsegError(
                f"image {source.path} is predicted in tiles (it is larger than the data's predict_tile_above), which "
                "test-time augmentation cannot be: set inference.tta_scales [1.0] and inference.tta_flip false, "
                "or raise predict_tile_above"
            )
        window_height = min(pair_of(settings.window_size)[0], source.size[0])
        stripes = column_stripes(source.size[1], settings, band_columns(self.hparams["num_classes"], window_height))
        trainer = self._trainer
        precision = trainer.precision_plugin.predict_step_context if trainer is not None else contextlib.nullcontext

        def forward(windows: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode(), precision():
                return cast(torch.Tensor, self(windows.to(self.device))["out"])

        def logits(rows: tuple[int, int], columns: tuple[int, int]) -> Iterator[tuple[int, torch.Tensor]]:
            with torch.inference_mode():
                yield from tiled_logits(forward, source.read_windows, source.size, settings, rows, columns=columns)

        # what makes the scores: settings, the bands read (in the source's description), the normalisation (not in
        # the state dict: buffers the hyperparameters rebuild; a subclass's own model may have none) and the weights
        statistics = [getattr(self.model, name, None) for name in ("mean", "std")]
        normalisation = [t.flatten().tolist() for t in statistics if isinstance(t, torch.Tensor)]
        made_of = {"inference": settings.as_dict(), "source": repr(source), "normalisation": normalisation}
        digest = hashlib.sha256(json.dumps(made_of, sort_keys=True).encode())
        for name, value in self.state_dict().items():
            digest.update(name.encode())
            digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return TiledPrediction(source, path, self.hparams["num_classes"], logits, stripes, digest.hexdigest())

    @override
    def on_predict_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        # called after the callbacks' hook: the probabilities were theirs for the batch only
        if isinstance(outputs, dict):
            outputs.pop("probs", None)

    def _end_epoch(self, stage: str) -> dict[str, torch.Tensor]:
        metric = self.stage_metrics(stage)
        results: dict[str, torch.Tensor] = metric.compute()
        metric.reset()
        self._stage_results[stage] = results
        names = self.class_names_or_indices
        values = {f"{stage}_{key}": results[key].float() for key in SCALAR_KEYS}
        values.update({f"{stage}_{key}": results[key].float() for key in PROTOCOL_SCALAR_KEYS if key in results})
        categories = list(cast(SegmentationMetrics, metric).category_names)
        per_item = [(score, names) for score in PER_CLASS_SCORES] + [(s, categories) for s in PER_CATEGORY_SCORES]
        for score, item_names in per_item:
            if score.log_prefix is None or score.key not in results:
                continue
            for name, value in zip(item_names, results[score.key].tolist(), strict=False):
                if not math.isnan(value):
                    values[f"{stage}_{score.log_prefix}_{name.replace(' ', '_')}"] = torch.tensor(value)
        if f"{stage}_loss" in self.loss_metrics:
            # logged here, not in the step, so that a process that got no image joins the reduction
            mean = cast(MeanMetric, self.loss_metrics[f"{stage}_loss"])
            self.log(f"{stage}_loss", mean.compute(), prog_bar=True)
            mean.reset()
        miou = values.pop(f"{stage}_miou")
        self.log(f"{stage}_miou", miou, prog_bar=True)
        self.log_dict(values)
        return results

    @override
    def on_train_epoch_end(self) -> None:
        self._end_epoch("train")

    @override
    def on_validation_epoch_end(self) -> None:
        results = self._end_epoch("val")
        if self.trainer.state.fn == "validate" and not self.trainer.sanity_checking:
            self.print(self._table(results, "Validation, per class (%)"))

    @override
    def on_test_epoch_end(self) -> None:
        results = self._end_epoch("test")
        self.print(self._table(results, "Test, per class (%)"))

    def _table(self, results: dict[str, torch.Tensor], title: str) -> str:
        categories = self.protocol.categories if self.protocol is not None else {}
        return format_class_table(results, self.class_names, title=title, category_names=list(categories))

    @override
    def setup(self, stage: str) -> None:
        datamodule = datamodule_of(self.trainer)
        data = data_description(datamodule)
        data_classes = data.num_classes if data is not None else None
        if data_classes is not None and data_classes != self.hparams["num_classes"]:
            raise LightsegError(
                class_count_mismatch(
                    self.hparams["num_classes"], data_classes, type(datamodule).__name__,
                    f"build the task with num_classes={data_classes} (the CLI links it from the data)",
                )
            )  # fmt: skip
        if data is not None and data.in_channels != self.in_channels:
            bands = f" (bands {list(data.bands)})" if data.bands else ""
            raise LightsegError(
                channel_mismatch(
                    self.in_channels, data.in_channels, f"the images of {type(datamodule).__name__}{bands}"
                )
            )
        batch_size = data.batch_size if data is not None else None
        pooled = [m for m in self.model.modules() if type(m).__name__ == "ASPPPooling"]
        if stage == "fit" and pooled and isinstance(batch_size, int) and batch_size < 2:
            raise LightsegError(
                f"{option('data', 'loader.batch_size')} {batch_size}: {self.network.arch}'s ASPP image pooling "
                "normalises a 1x1 map with BatchNorm, which needs at least 2 images per batch (per process) in "
                "training; use a batch size of 2 or more"
            )
        super().setup(stage)
        self._configure_evaluation(datamodule)
        if stage == "fit" and self.hparams["class_weights"] == "median_frequency":
            if not isinstance(datamodule, PixelStatistics):
                raise LightsegError(
                    f"class_weights: median_frequency needs a data module with class_pixel_statistics(); "
                    f"{type(datamodule).__name__} has none: give explicit class_weights"
                )
            weights = median_frequency_weights(*datamodule.class_pixel_statistics())
            cast(SegmentationLoss, self.criterion).set_class_weights(torch.from_numpy(weights))
            self.print(f"median-frequency class weights: {[round(float(w), 3) for w in weights]}")


def crops(batch: torch.Tensor, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """Each item of a padded batch ``[B,...,H,W]`` at its own size, as a batch of one."""
    return [batch[i : i + 1, ..., :h, :w] for i, (h, w) in enumerate(sizes)]


def padded(items: list[torch.Tensor], size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Batches of one of different sizes, zero-padded at the bottom/right to ``size`` and concatenated."""
    height, width = size
    return torch.cat([F.pad(t, (0, width - t.shape[-1], 0, height - t.shape[-2])) for t in items])
