"""The network settings as one group, and their older flat spelling read as the group everywhere."""

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
