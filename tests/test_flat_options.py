"""Settings groups (a task's network; a data module's loader and augmentation), their flat spelling read as them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from lightseg.cli.flat_options import migrate_loaded, rewrite_args
from lightseg.errors import LightsegError
from lightseg.models import KeypointRCNNSpec, MaskRCNNSpec, ModelSpec
from lightseg.tasks import (
    InstanceSegmentationTask,
    KeypointDetectionTask,
    PanopticSegmentationTask,
    SemanticSegmentationTask,
)
from lightseg.tasks.panoptic_families import PanopticSpec

from conftest import ROOT


class OwnArch(SemanticSegmentationTask):
    """A user's subclass with an argument of its own that happens to be called ``backbone``."""

    def __init__(self, backbone: str = "mine", **kwargs: Any) -> None:
        super().__init__(**kwargs)


def test_the_command_lines_flat_settings_are_the_groups() -> None:
    args = ["fit", "--model=SemanticSegmentationTask", "--model.init_args.arch", "deeplabv3",
            "--model.backbone=resnet50", "--model.init_args.arch_options.decoder_channels=64",
            "--model.init_args.loss=dice", "--data.init_args.in_channels=4"]  # fmt: skip
    assert rewrite_args(args, []) == [
        "fit", "--model=SemanticSegmentationTask", "--model.init_args.network.arch", "deeplabv3",
        "--model.init_args.network.backbone=resnet50", "--model.init_args.network.arch_options.decoder_channels=64",
        "--model.init_args.loss=dice", "--data.init_args.in_channels=4",
    ]  # fmt: skip
    # each task's own settings: min_size is the R-CNN network's, a semantic task has none (left for the parser)
    assert rewrite_args(["--model", "KeypointDetectionTask", "--model.init_args.min_size=512"], [])[-1] == (
        "--model.init_args.network.min_size=512"
    )
    semantic = [{"model": {"class_path": "SemanticSegmentationTask"}}]
    assert rewrite_args(["--model.init_args.min_size=512"], semantic) == ["--model.init_args.min_size=512"]
    # a user's subclass keeps the arguments it declares itself
    own = f"{__name__}.OwnArch"
    assert rewrite_args(["--model", own, "--model.init_args.backbone=x", "--model.init_args.arch=fcn"], []) == [
        "--model", own, "--model.init_args.backbone=x", "--model.init_args.network.arch=fcn",
    ]  # fmt: skip


def test_a_groups_setting_set_to_null_is_given_as_the_groups_mapping() -> None:
    # jsonargparse reads `--model.init_args.<group>.<setting> null` as the text 'None'; a mapping merges
    args = ["--model", "SemanticSegmentationTask", "--model.init_args.weights_backbone", "null",
            "--model.init_args.network.backbone=~", "--model.inference.window_stride", "null",
            "--model.init_args.boundary_ratio", "null"]  # fmt: skip
    assert rewrite_args(args, []) == [
        "--model", "SemanticSegmentationTask", "--model.init_args.network", "{weights_backbone: null}",
        "--model.init_args.network", "{backbone: null}", "--model.init_args.inference", "{window_stride: null}",
        "--model.init_args.boundary_ratio", "null",
    ]  # fmt: skip


def test_config_files_flat_settings_are_read_into_the_group() -> None:
    old = {
        "model": {
            "class_path": "InstanceSegmentationTask",
            "init_args": {"arch": "maskrcnn_resnet18_fpn", "min_size": 64, "mask_threshold": 0.4,
                          "network": {"weights": None}},
        },
        "data": {"class_path": "COCOInstanceDataModule", "init_args": {"root": "coco"}},
    }  # fmt: skip
    assert migrate_loaded(old) == {
        "model": {
            "class_path": "InstanceSegmentationTask",
            "init_args": {"mask_threshold": 0.4,
                          "network": {"weights": None, "arch": "maskrcnn_resnet18_fpn", "min_size": 64}},
        },
        "data": old["data"],
    }  # fmt: skip
    # a later file without the class, and --model FILE's own section, the arguments given directly
    assert migrate_loaded({"model": {"arch": "fcn", "aux_weight": 0.4}}) == {
        "model": {"aux_weight": 0.4, "network": {"arch": "fcn"}}
    }
    assert migrate_loaded({"class_path": "SemanticSegmentationTask", "init_args": {"backbone": "resnet18"}}) == {
        "class_path": "SemanticSegmentationTask", "init_args": {"network": {"backbone": "resnet18"}},
    }  # fmt: skip
    # anything else is left as it is: another class's section, values
    logger = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"name": "arch"}}
    assert migrate_loaded(logger) == logger and migrate_loaded("arch") == "arch"
    # every config shipped is written in the group
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        content = yaml.safe_load(path.read_text())
        if isinstance(content, dict) and "model" in content:
            assert migrate_loaded(content) == content, f"{path.relative_to(ROOT)} has flat network settings"


