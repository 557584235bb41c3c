from __future__ import annotations

import json
import logging
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightseg.datamodules import (
    CITYSCAPES_CLASSES,
    CityscapesDataModule,
    SBDDataModule,
    SBDSegmentationDataset,
    VOCAugDataModule,
    VOCDataModule,
    VOCSegmentationDataset,
)
from lightseg.datamodules.cityscapes import CITYSCAPES_COLORS, label_id_to_train_id
from lightseg.datamodules.files import Sample, SegmentationFiles
from lightseg.errors import LightsegError

from layouts import SIZE, label_for, write_cityscapes, write_sbd, write_voc

DATUMARO_VOC = Path("datumaro", "voc_dataset1")
PEER_SBD = Path("py-edge-eval", "SBD_bench", "datadir")
DATUMARO_CITYSCAPES = Path("datumaro", "cityscapes_dataset")

# id sets that overlap like the real ones: VOC val ids also appear in SBD train and val
VOC_SPLITS = {"train": ["2007_a", "2008_b", "2008_c"], "val": ["2007_d", "2008_e", "2009_f"]}
VOC_SPLITS["trainval"] = VOC_SPLITS["train"] + VOC_SPLITS["val"]
SBD_TRAIN = ["2008_b", "2007_d", "2008_g", "2009_h"]
SBD_VAL = ["2008_c", "2008_e", "2010_i"]


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("voc")
    write_voc(root, VOC_SPLITS, extra_images=["2008_g"])  # VOC has the JPEG of some SBD-only ids
    return root


@pytest.fixture(scope="module")
def sbd_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sbd")
    write_sbd(root, SBD_TRAIN, SBD_VAL)
    return root


# ---- VOC -------------------------------------------------------------------------------------


def test_voc_root_may_be_any_level_of_the_download(voc_root: Path) -> None:
    for root in (voc_root, voc_root / "VOCdevkit", voc_root / "VOCdevkit" / "VOC2012"):
        ds = VOCSegmentationDataset(root, "val")
        assert ds.ids == VOC_SPLITS["val"]
        assert ds.root == voc_root / "VOCdevkit" / "VOC2012"


def test_voc_datamodule_contract_and_deeplab_pipeline(voc_root: Path) -> None:
    dm = VOCDataModule(root=str(voc_root), batch_size=2, num_workers=0)
    assert dm.num_classes == 21 and dm.class_names[15] == "person"
    dm.setup("fit")
    assert dm.train_dataset is not None and dm.val_dataset is not None
    val = dm.val_dataset[0]
    assert val["image"].shape == (3, *SIZE) and val["mask"].dtype == torch.int64  # native size
    np.testing.assert_array_equal(
        val["mask"].numpy(), label_for(sum(ord(c) * (i + 1) for i, c in enumerate("2007_d")) % 1000)
    )
    train = dm.train_dataset[0]
    assert train["image"].shape == (3, 513, 513) and train["mask"].shape == (513, 513)  # padded and cropped
    # at most the rescaled image (scale <= 2) carries content; the rest is padding: image 0, mask 255
    content = train["image"].abs().sum(0) > 0
    assert content.sum() <= 4 * SIZE[0] * SIZE[1] and (train["mask"][~content] == 255).all()
    batch = next(iter(dm.val_dataloader()))
    assert batch["image"].shape == (2, 3, *SIZE)
    dm.setup("test")
    assert dm.test_dataset is not None and dm.test_dataset.ids == VOC_SPLITS["val"]  # type: ignore[attr-defined]


