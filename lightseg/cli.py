"""The ``lightseg`` command: a LightningCLI with ``fit``, ``validate``, ``test`` and ``predict``."""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any, cast

import torch
import yaml
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from typing_extensions import override

import lightseg.datamodules
import lightseg.tasks  # noqa: F401  (registers the tasks' short names)
from lightseg.callbacks import SegmentationWriter
from lightseg.callbacks.summary import RunSummary, without_ckpt_path
from lightseg.checkpoints import (
    ALIASES,
    BesideCheckpointIO,
    InterruptCheckpoint,
    find_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
)
from lightseg.checkpoints import ModelCheckpoint as RunCheckpoint
from lightseg.config_files import check_config_files
from lightseg.errors import LightsegError
from lightseg.export import ExportSettings
from lightseg.parser_errors import LightsegArgumentParser
from lightseg.run_folder import RunFolderGuard, run_dir
from lightseg.tasks import BaseTask
from lightseg.trainer import LightsegTrainer

CSV_LOGGER = "lightning.pytorch.loggers.CSVLogger"
#: the run-folder guards of the runs this process started (see :func:`main`)
RUN_GUARDS: list[RunFolderGuard] = []
WANDB_ID_KEY = "lightseg_wandb_run_id"
DESCRIPTION = (
    "lightseg: semantic, instance and keypoint segmentation on PyTorch Lightning, driven by YAML configs. "
    "Train with `lightseg fit --config CONFIG.yaml`, then test, predict with or export its checkpoints "
    "(--ckpt_path best | last | FILE)."
)
EPILOG = (
    "lightseg data check --config CONFIG.yaml reads every sample of the config's data set and reports what is "
    "wrong with it (lightseg data --help); lightseg export writes the trained model as ONNX, TorchScript or "
    "torch.export, verified against PyTorch (lightseg export --help)."
)
# logger class -> the packages it can use (any one) and the lightseg extra that installs them
LOGGER_PACKAGES = (
    ("WandbLogger", ("wandb",), "wandb"),
    ("TensorBoardLogger", ("tensorboard", "tensorboardX"), "tensorboard"),
)


class LoggerSaveConfigCallback(SaveConfigCallback):
    """Saves the resolved config as ``config.yaml`` in the run folder and sends it to the logger.

    Checkpoints also record the W&B run id, so that ``fit --ckpt_path last`` continues the
    same W&B run.
    """

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "predict":  # a prediction has no run folder (its files go to the writer's output_dir)
            return
        if self.already_saved or not isinstance(trainer.logger, WandbLogger):
            super().setup(trainer, pl_module, stage)
            return
        # W&B runs share their save_dir: the config goes into the run's own folder, beside its checkpoints
        if trainer.is_global_zero:
            path = run_dir(trainer) / self.config_filename
            path.parent.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, str(path), skip_none=False, overwrite=True, multifile=self.multifile)
            self.save_config(trainer, pl_module, stage)
        self.already_saved = trainer.strategy.broadcast(True)

    @override
    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if trainer.logger is not None:
            config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
            trainer.logger.log_hyperparams({"config": config})

    @override
    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                checkpoint[WANDB_ID_KEY] = str(logger.version)


