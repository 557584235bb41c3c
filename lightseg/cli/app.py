"""The ``lightseg`` command: a LightningCLI with ``fit``, ``validate``, ``test`` and ``predict``."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from typing import Any, cast

import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from typing_extensions import override

import lightseg.datamodules
import lightseg.tasks  # noqa: F401  (registers the tasks' short names)
from lightseg.callbacks import SegmentationWriter
from lightseg.callbacks.line_progress import lines_unless_terminal
from lightseg.cli.adapter import AdaptedLightningCLI, wandb_run_started
from lightseg.cli.config import (
    WANDB_ID_KEY,
    arch_options_for_the_arch_run,
    check_num_classes,
    check_values,
    equip_run,
    prepare_loggers,
    resolve_ckpt_option,
    results_beside_checkpoint,
    user_num_classes,
    warn_if_untrained,
)
from lightseg.cli.config_files import CONFIG_FILES, check_config_files
from lightseg.cli.flat_options import migrate_loaded, read_flat_options, rewrite_args
from lightseg.cli.parser_errors import LightsegArgumentParser
from lightseg.cli.trainer import LightsegTrainer
from lightseg.commands import DESCRIPTION, EPILOG, version_line
from lightseg.errors import LightsegError, causes
from lightseg.export import ExportSettings
from lightseg.run_folder import RunFolderGuard, run_dir
from lightseg.tasks import BaseTask

CSV_LOGGER = "lightning.pytorch.loggers.CSVLogger"
#: the run-folder guards of the runs this process started (see :func:`main`)
RUN_GUARDS: list[RunFolderGuard] = []
DATA_GROUP_TITLE = (
    "The data: data set, splits, augmentation, batches (--data NAME, e.g. ShapesDataModule, "
    "SegmentationFolderDataModule, VOCDataModule; its options: --data.help NAME)"
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


class LightsegCLI(AdaptedLightningCLI):
    """LightningCLI with lightseg's tasks and data modules, linked ``num_classes`` and checkpoint aliases.

    Tasks and data modules are chosen by short name (``SemanticSegmentationTask``) or by
    import path (a user's subclass). ``--ckpt_path best`` is the best-scoring checkpoint of
    all runs of the same config, ``last`` the newest ``last*.ckpt``, also in a new process.
    """

    #: whether a Ctrl-C during ``fit`` saves a checkpoint and prints the command that resumes it
    interrupt_checkpoint: bool = True
    #: whether the run ends with its summary (checkpoints, run folder, the next commands)
    run_summary: bool = True

    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        self.args = list(sys.argv[1:] if args is None else args)
        check_config_files(self.args)  # each --config file read once: one line naming a broken one; what sets what
        # the network settings' older flat spelling, in the config files and on the command line
        read_flat_options()
        CONFIG_FILES[:] = [(path, migrate_loaded(content)) for path, content in CONFIG_FILES]
        self.args = rewrite_args(self.args, [content for _, content in CONFIG_FILES])
        args = self.args if args is not None or self.args != sys.argv[1:] else None
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
        return {**AdaptedLightningCLI.subcommands(), "export": {"model", "datamodule"}}

    @override
    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # model and data first: `lightseg fit --help` shows what a user configures before the Trainer's options
        # Lightning's own defaults for a CLI built without classes (LightningCLI keeps them privately)
        model_class = self.model_class or LightningModule
        datamodule_class = self.datamodule_class or LightningDataModule
        parser.add_lightning_class_args(model_class, "model", subclass_mode=self.subclass_mode_model)
        parser.add_lightning_class_args(datamodule_class, "data", subclass_mode=self.subclass_mode_data)
        groups = parser.groups or {}
        if "data" in groups:  # Lightning's base class describes itself to developers
            groups["data"].title = DATA_GROUP_TITLE
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.set_defaults({"trainer." + k: v for k, v in self.trainer_defaults.items() if k != "callbacks"})

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        # panoptic data says which classes are things (the other tasks have no such argument)
        parser.link_arguments("data.thing_classes", "model.init_args.thing_classes", apply_on="instantiate")
        # A CSV logger unless a config says otherwise. Run configs set only its init_args
        # (save_dir, name), so that a logger preset given before them (configs/trainer/wandb.yaml)
        # keeps its class and takes their folder and name.
        parser.set_defaults({"trainer.logger": {"class_path": CSV_LOGGER, "init_args": {"save_dir": "runs"}}})

    @override
    def before_instantiate_classes(self) -> None:
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        prepare_loggers(config)
        if subcommand == "predict":
            # a prediction logs nothing: no run folder, its files go to --prediction.output_dir
            config.trainer.logger = False
        elif subcommand in ("validate", "test"):
            results_beside_checkpoint(config, subcommand)
        arch_options_for_the_arch_run(config, self.args)
        check_values(config)

    @override
    def add_subcommand_arguments(self, parser: LightningArgumentParser, subcommand: str) -> None:
        if subcommand == "predict":  # output options only where they mean something
            parser.add_lightning_class_args(SegmentationWriter, "prediction")
        if subcommand == "export":
            parser.add_class_arguments(ExportSettings, "export", as_group=False)  # the method took the group name

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
        subcommand = self.config.get("subcommand")
        if subcommand:
            resolve_ckpt_option(self.config[subcommand], subcommand)
        # before a checkpoint fills in its own
        self._given_num_classes = user_num_classes(
            (self.config[subcommand] if subcommand else self.config).get("model")
        )

    @override
    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        configured = self.configured("trainer", default={}).get("callbacks") or []
        configured = list(configured) if isinstance(configured, list) else [configured]  # the Trainer extends it
        trainer = super().instantiate_trainer(**kwargs)
        lines_unless_terminal(trainer, configured)
        return trainer

    @override
    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        subcommand = self.config.get("subcommand")
        RUN_GUARDS.append(equip_run(self.trainer, self.args, subcommand, self.interrupt_checkpoint, self.run_summary))
        check_num_classes(self._given_num_classes, self.datamodule)
        untrained = subcommand in ("validate", "test", "predict", "export") and warn_if_untrained(
            self.config[subcommand], self.model
        )
        if untrained and subcommand in ("validate", "test"):  # the scores of an untrained head: no run folder
            self.trainer.loggers = []
            trainer = cast(Any, self.trainer)  # Trainer.callbacks is set at run time, not declared
            trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, SaveConfigCallback)]


def finish_wandb(trainer: Trainer | None) -> None:
    """Close the W&B runs of ``trainer`` (summary and files written), so that the next run in this process is new."""
    for logger in trainer.loggers if trainer is not None else []:
        if isinstance(logger, WandbLogger) and wandb_run_started(logger):
            logger.experiment.finish()


class _DropLightningTips(logging.Filter):
    """Drops Lightning's advertisements for its cloud services (``💡 Tip: ... litlogger``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def build_cli(
    args: list[str] | None = None, run: bool = True, cli_class: type[LightsegCLI] | None = None, **kwargs: Any
) -> LightsegCLI:
    """Build (and with ``run=True`` execute) the CLI; tests and benchmarks use ``run=False``.

    ``cli_class`` (a subclass of :class:`LightsegCLI`) and ``kwargs`` (LightningCLI's, e.g.
    ``trainer_defaults={"callbacks": [...]}`` for callbacks the saved config leaves out) are
    for programs that run lightseg's runs, such as ``lightseg tune``.
    """
    rank_zero_log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropLightningTips) for f in rank_zero_log.filters):
        rank_zero_log.addFilter(_DropLightningTips())
    with warnings.catch_warnings():
        # explicit args are this function's purpose; Lightning warns whenever sys.argv is also set
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        # the tasks log evaluation scores computed from metric states already summed over the
        # processes; Lightning's advice to sum them again (sync_dist) would be wrong
        warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\('(val|test)_")
        # Lightning's own use of a torch API that torch deprecates: nothing a user can act on
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
        if (sys.argv[1:] if args is None else args)[:1] in (["validate"], ["test"], ["predict"]):
            # an evaluation or prediction does not resume the checkpoint's run: its checkpoint state is not wanted
            warnings.filterwarnings("ignore", message="The dirpath has changed from")
        return (cli_class or LightsegCLI)(args=args, run=run, **kwargs)


def main(args: list[str] | None = None) -> None:
    """Entry point: ``lightseg <subcommand> ...``; a user mistake exits with status 2 and one line."""
    RUN_GUARDS.clear()
    arguments = list(sys.argv[1:] if args is None else args)
    try:
        if arguments[:1] == ["data"]:
            from lightseg.cli.data_command import data_main

            data_main(arguments[1:])
            return
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
    for current in causes(err):
        if isinstance(current, LightsegError):
            return current
        if isinstance(current, MisconfigurationException):  # Lightning's word for a configuration mistake
            message = str(current).strip()
            return LightsegError(GPU_HINT if "gpu backend" in message.lower() else message)
    return None


def user_message(err: BaseException) -> str:
    """The message of a user error, without the traceback a DataLoader worker wraps around it."""
    text = err.cli_message() if isinstance(err, LightsegError) else str(err)
    if "Original Traceback" in text:
        marker = f"{type(err).__name__}: "
        text = text[text.rfind(marker) + len(marker) :] if marker in text else text.strip().splitlines()[-1]
    return text.strip()


def console_main() -> None:
    """The full CLI as a console script (``lightseg`` itself starts at :func:`lightseg.entry.console_main`)."""
    main()
