"""`lightseg predict` on generated GeoTIFFs of growing size: peak memory stays flat, tiles/s.

    python benchmarks/large_images.py [--sizes 2000 8000 30000] [--window 512] [--stride 512] [--ckpt PATH]

Writes an RGB GeoTIFF of each size² (tiled, deflate; written a strip at a time, never held
whole) into a scratch folder and, without `--ckpt`, trains the quickstart's model
(configs/quickstart.yaml, U-Net ResNet-18) for one short epoch to have a checkpoint. Then
runs, as its own process, `lightseg predict` on each image predicted in tiles (labels as a
tiled GeoTIFF plus the scaled-down overlay) and, for the sizes the in-memory sliding window
can hold (`--memory-up-to`), the same image through the in-memory path. Each row: wall time,
windows through the model and windows/s, megapixels/s, the peak resident memory of the
process (the kernel's high-water mark, as `/usr/bin/time` reports it) and the written
labels' size. The table appends itself to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from predict import CONFIG, make_checkpoint, measure

from report import record

STRIP = 512


def write_raster(path: Path, size: int) -> None:
    """A ``size``² RGB GeoTIFF of textured background and bright blocks, written one strip of rows at a time."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(0)
    profile = {"driver": "GTiff", "height": size, "width": size, "count": 3, "dtype": "uint8", "crs": "EPSG:32633",
               "transform": from_origin(500000, 4600000, 0.5, 0.5), "tiled": True, "blockxsize": 512,
               "blockysize": 512, "compress": "deflate", "BIGTIFF": "IF_SAFER"}  # fmt: skip
    with rasterio.open(path, "w", **profile) as out:
        for top in range(0, size, STRIP):
            rows = min(STRIP, size - top)
            strip = rng.integers(60, 140, (3, rows, size), dtype=np.uint8)
            for _ in range(size // 200):
                x = int(rng.integers(0, max(1, size - 120)))
                strip[:, :, x : x + int(rng.integers(20, 120))] = rng.integers(0, 256, (3, 1, 1), dtype=np.uint8)
            out.write(strip, window=Window(0, top, size, rows))


def windows(size: int, window: int, stride: int) -> int:
    """How many windows the sliding window cuts a ``size``² image into."""
    starts = 1 if size <= window else len(range(0, size - window, stride)) + 1
    return starts * starts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 8000, 30000])
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--stride", type=int, default=512)
    parser.add_argument("--memory-up-to", type=int, default=2000, help="also run the in-memory path up to this size")
    parser.add_argument("--ckpt", help="a checkpoint of configs/quickstart.yaml's model (default: train one)")
    options = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        checkpoint = Path(options.ckpt).resolve() if options.ckpt else make_checkpoint(scratch)
        for size in options.sizes:
            images = scratch / f"images-{size}"
            images.mkdir()
            print(f"writing a {size}x{size} GeoTIFF", flush=True)
            write_raster(images / "scene.tif", size)
            paths = {"tiles": 1024, "in memory": size + 1} if size <= options.memory_up_to else {"tiles": 1024}
            for path, threshold in paths.items():
                out = scratch / f"out-{size}-{path.replace(' ', '-')}"
                command = [
                    "lightseg", "predict", "--config", str(CONFIG), "--ckpt_path", str(checkpoint),
                    "--data.predict_dir", str(images), f"--data.predict_tile_above={threshold}",
                    "--model.inference.mode=slide", f"--model.inference.window_size={options.window}",
                    f"--model.inference.window_stride={options.stride}", "--model.inference.window_batch_size=4",
                    "--prediction.output_dir", str(out), "--trainer.enable_progress_bar=false",
                ]  # fmt: skip
                numbers = measure(command, scratch)
                labels = next(out.glob("masks/scene.*"))
                count = windows(size, options.window, options.stride)
                row = (f"| {size:,}² | {path} | {numbers['wall']:.0f} | {count:,} | {count / numbers['wall']:.2f} "
                       f"| {size * size / 1e6 / numbers['wall']:.2f} | {numbers['peak']:.2f} "
                       f"| {labels.stat().st_size / 1e6:.1f} ({labels.suffix}) |")  # fmt: skip
                print(row, flush=True)
                rows.append(row)
                for written in out.rglob("*"):
                    if written.is_file():
                        written.unlink()
            (images / "scene.tif").unlink()
    table = "\n".join([
        "| image | path | wall (s) | windows | windows/s | Mpx/s | peak RSS (GB) | labels (MB) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
        *rows,
    ])  # fmt: skip
    note = (
        f"\n\nRGB GeoTIFFs (tiled, deflate), U-Net ResNet-18 of configs/quickstart.yaml (4 classes), windows of "
        f"{options.window}² every {options.stride} pixels, 4 per forward pass; one run each, whole processes "
        "(start-up, model loading, labels GeoTIFF with overviews, overlay included)."
    )
    record("Large images predicted in tiles", table + note)


if __name__ == "__main__":
    main()
