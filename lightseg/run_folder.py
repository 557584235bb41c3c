"""No half-made run folders: a run that a user mistake stops before its first checkpoint leaves nothing behind."""

from __future__ import annotations

import shutil
from pathlib import Path

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger


def run_dir(trainer: Trainer) -> Path:
    """The run's own folder: the logger's version folder (where checkpoints go too)."""
    logger = trainer.logger
    if isinstance(logger, WandbLogger):
        return Path(logger.save_dir or trainer.default_root_dir) / str(logger.name) / str(logger.version)
    return Path(trainer.log_dir or trainer.default_root_dir)


def display_path(path: str | Path) -> Path:
    """``path`` relative to the working folder when it lies inside it (what a user typed), else as it is."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return Path(path)


class RunFolderGuard:
    """Remembers the run folders a run creates, so that :meth:`remove_unfinished` can take them back.

    The CLI has it :meth:`watch` the trainer as soon as the trainer exists (before the run
    makes its logger's folder, saves its config or a checkpoint) and calls
    :meth:`remove_unfinished` when the run ends in a user mistake (a bad sample, a bad
    value). A folder that holds a checkpoint is always kept.
    """

    def __init__(self) -> None:
        self.created: list[Path] = []
        self.files: list[Path] = []

    def watch(self, trainer: Trainer, files: tuple[str, ...] = ("config.yaml",)) -> None:
        """Note the run folders of ``trainer`` that do not exist yet (the outermost of each).

        ``files`` the run writes into its log folder are noted too where that folder exists
        already (a run without a logger writes its config into ``default_root_dir``).
        """
        folders: list[str | Path] = [str(lg.log_dir) for lg in trainer.loggers if getattr(lg, "log_dir", None)]
        folders += [cb.dirpath for cb in trainer.checkpoint_callbacks if isinstance(cb, ModelCheckpoint) and cb.dirpath]
        if trainer.log_dir:
            folders.append(trainer.log_dir)
            self.files = [Path(trainer.log_dir) / name for name in files if not (Path(trainer.log_dir) / name).exists()]
        for folder in (Path(f) for f in folders):
            top = None
            for candidate in (folder, *folder.parents):  # the outermost folder this run will create
                if candidate.exists():
                    break
                top = candidate
            if top is not None and top not in self.created:
                self.created.append(top)

    def remove_unfinished(self) -> list[Path]:
        """Remove the folders (and files) this run created, unless a checkpoint is among them; returns them."""
        removed = []
        for folder in self.created:
            if folder.is_dir() and not any(folder.rglob("*.ckpt")):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        for file in self.files:
            if file.is_file() and not any((file.parent / "checkpoints").glob("*.ckpt")):
                file.unlink()
                removed.append(file)
        self.created, self.files = [], []
        return removed
