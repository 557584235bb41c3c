"""What a task keeps in and checks of a checkpoint beyond Lightning's: random streams, fit, old hyperparameters.

The random streams that pick the next epoch's shuffle order and augmentations (so that a
resumed run continues exactly as an uninterrupted one), the one-line refusal of weights that
do not fit the model, and the migration of hyperparameters saved in an older form.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from lightseg.checkpoints import load_checkpoint
from lightseg.errors import LightsegError


def incompatibility(
    checkpoint: dict[str, Any], own: dict[str, torch.Tensor], ours: dict[str, Any], task: str, where: str = ""
) -> str | None:
    """Why ``checkpoint``'s weights do not fit a model whose ``state_dict`` is ``own`` (``None``: they fit).

    Names the first differing weight and the hyperparameters (task class, architecture,
    backbone, class count) that differ between the checkpoint's and ``ours``.
    """
    saved: dict[str, torch.Tensor] = checkpoint["state_dict"]
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    reshaped = [k for k in own if k in saved and saved[k].shape != own[k].shape]
    if not (missing or unexpected or reshaped):
        return None
    # the network's settings in their group or, in checkpoints from before it, flat
    theirs, ours = (_with_network(hp) for hp in (checkpoint.get("hyper_parameters") or {}, ours))
    keys = ("_class_path", "arch", "backbone", "num_classes")
    differences = [f"{k}={theirs.get(k)!r} there, {ours.get(k)!r} here" for k in keys if theirs.get(k) != ours.get(k)]
    if reshaped:
        k = reshaped[0]
        detail = f"{len(reshaped)} weights differ in shape (e.g. {k}: {list(saved[k].shape)} vs {list(own[k].shape)})"
    else:
        detail = f"{len(missing)} weights missing, {len(unexpected)} unexpected (e.g. {(missing or unexpected)[0]})"
    return (
        f"checkpoint{where} does not fit this {task}: {detail}"
        + (f"; {'; '.join(differences)}" if differences else "")
        + ". Use a checkpoint of the same task, architecture and number of classes"
    )


def _with_network(hparams: dict[str, Any]) -> dict[str, Any]:
    network = hparams.get("network")
    return {**hparams, **network} if isinstance(network, dict) else dict(hparams)


def with_migrated_hparams(checkpoint_path: Any, migrate: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """``checkpoint_path``, or the checkpoint in memory with ``migrate``'s hyperparameters where it changes them."""
    if not (isinstance(checkpoint_path, str | Path) and Path(checkpoint_path).is_file()):
        return checkpoint_path
    try:
        checkpoint = load_checkpoint(checkpoint_path, "checkpoint")
    except LightsegError:
        return checkpoint_path  # Lightning's own loader says what is wrong with it
    saved = checkpoint.get("hyper_parameters")
    migrated = migrate(dict(saved)) if saved else saved
    if migrated == saved:
        return checkpoint_path
    checkpoint["hyper_parameters"] = migrated
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    return buffer


def capture_rng() -> dict[str, Any]:
    """The global random states (torch, CUDA, numpy, Python) in a ``weights_only``-loadable form."""
    kind, keys, position, has_gauss, cached = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [str(kind), torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss_next],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Undo :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
