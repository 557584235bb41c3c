"""Panoptic quality equal to the COCO reference evaluator (panopticapi) on randomised cases, and its edge cases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from lightseg.errors import LightsegError
from lightseg.metrics.panoptic import PanopticQuality, id_to_rgb, image_counts, pq_compute, rgb_to_id

#: the reference: panopticapi's evaluation as the panopticapi-lite wheel ships it (pure Python; its
#: numpy<2 pin is metadata only, so the wheel is put on sys.path instead of installed)
REFERENCE = "panopticapi-lite==0.2.0"
CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 3, "name": "car", "isthing": 1},
    {"id": 18, "name": "dog", "isthing": 1},
    {"id": 92, "name": "grass", "isthing": 0},
    {"id": 125, "name": "sky", "isthing": 0},
    {"id": 200, "name": "wall", "isthing": 0},
]


@pytest.fixture(scope="module")
def panopticapi(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """panopticapi's ``evaluation`` module: installed, from ``$LIGHTSEG_PANOPTICAPI_WHEEL``, or fetched by pip."""
    try:
        from panopticapi import evaluation

        return evaluation
    except ImportError:
        pass
    wheel = os.environ.get("LIGHTSEG_PANOPTICAPI_WHEEL")
    if not wheel:
        folder = tmp_path_factory.mktemp("wheels")
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(folder), REFERENCE],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        found = sorted(folder.glob("*.whl"))
        if done.returncode != 0 or not found:
            reason = f"the reference evaluator ({REFERENCE}) could not be fetched: {done.stderr.strip()[-300:]}"
            if os.environ.get("LIGHTSEG_REQUIRE_PANOPTICAPI"):
                pytest.fail(reason)
            pytest.skip(reason)
        wheel = str(found[0])
    sys.path.insert(0, wheel)
    from panopticapi import evaluation

    return evaluation


def _random_case(rng: np.random.Generator, size: tuple[int, int] = (48, 64)) -> tuple[Any, Any, Any, Any]:
    """A ground truth and a prediction that hit every rule: void, crowd, IoU near 0.5, wrong classes, misses."""
    height, width = size
    gt = np.zeros(size, np.uint32)
    segments: list[dict[str, Any]] = []
    used: set[int] = {0}

    def new_id() -> int:
        while True:
            value = int(rng.integers(1, 256**3))
            if value not in used:
                used.add(value)
                return value

    for category in rng.choice([92, 125, 200], size=2, replace=False):  # stuff: horizontal bands
        top, bottom = sorted(rng.integers(0, height, size=2))
        segment = new_id()
        gt[top : bottom + 1] = segment
        segments.append({"id": segment, "category_id": int(category), "iscrowd": 0})
    for _ in range(int(rng.integers(3, 7))):  # things: rectangles, some crowd
        y, x = int(rng.integers(0, height - 6)), int(rng.integers(0, width - 6))
        h, w = int(rng.integers(4, 16)), int(rng.integers(4, 16))
        segment = new_id()
        gt[y : y + h, x : x + w] = segment
        segments.append({"id": segment, "category_id": int(rng.choice([1, 3, 18])), "iscrowd": int(rng.random() < 0.2)})
    gt[rng.random(size) < 0.05] = 0  # scattered void pixels
    if rng.random() < 0.5:
        gt[:, : int(rng.integers(1, 8))] = 0  # a void margin
    areas = dict(zip(*np.unique(gt, return_counts=True), strict=True))
    segments = [dict(s, area=int(areas[s["id"]])) for s in segments if s["id"] in areas]

    pred = np.zeros(size, np.uint32)
    pred_segments: list[dict[str, Any]] = []
    for segment in segments:
        if rng.random() < 0.15:  # missed: left void in the prediction
            continue
        mask = gt == segment["id"]
        shift = int(rng.integers(-4, 5))  # a shifted copy: IoU anywhere around 0.5
        mask = np.roll(mask, shift, axis=int(rng.integers(0, 2)))
        if not mask.any():
            continue
        category = segment["category_id"] if rng.random() > 0.15 else int(rng.choice([c["id"] for c in CATEGORIES]))
        new = new_id()
        pred[mask] = new
        pred_segments.append({"id": new, "category_id": int(category)})
    for _ in range(int(rng.integers(0, 3))):  # spurious segments, some on void or crowd
        y, x = int(rng.integers(0, height - 4)), int(rng.integers(0, width - 4))
        new = new_id()
        pred[y : y + int(rng.integers(2, 8)), x : x + int(rng.integers(2, 8))] = new
        pred_segments.append({"id": new, "category_id": int(rng.choice([c["id"] for c in CATEGORIES]))})
    pred[rng.random(size) < 0.03] = 0  # unlabelled predicted pixels
    present = set(np.unique(pred).tolist())
    pred_segments = [s for s in pred_segments if s["id"] in present]
    return gt, segments, pred, pred_segments


