"""The callbacks a lightseg run gets without asking: pictures where a logger can show them, per-image scores."""

from __future__ import annotations

from collections.abc import Sequence

from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lightseg.callbacks.checkpoints import ModelCheckpoint as RunCheckpoint
from lightseg.callbacks.checkpoints import RequeueCheckpoint
from lightseg.callbacks.dashboard import SegmentationDashboard
from lightseg.callbacks.per_image import PerImageScores
from lightseg.contract import task_context


def default_callbacks(task: LightningModule | None, fn: str, logging: bool) -> list[Callback]:
    """What :class:`~lightseg.cli.trainer.LightsegTrainer` adds to a run of ``task`` (``fn``: ``fit``, ``test``, ...).

    - a :class:`~lightseg.callbacks.SegmentationDashboard` for lightseg's tasks when the run
      has a logger (``logging``), quiet about loggers that cannot show images;
    - a :class:`~lightseg.callbacks.PerImageScores` in ``test`` of a semantic task;
    - a :class:`~lightseg.callbacks.RequeueCheckpoint` in ``fit`` inside a SLURM job.

    Each is added only where no callback of its class is configured: configure one
    (``trainer.callbacks``) to change its settings. The monitored checkpoint is
    :func:`monitored_checkpoint`'s.
    """
    context = task_context(task)
    callbacks: list[Callback] = []
    if logging and context is not None:
        callbacks.append(SegmentationDashboard(warn_unsupported=False))
    if fn == "test" and context is not None and context.kind == "semantic":
        callbacks.append(PerImageScores())
    if fn == "fit" and SLURMEnvironment.detect():
        callbacks.append(RequeueCheckpoint())
    return callbacks


def monitored_checkpoint(configured: list[Callback], task: LightningModule | None) -> None:
    """Replace Lightning's default checkpoint (the last epoch only) in ``configured`` by one on the task's metric.

    Left alone where checkpointing is off (no checkpoint callback) or the user configured a
    monitored checkpoint. The replacement keeps ``last.ckpt`` after every epoch and the best
    epoch by the task's :attr:`~lightseg.contract.TaskContext.monitor`.
    """
    context = task_context(task)
    checkpoints = [cb for cb in configured if isinstance(cb, ModelCheckpoint)]
    if context is None or not checkpoints or any(cb.monitor for cb in checkpoints):
        return
    for default in checkpoints:
        configured.remove(default)
    configured.append(
        RunCheckpoint(
            monitor=context.monitor,
            mode=context.mode,
            save_last=True,
            filename=f"epoch{{epoch:03d}}-{context.monitor}{{{context.monitor}:.4f}}",
            auto_insert_metric_name=False,
        )
    )


def add_missing(configured: list[Callback], defaults: Sequence[Callback]) -> None:
    """Add each of ``defaults`` whose class has no instance in ``configured``, before the checkpoints.

    Checkpoints stay last, as Lightning orders them, so that they save what the others logged.
    """
    for callback in defaults:
        if any(isinstance(cb, type(callback)) for cb in configured):
            continue
        checkpoints = [i for i, cb in enumerate(configured) if isinstance(cb, ModelCheckpoint)]
        configured.insert(checkpoints[0] if checkpoints else len(configured), callback)
