from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_api

from lightseg.cli import main
from lightseg.datamodules import (
    CityscapesInstanceDataModule,
    COCOKeypointDataModule,
    ShapesInstanceDataModule,
    ShapesKeypointDataModule,
)
from lightseg.errors import LightsegError
from lightseg.tasks import InstanceSegmentationTask, KeypointDetectionTask

from conftest import ROOT
from layouts import write_cityscapes

MASKRCNN = str(ROOT / "configs" / "quickstart_maskrcnn.yaml")
KEYPOINTS = str(ROOT / "configs" / "quickstart_keypoints.yaml")
TINY = [
    "--data.init_args.num_train=8",
    "--data.init_args.num_val=4",
    "--data.init_args.num_test=4",
    "--data.init_args.image_size=64",
    "--data.init_args.batch_size=4",
    "--model.init_args.min_size=64",
    "--model.init_args.max_size=64",
    "--trainer.max_epochs=1",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def metrics_rows(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(next(run.rglob("metrics.csv")).open()))


def test_shapes_coco_files_hold_polygons_rles_and_ordered_triangle_keypoints(tmp_path: Path) -> None:
    instances = ShapesInstanceDataModule(root=str(tmp_path), num_train=30, num_val=2, num_test=2, image_size=64)
    instances.prepare_data()
    content = json.loads((instances.data_dir / "annotations" / "instances_train.json").read_text())
    kinds = {type(a["segmentation"]).__name__ for a in content["annotations"]}
    assert kinds == {"list", "dict"}  # whole objects as polygons, occluded ones as RLE
    for annotation in content["annotations"][:20]:
        segmentation = annotation["segmentation"]
        rle = (
            mask_api.merge(mask_api.frPyObjects(segmentation, 64, 64))
            if isinstance(segmentation, list)
            else {**segmentation, "counts": segmentation["counts"].encode()}
        )
        area = float(mask_api.area(rle))
        assert abs(area - annotation["area"]) <= 0.2 * annotation["area"] + 8  # polygon vs its rasterisation
    keypoints = ShapesKeypointDataModule(root=str(tmp_path), num_train=30, num_val=2, num_test=2, image_size=64)
    keypoints.prepare_data()
    content = json.loads((keypoints.data_dir / "annotations" / "person_keypoints_train.json").read_text())
    assert content["categories"][0]["keypoints"] == ["apex", "left_base", "right_base"]
    assert {a["category_id"] for a in content["annotations"]} == {3}
    for a in content["annotations"]:
        (ax, ay, av), (lx, ly, lv), (rx, ry, rv) = np.reshape(a["keypoints"], (3, 3))
        if av and lv and rv:  # the same orientation everywhere: apex -> left -> right turns the same way
            cross = (lx - ax) * (ry - ay) - (ly - ay) * (rx - ax)
            assert cross > 0
        assert a["num_keypoints"] == sum(v > 0 for v in (av, lv, rv))
    assert keypoints.reference.flip_pairs() == [(1, 2)]


def test_keypoint_flip_pairs_are_the_data_modules_and_checked(tmp_path: Path) -> None:
    shapes = ShapesKeypointDataModule(root=str(tmp_path), num_train=4, num_val=2, num_test=2, image_size=32)
    shapes.prepare_data()
    files = {f"{split}_images": f"images/{split}" for split in ("train", "val")}
    files |= {f"{split}_annotations": f"annotations/person_keypoints_{split}.json" for split in ("train", "val")}

    def train_flip_pairs(**kwargs: object) -> list[tuple[int, int]]:
        data = COCOKeypointDataModule(str(shapes.data_dir), **files, num_workers=0, **kwargs)  # type: ignore[arg-type]
        data.setup("fit")
        return data.train_dataset.transform.flip_pairs  # type: ignore[union-attr]

    assert train_flip_pairs() == [(1, 2)]  # left_base <-> right_base, from the names
    assert train_flip_pairs(flip_pairs=[[1, 2], [0, 0]]) == [(1, 2), (0, 0)]
    with pytest.raises(LightsegError, match=r"flip_pairs \[\(1, 3\)\] name keypoints outside 0\.\.2"):
        train_flip_pairs(flip_pairs=[(1, 3)])


def test_cityscapes_instances_from_instance_ids(tmp_path: Path) -> None:
    root = write_cityscapes(
        tmp_path / "cs", {"train": ["aachen_000000_000019"], "val": ["bonn_000000_000019"]}, kind="instanceIds"
    )
    png = root / "gtFine" / "val" / "bonn" / "bonn_000000_000019_gtFine_instanceIds.png"
    ids = np.asarray(Image.open(png)).astype(np.int32)
    ids[0:2, 1:4] = 24  # a crowd of people: no instance id
    ids[9:11, 1:3] = 33005  # a bicycle
    Image.fromarray(ids.astype(np.uint16)).save(png)
    data = CityscapesInstanceDataModule(str(root), num_workers=0)
    assert data.num_classes == 9 and data.class_names[3] == "car"
    data.setup("fit")
    truth = data.ground_truth("val")
    assert sorted((a["category_id"], a["iscrowd"]) for a in truth.data["annotations"]) == [(24, 1), (26, 0), (33, 0)]
    target = data.val_dataset[0]["target"]
    assert sorted(target["labels"].tolist()) == [3, 8]  # car and bicycle; the crowd is left to the evaluation
    bicycle = target["masks"][target["labels"].tolist().index(8)]
    assert int(bicycle.sum()) == 4 and bool(bicycle[9:11, 1:3].all())
    assert len(data.train_dataset) == 1


def test_peer_cityscapes_frame_without_things_is_kept_for_evaluation(peer: Path) -> None:
    data = CityscapesInstanceDataModule(str(peer / "datumaro" / "cityscapes_dataset" / "dataset"), num_workers=0)
    data.setup("validate")  # values 1 and 3 are no thing classes: no instances, the frame kept for evaluation
    assert len(data.val_dataset) == 1 and data.ground_truth("val").data["annotations"] == []


def test_maskrcnn_fit_test_predict_round_trip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["--config", MASKRCNN, *TINY, f"--data.init_args.root={tmp_path / 'data'}"]
    main(["fit", *args])
    rows = metrics_rows(tmp_path / "runs" / "quickstart_maskrcnn")
    val = [r for r in rows if r.get("val_segm_map")]
    assert len(val) == 1
    for key in ("val_segm_map", "val_segm_map_50", "val_bbox_map", "val_bbox_map_75"):
        assert 0.0 <= float(val[0][key]) <= 1.0
    train = [r for r in rows if r.get("train_loss_mask_epoch")]
    assert len(train) == 1 and float(train[0]["train_loss_epoch"]) > float(train[0]["train_loss_mask_epoch"]) > 0

    capsys.readouterr()
    main(["test", *args, "--ckpt_path", "last", "--trainer.logger=false", "--model.init_args.boundary_ap=true"])
    out = capsys.readouterr().out
    assert "COCO AP per class" in out and "triangle" in out and "segm" in out
    header = next(line for line in out.splitlines() if line.startswith("class"))
    assert header.split() == ["class", "bbox", "segm", "boundary"]  # Boundary AP beside mask AP
    assert "test_boundary_map" in out and "test_boundary_ap_triangle" in out

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(images / "a.png")
    data = ShapesInstanceDataModule(root=str(tmp_path / "data"), num_train=8, num_val=4, num_test=4, image_size=64)
    data.prepare_data()
    for name in ("000001.jpg", "000002.jpg"):
        (images / name).write_bytes((data.data_dir / "images" / "test" / name).read_bytes())
    main(
        [
            "predict",
            *args,
            "--ckpt_path",
            "last",
            f"--data.init_args.predict_dir={images}",
            f"--prediction.output_dir={tmp_path / 'out'}",
            "--prediction.score_threshold=0.0",
            "--model.init_args.detector_kwargs.box_score_thresh=0.0",
        ]
    )
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results, "score thresholds 0: every image has detections"
    assert {r["file_name"] for r in results} <= {"a.png", "000001.jpg", "000002.jpg"}
    for r in results:
        assert r["category_id"] in (1, 2, 3) and 0 <= r["score"] <= 1 and len(r["bbox"]) == 4
        size = [48, 80] if r["file_name"] == "a.png" else [64, 64]
        assert r["segmentation"]["size"] == size
        decoded = mask_api.decode({**r["segmentation"], "counts": r["segmentation"]["counts"].encode()})
        assert decoded.shape == tuple(size)
    assert {r["image_id"] for r in results if r["file_name"] == "a.png"} <= {3}  # position in the sorted folder
    overlay = Image.open(tmp_path / "out" / "overlays" / "a.png")
    assert overlay.size == (80 * 6, 48 * 6)  # enlarged to a shorter side >= 256 pixels


def test_keypoint_fit_and_predict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # bf16 on CPU is ~5x slower than fp32 for Keypoint R-CNN here: one step and two images check it
    root = f"--data.init_args.root={tmp_path / 'd'}"
    args = ["--config", KEYPOINTS, *TINY, "--data.init_args.num_train=4", "--data.init_args.num_val=2", root]
    main(["fit", *args, "--trainer.precision=bf16-mixed"])  # mixed precision: losses and evaluation in fp32
    rows = metrics_rows(tmp_path / "runs" / "quickstart_keypoints")
    val = [r for r in rows if r.get("val_keypoints_map")]
    assert len(val) == 1 and 0.0 <= float(val[0]["val_keypoints_map"]) <= 1.0
    losses = [float(r["train_loss_epoch"]) for r in rows if r.get("train_loss_epoch")]
    assert len(losses) == 1 and 0 < losses[0] < 100  # finite
    assert any(float(r.get("train_loss_keypoint_epoch") or 0) > 0 for r in rows)
    data = ShapesKeypointDataModule(root=str(tmp_path / "d"), num_train=4, num_val=2, num_test=4, image_size=64)
    main(
        [
            "predict",
            *args,
            "--ckpt_path",
            "last",
            f"--data.init_args.predict_dir={data.data_dir / 'images' / 'val'}",
            f"--prediction.output_dir={tmp_path / 'out'}",
            "--model.init_args.detector_kwargs.box_score_thresh=0.0",
        ]
    )
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results and all(len(r["keypoints"]) == 9 and r["category_id"] == 3 for r in results)
    assert "segmentation" not in results[0]
    assert len(list((tmp_path / "out" / "overlays").iterdir())) == 2
    main(["predict", *args, "--ckpt_path", "last", f"--data.init_args.predict_dir={data.data_dir / 'images' / 'val'}",
          f"--prediction.output_dir={tmp_path / 'results_only'}", "--prediction.overlays=false",
          "--model.init_args.detector_kwargs.box_score_thresh=0.0"])  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "results_only").iterdir()) == ["results.json"]
    assert json.loads((tmp_path / "results_only" / "results.json").read_text()) == results


