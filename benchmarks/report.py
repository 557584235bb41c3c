"""Shared by the benchmark scripts: print a result table and append it to docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback

ROOT = Path(__file__).resolve().parents[1]


def record(title: str, table: str, device: str = "cpu") -> None:
    """Print ``table`` and append it under ``## {title}, {date} — {machine}`` to docs/benchmarks.md."""
    print(table)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {device}"
    with (ROOT / "docs" / "benchmarks.md").open("a") as doc:
        doc.write(f"\n## {title}, {date.today()} — {machine}\n\n{table}\n")


class StepClock(Callback):
    """Wall time of the training and of the validation batches that follow ``warmup`` of each.

    The clock starts at the end of batch ``warmup`` and stops at the end of the last batch, so
    it holds everything between (data loading, hooks, optimizer and LR steps), not the
    start-up; on a GPU each reading waits for the queued kernels.
    """

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.times: dict[str, list[float]] = {"train": [], "val": []}

    def _tick(self, stage: str) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times[stage].append(time.perf_counter())

    def elapsed(self, stage: str) -> tuple[int, float]:
        """(timed batches, seconds) of ``stage``: ``train`` or ``val``."""
        ticks = self.times[stage][self.warmup - 1 :]
        if len(ticks) < 2:
            raise SystemExit(f"too few {stage} batches to time: raise the step count above the warm-up")
        return len(ticks) - 1, ticks[-1] - ticks[0]

    def on_train_batch_end(self, *args: Any) -> None:
        self._tick("train")

    def on_validation_epoch_start(self, *args: Any) -> None:
        self.times["val"] = []

    def on_validation_batch_end(self, *args: Any) -> None:
        self._tick("val")
