from __future__ import annotations

import contextlib
import copy
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_api
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from lightseg.coco_masks import segmentation_mask
from lightseg.datamodules import COCOInstanceDataModule, COCOKeypointDataModule
from lightseg.datamodules.transforms import DetectionTransform, flip_keypoints
from lightseg.errors import LightsegError
from lightseg.metrics import COCOEvaluator
from lightseg.metrics.coco import evaluate, load_ground_truth

# one image (id 40, b.jpg, 5 x 10) with one polygon of category 1 and ids 1, 2, 4: a ground truth of our own
TINY_COCO: dict[str, Any] = {
    "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 4, "name": "c"}],
    "images": [{"id": 40, "width": 5, "height": 10, "file_name": "b.jpg"}],
    "annotations": [
        {
            "id": 1, "image_id": 40, "category_id": 1, "segmentation": [[0.0, 0.0, 1.0, 0.0, 1.0, 2.0, 0.0, 2.0]],
            "area": 2.0, "bbox": [0.0, 0.0, 1.0, 2.0], "iscrowd": 0,
        }
    ],
}  # fmt: skip


def datumaro(peer: Path, kind: str = "instances", **kwargs: Any) -> COCOInstanceDataModule | COCOKeypointDataModule:
    folder = "coco_instances" if kind == "instances" else "coco_person_keypoints"
    prefix = "instances" if kind == "instances" else "person_keypoints"
    module = COCOInstanceDataModule if kind == "instances" else COCOKeypointDataModule
    return module(
        str(peer / "datumaro" / folder),
        train_images="images/train",
        train_annotations=f"annotations/{prefix}_train.json",
        val_images="images/val",
        val_annotations=f"annotations/{prefix}_val.json",
        test_images="images/val",
        test_annotations=f"annotations/{prefix}_val.json",
        num_workers=0,
        **kwargs,
    )


def test_datumaro_instances_map_noncontiguous_ids_and_leave_crowd_and_empty_segmentation_out(peer: Path) -> None:
    data = datumaro(peer)
    assert data.num_classes == 4 and data.class_names == ("background", "a", "b", "c")
    assert data.category_ids == [0, 1, 2, 4]  # label 3 is category 4
    data.setup("fit")
    # the only train annotation has `segmentation: []`: no mask target, so the image is left out of training
    assert len(data.train_dataset) == 0 and data.train_dataset.dropped.counts == {"no segmentation": 1}
    item = data.val_dataset[0]
    target = item["target"]
    assert item["image"].shape == (3, 10, 5) and item["image"].dtype == torch.float32
    assert target["image_id"] == 40 and target["labels"].tolist() == [1]  # the crowd region is not a target
    assert data.val_dataset.dropped.counts == {"crowd/ignore": 1}
    assert target["boxes"].tolist() == [[0.0, 0.0, 1.0, 2.0]]
    assert target["masks"].shape == (1, 10, 5) and target["masks"].dtype == torch.uint8
    assert target["masks"][0, :2, :1].all() and int(target["masks"].sum()) == 2


def test_datumaro_keypoints_without_keypoint_names(peer: Path) -> None:
    data = datumaro(peer, "keypoints", hflip=False)
    assert data.num_classes == 3 and data.keypoint_names == () and data.reference.flip_pairs() == []
    data.setup("fit")
    train = data.train_dataset[0]["target"]
    # three keypoints per annotation, taken from the annotation when the category names none
    assert train["keypoints"].tolist() == [[[0.0, 0.0, 0.0], [0.0, 2.0, 1.0], [4.0, 1.0, 2.0]]]
    assert train["labels"].tolist() == [2] and train["boxes"].tolist() == [[2.0, 2.0, 5.0, 3.0]]
    val = data.val_dataset[0]["target"]
    assert val["labels"].tolist() == [1] and val["keypoints"].shape == (1, 3, 3)  # the crowd is no target


def test_uncompressed_crowd_rle_is_column_major() -> None:
    mask = segmentation_mask({"counts": [0, 20, 30], "size": [10, 5]}, 10, 5)
    expected = np.zeros((10, 5), np.uint8)
    expected[:, :2] = 1  # 20 ones down the first two columns
    np.testing.assert_array_equal(mask, expected)
    compressed = mask_api.encode(np.asfortranarray(expected))
    np.testing.assert_array_equal(
        segmentation_mask({**compressed, "counts": compressed["counts"].decode()}, 10, 5), expected
    )


