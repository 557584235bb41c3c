"""Labelling tools' exports read as they are: labelme, CVAT, Roboflow, Label Studio (COCO and brush PNGs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from lightseg.cli import main
from lightseg.datamodules import SegmentationFolderDataModule
from lightseg.datamodules.exports import read_class_list
from lightseg.errors import LightsegError

from conftest import ROOT
from layouts import (
    CVAT_COLOURS,
    EXPORT_CLASSES,
    export_label,
    roboflow_name,
    write_cvat,
    write_labelme,
    write_labelstudio_brush,
    write_labelstudio_coco,
    write_roboflow,
)


def _labels_by_id(data: SegmentationFolderDataModule) -> dict[str, np.ndarray]:
    data.setup("fit")
    found = {}
    for dataset in (data.train_dataset, data.val_dataset):
        for k, sample in enumerate(dataset.samples):  # type: ignore[union-attr]
            found[sample.id] = dataset.read_mask(k)  # type: ignore[union-attr]
    return found


@pytest.mark.parametrize("version", ["png", "old", "npy"])
def test_labelme_exports_of_every_version(version: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = write_labelme(tmp_path / "voc", 6, version)
    data = SegmentationFolderDataModule(str(root), val_fraction=0.3, num_workers=0)
    assert data.class_names == EXPORT_CLASSES  # _background_ read as background
    labels = _labels_by_id(data)
    assert sorted(labels) == [f"2011_{k:06d}" for k in range(6)]
    for key, label in labels.items():
        k = int(key[-6:])
        np.testing.assert_array_equal(label, export_label(k, void=k == 0))  # -1 / 255 = __ignore__ -> void
    assert data.layout.name == "labelme"
    assert "read as a labelme export (labelme2voc): 6 images, 3 classes" in caplog.text


def test_a_labelme_labels_file_with_ignore_entry(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("__ignore__\n_background_\ncat\ndog\n")
    assert read_class_list(labels).names == EXPORT_CLASSES


def test_cvat_segmentation_mask_export(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = write_cvat(tmp_path / "cvat", 6)
    data = SegmentationFolderDataModule(str(root), val_fraction=0.3, num_workers=0)
    assert data.class_names == EXPORT_CLASSES and data.colors == list(CVAT_COLOURS)
    labels = _labels_by_id(data)
    assert sorted(labels) == [f"frame_{k:06d}" for k in range(6)]  # default.txt, split by hash
    for key, label in labels.items():
        np.testing.assert_array_equal(label, export_label(int(key[-6:])))
    assert "read as a CVAT export (Segmentation mask 1.1): 6 images, 3 classes" in caplog.text

    named = write_cvat(tmp_path / "subsets", 5, {"train": [0, 1, 2], "val": [3, 4]})
    data = SegmentationFolderDataModule(str(named), num_workers=0)
    assert {k: [s.id for s in v] for k, v in data.samples().items()} == {
        "train": ["frame_000000", "frame_000001", "frame_000002"],
        "val": ["frame_000003", "frame_000004"],
    }


def test_cvat_labelmap_without_background_gets_black_background(tmp_path: Path) -> None:
    path = tmp_path / "labelmap.txt"
    path.write_text("# label:color_rgb:parts:actions\ncar:255,0,0::\nroad:0,0,255:lane:\n")
    classes = read_class_list(path)
    assert classes.names == ("background", "car", "road")
    assert classes.colors == [(0, 0, 0), (255, 0, 0), (0, 0, 255)]


def test_roboflow_semantic_masks_export(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = write_roboflow(tmp_path / "rf", {"train": [0, 1, 2, 3], "valid": [4, 5], "test": [6]})
    data = SegmentationFolderDataModule(str(root), num_workers=0)
    assert data.class_names == EXPORT_CLASSES
    samples = data.samples()
    assert {k: sorted(s.id for s in v) for k, v in samples.items()} == {
        "train": sorted(roboflow_name(k) for k in range(4)),
        "val": sorted(roboflow_name(k) for k in (4, 5)),
        "test": [roboflow_name(6)],
    }
    labels = _labels_by_id(data)
    for k in range(6):
        np.testing.assert_array_equal(labels[roboflow_name(k)], export_label(k))
    assert "read as a Roboflow export (Semantic Segmentation Masks): 7 images" in caplog.text


def test_label_studio_coco_export(tmp_path: Path) -> None:
    root = write_labelstudio_coco(tmp_path / "ls", 6)
    data = SegmentationFolderDataModule(str(root), val_fraction=0.3, num_workers=0)
    assert data.class_names == EXPORT_CLASSES  # category ids 0 and 1 are labels 1 and 2
    content = json.loads((root / "result.json").read_text())
    labels = _labels_by_id(data)
    assert sorted(labels) == [str(k) for k in range(6)]
    for key, label in labels.items():
        expected = np.zeros(label.shape, dtype=np.uint8)
        for annotation in content["annotations"]:
            if annotation["image_id"] == int(key):  # pycocotools' own rasterisation of the polygon
                rle = mask_utils.merge(mask_utils.frPyObjects(annotation["segmentation"], *label.shape))
                expected[mask_utils.decode(rle) > 0] = annotation["category_id"] + 1
        np.testing.assert_array_equal(label, expected)


def test_label_studio_brush_png_export(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = write_labelstudio_brush(tmp_path / "ls", 6)
    data = SegmentationFolderDataModule(str(root), val_fraction=0.3, num_workers=0)
    assert data.class_names == EXPORT_CLASSES  # the labels, in the order the project used them
    labels = _labels_by_id(data)
    assert sorted(labels) == [str(100 + k) for k in range(6)]  # the unannotated task left out
    for key, label in labels.items():
        np.testing.assert_array_equal(label, export_label(int(key) - 100))
    images = {s.id: s.image.name for v in data.samples().values() for s in v}
    assert images == {str(100 + k): f"shot{k}.jpg" for k in range(6)}  # the upload prefix removed
    assert "1 task(s) without a brush PNG left out" in caplog.text

    (root / "project-1-at-2026-12-01.json").unlink()
    with pytest.raises(LightsegError, match=r"brush PNGs, which name tasks, not images: put the project's JSON"):
        SegmentationFolderDataModule(str(root))


def test_class_lists_in_every_format(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("background\ncat\n\ndog\n")
    (tmp_path / "b.yaml").write_text("[background, cat, dog]\n")
    (tmp_path / "_classes.csv").write_text("Pixel Value, Class\n0, background\n1, cat\n2, dog\n")
    (tmp_path / "labelmap.txt").write_text("background:0,0,0::\ncat:1,2,3::\ndog:4,5,6::\n")
    for name in ("a.txt", "b.yaml", "_classes.csv", "labelmap.txt"):
        assert read_class_list(tmp_path / name).names == EXPORT_CLASSES, name
    (tmp_path / "gap.csv").write_text("Pixel Value, Class\n0, background\n2, dog\n")
    with pytest.raises(LightsegError, match=r"gap.csv: pixel values \[0, 2\] are not 0..1"):
        read_class_list(tmp_path / "gap.csv")
    (tmp_path / "twice.txt").write_text("background\ncat\ncat\n")
    with pytest.raises(LightsegError, match=r"class 'cat' is listed twice \(classes 1 and 2\)"):
        read_class_list(tmp_path / "twice.txt")
    with pytest.raises(LightsegError, match=r"class 'cat' is listed twice"):
        SegmentationFolderDataModule(str(tmp_path), class_names=["background", "cat", "cat"])


def test_a_folder_that_is_no_known_layout_says_what_was_looked_for(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    with pytest.raises(LightsegError, match=r"is not a layout lightseg recognises: expected images/ \+ masks/"):
        SegmentationFolderDataModule(str(tmp_path / "stuff"))
    with pytest.raises(LightsegError, match=r"data root .*nowhere does not exist"):
        SegmentationFolderDataModule(str(tmp_path / "nowhere"))


WRITERS = {
    "labelme": lambda root: write_labelme(root, 6),
    "cvat": lambda root: write_cvat(root, 6),
    "roboflow": lambda root: write_roboflow(root, {"train": [0, 1, 2, 3], "valid": [4, 5]}),
    "labelstudio-coco": lambda root: write_labelstudio_coco(root, 6),
    "labelstudio-brush": lambda root: write_labelstudio_brush(root, 6),
}


@pytest.mark.parametrize("tool", list(WRITERS))
def test_each_export_is_checked_and_trains_with_only_its_root(tool: str, tmp_path: Path) -> None:
    root = WRITERS[tool](tmp_path / "export")
    config = str(ROOT / "configs" / "semantic" / "folder_unet.yaml")
    common = [f"--data.init_args.root={root}", "--model.init_args.weights_backbone=null",
              "--model.init_args.backbone=resnet18", "--data.init_args.crop_size=16",
              "--data.init_args.batch_size=2"]  # fmt: skip
    main(["data", "check", "--config", config, *common, "--out", str(tmp_path / "check")])  # exit 0: returns
    report = json.loads((tmp_path / "check" / "report.json").read_text())
    assert report["classes"] == list(EXPORT_CLASSES) and report["error_counts"] == {}
    assert sum(s["samples"] for s in report["splits"].values()) == 6
    main(["fit", "--config", config, *common, "--trainer.max_steps=2", "--trainer.limit_val_batches=1",
          "--trainer.enable_progress_bar=false"])  # fmt: skip
    last = torch.load(next((tmp_path / "runs").rglob("last.ckpt")), weights_only=True, map_location="cpu")
    assert last["hyper_parameters"]["num_classes"] == 3 and last["global_step"] == 2


def test_a_small_set_keeps_every_class_in_training(tmp_path: Path) -> None:
    root = write_labelme(tmp_path / "three", 4)
    (root / "JPEGImages" / "2011_000002.jpg").unlink()  # scenes 0 and 3: a cat each; scene 1: the only dog
    (root / "SegmentationClass" / "2011_000002.png").unlink()
    for seed in range(8):
        data = SegmentationFolderDataModule(str(root), val_fraction=0.2, split_seed=seed)
        samples = data.samples()
        assert len(samples["train"]) == 2 and len(samples["val"]) == 1, seed
        assert "2011_000001" in [s.id for s in samples["train"]], seed  # the dog stays in training


def test_validate_on_train_says_what_the_score_is(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_labelme(tmp_path / "three", 3)
    data = SegmentationFolderDataModule(str(root), validate_on_train=True)
    samples = data.samples()
    assert [s.id for s in samples["val"]] == [s.id for s in samples["train"]] == [f"2011_{k:06d}" for k in range(3)]
    main(["fit", "--config", str(ROOT / "configs" / "semantic" / "folder_unet.yaml"), f"--data.init_args.root={root}",
          "--data.init_args.validate_on_train=true", "--model.init_args.weights_backbone=null",
          "--model.init_args.backbone=resnet18", "--data.init_args.crop_size=16", "--data.init_args.batch_size=2",
          "--trainer.max_steps=1", "--trainer.enable_progress_bar=false"])  # fmt: skip
    err = capsys.readouterr().err
    assert "warning: validate_on_train is set: the validation score is measured on the training images" in err


def test_the_data_check_takes_fits_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_cvat(tmp_path / "cvat", 4)
    config = str(ROOT / "configs" / "semantic" / "folder_unet.yaml")
    fit_options = ["--model.init_args.weights_backbone", "null", "--trainer.max_epochs=3", "--seed_everything", "1",
                   "--ckpt_path", "last", "--model.init_args.num_classes=3"]  # fmt: skip
    main(["data", "check", "--config", config, f"--data.init_args.root={root}", *fit_options,
          "--out", str(tmp_path / "check")])  # fmt: skip
    assert json.loads((tmp_path / "check" / "report.json").read_text())["error_counts"] == {}
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:  # a class count the data disagrees with: one line, as fit says it
        main(["data", "check", "--config", config, f"--data.init_args.root={root}", "--model.init_args.num_classes=5"])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1
    assert "model num_classes=5 disagrees with the data: SegmentationFolderDataModule has 3 classes" in err[0]
