"""What a run did and what to run next, printed when it ends."""

from __future__ import annotations

import shlex
import sys

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from typing_extensions import override

from lightseg.contract import data_description, datamodule_of
from lightseg.run_folder import display_path

#: options that only shape training: left out of the test and predict commands a fit suggests
TRAINING_ONLY = (
    "--trainer.max_epochs", "--trainer.min_epochs", "--trainer.max_steps", "--trainer.min_steps",
    "--trainer.max_time", "--trainer.limit_train_batches", "--trainer.accumulate_grad_batches",
    "--trainer.gradient_clip_val", "--trainer.gradient_clip_algorithm", "--trainer.check_val_every_n_epoch",
    "--trainer.val_check_interval", "--trainer.num_sanity_val_steps",
)  # fmt: skip


def without_options(args: list[str], names: tuple[str, ...]) -> list[str]:
    """A command line's arguments less the options ``names`` (each ``--name value`` or ``--name=value``)."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg in names:
            skip = True
        elif arg.split("=", 1)[0] not in names:
            kept.append(arg)
    return kept


def without_ckpt_path(args: list[str]) -> list[str]:
    """A command line's arguments less its ``--ckpt_path`` (for a command that sets its own)."""
    return without_options(args, ("--ckpt_path",))


class RunSummary(Callback):
    """Prints, at the end of ``fit``, the best and last checkpoints, the run folder and the commands to go on.

    At the end of ``validate`` / ``test`` it says where the run's logs are. The CLI installs it.

    Args:
        args: the command line of the run, without ``lightseg`` and the subcommand.
    """

    def __init__(self, args: list[str] | None = None) -> None:
        self.args = list(args or [])

    def _command(self, subcommand: str, *extra: str) -> str:
        dropped = ("--ckpt_path",) if subcommand == "fit" else ("--ckpt_path", *TRAINING_ONLY)
        return shlex.join(["lightseg", subcommand, *without_options(self.args, dropped), *extra])

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        log_dir = trainer.log_dir if trainer.loggers else None  # on every process: it is a collective call
        if not trainer.is_global_zero:
            return
        epochs = trainer.current_epoch
        lines = [f"lightseg: training ended after {epochs} epoch{'s' * (epochs != 1)}, {trainer.global_step} steps"]
        checkpoint = trainer.checkpoint_callback
        if isinstance(checkpoint, ModelCheckpoint) and checkpoint.best_model_path:
            score = checkpoint.best_model_score
            value = f" ({checkpoint.monitor}={float(score):.4f})" if score is not None else ""
            lines.append(f"  best checkpoint: {checkpoint.best_model_path}{value}")
        if isinstance(checkpoint, ModelCheckpoint) and checkpoint.last_model_path:
            lines.append(f"  last checkpoint: {checkpoint.last_model_path}")
        if log_dir:
            lines.append(f"  run folder: {log_dir}")
        data = data_description(datamodule_of(trainer))
        caveat = data.score_caveat if data is not None else None
        if caveat:
            lines.append(f"  warning: {caveat}")
        lines += [
            "  next:",
            f"    {self._command('test', '--ckpt_path', 'best')}",
            f"    {self._command('predict', '--ckpt_path', 'best', '--data.predict_dir', 'IMAGES/')}"
            " --prediction.output_dir predictions/",
            f"    {self._command('fit', '--ckpt_path', 'last')}   # trains on, e.g. with a larger --trainer.max_epochs",
        ]
        print("\n".join(lines), file=sys.stderr)

    @override
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._where(trainer, "test")

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn == "validate" and not trainer.sanity_checking:
            self._where(trainer, "validation")

    @staticmethod
    def _where(trainer: Trainer, what: str) -> None:
        log_dir = trainer.log_dir if trainer.loggers else None  # on every process: it is a collective call
        if trainer.is_global_zero and log_dir:
            print(f"lightseg: {what} results logged in {display_path(log_dir)}", file=sys.stderr)
