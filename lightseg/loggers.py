"""Loggers whose run folders follow one layout: ``<save_dir>/<run name>/<version>/``."""

from __future__ import annotations

from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from typing_extensions import override

#: Lightning's W&B logger, which lightseg's replaces in a config
LIGHTNING_WANDB = "lightning.pytorch.loggers.WandbLogger"


class WandbLogger(LightningWandbLogger):
    """Lightning's W&B logger, with its run folder where the CSV and TensorBoard loggers put theirs.

    Lightning names a W&B run's folder after the W&B *project* (``runs/quickstart/lightseg/<id>/``);
    this logger names it after the run (``name``, as the run configs set it), so that every
    logger's checkpoints, ``config.yaml`` and pictures are in ``<save_dir>/<name>/<version>/``:
    ``version_N`` for CSV and TensorBoard, the W&B run id here. The W&B run itself (its
    project, name, group, files under ``<save_dir>/wandb/``) is unchanged.
    """

    @property
    @override
    def name(self) -> str | None:
        """The run's name (the project's where the run has none): the run folder's parent."""
        return self._wandb_init.get("name") or self._project
