"""Boundary IoU and Cityscapes' official scores, checked against independent references."""

from __future__ import annotations

import csv
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightseg.cli import main
from lightseg.datamodules.cityscapes import (
    CITYSCAPES_AVERAGE_INSTANCE_SIZE,
    TRAIN_LABELS,
    CityscapesDataModule,
    cityscapes_protocol,
)
from lightseg.metrics.segmentation import EvaluationProtocol, SegmentationMetrics, image_scores

# ---------------------------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]
CITYSCAPES_RECIPE = str(ROOT / "configs" / "semantic" / "cityscapes_deeplabv3plus_resnet101.yaml")

# ---------------------------------------------------------------------------------------------
# Boundary IoU: the official API's mask_to_boundary (cv2.copyMakeBorder + cv2.erode), in numpy


def mask_to_boundary(mask: np.ndarray, ratio: float) -> np.ndarray:
    """boundary-iou-api's ``mask_to_boundary``: pad 1 px of zeros, erode with a 3x3 kernel d times, subtract."""
    h, w = mask.shape
    d = max(1, round(ratio * math.sqrt(h**2 + w**2)))
    padded = np.pad(mask.astype(np.uint8), 1)
    for _ in range(d):
        # cv2.erode's default border value is the maximum: outside the padded array nothing erodes
        around = np.pad(padded, 1, constant_values=1)
        padded = np.min([around[dy : dy + h + 2, dx : dx + w + 2] for dy in range(3) for dx in range(3)], axis=0)
    return mask.astype(np.uint8) - padded[1 : h + 1, 1 : w + 1]


def reference_boundary_iou(pairs: list[tuple[np.ndarray, np.ndarray]], classes: int, ratio: float) -> np.ndarray:
    inter, union = np.zeros(classes), np.zeros(classes)
    for pred, target in pairs:
        valid = target != 255
        for c in range(classes):
            gt_band = mask_to_boundary(target == c, ratio).astype(bool) & valid
            pred_band = mask_to_boundary(pred == c, ratio).astype(bool) & valid
            inter[c] += (gt_band & pred_band).sum()
            union[c] += (gt_band | pred_band).sum()
    with np.errstate(invalid="ignore"):
        return inter / union


def blocky_labels(rng: np.random.Generator, shape: tuple[int, int], classes: int, ignore: bool) -> np.ndarray:
    labels = np.full(shape, rng.integers(classes), dtype=np.int64)
    for _ in range(12):
        y, x = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        h, w = rng.integers(1, shape[0]), rng.integers(1, shape[1])
        labels[y : y + h, x : x + w] = 255 if ignore and rng.random() < 0.2 else rng.integers(classes)
    return labels


@pytest.mark.parametrize("ratio", [0.02, 0.005, 0.1])
def test_boundary_iou_equals_the_official_definition(ratio: float) -> None:
    rng = np.random.default_rng(int(ratio * 1000))
    classes, pairs = 5, []
    for shape in [(37, 53), (64, 40), (23, 23), (50, 71)]:
        target = blocky_labels(rng, shape, classes, ignore=True)
        pred = np.where(rng.random(shape) < 0.05, rng.integers(0, classes, shape), target)
        pred = np.where(pred == 255, 0, pred)
        pairs.append((pred, target))
    expected = reference_boundary_iou(pairs, classes, ratio)
    metric = SegmentationMetrics(classes, protocol=EvaluationProtocol(boundary_ratio=ratio))
    # two padded batches of mixed sizes: each image's band and diagonal are its own
    for batch in (pairs[:2], pairs[2:]):
        height, width = max(p.shape[0] for p, _ in batch), max(p.shape[1] for p, _ in batch)
        preds = torch.zeros(len(batch), height, width, dtype=torch.long)
        target = torch.full((len(batch), height, width), 255, dtype=torch.long)
        for i, (p, t) in enumerate(batch):
            preds[i, : p.shape[0], : p.shape[1]] = torch.from_numpy(p)
            target[i, : t.shape[0], : t.shape[1]] = torch.from_numpy(t)
        metric.update(preds, target, sizes=[p.shape for p, _ in batch])
    result = metric.compute()
    np.testing.assert_array_equal(result["biou_per_class"].numpy(), expected)  # exact: the same counts
    assert float(result["biou"]) == pytest.approx(np.nanmean(expected), abs=1e-12)
    assert 0.0 < float(result["biou"]) < float(result["miou"])  # bands are harder than whole masks