def test_detection_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(LightsegError, match=r"oks_sigmas: COCO's constants are for its 17"):
        KeypointDetectionTask(arch="keypointrcnn_resnet18_fpn", num_keypoints=3, weights_backbone=None)
    with pytest.raises(LightsegError, match=r"no COCO weights for maskrcnn_resnet18_fpn"):
        InstanceSegmentationTask(arch="maskrcnn_resnet18_fpn", weights="coco", num_classes=4)
    with pytest.raises(LightsegError, match=r"anchor_sizes: FPN on a ResNet has 5 levels"):
        InstanceSegmentationTask(
            arch="maskrcnn_resnet18_fpn", weights_backbone=None, anchor_sizes=(16, 32), num_classes=4
        )
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                "--config",
                KEYPOINTS,
                "--model.init_args.num_keypoints=4",
                "--model.init_args.oks_sigmas=[0.1,0.1,0.1,0.1]",
                f"--data.init_args.root={tmp_path}",
                *TINY,
            ]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the data has 3 keypoints (apex, left_base, right_base) but the model num_keypoints=4" in err


def test_mobilenet_fpn_has_three_levels_and_runs() -> None:
    task = InstanceSegmentationTask(
        arch="maskrcnn_mobilenet_v3_large_fpn", weights_backbone=None, num_classes=3, min_size=64, max_size=64
    )
    task.eval()
    with torch.no_grad():
        out = task([torch.rand(3, 64, 80)])
    assert set(out[0]) == {"boxes", "labels", "scores", "masks"}
    assert out[0]["masks"].shape[-2:] == (64, 80)
    assert len(task.model.rpn.anchor_generator.sizes) == 3