def test_each_task_takes_its_network_as_one_group_defined_once() -> None:
    # the group's defaults are the task's (one definition): ImageNet weights, the architectures' own sizes
    assert SemanticSegmentationTask.network_spec is ModelSpec and ModelSpec().weights_backbone == "imagenet"
    assert KeypointRCNNSpec().min_size == (640, 672, 704, 736, 768, 800) and MaskRCNNSpec().min_size == 800
    assert [f.name for f in dataclasses.fields(PanopticSpec)][-2:] == ["backbone", "arch_options"]
    # Python: the group, its mapping, a name alone, or the older flat keywords
    as_group = SemanticSegmentationTask(ModelSpec("fcn8s", weights_backbone=None), num_classes=3)
    as_dict = SemanticSegmentationTask({"arch": "fcn8s", "weights_backbone": None}, num_classes=3)
    flat = SemanticSegmentationTask(arch="fcn8s", weights_backbone=None, num_classes=3)
    assert as_group.network == as_dict.network == flat.network == ModelSpec("fcn8s", weights_backbone=None)
    assert as_group.hparams == as_dict.hparams == flat.hparams
    assert flat.hparams["network"]["multi_grid"] == [1, 2, 4]  # plain values in checkpoints and hparams.yaml
    with pytest.raises(LightsegError, match=r"unknown network setting\(s\) \['backbon'\]; known: \['arch'"):
        SemanticSegmentationTask({"backbon": "resnet18"})
    task = KeypointDetectionTask(arch="keypointrcnn_resnet18_fpn", weights_backbone=None, keypoint_head=(1, 8),
                                 min_size=64, max_size=64, num_keypoints=3, oks_sigmas=[0.1] * 3)  # fmt: skip
    assert task.network == KeypointRCNNSpec("keypointrcnn_resnet18_fpn", weights_backbone=None, min_size=64,
                                            max_size=64, keypoint_head=(1, 8))  # fmt: skip
    assert task.model.roi_heads.keypoint_head[0].out_channels == 8  # the group's keypoint head was built
    assert task.context().arch == "keypointrcnn_resnet18_fpn" and "min_size" not in task.hparams


@pytest.mark.parametrize(
    ("task", "flat"),
    [
        (SemanticSegmentationTask, {"arch": "unet", "backbone": "resnet18", "in_channels": 4}),
        (InstanceSegmentationTask, {"arch": "maskrcnn_resnet18_fpn", "min_size": 64, "anchor_sizes": [16, 32]}),
        (KeypointDetectionTask, {"arch": "keypointrcnn_resnet18_fpn", "keypoint_box_scale": 1.25}),
        (PanopticSegmentationTask, {"arch": "mask2former", "backbone": "x", "arch_options": {"num_queries": 5}}),
    ],
)
def test_older_checkpoints_flat_network_settings_are_migrated(task: Any, flat: dict[str, Any]) -> None:
    saved = {"num_classes": 3, "optimizer": None, **flat}
    migrated = task.migrate_hparams(saved)
    assert migrated == {"num_classes": 3, "optimizer": None, "network": flat}
    assert task.network_spec.of(migrated["network"]).arch == flat["arch"]
    assert task.migrate_hparams(migrated) == migrated  # today's form is left as it is


