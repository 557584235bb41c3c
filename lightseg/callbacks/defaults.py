"""The callbacks a lightseg run gets without asking: pictures where a logger can show them, per-image scores."""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lightseg.callbacks.dashboard import SegmentationDashboard
from lightseg.callbacks.per_image import PerImageScores
from lightseg.tasks.detection import DetectionTask
from lightseg.tasks.semantic import SemanticSegmentationTask


def default_callbacks(task: LightningModule | None, fn: str, logging: bool) -> list[Callback]:
    """What :class:`~lightseg.trainer.LightsegTrainer` adds to a run of ``task`` (``fn``: ``fit``, ``test``, ...).

    - a :class:`~lightseg.callbacks.SegmentationDashboard` for lightseg's tasks when the run
      has a logger (``logging``), quiet about loggers that cannot show images;
    - a :class:`~lightseg.callbacks.PerImageScores` in ``test`` of a semantic task.

    Each is added only where no callback of its class is configured: configure one
    (``trainer.callbacks``) to change its settings.
    """
    callbacks: list[Callback] = []
    if logging and isinstance(task, SemanticSegmentationTask | DetectionTask):
        callbacks.append(SegmentationDashboard(warn_unsupported=False))
    if fn == "test" and isinstance(task, SemanticSegmentationTask):
        callbacks.append(PerImageScores())
    return callbacks


def add_missing(configured: list[Callback], defaults: Sequence[Callback]) -> None:
    """Add each of ``defaults`` whose class has no instance in ``configured``, before the checkpoints.

    Checkpoints stay last, as Lightning orders them, so that they save what the others logged.
    """
    for callback in defaults:
        if any(isinstance(cb, type(callback)) for cb in configured):
            continue
        checkpoints = [i for i, cb in enumerate(configured) if isinstance(cb, ModelCheckpoint)]
        configured.insert(checkpoints[0] if checkpoints else len(configured), callback)