@pytest.mark.parametrize("arch", ["maskrcnn_resnet50_fpn", "keypointrcnn_resnet50_fpn"])
def test_resnet50_fpn_from_scratch_is_torchvisions_model_and_takes_frozen_norm(arch: str) -> None:
    from torchvision.models import detection as tvd
    from torchvision.ops.misc import FrozenBatchNorm2d

    from lightseg.models.detection import build_rcnn

    extra = {"num_keypoints": 3} if arch.startswith("keypoint") else {}
    reference = getattr(tvd, arch)(weights=None, weights_backbone=None, num_classes=5, **extra)
    ours = build_rcnn(arch, 5, weights_backbone=None, num_keypoints=3)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    assert [type(m) for m in ours.modules()] == [type(m) for m in reference.modules()]
    assert [p.requires_grad for p in ours.parameters()] == [p.requires_grad for p in reference.parameters()]
    # the pretrained recipe's compute (frozen norm, stages 2-4 training) without downloading weights
    frozen = build_rcnn(arch, 5, weights_backbone=None, trainable_norm=False, trainable_backbone_layers=3)
    body = frozen.backbone.body
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in body.modules()) == 53
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in body.modules())
    assert not body.conv1.weight.requires_grad and not body.layer1[0].conv1.weight.requires_grad
    assert body.layer2[0].conv1.weight.requires_grad


