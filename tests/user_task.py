"""A user's own task subclass, named in YAML by import path (tests the STYLE.md example)."""

from __future__ import annotations

from lightning import Callback, LightningModule, Trainer
from segmentation_models_pytorch.losses import LovaszLoss
from torch import nn

from lightseg.tasks import SemanticSegmentationTask


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
