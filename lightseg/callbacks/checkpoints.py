"""The checkpoint callbacks of a run: ``last.ckpt`` after every epoch, a checkpoint on Ctrl-C or a requeue signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint
from typing_extensions import override

from lightseg.errors import LightsegError


def _save_beside_checkpoints(trainer: Trainer, filename: str) -> Path:
    """Save the full training state as ``filename`` in the run's checkpoint folder (every process takes part)."""
    checkpoint = trainer.checkpoint_callback
    folder = getattr(checkpoint, "dirpath", None) or Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"
    path = Path(folder) / filename
    trainer.save_checkpoint(path)
    return path


class InterruptCheckpoint(Callback):
    """On Ctrl-C during ``fit``, saves ``last-interrupted.ckpt`` and prints the command that goes on.

    The checkpoint lands beside the run's other checkpoints (``--ckpt_path last`` picks it,
    being the newest ``last*``). It resumes at the interrupted step, the rest of the epoch
    with the same batches and augmentations (:mod:`lightseg.datamodules.sampling`): on
    a CPU the resumed run ends bit-identical to an uninterrupted one.

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
        path = self.saved = _save_beside_checkpoints(trainer, self.FILENAME)
        if trainer.is_global_zero:
            print(
                f"lightseg: interrupted in epoch {trainer.current_epoch}, step {trainer.global_step}; saved {path} "
                f"(it resumes at that step). To go on:\n  {self.command} --ckpt_path {path}",
                file=sys.stderr,
            )


class RequeueCheckpoint(Callback):
    """On a cluster's requeue signal, saves ``last-requeued.ckpt`` at the end of the step, requeues the job and exits.

    SLURM warns a job before its time is up with the signal of ``sbatch --signal=SIGUSR1@90``
    (or a preempting job's grace period). At the end of the step in progress (every process
    of a DDP job at the same step: the first that got the signal decides for all), the run
    saves its full state beside its checkpoints, asks ``scontrol requeue $SLURM_JOB_ID`` to
    put the job back in the queue, and ends. The job, started again with
    ``--ckpt_path last`` (it picks the newest ``last*`` checkpoint), resumes at that step and
    goes on bit-identical to an uninterrupted run (:mod:`lightseg.datamodules.sampling`).
    Added to ``fit`` by default inside a SLURM job; configure it to change the signal. It
    replaces Lightning's own SLURM requeue (which saves ``hpc_ckpt_*.ckpt`` from inside the
    signal handler, wherever the step is).

    Args:
        signal: the signal's name (``SIGUSR1``, ``SIGUSR2``, ``SIGTERM``, ...).
        requeue: the command that requeues the job, with ``{job}`` for its id; empty: save and exit only.
    """

    FILENAME = "last-requeued.ckpt"

    def __init__(self, signal: str = "SIGUSR1", requeue: str = "scontrol requeue {job}") -> None:
        self.signal = signal
        self.requeue = requeue
        self.received = False
        self.saved: Path | None = None
        self._previous: Any = None
        self._signum: int | None = None

    def _receive(self, signum: int, frame: FrameType | None) -> None:
        self.received = True  # acted on at the end of the step: a checkpoint mid-step would not resume exactly

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        number = getattr(signal, self.signal.upper(), None)
        if not isinstance(number, signal.Signals):
            raise LightsegError(f"RequeueCheckpoint signal {self.signal!r} is not a signal name; e.g. SIGUSR1")
        try:  # checked now, not when the signal comes
            self.requeue.format(job="0")
        except (KeyError, IndexError, ValueError) as err:
            raise LightsegError(
                f"RequeueCheckpoint requeue {self.requeue!r} is not a command with {{job}} for the job id "
                f"({type(err).__name__}: {err}); e.g. 'scontrol requeue {{job}}', or '' to save and exit only"
            ) from None

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # in place of Lightning's SLURM handler (registered before training starts); Lightning puts
        # every signal's handler from before the run back at its end
        self._signum = getattr(signal, self.signal.upper())
        self._previous = signal.signal(self._signum, self._receive)

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self._signum is not None:
            signal.signal(self._signum, self._previous if self._previous is not None else signal.SIG_DFL)
            self._signum = None

    @override
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        if not trainer.strategy.reduce_boolean_decision(self.received, all=False):
            return
        path = self.saved = _save_beside_checkpoints(trainer, self.FILENAME)
        if trainer.is_global_zero:
            print(
                f"lightseg: {self.signal.upper()} in epoch {trainer.current_epoch}, step {trainer.global_step}: "
                f"saved {path}. {self._requeue()}",
                file=sys.stderr,
            )
        raise SystemExit(0)

    def _requeue(self) -> str:
        job = os.environ.get("SLURM_JOB_ID")
        if os.environ.get("SLURM_ARRAY_JOB_ID"):
            job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
        if not self.requeue or not job:
            return "Start the job again with --ckpt_path last to go on."
        command = self.requeue.format(job=job).split()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            return f"Could not requeue ({' '.join(command)}: {err}); start the job again with --ckpt_path last."
        if done.returncode != 0:
            reason = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
            return f"Could not requeue ({' '.join(command)}: {reason[0]}); start the job again with --ckpt_path last."
        return f"Requeued job {job} ({' '.join(command)}); it goes on from this checkpoint (--ckpt_path last)."


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
