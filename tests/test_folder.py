"""Your own data: folders of images and masks in every mask format, splits, and what is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer

from lightseg.cli import main
from lightseg.datamodules import SegmentationFolderDataModule
from lightseg.datamodules.splits import hash_split
from lightseg.datamodules.transforms import train_transforms
from lightseg.errors import LightsegError
from lightseg.tasks import SemanticSegmentationTask

from conftest import ROOT
from layouts import FOLDER_COLORS, label_for, write_folder

CLASSES = ["background", "circle", "square", "triangle"]
NAMES = [f"img_{k:03d}" for k in range(10)]


def _module(root: Path, **kwargs: object) -> SegmentationFolderDataModule:
    options: dict[str, object] = {"class_names": CLASSES, "val_fraction": 0.3, "num_workers": 0, "batch_size": 2}
    return SegmentationFolderDataModule(str(root), **{**options, **kwargs})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mask_format", "ext", "declared"),
    [("index", ".png", "auto"), ("index16", ".tif", "auto"), ("index16", ".png", "index"),
     ("palette", ".png", "auto"), ("rgb", ".png", "rgb")],
    ids=["8-bit png", "16-bit tiff", "16-bit png", "palette", "rgb"],
)  # fmt: skip
def test_every_mask_format_reads_the_labels(mask_format: str, ext: str, declared: str, tmp_path: Path) -> None:
    root = write_folder(tmp_path / "set", NAMES, mask_format, ext)
    data = _module(root, mask_format=declared, colors=FOLDER_COLORS if mask_format == "rgb" else None)
    data.setup("fit")
    assert data.num_classes == 4 and data.class_names == tuple(CLASSES)
    train, val = data.train_dataset, data.val_dataset
    assert len(train) + len(val) == 10 and len(val) > 0  # type: ignore[arg-type]
    for dataset in (train, val):
        for k, sample in enumerate(dataset.samples):  # type: ignore[union-attr]
            expected = label_for(NAMES.index(sample.id), num_classes=4, size=dataset.read_mask(k).shape)
            if mask_format == "rgb":  # no void colour in this table: the border is background
                expected = np.where(expected == 255, 0, expected)
            np.testing.assert_array_equal(dataset.read_mask(k), expected)
    _train_two_steps(data)


def _train_two_steps(data: SegmentationFolderDataModule) -> None:
    """Two training steps and a validation pass on ``data``: the loss is finite and the weights move."""
    data.train_transform = train_transforms(crop_size=16, ignore_index=data.ignore_index)
    task = SemanticSegmentationTask(
        arch="unet", backbone="resnet18", weights_backbone=None, num_classes=data.num_classes
    )
    before = [p.detach().clone() for p in task.parameters()]
    trainer = Trainer(max_steps=2, limit_val_batches=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(task, datamodule=data)
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, task.parameters(), strict=True))


def test_binary_masks_need_a_declared_format(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "set", NAMES, "binary")
    with pytest.raises(LightsegError, match=r"holds only 0 and 255: set mask_format: binary .* or mask_format: index"):
        _module(root, class_names=["background", "object"]).setup("fit")
    data = _module(root, class_names=["background", "object"], mask_format="binary")
    data.setup("fit")
    mask = data.train_dataset.read_mask(0)  # type: ignore[union-attr]
    assert set(np.unique(mask).tolist()) == {0, 1}
    _train_two_steps(data)


def test_splits_from_subfolders_split_files_and_a_stable_hash(tmp_path: Path) -> None:
    for split, names in (("train", NAMES[:6]), ("val", NAMES[6:])):
        write_folder(tmp_path / "sub" / "tmp", names, "index")
        for kind in ("images", "masks"):
            (tmp_path / "sub" / kind).mkdir(parents=True, exist_ok=True)
            (tmp_path / "sub" / "tmp" / kind).rename(tmp_path / "sub" / kind / split)
    data = _module(tmp_path / "sub", val_fraction=0.0)
    data.setup("fit")
    assert [s.id for s in data.train_dataset.samples] == NAMES[:6]  # type: ignore[union-attr]
    assert [s.id for s in data.val_dataset.samples] == NAMES[6:]  # type: ignore[union-attr]

    listed = write_folder(tmp_path / "listed", NAMES, "index")
    (listed / "splits").mkdir()
    (listed / "splits" / "train.txt").write_text("img_000\nimg_004\n")
    (listed / "splits" / "val.txt").write_text("img_009\n")
    data = _module(listed)
    data.setup("test")  # no test list: the test split is val
    assert [s.id for s in data.test_dataset.samples] == ["img_009"]  # type: ignore[union-attr]

    before = {n: hash_split(n, 0.3, 0.0, 0) for n in NAMES}
    hashed = write_folder(tmp_path / "hashed", [*NAMES, "new_1", "new_2"], "index")
    data = _module(hashed)
    data.setup("fit")
    val = {s.id for s in data.val_dataset.samples}  # type: ignore[union-attr]
    assert {n for n, split in before.items() if split == "val"} == val - {"new_1", "new_2"}  # adding moved nothing


def test_peer_mmsegmentation_folder_with_suffixes_and_split_files(peer: Path) -> None:
    root = peer / "mmsegmentation" / "pseudo_dataset"
    data = SegmentationFolderDataModule(
        str(root),
        ["a", "b", "c", "d"],
        images="imgs",
        masks="gts",
        image_suffix="_img",
        mask_suffix="_gt",
        num_workers=0,
    )
    data.setup("fit")
    assert [s.id for s in data.train_dataset.samples] == ["00000", "00001", "00002", "00003"]  # type: ignore[union-attr]
    assert [s.id for s in data.val_dataset.samples] == ["00004"]  # type: ignore[union-attr]
    item = data.val_dataset[0]
    assert item["image"].shape[-2:] == item["mask"].shape and int(item["mask"].max()) <= 3


def test_folder_mistakes_are_named(tmp_path: Path) -> None:
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "masks").mkdir()
    with pytest.raises(LightsegError, match=r"image folder .*images holds no image"):
        _module(tmp_path / "empty").setup("fit")
    with pytest.raises(LightsegError, match=r"mask folder .*nowhere/masks does not exist"):
        (tmp_path / "nowhere" / "images").mkdir(parents=True)
        _module(tmp_path / "nowhere").setup("fit")
    root = write_folder(tmp_path / "rgb", NAMES, "rgb")
    with pytest.raises(LightsegError, match=r"is an RGB image: colour-coded masks need the colour of each class"):
        _module(root).setup("fit")
    with pytest.raises(LightsegError, match=r"has colour \(0, 255, 0\), which is not a class colour \(colors\)"):
        _module(root, colors=[(0, 0, 0), (255, 0, 0), (9, 9, 9), (0, 0, 255)]).setup("fit")
    wide = write_folder(tmp_path / "wide", NAMES, "index16", ".tif")
    from PIL import Image

    Image.fromarray(np.full((12, 16), 300, dtype=np.uint16)).save(wide / "masks" / "img_003.tif")
    with pytest.raises(LightsegError, match=r"img_003.tif holds label value\(s\) \[300\]"):
        _module(wide, check_samples="full").setup("fit")
    # JPEG masks: compression moves values along every edge (here 3 becomes 2 and 4, 0/255 become 1..254)
    jpeg = write_folder(tmp_path / "jpeg", NAMES, "index")
    label = Image.open(jpeg / "masks" / "img_007.png")
    label.save(jpeg / "masks" / "img_007.jpg", quality=75)
    (jpeg / "masks" / "img_007.png").unlink()
    assert set(np.unique(np.asarray(Image.open(jpeg / "masks" / "img_007.jpg"))).tolist()) - {0, 2, 255}
    for check in ("headers", "full"):
        with pytest.raises(LightsegError, match=r"mask .*img_007.jpg is a JPEG file: JPEG compression changes"):
            _module(jpeg, check_samples=check).setup("fit")
    binary = write_folder(tmp_path / "binary", NAMES[:1], "binary")
    Image.open(binary / "masks" / "img_000.png").save(binary / "masks" / "img_000.jpg")
    (binary / "masks" / "img_000.png").unlink()
    with pytest.raises(LightsegError, match=r"img_000.jpg is a JPEG file"):
        _module(binary, class_names=["background", "object"], mask_format="binary", val_fraction=0.0).setup("fit")


def test_phone_photos_with_an_exif_orientation_are_read_as_shown(tmp_path: Path) -> None:
    from PIL import Image

    from lightseg.data_check import check_data
    from lightseg.data_check.report import format_report

    root = write_folder(tmp_path / "set", NAMES, "index")
    shown = np.asarray(Image.open(root / "images" / "img_000.jpg"))  # 12x16, as a labelling tool showed it
    (root / "images" / "img_000.jpg").unlink()
    exif = Image.Exif()
    exif[0x0112] = 6  # a phone's portrait photo: pixels stored turned, "turn 90 degrees clockwise to show"
    Image.fromarray(np.rot90(shown).copy()).save(root / "images" / "img_000.png", exif=exif.tobytes())
    label = label_for(0, num_classes=4, size=(12, 16))
    data = _module(root, val_fraction=0.0, check_samples="headers")
    data.setup("fit")
    dataset = data.train_dataset
    dataset.transforms = None
    item = dataset[dataset.ids.index("img_000")]
    torch.testing.assert_close(item["image"], torch.from_numpy(shown.copy()).permute(2, 0, 1).float() / 255)
    assert torch.equal(item["mask"], torch.from_numpy(label).long())  # image and mask line up
    report = check_data(_module(root, val_fraction=0.0), 1)
    assert report.findings == [] and report.to_json()["splits"]["train"]["exif_oriented_images"] == 1
    assert "images with an EXIF orientation (1 in train): read turned as viewers" in format_report(report)

    Image.fromarray(np.rot90(label).copy()).save(root / "masks" / "img_000.png")  # labelled on the stored pixels
    expected = r"img_000.png is \(12, 16\) but its mask .* is \(16, 12\).*stored as 16x12 pixels with EXIF orientation"
    with pytest.raises(LightsegError, match=expected):
        _module(root, val_fraction=0.0, check_samples="headers").setup("fit")
    report = check_data(_module(root, val_fraction=0.0), 1)
    assert [f.kind for f in report.errors] == ["size_mismatch"]
    assert "EXIF orientation 6 (turned 90 degrees clockwise when shown)" in report.errors[0].detail


@pytest.mark.parametrize(
    ("config", "tiny"),
    [("folder_unet.yaml", ["--model.init_args.backbone=resnet18"]), ("folder_segformer_b0.yaml", [])],
)
def test_folder_configs_train_from_the_command_line(
    config: str, tiny: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    root = write_folder(tmp_path / "my_set", NAMES, "palette")
    (root / "classes.yaml").write_text("- background\n- circle\n- square\n- triangle\n")
    main(["fit", "--config", str(ROOT / "configs" / "semantic" / config),
          f"--data.init_args.root={root}", f"--data.init_args.class_names={root / 'classes.yaml'}",
          "--data.init_args.crop_size=16", "--data.init_args.batch_size=4", "--data.init_args.num_workers=0",
          "--model.init_args.weights_backbone=null", *tiny,
          "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false"])  # fmt: skip
    last = torch.load(next((tmp_path / "runs").rglob("last.ckpt")), weights_only=True, map_location="cpu")
    assert last["hyper_parameters"]["num_classes"] == 4 and last["global_step"] > 0
    if config == "folder_segformer_b0.yaml":  # SegFormer's recipe: the head at 10x the rate, warming up
        groups = {g["name"]: g for g in last["optimizer_states"][0]["param_groups"]}
        assert groups["head"]["initial_lr"] == pytest.approx(10 * groups["backbone"]["initial_lr"]) == 6e-4
        fraction = 1e-6 + (1 - 1e-6) * last["global_step"] / 100  # a few steps into 100 of warm-up
        assert groups["head"]["lr"] == pytest.approx(fraction * groups["head"]["initial_lr"])
        assert groups["backbone_no_decay"]["weight_decay"] == 0.0 and groups["backbone"]["weight_decay"] == 0.01
