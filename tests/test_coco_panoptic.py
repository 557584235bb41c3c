"""COCO panoptic files read as downloaded: the peer fixture, the shapes set, and a line for each broken input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from lightseg.coco_masks import id_to_rgb, semantic_map
from lightseg.colors import class_palette
from lightseg.data_check import check_data
from lightseg.datamodules.coco_panoptic import COCOPanopticDataModule
from lightseg.datamodules.panoptic_files import COCOPanopticDataset, PanopticAnnotations
from lightseg.datamodules.shapes_panoptic import ShapesPanopticDataModule, write_panoptic
from lightseg.errors import LightsegError
from lightseg.metrics.panoptic import pq_compute

CATEGORIES = [{"id": 1, "name": "person", "isthing": 1, "color": [220, 20, 60]},
              {"id": 92, "name": "grass", "isthing": 0, "color": [152, 251, 152]}]  # fmt: skip


def test_the_peer_fixture_reads_with_its_crowd_segment(peer: Path) -> None:
    root = peer / "datumaro" / "coco_panoptic"
    annotations = PanopticAnnotations(root / "annotations" / "panoptic_val.json")
    assert annotations.categories.names == ("a", "b") and annotations.categories.isthing == (False, False)
    item = COCOPanopticDataset(root / "images" / "val", annotations)[0]
    image, target = item["image"], item["target"]
    assert tuple(image.shape) == (3, 10, 5) and image.dtype == torch.float32
    segments = target["segments"]
    assert segments.shape == (10, 5) and sorted(segments.unique().tolist()) == [0, 1, 2]
    assert [(segments == n).sum().item() for n in (1, 2)] == [20, 20]  # the JSON's areas
    assert target["labels"].tolist() == [0, 1] and target["iscrowd"].tolist() == [False, True]
    assert target["segment_ids"].tolist() == [7, 20] and target["image_id"] == 40
    semantic = semantic_map(target)
    assert semantic[segments == 0].eq(255).all() and semantic[segments == 2].eq(1).all()


def _write(tmp_path: Path, ids: np.ndarray, segments: list[dict[str, Any]], categories: Any = CATEGORIES) -> Path:
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "panoptic").mkdir(exist_ok=True)
    Image.fromarray(np.zeros((*ids.shape, 3), np.uint8)).save(tmp_path / "images" / "a.jpg")
    Image.fromarray(id_to_rgb(ids)).save(tmp_path / "panoptic" / "a.png")
    content = {"images": [{"id": 3, "file_name": "a.jpg", "height": ids.shape[0], "width": ids.shape[1]}],
               "annotations": [{"image_id": 3, "file_name": "a.png", "segments_info": segments}],
               "categories": categories}  # fmt: skip
    path = tmp_path / "panoptic.json"
    path.write_text(json.dumps(content))
    return path


def _first(tmp_path: Path, path: Path) -> Any:
    item = COCOPanopticDataset(tmp_path / "images", PanopticAnnotations(path))[0]
    return item["image"], item["target"]


def test_a_thing_and_stuff_image_becomes_numbered_segments(tmp_path: Path) -> None:
    ids = np.zeros((6, 8), np.uint32)
    ids[:, :4] = 70000  # grass: an id above 65535 (three bytes)
    ids[1:3, 5:7] = 513
    segments = [{"id": 513, "category_id": 1, "iscrowd": 0}, {"id": 70000, "category_id": 92, "iscrowd": 0}]
    _, target = _first(tmp_path, _write(tmp_path, ids, segments))
    expected = np.zeros((6, 8), np.int64)
    expected[:, :4], expected[1:3, 5:7] = 2, 1
    assert (target["segments"].numpy() == expected).all()
    assert target["labels"].tolist() == [0, 1] and target["isthing"].tolist() == [True, False]
    assert PanopticAnnotations(tmp_path / "panoptic.json").categories.colors == ((220, 20, 60), (152, 251, 152))


@pytest.mark.parametrize(
    ("change", "words"),
    [("stray colour", "a.png: the colour RGB(9, 0, 0) (segment id 9) has no segment in panoptic.json"),
     ("segment without pixels", "a.png: segment 5 of panoptic.json has no pixel in the PNG"),
     ("unknown category", "a.png: segments of category 7, which panoptic.json does not list among its categories"),
     ("repeated id", "a.png: the JSON lists segment id 1 more than once"),
     ("no png", "a.png: no such file (the panoptic PNG of panoptic.json's annotation)"),
     ("no isthing", "category {'id': 1, 'name': 'person'} lacks an id or isthing"),
     ("instances file", "not a COCO panoptic file (instances_*.json is read by COCODataModule)")],
)  # fmt: skip
def test_a_broken_panoptic_file_is_one_line_naming_it(change: str, words: str, tmp_path: Path) -> None:
    ids = np.ones((4, 4), np.uint32)
    segments: list[dict[str, Any]] = [{"id": 1, "category_id": 1, "iscrowd": 0}]
    categories: Any = CATEGORIES
    if change == "stray colour":
        ids[0, 0] = 9
    elif change == "segment without pixels":
        segments.append({"id": 5, "category_id": 92, "iscrowd": 0})
    elif change == "unknown category":
        segments[0]["category_id"] = 7
    elif change == "repeated id":
        segments.append({"id": 1, "category_id": 92, "iscrowd": 0})
    elif change == "no isthing":
        categories = [{"id": 1, "name": "person"}]
    path = _write(tmp_path, ids, segments, categories)
    if change == "no png":
        (tmp_path / "panoptic" / "a.png").unlink()
    if change == "instances file":
        content = json.loads(path.read_text())
        content["annotations"] = [{"image_id": 3, "id": 1, "category_id": 1, "segmentation": [], "bbox": [0, 0, 1, 1]}]
        path.write_text(json.dumps(content))
    with pytest.raises(LightsegError) as error:
        _first(tmp_path, path)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_the_shapes_panoptic_set_is_written_in_coco_panoptic_form(tmp_path: Path) -> None:
    root = write_panoptic(tmp_path / "shapes", {"train": 6, "val": 2}, size=48, seed=1)
    annotations = PanopticAnnotations(root / "annotations" / "panoptic_train.json")
    assert annotations.categories.names == ("circle", "square", "triangle", "smooth", "stripes", "checks")
    assert annotations.categories.isthing == (True, True, True, False, False, False)
    dataset = COCOPanopticDataset(root / "images" / "train", annotations)
    for index in range(len(dataset)):
        item = dataset[index]  # every PNG agrees with its segments (the reader checks)
        image, target = item["image"], item["target"]
        labels, segments = target["labels"], target["segments"]
        assert tuple(image.shape) == (3, 48, 48) and 1 <= int(target["isthing"].sum()) <= 3
        assert 1 <= int((~target["isthing"]).sum()) <= 2 and not target["iscrowd"].any()
        assert (segments == 0).any()  # the void band around the shapes
        assert sorted(segments.unique().tolist()) == list(range(len(labels) + 1))
    # scored against itself, every category that occurs is perfect
    results = pq_compute(root / "annotations" / "panoptic_train.json", root / "annotations" / "panoptic_train.json")
    assert results["All"]["pq"] == 1.0 and results["Things"]["n"] == 3 and results["Stuff"]["n"] >= 2
    again = write_panoptic(tmp_path / "again", {"train": 6, "val": 2}, size=48, seed=1)
    for name in ("annotations/panoptic_train.json", "annotations/panoptic_train/000003.png", "images/val/000002.jpg"):
        assert (root / name).read_bytes() == (again / name).read_bytes(), name


def test_the_panoptic_data_modules_give_list_batches_with_augmented_maps(peer: Path, tmp_path: Path) -> None:
    root = peer / "datumaro" / "coco_panoptic"
    # the fixture's training PNG (5x5) does not fit its image (10x5): refused, naming it
    module = COCOPanopticDataModule(
        str(root), train_images="images/train", train_annotations="annotations/panoptic_train.json",
        val_images="images/val", val_annotations="annotations/panoptic_val.json", num_workers=0,
    )  # fmt: skip
    with pytest.raises(
        LightsegError, match=r"panoptic_train/a.png is 5x5 pixels \(W x H\) but its image a.jpg is 10x5"
    ):
        module.make_dataset("train")[0]
    module = COCOPanopticDataModule(
        str(root), train_images="images/val", train_annotations="annotations/panoptic_val.json",
        val_images="images/val", val_annotations="annotations/panoptic_val.json", crop_size=8, num_workers=0,
        persistent_workers=False,
    )  # fmt: skip
    assert module.num_classes == 2 and module.class_names == ("a", "b")
    # no colours in the file: the distinct palette from its first colour on (black is no category's)
    assert module.class_colors == tuple(tuple(int(v) for v in c) for c in class_palette()[1:3])
    module.setup("fit")
    batch = next(iter(module.val_dataloader()))
    assert len(batch["images"]) == 1 and batch["size"] == [(10, 5)] and batch["targets"][0]["image_id"] == 40
    batch = next(iter(module.train_dataloader()))
    image, target = batch["images"][0], batch["targets"][0]
    assert tuple(image.shape[-2:]) == (8, 8) == tuple(target["segments"].shape)  # cropped, padded with void
    assert set(target["segments"].unique().tolist()) <= set(range(len(target["labels"]) + 1))
    assert int((target["segments"] == 0).sum()) >= 3 * 8  # 5 pixels wide: 3 columns of void padding

    shapes = ShapesPanopticDataModule(root=str(tmp_path), num_train=4, num_val=2, num_test=2, image_size=32,
                                      batch_size=2)  # fmt: skip
    assert shapes.num_classes == 6 and shapes.class_names[3:] == ("smooth", "stripes", "checks")
    shapes.setup("fit")
    batch = next(iter(shapes.train_dataloader()))
    assert len(batch["images"]) == 2 and all(t["segments"].shape == (32, 32) for t in batch["targets"])
    assert shapes.data_dir.is_dir() and shapes.data_dir.parent == tmp_path


def test_the_data_check_reads_panoptic_data_and_names_a_broken_png(tmp_path: Path) -> None:
    shapes = ShapesPanopticDataModule(root=str(tmp_path), num_train=6, num_val=3, num_test=3, image_size=32)
    shapes.prepare_data()
    report = check_data(shapes, workers=2, pictures=2)
    assert report.errors == [] and set(report.splits) == {"train", "val", "test"}
    train = report.splits["train"]
    assert train.samples == 6 and (train.class_pixels > 0).all() and train.ignore_pixels > 0  # every class; void
    assert len(report.pictures["train"]) == 2 and report.pictures["train"][0][1].shape == (32, 32)
    # a colour without a segment in one PNG: an error naming that file, the others still read
    png = shapes.data_dir / "annotations" / "panoptic_val" / "000002.png"
    picture = np.asarray(Image.open(png)).copy()
    picture[0, 0] = (9, 0, 0)
    Image.fromarray(picture).save(png)
    report = check_data(shapes, workers=2)
    assert [(f.kind, f.split, f.file) for f in report.errors] == [("bad_labels", "val", str(png))]
    assert "the colour RGB(9, 0, 0) (segment id 9) has no segment" in report.errors[0].detail
    assert report.splits["val"].samples == 3
