"""Time a README quickstart end to end and record its quality.

Runs `lightseg fit --config configs/<quickstart>.yaml` (data set written fresh) and
`lightseg test --ckpt_path best` in a scratch folder, prints a table and appends it to
docs/benchmarks.md with the machine description.

    python benchmarks/quickstart.py                      # semantic (U-Net)
    python benchmarks/quickstart.py quickstart_maskrcnn  # instance segmentation (Mask R-CNN)
    python benchmarks/quickstart.py quickstart_keypoints # keypoints (Keypoint R-CNN)
    python benchmarks/quickstart.py quickstart_panoptic  # panoptic segmentation (Panoptic FPN)
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import ROOT, record

# config -> the monitored validation metric and the other metrics worth a row
METRICS = {
    "quickstart": ("miou", ()),
    "quickstart_maskrcnn": ("segm_map", ("segm_map_50", "bbox_map")),
    "quickstart_keypoints": ("keypoints_map", ("keypoints_map_50", "bbox_map")),
    "quickstart_panoptic": ("pq", ("pq_things", "pq_stuff", "sq")),
}


def run(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start, done.stdout


def rows_with(cwd: Path, key: str) -> list[dict[str, str]]:
    for metrics in sorted((cwd / "runs").rglob("metrics.csv"), key=lambda p: p.stat().st_mtime, reverse=True):
        rows = [r for r in csv.DictReader(metrics.open()) if r.get(key)]
        if rows:
            return rows
    sys.exit(f"no {key} in any metrics.csv under {cwd / 'runs'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default="quickstart", choices=sorted(METRICS))
    name = parser.parse_args().config
    monitored, extra = METRICS[name]
    with tempfile.TemporaryDirectory() as scratch:
        cwd = Path(scratch)
        env = {**os.environ, "LIGHTSEG_CACHE": str(cwd / "cache")}
        common = ["--config", str(ROOT / "configs" / f"{name}.yaml"), "--trainer.enable_progress_bar=false"]
        fit_s, _ = run(["lightseg", "fit", *common], cwd, env)
        val = [(int(r["epoch"]), r) for r in rows_with(cwd, f"val_{monitored}")]
        best_epoch, best = max(val, key=lambda item: float(item[1][f"val_{monitored}"]))
        test_s, _ = run(["lightseg", "test", *common, "--ckpt_path", "best"], cwd, env)
        test = rows_with(cwd, f"test_{monitored}")[-1]

    rows = [
        ("lightseg fit (incl. writing the data set)", f"{fit_s:.0f} s"),
        (f"best val_{monitored} (epoch)", f"{float(best[f'val_{monitored}']):.4f} ({best_epoch})"),
        *((f"val_{key} at that epoch", f"{float(best[f'val_{key}']):.4f}") for key in extra),
        ("lightseg test --ckpt_path best", f"{test_s:.0f} s"),
        (f"test_{monitored}", f"{float(test[f'test_{monitored}']):.4f}"),
        *((f"test_{key}", f"{float(test[f'test_{key}']):.4f}") for key in extra),
    ]
    width = max(len(r[0]) for r in rows)
    table = "\n".join(f"| {label:<{width}} | {value} |" for label, value in rows)
    header = f"| {f'configs/{name}.yaml':<{width}} | value |\n|{'-' * (width + 2)}|-------|"
    record(f"Quickstart ({name})", f"{header}\n{table}")


if __name__ == "__main__":
    main()
