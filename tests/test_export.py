"""``lightseg export``: every architecture exported and verified against PyTorch; metadata; the example script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import lightseg.export
from lightseg.callbacks import SegmentationWriter
from lightseg.cli import main
from lightseg.colors import class_palette
from lightseg.contract import DataDescription, TaskContext
from lightseg.datamodules import CityscapesDataModule, ShapesDataModule, VOCDataModule, generate_scene
from lightseg.errors import LightsegError
from lightseg.export.graphs import ExactSizeResize, GridAveragePool, SemanticGraph
from lightseg.export.verify import _compare_detections, compare_with_pytorch, score_floor
from lightseg.export.writer import ExportSettings, _samples, data_images, export_task
from lightseg.inference import InferenceSettings
from lightseg.tasks import (
    InstanceSegmentationTask,
    KeypointDetectionTask,
    ONNXSegmentationTask,
    SemanticSegmentationTask,
)

from conftest import ROOT, TINY_SHAPES

SIZES = [(70, 90), (45, 61)]  # neither divisible by 32: the padding inside the graph is exercised
# FCN-VGG16 graphs are 0.5 GB (fc6 as a 7x7 convolution): 30 s each here, so `-m slow` runs them
SLOW_VGG = pytest.mark.slow
SEMANTIC = [
    pytest.param("fcn32s", None, marks=SLOW_VGG), pytest.param("fcn16s", None, marks=SLOW_VGG),
    pytest.param("fcn8s", None, marks=SLOW_VGG), ("fcn", "resnet50"), ("unet", "resnet18"), ("deeplabv2", "resnet50"),
    ("deeplabv3", "resnet50"), ("deeplabv3plus", "resnet18"), ("unetplusplus", "resnet18"), ("manet", "resnet18"),
    ("linknet", "resnet18"), ("fpn", "resnet18"), ("pspnet", "resnet18"), ("pan", "resnet18"),
    ("upernet", "tu-convnext_atto"), ("segformer", "mit_b0"), ("linear", "tu-resnet18"),
    # DINOv2's position embedding is resized to each input (antialiased bicubic): torch.export's ONNX exporter, 25 s
    pytest.param("dpt", "tu-vit_small_patch14_dinov2", marks=pytest.mark.slow),
]  # fmt: skip
#: PAN needs 128 px at least (its pyramid attention halves the stride-16 features three times)
LARGE_SIZES = [(130, 150), (141, 129)]


def _perturb(model: torch.nn.Module) -> None:
    # FCN-VGG's score layers start at zero (as in the paper): give every model non-trivial logits
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.01)


@pytest.mark.parametrize(("arch", "backbone"), SEMANTIC)
def test_every_semantic_architecture_exports_to_onnx_and_matches_pytorch(
    arch: str, backbone: str | None, tmp_path: Path
) -> None:
    task = SemanticSegmentationTask(arch=arch, backbone=backbone, weights_backbone=None, num_classes=5)
    _perturb(task.model)
    sizes = LARGE_SIZES if arch == "pan" else SIZES
    settings = ExportSettings(output=str(tmp_path / "m.onnx"), semantic_output="logits", verify_sizes=sizes)
    result = export_task(task, None, settings)
    assert [f["size"] for f in result.verification] == [list(s) for s in sizes]
    for figure in result.verification:
        assert figure["ok"] and figure["max_abs_diff"] < 1e-3 and figure["label_agreement"] >= 0.999
    import onnxruntime

    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    size = (133, 197) if arch == "pan" else (53, 77)  # a size the verification did not use
    image = torch.rand(1, 3, *size)
    with torch.no_grad():
        expected = task.eval()(image)["out"].numpy()
    (got,) = session.run(None, {"image": image.numpy()})
    assert got.shape == (1, 5, *size)
    assert np.abs(got - expected).max() <= 1e-4 + 1e-3 * np.abs(expected).max()
    names = [o.name for o in session.get_outputs()]
    assert names == ["logits"]  # the auxiliary head is not in the graph


PT2 = [("fcn", "resnet50"), ("deeplabv2", "resnet50"), ("deeplabv3", "resnet50"), ("deeplabv3", "resnet18"),
       ("unetplusplus", "resnet18"), ("manet", "resnet18"), ("linknet", "resnet18"), ("fpn", "resnet18"),
       ("pspnet", "resnet18"), ("pan", "resnet18"), ("upernet", "tu-convnext_atto"), ("segformer", "mit_b0"),
       ("dpt", "tu-vit_small_patch14_dinov2"), ("fcn8s", None)]  # fmt: skip


@pytest.mark.slow  # 5 to 14 s each (torch.export traces and the program is verified at two sizes): -m slow
@pytest.mark.parametrize(("arch", "backbone"), PT2, ids=[f"{a}-{b}" for a, b in PT2])
def test_every_semantic_architecture_exports_to_torch_export(arch: str, backbone: str | None, tmp_path: Path) -> None:
    # U-Net and DeepLabV3+ are in the default suite (test_torch_export_takes_sizes_with_and_without_padding)
    task = SemanticSegmentationTask(arch=arch, backbone=backbone, weights_backbone=None, num_classes=5)
    sizes = LARGE_SIZES if arch == "pan" else SIZES
    settings = ExportSettings("pt2", str(tmp_path / "m.pt2"), "logits", verify_sizes=sizes)
    result = export_task(task, None, settings)
    assert [f["size"] for f in result.verification] == [list(s) for s in sizes]
    assert all(f["ok"] and f["label_agreement"] >= 0.999 for f in result.verification)


def test_grid_pooling_is_exported_for_every_input_size() -> None:
    # ONNX has no adaptive pooling: PSPNet's and UPerNet's 2x2 ... 6x6 bins are computed from the input's size
    for bins in (1, 2, 3, 6, (2, 5)):
        for size in ((6, 6), (7, 9), (13, 4), (1, 1), (24, 17)):
            x = torch.randn(2, 3, *size)
            torch.testing.assert_close(GridAveragePool(bins)(x), F.adaptive_avg_pool2d(x, bins), rtol=1e-5, atol=1e-5)
    task = SemanticSegmentationTask(arch="pspnet", backbone="resnet18", weights_backbone=None, num_classes=3)
    graph = SemanticGraph(task.model, "logits", 3, onnx=True)
    pools = [m for m in graph.modules() if isinstance(m, GridAveragePool)]
    assert sorted(p.rows for p in pools) == [2, 3, 6]  # the 1x1 one stays: ONNX's GlobalAveragePool
    assert not any(isinstance(m, GridAveragePool) for m in task.model.modules())  # the task's model is untouched


def test_torchscript_and_torch_export_of_a_semantic_model(tmp_path: Path) -> None:
    task = SemanticSegmentationTask(arch="deeplabv3plus", backbone="resnet18", weights_backbone=None, num_classes=3)
    settings = ExportSettings("torchscript", str(tmp_path / "m.pt"), "probs", verify_sizes=SIZES)
    assert all(f["ok"] for f in export_task(task, None, settings).verification)
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    image = torch.rand(1, 3, 41, 59)
    with torch.no_grad():
        probs = loaded(image)
        expected = task.eval()(image)["out"].softmax(1)
    torch.testing.assert_close(probs, expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(("arch", "backbone"), [("unet", "resnet18"), ("deeplabv3plus", "resnet18")])
def test_torch_export_takes_sizes_with_and_without_padding(arch: str, backbone: str, tmp_path: Path) -> None:
    # the example (64x96) needs no padding to 32, the second size does: one program must run both kinds
    task = SemanticSegmentationTask(arch=arch, backbone=backbone, weights_backbone=None, num_classes=3).eval()
    settings = ExportSettings("pt2", str(tmp_path / "m.pt2"), "labels", verify_sizes=[(64, 96), (45, 70)])
    assert all(f["ok"] for f in export_task(task, None, settings).verification)
    program = torch.export.load(str(tmp_path / "m.pt2")).module()
    for size in ((128, 160), (41, 59), (96, 33)):  # sizes the verification did not use, both kinds
        image = torch.rand(2, 3, *size)
        with torch.no_grad():
            expected = task(image)["out"].argmax(1)
        labels = program(image)
        assert labels.dtype == torch.uint8 and labels.shape == (2, *size)
        assert (labels == expected).float().mean() >= 0.999


FAST = {"rpn_pre_nms_top_n_test": 300, "rpn_post_nms_top_n_test": 100, "box_detections_per_img": 20}


def _rcnn(kind: str, **kwargs: Any) -> Any:
    options = {"arch": f"{kind}rcnn_resnet18_fpn", "weights": None, "weights_backbone": None, "num_classes": 3,
               "min_size": 64, "max_size": 96, "anchor_sizes": [16, 32, 64, 128, 256],
               "detector_kwargs": FAST}  # fmt: skip
    options.update(kwargs)
    torch.manual_seed(0)  # an untrained model's masks are near-ties: a fixed draw keeps the test repeatable
    if kind == "keypoint":
        return KeypointDetectionTask(num_keypoints=3, oks_sigmas=[0.05] * 3, **options)
    task = InstanceSegmentationTask(**options)
    with (
        torch.no_grad()
    ):  # confident masks, as a trained model's: untrained ones hover at 0.5, where noise flips pixels
        task.model.roi_heads.mask_predictor.mask_fcn_logits.bias.add_(3.0)
    return task


def test_mask_rcnn_exports_with_its_masks_and_without_detections(tmp_path: Path) -> None:
    task = _rcnn("mask")

    class Data:  # a data module's description, as lightseg.contract reads it
        def describe(self) -> DataDescription:
            return DataDescription(3, ("background", "circle", "square"), category_ids=(0, 7, 9))

    settings = ExportSettings(output=str(tmp_path / "mrcnn.onnx"), verify_sizes=[(64, 80), (48, 72)])
    result = export_task(task, Data(), settings)  # type: ignore[arg-type]
    assert len(result.verification) == 3  # two sizes and a blank image
    assert all(f["ok"] and f["detections"] > 0 and f["min_mask_iou"] >= 0.99 for f in result.verification)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    _, labels, _, masks = session.run(None, {"image": torch.rand(3, 56, 70).numpy()})
    assert set(labels.tolist()) <= {7, 9} and masks.dtype == np.uint8 and masks.shape[-2:] == (56, 70)
    meta = json.loads(result.metadata_path.read_text())
    assert meta["category_ids"] == [0, 7, 9] and meta["outputs"] == ["boxes", "labels", "scores", "masks"]

    empty = _rcnn("mask", detector_kwargs={**FAST, "box_score_thresh": 0.99})
    settings = ExportSettings(output=str(tmp_path / "empty.onnx"), verify_sizes=[(64, 80), (48, 72)])
    result = export_task(empty, Data(), settings)  # type: ignore[arg-type]
    assert [f["detections"] for f in result.verification] == [0, 0, 0]  # no crash on an image without detections

    scripted = export_task(task, Data(), ExportSettings("torchscript", str(tmp_path / "m.pt"), verify_sizes=SIZES))  # type: ignore[arg-type]
    assert all(f["ok"] for f in scripted.verification)


def test_borderline_detections_are_counted_confident_ones_compared() -> None:
    def detections(*rows: tuple[float, int, float]) -> list[np.ndarray]:  # (x, label, score) -> boxes, labels, scores
        boxes = np.array([[x, 10.0, x + 20.0, 30.0] for x, _, _ in rows], dtype=np.float32).reshape(-1, 4)
        labels = np.array([label for _, label, _ in rows], dtype=np.int64)
        return [boxes, labels, np.array([score for _, _, score in rows], dtype=np.float32)]

    names = ["boxes", "labels", "scores"]
    floor = score_floor(np.array([0.9, 0.055]), score_thresh=0.05, cap=100)
    assert floor == pytest.approx(0.06)
    assert score_floor(np.array([0.9, 0.3]), 0.05, cap=2) == pytest.approx(0.31)  # the top-2 cut at 0.3
    ours = detections((0, 1, 0.9), (50, 2, 0.8), (100, 1, 0.055))
    # the same confident detections in another order, a borderline one missing and another added: same model
    theirs = detections((50, 2, 0.8), (0, 1, 0.9), (140, 2, 0.058))
    result = _compare_detections(ours, theirs, names, floor)
    assert result["ok"] and result["borderline"] == 1 and result["max_box_diff"] == 0
    # a confident detection missing, or moved: a different model
    missing = _compare_detections(ours, detections((0, 1, 0.9), (100, 1, 0.055)), names, floor)
    assert not missing["ok"] and missing["problem"].startswith("1 detections scoring 0.06 or more without")
    moved = _compare_detections(ours, detections((0, 1, 0.9), (55, 2, 0.8), (100, 1, 0.055)), names, floor)
    assert not moved["ok"] and moved["max_box_diff"] == 5
    relabelled = _compare_detections(ours, detections((0, 1, 0.9), (50, 1, 0.8)), names, floor)
    assert not relabelled["ok"]
    assert _compare_detections(detections(), detections((5, 1, 0.058)), names, floor)["ok"]

    # an image on which PyTorch itself is unstable (exactly tied scores: a blank one) is run, not compared
    class TieBroken(torch.nn.Module):
        def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
            x = 0.0 if bool((image == 0).all()) else 60.0  # the order of tied proposals decides
            return [torch.from_numpy(a) for a in detections((x, 1, 0.9))]

    other = lambda image: tuple(detections((120, 1, 0.9)))  # noqa: E731
    blank, noise = torch.zeros(3, 8, 8), torch.rand(3, 8, 8)
    unstable, wrong = compare_with_pytorch(TieBroken(), other, [blank, noise], names, "labels")
    assert unstable["ok"] and "jitter" in unstable["unstable"]
    assert not wrong["ok"] and "without a counterpart" in wrong["problem"]  # stable in PyTorch: a real difference


def test_r_cnn_input_resize_in_onnx_and_torchscript_is_pytorchs_at_any_size(tmp_path: Path) -> None:
    import onnxruntime
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    class Resize(torch.nn.Module):
        def __init__(self, exact: bool) -> None:
            super().__init__()
            self.transform = GeneralizedRCNNTransform(800, 1333, [0.0] * 3, [1.0] * 3).eval()
            if exact:
                self.transform.__class__ = ExactSizeResize

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.transform.resize(image)[0]

    image = torch.rand(3, 769, 783)  # 769 * 800/769 is 800 in float64, 799.99997 in float32
    eager = Resize(exact=False)(image)
    assert eager.shape == (3, 800, 814)
    assert torch.equal(Resize(exact=True)(image), eager)  # the same computation in PyTorch
    errors = {}
    for exact in (False, True):
        path = tmp_path / f"resize-{exact}.onnx"
        torch.onnx.export(Resize(exact), (torch.rand(3, 800, 800),), str(path), input_names=["image"],
                          dynamic_axes={"image": {1: "h", 2: "w"}}, opset_version=16, dynamo=False)  # fmt: skip
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {"image": image.numpy()})
        errors[exact] = float(np.abs(got - eager.numpy()).max()) if got.shape == eager.shape else float("inf")
    # torchvision's own resize, traced or scripted, computes the size in float32: a row short
    assert errors[False] == float("inf") and errors[True] <= 1e-3
    assert torch.jit.script(Resize(exact=False))(image).shape == (3, 799, 814)
    assert torch.equal(torch.jit.script(Resize(exact=True))(image), eager)


def test_lightseg_predict_runs_an_exported_mask_rcnn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightseg.datamodules import ShapesInstanceDataModule

    task = _rcnn("mask", num_classes=4)
    data = ShapesInstanceDataModule(root=str(tmp_path / "d"), num_train=2, num_val=1, num_test=1, image_size=64)
    settings = ExportSettings(output=str(tmp_path / "m.onnx"), verify_sizes=[(64, 80), (48, 72)])
    export_task(task, data, settings)
    onnx_task = ONNXSegmentationTask(str(tmp_path / "m.onnx"))
    assert onnx_task.detects and onnx_task.hparams["num_classes"] == 4
    # the same detections as the PyTorch model, labels back in the data's label space
    image = torch.rand(3, 60, 76, generator=torch.Generator().manual_seed(3))
    batch = {"images": [image], "path": ["a.png"], "size": [(60, 76)]}
    with torch.no_grad():
        expected = task.eval().predict_step(batch, 0)["detections"][0]
    found = onnx_task.predict_step(batch, 0)["detections"][0]
    assert len(expected["boxes"]) > 0 and torch.equal(found["labels"], expected["labels"])
    torch.testing.assert_close(found["boxes"], expected["boxes"], rtol=1e-3, atol=1e-2)
    torch.testing.assert_close(found["masks"], (expected["masks"] > 0.5).float(), atol=0, rtol=0)

    # through the CLI: results.json with the data's category ids, and overlays
    monkeypatch.chdir(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(images / "a.png")
    config = str(ROOT / "configs" / "quickstart_maskrcnn.yaml")
    main(["predict", "--config", config, f"--data.init_args.root={tmp_path / 'd'}", "--data.init_args.num_train=2",
          "--data.init_args.num_val=1", "--data.init_args.num_test=1", "--data.init_args.image_size=64",
          "--model=ONNXSegmentationTask", f"--model.init_args.path={tmp_path / 'm.onnx'}",
          f"--data.init_args.predict_dir={images}", f"--prediction.output_dir={tmp_path / 'out'}",
          "--prediction.score_threshold=0.0", "--trainer.enable_progress_bar=false"])  # fmt: skip
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    saved = torch.from_numpy(np.asarray(Image.open(images / "a.png"))).permute(2, 0, 1).float() / 255
    found = onnx_task.predict_step({"images": [saved], "path": ["a.png"], "size": [(60, 76)]}, 0)["detections"][0]
    assert len(results) == len(found["boxes"]) > 0 and {r["file_name"] for r in results} == {"a.png"}
    assert [r["category_id"] for r in results] == [data.category_ids[int(k)] for k in found["labels"]]
    assert results[0]["bbox"][:2] == pytest.approx(found["boxes"][0, :2].tolist(), abs=0.01)
    assert (tmp_path / "out" / "overlays" / "a.png").is_file()


def test_keypoint_rcnn_exports_its_keypoints(tmp_path: Path) -> None:
    task = _rcnn("keypoint", keypoint_box_scale=1.25)  # the enlarged keypoint boxes go into the graph too
    result = export_task(task, None, ExportSettings(output=str(tmp_path / "k.onnx"), verify_sizes=[(64, 80), (48, 72)]))
    assert all(f["ok"] and "max_keypoint_diff" in f for f in result.verification if f["detections"])
    meta = json.loads(result.metadata_path.read_text())
    assert meta["outputs"] == ["boxes", "labels", "scores", "keypoints", "keypoint_scores"]


def test_refusals_leave_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slide = SemanticSegmentationTask(
        arch="unet", backbone="resnet18", weights_backbone=None, inference=InferenceSettings(mode="slide")
    )
    with pytest.raises(LightsegError, match=r"export with inference.mode whole"):  # Python's spelling
        export_task(slide, None, ExportSettings(output=str(tmp_path / "a.onnx")))
    with pytest.raises(LightsegError, match=r"torch.export cannot hold the R-CNN's"):
        export_task(_rcnn("mask"), None, ExportSettings("pt2", str(tmp_path / "b.pt2")))
    task = SemanticSegmentationTask(arch="unet", backbone="resnet18", weights_backbone=None, num_classes=3)
    real = lightseg.export.writer.run_exported

    def wrong_on_the_second_size(fmt: str, path: Path) -> Any:
        run = real(fmt, path)
        return lambda image: tuple((out + (image.shape[-2] == 45)) % 3 for out in run(image))

    monkeypatch.setattr(lightseg.export.writer, "run_exported", wrong_on_the_second_size)
    with pytest.raises(LightsegError, match=r"the pt2 export differs from PyTorch on 1 of 2 sample images"):
        export_task(task, None, ExportSettings("pt2", str(tmp_path / "u.pt2"), verify_sizes=[(64, 96), (45, 70)]))
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no file that looks valid, no temporary file


def test_a_graph_of_one_input_size_and_the_tools_that_resize_to_it(tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    task = SemanticSegmentationTask(arch="unet", backbone="resnet18", weights_backbone=None, num_classes=3)
    _perturb(task.model)
    settings = ExportSettings(output=str(tmp_path / "m.onnx"), semantic_output="logits", input_size=(48, 64))
    result = export_task(task, None, settings)
    assert [f["size"] for f in result.verification] == [[48, 64], [48, 64]]
    assert all(f["ok"] for f in result.verification)
    meta = json.loads(result.metadata_path.read_text())
    assert meta["input"]["size"] == [48, 64]
    session = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 3, 48, 64]  # the batch stays dynamic
    with pytest.raises(Exception, match="(?i)dimension|shape"):  # another size is refused, never silently wrong
        session.run(None, {"image": np.zeros((1, 3, 40, 64), dtype=np.float32)})

    # lightseg predict with the exported file resizes each image to the graph's size and the scores back
    image = torch.rand(3, 37, 53, generator=torch.Generator().manual_seed(1))
    onnx_task = ONNXSegmentationTask(str(result.path))
    predicted = onnx_task.predict_step({"image": image[None], "size": [(37, 53)], "path": ["x.png"]}, 0)["mask"][0]
    with torch.no_grad():
        resized = F.interpolate(image[None], size=(48, 64), mode="bilinear", antialias=True)
        logits = F.interpolate(task.model(resized)["out"], size=(37, 53), mode="bilinear")
    assert predicted.shape == (37, 53)
    assert (predicted == logits.argmax(1)[0]).float().mean() >= 0.999

    # and so does the example script (Pillow's resize), writing masks of the image's own size
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(folder / "x.png")
    script = ROOT / "examples" / "onnx_predict.py"
    subprocess.run([sys.executable, str(script), str(result.path), str(folder / "x.png"), "--out", str(tmp_path / "o")],
                   capture_output=True, text=True, check=True)  # fmt: skip
    mask = np.asarray(Image.open(tmp_path / "o" / "x.png"))
    assert mask.shape == (37, 53) and (mask == predicted.numpy()).mean() >= 0.95  # Pillow resizes, not torch

    with pytest.raises(LightsegError, match=r"input_size \[48, 64\] fixes the graph to one size"):
        ExportSettings(input_size=(48, 64), verify_sizes=[(48, 64), (33, 47)])
    with pytest.raises(LightsegError, match=r"^input_size is for semantic models"):
        export_task(_rcnn("mask"), None, ExportSettings(output=str(tmp_path / "r.onnx"), input_size=(64, 64)))


def test_verification_runs_on_the_validation_images_where_they_are(tmp_path: Path, shapes_root: Path) -> None:
    shapes = ShapesDataModule(root=str(shapes_root), num_train=4, num_val=3, num_test=2, image_size=32)
    shapes.prepare_data()
    images = data_images(shapes)
    assert len(images) == 2 and images[0].shape == (3, 32, 32)
    torch.testing.assert_close(images[1], shapes.val_dataset[1]["image"])  # type: ignore[index]
    # a data set that is not on this machine (exports are often made on another): random images, no error
    assert data_images(VOCDataModule(root=str(tmp_path / "none"))) == []
    assert data_images(None) == []
    task = SemanticSegmentationTask(arch="unet", backbone="resnet18", weights_backbone=None, num_classes=4)
    first, second = _samples(task, [(48, 64), (33, 47)], images)
    assert first.shape == (2, 3, 48, 64) and second.shape == (1, 3, 33, 47)
    expected = torch.nn.functional.interpolate(images[1][None], size=(33, 47), mode="bilinear", antialias=True)
    torch.testing.assert_close(second, expected.clamp(0, 1))
    assert float(first.min()) >= 0 and float(first.max()) <= 1
    blank = _samples(_rcnn("mask"), [(48, 64), (33, 47)], images)[-1]
    assert blank.shape == (3, 48, 64) and not blank.any()


def test_cli_export_of_the_best_checkpoint_and_the_example_script(
    tmp_path: Path, shapes_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    base = ["--config", str(ROOT / "configs" / "quickstart.yaml"), *TINY_SHAPES, f"--data.init_args.root={shapes_root}"]
    main(["fit", *base, "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false"])
    capsys.readouterr()
    export = ["export", *base, "--ckpt_path", "best", "--export.verify_sizes", "[[48, 64], [33, 47]]"]
    main(export)
    printed = capsys.readouterr().out
    assert "wrote model.onnx and model.onnx.json" in printed and "33x47: label_agreement 1" in printed
    assert "verified against PyTorch on validation images, resized:" in printed
    meta = json.loads((tmp_path / "model.onnx.json").read_text())
    assert meta["verified_on"] == "validation images, resized"
    assert meta["class_names"] == ["background", "circle", "square", "triangle"]
    assert meta["checkpoint"].endswith(".ckpt") and "val_miou" in meta["checkpoint"]
    assert meta["config"]["model"]["init_args"]["network"]["arch"] == "unet" and meta["input"]["range"] == [0.0, 1.0]
    assert meta["input"]["orientation"].startswith("as shown: turned by the image's EXIF orientation")
    before = (tmp_path / "model.onnx").stat().st_mtime_ns
    with pytest.raises(SystemExit) as stop:
        main(export)
    assert stop.value.code == 2 and "model.onnx exists" in capsys.readouterr().err
    assert (tmp_path / "model.onnx").stat().st_mtime_ns == before

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for k in range(2):  # scenes like the training ones, of another size
        Image.fromarray(generate_scene(rng, size=48).image).save(images / f"{k}.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # a photo stored turned: both readers turn it as a viewer shows it
    Image.fromarray(generate_scene(rng, size=48).image[:32]).save(images / "2.png", exif=exif.tobytes())
    grey = generate_scene(rng, size=48).image.mean(-1).astype(np.uint16) * 257
    Image.fromarray(grey).save(images / "3.png")  # 16-bit grey: both readers scale its full range
    main(["predict", *base, "--ckpt_path", "best", f"--data.predict_dir={images}", "--prediction.output_dir=preds"])
    script = ROOT / "examples" / "onnx_predict.py"
    done = subprocess.run([sys.executable, str(script), "model.onnx", *map(str, sorted(images.iterdir())),
                           "--out", "onnx_masks"], capture_output=True, text=True, check=True)  # fmt: skip
    assert "0.png:" in done.stdout
    # lightseg predict runs the exported model itself, with the same writer
    main(["predict", *base, "--model", "ONNXSegmentationTask", "--model.init_args.path", "model.onnx",
          f"--data.predict_dir={images}", "--prediction.output_dir=onnx_preds"])  # fmt: skip
    assert Image.open(tmp_path / "preds" / "masks" / "2.png").size == (32, 48)  # W, H: turned
    for name in ("0.png", "1.png", "2.png", "3.png"):
        ours = Image.open(tmp_path / "preds" / "masks" / name)
        for folder in ("onnx_masks", "onnx_preds/masks"):
            theirs = Image.open(tmp_path / folder / name)
            assert theirs.mode == ours.mode == "P" and theirs.getpalette() == ours.getpalette()
            assert (np.asarray(theirs) == np.asarray(ours)).mean() >= 0.999
    with pytest.raises(LightsegError, match=r"model.onnx.json is not an ONNX model onnxruntime can load"):
        ONNXSegmentationTask(str(tmp_path / "model.onnx.json"))


def _write_one(writer: SegmentationWriter, mask: torch.Tensor, path: str, num_classes: int, datamodule: Any) -> None:
    trainer = SimpleNamespace(datamodule=datamodule, world_size=1, global_rank=0, is_global_zero=True,
                              strategy=SimpleNamespace(reduce=lambda value, reduce_op: value))  # fmt: skip
    context = TaskContext("semantic", num_classes, tuple(str(i) for i in range(num_classes)))
    module = SimpleNamespace(device="cpu", context=lambda: context, stage_results=lambda stage: None)
    writer.setup(trainer, module, "predict")  # type: ignore[arg-type]
    batch = {"image": torch.rand(1, 3, *mask.shape)}
    prediction = {"mask": mask[None], "path": [path], "size": [tuple(mask.shape)]}
    writer.write_on_batch_end(trainer, module, prediction, None, batch, 0, 0)  # type: ignore[arg-type]
    writer.on_predict_end(trainer, module)  # type: ignore[arg-type]


def test_submission_formats_cityscapes_label_ids_and_the_voc_layout(tmp_path: Path, peer: Path) -> None:
    table = json.loads((peer / "cityscapesScripts" / "labels_table.json").read_text())["labels"]
    label_of_train_id = {row["trainId"]: row["id"] for row in table if 0 <= row["trainId"] < 255}
    train_ids = torch.arange(19, dtype=torch.uint8).repeat_interleave(3).reshape(3, 19)  # every class, as predict gives
    writer = SegmentationWriter(str(tmp_path / "city"), format="cityscapes")
    _write_one(writer, train_ids, "frankfurt/frankfurt_000000_000294_leftImg8bit.png", 19,
               CityscapesDataModule(root=str(tmp_path / "cs")))  # fmt: skip
    written = Image.open(tmp_path / "city" / "labelIds" / "frankfurt" / "frankfurt_000000_000294_leftImg8bit.png")
    assert written.mode == "L"
    expected = np.vectorize(label_of_train_id.get)(train_ids.numpy())
    np.testing.assert_array_equal(np.asarray(written), expected)  # the official table, through our mapping
    with pytest.raises(LightsegError, match=r"format cityscapes writes Cityscapes label ids, which needs"):
        _write_one(SegmentationWriter(str(tmp_path / "x"), format="cityscapes"), train_ids, "a.png", 19, None)

    labels = torch.arange(21, dtype=torch.uint8).repeat(2, 1)
    _write_one(SegmentationWriter(str(tmp_path / "voc"), format="voc"), labels, "sub/2008_000001.jpg", 21, None)
    png = Image.open(tmp_path / "voc" / "results" / "VOC2012" / "Segmentation" / "comp6_test_cls" / "2008_000001.png")
    assert png.mode == "P" and np.array_equal(np.asarray(png), labels.numpy())
    with pytest.raises(LightsegError, match=r"format voc writes the 21 PASCAL VOC classes; this model has 4"):
        _write_one(SegmentationWriter(str(tmp_path / "y"), format="voc"), labels, "a.png", 4, None)


def test_palette_masks_carry_the_data_sets_own_colours(tmp_path: Path) -> None:
    train_ids = torch.arange(19, dtype=torch.uint8).repeat(2, 1)
    _write_one(SegmentationWriter(str(tmp_path / "city")), train_ids, "a.png", 19, CityscapesDataModule(str(tmp_path)))
    png = Image.open(tmp_path / "city" / "masks" / "a.png")
    assert png.mode == "P" and np.array_equal(np.asarray(png), train_ids.numpy())  # indices unchanged
    palette = np.array(png.getpalette()[: 3 * 19]).reshape(19, 3)
    np.testing.assert_array_equal(palette, np.array(CityscapesDataModule.class_colors))  # road purple, sky blue
    _write_one(SegmentationWriter(str(tmp_path / "plain")), train_ids[:, :4], "a.png", 4, None)
    plain = Image.open(tmp_path / "plain" / "masks" / "a.png").getpalette()[:12]
    assert plain == class_palette()[:4].ravel().tolist()  # the generated palette without a data set's colours


def test_an_instance_model_refuses_a_semantic_mask_format_in_one_line(tmp_path: Path) -> None:
    trainer = SimpleNamespace(datamodule=None, world_size=1, global_rank=0, is_global_zero=True)
    context = TaskContext("detection", 3, ("bg", "a", "b"))
    module = SimpleNamespace(device="cpu", context=lambda: context, stage_results=lambda stage: None)
    for format in ("voc", "cityscapes"):
        writer = SegmentationWriter(str(tmp_path / format), format=format)  # type: ignore[arg-type]
        with pytest.raises(LightsegError, match=rf"format {format} writes semantic masks; an instance or keypoint"):
            writer.setup(trainer, module, "predict")  # type: ignore[arg-type]
        assert not list(tmp_path.iterdir())  # refused before any folder is made
