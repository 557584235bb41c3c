"""ADE20K (ADEChallengeData2016) as released: 150 classes, 0 = other (ignored), the data check and a recipe."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightseg.cli import main
from lightseg.data_check import check_data
from lightseg.datamodules import ADE20K_CLASSES, ADE20KDataModule
from lightseg.errors import LightsegError

from conftest import ROOT
from layouts import write_ade20k


def test_ade20k_reads_150_classes_with_other_ignored(tmp_path: Path) -> None:
    assert len(ADE20K_CLASSES) == len(set(ADE20K_CLASSES)) == 150
    assert (ADE20K_CLASSES[0], ADE20K_CLASSES[12], ADE20K_CLASSES[149]) == ("wall", "person", "flag")
    root = write_ade20k(tmp_path, {"train": 3, "val": 2})
    for given in (root, root / "ADEChallengeData2016"):  # the release's folder or the one holding it
        module = ADE20KDataModule(str(given), num_workers=0, batch_size=2)
        module.setup("fit")
        assert module.num_classes == 150 and [len(module.train_dataset), len(module.val_dataset)] == [3, 2]
    item = module.val_dataset[1]
    mask = item["mask"]
    assert item["id"] == "ADE_val_00000002" and mask.shape == (12, 16)
    assert (mask[:, 0] == 255).all()  # 0, "other objects": not evaluated
    assert (mask[:6, 1:] == 0).all() and (mask[6:9, 1:] == 3).all()  # wall (1) and floor (4), one down
    assert (mask[-3:, -3:] == 149).all()  # flag (150): the last label


def test_ade20k_names_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(LightsegError, match=r"holds no ADE20K release; expected the layout ADEChallengeData2016/"):
        ADE20KDataModule(str(tmp_path), num_workers=0).setup("fit")
    root = write_ade20k(tmp_path / "a", {"train": 2, "val": 1})
    with pytest.raises(LightsegError, match=r"ADE20K has no split 'test'; valid choices: train, val"):
        ADE20KDataModule(str(root), num_workers=0, test_split="test").setup("test")  # none released: test is val
    annotation = next((root / "ADEChallengeData2016" / "annotations" / "training").glob("*.png"))
    broken = np.asarray(Image.open(annotation)).copy()
    broken[0, 0] = 151
    Image.fromarray(broken).save(annotation)
    report = check_data(ADE20KDataModule(str(root), num_workers=0), 1)
    assert [f.kind for f in report.errors] == ["bad_labels"]
    assert annotation.name in report.errors[0].file and "151" in report.errors[0].detail


def test_ade20k_recipes_train_two_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_transformers: Callable[[str], Path]
) -> None:
    monkeypatch.chdir(tmp_path)
    root = write_ade20k(tmp_path, {"train": 4, "val": 2})
    small_upernet = ["--model.init_args.backbone=tu-convnext_atto", "--model.init_args.arch_options={}"]
    recipes = [
        ("ade20k_segformer_b0.yaml", []),
        ("ade20k_upernet_convnext_tiny.yaml", small_upernet),
        ("ade20k_linear_dinov2_small.yaml", []),  # the frozen DINOv2 ViT-S/14 with its linear head
        # transformers' models: the recipe's settings on a tiny configuration of the same architecture
        ("ade20k_segformer_b5.yaml", [f"--model.init_args.backbone={tiny_transformers('hf_segformer')}"]),
        ("ade20k_mask2former_swin_tiny.yaml", [f"--model.init_args.backbone={tiny_transformers('mask2former')}"]),
        ("ade20k_eomt_large_512.yaml", [f"--model.init_args.backbone={tiny_transformers('eomt')}",
                                         "--model.init_args.inference.window_size=32",
                                         "--model.init_args.inference.window_stride=16"]),
    ]  # fmt: skip
    for config, tiny in recipes:
        main(["fit", "--config", str(ROOT / "configs" / "semantic" / config), f"--data.init_args.root={root}",
              "--data.init_args.crop_size=32", "--data.init_args.batch_size=2", "--data.init_args.num_workers=0",
              "--model.init_args.weights_backbone=null", *tiny, "--trainer.max_steps=2",
              "--trainer.check_val_every_n_epoch=1", "--trainer.enable_progress_bar=false"])  # fmt: skip
        run = next((tmp_path / "runs" / "semantic").glob(f"{config.removesuffix('.yaml')}/version_0"))
        last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
        assert last["global_step"] == 2 and last["hyper_parameters"]["num_classes"] == 150
        row = next(r for r in csv.DictReader((run / "metrics.csv").open()) if r.get("val_miou"))
        assert 0.0 <= float(row["val_miou"]) <= 1.0 and "val_iou_flag" in row
