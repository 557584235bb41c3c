"""The checkpoint callbacks of a run: ``last.ckpt`` after every epoch, a checkpoint on Ctrl-C."""

from __future__ import annotations

import sys
from pathlib import Path

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint
from typing_extensions import override


class InterruptCheckpoint(Callback):
    """On Ctrl-C during ``fit``, saves ``last-interrupted.ckpt`` and prints the command that goes on.

    The checkpoint lands beside the run's other checkpoints (``--ckpt_path last`` picks it,
    being the newest ``last*``). A mid-epoch checkpoint resumes at the interrupted step with
    the epoch's remaining step count, but the rest of that epoch draws a new shuffle: it is
    not bit-identical to an uninterrupted run (checkpoints saved at an epoch's end are).

    Args:
        command: the command line that started the run (``--ckpt_path`` is appended).
    """

    FILENAME = "last-interrupted.ckpt"

    def __init__(self, command: str = "lightseg fit ...") -> None:
        self.command = command
        self.saved: Path | None = None

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, KeyboardInterrupt) or trainer.state.fn != "fit" or trainer.global_step == 0:
            return
        checkpoint = trainer.checkpoint_callback
        folder = (
            getattr(checkpoint, "dirpath", None) or Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"
        )
        path = Path(folder) / self.FILENAME
        trainer.save_checkpoint(path)
        self.saved = path
        if trainer.is_global_zero:
            print(
                f"lightseg: interrupted in epoch {trainer.current_epoch}, step {trainer.global_step}; saved {path} "
                "(it resumes from that step, the rest of the epoch with a new shuffle: checkpoints saved at an "
                f"epoch's end resume exactly). To go on:\n  {self.command} --ckpt_path {path}",
                file=sys.stderr,
            )


class ModelCheckpoint(LightningModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` whose ``save_last`` writes ``last.ckpt`` after every epoch.

    Since Lightning 2.6, ``last.ckpt`` is written only when a top-k checkpoint is saved in the
    same step: with a monitored metric that did not improve, ``last.ckpt`` stays at the best
    epoch, and ``fit --ckpt_path last`` (a preempted job, Ctrl-C) would silently go back to
    it. Here ``last.ckpt`` always holds the latest state, as ``save_last`` promises. Same name,
    same state key, same arguments as Lightning's; the CLI gives every Lightning
    ``ModelCheckpoint`` of a run this behaviour.

    With ``save_last``, the monitored (top-k) copies hold the weights only (:attr:`weights_only_best`):
    they are what ``test``, ``predict`` and ``export`` read, and without the optimizer's state a
    quickstart checkpoint is a third of the size; ``last.ckpt`` keeps the full state to resume from.
    """

    #: save the monitored copies without optimizer, scheduler and callback states when ``last.ckpt`` has them
    weights_only_best: bool = True

    @override
    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        last = Path(filepath).name.startswith(self.CHECKPOINT_NAME_LAST or "last")
        if not (self.weights_only_best and self.save_last and self.monitor and not last):
            super()._save_checkpoint(trainer, filepath)
            return
        full = self.save_weights_only
        self.save_weights_only = True
        try:
            super()._save_checkpoint(trainer, filepath)
        finally:
            self.save_weights_only = full

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_when_missed(trainer)

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_when_missed(trainer)

    def _save_last_when_missed(self, trainer: Trainer) -> None:
        # nothing saved at this step (the metric did not improve): last.ckpt still has to move on
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
