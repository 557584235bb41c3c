"""What checking every sample before a run costs, on Cityscapes-size files (``check_samples``).

Writes ``--frames`` Cityscapes-like frames (2048x1024 PNG image, 8-bit labelIds PNG) in the
official layout, times ``SegmentationFiles.check_samples`` in ``headers`` mode (open each
image and mask, read its size and mode) and in ``full`` mode (also decode and range-check
every mask), and projects both to Cityscapes' 2,975 training + 500 validation frames.
Prints a table and appends it to docs/benchmarks.md.

    python benchmarks/sample_check.py [--frames 40]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lightseg.datamodules import CityscapesDataModule

from report import record

CITYSCAPES_FRAMES = 2975 + 500


def write_frames(root: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    for k in range(count):
        city, frame = "aachen", f"aachen_{k:06d}_000019"
        image = root / "leftImg8bit" / "train" / city / f"{frame}_leftImg8bit.png"
        label = root / "gtFine" / "train" / city / f"{frame}_gtFine_labelIds.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        label.parent.mkdir(parents=True, exist_ok=True)
        low = rng.integers(0, 255, (32, 64, 3), dtype=np.uint8)  # smooth, photo-like content
        Image.fromarray(low).resize((2048, 1024), Image.Resampling.BILINEAR).save(image)
        ids = rng.choice([7, 8, 11, 21, 23, 24, 26], (32, 64)).astype(np.uint8)
        Image.fromarray(ids, mode="L").resize((2048, 1024), Image.Resampling.NEAREST).save(label)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        print(f"writing {args.frames} frames of 2048x1024 ...")
        write_frames(root, args.frames)
        module = CityscapesDataModule(str(root), num_workers=0)
        rows = []
        for mode in ("headers", "full"):
            dataset = module.make_dataset("train", None)
            start = time.perf_counter()
            dataset.check_samples(mode)  # type: ignore[attr-defined]
            per_sample = (time.perf_counter() - start) / args.frames
            rows.append((mode, per_sample))
    lines = [
        "| check_samples | per sample | Cityscapes train + val (3,475 frames) |",
        "|---|---|---|",
        *(f"| `{mode}` | {1000 * t:.2f} ms | {t * CITYSCAPES_FRAMES:.1f} s |" for mode, t in rows),
    ]
    note = (
        f"\n\nMeasured on {args.frames} written frames (2048x1024 PNG image + labelIds). `auto` (the default) "
        "runs `full` up to 1,000 samples and `headers` above, so Cityscapes gets the header check."
    )
    record("Sample check before a run (Cityscapes-size files)", "\n".join(lines) + note)


if __name__ == "__main__":
    main()
