"""What lightseg.cli_adapter assumes of LightningCLI's private methods, pinned: an upgrade that breaks it fails here."""

from __future__ import annotations

import inspect

import pytest
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningCLI

from lightseg.cli_adapter import AdaptedLightningCLI, init_defaults, keep_configured_model
from lightseg.errors import LightsegError
from lightseg.tasks import SemanticSegmentationTask

SEMANTIC = "lightseg.tasks.SemanticSegmentationTask"


class MyTask(SemanticSegmentationTask):
    """A user's subclass."""


def test_lightning_cli_still_has_the_private_methods_the_adapter_overrides() -> None:
    prepare = inspect.signature(LightningCLI._prepare_subcommand_parser)
    assert list(prepare.parameters) == ["self", "klass", "subcommand", "kwargs"]
    assert "self._prepare_subcommand_parser(trainer_class, subcommand" in inspect.getsource(
        LightningCLI._add_subcommands
    )
    # returns the subcommand's parser, which the adapter extends
    assert "return parser" in inspect.getsource(LightningCLI._prepare_subcommand_parser)
    assert list(inspect.signature(LightningCLI._parse_ckpt_path).parameters) == ["self"]
    assert "self._parse_ckpt_path()" in inspect.getsource(LightningCLI.__init__)
    # the checkpoint's hyperparameters replace self.config, in the subcommand's model, which the adapter compares
    source = inspect.getsource(LightningCLI._parse_ckpt_path)
    assert '{self.config.subcommand: {"model": hparams}}' in source
    assert "self.config = self.parser.parse_object(hparams, self.config)" in source
    for name in ("_prepare_subcommand_parser", "_parse_ckpt_path"):
        assert name in AdaptedLightningCLI.__dict__


def _model(class_path: str, **init_args: object) -> Namespace:
    return Namespace(class_path=class_path, init_args=Namespace(**init_args))


def test_a_checkpoint_fills_in_only_what_the_user_left_at_its_default() -> None:
    before = _model(SEMANTIC, arch="unet", tta_flip=True, num_classes=21)
    after = _model(SEMANTIC, arch="deeplabv3", tta_flip=False, num_classes=5)
    keep_configured_model(before, after, "x.ckpt")
    # tta_flip was set by the user; arch and num_classes were the defaults: the checkpoint's stay
    assert (after.init_args.tta_flip, after.init_args.arch, after.init_args.num_classes) == (True, "deeplabv3", 5)


def test_a_users_subclass_stays_and_an_unrelated_task_is_refused() -> None:
    before = _model(f"{__name__}.MyTask", arch="unet")
    after = _model(SEMANTIC, arch="unet")
    keep_configured_model(before, after, "x.ckpt")
    assert after.class_path == f"{__name__}.MyTask"
    with pytest.raises(LightsegError, match=r"x\.ckpt holds a InstanceSegmentationTask, but this run's model"):
        keep_configured_model(_model(SEMANTIC), _model("lightseg.tasks.InstanceSegmentationTask"), "x.ckpt")


def test_defaults_of_arguments_passed_on_as_kwargs_are_the_parents() -> None:
    defaults = init_defaults("lightseg.tasks.KeypointDetectionTask")
    assert defaults["min_size"] == (640, 672, 704, 736, 768, 800)  # its own, over DetectionTask's 800
    assert (defaults["max_size"], defaults["weights_backbone"], defaults["head_lr_mult"]) == (1333, "imagenet", 1.0)
    assert init_defaults("lightseg.tasks.InstanceSegmentationTask")["min_size"] == 800
    assert init_defaults("no.such.Task") == {}