def test_torchvision_built_archs_refuse_a_norm_they_do_not_have() -> None:
    with pytest.raises(LightsegError, match=r"maskrcnn_resnet50_fpn with COCO weights keeps torchvision's frozen"):
        InstanceSegmentationTask(arch="maskrcnn_resnet50_fpn", weights="coco", trainable_norm=True, num_classes=4)
    with pytest.raises(LightsegError, match=r"maskrcnn_resnet50_fpn_v2 keeps torchvision's trainable BatchNorm"):
        InstanceSegmentationTask(
            arch="maskrcnn_resnet50_fpn_v2", weights_backbone=None, trainable_norm=False, num_classes=4
        )


def test_rcnn_in_channels_last_detects_as_the_default_and_compiles_its_backbone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    options = {"arch": "maskrcnn_resnet18_fpn", "weights_backbone": None, "num_classes": 3, "min_size": 64,
               "max_size": 96, "detector_kwargs": {"box_score_thresh": 0.0}}  # fmt: skip
    torch.manual_seed(0)
    plain = InstanceSegmentationTask(**options)  # type: ignore[arg-type]
    fast = InstanceSegmentationTask(**options, channels_last=True, compile="reduce-overhead")  # type: ignore[arg-type]
    fast.load_state_dict(plain.state_dict())
    compiled: list[tuple[torch.nn.Module, object]] = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append((self, k.get("mode"))))
    fast.configure_model()
    # the backbone and FPN only: the heads' proposals and NMS change shape with the data
    assert compiled == [(fast.model.backbone, "reduce-overhead")]
    assert fast.model.backbone.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert fast.model.roi_heads.mask_head[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    plain.eval(), fast.eval()
    generator = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 64, 80, generator=generator), torch.rand(3, 72, 56, generator=generator)]
    with torch.no_grad():
        expected, got = plain(images), fast(images)
    for a, b in zip(expected, got, strict=True):
        assert len(a["boxes"]) > 10
        torch.testing.assert_close(b["labels"], a["labels"])
        for key in ("boxes", "scores", "masks"):
            torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-4)
    assert list(fast.state_dict()) == list(plain.state_dict())


