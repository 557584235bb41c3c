"""Finding ``best`` / ``last`` checkpoints of earlier runs (``--ckpt_path best|last``)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from lightseg.checkpoints import load_checkpoint, readable
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
