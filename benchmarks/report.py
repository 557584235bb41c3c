"""Shared by the benchmark scripts: print a result table and append it to docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def record(title: str, table: str, device: str = "cpu") -> None:
    """Print ``table`` and append it under ``## {title}, {date} — {machine}`` to docs/benchmarks.md."""
    print(table)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {device}"
    with (ROOT / "docs" / "benchmarks.md").open("a") as doc:
        doc.write(f"\n## {title}, {date.today()} — {machine}\n\n{table}\n")