@pytest.mark.slow
def test_rcnn_with_a_compiled_backbone_detects_as_the_default() -> None:
    # torch.compile for real (inductor); two image sizes: the second recompiles with dynamic shapes
    options = {"arch": "maskrcnn_resnet18_fpn", "weights_backbone": None, "num_classes": 3, "min_size": 64,
               "max_size": 96, "detector_kwargs": {"box_score_thresh": 0.0}}  # fmt: skip
    torch.manual_seed(0)
    plain = InstanceSegmentationTask(**options)  # type: ignore[arg-type]
    fast = InstanceSegmentationTask(**options, channels_last=True, compile=True)  # type: ignore[arg-type]
    fast.load_state_dict(plain.state_dict())
    fast.configure_model()
    plain.eval(), fast.eval()
    generator = torch.Generator().manual_seed(1)
    for size in ((64, 80), (72, 56)):
        images = [torch.rand(3, *size, generator=generator)]
        with torch.no_grad():
            (expected,), (got,) = plain(images), fast(images)
        assert len(expected["boxes"]) > 10
        torch.testing.assert_close(got["labels"], expected["labels"])
        for key in ("boxes", "scores", "masks"):
            torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-4)


def test_keypoint_rcnn_trains_and_detects_in_channels_last_as_by_default() -> None:
    options = {"arch": "keypointrcnn_resnet18_fpn", "weights_backbone": None, "num_classes": 2, "num_keypoints": 3,
               "oks_sigmas": [0.05] * 3, "keypoint_head": (2, 64), "min_size": 64, "max_size": 96,
               "detector_kwargs": {"box_score_thresh": 0.0}}  # fmt: skip
    torch.manual_seed(0)
    plain = KeypointDetectionTask(**options)  # type: ignore[arg-type]
    fast = KeypointDetectionTask(**options, channels_last=True)  # type: ignore[arg-type]
    fast.load_state_dict(plain.state_dict())
    fast.configure_model()
    fast.configure_model()  # one hook, however often Lightning calls it
    assert len(fast.model.roi_heads.keypoint_predictor._forward_hooks) == 1
    images = [torch.rand(3, 64, 80, generator=torch.Generator().manual_seed(1))]
    keypoints = torch.tensor([[[20.0, 10.0, 2.0], [10.0, 40.0, 2.0], [35.0, 40.0, 2.0]]])
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 38.0, 42.0]]), "labels": torch.tensor([1]), "keypoints": keypoints}]
    losses = {}
    for name, task in (("plain", plain), ("fast", fast)):
        task.train()
        torch.manual_seed(2)  # the same proposal sampling
        losses[name] = task.model(images, targets)  # the keypoint loss views the heatmaps: contiguous ones
    assert set(losses["fast"]) >= {"loss_keypoint", "loss_classifier"}
    for key, value in losses["plain"].items():  # float rounding, through training-mode BatchNorm
        torch.testing.assert_close(losses["fast"][key], value, rtol=1e-3, atol=1e-4)
    plain.eval(), fast.eval()
    with torch.no_grad():
        (expected,), (got,) = plain(images), fast(images)
    assert len(expected["boxes"]) > 5
    for key in ("boxes", "scores", "keypoints"):
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-4)