def test_boundary_iou_per_image_and_a_perfect_prediction() -> None:
    rng = np.random.default_rng(3)
    target = torch.from_numpy(blocky_labels(rng, (40, 60), 4, ignore=False))
    metric = SegmentationMetrics(4, protocol=EvaluationProtocol(boundary_ratio=0.02))
    wrong = torch.roll(target, 2, dims=1)  # the interior right, every edge 2 px off
    metric.update(torch.stack([target, wrong]), torch.stack([target, target]))
    scores = image_scores(metric.last_counts)
    assert scores["mbiou"][0] == 1.0 and scores["miou"][0] == 1.0
    assert scores["mbiou"][1] < scores["miou"][1] < 1.0
    one = reference_boundary_iou([(wrong.numpy(), target.numpy())], 4, 0.02)
    np.testing.assert_array_equal(scores["biou"][1].numpy(), one)


# ---------------------------------------------------------------------------------------------
# Cityscapes: iIoU and categories against cityscapesScripts' evalPixelLevelSemanticLabeling

STUFF_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 9, 0)  # 9 (parking), 0 (unlabeled): not evaluated
THING_IDS = (24, 25, 26, 27, 28, 31, 32, 33, 29)  # 29 (caravan): instances, not evaluated
TRAIN_ID = {c.id: c.train_id for c in TRAIN_LABELS}
LABEL_ID = np.array([c.id for c in TRAIN_LABELS], dtype=np.uint8)


