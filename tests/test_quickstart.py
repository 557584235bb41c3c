"""The README's quickstart, its commands run exactly as written (slow: ~3 minutes on 2 CPU cores)."""

from __future__ import annotations

import csv
import os
import re
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT


def quickstart_commands() -> list[str]:
    """The command lines of the README's quickstart section."""
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## Quickstart")[1].split("\n## ")[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    assert block is not None
    return [line for line in block.group(1).splitlines() if line.strip()]


@pytest.mark.slow
def test_quickstart_reaches_095_miou_on_unseen_scenes(tmp_path: Path) -> None:
    env = {**os.environ, "LIGHTSEG_CACHE": str(tmp_path / "cache")}
    for name in ("configs", "examples"):  # the commands are run from the root of a clone
        (tmp_path / name).symlink_to(ROOT / name)
    fit, test, predict = quickstart_commands()
    assert fit == "lightseg fit --config configs/quickstart.yaml"

    def run(command: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(shlex.split(command), cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=900, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    trained = run(fit)
    metrics = next((tmp_path / "runs" / "quickstart").rglob("metrics.csv"))
    mious = [float(row["val_miou"]) for row in csv.DictReader(metrics.open()) if row.get("val_miou")]
    assert max(mious) >= 0.95, mious
    best = [p.name for p in metrics.parent.joinpath("checkpoints").glob("epoch*.ckpt")]
    assert len(best) == 1 and float(best[0].split("val_miou")[1][:-5]) == pytest.approx(max(mious), abs=1e-4)
    assert best[0] in trained.stdout + trained.stderr  # the run says where its best checkpoint is

    tested = run(test)
    mean_line = next(line for line in tested.stdout.splitlines() if line.startswith("mean"))
    assert float(mean_line.split()[1]) >= 90.0  # test mIoU (%) on a third, unseen split

    run(predict)
    for image in sorted((ROOT / "examples" / "images").glob("*.png")):
        mask = np.asarray(Image.open(tmp_path / "predictions" / "masks" / image.name))
        assert mask.shape == Image.open(image).size[::-1] and set(np.unique(mask).tolist()) <= {0, 1, 2, 3}
        assert (mask > 0).mean() > 0.05  # the shapes are found, not all background
        assert (tmp_path / "predictions" / "overlays" / image.name).is_file()


@pytest.mark.slow
def test_panoptic_quickstart_reaches_pq_05_and_its_predictions_score_the_same(tmp_path: Path) -> None:
    from lightseg.metrics.panoptic import pq_compute

    env = {**os.environ, "LIGHTSEG_CACHE": str(tmp_path / "cache")}
    (tmp_path / "configs").symlink_to(ROOT / "configs")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command, *options = args  # the config first: options of its data module follow it
        done = subprocess.run(["lightseg", command, "--config", "configs/quickstart_panoptic.yaml", *options],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
                              check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    run("fit")
    metrics = next((tmp_path / "runs" / "quickstart_panoptic").rglob("metrics.csv"))
    pqs = [float(row["val_pq"]) for row in csv.DictReader(metrics.open()) if row.get("val_pq")]
    assert max(pqs) >= 0.5, pqs
    tested = run("test", "--ckpt_path", "best")
    overall = next(line for line in tested.stdout.splitlines() if line.startswith("all "))
    assert float(overall.split()[1]) >= 45.0  # test PQ (%) on a third, unseen split
    data = next((tmp_path / "cache").rglob("annotations")).parent
    run("predict", "--ckpt_path", "best", "--data.init_args.predict_dir", str(data / "images" / "test"))
    scored = pq_compute(data / "annotations" / "panoptic_test.json", tmp_path / "predictions" / "panoptic.json",
                        data / "annotations" / "panoptic_test", tmp_path / "predictions" / "panoptic")  # fmt: skip
    assert scored["All"]["pq"] == pytest.approx(float(overall.split()[1]) / 100, abs=6e-4)
    assert len(list((tmp_path / "predictions" / "overlays").glob("*.png"))) == 50