def test_voc_download_offline_says_where_to_put_the_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "VOCSegmentation", offline)
    dm = VOCDataModule(root=str(tmp_path / "voc"), download=True)
    with pytest.raises(LightsegError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert "VOCtrainval_11-May-2012.tar" in message and "voc/VOCdevkit/VOC2012/JPEGImages" in message


def test_voc_missing_root_split_and_mask(tmp_path: Path) -> None:
    with pytest.raises(
        LightsegError, match=r"data root .*nowhere does not exist; expected the layout VOCdevkit/VOC2012"
    ):
        VOCSegmentationDataset(tmp_path / "nowhere", "train")
    with pytest.raises(LightsegError, match=r"holds no VOC 2012 data set"):
        VOCSegmentationDataset(tmp_path, "train")


def test_peer_voc_rgb_masks_and_missing_mask(peer: Path) -> None:
    with pytest.raises(LightsegError, match=r"split file .*val.txt does not exist"):
        VOCSegmentationDataset(peer / DATUMARO_VOC, "val")  # datumaro's fixture has no val.txt
    train = VOCSegmentationDataset(peer / DATUMARO_VOC, "train")
    assert train.ids == ["2007_000001"] and (train[0]["mask"] == 2).all()  # RGB (0,128,0) = bicycle
    with pytest.raises(
        LightsegError, match=r"1 of 1 samples have missing files \(2007_000002: no mask .*2007_000002.png\)"
    ):
        VOCSegmentationDataset(peer / DATUMARO_VOC, "test")
    skipped = VOCSegmentationDataset(peer / DATUMARO_VOC, "test", on_missing="skip")
    assert len(skipped) == 0


def test_image_and_mask_of_different_sizes(tmp_path: Path) -> None:
    image, mask = tmp_path / "a.jpg", tmp_path / "a.png"
    Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8)).save(image)
    Image.fromarray(np.zeros((10, 12), dtype=np.uint8)).save(mask)
    ds = SegmentationFiles([Sample("a", image, mask)], num_classes=21)
    with pytest.raises(LightsegError, match=r"image .*a.jpg is \(10, 10\) but its mask .*a.png is \(10, 12\)"):
        ds[0]


def test_truncated_image_is_named(tmp_path: Path) -> None:
    image, mask = tmp_path / "t.jpg", tmp_path / "t.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(image)
    image.write_bytes(image.read_bytes()[:300])
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(mask)
    with pytest.raises(LightsegError, match=r"cannot read image .*t.jpg"):
        SegmentationFiles([Sample("t", image, mask)], num_classes=21)[0]


# ---- SBD -------------------------------------------------------------------------------------


def test_sbd_reads_class_labels_from_mat(sbd_root: Path) -> None:
    for root in (sbd_root, sbd_root / "benchmark_RELEASE", sbd_root / "benchmark_RELEASE" / "dataset"):
        ds = SBDSegmentationDataset(root, "train")
        assert ds.ids == SBD_TRAIN
    item = ds[0]
    assert item["image"].shape == (3, *SIZE)
    expected = label_for(sum(ord(c) * (i + 1) for i, c in enumerate("2008_b")) % 1000 + 1)
    expected[expected == 255] = 0
    np.testing.assert_array_equal(item["mask"].numpy(), expected)


def test_peer_sbd_release_files(peer: Path) -> None:
    val = SBDSegmentationDataset(peer / PEER_SBD, "val")
    assert val.ids == ["2008_000051", "2008_000195"]
    item = val[0]
    assert item["image"].shape == (3, 371, 500) and item["mask"].shape == (371, 500)
    assert set(item["mask"].unique().tolist()) == {0, 5, 9, 15}
    assert len(SBDSegmentationDataset(peer / PEER_SBD, "train")) == 0  # the release's train.txt here is empty
    dm = SBDDataModule(root=str(peer / PEER_SBD), num_workers=0)
    dm.setup("validate")
    assert dm.val_dataset is not None and len(dm.val_dataset) == 2  # type: ignore[arg-type]


def test_mat_without_gtcls_is_named(peer: Path) -> None:
    inst = peer / PEER_SBD / "inst" / "2008_000051.mat"  # GTinst, not GTcls
    ds = SegmentationFiles([Sample("x", peer / PEER_SBD / "img" / "2008_000051.jpg", inst)], num_classes=21)
    with pytest.raises(LightsegError, match=r"2008_000051.mat has no GTcls.Segmentation \(keys: \['GTinst'\]\)"):
        ds[0]


# ---- VOC-aug ---------------------------------------------------------------------------------


