"""What lightseg adds to a training step, and what the metric costs next to the forward pass.

1. The quickstart model, data, optimizer and batch size, trained for the same number of
   steps through `lightseg fit`'s objects (LightningCLI with the quickstart config: task,
   data module, trainer; logging, metrics and poly LR on) and through a plain PyTorch loop
   (forward, loss, backward, step) with the config's optimizer and memory format. Both
   clocks run from the end of a warm-up step to the end of the last step, so they hold the
   same steps, data loading and epoch changes included;
   `trainer.fit`'s one-off start and end are reported on their own row. Runs alternate
   (lightseg, plain, lightseg, ...) so that drift in the machine's speed hits both alike.
   Target: time ratio <= 1.03.
2. `SegmentationMetrics.update` on a validation batch as a fraction of the forward pass,
   at the quickstart size and at VOC size (DeepLabV3-ResNet101, 21 classes, 513x513).
   Target: <= 5 %.

   `--arch` / `--backbone` time another architecture on the quickstart's data the same way (the
   metric rows are left out): `--arch hf_segformer --backbone nvidia/mit-b0`, `--arch mask2former
   --backbone facebook/mask2former-swin-tiny-ade-semantic` (their set-prediction loss in both loops).

   `--image-size` / `--batch-size` change the quickstart data's size and batch (both loops): a
   fixed per-step cost weighs less on a step of realistic size than on the quickstart's 64x64.

    python benchmarks/overhead.py [--steps 80] [--repeats 5] [--arch A --backbone B] [--image-size 256 --batch-size 4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import torch

from lightseg.cli import build_cli
from lightseg.losses import SegmentationLoss
from lightseg.metrics import SegmentationMetrics
from lightseg.models import build_semantic_model
from lightseg.models.semantic import ARCHITECTURES

from report import ROOT, StepClock, record

WARMUP = 5


def model_args(arch: str | None, backbone: str | None, image_size: int | None, batch_size: int | None) -> list[str]:
    """The quickstart's model replaced by ``arch`` on ``backbone`` (a query model: its own loss, named ``ce``), and
    its data's image and batch size."""
    data = [*([f"--data.init_args.image_size={image_size}"] if image_size else []),
            *([f"--data.init_args.loader.batch_size={batch_size}"] if batch_size else [])]  # fmt: skip
    if arch is None:
        return data
    query = ARCHITECTURES[arch].query
    return [f"--model.init_args.network.arch={arch}", f"--model.init_args.network.backbone={backbone}",
            "--model.init_args.network.arch_options=null",  # the quickstart's are its U-Net's
            *(["--model.init_args.loss=ce"] if query else []), *data]  # fmt: skip


def through_lightseg(steps: int, cache: Path, model: list[str]) -> tuple[float, float]:
    """(steps after the warm-up, all of ``trainer.fit``) in seconds through lightseg's CLI objects."""
    cli = build_cli(
        [
            "--config", str(ROOT / "configs" / "quickstart.yaml"), *model,
            f"--data.init_args.root={cache}", f"--trainer.max_steps={steps}", "--trainer.max_epochs=-1",
            "--trainer.limit_val_batches=0", "--trainer.callbacks=[]", "--trainer.enable_checkpointing=false",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        ],
        run=False,
    )  # fmt: skip
    cli.datamodule.prepare_data()
    clock = StepClock(WARMUP)
    cast(Any, cli.trainer).callbacks.append(clock)
    start = time.perf_counter()
    cli.trainer.fit(cli.model, cli.datamodule)
    return clock.elapsed("train")[1], time.perf_counter() - start