def test_the_saved_config_of_a_run_from_a_flat_config_is_the_group(tmp_path: Path, shapes_root: Path) -> None:
    from lightseg.cli import main

    old = tmp_path / "old.yaml"
    old.write_text(
        "model:\n  class_path: SemanticSegmentationTask\n  init_args:\n    arch: unet\n    backbone: resnet18\n"
        "    weights_backbone: null\n    arch_options: {decoder_channels: [16, 8, 8, 8, 8]}\n"
        "data:\n  class_path: ShapesDataModule\n  init_args:\n"
        f"    root: {shapes_root}\n    num_workers: 0\n    batch_size: 4\n    image_size: 32\n"
        "trainer:\n  max_epochs: 1\n  limit_train_batches: 1\n  limit_val_batches: 1\n  enable_progress_bar: false\n"
        f"  default_root_dir: {tmp_path / 'runs'}\n  logger:\n    init_args: {{save_dir: {tmp_path / 'runs'}}}\n"
    )
    main(["fit", "--config", str(old)])
    saved = yaml.safe_load(next((tmp_path / "runs").rglob("config.yaml")).read_text())["model"]["init_args"]
    assert "arch" not in saved and saved["network"]["arch"] == "unet" and saved["network"]["backbone"] == "resnet18"
    assert saved["network"]["arch_options"] == {"decoder_channels": [16, 8, 8, 8, 8]}


def test_a_data_modules_loader_and_augmentation_are_groups_with_its_own_defaults(tmp_path: Path) -> None:
    from lightseg.datamodules import ShapesDataModule, ShapesInstanceDataModule, VOCDataModule
    from lightseg.datamodules.settings import FlipAugmentation, LoaderSettings, SemanticAugmentation

    voc = VOCDataModule(root=str(tmp_path))
    assert voc.augmentation == SemanticAugmentation(crop_size=513, scale_range=(0.5, 2.0))  # the DeepLab recipe's
    assert voc.loader == LoaderSettings(batch_size=16) and voc.batch_size == 16
    # the flat keywords, one setting each, over the module's defaults
    flat = VOCDataModule(root=str(tmp_path), crop_size=321, batch_size=4, num_workers=0)
    assert flat.augmentation == SemanticAugmentation(crop_size=321, scale_range=(0.5, 2.0))
    assert flat.loader == LoaderSettings(batch_size=4, num_workers=0) and flat.num_workers == 0
    with pytest.raises(TypeError, match="VOCDataModule got unexpected keyword argument.s. bach_size"):
        VOCDataModule(root=str(tmp_path), bach_size=4)
    # instances get flips only: a crop would cut boxes and keypoints
    coco = ShapesInstanceDataModule(root=str(tmp_path), hflip=False, batch_size=3)
    assert coco.augmentation == FlipAugmentation(hflip=False) and coco.batch_size == 3 and not coco.augmentation.hflip
    assert coco.num_workers == 0  # the shapes sets' own loader default, kept
    with pytest.raises(TypeError, match="unexpected keyword argument.s. crop_size"):
        ShapesInstanceDataModule(root=str(tmp_path), crop_size=64)
    # the shapes crop back to their size after a rescale
    shapes = ShapesDataModule(root=str(tmp_path), scale_range=(0.5, 2.0))
    assert shapes.augmentation == SemanticAugmentation(crop_size=64, scale_range=(0.5, 2.0), vflip=True)
    with pytest.raises(LightsegError, match="loader.batch_size must be >= 1, got 0"):
        LoaderSettings(batch_size=0)


def test_the_data_sections_flat_settings_are_the_groups_on_the_command_line_and_in_files() -> None:
    args = ["--data", "VOCDataModule", "--data.init_args.batch_size=4", "--data.init_args.crop_size", "null",
            "--data.init_args.root", "voc", "--data.init_args.loader.num_workers", "2"]  # fmt: skip
    assert rewrite_args(args, []) == [
        "--data", "VOCDataModule", "--data.init_args.loader.batch_size=4", "--data.init_args.augmentation",
        "{crop_size: null}", "--data.init_args.root", "voc", "--data.init_args.loader.num_workers", "2",
    ]  # fmt: skip
    # a detection module has no crop: the flag is left for the parser to refuse
    coco = ["--data=COCOInstanceDataModule", "--data.init_args.crop_size=64", "--data.init_args.hflip=false"]
    assert rewrite_args(coco, []) == [coco[0], coco[1], "--data.init_args.augmentation.hflip=false"]
    old = {"data": {"class_path": "COCOInstanceDataModule",
                    "init_args": {"root": "coco", "hflip": False, "batch_size": 2, "num_workers": 0}}}  # fmt: skip
    assert migrate_loaded(old)["data"]["init_args"] == {
        "root": "coco",
        "augmentation": {"hflip": False},
        "loader": {"batch_size": 2, "num_workers": 0},
    }
