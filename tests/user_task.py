"""A user's own task subclass, named in YAML by import path (tests the STYLE.md example)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lightning import Callback, LightningModule, Trainer
from segmentation_models_pytorch.losses import LovaszLoss
from torch import nn

from lightseg.tasks import SemanticSegmentationTask
from lightseg.types import SemanticBatch, Stage


class LovaszSegmentation(SemanticSegmentationTask):
    def build_loss(self) -> nn.Module:
        return LovaszLoss("multiclass", ignore_index=self.hparams["ignore_index"])


class StopAfterEpoch(Callback):
    """Interrupts training at the end of ``epoch`` (a stand-in for a killed job)."""

    def __init__(self, epoch: int = 0) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


class InterruptAtStep(Callback):
    """Raises KeyboardInterrupt (what Ctrl-C does) after optimizer step ``step``."""

    def __init__(self, step: int = 3) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


class NoisyTruthSegmentation(SemanticSegmentationTask):
    """Evaluates the truth with mistakes that depend on each image only (not its batch or process).

    A stand-in for a trained model that every score can tell from the truth and from chance:
    a band of rows shifted down by 3 pixels, and every 7th pixel (counted over the image) moved
    to the next class. Its loss per image is the fraction of pixels it gets wrong.
    """

    def evaluate(self, batch: SemanticBatch, stage: Stage) -> tuple[torch.Tensor, torch.Tensor]:
        sizes = batch.get("size")
        if stage == "train" or (sizes is not None and len(set(sizes)) > 1):
            return super().evaluate(batch, stage)  # mixed sizes: image by image, back here
        classes = int(self.hparams["num_classes"])
        truth = batch["mask"].long()
        known = truth != self.hparams["ignore_index"]
        prediction = torch.where(known, truth, 0)
        height = prediction.shape[-2]
        band = slice(height // 4, height // 2)
        prediction[:, band] = torch.roll(prediction, 3, dims=-2)[:, band]
        pixel = torch.arange(prediction[0].numel(), device=truth.device).view_as(prediction[0])
        prediction = torch.where(pixel % 7 == 0, (prediction + 1) % classes, prediction)
        wrong = ((prediction != truth) & known).flatten(1).float().sum(1) / known.flatten(1).sum(1).clamp_min(1)
        return wrong, F.one_hot(prediction, classes).permute(0, 3, 1, 2).float()


class SignalAtStep(Callback):
    """Sends this process ``signal`` as training step ``step`` starts (a cluster's warning, for tests).

    ``rank``: only the process of that global rank gets it (``None``: every process).
    """

    def __init__(self, step: int = 3, signal: str = "SIGUSR1", rank: int | None = None) -> None:
        self.step = step
        self.signal = signal
        self.rank = rank

    def on_train_batch_start(self, trainer: Trainer, *args: object) -> None:
        import os
        import signal

        if trainer.global_step == self.step and self.rank in (None, trainer.global_rank):
            os.kill(os.getpid(), getattr(signal, self.signal))
