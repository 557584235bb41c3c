"""Finding ``best`` / ``last`` checkpoints of earlier runs (``--ckpt_path best|last``)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

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


def _checkpoint_state(path: Path) -> dict[str, Any] | None:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        raise LightsegError(f"cannot read checkpoint {path}: {err}") from None
    for key, value in checkpoint.get("callbacks", {}).items():
        if str(key).startswith("ModelCheckpoint") and isinstance(value, dict):
            return value
    return None
