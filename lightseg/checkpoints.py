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
    """Resolve ``best`` or ``last`` to a checkpoint file under ``roots``.

    ``last`` is the newest ``last*.ckpt`` (or newest checkpoint); ``best`` is the
    best-scoring checkpoint among all runs under ``roots`` (each records its run's best
    path and score), on the metric of the newest run.

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
    return _best_of_all_runs(checkpoints)


def _best_of_all_runs(checkpoints: list[Path]) -> tuple[Path, str]:
    # Every checkpoint records its run's best so far (path, score, metric, mode); a short
    # trial run after a long one must not make `best` mean the trial's best.
    candidates: dict[Path, tuple[float, str, str]] = {}
    for path in checkpoints:
        try:
            found = _checkpoint_best(path)
        except LightsegError:
            continue  # unreadable (a truncated write): not a candidate
        if found is None:
            continue
        best, score, monitor, mode = found
        if not best.is_file():  # the run folder was moved: look beside this checkpoint
            best = path.parent / best.name
        if best.is_file():
            candidates[best.resolve()] = (score, monitor, mode)
    if not candidates:
        raise LightsegError(
            f"--ckpt_path best: none of the {len(checkpoints)} checkpoints found records a monitored best model "
            "that still exists; use --ckpt_path last or a file"
        )
    newest_monitor = candidates[max(candidates, key=lambda p: p.stat().st_mtime)][1]
    same = {p: v for p, v in candidates.items() if v[1] == newest_monitor}
    sign = -1.0 if next(iter(same.values()))[2] == "min" else 1.0
    best_path = max(same, key=lambda p: (sign * same[p][0], p.stat().st_mtime))
    score, monitor, _ = same[best_path]
    runs = len({p.parent for p in same})
    return best_path, (
        f"--ckpt_path best -> {best_path} ({monitor}={score:.4f}, the best of {len(same)} "
        f"checkpoint{'s' * (len(same) != 1)} in {runs} run folder{'s' * (runs != 1)})"
    )


def _checkpoint_best(path: Path) -> tuple[Path, float, str, str] | None:
    """``(best path, its score, metric, mode)`` recorded by the monitored ``ModelCheckpoint`` state of ``path``."""
    checkpoint = load_checkpoint(path)
    for key, value in checkpoint.get("callbacks", {}).items():
        if not (str(key).startswith("ModelCheckpoint") and isinstance(value, dict)):
            continue
        if value.get("best_model_path") and value.get("best_model_score") is not None and value.get("monitor"):
            mode = "min" if "'mode': 'min'" in str(key) else "max"
            return Path(value["best_model_path"]), float(value["best_model_score"]), str(value["monitor"]), mode
    return None


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
