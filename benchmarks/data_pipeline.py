"""Is data loading ever what the model waits on? Pipeline images/s vs the model's consumption.

Writes VOC-like 500x375 JPEG + palette PNG pairs in the VOC layout, then measures
- the VOC training pipeline (decode, random scale 0.5-2.0, pad + crop 513, flip) in one
  process: images/s per worker;
- the DataLoader with 0, 1 and 2 workers (batch 16, padding collate);
- DeepLabV3-ResNet101 (output stride 16) forward + backward images/s at 513x513 on the
  device here (pass --model-rate to use a rate measured elsewhere, e.g. on a GPU).
Prints a table, the workers needed to keep up, and appends it to docs/benchmarks.md.

With ``--packed`` it measures instead what reading a set packed by ``lightseg data pack``
costs beside the folder reader, in one process (the per-worker rate), at VOC size (the
training pipeline above) and at Cityscapes size (2048x1024 PNG frames with label-id and
instance-id PNGs, read for evaluation: label ids mapped, instance ids for iIoU), and the
packing rate.

    python benchmarks/data_pipeline.py [--images 96] [--model-rate IMG_PER_S]
    python benchmarks/data_pipeline.py --packed [--images 96] [--frames 24]
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
from lightseg.datamodules import CityscapesDataModule, StreamingSegmentationDataModule, VOCDataModule
from lightseg.datamodules.packing import pack_datamodule
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


def write_cityscapes_like(root: Path, count: int) -> None:
    """``count`` val frames of 2048x1024: a smooth RGB PNG, its label ids and instance ids (cars of id 26)."""
    rng = np.random.default_rng(0)
    for k in range(count):
        frame = f"frankfurt_{k:06d}_000019"
        city = root / "leftImg8bit" / "val" / "frankfurt"
        labels = root / "gtFine" / "val" / "frankfurt"
        city.mkdir(parents=True, exist_ok=True)
        labels.mkdir(parents=True, exist_ok=True)
        low = rng.integers(0, 255, (16, 32, 3), dtype=np.uint8)
        Image.fromarray(low).resize((2048, 1024), Image.BICUBIC).save(city / f"{frame}_leftImg8bit.png")
        ids = np.full((1024, 2048), 7, dtype=np.uint8)  # road
        ids[:300] = 23  # sky
        ids[300:500] = 11  # building
        instances = ids.astype(np.int32)
        for car in range(4):
            left = 200 + car * 450
            ids[600:800, left : left + 300] = 26
            instances[600:800, left : left + 300] = 26000 + car
        Image.fromarray(ids, mode="L").save(labels / f"{frame}_gtFine_labelIds.png")
        Image.fromarray(instances.astype(np.uint16)).save(labels / f"{frame}_gtFine_instanceIds.png")


def read_rate(dataset: torch.utils.data.Dataset, count: int, passes: int = 3) -> float:
    """Items of ``dataset`` read per second in this process: the best of ``passes`` (this machine is shared)."""
    dataset[0]  # opening files is not throughput
    best = 0.0
    for _ in range(passes):
        start = time.perf_counter()
        for i in range(count):
            dataset[i % len(dataset)]  # type: ignore[arg-type]
        best = max(best, count / (time.perf_counter() - start))
    return best


def packed_rows(root: Path, images: int, frames: int) -> list[tuple[str, str]]:
    """Folder vs packed read rates at VOC and Cityscapes sizes, and the packing rate."""
    voc = VOCDataModule(root=str(root / "voc"), num_workers=0)
    start = time.perf_counter()
    pack_datamodule(voc, str(root / "voc-pack"))
    voc_pack_rate = images * 2 / (time.perf_counter() - start)  # train and val (the same images)
    packed_voc = StreamingSegmentationDataModule(str(root / "voc-pack"), num_workers=0, **voc.augmentation)
    cityscapes = CityscapesDataModule(str(root / "cityscapes"), train_split="val", test_split="val", num_workers=0)
    start = time.perf_counter()
    pack_datamodule(cityscapes, str(root / "cityscapes-pack"))
    cityscapes_pack_rate = frames * 2 / (time.perf_counter() - start)
    packed_cityscapes = StreamingSegmentationDataModule(str(root / "cityscapes-pack"), num_workers=0)
    rates = {}
    for name, module in (("folder", voc), ("packed", packed_voc)):
        module.setup("fit")
        torch.manual_seed(0)
        rates[f"VOC train pipeline, {name}"] = read_rate(module.train_dataset, images)  # type: ignore[arg-type]
    for name, module in (("folder", cityscapes), ("packed", packed_cityscapes)):
        module.setup("validate")
        rates[f"Cityscapes val frames, {name}"] = read_rate(module.val_dataset, frames)  # type: ignore[arg-type]
    rows = [(name, f"{rate:.1f} img/s") for name, rate in rates.items()]
    rows += [("packing VOC (train + val)", f"{voc_pack_rate:.1f} img/s"),
             ("packing Cityscapes (train + val)", f"{cityscapes_pack_rate:.1f} img/s")]  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--frames", type=int, default=24, help="Cityscapes-size frames (--packed)")
    parser.add_argument("--packed", action="store_true", help="packed vs folder read rates instead")
    parser.add_argument("--model-rate", type=float, default=None, help="model images/s measured elsewhere")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.packed:
        with tempfile.TemporaryDirectory() as scratch:
            root = Path(scratch)
            write_voc_like(root / "voc", args.images)
            write_cityscapes_like(root / "cityscapes", args.frames)
            rows = packed_rows(root, args.images, args.frames)
        width = max(len(name) for name, _ in rows)
        table = f"| {'one process, local disk':<{width}} | rate |\n|{'-' * (width + 2)}|------|\n"
        table += "\n".join(f"| {name:<{width}} | {value} |" for name, value in rows)
        record("Data pipeline: packed (lightseg data pack) vs folders", table, "cpu")
        return
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