def plain_loop(steps: int, cache: Path, model_options: list[str]) -> float:
    """Steps after the warm-up in seconds through a plain PyTorch loop."""
    cli = build_cli(
        ["--config", str(ROOT / "configs" / "quickstart.yaml"), *model_options, f"--data.init_args.root={cache}"],
        run=False,
    )
    model, datamodule = cli.model.model, cli.datamodule
    datamodule.setup("fit")
    loader = datamodule.train_dataloader()
    if "mask_queries" in model.train()(next(iter(loader))["image"]):  # Mask2Former, EoMT: their set-prediction loss
        net = model.net

        def criterion(outputs: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
            return net.set_loss(outputs, model.pad_target(target, 255), 255)
    else:
        per_pixel = SegmentationLoss("ce+dice", datamodule.num_classes)

        def criterion(outputs: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
            return per_pixel(outputs["out"], target)

    # the same work as the task's step: the config's optimizer (AdamW, fused) and memory format (channels-last)
    optimizer = cli.model.optimizer_factory(model.parameters())
    scheduler = torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=steps, power=0.9)
    layout = torch.channels_last if cli.model.hparams.get("channels_last") else torch.contiguous_format
    model.to(memory_format=layout)
    model.train()
    start = 0.0
    done = 0
    while done < steps:
        for batch in loader:
            loss = criterion(model(batch["image"].contiguous(memory_format=layout)), batch["mask"])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            done += 1
            if done == WARMUP:
                start = time.perf_counter()
            if done == steps:
                break
    return time.perf_counter() - start


def metric_fraction(model_name: str, backbone: str, classes: int, size: int, batch: int) -> float:
    model = build_semantic_model(model_name, classes, backbone, None, aux=False).eval()
    metric = SegmentationMetrics(classes)
    images = torch.rand(batch, 3, size, size)
    target = torch.randint(0, classes, (batch, size, size))
    with torch.no_grad():
        model(images)
        start = time.perf_counter()
        logits = model(images)["out"]
        forward = time.perf_counter() - start
        start = time.perf_counter()
        metric.update(logits, target)
        update = time.perf_counter() - start
    return update / forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--arch", help="another architecture on the quickstart's data (e.g. hf_segformer)")
    parser.add_argument("--backbone", help="its backbone (e.g. nvidia/mit-b0)")
    parser.add_argument("--image-size", type=int, help="the shapes' image size (default: the quickstart's 64)")
    parser.add_argument("--batch-size", type=int, help="the batch size (default: the quickstart's 16)")
    args = parser.parse_args()
    model = model_args(args.arch, args.backbone, args.image_size, args.batch_size)
    with tempfile.TemporaryDirectory() as scratch:
        cache = Path(scratch)
        through_lightseg(WARMUP + 1, cache, model)  # write the data set, warm up
        lightseg, fits, plain = [], [], []
        for _ in range(args.repeats):
            steady, whole = through_lightseg(args.steps, cache, model)
            lightseg.append(steady)
            fits.append(whole - steady * args.steps / (args.steps - WARMUP))
            plain.append(plain_loop(args.steps, cache, model))
    fast_lightseg, fast_plain = min(lightseg), min(plain)
    timed = args.steps - WARMUP
    what = f"{args.arch} ({args.backbone})" if args.arch else "quickstart"
    if args.image_size or args.batch_size:
        what += f", {args.image_size or 64}² x {args.batch_size or 16}"
    rows = [
        (f"{timed} {what} steps, plain PyTorch loop", f"{fast_plain:.2f} s"),
        (f"{timed} {what} steps, lightseg (Lightning) fit", f"{fast_lightseg:.2f} s"),
        ("time ratio lightseg / plain (target <= 1.03)", f"{fast_lightseg / fast_plain:.3f}"),
        ("ratio of each pair, in run order", " ".join(f"{a / b:.3f}" for a, b in zip(lightseg, plain, strict=True))),
        ("median pair ratio", f"{statistics.median(a / b for a, b in zip(lightseg, plain, strict=True)):.3f}"),
        ("`trainer.fit` start and end, once per run (estimated)", f"{min(fits):.2f} s"),
    ]
    if not args.arch and not args.image_size and not args.batch_size:
        small = metric_fraction("unet", "resnet18", 4, 64, 16)
        voc = metric_fraction("deeplabv3", "resnet101", 21, 513, 2)
        rows += [
            ("metric update / forward, U-Net R18 64x64 x16, 4 classes", f"{100 * small:.2f} %"),
            ("metric update / forward, DeepLabV3-R101 513x513 x2, 21 classes", f"{100 * voc:.2f} %"),
        ]
    table = "| overhead | value |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)
    record(f"Overhead{f' of {what}' if args.arch else ''} (best of {args.repeats})", table)


if __name__ == "__main__":
    main()
