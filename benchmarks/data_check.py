"""Own data at scale: the folder scan on 100,000 pairs, and ``lightseg data check`` on Cityscapes-size frames.

1. Writes ``--pairs`` empty ``images/*.jpg`` + ``masks/*.png`` files (the scan never opens
   them) and times ``SegmentationFolderDataModule``'s scan, pairing and hash split, then the
   missing-file check of the training split.
2. Writes ``--frames`` Cityscapes-like frames (2048x1024 PNG image, labelIds PNG) and times
   :func:`lightseg.data_check.check_data` (every image decoded and hashed, every mask decoded
   and counted) with 1 and 2 reading threads, projected to Cityscapes' 3,475 train + val frames.

Prints a table and appends it to docs/benchmarks.md.

    python benchmarks/data_check.py [--pairs 100000] [--frames 24]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from sample_check import CITYSCAPES_FRAMES, write_frames

from lightseg.data_check import check_data
from lightseg.datamodules import CityscapesDataModule, SegmentationFolderDataModule

from report import record


def time_scan(root: Path, pairs: int) -> tuple[float, float]:
    for kind, ext in (("images", ".jpg"), ("masks", ".png")):
        folder = root / kind
        folder.mkdir(parents=True)
        for k in range(pairs):
            (folder / f"{k:07d}{ext}").touch()
    module = SegmentationFolderDataModule(str(root), ["background", "object"], val_fraction=0.1)
    start = time.perf_counter()
    found = module.samples()
    scanned = time.perf_counter() - start
    assert sum(len(v) for v in found.values()) == pairs
    start = time.perf_counter()
    from lightseg.datamodules.files import SegmentationFiles

    SegmentationFiles(found["train"], 2)  # the missing-file check that every run makes
    return scanned, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--frames", type=int, default=24)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        print(f"writing {args.pairs:,} empty image/mask pairs ...")
        scanned, checked = time_scan(Path(folder), args.pairs)
    rows = [
        f"| folder scan + pairing + hash split, {args.pairs:,} pairs | {scanned:.1f} s |",
        f"| missing-file check of the training split | {checked:.1f} s |",
    ]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        print(f"writing {args.frames} frames of 2048x1024 ...")
        write_frames(root, args.frames)
        module = CityscapesDataModule(str(root), num_workers=0, val_split="train", test_split="train")
        for threads in (1, min(2, os.cpu_count() or 1)):
            start = time.perf_counter()
            report = check_data(module, workers=threads, pictures=0)
            per_frame = (time.perf_counter() - start) / args.frames
            assert report.splits["train"].samples == args.frames
            rows.append(
                f"| `lightseg data check`, {threads} thread{'s' if threads > 1 else ''}: per frame / Cityscapes "
                f"train + val (3,475) | {1000 * per_frame:.0f} ms / {per_frame * CITYSCAPES_FRAMES / 60:.1f} min |"
            )
    table = "\n".join(["| step | time |", "|---|---|", *rows])
    note = (
        "\n\nThe data check decodes and hashes every image (a truncated file is found, and identical files "
        "across splits) and decodes every mask; `--limit N` reads the first N samples of each split."
    )
    record("Own data: folder scan and data check", table + note)


if __name__ == "__main__":
    main()