class LightsegCLI(LightningCLI):
    """LightningCLI with lightseg's tasks and data modules, linked ``num_classes`` and checkpoint aliases.

    Tasks and data modules are chosen by short name (``SemanticSegmentationTask``) or by
    import path (a user's subclass). ``--ckpt_path best`` is the best-scoring checkpoint of
    all runs of the same config, ``last`` the newest ``last*.ckpt``, also in a new process.
    """

    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        self.args = list(sys.argv[1:] if args is None else args)
        super().__init__(
            model_class=BaseTask,
            datamodule_class=LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=LoggerSaveConfigCallback,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            parser_class=LightsegArgumentParser,
            # an abbreviated option (--trainer.max_epoch) would silently set another one
            parser_kwargs={"allow_abbrev": False, "epilog": EPILOG, "description": DESCRIPTION},
            trainer_class=LightsegTrainer,
            args=args,
            run=run,
            **kwargs,
        )

    @override
    def setup_parser(
        self, add_subcommands: bool, main_kwargs: dict[str, Any], subparser_kwargs: dict[str, Any]
    ) -> None:
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        self.parser.add_argument("--version", action="version", version=version_line(), help="Print versions and exit.")

    @staticmethod
    @override
    def subcommands() -> dict[str, set[str]]:
        return {**LightningCLI.subcommands(), "export": {"model", "datamodule"}}

    @override
    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # model and data first: `lightseg fit --help` shows what a user configures before the Trainer's options
        parser.add_lightning_class_args(self._model_class, "model", subclass_mode=self.subclass_mode_model)
        parser.add_lightning_class_args(self._datamodule_class, "data", subclass_mode=self.subclass_mode_data)
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.set_defaults({"trainer." + k: v for k, v in self.trainer_defaults.items() if k != "callbacks"})

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        # A CSV logger unless a config says otherwise. Run configs set only its init_args
        # (save_dir, name), so that a logger preset given before them (configs/trainer/wandb.yaml)
        # keeps its class and takes their folder and name.
        parser.set_defaults({"trainer.logger": {"class_path": CSV_LOGGER, "init_args": {"save_dir": "runs"}}})

    @override
    def before_instantiate_classes(self) -> None:
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        for logger in _as_list(config.get("trainer", {}).get("logger")):
            class_path = str(_field(logger, "class_path"))
            for suffix, module, extra in LOGGER_PACKAGES:
                if class_path.endswith(suffix) and not any(_importable(m) for m in module):
                    raise LightsegError(
                        f"trainer.logger {suffix} needs the {module[0]} package, which is not installed: "
                        f'pip install "lightseg[{extra}]" (or -c constraints.txt -e ".[{extra}]" in a checkout), '
                        "or choose another logger"
                    )
            if class_path.endswith("WandbLogger"):
                _fill_wandb_defaults(_field(logger, "init_args"), config)
        if subcommand == "predict":
            # a prediction logs nothing: no run folder, its files go to --prediction.output_dir
            config.trainer.logger = False
        elif subcommand in ("validate", "test"):
            results_beside_checkpoint(config, subcommand)
        check_values(config)

    @override
    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "predict":  # output options only where they mean something
            parser.add_lightning_class_args(SegmentationWriter, "prediction")
        if subcommand == "export":
            parser.add_class_arguments(ExportSettings, "export", as_group=False)  # the method took the group name
        return parser

    def before_export(self) -> None:
        """Hand ``--export.*`` and the resolved config to the trainer's :meth:`~LightsegTrainer.export`."""
        trainer = cast(LightsegTrainer, self.trainer)
        settings = self.config_init["export"]["export"]  # not instantiated: a class outside a group
        trainer.export_settings = settings if isinstance(settings, ExportSettings) else ExportSettings(**vars(settings))
        config = self.config["export"].clone()
        del config["export"]
        trainer.export_config = json.loads(json.dumps(config.as_dict(), default=str))

    @override
    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        self._resolve_ckpt_alias()
        # a num_classes the user set (command line or config), before a checkpoint fills in its own
        subcommand = self.config.get("subcommand")
        model = (self.config[subcommand] if subcommand else self.config).get("model")
        given = _field(_field(model, "init_args"), "num_classes")
        default = _init_defaults(str(_field(model, "class_path") or "")).get("num_classes")
        self._given_num_classes: int | None = given if given is not None and given != default else None

    @override
    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        for callback in cast(Any, self.trainer).callbacks:
            if type(callback) is ModelCheckpoint:  # lightseg's: last.ckpt after every epoch, as promised
                callback.__class__ = RunCheckpoint
        strategy = self.trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:  # the user configured none of their own
            strategy.checkpoint_io = BesideCheckpointIO()
        if self.config.get("subcommand") == "fit":
            cast(Any, self.trainer).callbacks.append(InterruptCheckpoint(resume_command(self.args)))
        cast(Any, self.trainer).callbacks.append(RunSummary(self.args[1:]))
        guard = RunFolderGuard()  # notes the run folders before the run makes any of them
        guard.watch(self.trainer)
        RUN_GUARDS.append(guard)
        data_classes = getattr(self.datamodule, "num_classes", None)
        given = self._given_num_classes
        if given is not None and isinstance(data_classes, int) and given != data_classes:
            raise LightsegError(
                f"model num_classes={given} disagrees with the data: {type(self.datamodule).__name__} has "
                f"{data_classes} classes (background included), and the data decides; leave model num_classes out"
            )
        subcommand = self.config.get("subcommand")
        if subcommand in ("validate", "test", "predict", "export"):
            _warn_if_untrained(self.config[subcommand], self.model)

    @override
    def _parse_ckpt_path(self) -> None:
        # Lightning applies the checkpoint's hyperparameters over the parsed config, so that a
        # checkpoint alone rebuilds its model; but they would also override what the user's
        # config files and command line set for this run (test-time augmentation, detection
        # thresholds, ...). Here the checkpoint only fills in the arguments left at their defaults.
        subcommand = self.config.get("subcommand")
        model = self.config[subcommand].get("model") if subcommand else None
        before = cast(Any, model).clone() if hasattr(model, "clone") else None
        super()._parse_ckpt_path()
        after = self.config[subcommand].get("model") if subcommand else None
        if before is None or after is None:
            return
        if _field(before, "class_path") != _field(after, "class_path"):
            # Lightning would silently run the checkpoint's task instead of the configured one
            ours_class = _import_class(_field(before, "class_path"))
            theirs_class = _import_class(_field(after, "class_path"))
            if not (ours_class and theirs_class and _related(ours_class, theirs_class)):
                raise LightsegError(
                    f"--ckpt_path {self.config[subcommand].get('ckpt_path')} holds a "
                    f"{str(_field(after, 'class_path')).rsplit('.', 1)[-1]}, but this run's model is a "
                    f"{str(_field(before, 'class_path')).rsplit('.', 1)[-1]}; use a checkpoint of the same task "
                    "(or the config it was trained with)"
                )
            if issubclass(ours_class, theirs_class):  # the user's own subclass of the checkpoint's task
                after.class_path = _field(before, "class_path")
        ours, theirs = _field(before, "init_args"), _field(after, "init_args")
        if ours is None or theirs is None:
            return
        defaults = _init_defaults(str(_field(before, "class_path")))
        if not defaults:
            return
        for key, value in vars(ours).items():
            if key in defaults and _plain(value) != _plain(defaults[key]):
                setattr(theirs, key, value)

    def _resolve_ckpt_alias(self) -> None:
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        alias = config.get("ckpt_path")
        if alias and alias not in ALIASES:
            content = load_checkpoint(alias)  # one line for a missing, unreadable or foreign file, before any work
            if subcommand == "fit" and "optimizer_states" not in content:
                last = Path(alias).parent / "last.ckpt"
                raise LightsegError(
                    f"--ckpt_path {alias} holds the weights only (lightseg keeps the monitored checkpoints that way), "
                    "so training cannot resume from it: resume from the full state"
                    + (f" in {last}" if last.is_file() else " of the run's last.ckpt")
                    + f", or start a new run from these weights with --model.init_args.init_from {alias}"
                )
        if subcommand == "fit" and alias and alias not in ALIASES:
            continue_wandb_run(config, Path(alias))
        if alias not in ALIASES or (subcommand == "fit" and alias == "best"):
            return
        roots = checkpoint_roots(config)
        if subcommand == "fit" and not find_checkpoints(roots):
            # as Lightning does: a job that always passes --ckpt_path last starts fresh the first time
            print(f"lightseg: --ckpt_path last: no checkpoint yet under {', '.join(map(str, roots))}; "
                  "starting from scratch", file=sys.stderr)  # fmt: skip
            config["ckpt_path"] = None
            return
        path, message = resolve_checkpoint(alias, roots)
        print(f"lightseg: {message}", file=sys.stderr)
        config["ckpt_path"] = str(path)
        if subcommand == "fit":
            continue_wandb_run(config, path)


