"""Bad inputs as a careless user gives them: each ends in one line, exit status 2, nothing new on disk."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from lightseg.cli import main

from conftest import ROOT, TINY_SHAPES
from layouts import write_cityscapes, write_coco, write_voc

QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")
MASKRCNN = str(ROOT / "configs" / "quickstart_maskrcnn.yaml")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a one-epoch quickstart run (``runs/``) and its shapes data (``data/``)."""
    folder = tmp_path_factory.mktemp("trained")
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        main(["fit", "--config", QUICKSTART, *TINY_SHAPES, f"--data.init_args.root={folder / 'data'}",
              "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false"])  # fmt: skip
    finally:
        os.chdir(cwd)
    return folder


class Crafted:
    """Unpickling this would run a shell command: a checkpoint must never do that."""

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return (os.system, ("touch pwned",))


def _quickstart(trained: Path, *extra: str) -> list[str]:
    return ["--config", QUICKSTART, *TINY_SHAPES, f"--data.init_args.root={trained / 'data'}",
            "--trainer.enable_progress_bar=false", *extra]  # fmt: skip


def _checkpoint(trained: Path) -> Path:
    return next((trained / "runs").rglob("last.ckpt"))


def _write(name: str, content: bytes) -> Callable[[Path, Path], str]:
    def make(here: Path, trained: Path) -> str:
        (here / name).write_bytes(content)
        return str(here / name)

    return make