def write_frames(root: Path, sizes: list[tuple[int, int]], seed: int = 0, split: str = "val") -> list[str]:
    """Cityscapes frames with many instances (and crowd regions); returns the frame names."""
    rng = np.random.default_rng(seed)
    names = []
    city = "lindau" if split == "val" else "aachen"
    for k, (h, w) in enumerate(sizes):
        frame = f"{city}_{k:06d}_000019"
        names.append(frame)
        ids = np.zeros((h, w), dtype=np.int32)
        for _ in range(10):
            y, x = rng.integers(0, h), rng.integers(0, w)
            ids[y : y + rng.integers(4, h), x : x + rng.integers(4, w)] = rng.choice(STUFF_IDS)
        instance = ids.copy()
        for number in range(int(rng.integers(8, 20))):
            label = int(rng.choice(THING_IDS))
            y, x = rng.integers(0, h - 3), rng.integers(0, w - 3)
            box = np.s_[y : y + rng.integers(2, h // 2), x : x + rng.integers(2, w // 2)]
            ids[box] = label
            crowd = rng.random() < 0.15  # a group without instance ids: its label id in both files
            instance[box] = label if crowd else label * 1000 + number
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
            _path(root / "leftImg8bit" / split / city, f"{frame}_leftImg8bit.png")
        )
        labels = root / "gtFine" / split / city
        Image.fromarray(ids.astype(np.uint8)).save(_path(labels, f"{frame}_gtFine_labelIds.png"))
        Image.fromarray(instance.astype(np.uint16)).save(_path(labels, f"{frame}_gtFine_instanceIds.png"))
    return names


def _path(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def noisy_prediction(rng: np.random.Generator, target: np.ndarray) -> np.ndarray:
    """Train ids: the truth, a shifted copy on part of the frame, and 20 % random pixels."""
    pred = np.where(target == 255, rng.integers(0, 19, target.shape), target)
    pred[:, : target.shape[1] // 3] = np.roll(pred, 3, axis=0)[:, : target.shape[1] // 3]
    return np.where(rng.random(target.shape) < 0.2, rng.integers(0, 19, target.shape), pred)


def official_scores(gt_files: list[Path], predictions: list[Path], monkeypatch: pytest.MonkeyPatch) -> dict:
    ev = pytest.importorskip(
        "cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling",
        reason="the official Cityscapes evaluator: pip install cityscapesscripts (a dev dependency)",
    )
    if not hasattr(np, "in1d"):  # cityscapesScripts 2.3 still calls np.in1d, which NumPy 2.4 removed
        monkeypatch.setattr(np, "in1d", lambda a, b: np.isin(np.ravel(a), b), raising=False)
    args = ev.args
    args.quiet, args.JSONOutput, args.evalInstLevelScore = True, False, True
    return ev.evaluateImgLists([str(p) for p in predictions], [str(g) for g in gt_files], args)


def ours(data: CityscapesDataModule, split: str, predictions: dict[str, np.ndarray]) -> dict:
    data.setup("validate" if split == "val" else "test")
    loader = data.val_dataloader() if split == "val" else data.test_dataloader()
    metric = SegmentationMetrics(19, protocol=cityscapes_protocol())
    for batch in loader:
        assert "instances" in batch
        preds = torch.zeros_like(batch["mask"])
        for i, (frame, (h, w)) in enumerate(zip(batch["id"], batch["size"], strict=True)):
            preds[i, :h, :w] = torch.from_numpy(predictions[frame])
        metric.update(preds, batch["mask"], sizes=batch["size"], instances=batch["instances"])
    return metric.compute()


def same(value: float, expected: float) -> bool:
    return (math.isnan(value) and math.isnan(expected)) or value == pytest.approx(expected, abs=1e-6)


def assert_equal_to_official(result: dict, official: dict) -> int:
    """Every class, category and mean equal to cityscapesScripts' to 1e-6; returns how many were numbers."""
    names = [c.name for c in TRAIN_LABELS]
    categories = list(cityscapes_protocol().categories)
    pairs = [("iou_per_class", "classScores", names), ("iiou_per_class", "classInstScores", names),
             ("category_iou_per_category", "categoryScores", categories),
             ("category_iiou_per_category", "categoryInstScores", categories)]  # fmt: skip
    numbers = 0
    for key, theirs, keys in pairs:
        for name, value in zip(keys, result[key].tolist(), strict=True):
            assert same(value, official[theirs][name]), (key, name, value, official[theirs][name])
            numbers += not math.isnan(value)
    means = {"miou": "averageScoreClasses", "iiou": "averageScoreInstClasses",
             "category_iou": "averageScoreCategories", "category_iiou": "averageScoreInstCategories"}  # fmt: skip
    for key, theirs in means.items():
        assert same(float(result[key]), official[theirs]), (key, float(result[key]), official[theirs])
    return numbers


def test_cityscapes_scores_equal_the_official_evaluator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cityscapes"
    frames = write_frames(root, [(48, 96), (64, 128), (40, 80), (64, 128)])
    rng = np.random.default_rng(1)
    data = CityscapesDataModule(str(root), batch_size=3, num_workers=0, test_split="val")
    dataset = data.make_dataset("val", None)
    predictions = {}
    gt_files, pred_files = [], []
    for index, frame in enumerate(frames):
        predictions[frame] = noisy_prediction(rng, dataset.read_mask(index).astype(np.int64))
        path = tmp_path / "pred" / f"{frame}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(LABEL_ID[predictions[frame]]).save(path)
        pred_files.append(path)
        gt_files.append(root / "gtFine" / "val" / "lindau" / f"{frame}_gtFine_labelIds.png")
    official = official_scores(gt_files, pred_files, monkeypatch)
    result = ours(data, "val", predictions)
    assert 0.05 < float(result["iiou"]) < 0.95 and float(result["iiou"]) != pytest.approx(float(result["miou"]))
    # every class has an IoU, every thing an iIoU, every category an IoU and human, vehicle an iIoU
    assert assert_equal_to_official(result, official) == 19 + 8 + 7 + 2


def test_the_average_instance_sizes_are_the_official_ones() -> None:
    ev = pytest.importorskip(
        "cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling",
        reason="the official Cityscapes evaluator: pip install cityscapesscripts (a dev dependency)",
    )
    assert ev.args.avgClassSize == CITYSCAPES_AVERAGE_INSTANCE_SIZE
    protocol = cityscapes_protocol()
    assert protocol.boundary_ratio == 0.005 and protocol.instance_categories == ("human", "vehicle")
    assert sorted(protocol.instance_sizes) == [11, 12, 13, 14, 15, 16, 17, 18]


def test_peer_cityscapes_scores_equal_the_official_evaluator(
    tmp_path: Path, peer: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """datumaro's frames hold only *_instanceIds.png, with crowd-style regions (a truck without instance id)."""
    source = peer / "datumaro" / "cityscapes_dataset" / "dataset"
    data = CityscapesDataModule(str(source), batch_size=2, num_workers=0, test_split="test")
    dataset = data.make_dataset("test", None)
    assert dataset.instances and len(dataset) == 2
    rng = np.random.default_rng(0)
    predictions, gt_files, pred_files = {}, [], []
    for index, frame in enumerate(dataset.ids):
        # the official evaluator reads labelIds beside the instanceIds: derive them into a copy
        instance_file = source / "gtFine" / "test" / "defaultcity" / f"{frame}_gtFine_instanceIds.png"
        raw = np.asarray(Image.open(instance_file)).astype(np.int64)
        gt = _path(tmp_path / "official", f"{frame}_gtFine_labelIds.png")
        Image.fromarray(np.where(raw >= 1000, raw // 1000, raw).astype(np.uint8)).save(gt)
        shutil.copy(instance_file, gt.parent)
        gt_files.append(gt)
        target = dataset.read_mask(index).astype(np.int64)
        pred = np.where(rng.random(target.shape) < 0.5, target, rng.integers(0, 19, target.shape))
        predictions[frame] = np.where(pred == 255, 13, pred)
        pred_files.append(_path(tmp_path / "pred", f"{frame}.png"))
        Image.fromarray(LABEL_ID[predictions[frame]]).save(pred_files[-1])
    assert_equal_to_official(ours(data, "test", predictions), official_scores(gt_files, pred_files, monkeypatch))


def test_lightseg_test_on_the_cityscapes_recipe_reports_the_official_scores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`lightseg test` prints and logs class IoU, iIoU, category IoU/iIoU and Boundary IoU, equal to the
    official evaluator on the labelIds PNGs `lightseg predict --prediction.format cityscapes` writes."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "cityscapes"
    write_frames(root, [(48, 96)] * 4, seed=1, split="train")
    frames = write_frames(root, [(48, 96), (64, 128), (48, 96)], seed=2)
    args = [
        "--config", CITYSCAPES_RECIPE, f"--data.init_args.root={root}",
        "--model.init_args.backbone=resnet18", "--model.init_args.weights_backbone=null",
        "--model.init_args.inference.window_size=[32,64]", "--model.init_args.inference.window_stride=[24,48]",
        "--data.init_args.crop_size=[32,64]", "--data.init_args.batch_size=2", "--data.init_args.num_workers=0",
        "--trainer.max_steps=2", "--trainer.check_val_every_n_epoch=1", "--trainer.accelerator=cpu",
        "--trainer.devices=1", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
    ]  # fmt: skip
    main(["fit", *args])
    capsys.readouterr()
    main(["test", *args, "--ckpt_path", "last"])
    captured = capsys.readouterr()
    table = captured.out[captured.out.index("Test, per class (%)") :]
    assert table.splitlines()[1].split() == ["class", "IoU", "Acc", "Dice", "BIoU", "iIoU"]
    assert re.search(r"^category +IoU +iIoU$", table, re.MULTILINE)
    for name in ("road", "bicycle", "flat", "vehicle", "human"):
        assert name in table
    run = tmp_path / "runs" / "semantic" / "cityscapes_deeplabv3plus_resnet101" / "version_0" / "test-last"
    logged = {k: float(v) for row in csv.DictReader((run / "metrics.csv").open()) for k, v in row.items() if v}
    assert {"test_miou", "test_iiou", "test_category_iou", "test_category_iiou", "test_biou"} <= set(logged)

    per_image = list(csv.DictReader((run / "per_image_test.csv").open()))
    assert sorted(r["id"] for r in per_image) == sorted(frames)
    mious = [float(r["miou"]) for r in per_image]
    assert mious == sorted(mious) and {"iou_road", "acc_car", "biou_bicycle", "mbiou"} <= set(per_image[0])
    written = run.relative_to(tmp_path) / "per_image_test.csv"
    assert f"per-image scores of 3 test images in {written} (lowest mIoU: {per_image[0]['id']}" in captured.err

    out = tmp_path / "predictions"
    main(["predict", *args, "--ckpt_path", "last", f"--data.init_args.predict_dir={root / 'leftImg8bit' / 'val'}",
          "--prediction.format", "cityscapes", "--prediction.output_dir", str(out)])  # fmt: skip
    predictions = [out / "labelIds" / "lindau" / f"{frame}_leftImg8bit.png" for frame in frames]
    gt_files = [root / "gtFine" / "val" / "lindau" / f"{frame}_gtFine_labelIds.png" for frame in frames]
    official = official_scores(gt_files, predictions, monkeypatch)
    assert logged["test_miou"] == pytest.approx(official["averageScoreClasses"], abs=1e-6)
    assert logged["test_iiou"] == pytest.approx(official["averageScoreInstClasses"], abs=1e-6)
    assert logged["test_category_iou"] == pytest.approx(official["averageScoreCategories"], abs=1e-6)
    assert logged["test_category_iiou"] == pytest.approx(official["averageScoreInstCategories"], abs=1e-6)
    for c in TRAIN_LABELS:
        if c.has_instances and not math.isnan(official["classInstScores"][c.name]):
            key = f"test_iiou_{c.name.replace(' ', '_')}"
            assert logged[key] == pytest.approx(official["classInstScores"][c.name], abs=1e-6), key


# ---------------------------------------------------------------------------------------------
# Boundary AP for instance masks: faster-coco-eval's boundary IoU type against the official definition


@pytest.mark.parametrize(("shift", "ratio"), [(1, 0.02), (2, 0.03), (2, 0.05), (3, 0.08)])
def test_boundary_ap_equals_the_official_definition(shift: int, ratio: float) -> None:
    """One object, one detection: AP at each threshold is 1 exactly when min(mask IoU, Boundary IoU) reaches it."""
    pytest.importorskip("faster_coco_eval")
    from pycocotools import mask as mask_api

    from lightseg.metrics import COCOEvaluator

    height, width = 90, 130
    truth = np.zeros((height, width), dtype=np.uint8)
    truth[20:70, 30:100] = 1
    truth[40:50, 60:75] = 0  # a hole: more contour
    detected = np.roll(truth, shift, axis=0)
    rle = mask_api.encode(np.asfortranarray(truth))
    ground_truth = {
        "images": [{"id": 7, "height": height, "width": width}],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "iscrowd": 0, "area": float(truth.sum()),
                         "bbox": [30.0, 20.0, 70.0, 50.0],
                         "segmentation": {"size": [height, width], "counts": rle["counts"].decode()}}],
        "categories": [{"id": 3, "name": "thing"}],
    }  # fmt: skip
    metric = COCOEvaluator(["bbox", "segm"], category_ids=[0, 3], boundary_ratio=ratio)
    metric.set_ground_truth(ground_truth, [0, 3])
    box = torch.tensor([[30.0, 20.0 + shift, 100.0, 70.0 + shift]])
    masks = torch.from_numpy(detected).float()[None, None]
    metric.update([{"boxes": box, "labels": torch.tensor([1]), "scores": torch.tensor([0.9]), "masks": masks}], [7])
    result = metric.compute()

    mask_iou = (truth & detected).sum() / (truth | detected).sum()
    gt_band, dt_band = mask_to_boundary(truth, ratio).astype(bool), mask_to_boundary(detected, ratio).astype(bool)
    boundary_iou = (gt_band & dt_band).sum() / (gt_band | dt_band).sum()
    thresholds = np.linspace(0.5, 0.95, 10)
    assert min(abs(thresholds - boundary_iou).min(), abs(thresholds - mask_iou).min()) > 1e-6  # no ties
    assert float(result["segm_map"]) == pytest.approx((thresholds <= mask_iou).mean())
    expected = (thresholds <= min(mask_iou, boundary_iou)).mean()
    assert 0 < expected < float(result["segm_map"])  # the band decides
    assert float(result["boundary_map"]) == pytest.approx(expected)
    assert metric.evaluated_types == ("bbox", "segm", "boundary")
