"""Time the README quickstart end to end and record its quality.

Runs `lightseg fit --config configs/quickstart.yaml` (data set written fresh) and
`lightseg test --ckpt_path best` in a scratch folder, prints a table and appends it to
docs/benchmarks.md with the machine description.

    python benchmarks/quickstart.py
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

CONFIG = ROOT / "configs" / "quickstart.yaml"


def run(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start, done.stdout


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        cwd = Path(scratch)
        env = {**os.environ, "LIGHTSEG_CACHE": str(cwd / "cache")}
        common = ["--config", str(CONFIG), "--trainer.enable_progress_bar=false"]
        fit_s, _ = run(["lightseg", "fit", *common], cwd, env)
        metrics = next((cwd / "runs").rglob("metrics.csv"))
        mious = [(int(r["epoch"]), float(r["val_miou"])) for r in csv.DictReader(metrics.open()) if r.get("val_miou")]
        best_epoch, best = max(mious, key=lambda item: item[1])
        test_s, out = run(["lightseg", "test", *common, "--ckpt_path", "best"], cwd, env)
        test_miou = float(next(line for line in out.splitlines() if line.startswith("mean")).split()[1]) / 100

    rows = [
        ("lightseg fit (incl. writing the data set)", f"{fit_s:.0f} s"),
        ("best val mIoU (epoch)", f"{best:.4f} ({best_epoch})"),
        ("lightseg test --ckpt_path best", f"{test_s:.0f} s"),
        ("test mIoU", f"{test_miou:.4f}"),
    ]
    width = max(len(r[0]) for r in rows)
    table = "\n".join(f"| {name:<{width}} | {value} |" for name, value in rows)
    header = f"| {'quickstart (configs/quickstart.yaml)':<{width}} | value |\n|{'-' * (width + 2)}|-------|"
    record("Quickstart", f"{header}\n{table}")


if __name__ == "__main__":
    main()
