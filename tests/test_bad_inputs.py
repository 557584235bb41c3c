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
from layouts import write_coco

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


@pytest.mark.parametrize(("case", "make", "words"), CHECKPOINT_CASES, ids=[c[0] for c in CHECKPOINT_CASES])
def test_bad_checkpoints(
    case: str,
    make: Callable[[Path, Path], list[str]],
    words: list[str],
    trained: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    args = make(tmp_path, trained)
    line = _run_bad(args, tmp_path, capsys)
    for word in words:
        assert word in line, line


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
    from lightseg.datamodules.coco import COCOAnnotations

    data = write_coco(tmp_path / "coco", images=3, size=16)
    data["annotations"][0]["segmentation"] = {"size": [8, 8], "counts": "04"}  # RLE of another image size
    data["categories"][1]["keypoints"] = ["nose", "tail"]
    data["annotations"][1]["keypoints"] = [1, 2, 2]  # 1 keypoint for a 2-keypoint category
    with pytest.warns(UserWarning, match=r"left out 1 RLE of another size, 1 keypoints of another count \(first: "
                                         r"annotation 1 of image 100: RLE of another size"):  # fmt: skip
        parsed = COCOAnnotations("file.json", data)
    assert [a["id"] for a in parsed.data["annotations"]] == [3]  # what COCO evaluation will see
    assert parsed.by_image[100] == [] and parsed.by_image[101] == [] and len(parsed.by_image[102]) == 1
