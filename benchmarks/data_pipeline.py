"""Is data loading ever what the model waits on? Pipeline images/s vs the model's consumption.

Writes VOC-like 500x375 JPEG + palette PNG pairs in the VOC layout, then measures
- the VOC training pipeline (decode, random scale 0.5-2.0, pad + crop 513, flip) in one
  process: images/s per worker;
- the DataLoader with 0, 1 and 2 workers (batch 16, padding collate);
- DeepLabV3-ResNet101 (output stride 16) forward + backward images/s at 513x513 on the
  device here (pass --model-rate to use a rate measured elsewhere, e.g. on a GPU).
Prints a table, the workers needed to keep up, and appends it to docs/benchmarks.md.

    python benchmarks/data_pipeline.py [--images 96] [--model-rate IMG_PER_S]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lightseg.colors import voc_colormap
from lightseg.datamodules import VOCDataModule
from lightseg.models import build_semantic_model

from report import record


def write_voc_like(root: Path, count: int) -> None:
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    ids = [f"2012_{i:06d}" for i in range(count)]
    for image_id in ids:
        low = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)  # smooth, photo-like content
        image = Image.fromarray(low).resize((500, 375), Image.BICUBIC)
        noisy = np.clip(np.asarray(image) + rng.normal(0, 6, (375, 500, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=90)
        label = np.zeros((375, 500), dtype=np.uint8)
        label[100:300, 150:400] = 255
        label[105:295, 155:395] = int(rng.integers(1, 21))
        png = Image.fromarray(label, mode="P")
        png.putpalette(voc_colormap().ravel().tolist())
        png.save(voc / "SegmentationClass" / f"{image_id}.png")
    for split in ("train", "val"):
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))


def pipeline_rate(root: Path, count: int) -> float:
    dm = VOCDataModule(root=str(root), num_workers=0)
    dm.setup("fit")
    dataset = dm.train_dataset
    assert dataset is not None
    dataset[0]
    start = time.perf_counter()
    for i in range(count):
        dataset[i]
    return count / (time.perf_counter() - start)


def loader_rate(root: Path, workers: int, batches: int) -> float:
    dm = VOCDataModule(root=str(root), num_workers=workers, pin_memory=False, persistent_workers=False, batch_size=16)
    dm.setup("fit")
    iterator = iter(dm.train_dataloader())
    next(iterator)  # worker start-up is not throughput
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * 16 / (time.perf_counter() - start)


def model_rate(device: torch.device, batch: int, steps: int) -> float:
    model = build_semantic_model("deeplabv3", 21, "resnet101", None, aux=False).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    images = torch.rand(batch, 3, 513, 513, device=device)
    target = torch.randint(0, 21, (batch, 513, 513), device=device)

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(images)["out"], target, ignore_index=255)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--model-rate", type=float, default=None, help="model images/s measured elsewhere")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        write_voc_like(root, args.images)
        per_worker = pipeline_rate(root, args.images)
        loaders = {w: loader_rate(root, w, batches=max(2, args.images // 16 - 2)) for w in (0, 1, 2)}
    consumption = args.model_rate or model_rate(
        device, batch=2 if device.type == "cpu" else 16, steps=2 if device.type == "cpu" else 10
    )
    where = "given" if args.model_rate else f"measured on {device.type}"
    needed = math.ceil(consumption / per_worker)
    rows = [
        ("pipeline, 1 process (per worker)", f"{per_worker:.1f} img/s"),
        *((f"DataLoader, {w} worker(s), batch 16", f"{rate:.1f} img/s") for w, rate in loaders.items()),
        (f"DeepLabV3-R101 OS16 train step at 513², {where}", f"{consumption:.2f} img/s"),
        ("workers needed to keep up", str(needed)),
    ]
    width = max(len(name) for name, _ in rows)
    table = f"| {'VOC pipeline, 500x375 -> crop 513':<{width}} | rate |\n|{'-' * (width + 2)}|------|\n"
    table += "\n".join(f"| {name:<{width}} | {value} |" for name, value in rows)
    record("Data pipeline", table, device.type)


if __name__ == "__main__":
    main()
