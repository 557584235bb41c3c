"""``lightseg data check``: exact counts, every kind of problem named with its file, the exit status."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightseg.cli import main
from lightseg.colors import class_palette
from lightseg.data_check import check_data
from lightseg.datamodules import SegmentationFolderDataModule, ShapesInstanceDataModule, VOCDataModule

from conftest import ROOT
from layouts import FOLDER_COLORS, MIXED_SIZES, label_for, write_folder, write_voc

CLASSES = ["background", "circle", "square", "triangle"]
NAMES = [f"img_{k:03d}" for k in range(10)]


def _config(path: Path, root: Path, **init_args: object) -> Path:
    data = {"class_path": "SegmentationFolderDataModule",
            "init_args": {"root": str(root), "class_names": CLASSES, "val_fraction": 0.3, **init_args}}  # fmt: skip
    # model and trainer are there as in a real run config: the check reads only data
    path.write_text(json.dumps({"model": {"class_path": "SemanticSegmentationTask"}, "trainer": {"max_epochs": 3},
                                "data": data}))  # fmt: skip
    return path


def _run(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0


def test_a_clean_folder_is_counted_exactly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_folder(tmp_path / "set", NAMES, "index")
    out = tmp_path / "check"
    assert _run(["data", "check", "--config", str(_config(tmp_path / "run.yaml", root)), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "no problem found" in printed and "train" in printed and "8-bit index" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["error_counts"] == {} and report["findings"] == []
    data = SegmentationFolderDataModule(str(root), CLASSES, val_fraction=0.3)
    for split, samples in data.samples().items():
        if not samples:
            assert split not in report["splits"]
            continue
        labels = [label_for(NAMES.index(s.id), 4, MIXED_SIZES[NAMES.index(s.id) % 5]) for s in samples]
        pixels = np.bincount(np.concatenate([m[m != 255] for m in labels]), minlength=4)
        images = [sum(int((m == c).any()) for m in labels) for c in range(4)]
        entry = report["splits"][split]
        assert entry["samples"] == len(samples)
        assert [entry["classes"][c]["pixels"] for c in CLASSES] == pixels.tolist()
        assert [entry["classes"][c]["images"] for c in CLASSES] == images
        assert entry["ignore_pixels"] == sum(int((m == 255).sum()) for m in labels)
        heights = sorted(m.shape[0] for m in labels)
        assert entry["image_size"]["min"][0] == heights[0] and entry["image_size"]["max"][0] == heights[-1]
        assert entry["mask_formats"] == {"8-bit index": len(samples)}
    picture = Image.open(out / "samples.png")
    assert picture.height == 2 * (160 + 6) + 18 + 4 + 6  # a row per split, one legend row (4 classes + ignore)
    pixels = np.asarray(picture.convert("RGB"))
    for colour in class_palette()[[1, 2, 3, 255]]:  # every class colour drawn (in the masks and in the legend)
        assert (pixels == colour).all(-1).sum() > 100


def test_every_problem_is_named_with_its_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_folder(tmp_path / "set", NAMES, "index")
    Image.fromarray(np.full((12, 16), 7, np.uint8)).save(root / "masks" / "img_003.png")  # a value beyond the classes
    (root / "masks" / "img_005.png").unlink()  # an image without a mask
    Image.fromarray(np.zeros((12, 16), np.uint8)).save(root / "masks" / "stray.png")  # a mask without an image
    (root / "images" / "img_008.jpg").write_bytes(b"not a jpeg")  # a corrupt image
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "masks" / "img_004.png")  # a mask of another size
    # the same picture twice, under two names that the hash split puts in train and val
    (root / "images" / "img_006.jpg").write_bytes((root / "images" / "img_001.jpg").read_bytes())
    out = tmp_path / "check"
    config = _config(tmp_path / "run.yaml", root)
    assert _run(["data", "check", "--config", str(config), "--out", str(out), "--workers", "2"]) == 1
    report = json.loads((out / "report.json").read_text())
    assert report["error_counts"] == {
        "bad_labels": 1, "leakage": 1, "missing_mask": 1, "orphan_mask": 1, "size_mismatch": 1, "unreadable_image": 1,
    }  # fmt: skip
    by_kind = {f["kind"]: f for f in report["findings"]}
    assert by_kind["bad_labels"]["file"].endswith("img_003.png")
    assert by_kind["bad_labels"]["detail"] == "values 7 are not classes (0..3, 255 = ignore)"
    assert by_kind["missing_mask"]["file"].endswith("img_005.jpg")
    assert by_kind["orphan_mask"]["file"].endswith("stray.png")
    assert by_kind["unreadable_image"]["file"].endswith("img_008.jpg")
    assert by_kind["size_mismatch"]["detail"] == "image is (9, 24), mask is (5, 5) (H, W)"
    assert by_kind["leakage"]["file"].endswith(("img_001.jpg", "img_006.jpg"))
    assert "identical to" in by_kind["leakage"]["detail"]
    printed = capsys.readouterr()
    assert "values 7 are not classes" in printed.out and "6 errors found" in printed.err
    # what the checker reports also stops training, in one line that names the file
    assert _run(["fit", "--config", str(config), "--trainer.max_epochs", "1", "--trainer.logger", "false",
                 "--data.init_args.num_workers", "0", "--model.init_args.arch", "unet",
                 "--model.init_args.backbone", "resnet18", "--model.init_args.weights_backbone", "null",
                 "--trainer.default_root_dir", str(tmp_path / "runs")]) == 2  # fmt: skip
    error = capsys.readouterr().err
    assert "mask(s) without an image of the same name (e.g. " in error and "stray.png" in error


def test_colours_not_in_the_table_and_the_ambiguous_binary_case(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "rgb", NAMES, "rgb")
    colours = [(0, 0, 0), (255, 0, 0), (9, 9, 9), (0, 0, 255)]  # square's green is missing
    report = check_data(SegmentationFolderDataModule(str(root), CLASSES, colors=colours, val_fraction=0.3), 1)
    bad = [f for f in report.errors if f.kind == "bad_labels"]
    squares = [n for k, n in enumerate(NAMES) if 1 + k % 3 == 2]
    assert sorted(Path(f.file).stem for f in bad) == squares
    assert bad[0].detail == f"colours {FOLDER_COLORS[2]} are not classes"

    binary = write_folder(tmp_path / "binary", NAMES, "binary")
    report = check_data(SegmentationFolderDataModule(str(binary), ["background", "object"]), 1)
    assert [f.kind for f in report.errors] == ["split"]
    assert "set mask_format: binary" in report.errors[0].detail


def test_official_counts_and_detection_sets(tmp_path: Path) -> None:
    write_voc(tmp_path / "voc", {"train": ["a", "b"], "val": ["c"]})
    report = check_data(VOCDataModule(str(tmp_path / "voc")), 1)
    warnings = {f.split: f.detail for f in report.findings if f.kind == "count"}
    assert warnings == {"train": "2 samples; the official release has 1,464",
                        "val": "1 samples; the official release has 1,449"}  # fmt: skip
    assert report.errors == []

    data = ShapesInstanceDataModule(root=str(tmp_path / "shapes"), num_train=6, num_val=3, num_test=2, image_size=48)
    data.prepare_data()
    report = check_data(data, 1)
    assert list(report.splits) == ["train", "val", "test"] and report.errors == []
    content = json.loads((data.data_dir / "annotations" / "instances_val.json").read_text())
    summary = report.to_json()["splits"]["val"]
    for category in content["categories"]:
        usable = [a for a in content["annotations"] if a["category_id"] == category["id"] and not a.get("iscrowd")]
        assert summary["classes"][category["name"]]["instances"] == len(usable)
        assert summary["classes"][category["name"]]["images"] == len({a["image_id"] for a in usable})
    assert summary["samples"] == 3 and summary["image_size"]["max"] == [48, 48]


def test_usage_mistakes_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["data", "check"]) == 2
    assert "needs a data module" in capsys.readouterr().err
    assert _run(["data", "inspect"]) == 2
    assert "the data commands are `lightseg data check` and `lightseg data pack`" in capsys.readouterr().err
    assert _run(["data", "check", "--config", str(tmp_path / "nowhere.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    config = _config(tmp_path / "run.yaml", tmp_path / "missing")  # the data's own problem: a report, exit 1
    assert _run(["data", "check", "--config", str(config), "--out", str(tmp_path / "r")]) == 1
    assert "data root" in capsys.readouterr().out and "does not exist" in (tmp_path / "r" / "report.json").read_text()
    root = write_folder(tmp_path / "set", NAMES[:3], "index")
    (tmp_path / "taken").write_text("a file")
    config = _config(tmp_path / "ok.yaml", root)
    assert _run(["data", "check", "--config", str(config), "--out", str(tmp_path / "taken")]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err


def test_the_documented_check_runs_as_written_and_prints_what_it_shows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    section = (ROOT / "docs" / "datasets.md").read_text().split("## Your own data")[1].split("\n## ")[0]
    command = next(line for line in section.splitlines() if line.startswith("lightseg data check"))
    shown = section.split("On a set with two mistakes:")[1].split("```")[1].strip("\n")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    root = write_folder(Path("my_set"), NAMES, "palette")  # the README's set: palette masks, a class file
    (root / "classes.yaml").write_text("- background\n- circle\n- square\n- triangle\n")
    Image.fromarray(np.full((15, 21), 7, np.uint8), mode="L").save(root / "masks" / "img_006.png")
    Image.fromarray(np.zeros((12, 16), np.uint8)).save(root / "masks" / "img_011.png")
    assert _run(shlex.split(command)[1:]) == 1
    assert shown in capsys.readouterr().out
    assert (tmp_path / "runs" / "data_check" / "report.json").is_file()