def results_beside_checkpoint(config: Any, subcommand: str) -> None:
    """Point a CSV / TensorBoard logger of an evaluation at ``<run>/<subcommand>-<checkpoint>/``.

    An evaluation of ``<run>/checkpoints/<name>.ckpt`` of one of the config's own runs (the
    logger's ``save_dir/name`` holds ``<run>``) is not a new run: its metrics, tables and
    pictures go into the training run's folder, one folder per evaluated checkpoint
    (evaluating it again replaces them). A logger pointed elsewhere (another ``name`` or
    ``save_dir``: the one place the user names), with an explicit ``version``, W&B, and
    checkpoints outside a run's ``checkpoints/`` folder keep the logger's own layout.
    """
    checkpoint = Path(str(config.get("ckpt_path") or ""))
    if checkpoint.suffix != ".ckpt" or checkpoint.parent.name != "checkpoints":
        return
    run = checkpoint.parent.parent
    for logger in _as_list((config.get("trainer") or {}).get("logger")):
        init_args = _field(logger, "init_args")
        if not str(_field(logger, "class_path")).endswith(("CSVLogger", "TensorBoardLogger")) or init_args is None:
            continue
        if _field(init_args, "version") is not None:
            continue
        root = Path(str(_field(init_args, "save_dir") or ".")) / str(_field(init_args, "name") or "")
        if root.resolve() == run.parent.resolve():
            init_args.version = f"{run.name}/{subcommand}-{checkpoint.stem}"


