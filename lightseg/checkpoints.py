"""Finding ``best`` / ``last`` checkpoints of earlier runs (``--ckpt_path best|last``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint
from typing_extensions import override

from lightseg.errors import LightsegError

ALIASES = ("best", "last")
# run layouts: <dirpath>/*.ckpt, <root>/checkpoints, <root>/<name>/checkpoints, <root>/<name>/<version>/checkpoints
PATTERNS = ("*.ckpt", "checkpoints/*.ckpt", "*/checkpoints/*.ckpt", "*/*/checkpoints/*.ckpt")


def find_checkpoints(roots: Iterable[Path]) -> list[Path]:
    """All checkpoints under ``roots`` in the usual run layouts, oldest first."""
    found = {p.resolve() for root in roots if root.is_dir() for pattern in PATTERNS for p in root.glob(pattern)}
    return sorted(found, key=lambda p: (p.stat().st_mtime, str(p)))


def resolve_checkpoint(alias: str, roots: list[Path]) -> tuple[Path, str]:
    """Resolve ``best`` or ``last`` to a file of the most recent run under ``roots``.

    ``last`` is the newest ``last*.ckpt`` (or newest checkpoint); ``best`` is the
    ``best_model_path`` that the newest checkpoint's ``ModelCheckpoint`` state records.

    Returns:
        The path and a one-line description for the user.
    """
    checkpoints = find_checkpoints(roots)
    where = ", ".join(str(r) for r in roots)
    if not checkpoints:
        raise LightsegError(
            f"--ckpt_path {alias}: no checkpoint found under {where}; train first with `lightseg fit` "
            "using the same config, or pass --ckpt_path <file.ckpt>"
        )
    newest = checkpoints[-1]
    if alias == "last":
        lasts = [p for p in checkpoints if p.name.startswith("last")]
        chosen = lasts[-1] if lasts else newest
        if not readable(chosen):
            older = next((p for p in reversed(checkpoints) if p != chosen and readable(p)), None)
            hint = f"; the newest readable one is {older}: --ckpt_path {older}" if older else "; no other is readable"
            raise LightsegError(
                f"--ckpt_path last: {chosen} is not a readable checkpoint (truncated by a run killed while saving?)"
                + hint
            )
        return chosen, f"--ckpt_path last -> {chosen}"
    state = _checkpoint_state(newest)
    if state is None or not state.get("best_model_path"):
        raise LightsegError(
            f"--ckpt_path best: the newest checkpoint {newest} records no monitored best model; "
            "use --ckpt_path last or a file"
        )
    best = Path(state["best_model_path"])
    if not best.is_file():  # the run folder was moved: look beside the newest checkpoint
        best = newest.parent / best.name
    if not best.is_file():
        raise LightsegError(f"--ckpt_path best: {state['best_model_path']} (recorded in {newest}) no longer exists")
    score = state.get("best_model_score")
    described = f" ({state.get('monitor')}={float(score):.4f})" if score is not None else ""
    return best, f"--ckpt_path best -> {best}{described}"


def load_checkpoint(path: str | Path, option: str = "--ckpt_path") -> dict[str, Any]:
    """A lightseg (Lightning) checkpoint, read without running code; one line naming the file otherwise.

    Memory-mapped where the format allows, so checking a large checkpoint costs little.
    """
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
            "use --model.init_args.init_from (or weights_backbone) instead"
        )
    return checkpoint


def readable(path: Path) -> bool:
    """Whether :func:`load_checkpoint` reads ``path``."""
    try:
        load_checkpoint(path)
    except LightsegError:
        return False
    return True


def _checkpoint_state(path: Path) -> dict[str, Any] | None:
    checkpoint = load_checkpoint(path)
    for key, value in checkpoint.get("callbacks", {}).items():
        if str(key).startswith("ModelCheckpoint") and isinstance(value, dict):
            return value
    return None


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
    """

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
