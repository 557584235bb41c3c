"""The model zoo at a glance: parameters, GFLOPs, training step and inference latency of every architecture.

Every ``arch`` of lightseg's registry at a standard backbone (ResNet-50 where it takes one;
SegFormer on MiT-B0, DPT on DINOv2-S/14, UPerNet also on ConvNeXt-T), built untrained
(``weights_backbone=None``: speed does not depend on the weights), 21 classes, 512x512 inputs:

- parameters (millions) and GFLOPs of one forward pass of one image (``torch.utils.flop_counter``:
  two FLOPs per multiply-add, convolutions and matrix products);
- a training step: forward, cross-entropy, backward and an SGD step on a batch of 2, median of
  ``--steps`` after one warm-up (BatchNorm in training mode, as in ``lightseg fit``);
- inference: eager PyTorch and onnxruntime (CPU provider) on one image, median of ``--repeats``
  after one warm-up; the ONNX file is written and verified by :func:`lightseg.export.export_task`
  (for a model whose graph holds at one input size only, Mask2Former, exported for 512², and said).

Prints a table and appends it to docs/benchmarks.md (``--no-record``: print only).

    python benchmarks/models.py [--steps 3] [--repeats 5] [--only unet segformer] [--no-record]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from lightseg.export import ExportSettings, export_task
from lightseg.models import hf_adapter
from lightseg.models.semantic import ARCHITECTURES, ModelSpec
from lightseg.tasks import SemanticSegmentationTask

from report import record

#: (row name, arch, backbone): every registered arch once, at the backbone its comparisons use
ROWS: list[tuple[str, str, str | None]] = [
    *((arch, arch, None) for arch in ("fcn32s", "fcn16s", "fcn8s")),
    *((arch, arch, "resnet50") for arch in ("fcn", "deeplabv2", "deeplabv3")),
    *((arch, arch, "resnet50") for arch in ARCHITECTURES if arch not in ("fcn32s", "fcn16s", "fcn8s", "fcn",
                                                                          "deeplabv2", "deeplabv3", "segformer",
                                                                          "dpt", *hf_adapter.FAMILIES)),
    ("upernet (ConvNeXt-T)", "upernet", "tu-convnext_tiny"),
    ("segformer (MiT-B0)", "segformer", "mit_b0"),
    ("dpt (DINOv2-S/14)", "dpt", "tu-vit_small_patch14_dinov2"),
    # transformers' models, at their published configurations
    ("hf_segformer (B0)", "hf_segformer", "nvidia/mit-b0"),
    ("hf_segformer (B5)", "hf_segformer", "nvidia/mit-b5"),
    ("hf_upernet (ConvNeXt-T)", "hf_upernet", "openmmlab/upernet-convnext-tiny"),
    ("hf_dpt (ViT-L/16)", "hf_dpt", "Intel/dpt-large-ade"),
    ("mask2former (Swin-T)", "mask2former", "facebook/mask2former-swin-tiny-ade-semantic"),
    ("eomt (ViT-L/16)", "eomt", "tue-mps/ade20k_semantic_eomt_large_512"),
]  # fmt: skip
SIZE = 512
CLASSES = 21


def median_seconds(run: Callable[[], Any], repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(arch: str, backbone: str | None, steps: int, repeats: int, folder: Path) -> dict[str, Any]:
    task = SemanticSegmentationTask(ModelSpec(arch, backbone, weights_backbone=None), num_classes=CLASSES)
    model = task.model
    params = sum(p.numel() for p in model.parameters()) / 1e6
    image = torch.rand(1, 3, SIZE, SIZE)
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(image)
    gflops = counter.get_total_flops() / 1e9

    model.train()
    batch = torch.rand(2, 3, SIZE, SIZE)
    target = torch.randint(0, CLASSES, (2, SIZE, SIZE))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        task.compute_loss(model(batch), target).backward()  # cross-entropy (+ aux), or a query model's set loss
        optimizer.step()

    train = median_seconds(train_step, steps)
    model.eval()
    with torch.no_grad():
        eager = median_seconds(lambda: model(image), repeats)
    refusal = ARCHITECTURES[arch].export_refusal
    fixed = refusal(model, "onnx", False) is not None  # a graph of one input size (Mask2Former), marked in the table
    measured = {"params": params, "gflops": gflops, "train": train, "eager": eager * 1000, "fixed": fixed}
    if refusal(model, "onnx", True):
        return {**measured, "onnx": None}
    settings = ExportSettings(output=str(folder / f"{arch}.onnx"), semantic_output="labels", overwrite=True,
                              input_size=(SIZE, SIZE) if fixed else None)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_task(task, None, settings)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(settings.output), providers=["CPUExecutionProvider"])
    feed = {"image": image.numpy()}
    onnx = median_seconds(lambda: session.run(None, feed), repeats)
    return {**measured, "onnx": onnx * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per model")
    parser.add_argument("--repeats", type=int, default=5, help="timed inference runs per model and runtime")
    parser.add_argument("--only", nargs="*", help="rows whose arch is one of these")
    parser.add_argument("--no-record", action="store_true", help="print only; leave docs/benchmarks.md as it is")
    args = parser.parse_args()
    torch.manual_seed(0)
    columns = ("model", "backbone", "parameters (M)", "GFLOPs (512²)", "train step, batch 2 (s)", "eager (ms)",
               "onnxruntime (ms)")  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|---|---|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name, arch, backbone in ROWS:
            if args.only and arch not in args.only:
                continue
            shown = backbone or ARCHITECTURES[arch].default_backbone
            result = measure(arch, backbone, args.steps, args.repeats, Path(tmp))
            onnx = "refused" if result["onnx"] is None else f"{result['onnx']:.0f}"
            onnx += f" ({SIZE}² only)" if result["fixed"] and result["onnx"] is not None else ""
            line = (f"| {name} | {shown} | {result['params']:.1f} | {result['gflops']:.1f} | {result['train']:.2f} "
                    f"| {result['eager']:.0f} | {onnx} |")  # fmt: skip
            print(line, flush=True)
            lines.append(line)
    table = "\n".join(lines)
    if args.no_record:
        print(table)
    else:
        rows = f" — {', '.join(args.only)}" if args.only else ""
        record(f"Model zoo ({CLASSES} classes, {SIZE}x{SIZE}, untrained){rows}", table)


if __name__ == "__main__":
    main()
