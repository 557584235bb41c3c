"""The base task: hyperparameters, build seams, one ``step``, injected optimizer and schedule."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from typing_extensions import override

from lightseg.optim import PolyLR
from lightseg.types import Stage


class BaseTask(LightningModule, ABC):
    """Base of every lightseg task. Subclasses implement the ``build_*`` seams and :meth:`step`.

    The ``__init__`` signature of a task is its YAML schema: every argument is saved as a
    hyperparameter (``self.hparams``), and a user's subclass changes one seam in a few
    lines and is named in the config by its import path.

    Args:
        optimizer: a callable ``params -> Optimizer`` (in YAML: ``class_path`` + ``init_args``).
        lr_scheduler: a callable ``optimizer -> LRScheduler``, or ``None`` for a constant rate.
            :class:`lightseg.optim.PolyLR` steps per iteration; others per epoch unless
            ``lr_interval`` says otherwise.
        lr_interval: ``step`` or ``epoch``; ``None`` takes the scheduler's own preference.
    """

    monitor: ClassVar[str] = "val_loss"
    mode: ClassVar[Literal["min", "max"]] = "min"
    stages: ClassVar[tuple[str, ...]] = ("train", "val", "test")

    def __init__(
        self,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_interval: Literal["step", "epoch"] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.model = self.build_model()
        self.criterion = self.build_loss()
        self.metrics = nn.ModuleDict({f"{stage}_metrics": self.build_metrics() for stage in self.stages})

    @abstractmethod
    def build_model(self) -> nn.Module:
        """Build the network from ``self.hparams``."""

    @abstractmethod
    def build_loss(self) -> nn.Module:
        """Build the training criterion from ``self.hparams``."""

    @abstractmethod
    def build_metrics(self) -> nn.Module:
        """Build one stage's metric (called once per stage)."""

    @abstractmethod
    def step(self, batch: Any, stage: Stage) -> torch.Tensor:
        """Forward, loss, logging and metric update for one batch; returns the loss."""

    def stage_metrics(self, stage: str) -> Any:
        """The metric instance of ``stage``."""
        return self.metrics[f"{stage}_metrics"]

    @override
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.step(batch, "train")

    @override
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.step(batch, "val")

    @override
    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.step(batch, "test")

    @override
    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(p for p in self.parameters() if p.requires_grad)
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        if isinstance(scheduler, PolyLR) and scheduler.needs_total_iters:
            scheduler.total_iters = int(self.trainer.estimated_stepping_batches)
        interval = self.hparams.get("lr_interval") or getattr(scheduler, "interval", "epoch")
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": interval, "monitor": self.monitor},
        }

    @override
    def configure_callbacks(self) -> Sequence[Callback] | Callback:
        # Replace Lightning's default (unmonitored) checkpoint with one on the task's metric,
        # unless checkpointing is off or the user configured a monitored checkpoint.
        checkpoints = [cb for cb in self.trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint)]
        if not checkpoints or any(cb.monitor for cb in checkpoints):
            return []
        return [
            ModelCheckpoint(
                monitor=self.monitor,
                mode=self.mode,
                save_last=True,
                filename=f"epoch{{epoch:03d}}-{self.monitor}{{{self.monitor}:.4f}}",
                auto_insert_metric_name=False,
            )
        ]
