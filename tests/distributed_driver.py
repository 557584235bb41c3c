"""Runs lightseg commands one after another in each process of a multi-process job, and records what they scored.

``python tests/distributed_driver.py RUNS.json RESULTS.json`` is what a launcher starts on every
process (torchrun, or a job that looks like SLURM's to Lightning): one import of lightseg for
many commands, instead of one job per command. ``RUNS.json`` maps a name to a ``lightseg``
argument list; ``RESULTS.json`` (written by global rank 0) maps each name to
:func:`run`'s record. The tests also call :func:`run` in their own process for the
one-process reference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def run(args: list[str]) -> dict[str, Any]:
    """``lightseg ARGS``: its logged metrics, per-image CSV, CRF search table and checkpoint, as JSON-ready values."""
    from lightseg.cli.app import RUN_GUARDS, build_cli

    RUN_GUARDS.clear()
    try:
        trainer = build_cli(args).trainer
    except SystemExit as stop:  # a run that ends itself (a requeue): how, and on which process
        import torch.distributed as dist

        return {"exit": stop.code, "rank": dist.get_rank() if dist.is_initialized() else 0}
    callbacks = trainer.callbacks  # type: ignore[attr-defined]
    per_image = next((c.written for c in callbacks if getattr(c, "written", None)), None)
    checkpoint = trainer.checkpoint_callback
    search = next((c for c in callbacks if getattr(c, "scores", None)), None)  # DenseCRFSearch's table
    return {
        "crf": [[score, params.as_dict()] for score, params in search.scores] if search else None,
        "metrics": {key: float(value) for key, value in trainer.callback_metrics.items()},
        "per_image": Path(per_image).read_text() if per_image else None,
        "last": getattr(checkpoint, "last_model_path", "") or None,
        "rank": trainer.global_rank,
        "world_size": trainer.world_size,
    }


def main(runs_file: str, results_file: str) -> None:
    import torch

    torch.set_num_threads(1)
    results = {name: run(args) for name, args in json.loads(Path(runs_file).read_text()).items()}
    if all(record["rank"] == 0 for record in results.values()):  # global rank 0 writes
        Path(results_file).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