def test_keypoint_boxes_enlarged_for_the_pooling_the_loss_and_the_inference(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.models.detection import roi_heads

    from lightseg.models.detection import ScaledKeypointBoxes, build_rcnn

    torch.manual_seed(0)
    model = build_rcnn("keypointrcnn_resnet18_fpn", 2, None, None, min_size=64, max_size=96, num_keypoints=3,
                       keypoint_head=(1, 16), keypoint_box_scale=1.5, box_score_thresh=0.0)  # fmt: skip
    heads = model.roi_heads
    assert isinstance(heads.keypoint_roi_pool, ScaledKeypointBoxes)
    assert "roi_heads.keypoint_roi_pool" not in str(sorted(model.state_dict()))  # no weights: checkpoints as before
    seen: dict[str, list[torch.Tensor]] = {}
    pool = heads.keypoint_roi_pool.pool
    real_pool = pool.forward

    def pooled(features: object, boxes: list[torch.Tensor], shapes: object) -> torch.Tensor:
        seen["pooled"] = [b.clone() for b in boxes]
        return real_pool(features, boxes, shapes)

    monkeypatch.setattr(pool, "forward", pooled)
    real_loss, real_inference = roi_heads.keypointrcnn_loss, roi_heads.keypointrcnn_inference

    def loss(logits: torch.Tensor, proposals: list[torch.Tensor], *rest: object) -> torch.Tensor:
        seen["loss"] = [p.clone() for p in proposals]
        return real_loss(logits, proposals, *rest)

    def inference(logits: torch.Tensor, boxes: list[torch.Tensor]) -> object:
        seen["inference"] = [b.clone() for b in boxes]
        return real_inference(logits, boxes)

    # torchvision's RoIHeads looks both up in its module when it runs: what lightseg relies on is pinned here
    monkeypatch.setattr(roi_heads, "keypointrcnn_loss", loss)
    monkeypatch.setattr(roi_heads, "keypointrcnn_inference", inference)
    images = [torch.rand(3, 64, 80, generator=torch.Generator().manual_seed(1))]
    keypoints = torch.tensor([[[20.0, 10.0, 2.0], [10.0, 40.0, 2.0], [35.0, 40.0, 2.0]]])
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 38.0, 42.0]]), "labels": torch.tensor([1]), "keypoints": keypoints}]
    model.train()
    assert torch.isfinite(model(images, targets)["loss_keypoint"])
    assert len(seen["loss"][0]) > 0
    torch.testing.assert_close(seen["loss"], seen["pooled"])  # the loss maps keypoints into the pooled boxes
    seen.clear()
    model.eval()
    with torch.no_grad():
        (result,) = model(images)
    boxes = result["boxes"]
    assert len(boxes) > 5
    torch.testing.assert_close(seen["inference"], seen["pooled"])  # heatmaps back into the pooled boxes
    enlarged = seen["pooled"][0]
    # the returned boxes stay as predicted; the keypoint branch saw them 1.5 times as large about their centres
    torch.testing.assert_close((enlarged[:, :2] + enlarged[:, 2:]) / 2, (boxes[:, :2] + boxes[:, 2:]) / 2)
    torch.testing.assert_close(enlarged[:, 2:] - enlarged[:, :2], 1.5 * (boxes[:, 2:] - boxes[:, :2]))
    # so a keypoint may come out beyond its (unchanged) box, up to a quarter of its size on each side
    inside = (result["keypoints"][..., :2] >= boxes[:, None, :2] - 1e-3) & (
        result["keypoints"][..., :2] <= boxes[:, None, 2:] + 1e-3
    )
    assert not inside.all()
    with pytest.raises(LightsegError, match=r"keypoint_box_scale must be >= 1 .* got 0.8"):
        build_rcnn("keypointrcnn_resnet18_fpn", 2, None, None, num_keypoints=3, keypoint_box_scale=0.8)
    with pytest.raises(LightsegError, match=r"keypoint_box_scale does not apply to maskrcnn_resnet18_fpn"):
        build_rcnn("maskrcnn_resnet18_fpn", 2, None, None, keypoint_box_scale=1.25)
