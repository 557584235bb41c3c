"""Reading and writing checkpoints: loading with one-line errors, saving beside the file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from typing_extensions import override

from lightseg.errors import LightsegError
from lightseg.errors import option as argument


def load_checkpoint(path: str | Path, option: str | None = None) -> dict[str, Any]:
    """A lightseg (Lightning) checkpoint, read without running code; one line naming the file otherwise.

    Memory-mapped where the format allows, so checking a large checkpoint costs little.
    """
    option = option or argument("run", "ckpt_path")
    path = Path(path).expanduser()
    if path.is_dir():
        raise LightsegError(f"{option} {path} is a folder; give a .ckpt file in it, or best / last")
    if not path.is_file():
        raise LightsegError(f"{option} {path} does not exist; give a .ckpt file, or best / last")
    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:  # the old, non-zip format cannot be memory-mapped
            if "mmap" not in str(err):
                raise
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        if "weights_only" in reason or "Weights only" in reason:  # never pass on torch's advice to unpickle it
            reason = "it holds Python objects other than tensors and plain values"
        raise LightsegError(
            f"{option} {path} is not a readable lightseg checkpoint ({type(err).__name__}: {reason[:120]}); "
            "it may be truncated (a run killed while saving) or another kind of file"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise LightsegError(
            f"{option} {path} is not a Lightning checkpoint (no state_dict); to start from a file of weights, "
            f"use {argument('model', 'init_from')} (or weights_backbone) instead"
        )
    return checkpoint


def readable(path: Path) -> bool:
    """Whether :func:`load_checkpoint` reads ``path``."""
    try:
        load_checkpoint(path)
    except LightsegError:
        return False
    return True


class BesideCheckpointIO(TorchCheckpointIO):
    """Saves a checkpoint through a temporary file beside it, renamed over it when complete.

    Lightning's own atomic save writes its temporary file in the system temp folder, where
    a run killed mid-write leaves up to a checkpoint's size behind unseen. Here it is
    ``<name>.tmp-<pid>`` next to the checkpoint (removed on any error; a killed process's
    leftover is removed by the next save of the same checkpoint), and the previous
    checkpoint stays intact until the new one is complete.
    """

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(f"{target.name}.tmp-*"):
            stale.unlink(missing_ok=True)
        temporary = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        try:
            torch.save(checkpoint, temporary)
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
