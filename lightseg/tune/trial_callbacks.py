"""What a trial's run carries for the study: its metric after each validation, pruning, the failures."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from optuna_integration import PyTorchLightningPruningCallback
from typing_extensions import override

from lightseg.errors import LightsegError, option
from lightseg.run_folder import run_dir


class TrialFailure(Exception):
    """A trial that ended without a value (an error, out of memory, a NaN): the study goes on."""


class StudyStop(LightsegError):
    """A mistake every trial would make (a metric the task does not log): the study stops."""


class TrialMonitor(Callback):
    """Records the trial's metric after each validation and stops a trial whose loss or metric is not finite.

    Args:
        metric: the optimised validation metric.
        direction: ``maximize`` or ``minimize``: which of the values is the best.
        trial: reports each value to this trial (the learning curve), where no pruning callback does.
    """

    def __init__(self, metric: str, direction: str, trial: optuna.Trial | None = None) -> None:
        self.metric = metric
        self.direction = direction
        self.trial = trial
        self.values: dict[int, float] = {}
        self.folder: Path | None = None
        self._finite: torch.Tensor | None = None

    @property
    def best(self) -> float | None:
        """The best value of the metric over the trial's validations."""
        if not self.values:
            return None
        return max(self.values.values()) if self.direction == "maximize" else min(self.values.values())

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.folder = run_dir(trainer)

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):  # no sync per step: checked once an epoch
            finite = torch.isfinite(loss.detach()).all()
            self._finite = finite if self._finite is None else self._finite & finite

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        finite = self._finite is None or bool(self._finite)
        if not trainer.strategy.reduce_boolean_decision(finite, all=True):  # every rank stops together
            raise TrialFailure(f"the training loss became NaN or infinite in epoch {trainer.current_epoch}")
        self._finite = None

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.metric)
        if value is None:
            logged = sorted(k for k in trainer.callback_metrics if k.startswith("val"))
            raise StudyStop(
                f"{option('tune', 'metric')} {self.metric} is not logged by the task; its validation metrics: "
                f"{', '.join(logged) or 'none'}"
            )
        number = float(value)
        if not math.isfinite(number):
            raise TrialFailure(f"{self.metric} is {number} after epoch {trainer.current_epoch}")
        self.values[trainer.current_epoch] = number
        if self.trial is not None and trainer.is_global_zero:  # the learning curve, where no pruner reports it
            self.trial.report(number, step=trainer.current_epoch)


class TrialPruning(PyTorchLightningPruningCallback):
    """Optuna's Lightning pruning callback, except after the last epoch: stopping then saves nothing.

    A trial judged at its last validation has trained all it will: it is complete, with its
    value (which the sampler learns from), not pruned.
    """

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        last = (
            trainer.max_epochs is not None
            and trainer.max_epochs > 0
            and trainer.current_epoch + 1 >= trainer.max_epochs
        )
        value = trainer.callback_metrics.get(self.monitor)
        if not last or trainer.sanity_checking or value is None:
            super().on_validation_end(trainer, pl_module)
            return
        if trainer.is_global_zero:  # the learning curve's last point
            self._trial.report(float(value), step=trainer.current_epoch)
