"""Progress as plain lines for logs: what a batch job's output file can hold and a person can read."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO, cast

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, ProgressBar, RichProgressBar, TQDMProgressBar
from typing_extensions import override


def duration(seconds: float) -> str:
    """``12 s``, ``3:05`` or ``1:02:03``."""
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class LineProgress(ProgressBar):
    """Progress as plain lines: one every ``interval`` seconds within an epoch or evaluation, one per epoch.

    Lightning's progress bar redraws one line after every step; written to a file (a cluster
    job's output, ``lightseg fit ... > log``) that is megabytes of carriage returns on a
    single line. Where the output is not a terminal, lightseg uses this progress instead
    (configure a ``TQDMProgressBar`` in ``trainer.callbacks`` to keep the bar). Each epoch
    ends with a line of its metrics (train and, when it ran, validation) and the time left
    for the whole run, estimated from the steps done::

        epoch 3 (4 of 20) step 10/25: train_loss_step 0.0412  1.64 steps/s  epoch ends in 9.1 s
        epoch 3 (4 of 20): 25 steps in 15 s (1.64 steps/s); train_loss_epoch 0.0411 train_miou 0.971;
            val_loss 0.0521 val_miou 0.964 (validation 1.3 s); about 4:10 left

    Args:
        interval: seconds between two lines within an epoch or an evaluation (0: every step).
    """

    def __init__(self, interval: float = 30.0) -> None:
        super().__init__()
        if interval < 0:
            raise ValueError(f"interval must be >= 0 seconds, got {interval}")
        self.interval = interval
        self._enabled = True
        self._fit_start = self._epoch_start = self._last = self._eval_start = 0.0
        self._steps_at_start = 0
        self._epoch_steps = 0
        self._epoch_time = 0.0
        self._validated: float | None = None  # how long this epoch's validation took
        self._pending_epoch: int | None = None  # an epoch whose line waits for its last metrics

    @override
    def disable(self) -> None:
        self._enabled = False

    @override
    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        """Whether this process prints (rank zero)."""
        return self._enabled

    @override
    def print(self, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        if self._enabled:  # also LightningModule.print's channel: its end= and file= are kept
            print(*args, sep=sep, **{"file": sys.stdout, "flush": True, **kwargs})

    def _due(self, now: float) -> bool:
        return now - self._last >= self.interval

    @staticmethod
    def _epoch(trainer: Trainer, epoch: int) -> str:
        """``epoch 4 (5 of 20)``: Lightning's epoch number, as in checkpoint names, and how far the run is."""
        epochs = trainer.max_epochs
        return f"epoch {epoch} ({epoch + 1} of {epochs})" if epochs is not None and epochs > 0 else f"epoch {epoch}"

    # training

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._fit_start = time.monotonic()
        self._steps_at_start = trainer.global_step

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._flush_epoch(trainer, pl_module)
        self._epoch_start = self._last = time.monotonic()
        self._epoch_steps = 0
        self._validated = None

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._epoch_steps = batch_idx + 1
        now = time.monotonic()
        total = self.total_train_batches
        if not self._due(now) or self._epoch_steps == total:
            return
        self._last = now
        rate = self._epoch_steps / max(now - self._epoch_start, 1e-9)
        of = f"/{total}" if isinstance(total, int) else ""
        parts = [f"{k} {_number(v)}" for k, v in self.get_metrics(trainer, pl_module).items() if k.endswith("_step")]
        parts.append(f"{rate:.3g} steps/s")
        if isinstance(total, int):
            parts.append(f"epoch ends in {duration((total - self._epoch_steps) / rate)}")
        where = f"{self._epoch(trainer, trainer.current_epoch)} step {self._epoch_steps}{of}"
        self.print(f"{where}: {'  '.join(parts)}")

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # the task logs its epoch scores after the callbacks' epoch end: the line waits for them
        self._pending_epoch = trainer.current_epoch
        self._epoch_time = time.monotonic() - self._epoch_start

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._flush_epoch(trainer, pl_module)

    def _flush_epoch(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._pending_epoch is None:
            return
        epoch, self._pending_epoch = self._pending_epoch, None
        metrics = self.get_metrics(trainer, pl_module)
        train = [f"{k} {_number(v)}" for k, v in metrics.items() if k.startswith("train_") and not k.endswith("_step")]
        line = (
            f"{self._epoch(trainer, epoch)}: {self._epoch_steps} steps in {duration(self._epoch_time)} "
            f"({self._epoch_steps / max(self._epoch_time, 1e-9):.3g} steps/s)"
        )
        if train:
            line += "; " + " ".join(train)
        if self._validated is not None:
            val = [f"{k} {_number(v)}" for k, v in metrics.items() if k.startswith("val_")]
            line += f"; {' '.join(val)} (validation {duration(self._validated)})" if val else ""
        line += self._time_left(trainer)
        self.print(line)

    def _time_left(self, trainer: Trainer) -> str:
        done = trainer.global_step - self._steps_at_start
        total = trainer.estimated_stepping_batches
        if not math.isfinite(total):
            return "; no end set (max_epochs -1): time left unknown"
        if done <= 0 or trainer.global_step >= total:
            return ""
        per_step = (time.monotonic() - self._fit_start) / done  # validation time included
        return f"; about {duration(per_step * (total - trainer.global_step))} left"

    # evaluation and prediction

    def _eval_started(self) -> None:
        self._eval_start = self._last = time.monotonic()

    def _eval_step(self, what: str, done: int, total: int | float) -> None:
        now = time.monotonic()
        if not self._due(now) or done == total:
            return
        self._last = now
        rate = done / max(now - self._eval_start, 1e-9)
        left = f", ends in {duration((total - done) / rate)}" if isinstance(total, int) else ""
        of = f"/{total}" if isinstance(total, int) else ""
        self.print(f"{what} batch {done}{of}: {rate:.3g} batches/s{left}")

    @override
    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._eval_started()

    @override
    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.sanity_checking:
            self.has_dataloader_changed(dataloader_idx)
            self._eval_step("validation", batch_idx + 1, self.total_val_batches_current_dataloader)

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if trainer.state.fn == "fit":
            self._validated = time.monotonic() - self._eval_start
            self.reset_dataloader_idx_tracker()
        else:
            self._eval_done("validation", trainer.num_val_batches)

    @override
    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._eval_started()

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
        self.has_dataloader_changed(dataloader_idx)
        self._eval_step("test", batch_idx + 1, self.total_test_batches_current_dataloader)

    @override
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._eval_done("test", trainer.num_test_batches)

    @override
    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._eval_started()

    @override
    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.has_dataloader_changed(dataloader_idx)
        self._eval_step("predict", batch_idx + 1, self.total_predict_batches_current_dataloader)

    @override
    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._eval_done("predict", trainer.num_predict_batches)

    def _eval_done(self, what: str, counts: list[int | float] | int | float) -> None:
        total = sum(counts) if isinstance(counts, list) else counts
        batches = f"{int(total)} batch{'es' if total != 1 else ''}" if math.isfinite(total) else "all batches"
        self.print(f"{what}: {batches} in {duration(time.monotonic() - self._eval_start)}")
        self.reset_dataloader_idx_tracker()


def lines_unless_terminal(trainer: Trainer, configured: Sequence[Callback], stream: TextIO | None = None) -> None:
    """Put a :class:`LineProgress` in place of Lightning's default bar when ``stream`` (stdout) is not a terminal.

    Lightning's default is its tqdm bar, or its rich bar where the ``rich`` package is installed
    (transformers brings it); either redraws one line, which a log file keeps as a wall of
    carriage returns. A progress bar the user configured (``configured``: the run's callbacks
    from its config) is kept, and so is a run without one (``enable_progress_bar: false``).
    """
    bar = trainer.progress_bar_callback
    if bar is None or type(bar) not in (TQDMProgressBar, RichProgressBar):
        return
    if any(isinstance(cb, ProgressBar) for cb in configured):
        return
    if (stream or sys.stdout).isatty():
        return
    callbacks: list[Callback] = cast(Any, trainer).callbacks  # set by Lightning's callback connector
    callbacks[callbacks.index(bar)] = LineProgress()
