"""`lightseg predict` beside the plain loop a user would write, whole processes, alternated.

    python benchmarks/predict.py [--images 60] [--size 512] [--rounds 3] [--ckpt PATH]

Writes `--images` generated pictures of `--size`² pixels (JPEG) into a scratch folder and,
without `--ckpt`, trains the quickstart's model (configs/quickstart.yaml) for one short
epoch to have a checkpoint. Then, `--rounds` times in alternation after a warm-up of each:

- `lightseg predict --config configs/quickstart.yaml --ckpt_path CKPT` (the README's
  command: palette masks and overlays), and the same with `--prediction.overlays false`;
- the plain loop: the same model from the same checkpoint, one image at a time: read,
  forward, argmax, write the palette PNG (:func:`plain_loop`, run as its own process).

Each row is the median of its runs: wall time, CPU time in user and system mode (of the
process and its children) and peak resident memory (the kernel's high-water mark of the
largest process: what `/usr/bin/time` reports; the quickstart loads in the main process).
The table appends itself to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from report import ROOT, record

CONFIG = ROOT / "configs" / "quickstart.yaml"


def write_images(folder: Path, count: int, size: int) -> None:
    """``count`` JPEGs of shapes on a textured background, as the quickstart's data looks at ``size``²."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(count):
        ramp = np.linspace(0, 1, size, dtype=np.float32)
        background = 60 + 80 * np.outer(ramp, ramp)[..., None] * rng.uniform(0.5, 1.0, 3)
        noise = rng.normal(0, 12, (size, size, 3))
        image = Image.fromarray(np.clip(background + noise, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(2, 6))):
            x, y = rng.integers(0, size - size // 4, 2)
            side = int(rng.integers(size // 10, size // 4))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
            shape((int(x), int(y), int(x) + side, int(y) + side), fill=colour)
        image.save(folder / f"{i:04d}.jpg", quality=90)


def plain_loop(checkpoint: str, images: str, output: str) -> None:
    """The loop a user writes without lightseg's predict: read, forward, argmax, palette PNG, per image."""
    import torch

    from lightseg.colors import class_palette
    from lightseg.tasks import SemanticSegmentationTask

    task = SemanticSegmentationTask.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    task.configure_model()  # the checkpoint's memory format, as Lightning sets it before a run
    palette = class_palette().ravel().tolist()
    Path(output).mkdir(parents=True)
    with torch.inference_mode():
        for path in sorted(Path(images).iterdir()):
            array = np.asarray(Image.open(path).convert("RGB"))
            image = torch.from_numpy(array).permute(2, 0, 1).float().div(255).unsqueeze(0)
            mask = task(image)["out"].argmax(1)[0].to(torch.uint8).numpy()
            png = Image.fromarray(mask, mode="P")
            png.putpalette(palette)
            png.save(Path(output) / f"{path.stem}.png")


def measure(args: list[str], cwd: Path) -> dict[str, float]:
    """Wall, user and system seconds and the peak resident memory (GB) of the process ``args`` starts."""
    start = time.perf_counter()
    process = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert process.stderr is not None
    errors = process.stderr.read().decode()
    # wait4 gives this child's own usage (with its waited-for children's: workers), peak RSS in KiB
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(args)} failed:\n{errors[-3000:]}")
    return {"wall": wall, "user": usage.ru_utime, "system": usage.ru_stime, "peak": usage.ru_maxrss * 1024 / 1e9}


def make_checkpoint(scratch: Path) -> Path:
    print("training one short epoch of the quickstart for a checkpoint", flush=True)
    run_dir = scratch / "fit"
    subprocess.run(
        ["lightseg", "fit", "--config", str(CONFIG), "--trainer.max_epochs=1", "--trainer.limit_train_batches=4",
         "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false"],
        cwd=run_dir.mkdir() or run_dir, env={**os.environ, "LIGHTSEG_CACHE": str(scratch / "cache")},
        check=True, capture_output=True,
    )  # fmt: skip
    return next(run_dir.rglob("last.ckpt"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ckpt", help="a checkpoint of configs/quickstart.yaml's model (default: train one)")
    parser.add_argument("--plain-loop", nargs=3, metavar=("CKPT", "IMAGES", "OUTPUT"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.plain_loop:
        plain_loop(*options.plain_loop)
        return
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        images = scratch / "images"
        write_images(images, options.images, options.size)
        checkpoint = Path(options.ckpt).resolve() if options.ckpt else make_checkpoint(scratch)
        predict = ["lightseg", "predict", "--config", str(CONFIG), "--ckpt_path", str(checkpoint),
                   "--data.predict_dir", str(images), "--trainer.enable_progress_bar=false"]  # fmt: skip
        commands = {
            "plain loop (read, forward, argmax, palette PNG)": [
                sys.executable, __file__, "--plain-loop", str(checkpoint), str(images), "{out}"
            ],
            "lightseg predict (masks + overlays)": [*predict, "--prediction.output_dir", "{out}"],
            "lightseg predict --prediction.overlays false": [
                *predict, "--prediction.output_dir", "{out}", "--prediction.overlays=false"
            ],
        }  # fmt: skip
        results: dict[str, list[dict[str, float]]] = {name: [] for name in commands}
        for attempt in range(options.rounds + 1):  # round 0 warms the file cache: not counted
            for name, command in commands.items():
                out = scratch / f"out-{attempt}-{len(results[name])}-{abs(hash(name))}"
                numbers = measure([part.replace("{out}", str(out)) for part in command], scratch)
                written = len(list(out.rglob("*.png")))
                print(f"{name}: {numbers['wall']:.1f} s, {numbers['peak']:.2f} GB, {written} PNGs"
                      f"{' (warm-up)' if attempt == 0 else ''}", flush=True)  # fmt: skip
                if attempt:
                    results[name].append(numbers)
    medians = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in results.items()}
    plain = medians[next(iter(commands))]
    rows = [
        "| process | wall (s) | vs plain | user (s) | system (s) | peak RSS (GB) | vs plain |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {name} | {m['wall']:.1f} | {m['wall'] / plain['wall']:.2f}x | {m['user']:.1f} | {m['system']:.1f} "
            f"| {m['peak']:.2f} | {m['peak'] / plain['peak']:.2f}x |"
            for name, m in medians.items()
        ),
    ]
    note = (
        f"\n\n{options.images} JPEGs of {options.size}² pixels, U-Net ResNet-18 of configs/quickstart.yaml; "
        f"medians of {options.rounds} alternated runs of each after a warm-up."
    )
    record(f"Predict beside a plain loop ({options.images} images of {options.size}²)", "\n".join(rows) + note)


if __name__ == "__main__":
    main()