def _write(folder: Path, name: str, cases: list[tuple[np.ndarray, list[dict[str, Any]]]]) -> Path:
    pictures = folder / name
    pictures.mkdir(parents=True)
    annotations = []
    for image_id, (ids, segments) in enumerate(cases):
        Image.fromarray(id_to_rgb(ids)).save(pictures / f"{image_id:04d}.png")
        annotations.append({"image_id": image_id, "file_name": f"{image_id:04d}.png", "segments_info": segments})
    images = [{"id": i, "file_name": f"{i:04d}.jpg", "height": 48, "width": 64} for i in range(len(cases))]
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return path


@pytest.mark.parametrize("seed", range(6))
def test_pq_equals_panopticapi_on_randomised_cases(
    seed: int, panopticapi: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(seed)
    cases = [_random_case(rng) for _ in range(5)]
    gt_json = _write(tmp_path, "gt", [(g, s) for g, s, _, _ in cases])
    pred_json = _write(tmp_path, "pred", [(p, s) for _, _, p, s in cases])
    expected = panopticapi.pq_compute(str(gt_json), str(pred_json), str(tmp_path / "gt"), str(tmp_path / "pred"))
    capsys.readouterr()
    ours = pq_compute(gt_json, pred_json)  # the folders beside the JSON files, as panopticapi's defaults
    for name in ("All", "Things", "Stuff"):
        assert ours[name]["n"] == expected[name]["n"]
        for score in ("pq", "sq", "rq"):
            assert ours[name][score] == pytest.approx(expected[name][score], abs=1e-9), (name, score)
    assert set(ours["per_class"]) == set(expected["per_class"])
    for category, scores in expected["per_class"].items():
        for score, value in scores.items():
            assert ours["per_class"][category][score] == pytest.approx(value, abs=1e-9), (category, score)
    # the metric over the same images, in any batches, gives the same numbers
    metric = PanopticQuality(CATEGORIES)
    metric.update([(torch.from_numpy(p.astype(np.int64)), s) for _, _, p, s in cases[:2]],
                  [(torch.from_numpy(g.astype(np.int64)), s) for g, s, _, _ in cases[:2]])  # fmt: skip
    metric.update([(p, s) for _, _, p, s in cases[2:]], [(g, s) for g, s, _, _ in cases[2:]])
    values = metric.compute()
    for name, suffix in (("All", ""), ("Things", "_things"), ("Stuff", "_stuff")):
        assert float(values[f"pq{suffix}"]) == pytest.approx(expected[name]["pq"], abs=1e-9)
    assert 0 < expected["All"]["pq"] < 1 and expected["Things"]["n"] > 0 and expected["Stuff"]["n"] > 0


def test_a_thing_left_void_is_a_false_negative() -> None:
    """The case torchmetrics' PanopticQuality gets wrong: PQ 0.833 (things 0.667), not 1.0."""
    gt = np.zeros((10, 10), np.int64)
    gt[:, :4], gt[:2, 5:8], gt[6:9, 5:8] = 7, 8, 9  # grass (stuff) and two people
    segments = [{"id": 7, "category_id": 92, "iscrowd": 0}, {"id": 8, "category_id": 1, "iscrowd": 0},
                {"id": 9, "category_id": 1, "iscrowd": 0}]  # fmt: skip
    pred = gt.copy()
    pred[pred == 9] = 0  # one person left unlabelled
    pred_segments = [{"id": 7, "category_id": 92}, {"id": 8, "category_id": 1}]
    metric = PanopticQuality([c for c in CATEGORIES if c["id"] in (1, 92)])
    metric.update([(pred, pred_segments)], [(gt, segments)])
    values = metric.compute()
    assert float(values["pq"]) == pytest.approx(5 / 6) and float(values["pq_things"]) == pytest.approx(2 / 3)
    assert float(values["pq_stuff"]) == 1.0 and float(values["sq"]) == 1.0
    assert torch.allclose(values["rq_per_class"], torch.tensor([2 / 3, 1.0], dtype=torch.float64))


def test_crowd_and_void_regions_excuse_a_prediction_but_a_match_needs_iou_above_half() -> None:
    index = {1: 0, 92: 1}
    gt = np.zeros((10, 10), np.int64)
    gt[:, :5] = 5  # a crowd of people
    gt[:, 5:] = 6  # grass
    segments = [{"id": 5, "category_id": 1, "iscrowd": 1}, {"id": 6, "category_id": 92, "iscrowd": 0}]
    pred = np.zeros((10, 10), np.int64)
    pred[:, :5] = 11  # a person on the crowd region: not a false positive
    pred[:, 5:] = 12  # grass, exact
    counts = image_counts(gt, segments, pred, [{"id": 11, "category_id": 1}, {"id": 12, "category_id": 92}], index)
    assert counts.tp.tolist() == [0, 1] and counts.fp.tolist() == [0, 0] and counts.fn.tolist() == [0, 0]
    # exactly half the grass: IoU 0.5 is not a match -> a false negative and a false positive
    pred[:, 5:] = 0
    pred[:5, 5:] = 12
    counts = image_counts(gt, segments, pred, [{"id": 11, "category_id": 1}, {"id": 12, "category_id": 92}], index)
    assert counts.tp.tolist() == [0, 0] and counts.fp.tolist() == [0, 1] and counts.fn.tolist() == [0, 1]


def test_broken_predictions_are_one_line_naming_the_file(tmp_path: Path) -> None:
    index = {1: 0}
    gt = np.ones((4, 4), np.int64)
    segments = [{"id": 1, "category_id": 1, "iscrowd": 0}]
    with pytest.raises(LightsegError, match=r"x.png: the prediction's map holds segment ids \[2\] that its segments"):
        image_counts(gt, segments, np.full((4, 4), 2), [], index, where="x.png")
    with pytest.raises(LightsegError, match=r"x.png: the predicted segments \[3\] have no pixel"):
        image_counts(gt, segments, np.ones((4, 4)), [{"id": 1, "category_id": 1}, {"id": 3, "category_id": 1}],
                     index, where="x.png")  # fmt: skip
    with pytest.raises(LightsegError, match=r"x.png: the prediction has segments of unknown categories \[4\]"):
        image_counts(gt, segments, np.ones((4, 4)), [{"id": 1, "category_id": 4}], index, where="x.png")
    gt_json = _write(tmp_path, "gt", [(gt.astype(np.uint32), segments)])
    pred_json = tmp_path / "pred.json"
    pred_json.write_text(json.dumps({"annotations": []}))
    with pytest.raises(LightsegError, match=r"pred.json: no prediction for image 0 \(0000.png\)"):
        pq_compute(gt_json, pred_json)


def test_segment_ids_round_trip_through_rgb() -> None:
    ids = np.array([[0, 1, 255, 256], [65535, 65536, 256**3 - 1, 123456]], np.uint32)
    assert (rgb_to_id(id_to_rgb(ids)) == ids).all()
    assert id_to_rgb(np.array([[256 + 2 + 65536 * 3]])).tolist() == [[[2, 1, 3]]]


def test_pq_equals_panopticapi_on_a_real_coco_panoptic_file(
    peer: Path, panopticapi: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """datumaro's COCO panoptic fixture (float areas, a crowd segment) against a prediction made from it."""
    root = peer / "datumaro" / "coco_panoptic" / "annotations"
    truth = json.loads((root / "panoptic_val.json").read_text())
    annotation = truth["annotations"][0]
    with Image.open(root / "panoptic_val" / annotation["file_name"]) as picture:
        ids = rgb_to_id(np.asarray(picture.convert("RGB")))
    assert sorted(np.unique(ids).tolist()) == [0, 7, 20]
    pred = ids.copy()
    pred[pred == 20] = 21  # the crowd region predicted as a segment of its category: excused, not a false positive
    pred[:3][pred[:3] == 7] = 0  # part of segment 7 left unlabelled
    (tmp_path / "pred").mkdir()
    Image.fromarray(id_to_rgb(pred)).save(tmp_path / "pred" / annotation["file_name"])
    segments = [{"id": 7, "category_id": 1}, {"id": 21, "category_id": 2}]
    prediction = {"annotations": [{"image_id": annotation["image_id"], "file_name": annotation["file_name"],
                                   "segments_info": segments}]}  # fmt: skip
    (tmp_path / "pred.json").write_text(json.dumps(prediction))
    # every category here is stuff: panopticapi's pq_compute divides by zero for the things, so its parts are used
    categories = {c["id"]: c for c in truth["categories"]}
    stat = panopticapi.pq_compute_single_core(
        0, [(annotation, prediction["annotations"][0])], str(root / "panoptic_val"), str(tmp_path / "pred"), categories
    )
    capsys.readouterr()
    ours = pq_compute(root / "panoptic_val.json", tmp_path / "pred.json", root / "panoptic_val", tmp_path / "pred")
    for name, isthing in (("All", None), ("Stuff", False)):
        expected, per_class = stat.pq_average(categories, isthing=isthing)
        for score in ("pq", "sq", "rq", "n"):
            assert ours[name][score] == pytest.approx(expected[score], abs=1e-9), (name, score)
    for category, scores in per_class.items():
        assert ours["per_class"][category] == pytest.approx(scores, abs=1e-9), category
    assert ours["Things"] == {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}
    assert ours["All"]["n"] == 1 and 0.5 < ours["All"]["pq"] < 1  # segment 7 matched below IoU 1; the crowd left out
