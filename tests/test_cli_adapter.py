"""What lightseg assumes of Lightning's private methods (the CLI adapter, the checkpoint callback), pinned.

An upgrade of Lightning or jsonargparse that breaks an assumption fails here, not in a user's run.
"""

from __future__ import annotations

import inspect

import pytest
from jsonargparse import Namespace
from lightning.pytorch import LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from lightseg.cli.adapter import AdaptedLightningCLI, init_defaults, keep_configured_model
from lightseg.errors import LightsegError
from lightseg.tasks import SemanticSegmentationTask

SEMANTIC = "lightseg.tasks.SemanticSegmentationTask"


class MyTask(SemanticSegmentationTask):
    """A user's subclass."""


def test_model_checkpoint_still_has_the_private_methods_lightsegs_overrides_and_calls() -> None:
    # lightseg.checkpoints.ModelCheckpoint saves weights-only top-k copies by toggling save_weights_only
    # around _save_checkpoint, and moves last.ckpt on with the helpers below
    assert "self.save_weights_only" in inspect.getsource(LightningModelCheckpoint._save_checkpoint)
    for helper, parameters in (
        ("_save_checkpoint", ["self", "trainer", "filepath"]),
        ("_should_save_on_train_epoch_end", ["self", "trainer"]),
        ("_should_skip_saving_checkpoint", ["self", "trainer"]),
        ("_monitor_candidates", ["self", "trainer"]),
        ("_save_last_checkpoint", ["self", "trainer", "monitor_candidates"]),
    ):
        assert list(inspect.signature(getattr(LightningModelCheckpoint, helper)).parameters) == parameters, helper
    assert LightningModelCheckpoint.CHECKPOINT_NAME_LAST == "last"
    # top-k and last copies go through _save_checkpoint, the only place the toggle acts
    for caller in ("_update_best_and_save", "_save_last_checkpoint"):
        assert "self._save_checkpoint(" in inspect.getsource(getattr(LightningModelCheckpoint, caller)), caller


def test_lightning_cli_still_has_the_private_methods_the_adapter_overrides() -> None:
    prepare = inspect.signature(LightningCLI._prepare_subcommand_parser)
    assert list(prepare.parameters) == ["self", "klass", "subcommand", "kwargs"]
    assert "self._prepare_subcommand_parser(trainer_class, subcommand" in inspect.getsource(
        LightningCLI._add_subcommands
    )
    # returns the subcommand's parser, which the adapter extends
    assert "return parser" in inspect.getsource(LightningCLI._prepare_subcommand_parser)
    # _parse_ckpt_path is replaced whole: it must still be called after parsing, before instantiation
    assert list(inspect.signature(LightningCLI._parse_ckpt_path).parameters) == ["self"]
    init = inspect.getsource(LightningCLI.__init__)
    assert init.index("self.parse_arguments(") < init.index("self._parse_ckpt_path()")
    assert init.index("self._parse_ckpt_path()") < init.index("self.before_instantiate_classes()")
    # and the checkpoint keeps the hyperparameters where the replacement reads them
    source = inspect.getsource(LightningCLI._parse_ckpt_path)
    for key in ('ckpt.get("hyper_parameters"', '"_class_path"', '"_instantiator"', '"dict_kwargs"'):
        assert key in source
    assert LightningModule.CHECKPOINT_HYPER_PARAMS_KEY == "hyper_parameters"
    for name in ("_prepare_subcommand_parser", "_parse_ckpt_path"):
        assert name in AdaptedLightningCLI.__dict__


def _model(class_path: str, **init_args: object) -> Namespace:
    return Namespace(class_path=class_path, init_args=Namespace(**init_args))


def test_a_checkpoint_fills_in_only_what_the_user_left_at_its_default() -> None:
    before = _model(SEMANTIC, arch="unet", compile=True, num_classes=21,
                    inference=Namespace(mode="whole", window_size=512, tta_flip=True))  # fmt: skip
    after = _model(SEMANTIC, arch="deeplabv3", compile=False, num_classes=5,
                   inference=Namespace(mode="slide", window_size=[64, 128], tta_flip=False))  # fmt: skip
    keep_configured_model(before, after, "x.ckpt")
    # compile was set by the user; arch and num_classes were the defaults: the checkpoint's stay
    assert (after.init_args.compile, after.init_args.arch, after.init_args.num_classes) == (True, "deeplabv3", 5)
    # a group of settings merges setting by setting: the user's flip, the checkpoint's sliding window
    assert after.init_args.inference == Namespace(mode="slide", window_size=[64, 128], tta_flip=True)


def test_a_users_subclass_stays_and_an_unrelated_task_is_refused() -> None:
    before = _model(f"{__name__}.MyTask", arch="unet")
    after = _model(SEMANTIC, arch="unet")
    keep_configured_model(before, after, "x.ckpt")
    assert after.class_path == f"{__name__}.MyTask"
    with pytest.raises(LightsegError, match=r"x\.ckpt holds a InstanceSegmentationTask, but this run's model"):
        keep_configured_model(_model(SEMANTIC), _model("lightseg.tasks.InstanceSegmentationTask"), "x.ckpt")


def test_defaults_of_arguments_passed_on_as_kwargs_are_the_parents() -> None:
    defaults = init_defaults("lightseg.tasks.KeypointDetectionTask")
    network = defaults["network"]
    assert network.min_size == (640, 672, 704, 736, 768, 800)  # its own group's, over DetectionTask's 800
    assert (network.max_size, network.weights_backbone, defaults["head_lr_mult"]) == (1333, "imagenet", 1.0)
    assert init_defaults("lightseg.tasks.InstanceSegmentationTask")["network"].min_size == 800
    assert init_defaults("no.such.Task") == {}


