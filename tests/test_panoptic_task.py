"""The panoptic task: the merges, Panoptic FPN and Mask2Former / EoMT trained and scored, COCO panoptic output."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from PIL import Image

from lightseg.callbacks import SegmentationWriter
from lightseg.cli import main
from lightseg.coco_masks import rgb_to_id
from lightseg.datamodules import ShapesPanopticDataModule
from lightseg.errors import LightsegError
from lightseg.metrics.panoptic import pq_compute
from lightseg.models.panoptic import PanopticFPN, PanopticPrediction, merge_instances_and_stuff, merge_queries
from lightseg.tasks import ONNXSegmentationTask, PanopticSegmentationTask
from lightseg.tasks.panoptic_views import ground_truth
from lightseg.visualize import instance_shades, panoptic_overlay

FPN_TINY = [
    "--model=PanopticSegmentationTask",
    "--model.arch=panoptic_fpn_resnet18",
    "--model.weights_backbone=null",
    "--model.min_size=64",
    "--model.max_size=64",
    "--model.anchor_sizes=[8,16,32,64,128]",
    "--model.stuff_area=16",
    "--model.detector_kwargs={rpn_post_nms_top_n_train: 100, rpn_post_nms_top_n_test: 50, box_detections_per_img: 10}",
]


def _shapes(root: Path) -> list[str]:
    return [
        "--data=ShapesPanopticDataModule",
        f"--data.root={root}",
        "--data.num_train=8",
        "--data.num_val=4",
        "--data.num_test=4",
        "--data.image_size=64",
        "--data.batch_size=4",
    ]


def test_the_fpn_merge_takes_instances_by_score_then_stuff_above_its_area() -> None:
    masks = torch.zeros(4, 8, 8, dtype=torch.bool)
    masks[0, :4, :4] = True  # score 0.9: first
    masks[1, 2:6, 2:6] = True  # 0.8: 4 of its 16 pixels taken (0.25 <= 0.5): kept where free
    masks[2, :4, :3] = True  # 0.7: all taken (1.0 > 0.5): left out
    masks[3, 6:, 6:] = True  # 0.3: below the score threshold
    scores, labels = torch.tensor([0.9, 0.8, 0.7, 0.3]), torch.tensor([2, 2, 0, 1])
    stuff = torch.zeros(8, 8, dtype=torch.long)
    stuff[:, 6:] = 1  # stuff class 1 (label 5): 16 pixels, all free
    stuff[6:, :6] = 2  # stuff class 2 (label 4): 12 free pixels, under the area of 13
    result = merge_instances_and_stuff(masks, scores, labels, stuff, [5, 4], 0.5, 0.5, stuff_area=13)
    assert result.labels == [2, 2, 5] and result.isthing == [True, True, False]
    assert result.scores == pytest.approx([0.9, 0.8, 1.0])
    segments = result.segments
    assert (segments[:4, :4] == 1).all() and int((segments == 2).sum()) == 12 and (segments[2:6, 4:6] == 2).all()
    assert int((segments == 3).sum()) == 16 and int((segments == 0).sum()) == 64 - 16 - 12 - 16


def test_the_query_merge_keeps_confident_queries_and_joins_a_stuff_class() -> None:
    # 4 classes + no object; things: 0, 1
    classes = torch.full((5, 5), -10.0)
    classes[0, 0] = classes[1, 3] = classes[2, 3] = 10.0  # a thing, and stuff class 3 twice
    classes[3, 4] = 10.0  # no object
    classes[4, 1] = 0.0  # unsure: below 0.8
    masks = torch.full((5, 6, 6), -10.0)
    masks[0, :3, :3] = 10.0
    masks[1, 3:, :] = 10.0
    masks[2, :3, 3:] = 10.0
    masks[3] = masks[4] = 10.0
    result = merge_queries(classes, masks, {0, 1})
    assert result.labels == [0, 3] and result.isthing == [True, False]
    segments = result.segments
    assert (segments[:3, :3] == 1).all() and (segments[3:] == 2).all() and (segments[:3, 3:] == 2).all()


def test_the_ground_truth_numbers_segments_as_the_target_does() -> None:
    target = {"segments": torch.tensor([[0, 1], [3, 3]]), "labels": torch.tensor([2, 0, 1]),
              "iscrowd": torch.tensor([False, True, True])}  # fmt: skip
    ids, segments = ground_truth(target)
    assert ids is target["segments"]
    assert segments == [{"id": 1, "category_id": 2, "iscrowd": 0}, {"id": 3, "category_id": 1, "iscrowd": 1}]


def test_panoptic_fpn_trains_on_both_losses_and_predicts_at_each_image_size(tmp_path: Path) -> None:
    data = ShapesPanopticDataModule(str(tmp_path / "data"), num_train=4, num_val=2, num_test=2, image_size=64)
    data.setup("fit")
    task = PanopticSegmentationTask(
        "panoptic_fpn_resnet18", data.num_classes, data.thing_classes, weights_backbone=None, min_size=64, max_size=64
    )
    fpn = task.model
    assert isinstance(fpn, PanopticFPN)
    assert fpn.semantic_head.predictor.out_channels == 4  # 3 stuff classes and "a thing"
    assert task.things == [0, 1, 2] and task.stuff == [3, 4, 5]
    target = data.train_dataset[0]["target"]
    detector_target = task.detector_target(target)
    things = [n for n, label in enumerate(target["labels"].tolist(), 1) if label < 3]
    assert len(detector_target["boxes"]) == len(things) == len(detector_target["masks"])
    box, mask = detector_target["boxes"][0], detector_target["masks"][0].bool()
    ys, xs = mask.nonzero(as_tuple=True)
    assert box.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
    stuff = task.stuff_target(target)
    assert set(stuff[target["segments"] == 0].tolist()) == {255}
    assert set(stuff[torch.isin(target["segments"], torch.tensor(things))].tolist()) == {0}
    task.train()
    losses, logits = fpn([data.train_dataset[0]["image"]], [detector_target])
    assert logits[0].shape == (4, 64, 64)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    task.eval()
    images = [torch.rand(3, 50, 70), torch.rand(3, 64, 64)]
    with torch.no_grad():
        predictions = task(images)
    assert [tuple(p.segments.shape) for p in predictions] == [(50, 70), (64, 64)]


def test_options_of_the_other_family_and_missing_things_are_refused() -> None:
    with pytest.raises(LightsegError, match=r"thing_classes: give the class labels that are things"):
        PanopticSegmentationTask("panoptic_fpn_resnet18", 4, None, weights_backbone=None)
    with pytest.raises(LightsegError, match=r"arch_options=\{'num_queries': 5\} does not apply to arch "):
        PanopticSegmentationTask(
            "panoptic_fpn_resnet18", 4, [0], weights_backbone=None, arch_options={"num_queries": 5}
        )
    with pytest.raises(LightsegError, match=r"stuff_area=64 does not apply to arch 'mask2former'"):
        PanopticSegmentationTask("mask2former", 4, [0], weights_backbone=None, stuff_area=64)
    with pytest.raises(LightsegError, match=r"thing_classes \[7\] are not class labels 0\.\.3"):
        PanopticSegmentationTask("panoptic_fpn_resnet18", 4, [7], weights_backbone=None)


def test_fit_test_and_predict_run_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _shapes(tmp_path / "data")
    main(["fit", *FPN_TINY, *data, "--trainer.max_epochs=1", "--trainer.limit_train_batches=1",
          "--trainer.enable_progress_bar=false", "--trainer.default_root_dir=runs"])  # fmt: skip
    run = next(Path("runs").rglob("metrics.csv")).parent
    assert "val_pq" in (run / "metrics.csv").read_text().splitlines()[0].split(",")
    checkpoint = next(run.rglob("*.ckpt"))
    capsys.readouterr()
    main(["test", *FPN_TINY, *data, f"--ckpt_path={checkpoint}", "--trainer.enable_progress_bar=false"])
    table = capsys.readouterr().out
    assert "Test, panoptic quality per class (%)" in table and "triangle  thing" in table and "stripes   stuff" in table
    folder = next(p for p in (tmp_path / "data").iterdir() if p.is_dir())
    main(["predict", *FPN_TINY, *data, f"--ckpt_path={checkpoint}", f"--data.predict_dir={folder / 'images' / 'test'}",
          "--prediction.output_dir=out", "--trainer.enable_progress_bar=false"])  # fmt: skip
    written = json.loads(Path("out/panoptic.json").read_text())
    assert [a["image_id"] for a in written["annotations"]] == [1, 2, 3, 4]
    assert [c["id"] for c in written["categories"]] == [1, 2, 3, 4, 5, 6]
    first = written["annotations"][0]
    ids = rgb_to_id(np.asarray(Image.open(Path("out/panoptic") / first["file_name"])))
    assert set(np.unique(ids).tolist()) - {0} == {s["id"] for s in first["segments_info"]}
    assert sorted(p.name for p in Path("out/overlays").iterdir()) == [f"00000{i}.png" for i in range(1, 5)]
    main(["predict", *FPN_TINY, *data, f"--ckpt_path={checkpoint}", f"--data.predict_dir={folder / 'images' / 'test'}",
          "--prediction.output_dir=bare", "--prediction.overlays=false",
          "--trainer.enable_progress_bar=false"])  # fmt: skip
    assert "predicted 4 images: panoptic.json and panoptic/ in bare" in capsys.readouterr().err
    assert sorted(p.name for p in Path("bare").iterdir()) == ["panoptic", "panoptic.json"]
    assert json.loads(Path("bare/panoptic.json").read_text()) == written


class MistakenTruth(PanopticSegmentationTask):
    """Predicts each image's ground truth with the mistakes PQ counts.

    A segment left void, a wrong class, a segment partly given to its neighbour (IoU on either side of 0.5).
    """

    truth: dict[str, dict[str, Any]]

    def predictions(self, batch: dict[str, Any]) -> list[PanopticPrediction]:
        things = set(self.things)
        out = []
        for path in batch["path"]:
            target = self.truth[Path(path).stem]
            segments, labels = target["segments"].clone().int(), target["labels"].tolist()
            k = int(Path(path).stem)
            if k % 3 == 0:
                segments[segments == 1] = 0
            elif k % 3 == 1:
                labels[-1] = (labels[-1] + 1) % 6
            else:
                rows = (segments == 2).nonzero()[:, 0]
                cut = rows.min() + (rows.max() - rows.min()) * (k % 5) // 4
                segments[(segments == 2) & (torch.arange(segments.shape[0])[:, None] <= cut)] = 1
            present = set(torch.unique(segments).tolist())
            keep = [n for n in range(1, len(labels) + 1) if n in present]
            renumber = torch.zeros(len(labels) + 1, dtype=torch.int32)
            renumber[keep] = torch.arange(1, len(keep) + 1, dtype=torch.int32)
            kept = [labels[n - 1] for n in keep]
            out.append(
                PanopticPrediction(renumber[segments.long()], kept, [c in things for c in kept], [0.9] * len(kept))
            )
        return out


def test_the_tasks_pq_equals_pq_compute_on_the_files_predict_writes(tmp_path: Path) -> None:
    data = ShapesPanopticDataModule(str(tmp_path / "data"), num_train=1, num_val=1, num_test=12, image_size=64,
                                    batch_size=4, predict_dir=str(tmp_path / "predict"))  # fmt: skip
    data.setup("test")
    (tmp_path / "predict").symlink_to(data.data_dir / "images" / "test")
    task = MistakenTruth("panoptic_fpn_resnet18", 6, [0, 1, 2], weights_backbone=None, min_size=64, max_size=64)
    task.truth = {Path(item["path"]).stem: item["target"] for item in data.test_dataset}
    trainer = Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                      callbacks=[SegmentationWriter(str(tmp_path / "out"))])  # fmt: skip
    trainer.test(task, datamodule=data)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert 0.3 < logged["test_pq"] < 0.95  # every kind of mistake, not a perfect or an empty score
    trainer.predict(task, datamodule=data)
    files = pq_compute(data.data_dir / "annotations" / "panoptic_test.json", tmp_path / "out" / "panoptic.json",
                       data.data_dir / "annotations" / "panoptic_test", tmp_path / "out" / "panoptic")  # fmt: skip
    for name, suffix in (("All", ""), ("Things", "_things"), ("Stuff", "_stuff")):
        for score in ("pq", "sq", "rq"):
            assert logged[f"test_{score}{suffix}"] == pytest.approx(files[name][score], abs=1e-6)
    names = ["circle", "square", "triangle", "smooth", "stripes", "checks"]
    for category, name in enumerate(names, start=1):
        if f"test_pq_{name}" in logged:
            assert logged[f"test_pq_{name}"] == pytest.approx(files["per_class"][category]["pq"], abs=1e-6)
    # the semantic view: each pixel's class from the written maps, a pixel left void a miss of its true class
    confusion = np.zeros((6, 7), np.int64)
    truth = json.loads((data.data_dir / "annotations" / "panoptic_test.json").read_text())["annotations"]
    predicted = {a["file_name"]: a for a in json.loads((tmp_path / "out" / "panoptic.json").read_text())["annotations"]}
    for annotation in truth:
        classes = []
        for folder, entry in ((data.data_dir / "annotations" / "panoptic_test", annotation),
                              (tmp_path / "out" / "panoptic", predicted[annotation["file_name"]])):  # fmt: skip
            ids = rgb_to_id(np.asarray(Image.open(folder / entry["file_name"])))
            table = {0: 6, **{s["id"]: s["category_id"] - 1 for s in entry["segments_info"]}}
            classes.append(np.vectorize(table.__getitem__)(ids))
        gt, pred = classes
        np.add.at(confusion, (gt[gt < 6], pred[gt < 6]), 1)
    iou = [confusion[c, c] / (confusion[c].sum() + confusion[:, c].sum() - confusion[c, c]) for c in range(6)]
    assert logged["test_miou"] == pytest.approx(np.mean(iou), abs=1e-6)
    assert logged["test_pixel_acc"] == pytest.approx(np.trace(confusion[:, :6]) / confusion.sum(), abs=1e-6)
    assert 0.3 < logged["test_miou"] < 0.99
    # the instance view: the predicted things as instances, scored by COCO's evaluation against the true things
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from lightseg.coco_masks import encode_masks

    def instances(folder: Path, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        found = []
        for k, entry in enumerate(entries, start=1):
            ids = rgb_to_id(np.asarray(Image.open(folder / entry["file_name"])))
            for segment in entry["segments_info"]:
                if segment["category_id"] <= 3 and (ids == segment["id"]).any():
                    mask = torch.from_numpy(ids == segment["id"])
                    height, width, counts = encode_masks(mask[None])[0].decode().split(" ", 2)
                    rle = {"size": [int(height), int(width)], "counts": counts}
                    found.append({"image_id": k, "category_id": segment["category_id"], "segmentation": rle,
                                  "area": int(mask.sum()), "iscrowd": 0, "id": len(found) + 1,
                                  "bbox": [0, 0, 1, 1], "score": segment.get("score", 1.0)})  # fmt: skip
        return found

    ordered = [predicted[a["file_name"]] for a in truth]
    coco = COCO()
    coco.dataset = {"images": [{"id": k, "height": 64, "width": 64} for k in range(1, len(truth) + 1)],
                    "annotations": instances(data.data_dir / "annotations" / "panoptic_test", truth),
                    "categories": [{"id": c} for c in (1, 2, 3)]}  # fmt: skip
    coco.createIndex()
    evaluation = COCOeval(coco, coco.loadRes(instances(tmp_path / "out" / "panoptic", ordered)), "segm")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert logged["test_segm_map"] == pytest.approx(evaluation.stats[0], abs=1e-6)
    assert logged["test_segm_map_50"] == pytest.approx(evaluation.stats[1], abs=1e-6)
    assert 0.2 < logged["test_segm_map"] < 0.99


@pytest.mark.parametrize("arch", ["mask2former", "eomt"])
def test_query_models_train_with_segment_targets(arch: str, tiny_transformers: Callable[[str], Path]) -> None:
    torch.manual_seed(0)
    task = PanopticSegmentationTask(
        arch, 6, [0, 1, 2], backbone=str(tiny_transformers(arch)), weights_backbone=None, score_threshold=0.0
    )
    data = ShapesPanopticDataModule(num_train=2, num_val=1, num_test=1, image_size=64, batch_size=2)
    data.setup("fit")
    batch = data.collate([data.train_dataset[0], data.train_dataset[1]])
    task.train()
    loss = task.step(batch, "train")
    assert loss.ndim == 0 and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    grads = [p.grad for p in task.parameters() if p.requires_grad and p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    task.eval()
    images = [torch.rand(3, 64, 64), torch.rand(3, 48, 64)]
    with torch.no_grad():
        predictions, alone = task(images), task(images[1:])
    assert [tuple(p.segments.shape) for p in predictions] == [(64, 64), (48, 64)]
    assert predictions[1].labels and torch.equal(predictions[1].segments, alone[0].segments)  # batching changes nothing


def test_a_query_model_fits_and_is_scored_in_every_view(
    tmp_path: Path, tiny_transformers: Callable[[str], Path]
) -> None:
    data = ShapesPanopticDataModule(str(tmp_path / "data"), num_train=2, num_val=2, num_test=1, image_size=64,
                                    batch_size=2)  # fmt: skip
    task = PanopticSegmentationTask("mask2former", 6, [0, 1, 2], backbone=str(tiny_transformers("mask2former")),
                                    weights_backbone=None, score_threshold=0.0)  # fmt: skip
    trainer = Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False)  # fmt: skip
    trainer.fit(task, datamodule=data)
    logged = trainer.callback_metrics
    for key in ("train_loss", "val_pq", "val_pq_things", "val_pq_stuff", "val_miou", "val_segm_map"):
        assert key in logged and torch.isfinite(logged[key]), key
    results = task.stage_results("val")
    assert results is not None and results["pq_per_class"].shape == (6,) and results["iou_per_class"].shape == (6,)


def test_the_overlay_shades_instances_of_one_class_and_outlines_each(tmp_path: Path) -> None:
    colours = np.zeros((256, 3), np.uint8)
    colours[0], colours[1] = (200, 40, 40), (40, 160, 40)
    shades = instance_shades([0, 0, 0, 1], [True, True, True, False], colours)
    assert tuple(shades[0]) == (200, 40, 40) and tuple(shades[3]) == (40, 160, 40)
    assert shades[1].astype(int).sum() > shades[0].astype(int).sum() > shades[2].astype(int).sum()
    segments = np.zeros((32, 32), np.int64)
    segments[:, :] = 3
    segments[4:14, 4:14], segments[4:14, 14:24] = 1, 2  # two touching instances of class 0
    image = np.full((32, 32, 3), 128, np.uint8)
    picture = panoptic_overlay(image, segments, [0, 0, 1], [True, True, False], ["circle", "grass"], 0.5, colours)
    factor = 256 // 32
    assert picture.shape[1] == 32 * factor and picture.shape[0] > 32 * factor  # a legend below
    inside_first, inside_second = picture[9 * factor, 8 * factor], picture[9 * factor, 19 * factor]
    assert not np.array_equal(inside_first, inside_second)
    # the border between the two instances is opaque in each one's own shade
    assert tuple(picture[9 * factor, 14 * factor - 1]) == tuple(shades[0])
    assert tuple(picture[9 * factor, 14 * factor]) == tuple(shades[1])


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_panoptic_fpn_exports_verified_and_the_onnx_file_predicts_as_pytorch(fmt: str, tmp_path: Path) -> None:
    from lightseg.export import ExportSettings, export_task

    torch.manual_seed(0)
    data = ShapesPanopticDataModule(str(tmp_path / "data"), num_train=1, num_val=2, num_test=1, image_size=64,
                                    predict_dir=str(tmp_path / "data"))  # fmt: skip
    data.setup("validate")
    task = PanopticSegmentationTask("panoptic_fpn_resnet18", 6, [0, 1, 2], weights_backbone=None, min_size=64,
                                    max_size=96, stuff_area=16, score_threshold=0.2)  # fmt: skip
    suffix = {"onnx": "onnx", "torchscript": "pt"}[fmt]
    result = export_task(task, data, ExportSettings(format=fmt, output=str(tmp_path / f"m.{suffix}")))
    assert result.verification and all(f["ok"] and f["semantic_agreement"] >= 0.999 for f in result.verification)
    info = json.loads(result.metadata_path.read_text())
    assert info["outputs"] == ["boxes", "labels", "scores", "masks", "semantic"]
    assert info["thing_category_ids"] == [1, 2, 3] and info["stuff_category_ids"] == [4, 5, 6]
    assert info["merge"] == {"score_threshold": 0.2, "overlap_threshold": 0.5, "stuff_area": 16}
    if fmt != "onnx":
        return
    images = [data.val_dataset[i]["image"] for i in range(2)]
    onnx_task = ONNXSegmentationTask(str(result.path))
    assert onnx_task.context().kind == "panoptic"
    with torch.no_grad():
        ours = task.eval()(images)
    theirs = [onnx_task._panoptic(image) for image in images]
    for a, b in zip(ours, theirs, strict=True):
        assert a.labels and (a.segments == b.segments).float().mean() >= 0.99
        assert sorted(a.labels) == sorted(b.labels)


def test_query_panoptic_models_export_their_queries_and_predict_as_pytorch(
    tmp_path: Path, tiny_transformers: Callable[[str], Path]
) -> None:
    from lightseg.export import ExportSettings, export_task

    torch.manual_seed(0)
    task = PanopticSegmentationTask("eomt", 6, [0, 1, 2], backbone=str(tiny_transformers("eomt")),
                                    weights_backbone=None, score_threshold=0.0)  # fmt: skip
    classifier = [m for m in task.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 7][-1]
    with torch.no_grad():
        classifier.bias[-1] = -10.0  # an untrained model answers "no object" everywhere: make it predict segments
    settings = ExportSettings(output=str(tmp_path / "m.onnx"), verify_sizes=[(48, 80), (80, 64)])
    result = export_task(task, None, settings)
    assert result.verification and all(f["ok"] and f["mask_agreement"] >= 0.999 for f in result.verification)
    info = json.loads(result.metadata_path.read_text())
    assert info["outputs"] == ["class_logits", "mask_logits"] and info["thing_category_ids"] == [0, 1, 2]
    assert info["merge"] == {"score_threshold": 0.0, "overlap_threshold": 0.8}
    onnx_task = ONNXSegmentationTask(str(result.path))
    image = torch.rand(3, 48, 80)
    with torch.no_grad():
        ours = task.eval()([image])[0]
    theirs = onnx_task._panoptic(image)
    assert ours.labels and ours.labels == theirs.labels
    assert (ours.segments == theirs.segments).float().mean() >= 0.99
    with pytest.raises(LightsegError, match=r"export it for one input size, e.g. input_size \[512,512\]"):
        mask2former = PanopticSegmentationTask("mask2former", 6, [0, 1, 2], weights_backbone=None,
                                               backbone=str(tiny_transformers("mask2former")))  # fmt: skip
        export_task(mask2former, None, ExportSettings(output=str(tmp_path / "m2f.onnx")))


def test_panoptic_fpn_compiles_its_backbone_and_runs_in_channels_last(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[torch.nn.Module] = []
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    task = PanopticSegmentationTask("panoptic_fpn_resnet18", 4, [0], weights_backbone=None, min_size=64,
                                    max_size=64, channels_last=True, compile=True)  # fmt: skip
    task.configure_model()
    assert compiled == [task.model.backbone]
    conv = next(m for m in task.model.semantic_head.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    masks = torch.zeros(1, 50, 70, dtype=torch.uint8)
    masks[0, 5:30, 10:40] = 1
    target = {"boxes": torch.tensor([[10.0, 5.0, 40.0, 30.0]]), "labels": torch.tensor([1]), "masks": masks}
    task.train()
    losses, logits = task.model([torch.rand(3, 50, 70)], [target])  # training runs in channels-last too
    sum(losses.values()).backward()
    assert logits[0].shape == (4, 50, 70) and all(torch.isfinite(v) for v in losses.values())
    task.eval()
    with torch.no_grad():
        (prediction,) = task([torch.rand(3, 50, 70)])
    assert prediction.segments.shape == (50, 70)
