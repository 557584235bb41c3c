"""Per-image latency of exported models: onnxruntime (CPU provider) vs PyTorch eager vs TorchScript.

U-Net/ResNet-18 at 512x512 and DeepLabV3/ResNet-50 at 513x513 (batch 1), untrained
(``weights=None``: a semantic model's latency does not depend on its weights). Each model is
exported with :func:`lightseg.export.export_task` (so every file is verified), then timed:
median of ``--repeats`` runs after one warm-up. Prints a table and appends it to docs/benchmarks.md.

On a GPU, eager PyTorch on it and (with the ``onnxruntime-gpu`` package) onnxruntime's CUDA
provider get columns too; the eager GPU times wait for the GPU to finish.

``--maskrcnn CKPT`` adds Mask R-CNN R50-FPN at 800x800. An R-CNN's latency depends on what it
finds (the mask head runs once per detection) and an untrained one finds hundreds of degenerate
boxes (whose export also fails verification, as it should), so the row needs a trained model:

    lightseg fit --config configs/quickstart_maskrcnn.yaml --model.init_args.network.arch maskrcnn_resnet50_fpn \
        --trainer.logger.init_args.name maskrcnn_resnet50_fpn
    python benchmarks/export.py --maskrcnn \
        runs/quickstart_maskrcnn/maskrcnn_resnet50_fpn/version_0/checkpoints/epoch006-*.ckpt

It runs with COCO's test settings (800-pixel side, 1000 proposals, at most 100 detections) on
an 800x800 mosaic of 36 unseen shapes scenes; its exports are verified on two such mosaics.

    python benchmarks/export.py [--repeats 5] [--maskrcnn CKPT]
"""

from __future__ import annotations

import argparse
import copy
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule

from lightseg.export import ExportSettings, category_ids, describe, export_task
from lightseg.export.graphs import DetectionGraph, SemanticGraph
from lightseg.models import ModelSpec
from lightseg.tasks import InstanceSegmentationTask, SemanticSegmentationTask

from report import record


def synced(graph: torch.nn.Module, image: torch.Tensor) -> Any:
    """``graph(image)`` once the GPU has finished it."""
    out = graph(image)
    torch.cuda.synchronize()
    return out


