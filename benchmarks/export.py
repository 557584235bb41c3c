"""Per-image latency of exported models: onnxruntime (CPU provider) vs PyTorch eager vs TorchScript.

U-Net/ResNet-18 at 512x512 and DeepLabV3/ResNet-50 at 513x513 (batch 1), untrained
(``weights=None``: the latency does not depend on the weights). Each model is exported with
:func:`lightseg.export.export_task` (so every file is verified), then timed: median of
``--repeats`` runs after one warm-up. ``--maskrcnn`` adds Mask R-CNN R50-FPN at 800x800;
untrained, it finds hundreds of degenerate boxes whose sub-pixel masks the ONNX graph pastes
differently from eager torchvision, so its export fails verification (as it should).
Prints a table and appends it to docs/benchmarks.md.

    python benchmarks/export.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lightseg.export import DetectionGraph, ExportSettings, SemanticGraph, export_task
from lightseg.tasks import InstanceSegmentationTask, SemanticSegmentationTask

from report import record


def median_ms(run: Callable[[], Any], repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--maskrcnn", action="store_true", help="also Mask R-CNN R50-FPN at 800 px (needs weights)")
    args = parser.parse_args()
    import onnxruntime

    torch.set_grad_enabled(False)
    models = [
        (
            "U-Net ResNet-18",
            SemanticSegmentationTask(arch="unet", backbone="resnet18", weights_backbone=None),
            (512, 512),
        ),
        (
            "DeepLabV3 ResNet-50",
            SemanticSegmentationTask(arch="deeplabv3", backbone="resnet50", weights_backbone=None, num_classes=21),
            (513, 513),
        ),
        (
            "Mask R-CNN R50-FPN",
            InstanceSegmentationTask(
                arch="maskrcnn_resnet50_fpn",
                weights=None,
                weights_backbone=None,
                num_classes=91,
                # untrained scores crowd together: no top-100 cut through near-equal scores, whose order is noise
                detector_kwargs={"box_score_thresh": 0.3, "box_detections_per_img": 1000},
            ),
            (800, 800),
        ),
    ]
    if not args.maskrcnn:
        # untrained, it finds hundreds of degenerate boxes whose tiny masks ONNX pastes differently: verification fails
        models = models[:2]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, task, size in models:
            task.eval()
            detection = isinstance(task, InstanceSegmentationTask)
            if detection:  # confident masks, as trained ones: untrained ones hover at 0.5, where noise flips pixels
                task.model.roi_heads.mask_predictor.mask_fcn_logits.bias.add_(3.0)
            image = torch.rand(3, *size) if detection else torch.rand(1, 3, *size)
            graph = (
                DetectionGraph(task.model, list(range(91)), 0.5)
                if detection
                else SemanticGraph(task.model, "labels", 21)
            )
            graph.eval()
            times = {"PyTorch eager": median_ms(lambda g=graph, x=image: g(x), args.repeats)}
            for fmt in ("onnx", "torchscript"):
                path = Path(folder) / f"{name.replace(' ', '_')}.{fmt}"
                sizes = [size, (size[0] - 31, size[1] - 17)]
                export_task(task, None, ExportSettings(fmt, str(path), "labels", verify_sizes=sizes))  # type: ignore[arg-type]
                if fmt == "onnx":
                    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                    feed = {"image": image.numpy()}
                    times["onnxruntime CPU"] = median_ms(lambda s=session, f=feed: s.run(None, f), args.repeats)
                else:
                    loaded = torch.jit.load(str(path))
                    times["TorchScript"] = median_ms(lambda m=loaded, x=image: m(x), args.repeats)
            eager = times["PyTorch eager"]
            rows.append(
                f"| {name} | {size[0]}x{size[1]} | "
                + " | ".join(
                    f"{times[k]:.0f} ms ({eager / times[k]:.2f}x)"
                    for k in ("PyTorch eager", "TorchScript", "onnxruntime CPU")
                )
                + " |"
            )
    table = "\n".join(
        ["| model | input | PyTorch eager | TorchScript | onnxruntime CPU |", "|---|---|---|---|---|", *rows]
    )
    note = (
        f"\n\nMedian of {args.repeats} runs after a warm-up, batch 1, untrained weights; in brackets the speed-up over "
        "eager PyTorch. Semantic graphs return labels (argmax inside the graph); Mask R-CNN (`--maskrcnn`) returns "
        "boxes, category ids, scores and 0/1 masks pasted at image size."
    )
    record("Export latency", table + note)


if __name__ == "__main__":
    main()