def version_line() -> str:
    """``lightseg X (torch Y, torchvision Z, lightning W)``: what a bug report needs."""
    import torchvision
    from lightning import __version__ as lightning_version

    from lightseg import __version__

    return (
        f"lightseg {__version__} (torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"lightning {lightning_version})"
    )


def resume_command(args: list[str]) -> str:
    """``lightseg <args>`` without its ``--ckpt_path``, for the user to copy."""
    return shlex.join(["lightseg", *without_ckpt_path(args)])


def check_values(config: Any) -> None:
    """Refuse, before any work, values that would fail (or silently misbehave) only once a run is under way."""
    optimizer = _field(_field(config.get("model"), "init_args"), "optimizer")
    for key in ("lr", "weight_decay", "momentum"):
        value = _field(_field(optimizer, "init_args"), key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            raise LightsegError(f"model.optimizer.{key} must be >= 0, got {value}")
    for folder in checkpoint_roots(config):
        if folder.exists() and not folder.is_dir():
            raise LightsegError(
                f"{folder} (default_root_dir, a logger's save_dir or a checkpoint dirpath) is a file, not a folder; "
                "choose another folder for the run"
            )


def _import_class(class_path: Any) -> type | None:
    try:
        module, _, name = str(class_path).rpartition(".")
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None
    return found if isinstance(found, type) else None


def _related(a: type, b: type) -> bool:
    return issubclass(a, b) or issubclass(b, a)


def _init_defaults(class_path: str) -> dict[str, Any]:
    """The default of each ``__init__`` argument of the class at ``class_path`` (empty if it cannot be found)."""
    found = _import_class(class_path)
    try:
        signature = inspect.signature(found) if found is not None else None
    except ValueError:
        signature = None
    if signature is None:
        return {}
    return {k: p.default for k, p in signature.parameters.items() if p.default is not inspect.Parameter.empty}


def _warn_if_untrained(config: Any, model: Any) -> None:
    # evaluating a model whose head nobody trained is almost always a forgotten --ckpt_path (an exported
    # model's path says where its weights are)
    hparams = getattr(model, "hparams", {})
    if config.get("ckpt_path") or hparams.get("init_from") or hparams.get("weights") or hparams.get("path"):
        return
    print(
        "lightseg: warning: no --ckpt_path (nor init_from or whole-model weights): evaluating a model whose head "
        "is untrained; pass --ckpt_path best|last|<file.ckpt>",
        file=sys.stderr,
    )


def continue_wandb_run(config: Any, checkpoint: Path) -> None:
    """Resume the W&B run recorded in ``checkpoint`` when a W&B logger has no run id of its own."""
    for logger in _as_list((config.get("trainer") or {}).get("logger")):
        init_args = _field(logger, "init_args")
        if not str(_field(logger, "class_path")).endswith("WandbLogger") or init_args is None:
            continue
        if _field(init_args, "id") or _field(init_args, "version"):
            return
        try:
            run_id = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True).get(WANDB_ID_KEY)
        except Exception:  # not a readable checkpoint: loading it reports that, with its own message
            return
        if run_id:
            init_args.id = run_id
            print(f"lightseg: continuing W&B run {run_id}", file=sys.stderr)


def _fill_wandb_defaults(init_args: Any, config: Any) -> None:
    # A W&B run is found by its group and tags: by default the run's name and what it trains.
    if init_args is None:
        return
    model = _field(config.get("model"), "init_args")
    if _field(init_args, "group") is None and _field(init_args, "name"):
        init_args.group = _field(init_args, "name")
    if _field(init_args, "tags") is None:
        task = str(_field(config.get("model"), "class_path") or "").rsplit(".", 1)[-1]
        data = str(_field(config.get("data"), "class_path") or "").rsplit(".", 1)[-1]
        tags = [task, str(_field(model, "arch") or ""), str(_field(model, "backbone") or ""), data]
        init_args.tags = [t for t in tags if t and t != "None"]


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def finish_wandb(trainer: Trainer | None) -> None:
    """Close the W&B runs of ``trainer`` (summary and files written), so that the next run in this process is new."""
    for logger in trainer.loggers if trainer is not None else []:
        if isinstance(logger, WandbLogger) and getattr(logger, "_experiment", None) is not None:
            logger.experiment.finish()