def test_real_coco_person_keypoints_from_mmpose(peer: Path) -> None:
    data = COCOKeypointDataModule(str(peer / "mmpose" / "coco"), num_workers=0)
    assert data.keypoint_names[:3] == ("nose", "left_eye", "right_eye") and len(data.keypoint_names) == 17
    pairs = data.reference.flip_pairs()
    assert (1, 2) in pairs and (15, 16) in pairs and len(pairs) == 8
    data.setup("validate")
    assert len(data.val_dataset) == 4
    total = 0
    for i in range(4):
        target = data.val_dataset[i]["target"]
        k = target["keypoints"]
        assert k.shape[1:] == (17, 3) and len(k) == len(target["boxes"]) == len(target["labels"])
        total += int((k[..., 2] > 0).sum())
    assert total == 181  # every labelled keypoint of the 14 annotations


def test_mmdetection_edge_cases(tmp_path: Path, peer: Path) -> None:
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    sample = json.loads((peer / "mmdetection" / "coco_sample.json").read_text())
    for image in sample["images"]:
        Image.new("RGB", (image["width"], image["height"])).save(root / "val2017" / image["file_name"])
    shutil.copy(peer / "mmdetection" / "coco_sample.json", root / "annotations" / "instances_val2017.json")
    data = COCOInstanceDataModule(
        str(root), train_images="val2017", train_annotations="annotations/instances_val2017.json", num_workers=0
    )
    with pytest.raises(LightsegError, match=r"annotation 6 has category_id 3.*unknown_categories: skip"):
        data.setup("validate")
    data = COCOInstanceDataModule(
        str(root),
        train_images="val2017",
        train_annotations="annotations/instances_val2017.json",
        num_workers=0,
        unknown_categories="skip",
    )
    data.setup("fit")
    val, train = data.val_dataset, data.train_dataset
    assert len(val) == 4  # the image without annotations stays for evaluation
    assert val.dropped.counts == {"crowd/ignore": 2, "empty box": 1, "unknown category": 1, "no segmentation": 3}
    assert len(train) == 1 and train.skipped_empty == 3  # only image 0 has a usable (polygon) annotation
    assert [len(val[i]["target"]["labels"]) for i in range(4)] == [1, 0, 0, 0]
    assert val[1]["target"]["masks"].shape == (0, 800, 800) and val[1]["target"]["boxes"].shape == (0, 4)


def test_missing_annotation_file_and_images_are_one_line(tmp_path: Path) -> None:
    data = COCOInstanceDataModule(str(tmp_path), num_workers=0)
    with pytest.raises(LightsegError, match=r"instances_val2017.json does not exist"):
        _ = data.num_classes
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(TINY_COCO))
    (tmp_path / "val2017").mkdir()
    with pytest.raises(LightsegError, match=r"1 of 1 images are missing .*b\.jpg"):
        data.setup("validate")


def test_images_of_another_size_than_listed_are_refused_not_drawn_on(tmp_path: Path) -> None:
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(TINY_COCO))  # b.jpg: 10 high, 5 wide
    (tmp_path / "val2017").mkdir()
    exif = Image.Exif()
    exif[0x0112] = 8  # stored 5 x 10, shown turned: 10 x 5, the size the annotation tool listed
    Image.fromarray(np.zeros((5, 10, 3), np.uint8)).save(tmp_path / "val2017" / "b.jpg", exif=exif.tobytes())
    data = COCOInstanceDataModule(str(tmp_path), num_workers=0)
    data.setup("validate")
    item = data.val_dataset[0]
    assert item["image"].shape == (3, 10, 5) and item["target"]["masks"].shape == (1, 10, 5)
    assert item["target"]["boxes"].tolist() == [[0.0, 0.0, 1.0, 2.0]]
    Image.fromarray(np.zeros((5, 10, 3), np.uint8)).save(tmp_path / "val2017" / "b.jpg")  # no tag: 5 x 10
    with pytest.raises(LightsegError, match=r"b.jpg is \(5, 10\) but .*instances_val2017.json says \(10, 5\) \(H, W\); "
                                            r"the annotations were made for another image$"):  # fmt: skip
        data.val_dataset[0]
    listed_stored = copy.deepcopy(TINY_COCO)
    listed_stored["images"][0].update(width=10, height=5)  # a tool that listed the stored size of a turned photo
    (tmp_path / "annotations" / "instances_val2017.json").write_text(json.dumps(listed_stored))
    Image.fromarray(np.zeros((5, 10, 3), np.uint8)).save(tmp_path / "val2017" / "b.jpg", exif=exif.tobytes())
    data = COCOInstanceDataModule(str(tmp_path), num_workers=0)
    data.setup("validate")
    with pytest.raises(LightsegError, match=r"says \(5, 10\) .*EXIF orientation 8 \(turned 90 degrees anticlockwise"):
        data.val_dataset[0]