def test_voc_aug_is_the_leak_free_union(voc_root: Path, sbd_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    dm = VOCAugDataModule(voc_root=str(voc_root), sbd_root=str(sbd_root), num_workers=0)
    with caplog.at_level(logging.INFO):
        dm.setup("fit")
    train, val = dm.train_dataset, dm.val_dataset
    assert train is not None and val is not None
    expected = sorted((set(VOC_SPLITS["train"]) | set(SBD_TRAIN) | set(SBD_VAL)) - set(VOC_SPLITS["val"]))
    assert train.ids == expected == ["2007_a", "2008_b", "2008_c", "2008_g", "2009_h", "2010_i"]  # type: ignore[attr-defined]
    assert val.ids == VOC_SPLITS["val"]  # type: ignore[attr-defined]
    assert not set(train.ids) & set(val.ids)  # type: ignore[attr-defined]
    sources = {s.id: (s.image.parent.name, s.mask.suffix) for s in train.samples}  # type: ignore[attr-defined, union-attr]
    assert sources["2008_b"] == ("JPEGImages", ".png")  # in VOC train and SBD train: VOC's label
    assert sources["2008_g"] == ("JPEGImages", ".mat")  # VOC has the image, only SBD the label
    assert sources["2009_h"] == ("img", ".mat")
    assert "VOC-aug: 6 training images (3 labelled by VOC, 3 by SBD), 3 val images" in caplog.text


# ---- Cityscapes ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["labelIds", "labelTrainIds", "instanceIds"])
def test_cityscapes_labels_map_to_train_ids(tmp_path: Path, kind: str) -> None:
    write_cityscapes(tmp_path, {"train": ["aachen_000000_000019"], "val": ["lindau_000001_000019"]}, kind)
    dm = CityscapesDataModule(root=str(tmp_path), crop_size=(8, 8), num_workers=0)
    dm.setup("fit")
    assert dm.val_dataset is not None and dm.val_dataset.ids == ["lindau_000001_000019"]  # type: ignore[attr-defined]
    mask = dm.val_dataset[0]["mask"]
    assert mask[0, 5].item() == 0 and mask[5, 5].item() == 13  # road, car
    assert (mask[9:, 1:] == 255).all() and (mask[:, 0] == 255).all()  # parking, unlabeled: ignored
    assert dm.train_dataset is not None and dm.train_dataset[0]["mask"].shape == (8, 8)


def test_cityscapes_label_table_matches_the_official_one(peer: Path) -> None:
    table = json.loads((peer / "cityscapesScripts" / "labels_table.json").read_text())["labels"]
    evaluated = sorted((row for row in table if 0 <= row["trainId"] < 255), key=lambda row: row["trainId"])
    assert tuple(row["name"] for row in evaluated) == CITYSCAPES_CLASSES
    assert tuple(tuple(row["color"]) for row in evaluated) == CITYSCAPES_COLORS
    lut = label_id_to_train_id()
    for row in table:
        if row["id"] >= 0:
            assert lut[row["id"]] == (row["trainId"] if 0 <= row["trainId"] < 255 else 255), row["name"]


def test_cityscapes_errors(tmp_path: Path) -> None:
    with pytest.raises(LightsegError, match=r"data root .*none does not exist; expected the Cityscapes layout"):
        CityscapesDataModule(root=str(tmp_path / "none")).make_dataset("val", None)
    write_cityscapes(tmp_path, {"val": ["lindau_000001_000019"]})
    next((tmp_path / "gtFine").rglob("*.png")).unlink()
    with pytest.raises(
        LightsegError, match=r"lindau_000001_000019: no mask .*lindau_000001_000019_gtFine_labelIds.png"
    ):
        CityscapesDataModule(root=str(tmp_path)).make_dataset("val", None)


def test_peer_cityscapes_layouts(peer: Path) -> None:
    only_instances = CityscapesDataModule(root=str(peer / DATUMARO_CITYSCAPES / "dataset")).make_dataset("train", None)
    mask = only_instances[0]["mask"]  # instanceIds 3 (out of roi) and 24 (person)
    assert mask.shape == (1, 5) and set(mask.unique().tolist()) == {11, 255}
    # datumaro writes 19 for void in labelTrainIds, which is no Cityscapes train id: named, not guessed
    train_ids = CityscapesDataModule(root=str(peer / DATUMARO_CITYSCAPES / "train_dataset")).make_dataset("train", None)
    with pytest.raises(LightsegError, match=r"labelTrainIds.png holds label value\(s\) \[19\] but the data set has 19"):
        train_ids[0]