def checkpoint_roots(config: Any) -> list[Path]:
    """Folders where the configured run writes checkpoints.

    These are the ModelCheckpoint dirpaths, the loggers' save dirs and the trainer's ``default_root_dir``.
    """
    trainer = config.get("trainer") or {}
    roots: list[Path] = []
    for callback in _as_list(trainer.get("callbacks")):
        if "ModelCheckpoint" in str(_field(callback, "class_path")):
            dirpath = _field(_field(callback, "init_args"), "dirpath")
            if dirpath:
                roots.append(Path(dirpath))
    for logger in _as_list(trainer.get("logger")):
        save_dir = _field(_field(logger, "init_args"), "save_dir")
        if save_dir:
            roots.append(Path(save_dir))
    roots.append(Path(trainer.get("default_root_dir") or "."))
    return list(dict.fromkeys(roots))


def _plain(value: Any) -> Any:
    """Tuples as lists, recursively, so that a parsed value compares equal to its Python default."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _as_list(value: Any) -> list[Any]:
    if value is None or isinstance(value, bool):
        return []
    return list(value) if isinstance(value, list) else [value]


def _field(obj: Any, key: str) -> Any:
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


class _DropLightningTips(logging.Filter):
    """Drops Lightning's advertisements for its cloud services (``💡 Tip: ... litlogger``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def build_cli(args: list[str] | None = None, run: bool = True) -> LightsegCLI:
    """Build (and with ``run=True`` execute) the CLI; tests and benchmarks use ``run=False``."""
    rank_zero_log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropLightningTips) for f in rank_zero_log.filters):
        rank_zero_log.addFilter(_DropLightningTips())
    with warnings.catch_warnings():
        # explicit args are this function's purpose; Lightning warns whenever sys.argv is also set
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        # Lightning's own use of a torch API that torch deprecates: nothing a user can act on
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
        if (sys.argv[1:] if args is None else args)[:1] in (["validate"], ["test"]):
            # an evaluation writes beside the checkpoint's run: its checkpoint state is not resumed anyway
            warnings.filterwarnings("ignore", message="The dirpath has changed from")
        return LightsegCLI(args=args, run=run)


def main(args: list[str] | None = None) -> None:
    """Entry point: ``lightseg <subcommand> ...``; a user mistake exits with status 2 and one line."""
    RUN_GUARDS.clear()
    arguments = list(sys.argv[1:] if args is None else args)
    try:
        if arguments[:1] == ["data"]:
            from lightseg.data_command import data_main

            data_main(arguments[1:])
            return
        check_config_files(arguments)
        cli = build_cli(args)
        finish_wandb(getattr(cli, "trainer", None))
    except Exception as err:
        user_error = find_user_error(err)
        if user_error is None:
            raise
        for guard in RUN_GUARDS:  # a mistake before the first checkpoint leaves no run folder behind
            guard.remove_unfinished()
        print(f"lightseg: error: {user_message(user_error)}", file=sys.stderr)
        raise SystemExit(2) from None


GPU_HINT = (
    "the trainer asks for a GPU but torch sees none (torch.cuda.is_available() is False); "
    "use --trainer.accelerator auto (or cpu), or run on a machine with a CUDA GPU"
)


def find_user_error(err: BaseException) -> LightsegError | None:
    """The :class:`LightsegError` behind ``err``, also when jsonargparse or Lightning wrapped it."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [err]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        if isinstance(current, LightsegError):
            return current
        if isinstance(current, MisconfigurationException):  # Lightning's word for a configuration mistake
            message = str(current).strip()
            return LightsegError(GPU_HINT if "gpu backend" in message.lower() else message)
        seen.add(id(current))
        pending += [current.__cause__, current.__context__]
    return None


def user_message(err: BaseException) -> str:
    """The message of a user error, without the traceback a DataLoader worker wraps around it."""
    text = str(err)
    if "Original Traceback" in text:
        marker = f"{type(err).__name__}: "
        text = text[text.rfind(marker) + len(marker) :] if marker in text else text.strip().splitlines()[-1]
    return text.strip()


def console_main() -> None:
    """The ``lightseg`` console script (exit status 0, or 2 for a user mistake)."""
    main()