def test_flip_moves_boxes_masks_and_swaps_left_right_keypoints() -> None:
    from torchvision import tv_tensors

    image = tv_tensors.Image(torch.arange(12.0).reshape(1, 3, 4).expand(3, 3, 4).clone())
    mask = torch.zeros(1, 3, 4, dtype=torch.uint8)
    mask[0, :, 0] = 1
    target = {
        "boxes": tv_tensors.BoundingBoxes(torch.tensor([[0.0, 0.0, 1.0, 3.0]]), format="XYXY", canvas_size=(3, 4)),
        "masks": tv_tensors.Mask(mask),
        "keypoints": torch.tensor([[[1.0, 1.0, 2.0], [0.5, 2.0, 2.0], [3.5, 2.0, 1.0], [0.0, 0.0, 0.0]]]),
    }
    flip = DetectionTransform(hflip=True, flip_pairs=[(1, 2)])
    torch.manual_seed(0)
    flipped = None
    for _ in range(20):  # until the coin says flip
        out_image, out = flip(image, target)
        if not torch.equal(out_image, image):
            flipped = (out_image, out)
            break
    assert flipped is not None
    out_image, out = flipped
    assert torch.equal(out_image, image.flip(-1))
    assert out["boxes"].tolist() == [[3.0, 0.0, 4.0, 3.0]]
    assert out["masks"][0, :, 3].all() and int(out["masks"].sum()) == 3
    assert out["keypoints"].tolist() == [[[3.0, 1.0, 2.0], [0.5, 2.0, 1.0], [3.5, 2.0, 2.0], [0.0, 0.0, 0.0]]]
    assert flip_keypoints(out["keypoints"], 4, [(1, 2)]).tolist() == target["keypoints"].tolist()  # an involution


# -- evaluation equals pycocotools' COCOeval on the file ------------------------------------------------------