def median_ms(run: Callable[[], Any], repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def mosaics(folder: Path, count: int = 2, side: int = 800, scene: int = 128) -> list[torch.Tensor]:
    """RGB images in [0, 1] of ``side`` pixels, each tiled with its own unseen shapes scenes (test split)."""
    from lightseg.datamodules import ShapesInstanceDataModule

    per_row = side // scene
    tiles = per_row * per_row
    data = ShapesInstanceDataModule(
        root=str(folder), num_train=1, num_val=1, num_test=count * tiles, image_size=scene, seed=7
    )
    data.prepare_data()
    data.setup("test")
    images = torch.zeros(count, 3, side, side)
    for k in range(count * tiles):
        row, col = divmod(k % tiles, per_row)
        tile = data.test_dataset[k]["image"]  # type: ignore[index]
        images[k // tiles, :, row * scene : (row + 1) * scene, col * scene : (col + 1) * scene] = tile
    return list(images)


class Mosaics:
    """The mosaics where export_task looks for the images it verifies on (a data module's first validation images)."""

    def __init__(self, images: list[torch.Tensor]) -> None:
        self.val_dataset = [{"image": image} for image in images]

    def setup(self, stage: str) -> None:
        """Nothing to set up."""


def trained_maskrcnn(ckpt: str) -> InstanceSegmentationTask:
    """A trained Mask R-CNN with COCO's test settings: 800-pixel side, 1000 proposals, <= 100 detections."""
    task = InstanceSegmentationTask.load_from_checkpoint(ckpt, map_location="cpu")
    model = task.model
    model.transform.min_size, model.transform.max_size = (800,), 1333  # type: ignore[union-attr]
    model.rpn._pre_nms_top_n["testing"] = model.rpn._post_nms_top_n["testing"] = 1000  # type: ignore[union-attr,index]
    model.roi_heads.detections_per_img = 100  # type: ignore[union-attr]
    return task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--maskrcnn", metavar="CKPT", help="a trained Mask R-CNN R50-FPN checkpoint: adds its row")
    args = parser.parse_args()
    import onnxruntime

    torch.set_grad_enabled(False)
    folder = Path(tempfile.mkdtemp())
    models: list[tuple[str, LightningModule, torch.Tensor]] = [
        (
            "U-Net ResNet-18",
            SemanticSegmentationTask(ModelSpec("unet", "resnet18", weights_backbone=None)),
            torch.rand(1, 3, 512, 512),
        ),
        (
            "DeepLabV3 ResNet-50",
            SemanticSegmentationTask(ModelSpec("deeplabv3", "resnet50", weights_backbone=None), num_classes=21),
            torch.rand(1, 3, 513, 513),
        ),
    ]
    data = None
    if args.maskrcnn:
        images = mosaics(folder)
        data = Mosaics(images)
        models.append(("Mask R-CNN R50-FPN", trained_maskrcnn(args.maskrcnn), images[0]))
    # on a GPU, eager PyTorch on it and onnxruntime's CUDA provider (the onnxruntime-gpu package) too
    cuda = torch.cuda.is_available()
    ort_cuda = cuda and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    columns = ["PyTorch eager", "TorchScript", "onnxruntime CPU"]
    columns += ["PyTorch eager CUDA"] * cuda + ["onnxruntime CUDA"] * ort_cuda
    rows = []
    detected = 0
    for name, task, image in models:
        task.eval()
        detection = isinstance(task, InstanceSegmentationTask)
        size = tuple(image.shape[-2:])
        graph = (
            DetectionGraph(task.model, category_ids(task, None), 0.5)
            if detection
            else SemanticGraph(task.model, "labels", int(task.hparams["num_classes"]))
        )
        graph.eval()
        if detection:
            detected = len(graph(image)[0])
        times = {"PyTorch eager": median_ms(lambda g=graph, x=image: g(x), args.repeats)}
        if cuda:
            on_gpu, image_gpu = copy.deepcopy(graph).cuda(), image.cuda()
            times["PyTorch eager CUDA"] = median_ms(lambda g=on_gpu, x=image_gpu: synced(g, x), args.repeats)
        for fmt in ("onnx", "torchscript"):
            path = folder / f"{name.replace(' ', '_')}.{fmt}"
            sizes = [size, (size[0] - 31, size[1] - 17)]
            settings = ExportSettings(fmt, str(path), "labels", verify_sizes=sizes)  # type: ignore[arg-type]
            result = export_task(task, data if detection else None, settings)  # type: ignore[arg-type]
            print(describe(result))
            if fmt == "onnx":
                session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                feed = {"image": image.numpy()}
                times["onnxruntime CPU"] = median_ms(lambda s=session, f=feed: s.run(None, f), args.repeats)
                if ort_cuda:
                    gpu = onnxruntime.InferenceSession(str(path), providers=["CUDAExecutionProvider"])
                    times["onnxruntime CUDA"] = median_ms(lambda s=gpu, f=feed: s.run(None, f), args.repeats)
            else:
                loaded = torch.jit.load(str(path))
                times["TorchScript"] = median_ms(lambda m=loaded, x=image: m(x), args.repeats)
        eager = times["PyTorch eager"]
        rows.append(
            f"| {name} | {size[0]}x{size[1]} | "
            + " | ".join(f"{times[k]:.0f} ms ({eager / times[k]:.2f}x)" for k in columns)
            + " |"
        )
    shutil.rmtree(folder)
    table = "\n".join(["| model | input | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns), *rows])
    note = (
        f"\n\nMedian of {args.repeats} runs after a warm-up, batch 1; in brackets the speed-up over eager PyTorch. "
        "Semantic models untrained, their graphs return labels (argmax inside the graph)."
    )
    if args.maskrcnn:
        note += (
            f" Mask R-CNN: trained on the shapes set ({args.maskrcnn}), COCO's test settings (800-pixel side, 1000 "
            f"proposals, at most 100 detections), on an 800x800 mosaic of 36 unseen scenes ({detected} detections; "
            "the exports verified on two such mosaics); "
            "its graph returns boxes, category ids, scores and 0/1 masks pasted at image size."
        )
    else:
        note += " No Mask R-CNN row: `--maskrcnn CKPT` with a trained model adds it."
    record("Export latency", table + note, torch.cuda.get_device_name() if cuda else "cpu")


if __name__ == "__main__":
    main()
