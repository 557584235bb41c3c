"""The README's quickstart, exactly as a user runs it (slow: ~2.5 minutes on 2 CPU cores)."""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT


@pytest.mark.slow
def test_quickstart_reaches_095_miou_on_unseen_scenes(tmp_path: Path) -> None:
    env = {**os.environ, "LIGHTSEG_CACHE": str(tmp_path / "cache")}
    config = str(ROOT / "configs" / "quickstart.yaml")
    fit = subprocess.run(
        ["lightseg", "fit", "--config", config, "--trainer.enable_progress_bar=false"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert fit.returncode == 0, fit.stderr[-3000:]
    metrics = next((tmp_path / "runs" / "quickstart").rglob("metrics.csv"))
    mious = [float(row["val_miou"]) for row in csv.DictReader(metrics.open()) if row.get("val_miou")]
    assert max(mious) >= 0.95, mious
    best = [p.name for p in metrics.parent.joinpath("checkpoints").glob("epoch*.ckpt")]
    assert len(best) == 1 and float(best[0].split("val_miou")[1][:-5]) == pytest.approx(max(mious), abs=1e-4)

    test = subprocess.run(
        ["lightseg", "test", "--config", config, "--ckpt_path", "best", "--trainer.enable_progress_bar=false"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert test.returncode == 0, test.stderr[-3000:]
    mean_line = next(line for line in test.stdout.splitlines() if line.startswith("mean"))
    assert float(mean_line.split()[1]) >= 90.0  # test mIoU (%) on a third, unseen split
