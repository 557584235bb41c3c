"""COCO as a semantic data set: torchvision's COCO-VOC label maps, exactly; every category; training on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from lightseg.cli import main
from lightseg.datamodules import COCOSemanticDataModule, ShapesInstanceDataModule
from lightseg.datamodules.coco_semantic import VOC_CATEGORY_IDS
from lightseg.errors import LightsegError

# torchvision references/segmentation/train.py: CAT_LIST, background first
TORCHVISION_CAT_LIST = [0, 5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72]


def torchvision_label_map(
    annotations: list[dict[str, Any]], cat_list: list[int], height: int, width: int
) -> np.ndarray:
    """The reference: torchvision's FilterAndRemapCocoCategories + ConvertCocoPolysToMask, written out with torch."""
    from pycocotools import mask as coco_mask

    kept = [dict(a, category_id=cat_list.index(a["category_id"])) for a in annotations if a["category_id"] in cat_list]
    if not kept:
        return np.zeros((height, width), dtype=np.uint8)
    masks = []
    for annotation in kept:
        rles = coco_mask.frPyObjects(annotation["segmentation"], height, width)
        mask = coco_mask.decode(rles)
        if mask.ndim < 3:
            mask = mask[..., None]
        masks.append(torch.as_tensor(mask, dtype=torch.uint8).any(dim=2))
    stacked = torch.stack(masks)
    cats = torch.as_tensor([a["category_id"] for a in kept], dtype=stacked.dtype)
    target, _ = (stacked * cats[:, None, None]).max(dim=0)
    target[stacked.sum(0) > 1] = 255
    return target.numpy()


def _reference_maps(root: Path, annotation_file: str, images: str, cat_list: list[int]) -> dict[str, np.ndarray]:
    content = json.loads((root / annotation_file).read_text())
    maps = {}
    for image in content["images"]:
        width, height = Image.open(root / images / image["file_name"]).size
        annotations = [a for a in content["annotations"] if a["image_id"] == image["id"]]
        maps[str(image["id"])] = torchvision_label_map(annotations, cat_list, height, width)
    return maps


def test_voc_protocol_gives_torchvisions_label_maps_on_real_coco(peer: Path) -> None:
    root = peer / "mmpose" / "coco"
    data = COCOSemanticDataModule(
        str(root), val_annotations="annotations/person_keypoints_val2017.json", eval_size=None, num_workers=0
    )
    assert data.num_classes == 21 and data.class_names[15] == "person"
    data.setup("validate")
    dataset = data.val_dataset
    expected = _reference_maps(root, "annotations/person_keypoints_val2017.json", "val2017", TORCHVISION_CAT_LIST)
    assert [s.id for s in dataset.samples] == sorted(expected, key=int)  # type: ignore[union-attr]
    overlaps = 0
    for k, sample in enumerate(dataset.samples):  # type: ignore[union-attr]
        ours = dataset.read_mask(k)  # type: ignore[union-attr]
        np.testing.assert_array_equal(ours, expected[sample.id])
        assert set(np.unique(ours).tolist()) <= {0, 15, 255}
        overlaps += int((ours == 255).sum())
        item = dataset[k]
        np.testing.assert_array_equal(item["mask"].numpy(), expected[sample.id])
    assert overlaps > 0  # the fixture's people overlap: those pixels are ignored, as in torchvision


def test_every_category_and_the_refusal_of_other_ids(peer: Path) -> None:
    root = peer / "datumaro" / "coco_instances"
    files = {"train_images": "images/train", "train_annotations": "annotations/instances_train.json",
             "val_images": "images/val", "val_annotations": "annotations/instances_val.json"}  # fmt: skip
    with pytest.raises(LightsegError, match=r"does not use COCO's category ids \(category 1 is 'a', not 'person'\)"):
        COCOSemanticDataModule(str(root), **files, num_workers=0).setup("validate")  # type: ignore[arg-type]
    data = COCOSemanticDataModule(str(root), "all", **files, eval_size=None, num_workers=0)  # type: ignore[arg-type]
    assert data.class_names == ("background", "a", "b", "c") and data.num_classes == 4
    data.setup("validate")
    expected = _reference_maps(root, files["val_annotations"], files["val_images"], [0, 1, 2, 4])
    mask = data.val_dataset.read_mask(0)  # type: ignore[union-attr]
    np.testing.assert_array_equal(mask, expected["40"])
    assert set(np.unique(mask).tolist()) == {0, 2, 255}  # the crowd RLE, and the polygon inside it: overlap


def test_training_filter_overlaps_eval_size_and_a_few_steps(tmp_path: Path) -> None:
    shapes = ShapesInstanceDataModule(root=str(tmp_path / "shapes"), num_train=8, num_val=3, num_test=2, image_size=48)
    shapes.prepare_data()
    root = shapes.data_dir
    content = json.loads((root / "annotations" / "instances_train.json").read_text())
    areas = {image["id"]: 0.0 for image in content["images"]}
    for annotation in content["annotations"]:
        areas[annotation["image_id"]] += annotation["area"]
    big = next(i for i, area in areas.items() if area > 0)
    areas[big] = 1001.0  # one image over torchvision's 1,000-pixel threshold, the others below it
    for annotation in content["annotations"]:
        annotation["area"] = 1001.0 if annotation["image_id"] == big else 1.0
    (root / "annotations" / "instances_train.json").write_text(json.dumps(content))
    files = {"train_images": "images/train", "train_annotations": "annotations/instances_train.json",
             "val_images": "images/val", "val_annotations": "annotations/instances_val.json"}  # fmt: skip
    data = COCOSemanticDataModule(str(root), "all", **files, eval_size=64, num_workers=0, batch_size=2)  # type: ignore[arg-type]
    data.setup("fit")
    assert [s.id for s in data.train_dataset.samples] == [str(big)]  # type: ignore[union-attr]
    item = data.val_dataset[0]  # type: ignore[index]
    assert item["image"].shape[-2:] == (64, 64) and item["mask"].shape == (64, 64)  # shorter side to eval_size
    assert set(item["mask"].unique().tolist()) <= set(range(data.num_classes)) | {255}

    config = {
        "trainer": {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, "enable_checkpointing": False,
                    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                               "init_args": {"save_dir": str(tmp_path / "runs"), "name": "coco"}}},
        "model": {"class_path": "SemanticSegmentationTask",
                  "init_args": {"arch": "unet", "backbone": "resnet18", "weights_backbone": None}},
        "data": {"class_path": "COCOSemanticDataModule",
                 "init_args": {"root": str(root), "categories": "all", **files, "crop_size": 32, "eval_size": 48,
                               "train_skip_empty": False, "batch_size": 2, "num_workers": 0}},
    }  # fmt: skip
    (tmp_path / "run.yaml").write_text(json.dumps(config))
    main(["fit", "--config", str(tmp_path / "run.yaml")])
    rows = (tmp_path / "runs" / "coco" / "version_0" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    values = [dict(zip(header, row.split(","), strict=True)) for row in rows[1:]]
    miou = [float(v["val_miou"]) for v in values if v.get("val_miou")]
    assert len(miou) == 1 and 0.0 <= miou[0] <= 1.0


def test_voc_category_ids_are_torchvisions() -> None:
    assert [0, *VOC_CATEGORY_IDS] == TORCHVISION_CAT_LIST
