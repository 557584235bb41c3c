"""What evaluation's metrics cost next to the forward pass: the confusion matrix, Boundary IoU, iIoU.

`SegmentationMetrics.update` on one evaluation batch as a fraction of the model's forward
pass (DeepLabV3-ResNet101, eval mode, no gradients), for

- the confusion-matrix metrics alone (mIoU, accuracies, Dice; target <= 5 %),
- with Boundary IoU (band 0.02 of the diagonal, the default; target <= 10 %),
- with the Cityscapes protocol (Boundary IoU at 0.005, categories, iIoU over ~30 instances per
  frame; target <= 10 %),

at VOC size (513x513, 2 images, 21 classes) and at Cityscapes size (1024x2048, 1 frame, 19
classes). Each time is the median of `--repeats` runs after a warm-up, on the device the
evaluation would use (`--device cuda` on a GPU machine: synchronised before each clock read).

    python benchmarks/metrics.py [--repeats 5] [--device cpu] [--no-cityscapes]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from lightseg.datamodules.cityscapes import cityscapes_protocol
from lightseg.metrics import EvaluationProtocol, SegmentationMetrics
from lightseg.models import build_semantic_model

from report import record


def clock(run: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median seconds of ``run`` over ``repeats`` runs after one warm-up."""
    times = []
    for k in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if k:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def scene(classes: int, batch: int, height: int, width: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Piecewise-constant targets with void borders and ~30 rectangular instances per image, and noisy logits."""
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(0, classes, (batch, height // 32 + 1, width // 32 + 1), generator=generator)
    target = target.repeat_interleave(32, 1).repeat_interleave(32, 2)[:, :height, :width].contiguous()
    target[:, :, :8] = 255
    instances = torch.zeros_like(target)
    for k in range(30):
        y = int(torch.randint(0, height - 64, (1,), generator=generator))
        x = int(torch.randint(0, width - 96, (1,), generator=generator))
        instances[:, y : y + 64, x : x + 96] = 26000 + k
        target[:, y : y + 64, x : x + 96] = 13  # car
    logits = torch.randn(batch, classes, height, width, generator=generator) + 4 * torch.nn.functional.one_hot(
        target.clamp(max=classes - 1), classes
    ).permute(0, 3, 1, 2)
    return logits.to(device), target.to(device), instances.to(device)


def fractions(
    classes: int, batch: int, height: int, width: int, repeats: int, device: torch.device, cityscapes: bool
) -> list[tuple[str, float]]:
    model = build_semantic_model("deeplabv3", classes, "resnet101", None, aux=False).eval().to(device)
    images = torch.rand(batch, 3, height, width, device=device)
    with torch.no_grad():
        forward = clock(lambda: model(images), max(1, repeats // 2), device)
    logits, target, instances = scene(classes, batch, height, width, device)
    setups: list[tuple[str, EvaluationProtocol | None, bool]] = [
        ("confusion matrix", None, False),
        ("+ Boundary IoU 0.02", EvaluationProtocol(boundary_ratio=0.02), False),
    ]
    if cityscapes:
        setups.append(("Cityscapes: BIoU 0.005 + categories + iIoU", cityscapes_protocol(), True))
    rows = []
    for name, protocol, with_instances in setups:
        metric = SegmentationMetrics(classes, protocol=protocol).to(device)
        given = instances if with_instances else None
        update = clock(lambda m=metric, i=given: m.update(logits, target, instances=i), repeats, device)
        rows.append((name, update / forward))
    rows.append(("forward pass (s)", forward))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-cityscapes", action="store_true", help="skip the 1024x2048 rows (slow on a CPU)")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_grad_enabled(False)
    sizes = [("DeepLabV3-R101 513x513 x2, 21 classes", 21, 2, 513, 513, False)]
    if not args.no_cityscapes:
        sizes.append(("DeepLabV3-R101 1024x2048 x1, 19 classes", 19, 1, 1024, 2048, True))
    lines = ["| model, input | metric | update / forward |", "|---|---|---:|"]
    for title, classes, batch, height, width, cityscapes in sizes:
        for name, value in fractions(classes, batch, height, width, args.repeats, device, cityscapes):
            shown = f"{value:.2f} s" if name.startswith("forward") else f"{100 * value:.2f} %"
            lines.append(f"| {title} | {name} | {shown} |")
    record("Evaluation metric cost", "\n".join(lines), device=args.device)


if __name__ == "__main__":
    main()
