"""The one place lightseg relies on LightningCLI's (and Lightning's) private names, turned into public seams.

LightningCLI offers no public hook to add options to one subcommand only, nor to shape how
a checkpoint's hyperparameters enter the config. This adapter overrides the two private
methods that do those things (the second replaced whole: it is where Lightning reads the
checkpoint) and calls the public functions below; it also reads the classes and config the
CLI was given, tells whether a W&B run was started, gives a Lightning ``ModelCheckpoint``
lightseg's behaviour in place, and gives the trainer an evaluation loop that runs on a process
that got no sample (Lightning's skips it, and the other processes then wait for it forever).
``tests/test_cli_adapter.py`` pins what it assumes of Lightning (names, signatures, call sites,
checkpoint keys), so that a Lightning upgrade that changes them fails a test, not a user.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import sys
from pathlib import Path
from typing import Any, cast

import torch
from jsonargparse import Namespace
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.loops.evaluation_loop import _EvaluationLoop
from lightning.pytorch.loops.fit_loop import _FitLoop
from lightning.pytorch.loops.prediction_loop import _PredictionLoop
from lightning.pytorch.trainer.states import RunningStage, TrainerFn
from torch import distributed as dist
from torch.nn.parallel import DistributedDataParallel
from typing_extensions import override

from lightseg.checkpoints import load_checkpoint
from lightseg.errors import LightsegError
from lightseg.tasks.base import BaseTask


class AdaptedLightningCLI(LightningCLI):
    """LightningCLI with :meth:`add_subcommand_arguments` and a checkpoint that fills in only defaults."""

    def add_subcommand_arguments(self, parser: LightningArgumentParser, subcommand: str) -> None:
        """Add options to the parser of ``subcommand`` only (after its trainer method's own)."""

    def configured(self, key: str, default: Any = None) -> Any:
        """The instantiated config's ``key`` of the running subcommand (``trainer``, ``model``, ...)."""
        return self._get(self.config_init, key, default=default)

    @override
    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        self.add_subcommand_arguments(parser, subcommand)
        return parser

    @override
    def _parse_ckpt_path(self) -> None:
        # Lightning's own version applies the checkpoint's hyperparameters over the parsed config,
        # so that a checkpoint alone rebuilds its model. Two things differ here: the task first
        # brings an older checkpoint's hyperparameters to today's form (migrate_hparams), and the
        # checkpoint only fills in the arguments left at their defaults, never overriding what the
        # user's config files and command line set for this run (test-time augmentation,
        # detection thresholds, ...).
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        hparams = dict(load_checkpoint(ckpt_path).get(LightningModule.CHECKPOINT_HYPER_PARAMS_KEY) or {})
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        model = self.config[subcommand].get("model")
        before = cast(Any, model).clone() if hasattr(model, "clone") else None
        if "_class_path" in hparams:
            class_path = hparams.pop("_class_path")
            if before is not None:  # before its settings are read into the configured task's
                check_same_task(field(before, "class_path"), class_path, ckpt_path)
            task = import_class(class_path)
            if task is not None and issubclass(task, BaseTask):
                hparams = task.migrate_hparams(hparams)
            hparams = {"class_path": class_path, "dict_kwargs": hparams}
        try:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        except SystemExit:
            sys.stderr.write(f"The hyperparameters saved in {ckpt_path} do not fit this version's task.\n")
            raise
        after = self.config[subcommand].get("model")
        if before is not None and after is not None:
            keep_configured_model(before, after, ckpt_path)


def batches_everywhere(trainer: Trainer, max_batches: list[int | float]) -> float:
    """The batches of every process together (a reduction: every process calls it at the same point)."""
    local = torch.tensor(float(sum(max_batches)), device=trainer.strategy.root_device)
    return float(trainer.strategy.reduce(local, reduce_op="sum"))


class _SkippedOnlyWhereNoProcessHasABatch:
    """The ``skip`` of the loops below: from the batches of every process together, set in ``setup_data``."""

    _batches_everywhere: float = 0.0

    @property
    def skip(self) -> bool:
        return self._batches_everywhere == 0


class EveryProcessEvaluationLoop(_SkippedOnlyWhereNoProcessHasABatch, _EvaluationLoop):
    """Lightning's validation / test loop, run by every process unless no process has a batch.

    Lightning skips the loop on a process whose loader is empty, hooks included; under DDP the
    other processes then wait in the epoch end's reductions (the metrics' sync) for a process
    that never comes. With :class:`~lightseg.datamodules.sampling.EvaluationShardSampler` a process
    gets no sample when there are fewer samples than processes: here it runs no step but its
    epoch start and end like the others, and adds nothing to the sums. Whether to skip is
    decided from the batch count summed over the processes (one reduction per loader set-up,
    on every process alike).
    """

    @override
    def on_run_start(self) -> None:
        # Inside fit, DDP's first forward after training broadcasts the module buffers (BatchNorm
        # statistics) from process 0, a collective that a process without a batch never joins:
        # every process does that broadcast here instead, before any step.
        ddp = self.trainer.strategy.model
        if isinstance(ddp, DistributedDataParallel) and ddp.will_sync_module_buffers():
            broadcast_buffers(ddp)
            ddp.require_forward_param_sync = False  # set again by the next training forward
        super().on_run_start()

    @override
    def setup_data(self) -> None:
        before = self._combined_loader
        super().setup_data()
        if self._combined_loader is None:  # no loader: limit_*_batches 0, or no *_step
            self._batches_everywhere = 0.0
        elif self._combined_loader is not before:  # new loaders (not those kept across a fit)
            self._batches_everywhere = batches_everywhere(self.trainer, self._max_batches)


class EveryProcessPredictionLoop(_SkippedOnlyWhereNoProcessHasABatch, _PredictionLoop):
    """Lightning's predict loop, run by every process unless no process has a batch.

    As :class:`EveryProcessEvaluationLoop`: a process that got no image (fewer images than
    processes) still runs the epoch's hooks, where the prediction writers meet to count and
    publish what every process wrote.
    """

    @override
    def setup_data(self) -> None:
        super().setup_data()
        limited = self.trainer.limit_predict_batches == 0
        self._batches_everywhere = 0.0 if limited else batches_everywhere(self.trainer, self.max_batches)


def broadcast_buffers(ddp: DistributedDataParallel) -> None:
    """Copy process 0's module buffers to every process, as DDP's forward does (one broadcast per dtype)."""
    ignored = set(getattr(ddp, "parameters_to_ignore", ()))
    buffers = [b for name, b in ddp.module.named_buffers() if name not in ignored]
    with torch.no_grad():
        for dtype in sorted({b.dtype for b in buffers}, key=str):
            group = [b for b in buffers if b.dtype == dtype]
            flat = torch.cat([b.reshape(-1) for b in group])
            dist.broadcast(flat, src=0)
            for buffer, value in zip(group, flat.split([b.numel() for b in group]), strict=True):
                buffer.copy_(value.view_as(buffer))


class FitLoopResumedAtItsBatch(_FitLoop):
    """Lightning's fit loop, making a resumed run's training iterator again once the checkpoint is restored.

    Lightning makes the iterator early when the optimiser set-up asks for the number of steps
    (``estimated_stepping_batches``), before the loop's progress is restored. A loader with
    workers draws its first indices as it is made: it would start the resumed epoch from its
    first batch. Made again in ``on_run_start``, the loader's sampler sees the restored progress
    (and a stateful loader the state saved in the checkpoint).
    """

    @override
    def on_run_start(self) -> None:
        if self.restarting and self._data_fetcher is not None:
            self._load_combined_loader_states()
            iter(self._data_fetcher)
        super().on_run_start()


def resume_at_the_saved_batch(trainer: Trainer) -> None:
    """Give ``trainer`` a :class:`FitLoopResumedAtItsBatch` (the epoch loop and its validation loop kept)."""
    loop = trainer.fit_loop
    if isinstance(loop, FitLoopResumedAtItsBatch):
        return
    replacement = FitLoopResumedAtItsBatch(trainer, min_epochs=loop.min_epochs, max_epochs=loop.max_epochs)
    replacement.epoch_loop = loop.epoch_loop
    trainer.fit_loop = replacement


def evaluate_on_every_process(trainer: Trainer) -> None:
    """Give ``trainer`` loops that run on every process: validation (also inside ``fit``), test and predict."""
    loops = (
        (trainer.fit_loop.epoch_loop, "val_loop", TrainerFn.FITTING, RunningStage.VALIDATING),
        (trainer, "validate_loop", TrainerFn.VALIDATING, RunningStage.VALIDATING),
        (trainer, "test_loop", TrainerFn.TESTING, RunningStage.TESTING),
    )
    for owner, name, fn, stage in loops:
        loop = getattr(owner, name)
        if not isinstance(loop, EveryProcessEvaluationLoop):
            replacement = EveryProcessEvaluationLoop(trainer, fn, stage, loop.verbose, loop.inference_mode)
            setattr(owner, name, replacement)
    if not isinstance(trainer.predict_loop, EveryProcessPredictionLoop):
        trainer.predict_loop = EveryProcessPredictionLoop(trainer, trainer.predict_loop.inference_mode)


def wandb_run_started(logger: WandbLogger) -> bool:
    """Whether ``logger`` started its W&B run (reading ``logger.experiment`` would start one)."""
    return getattr(logger, "_experiment", None) is not None


def give_behaviour(callback: Any, cls: type) -> None:
    """Make the built ``callback`` an instance of its subclass ``cls`` in place.

    Lightning builds its own ``ModelCheckpoint`` (the default, or one configured by class path)
    before lightseg sees it, and its arguments cannot be read back to build another; ``cls``
    adds behaviour only (no state of its own), so the instance changes class and keeps its state.
    """
    if type(callback) not in cls.__bases__:  # a direct subclass: its state is the instance's class's
        raise TypeError(f"{cls.__name__} is not a subclass of {type(callback).__name__} that adds behaviour only")
    callback.__class__ = cls


def keep_configured_model(before: Any, after: Any, ckpt_path: Any) -> None:
    """Undo, in ``after`` (the model config with a checkpoint's hyperparameters applied), what overrode the user.

    The configured task class stays (a user's subclass of the checkpoint's task, or an error
    for an unrelated one), and every argument the user set away from its default keeps the
    user's value.
    """
    if field(before, "class_path") != field(after, "class_path"):
        # Lightning would silently run the checkpoint's task instead of the configured one
        check_same_task(field(before, "class_path"), field(after, "class_path"), ckpt_path)
        ours_class, theirs_class = import_class(field(before, "class_path")), import_class(field(after, "class_path"))
        if ours_class and theirs_class and issubclass(ours_class, theirs_class):  # the user's own subclass of it
            after.class_path = field(before, "class_path")
    ours, theirs = field(before, "init_args"), field(after, "init_args")
    if ours is None or theirs is None:
        return
    defaults = init_defaults(str(field(before, "class_path")))
    for key, value in vars(ours).items():
        default = defaults.get(key, inspect.Parameter.empty)
        if dataclasses.is_dataclass(default) and isinstance(value, Namespace):
            # a group of settings (e.g. inference): setting by setting
            group = field(theirs, key)
            for name in vars(value):
                if isinstance(group, Namespace) and plain(value[name]) != plain(getattr(default, name, None)):
                    group[name] = value[name]
        elif key in defaults and plain(value) != plain(default):
            setattr(theirs, key, value)


def check_same_task(ours: Any, theirs: Any, ckpt_path: Any) -> None:
    """Refuse, in one line, a checkpoint of a task (``theirs``) unrelated to the configured one (``ours``)."""
    ours_class, theirs_class = import_class(ours), import_class(theirs)
    if ours_class and theirs_class and (issubclass(ours_class, theirs_class) or issubclass(theirs_class, ours_class)):
        return
    raise LightsegError(
        f"--ckpt_path {ckpt_path} holds a {str(theirs).rsplit('.', 1)[-1]}, but this run's model is a "
        f"{str(ours).rsplit('.', 1)[-1]}; use a checkpoint of the same task (or the config it was trained with)"
    )


def import_class(class_path: Any) -> type | None:
    """The class at ``class_path`` (``None`` if it cannot be imported)."""
    try:
        module, _, name = str(class_path).rpartition(".")
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None
    return found if isinstance(found, type) else None


def init_defaults(class_path: str) -> dict[str, Any]:
    """The default of each ``__init__`` argument of the class at ``class_path`` (empty if it cannot be found).

    Arguments a class passes on as ``**kwargs`` take their parents' defaults (the nearest wins),
    as jsonargparse resolves them.
    """
    found = import_class(class_path)
    parameters = init_parameters(found) if found is not None else {}
    return {name: p.default for name, p in parameters.items() if p.default is not inspect.Parameter.empty}


def init_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The ``__init__`` arguments of ``cls`` and of its bases, which its ``**kwargs`` reach (the nearest wins)."""
    found: dict[str, inspect.Parameter] = {}
    for klass in reversed(cls.__mro__):
        if "__init__" not in vars(klass) or klass is object:
            continue
        try:
            parameters = inspect.signature(vars(klass)["__init__"]).parameters.values()
        except (TypeError, ValueError):
            continue
        found |= {p.name: p for p in parameters if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    return found


def plain(value: Any) -> Any:
    """Tuples as lists, recursively, so that a parsed value compares equal to its Python default."""
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def field(obj: Any, key: str) -> Any:
    """``obj[key]`` of a parsed config node (a Namespace or a dict), ``None`` where absent."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


def as_list(value: Any) -> list[Any]:
    """A config value that may be one item, a list or nothing (``False``: switched off) as a list."""
    if value is None or isinstance(value, bool):
        return []
    return list(value) if isinstance(value, list) else [value]