def test_the_other_private_names_the_adapter_reads_are_still_there() -> None:
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers import WandbLogger

    from lightseg.callbacks.checkpoints import ModelCheckpoint as RunCheckpoint
    from lightseg.cli.adapter import give_behaviour, wandb_run_started
    from lightseg.cli.parser_errors import LightsegArgumentParser

    # configured(): LightningCLI's _get reads a key of the running subcommand's config
    assert list(inspect.signature(LightningCLI._get).parameters) == ["self", "config", "key", "default"]
    # the defaults LightningCLI gives classes it was not given (app.py uses the public attributes the same way)
    init = inspect.getsource(LightningCLI.__init__)
    assert "self._model_class = model_class or LightningModule" in init
    assert "self._datamodule_class = datamodule_class or LightningDataModule" in init
    # wandb_run_started: WandbLogger keeps its run in _experiment, None until started
    assert "self._experiment = experiment" in inspect.getsource(WandbLogger.__init__)  # None unless one is given
    assert "if self._experiment is None:" in inspect.getsource(WandbLogger)  # experiment starts the run then
    assert not wandb_run_started(WandbLogger(offline=True))
    # give_behaviour: an instance changes class in place and keeps its state; an unrelated class is refused
    checkpoint = LightningModelCheckpoint(monitor="val_miou", save_last=True)
    give_behaviour(checkpoint, RunCheckpoint)
    assert type(checkpoint) is RunCheckpoint and checkpoint.monitor == "val_miou" and checkpoint.save_last
    with pytest.raises(TypeError, match="not a subclass"):
        give_behaviour(Callback(), RunCheckpoint)
    # parser_errors reads argparse's table of option strings (the standard library's, no public reader)
    parser = LightsegArgumentParser()
    parser.add_argument("--seed")
    assert "--seed" in parser._option_string_actions


def test_lightnings_loops_still_skip_and_set_up_as_the_every_process_loops_assume() -> None:
    from lightning.pytorch import Trainer
    from lightning.pytorch.loops.evaluation_loop import _EvaluationLoop
    from lightning.pytorch.loops.prediction_loop import _PredictionLoop

    from lightseg.cli.adapter import EveryProcessEvaluationLoop, EveryProcessPredictionLoop, evaluate_on_every_process

    # the skip the loops replace: a process with no batch leaves before any hook
    for loop in (_EvaluationLoop, _PredictionLoop):
        run = inspect.getsource(loop)
        assert "self.setup_data()\n        if self.skip:" in run, loop
        assert "sum(self.max_batches) == 0" in inspect.getsource(loop.skip.fget), loop  # type: ignore[attr-defined]
    assert "self._combined_loader = combined_loader" in inspect.getsource(_EvaluationLoop.setup_data)
    assert "self._max_batches = []" in inspect.getsource(_EvaluationLoop.setup_data)
    assert "self.max_batches.append" in inspect.getsource(_PredictionLoop.setup_data)
    evaluation = ["self", "trainer", "trainer_fn", "stage", "verbose", "inference_mode"]
    assert list(inspect.signature(_EvaluationLoop.__init__).parameters) == evaluation
    assert list(inspect.signature(_PredictionLoop.__init__).parameters) == ["self", "trainer", "inference_mode"]
    trainer = Trainer(logger=False, enable_progress_bar=False, inference_mode=False)
    evaluate_on_every_process(trainer)
    evaluate_on_every_process(trainer)  # once is enough: the loops are kept
    loops = [trainer.fit_loop.epoch_loop.val_loop, trainer.validate_loop, trainer.test_loop]
    assert all(type(loop) is EveryProcessEvaluationLoop for loop in loops)
    assert [loop._trainer_fn for loop in loops] == ["fit", "validate", "test"]
    assert [loop.verbose for loop in loops] == [False, True, True]
    assert type(trainer.predict_loop) is EveryProcessPredictionLoop
    assert not any(loop.inference_mode for loop in [*loops, trainer.predict_loop])


def test_lightnings_fit_loop_still_makes_the_iterator_as_the_resumed_fit_loop_assumes() -> None:
    from lightning.pytorch import Trainer
    from lightning.pytorch.loops.fit_loop import _FitLoop

    from lightseg.cli.adapter import FitLoopResumedAtItsBatch, resume_at_the_saved_batch

    # what the replacement mends: setup_data makes the iterator (also when asked early, for the
    # number of steps), and a later run() does not make it again while the loader is kept
    setup = inspect.getsource(_FitLoop.setup_data)
    assert "if self._combined_loader is not None and not self._should_reload_train_dl:" in setup
    assert "iter(self._data_fetcher)" in setup and "self._load_combined_loader_states()" in setup
    assert "self.fit_loop.setup_data()" in inspect.getsource(Trainer.estimated_stepping_batches.fget)  # type: ignore[attr-defined]
    assert list(inspect.signature(_FitLoop.__init__).parameters) == ["self", "trainer", "min_epochs", "max_epochs"]
    trainer = Trainer(logger=False, enable_progress_bar=False, min_epochs=2, max_epochs=5, max_steps=40)
    epoch_loop = trainer.fit_loop.epoch_loop
    resume_at_the_saved_batch(trainer)
    resume_at_the_saved_batch(trainer)  # once is enough: the loop is kept
    assert type(trainer.fit_loop) is FitLoopResumedAtItsBatch
    assert trainer.fit_loop.epoch_loop is epoch_loop and trainer.fit_loop.epoch_loop.max_steps == 40
    assert (trainer.fit_loop.min_epochs, trainer.fit_loop.max_epochs) == (2, 5)
