"""Cityscapes panoptic as downloaded (createPanopticImgs' files or instance ids), scored as cityscapesScripts does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightseg.cli import main
from lightseg.coco_masks import id_to_rgb, rgb_to_id
from lightseg.datamodules import CityscapesPanopticDataModule
from lightseg.errors import LightsegError
from lightseg.metrics.panoptic import pq_compute

FRAMES = ("aachen_000000_000019", "bonn_000001_000019", "bonn_000002_000019")


def _instance_ids(k: int) -> np.ndarray:
    ids = np.full((32, 64), 7, np.uint16)  # road (the files are 16-bit)
    ids[:10] = 8  # sidewalk
    ids[:3] = 0  # unlabeled: not evaluated
    ids[12:20, 4 + k : 14 + k] = 26001  # two cars
    ids[12:22, 30:44] = 26002
    ids[24:30, 2:12] = 24  # a group of people: a crowd region
    ids[24:30, 50:60] = 29001  # a caravan: not evaluated
    ids[22:31, 20:26] = 24000 + k + 1  # a person
    return ids


def cityscapes(root: Path, split: str = "val") -> Path:
    """A tiny Cityscapes in its download layout: images and ``*_gtFine_instanceIds.png``."""
    rng = np.random.default_rng(0)
    for k, frame in enumerate(FRAMES):
        city = frame.split("_")[0]
        for folder, name, array in (
            ("leftImg8bit", f"{frame}_leftImg8bit.png", rng.integers(0, 255, (32, 64, 3), dtype=np.uint8)),
            ("gtFine", f"{frame}_gtFine_instanceIds.png", _instance_ids(k)),
        ):
            path = root / folder / split / city / name
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
    return root


def _targets(data: CityscapesPanopticDataModule) -> list[dict[str, torch.Tensor]]:
    data.setup("validate")
    return [data.val_dataset[i]["target"] for i in range(len(data.val_dataset))]


def test_the_instance_ids_read_as_create_panoptic_imgs_writes_them(tmp_path: Path) -> None:
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    root = cityscapes(tmp_path)
    data = CityscapesPanopticDataModule(str(root), num_workers=0)
    assert data.num_classes == 19 and data.thing_classes == [11, 12, 13, 14, 15, 16, 17, 18]
    assert data.describe().category_ids[:2] == (7, 8) and data.class_names[13] == "car"
    on_the_fly = _targets(data)
    first = on_the_fly[0]
    # road, sidewalk, the crowd, the person, two cars: unlabeled and the caravan are void
    assert first["labels"].tolist() == [0, 1, 11, 11, 13, 13] and first["iscrowd"].tolist() == [0, 0, 1, 0, 0, 0]
    assert int((first["segments"] == 0).sum()) == 3 * 64 + 6 * 10
    assert first["isthing"].tolist() == [False, False, True, True, True, True]
    convert2panoptic(str(root / "gtFine"), setNames=["val"])
    assert (root / "gtFine" / "cityscapes_panoptic_val.json").is_file()
    from_files = _targets(CityscapesPanopticDataModule(str(root), num_workers=0))
    for ours, theirs in zip(on_the_fly, from_files, strict=True):
        for key in ("segments", "labels", "iscrowd", "isthing", "segment_ids"):
            assert torch.equal(ours[key], theirs[key]), key


def test_pq_on_cityscapes_files_equals_cityscapes_scripts(tmp_path: Path) -> None:
    from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    root = cityscapes(tmp_path / "cityscapes")
    convert2panoptic(str(root / "gtFine"), setNames=["val"])
    gt_json = root / "gtFine" / "cityscapes_panoptic_val.json"
    truth = json.loads(gt_json.read_text())
    predictions = tmp_path / "pred"
    predictions.mkdir()
    annotations = []
    for k, annotation in enumerate(truth["annotations"]):
        ids = rgb_to_id(np.asarray(Image.open(gt_json.with_suffix("") / annotation["file_name"])))
        segments = [dict(s) for s in annotation["segments_info"] if not s["iscrowd"]]
        if k == 0:
            ids[ids == 26002] = 0  # a car missed
        if k == 1:
            ids[12:16][ids[12:16] == 26001] = 7000 + 7  # half a car taken by the road: IoU near 0.5
            segments[0]["category_id"] = 8  # the road called sidewalk
        if k == 2:
            ids[(ids == 24) | (ids == 7)] = 26009  # the crowd and the road called one car
            segments = [s for s in segments if s["id"] != 7] + [{"id": 26009, "category_id": 26}]
        present = set(np.unique(ids).tolist())
        segments = [s for s in segments if s["id"] in present]
        ids[~np.isin(ids, [s["id"] for s in segments])] = 0
        Image.fromarray(id_to_rgb(ids)).save(predictions / annotation["file_name"])
        annotations.append({"image_id": annotation["image_id"], "file_name": annotation["file_name"],
                            "segments_info": segments})  # fmt: skip
    pred_json = tmp_path / "pred.json"
    pred_json.write_text(json.dumps({"annotations": annotations, "categories": truth["categories"]}))
    theirs = evaluatePanoptic(str(gt_json), str(gt_json.with_suffix("")), str(pred_json), str(predictions),
                              str(tmp_path / "results.json"))  # fmt: skip
    ours = pq_compute(gt_json, pred_json, gt_json.with_suffix(""), predictions)
    assert 0.2 < ours["All"]["pq"] < 0.95
    for kind in ("All", "Things", "Stuff"):
        for score in ("pq", "sq", "rq", "n"):
            assert ours[kind][score] == pytest.approx(theirs[kind][score], abs=1e-9), (kind, score)
    for category, scores in theirs["per_class"].items():
        for score in ("pq", "sq", "rq"):
            assert ours["per_class"][int(category)][score] == pytest.approx(scores[score], abs=1e-9)


def test_a_missing_layout_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(LightsegError, match=r"leftImg8bit/val does not exist; expected the Cityscapes layout"):
        _targets(CityscapesPanopticDataModule(str(tmp_path), num_workers=0))
    (tmp_path / "leftImg8bit" / "val").mkdir(parents=True)
    with pytest.raises(LightsegError, match=r"holds no \*/\*_gtFine_instanceIds.png and .* no cityscapes_panoptic_val"):
        _targets(CityscapesPanopticDataModule(str(tmp_path), num_workers=0))


def test_predictions_in_cityscapes_format_are_what_cityscapes_scripts_evaluates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    root = cityscapes(tmp_path / "cityscapes")
    convert2panoptic(str(root / "gtFine"), setNames=["val"])
    model = ["--model=PanopticSegmentationTask", "--model.arch=panoptic_fpn_resnet18", "--model.weights_backbone=null",
             "--model.min_size=32", "--model.max_size=64", "--model.stuff_area=1"]  # fmt: skip
    data = ["--data=CityscapesPanopticDataModule", f"--data.root={root}", "--data.num_workers=0",
            f"--data.predict_dir={root / 'leftImg8bit' / 'val'}"]  # fmt: skip
    main(["predict", *model, *data, "--prediction.output_dir=out", "--prediction.format=cityscapes",
          "--trainer.enable_progress_bar=false"])  # fmt: skip
    written = json.loads(Path("out/panoptic.json").read_text())
    assert [a["image_id"] for a in written["annotations"]] == list(FRAMES)  # the frames, as the ground truth's
    assert {c["id"] for c in written["categories"]} == {7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27,
                                                        28, 31, 32, 33}  # fmt: skip
    gt_json = root / "gtFine" / "cityscapes_panoptic_val.json"
    # the files are found by the annotations' file_name, in sub-folders as the input's
    theirs = evaluatePanoptic(str(gt_json), str(gt_json.with_suffix("")), "out/panoptic.json", "out/panoptic",
                              str(tmp_path / "results.json"))  # fmt: skip
    ours = pq_compute(gt_json, "out/panoptic.json", gt_json.with_suffix(""), "out/panoptic")
    assert ours["All"]["n"] == theirs["All"]["n"] > 0  # read, matched and counted by both
    assert ours["All"]["pq"] == pytest.approx(theirs["All"]["pq"], abs=1e-9)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["predict", *model, *data, "--prediction.output_dir=out2", "--prediction.format=voc"])
    assert "--prediction.format voc writes semantic masks; a panoptic model writes" in capsys.readouterr().err