def _truncated(here: Path, trained: Path) -> str:
    data = _checkpoint(trained).read_bytes()
    (here / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    return str(here / "truncated.ckpt")


def _crafted(here: Path, trained: Path) -> str:
    with (here / "crafted.ckpt").open("wb") as f:
        pickle.dump({"state_dict": Crafted()}, f)
    return str(here / "crafted.ckpt")


def _weights_only(here: Path, trained: Path) -> str:
    import torch

    torch.save({"conv.weight": torch.zeros(1)}, here / "weights.pth")
    return str(here / "weights.pth")


# (case, subcommand and arguments given the working folder and the trained run, words the one line must hold)
CHECKPOINT_CASES: list[tuple[str, Callable[[Path, Path], list[str]], list[str]]] = [
    ("missing", lambda h, t: ["test", *_quickstart(t), "--ckpt_path", str(h / "nope.ckpt")],
     ["nope.ckpt does not exist"]),
    ("folder", lambda h, t: ["test", *_quickstart(t), "--ckpt_path", str(h)], ["is a folder"]),
    ("garbage", lambda h, t: ["validate", *_quickstart(t), "--ckpt_path", _write("g.ckpt", b"\x00garbage" * 9)(h, t)],
     ["g.ckpt is not a readable lightseg checkpoint"]),
    ("empty", lambda h, t: ["test", *_quickstart(t), "--ckpt_path", _write("e.ckpt", b"")(h, t)],
     ["e.ckpt is not a readable lightseg checkpoint"]),
    ("truncated", lambda h, t: ["fit", *_quickstart(t), "--ckpt_path", _truncated(h, t)],
     ["truncated.ckpt is not a readable lightseg checkpoint", "truncated"]),
    ("crafted", lambda h, t: ["test", *_quickstart(t), "--ckpt_path", _crafted(h, t)],
     ["crafted.ckpt is not a readable lightseg checkpoint"]),
    ("weights file", lambda h, t: ["test", *_quickstart(t), "--ckpt_path", _weights_only(h, t)],
     ["weights.pth is not a Lightning checkpoint", "init_from"]),
    ("semantic checkpoint, Mask R-CNN config",
     lambda h, t: ["validate", "--config", MASKRCNN, f"--data.init_args.root={h / 'coco'}",
                   "--ckpt_path", str(_checkpoint(t))],
     ["holds a SemanticSegmentationTask", "this run's model is a InstanceSegmentationTask"]),
]  # fmt: skip


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


def _run_bad(args: list[str], here: Path, capsys: pytest.CaptureFixture[str]) -> str:
    before = _files(here)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(args)
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert info.value.code == 2, err
    assert "Traceback" not in err and "weights_only=False" not in err, err
    errors = [line for line in lines if line.startswith("lightseg: error: ")]
    assert len(errors) == 1, err
    assert _files(here) == before, sorted(map(str, _files(here) - before))  # nothing new on disk
    assert not (here / "pwned").exists()
    return errors[0]


def test_truncated_last_checkpoint_names_an_older_one(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copytree(trained / "runs", tmp_path / "runs")
    last = next((tmp_path / "runs").rglob("last.ckpt"))
    older = next(p for p in last.parent.iterdir() if p.name.startswith("epoch"))
    last.write_bytes(last.read_bytes()[:1000])
    line = _run_bad(["fit", *_quickstart(trained), "--ckpt_path", "last"], tmp_path, capsys)
    assert "last.ckpt is not a readable checkpoint" in line and f"--ckpt_path {older}" in line


def _coco_args(root: Path) -> list[str]:
    return [
        "validate",
        "--model=InstanceSegmentationTask",
        "--model.init_args.arch=maskrcnn_resnet18_fpn",
        "--model.init_args.weights_backbone=null",
        "--data=COCOInstanceDataModule",
        f"--data.init_args.root={root}",
        "--data.init_args.num_workers=0",
        "--trainer.logger=false",
    ]


def _edit_coco(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        data = write_coco(root, images=2, size=16)
        (root / "annotations" / "instances_val2017.json").write_text(json.dumps(edit(data)))

    return make


COCO_CASES: list[tuple[str, Callable[[Path], None], list[str]]] = [
    ("list at the top", _edit_coco(lambda d: d["images"]), ["holds a JSON list, not a COCO object"]),
    ("image without file_name", _edit_coco(lambda d: d["images"][1].pop("file_name") and d),
     ["images[1] (id 101) has no 'file_name'"]),
    ("image without id", _edit_coco(lambda d: d["images"][0].pop("id") and d), ["images[0] has no 'id'"]),
    ("annotation without image_id", _edit_coco(lambda d: d["annotations"][0].pop("image_id") and d),
     ["annotations[0] (id 1) has no 'image_id'"]),
    ("text image id", _edit_coco(lambda d: d["images"][0].update(id="first") or d),
     ["images[0] (id first) has id 'first', not a whole number"]),
]  # fmt: skip


@pytest.mark.parametrize(("case", "make", "words"), COCO_CASES, ids=[c[0] for c in COCO_CASES])
def test_bad_coco_files(
    case: str,
    make: Callable[[Path], None],
    words: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    make(tmp_path / "coco")
    line = _run_bad(_coco_args(tmp_path / "coco"), tmp_path, capsys)
    assert "instances_val2017.json" in line
    for word in words:
        assert word in line, line


def test_broken_annotations_are_left_out_of_training_and_evaluation_and_counted(tmp_path: Path) -> None:
    from lightseg.datamodules.coco_format import COCOAnnotations

    data = write_coco(tmp_path / "coco", images=3, size=16)
    data["annotations"][0]["segmentation"] = {"size": [8, 8], "counts": "04"}  # RLE of another image size
    data["categories"][1]["keypoints"] = ["nose", "tail"]
    data["annotations"][1]["keypoints"] = [1, 2, 2]  # 1 keypoint for a 2-keypoint category
    with pytest.warns(UserWarning, match=r"left out 1 RLE of another size, 1 keypoints of another count \(first: "
                                         r"annotation 1 of image 100: RLE of another size"):  # fmt: skip
        parsed = COCOAnnotations("file.json", data)
    assert [a["id"] for a in parsed.data["annotations"]] == [3]  # what COCO evaluation will see
    assert parsed.by_image[100] == [] and parsed.by_image[101] == [] and len(parsed.by_image[102]) == 1


def _file(name: str, content: bytes = b"not a folder") -> Callable[[Path], str]:
    def make(here: Path) -> str:
        (here / name).write_bytes(content)
        return str(here / name)

    return make


def _predict_into(output: Callable[[Path], str]) -> Callable[[Path, Path], list[str]]:
    def make(here: Path, trained: Path) -> list[str]:
        images = next((trained / "data").glob("shapes-*")) / "JPEGImages"
        return ["predict", *_quickstart(trained), "--ckpt_path", str(_checkpoint(trained)),
                f"--data.init_args.predict_dir={images}", f"--prediction.output_dir={output(here)}"]  # fmt: skip

    return make


VALUE_CASES: list[tuple[str, Callable[[Path, Path], list[str]], list[str]]] = [
    ("config missing", lambda h, t: ["fit", "--config", str(h / "nope.yaml")], ["nope.yaml does not exist"]),
    ("config syntax", lambda h, t: ["fit", "--config", _file("s.yaml", b"model:\n  a: [1\n b: 2\n")(h)],
     ["s.yaml: YAML syntax error at line 3, column 3"]),
    ("config list", lambda h, t: ["fit", "--config", _file("l.yaml", b"- model\n- data\n")(h)],
     ["l.yaml is a YAML list; a config maps sections"]),
    ("config empty", lambda h, t: ["fit", "--config", _file("e.yaml", b"")(h)], ["e.yaml is empty"]),
    ("config binary", lambda h, t: ["fit", "--config", _file("b.yaml", b"\xff\xfe\x00\x01")(h)],
     ["b.yaml is not a UTF-8 text file"]),
    ("num_workers -1", lambda h, t: ["fit", *_quickstart(t), "--data.init_args.num_workers=-1"],
     ["num_workers must be >= 0"]),
    ("negative lr", lambda h, t: ["fit", *_quickstart(t), "--model.init_args.optimizer.init_args.lr=-0.1"],
     ["model.optimizer.lr must be >= 0, got -0.1"]),
    ("image_size 0", lambda h, t: ["fit", *_quickstart(t), "--data.init_args.image_size=0"],
     ["image_size must be at least 16 pixels"]),
    ("batch of one for image pooling",
     lambda h, t: ["fit", *_quickstart(t), "--model.init_args.arch=deeplabv3plus",
                   "--model.init_args.arch_options=null",
                   "--data.init_args.batch_size=1"],
     ["--data.loader.batch_size 1: deeplabv3plus's ASPP image pooling", "a batch size of 2 or more"]),
    ("another arch's arch_options", lambda h, t: ["fit", *_quickstart(t), "--model.init_args.arch=deeplabv3plus",
                                                   "--model.init_args.arch_options={decoder_channels: [128, 64]}"],
     ["arch 'deeplabv3plus' cannot use backbone 'resnet18'", "arch_options {decoder_channels: [128, 64]} "
      "may be another arch's", "give --model.init_args.arch_options null for deeplabv3plus's defaults"]),
    ("default_root_dir a file", lambda h, t: ["fit", *_quickstart(t), f"--trainer.default_root_dir={_file('r')(h)}"],
     ["is a file, not a folder"]),
    ("save_dir a file", lambda h, t: ["fit", *_quickstart(t), f"--trainer.logger.init_args.save_dir={_file('s')(h)}"],
     ["is a file, not a folder"]),
    ("prediction output a file", _predict_into(_file("out.png")), ["out.png is a file, not a folder"]),
    ("default_root_dir below a file",
     lambda h, t: ["fit", *_quickstart(t), f"--trainer.default_root_dir={_file('r2')(h)}/runs/here"],
     ["is below", "r2, which is a file, not a folder"]),
    ("export output a folder, overwrite",
     lambda h, t: ["export", *_quickstart(t), "--ckpt_path", str(_checkpoint(t)), f"--export.output={h}",
                   "--export.overwrite=true"],
     ["is a folder; give the file to write"]),
    ("export output below a file",
     lambda h, t: ["export", *_quickstart(t), "--ckpt_path", str(_checkpoint(t)),
                   f"--export.output={_file('f')(h)}/model.onnx"],
     ["f is a file, not a folder"]),
    ("export of a sliding window (the library names inference.mode, the CLI prints its flag)",
     lambda h, t: ["export", *_quickstart(t), "--ckpt_path", str(_checkpoint(t)),
                   "--model.init_args.inference.mode=slide"],
     ["run outside it (see the export docs): export with --model.init_args.inference.mode whole"]),
    ("no config", lambda h, t: ["fit"], ["lightseg fit needs a model and data", "--config configs/quickstart.yaml"]),
    ("no command", lambda h, t: [], ["no command given", "--config configs/quickstart.yaml"]),
    ("typo in a config's trainer",
     lambda h, t: ["fit", *_quickstart(t), "--config", _file("t.yaml", b"trainer:\n  max_epoch: 3\n")(h)],
     ["t.yaml: trainer has no setting 'max_epoch' (did you mean 'max_epochs'?)"]),
    ("typo in a config's data",
     lambda h, t: ["fit", *_quickstart(t), "--config", _file("d.yaml", b"data:\n  init_args:\n    batch_sise: 3\n")(h)],
     ["d.yaml: data (ShapesDataModule) has no setting 'batch_sise' (did you mean 'batch_size'?)"]),
]  # fmt: skip


CLI_CASES = CHECKPOINT_CASES + VALUE_CASES


@pytest.mark.parametrize(("case", "make", "words"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_checkpoints_values_and_configs(
    case: str,
    make: Callable[[Path, Path], list[str]],
    words: list[str],
    trained: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    line = _run_bad(make(tmp_path, trained), tmp_path, capsys)
    for word in words:
        assert word in line, line


def test_cache_folder_that_is_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LIGHTSEG_CACHE", _file("cache")(tmp_path))
    line = _run_bad(["fit", "--config", QUICKSTART, *TINY_SHAPES], tmp_path, capsys)
    assert "the cache folder ($LIGHTSEG_CACHE or ~/.cache/lightseg)" in line and "is a file, not a folder" in line


def _voc_args(root: Path, *extra: str) -> list[str]:
    return ["--config", str(ROOT / "configs" / "semantic" / "voc_unet_resnet34.yaml"),
            "--model.init_args.weights_backbone=null", "--model.init_args.backbone=resnet18",
            f"--data.init_args.root={root}", "--data.init_args.num_workers=0", "--data.init_args.batch_size=2",
            "--trainer.max_epochs=1", *extra]  # fmt: skip


@pytest.mark.parametrize(
    ("content", "words"),
    [(b"", "the val split of VOCDataModule is empty"), (b"\xff\xfe2007\x00", "val.txt is not a UTF-8 text file")],
    ids=["empty", "binary"],
)
def test_bad_split_files(
    content: bytes, words: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    voc = write_voc(tmp_path / "voc", {"train": ["2007_a", "2007_b"], "val": ["2008_c"]})
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_bytes(content)
    line = _run_bad(["fit", *_voc_args(tmp_path / "voc")], tmp_path, capsys)
    assert words in line, line


def test_a_training_set_whose_every_image_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    data = write_coco(tmp_path / "coco", images=2, size=16)
    for annotation in data["annotations"]:
        annotation["iscrowd"] = 1  # crowds are no training targets
    (tmp_path / "coco" / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    args = [*_coco_args(tmp_path / "coco")[1:], "--data.init_args.train_images=val2017",
            "--data.init_args.train_annotations=annotations/instances_val2017.json"]  # fmt: skip
    line = _run_bad(["fit", *args], tmp_path, capsys)
    assert "the train split of COCOInstanceDataModule is empty" in line and "instances_val2017.json" in line


def test_predict_stopped_by_an_unreadable_image_leaves_no_output_folder(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    source = next((trained / "data").glob("shapes-*")) / "JPEGImages"
    for name in sorted(p.name for p in source.iterdir())[:3]:
        shutil.copy(source / name, images / name)
    (images / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")  # sorted last: after three good ones
    args = ["predict", *_quickstart(trained, "--data.init_args.batch_size=1"), "--ckpt_path", str(_checkpoint(trained)),
            f"--data.init_args.predict_dir={images}", f"--prediction.output_dir={tmp_path / 'out'}"]  # fmt: skip
    line = _run_bad(args, tmp_path, capsys)
    assert "zz_broken.jpg" in line
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.partial-*"))  # the rerun is not refused
    (images / "zz_broken.jpg").unlink()
    main(args)
    assert f"lightseg: predicted 3 images: masks/ and overlays/ in {tmp_path / 'out'}" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == sorted(
        p.with_suffix(".png").name for p in images.iterdir()
    )
    assert not list(tmp_path.glob("out.partial-*"))


@pytest.mark.parametrize("check", ["full", "headers"])
def test_a_bad_sample_in_a_dropped_last_batch_is_still_found(
    check: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    frames = ["aachen_000000_000019", "aachen_000001_000019", "bochum_000000_000019"]
    root = write_cityscapes(tmp_path / "cs", {"train": frames, "val": ["bonn_000000_000019"]})
    label = root / "gtFine" / "train" / "bochum" / "bochum_000000_000019_gtFine_labelIds.png"
    Image.open(label).crop((0, 0, 10, 12)).save(label)  # 3 images, batch 2: one batch of two, one dropped
    args = ["fit", "--model=SemanticSegmentationTask", "--model.init_args.arch=unet",
            "--model.init_args.backbone=resnet18", "--model.init_args.weights_backbone=null",
            "--data=CityscapesDataModule", f"--data.init_args.root={root}", "--data.init_args.crop_size=null",
            "--data.init_args.scale_range=null", "--data.init_args.batch_size=2", "--data.init_args.num_workers=0",
            f"--data.init_args.check_samples={check}", "--trainer.max_epochs=1"]  # fmt: skip
    line = _run_bad(args, tmp_path, capsys)
    assert "bochum_000000_000019_gtFine_labelIds.png is (12, 10)" in line and "(12, 16)" in line


def test_duplicate_class_names_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    for folder in ("images", "masks"):
        (tmp_path / "set" / folder).mkdir(parents=True)
    config = str(ROOT / "configs" / "semantic" / "folder_unet.yaml")
    args = ["--config", config, f"--data.init_args.root={tmp_path / 'set'}",
            "--data.init_args.class_names=[background, cat, cat]"]  # fmt: skip
    line = _run_bad(["fit", *args, "--model.init_args.weights_backbone=null"], tmp_path, capsys)
    assert "class 'cat' is listed twice (classes 1 and 2)" in line
    with pytest.raises(SystemExit) as info:  # the data check: a report that says so, exit 1
        main(["data", "check", *args, "--out", str(tmp_path / "check")])
    assert info.value.code == 1
    report = json.loads((tmp_path / "check" / "report.json").read_text())
    assert report["error_counts"] == {"data": 1} and "listed twice" in report["findings"][0]["detail"]


def test_split_level_problems_get_the_report_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from layouts import write_folder

    root = write_folder(tmp_path / "set", [f"img_{k}" for k in range(4)], "index")
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("img_0\nimg_9\n")  # names a sample that is not there
    with pytest.raises(SystemExit) as info:
        main(["data", "check", "--data=SegmentationFolderDataModule", f"--data.init_args.root={root}",
              "--data.init_args.class_names=[background, circle, square, triangle]",
              "--out", str(tmp_path / "c")])  # fmt: skip
    assert info.value.code == 1
    report = json.loads((tmp_path / "c" / "report.json").read_text())
    assert report["error_counts"] == {"split": 1} and "img_9" in report["findings"][0]["detail"]
    assert (tmp_path / "c" / "samples.png").is_file()


def test_malformed_coco_annotations_are_named(tmp_path: Path) -> None:
    from lightseg.datamodules.coco_format import COCOAnnotations

    data = write_coco(tmp_path / "coco", images=3, size=16)
    data["annotations"][0]["bbox"] = "abc"
    data["annotations"][1]["bbox"] = [1, 1, -4, 3]
    data["annotations"][2]["segmentation"] = "oops"
    extra = {**data["annotations"][2], "id": 99, "segmentation": [[1, 1, 5, 5]]}  # a two-point polygon
    data["annotations"].append(extra)
    with pytest.warns(UserWarning) as record:
        parsed = COCOAnnotations("file.json", data)
    message = str(record[0].message)
    assert message.startswith("file.json: left out")
    assert (
        "1 malformed bbox, 1 malformed segmentation, 1 negative box size, 1 polygon of fewer than 3 points" in message
    )
    assert "(first: annotation 1 of image 100: malformed bbox (bbox 'abc'; expected [x, y, width, height]))" in message
    assert parsed.data["annotations"] == []


def test_training_until_stopped_runs(trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    main(["fit", *_quickstart(trained), "--trainer.max_epochs=-1", "--trainer.max_time=00:00:00:04",
          "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"])  # fmt: skip
    err = capsys.readouterr().err
    assert "lightseg: training ended after" in err and "Traceback" not in err
    assert next((tmp_path / "runs").rglob("last.ckpt")).is_file()


def test_an_animated_gif_is_read_by_its_first_frame(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from lightseg.datamodules.predict_folder import ImageFolderDataset

    frames = [Image.fromarray(np.full((8, 10, 3), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "moving.gif", save_all=True, append_images=frames[1:])
    item = ImageFolderDataset(tmp_path)[0]
    assert item["path"] == "moving.gif" and item["size"] == (8, 10)
    assert abs(float(item["image"].mean()) - 10 / 255) < 0.01  # the first frame
