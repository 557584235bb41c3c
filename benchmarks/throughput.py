"""Training and evaluation images/s of the recipe models in float32 and mixed precision.

Builds each recipe through `lightseg`'s CLI objects (its config with the data swapped for
the embedded shapes set at the recipe's image size, no pretrained weights since they are
not needed for speed, the pretrained recipe's frozen layers kept), trains `--steps`
optimizer steps and validates `--val-batches` batches for each precision, and times the
batches after a warm-up (`report.StepClock`; on a GPU each reading waits for the kernels):

- DeepLabV3-ResNet50 (configs/deeplabv3.yaml with a ResNet-50, output stride 16, SGD +
  poly) on 513x513 images;
- Mask R-CNN R50-FPN (configs/instance/coco_maskrcnn_resnet50_fpn.yaml: frozen BatchNorm,
  stages 2-5 training, images resized to 800 px) on 800x800 scenes.

Each model runs in every `--variants` entry: a Lightning precision, `+cl` for the task's
`channels_last: true` (weights and activations in NHWC memory) and `+compile` for its
`compile: true` (torch.compile of the semantic network, of the R-CNN backbone and FPN; the
compilation falls in the warm-up batches). Float32 is PyTorch's default (cuDNN may use TF32
for convolutions on Ampere and newer; matrix multiplications stay in full float32).
Evaluation time excludes the epoch-end metric (COCO evaluation is timed by coco_eval.py).
Peak GPU memory is per variant.

    python benchmarks/throughput.py                          # what the docs record (GPU)
    python benchmarks/throughput.py --steps 4 --warmup 1 --size-scale 0.25 --no-record  # a CPU check
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any, cast

import torch

from lightseg.cli import build_cli

from report import ROOT, StepClock, record

RECIPES: dict[str, dict[str, Any]] = {
    "deeplabv3_resnet50": {
        "config": "configs/deeplabv3.yaml",
        "size": 513,
        "batch": 8,
        "data": "ShapesDataModule",
        "model": ["--model.init_args.network.backbone=resnet50", "--model.init_args.network.weights_backbone=null"],
    },
    "maskrcnn_resnet50_fpn": {
        "config": "configs/instance/coco_maskrcnn_resnet50_fpn.yaml",
        "size": 800,
        "batch": 2,
        "data": "ShapesInstanceDataModule",
        # the ImageNet recipe's compute without its weights: frozen norm, stem and stage 1 frozen
        "model": [
            "--model.init_args.network.weights_backbone=null",
            "--model.init_args.network.trainable_norm=false",
            "--model.init_args.network.trainable_backbone_layers=3",
        ],
    },
}


VARIANTS = ["32-true", "32-true+cl", "bf16-mixed", "bf16-mixed+cl", "bf16-mixed+cl+compile"]


def measure(name: str, variant: str, args: argparse.Namespace, cache: Path) -> tuple[float, float, float | None]:
    """(training images/s, evaluation images/s, peak GPU memory in GiB) of one recipe and variant."""
    precision, *features = variant.split("+")
    if set(features) - {"cl", "compile"}:
        raise SystemExit(f"--variants: {variant!r} is not precision[+cl][+compile]")
    recipe = RECIPES[name]
    size = max(32, round(recipe["size"] * args.size_scale))
    batch = args.batch or recipe["batch"]
    # enough training images for a few distinct batches (epochs repeat them), and every
    # validation batch asked for
    train_images, val_images = batch * max(args.warmup + 2, 8), batch * args.val_batches
    options = [
        f"--model.init_args.channels_last={'cl' in features}",
        f"--model.init_args.compile={'compile' in features}",
    ]
    if name.startswith("maskrcnn") and args.size_scale != 1:
        options += [f"--model.init_args.network.min_size={size}", f"--model.init_args.network.max_size={size}"]
    cli = build_cli(
        [
            "--config", str(ROOT / recipe["config"]),
            *recipe["model"], *options,
            "--data", recipe["data"], f"--data.root={cache}", f"--data.image_size={size}",
            f"--data.num_train={train_images}", f"--data.num_val={val_images}", "--data.num_test=1",
            f"--data.init_args.loader.batch_size={batch}", f"--data.init_args.loader.num_workers={args.workers}",
            f"--data.init_args.loader.persistent_workers={args.workers > 0}",
            f"--data.init_args.loader.pin_memory={torch.cuda.is_available()}",
            f"--trainer.precision={precision}", "--trainer.devices=1",
            f"--trainer.max_steps={args.steps}", "--trainer.max_epochs=-1", "--trainer.limit_val_batches=0",
            "--trainer.callbacks=[]", "--trainer.enable_checkpointing=false", "--trainer.logger=false",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        ],
        run=False,
    )  # fmt: skip
    clock = StepClock(args.warmup)
    trainer = cast(Any, cli.trainer)
    trainer.callbacks.append(clock)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(cli.model, cli.datamodule)
    trained, train_s = clock.elapsed("train")
    trainer.limit_val_batches = args.val_batches
    trainer.validate(cli.model, cli.datamodule, verbose=False)
    evaluated, val_s = clock.elapsed("val")
    memory = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    return trained * batch / train_s, evaluated * batch / val_s, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--variants", nargs="+", default=VARIANTS, help="precision[+cl][+compile] (see above)")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per precision")
    parser.add_argument("--val-batches", type=int, default=20, help="validation batches per precision")
    parser.add_argument("--warmup", type=int, default=5, help="batches left out of the clock")
    parser.add_argument("--batch", type=int, default=0, help="images per batch (0: the recipe's per-GPU batch)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="data loader workers")
    parser.add_argument("--size-scale", type=float, default=1.0, help="image size x this (a quick CPU check)")
    parser.add_argument("--no-record", action="store_true", help="print the table only")
    args = parser.parse_args()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.models:
            base = None
            for variant in args.variants:
                train, evaluate, memory = measure(name, variant, args, Path(scratch))
                base = base or train
                size = max(32, round(RECIPES[name]["size"] * args.size_scale))
                label = variant.replace("+cl", " + channels_last").replace("+compile", " + compile")
                print(f"{name} {label}: {train:.3g} train img/s, {evaluate:.3g} eval img/s", flush=True)
                rows.append(
                    f"| {name} | {size}² x {args.batch or RECIPES[name]['batch']} | {label} | {train:.3g} | "
                    f"{train / base:.2f}x | {evaluate:.3g} | {'-' if memory is None else f'{memory:.1f}'} |"
                )
    table = (
        "| model | images | precision | train img/s | vs fp32 | eval img/s | peak GiB |\n"
        "|---|---|---|---|---|---|---|\n" + "\n".join(rows)
    )
    title = f"Throughput ({args.steps} steps, {args.val_batches} eval batches, {args.warmup} warm-up)"
    if args.no_record:
        print(table)
    else:
        record(title, table, device)


if __name__ == "__main__":
    main()
