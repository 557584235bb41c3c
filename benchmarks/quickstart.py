"""Time a README quickstart end to end and record its quality.

Runs `lightseg fit --config configs/<quickstart>.yaml` (data set written fresh) and
`lightseg test --ckpt_path best` in a scratch folder, prints a table and appends it to
docs/benchmarks.md with the machine description.

    python benchmarks/quickstart.py                      # semantic (U-Net)
    python benchmarks/quickstart.py quickstart_maskrcnn  # instance segmentation (Mask R-CNN)
    python benchmarks/quickstart.py quickstart_keypoints # keypoints (Keypoint R-CNN)
    python benchmarks/quickstart.py quickstart_panoptic  # panoptic segmentation (Panoptic FPN)
    python benchmarks/quickstart.py --against 8d90a6d    # N epochs of this version beside an older one

`--against REV` runs `lightseg fit` for `--epochs` epochs (default 5) with this checkout's
code and config and with those of commit REV (`git archive` into a scratch folder, run from
there with this environment), alternated `--rounds` times (default 2) after a warm-up run of
each that writes its data set into its cache, and records each run's wall time and the
ratio of the medians.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
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


def side_by_side(name: str, against: str, epochs: int, rounds: int) -> None:
    """``epochs`` of ``configs/<name>.yaml`` with this checkout and with commit ``against``, alternated."""
    with tempfile.TemporaryDirectory() as scratch:
        trees = {"this checkout": ROOT, against: Path(scratch) / "old"}
        trees[against].mkdir()
        archive = subprocess.run(["git", "archive", against, "lightseg", "configs"], cwd=ROOT, capture_output=True)
        if archive.returncode != 0:
            sys.exit(f"git archive {against} failed: {archive.stderr.decode()[-500:]}")
        subprocess.run(["tar", "-x", "-C", str(trees[against])], input=archive.stdout, check=True)
        entry = "import sys; from lightseg.cli import main; main(sys.argv[1:])"
        times: dict[str, list[float]] = {label: [] for label in trees}
        for attempt in range(rounds + 1):  # the first round writes each version's data set: not timed
            for label, tree in trees.items():
                cwd = Path(scratch) / f"{attempt}-{label.replace(' ', '_')}"
                cwd.mkdir()
                # PYTHONPATH comes before the editable install's finder: each tree runs its own lightseg
                env = {**os.environ, "PYTHONPATH": str(tree), "LIGHTSEG_CACHE": str(Path(scratch) / f"cache-{label}")}
                args = [sys.executable, "-c", entry, "fit", "--config", str(tree / "configs" / f"{name}.yaml")]
                seconds, _ = run([*args, f"--trainer.max_epochs={epochs}", "--trainer.enable_progress_bar=false"],
                                 cwd, env)  # fmt: skip
                print(f"{label}: {seconds:.1f} s{' (warm-up)' if attempt == 0 else ''}", flush=True)
                if attempt:
                    times[label].append(seconds)
    this, old = (statistics.median(times[label]) for label in trees)
    rows = [
        f"| `lightseg fit`, {epochs} epochs | runs (s, in order) | median (s) |",
        "|---|---|---:|",
        *(
            f"| {label} | {' '.join(f'{t:.1f}' for t in ts)} | {statistics.median(ts):.1f} |"
            for label, ts in times.items()
        ),
        f"| ratio this / {against} | | {this / old:.2f} |",
    ]
    record(f"Quickstart ({name}) beside {against}", "\n".join(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default="quickstart", choices=sorted(METRICS))
    parser.add_argument("--against", help="a commit to run beside this checkout (see above)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()
    name = options.config
    if options.against:
        side_by_side(name, options.against, options.epochs, options.rounds)
        return
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