def _ground_truth(rng: np.random.Generator) -> dict[str, Any]:
    """Images with objects of non-contiguous categories (3, 7, 12), small to large, a crowd RLE and an empty image."""
    images, annotations = [], []
    for image_id in (11, 12, 13, 20):
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "height": 120, "width": 160})
        if image_id == 20:
            continue
        for _ in range(4):
            w, h = (int(v) for v in rng.integers(4, 70, 2))
            x, y = int(rng.integers(0, 160 - w)), int(rng.integers(0, 120 - h))
            mask = np.zeros((120, 160), np.uint8)
            mask[y : y + h, x : x + w] = 1
            mask[y : y + h // 3, x : x + w // 3] = 0  # not a plain box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(rng.choice([3, 7, 12])),
                    "bbox": [x, y, w, h],
                    "area": int(mask.sum()),
                    "iscrowd": 0,
                    "segmentation": [
                        [x, y + h // 3, x + w // 3, y + h // 3, x + w // 3, y, x + w, y, x + w, y + h, x, y + h]
                    ],
                }
            )
    crowd = np.zeros((120, 160), np.uint8)
    crowd[60:110, 100:150] = 1
    rle = mask_api.encode(np.asfortranarray(crowd))
    annotations.append(
        {
            "id": len(annotations) + 1,
            "image_id": 12,
            "category_id": 7,
            "bbox": [100, 60, 50, 50],
            "area": int(crowd.sum()),
            "iscrowd": 1,
            "segmentation": {"size": [120, 160], "counts": rle["counts"].decode()},
        }
    )
    categories = [{"id": c, "name": f"c{c}"} for c in (3, 7, 12)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _detections(truth: dict[str, Any], rng: np.random.Generator) -> dict[int, dict[str, torch.Tensor]]:
    """Torchvision-style outputs: jittered ground truth, wrong labels, false positives (also on the crowd)."""
    label_of = {3: 1, 7: 2, 12: 3}
    out: dict[int, dict[str, torch.Tensor]] = {}
    for image in truth["images"]:
        boxes, labels, scores, masks = [], [], [], []
        for a in [a for a in truth["annotations"] if a["image_id"] == image["id"]] + [None, None]:
            if a is None:
                x, y = (float(v) for v in rng.uniform(0, 100, 2))
                box, label = [x, y, x + 20, y + 15], int(rng.integers(1, 4))
            else:
                x, y, w, h = a["bbox"]
                box = [v + float(rng.normal(0, 3)) for v in (x, y, x + w, y + h)]
                label = label_of[a["category_id"]] if rng.random() > 0.2 else int(rng.integers(1, 4))
            probability = np.zeros((1, 120, 160), np.float32)
            x1, y1, x2, y2 = (round(v) for v in box)
            probability[0, max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = rng.uniform(0.3, 1.0)
            boxes.append(box)
            labels.append(label)
            scores.append(float(rng.uniform(0.05, 1.0)))
            masks.append(probability)
        out[image["id"]] = {
            "boxes": torch.tensor(boxes),
            "labels": torch.tensor(labels),
            "scores": torch.tensor(scores),
            "masks": torch.from_numpy(np.stack(masks)),
        }
    return out


def _pycocotools(
    truth: dict[str, Any], results: list[dict[str, Any]], iou_type: str, sigmas: Any = None, image_ids: Any = None
) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = copy.deepcopy(truth)
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), iou_type)
        if image_ids is not None:
            evaluator.params.imgIds = image_ids
        if sigmas is not None:
            evaluator.params.kpt_oks_sigmas = np.array(sigmas)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats)


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_box_and_mask_ap_equal_pycocotools_on_the_annotation_file(backend: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    truth = _ground_truth(rng)
    detections = _detections(truth, rng)
    metric = COCOEvaluator(["bbox", "segm"], backend=backend)  # type: ignore[arg-type]
    metric.set_ground_truth(truth, [0, 3, 7, 12])
    for image_id in (12, 11):  # an image per batch, any order
        metric.update([detections[image_id]], [image_id])
    metric.update([detections[13], detections[20]], [13, 20])
    ours = metric.compute()

    # the same detections in COCO's results format, written independently of lightseg
    bbox_results, segm_results = [], []
    for image_id, d in detections.items():
        for box, label, score, probability in zip(
            d["boxes"].tolist(), d["labels"].tolist(), d["scores"].tolist(), d["masks"].numpy(), strict=True
        ):
            category = [0, 3, 7, 12][label]
            x1, y1, x2, y2 = box
            bbox_results.append(
                {"image_id": image_id, "category_id": category, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}
            )
            rle = mask_api.encode(np.asfortranarray((probability[0] > 0.5).astype(np.uint8)))
            segm_results.append(
                {
                    "image_id": image_id,
                    "category_id": category,
                    "score": score,
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
                }
            )
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(truth))  # through a file, as users' annotation files come
    for iou_type, results in (("bbox", bbox_results), ("segm", segm_results)):
        expected = _pycocotools(json.loads(path.read_text()), results, iou_type)
        got = [
            float(ours[f"{iou_type}_{k}"]) for k in ("map", "map_50", "map_75", "map_small", "map_medium", "map_large")
        ]
        np.testing.assert_allclose(got, expected[:6], rtol=0, atol=1e-12)
        assert 0.05 < got[0] < 0.95  # a test with something to get wrong
    assert ours["segm_map_per_class"].shape == (3,)
    # an evaluation leaves the collected results as they were: the same numbers the second time
    torch.testing.assert_close(metric.compute(), ours, rtol=0, atol=0, equal_nan=True)
    assert all(set(r) == {"image_id", "category_id", "score", "segmentation"} for r in metric.results()["segm"])


def test_mask_results_of_an_image_the_ground_truth_lacks_are_one_line() -> None:
    truth = _ground_truth(np.random.default_rng(0))
    result = {"image_id": 99, "category_id": 3, "score": 0.9, "segmentation": truth["annotations"][-1]["segmentation"]}
    with pytest.raises(LightsegError, match=r"images the ground truth does not hold: \[99\]"):
        evaluate(load_ground_truth(truth, "faster_coco_eval"), [result], "segm")


def _bbox_results(detections: dict[int, dict[str, torch.Tensor]], categories: list[int]) -> list[dict[str, Any]]:
    results = []
    for image_id, d in detections.items():
        rows = zip(d["boxes"].tolist(), d["labels"].tolist(), d["scores"].tolist(), strict=True)
        for (x1, y1, x2, y2), label, score in rows:
            box = [x1, y1, x2 - x1, y2 - y1]
            results.append({"image_id": image_id, "category_id": categories[label], "bbox": box, "score": score})
    return results


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_ap_counts_only_the_images_that_were_evaluated(backend: str) -> None:
    # limit_val_batches, fast_dev_run, the sanity check: the images not seen are not misses
    rng = np.random.default_rng(0)
    truth = _ground_truth(rng)
    detections = _detections(truth, rng)
    metric = COCOEvaluator(["bbox"], backend=backend)  # type: ignore[arg-type]
    metric.set_ground_truth(truth, [0, 3, 7, 12])
    metric.update([detections[12], {k: v[:0] for k, v in detections[20].items()}], [12, 20])
    assert metric.evaluated_image_ids() == [12, 20]  # 20 has no detection (and no object): still evaluated
    ours = float(metric.compute()["bbox_map"])
    seen = {12: detections[12]}
    expected = _pycocotools(truth, _bbox_results(seen, [0, 3, 7, 12]), "bbox", image_ids=[12, 20])[0]
    everything = _pycocotools(truth, _bbox_results(seen, [0, 3, 7, 12]), "bbox")[0]
    assert ours == pytest.approx(expected, abs=1e-12) and expected > everything + 0.1


def test_keypoint_ap_equals_pycocotools_on_real_coco_annotations(peer: Path) -> None:
    truth = json.loads((peer / "mmpose" / "coco" / "annotations" / "person_keypoints_val2017.json").read_text())
    rng = np.random.default_rng(1)
    metric = COCOEvaluator(["keypoints"], num_keypoints=17)
    metric.set_ground_truth(truth, [0, 1])
    results = []
    for image in truth["images"]:
        people = [a for a in truth["annotations"] if a["image_id"] == image["id"]]
        boxes, points, scores = [], [], []
        for a in people:
            x, y, w, h = a["bbox"]
            k = torch.tensor(a["keypoints"], dtype=torch.float64).reshape(17, 3)
            k[:, :2] += torch.from_numpy(rng.normal(0, 0.03 * np.sqrt(a["area"]), (17, 2)))
            k[:, 2] = 1
            boxes.append([x, y, x + w, y + h])
            points.append(k)
            scores.append(float(rng.uniform(0.1, 1)))
            results.append(
                {"image_id": image["id"], "category_id": 1, "keypoints": k.flatten().tolist(), "score": scores[-1]}
            )
        metric.update(
            [
                {
                    "boxes": torch.tensor(boxes, dtype=torch.float64),
                    "labels": torch.ones(len(people), dtype=torch.int64),
                    "scores": torch.tensor(scores),
                    "keypoints": torch.stack(points),
                }
            ],
            [image["id"]],
        )
    ours = metric.compute()
    expected = _pycocotools(truth, results, "keypoints")
    got = [float(ours[f"keypoints_{k}"]) for k in ("map", "map_50", "map_75", "map_medium", "map_large")]
    np.testing.assert_allclose(got, expected[:5], rtol=0, atol=1e-12)
    assert 0.05 < got[0] < 0.99


def test_evaluator_without_detections_is_zero_not_a_crash() -> None:
    metric = COCOEvaluator(["bbox"])
    metric.set_ground_truth(copy.deepcopy(TINY_COCO), [0, 1, 2, 4])
    metric.update(
        [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)}], [40]
    )
    assert float(metric.compute()["bbox_map"]) == 0.0
