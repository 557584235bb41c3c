"""Running a study: every trial an ordinary ``lightseg fit`` run; Optuna samples, prunes and keeps the study."""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import signal
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import optuna
import torch
from lightning.pytorch.callbacks import Callback
from optuna.trial import FrozenTrial, TrialState
from typing_extensions import override

from lightseg.cli.adapter import field, import_class
from lightseg.cli.app import LightsegCLI, build_cli, find_user_error, finish_wandb, user_message
from lightseg.cli.config import check_values
from lightseg.cli.config_files import CONFIG_FILES, check_config_files
from lightseg.cli.flat_options import rewrite_args
from lightseg.errors import LightsegError, causes, option
from lightseg.run_folder import display_path
from lightseg.tune.settings import TuneSettings
from lightseg.tune.space import SearchSpace
from lightseg.tune.storage import open_storage, open_study
from lightseg.tune.trial_callbacks import StudyStop, TrialFailure, TrialMonitor, TrialPruning

#: the trial states that count toward ``--tune.n_trials`` (a trial ended by Ctrl-C does not)
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)


class ParseOnlyCLI(LightsegCLI):
    """The fit command line parsed and checked, nothing built: the base of every trial."""

    @override
    def instantiate_classes(self) -> None:
        pass


class TrialCLI(LightsegCLI):
    """The CLI of one trial: a Ctrl-C stops the study (which says how to go on); the study prints its results."""

    interrupt_checkpoint = False
    run_summary = False


def parse_fit(fit_args: list[str]) -> Any:
    """The resolved config of ``lightseg fit`` with ``fit_args`` (a parse error: one line, exit 2)."""
    check_config_files(["fit", *fit_args])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        cli = ParseOnlyCLI(args=fit_args, run=False)
    return cli


def parse_error(cli: LightsegCLI, args: list[str]) -> str | None:
    """The CLI's one-line message for ``args`` (``None`` if they parse and pass the checks)."""
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            # as a trial's command line is read (the network settings' flat spelling included)
            config = cli.parser.parse_args(rewrite_args(args, [content for _, content in CONFIG_FILES]))
        check_values(config)
    except SystemExit:
        lines = [line for line in stderr.getvalue().splitlines() if line.startswith("lightseg: error: ")]
        return lines[0].removeprefix("lightseg: error: ") if lines else stderr.getvalue().strip()
    except LightsegError as err:
        return err.cli_message()
    return None


def check_space(space: SearchSpace, cli: LightsegCLI, fit_args: list[str]) -> None:
    """Refuse, before the first trial, a key the command line does not take or a value its option refuses."""
    for parameter in space.parameters:
        for value in parameter.candidates():
            message = parse_error(cli, [*fit_args, parameter.argument(value)])
            if message is not None:
                shown = "" if parameter.kind != "categorical" else f" (choice {value!r})"
                raise LightsegError(f"search space {space.path}: {parameter.key}{shown}: {message}")


def default_metric(config: Any, settings: TuneSettings) -> tuple[str, str]:
    """The metric and direction of the study: the settings', else the task's monitored metric."""
    task = import_class(field(config.get("model"), "class_path"))
    monitor = getattr(task, "monitor", "val_loss")
    mode = getattr(task, "mode", "min")
    metric = settings.metric or monitor
    if settings.direction is not None:
        return metric, settings.direction
    if metric == monitor:
        return metric, "maximize" if mode == "max" else "minimize"
    return metric, "minimize" if "loss" in metric else "maximize"


def study_name_of(settings: TuneSettings, fit_args: list[str]) -> str:
    """The study's name: ``--tune.study_name``, else the name of the last ``--config`` file."""
    if settings.study_name:
        return settings.study_name
    configs = [fit_args[i + 1] for i, a in enumerate(fit_args[:-1]) if a == "--config"]
    configs += [a.split("=", 1)[1] for a in fit_args if a.startswith("--config=")]
    return Path(configs[-1]).stem if configs else "study"


def trial_arguments(config: Any, trials_dir: Path, name: str, study_name: str) -> list[str]:
    """The options that put a trial's run in ``trials_dir/name`` (and its W&B run in the study's group)."""
    trainer = config.get("trainer") or {}
    logger = trainer.get("logger")
    args = [f"--trainer.default_root_dir={trials_dir / name}"]
    if isinstance(logger, list):
        raise LightsegError(
            "lightseg tune gives each trial its own folder through the logger's save_dir: use one logger "
            "(trainer.logger) for a study, not a list"
        )
    if logger not in (None, False, True):
        args += [f"--trainer.logger.init_args.save_dir={trials_dir}", f"--trainer.logger.init_args.name={name}"]
        if str(field(logger, "class_path")).endswith("WandbLogger"):
            args.append(f"--trainer.logger.init_args.group={study_name}")
    return args


def refuse_shared_paths(config: Any) -> None:
    """Trials must not share a checkpoint folder or resume a checkpoint."""
    if config.get("ckpt_path"):
        raise LightsegError(
            f"a study's trials start from scratch: drop {option('run', 'ckpt_path')} (to start every trial from "
            f"trained weights: {option('model', 'init_from')} FILE)"
        )
    for callback in (config.get("trainer") or {}).get("callbacks") or []:
        if field(field(callback, "init_args"), "dirpath"):
            raise LightsegError(
                f"{field(callback, 'class_path')} has a dirpath: every trial would write its checkpoints into the same "
                "folder; remove dirpath (each trial's checkpoints then go into its own run folder)"
            )


class Study:
    """A study of ``lightseg fit`` runs (what ``lightseg tune`` runs).

    Args:
        settings: the ``--tune.*`` options.
        fit_args: the ``lightseg fit`` options every trial takes (``--config ...``).
        command: the ``lightseg tune`` command line, shown where a study can be continued.
    """

    def __init__(self, settings: TuneSettings, fit_args: list[str], command: str = "lightseg tune ...") -> None:
        self.settings = settings
        self.fit_args = list(fit_args)
        self.command = command
        self.cli = parse_fit(self.fit_args)
        self.config = self.cli.config
        self.name = study_name_of(settings, self.fit_args)
        self.folder = Path(settings.study_dir or Path("runs") / "tune" / self.name)
        self.metric, self.direction = default_metric(self.config, settings)
        self.space: SearchSpace | None = None

    def open(self, create: bool = True) -> optuna.Study:
        """The study in its storage (created unless ``create`` is false: then it must exist)."""
        storage = open_storage(self.settings.storage, self.folder)
        if not create:
            names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
            if self.name not in names:
                raise LightsegError(
                    f"no study {self.name!r} in {self.settings.storage or self.folder / 'study.db'} yet: run "
                    f"lightseg tune without {option('tune', 'report')} first"
                )
            return optuna.load_study(study_name=self.name, storage=storage)
        return open_study(self.settings, self.name, storage, self.metric, self.direction)

    def run(self) -> optuna.Study:
        """Run trials until the study holds ``n_trials`` (or the timeout passes); Ctrl-C raises KeyboardInterrupt."""
        refuse_shared_paths(self.config)
        trial_arguments(self.config, self.folder, "trial", self.name)  # refuses a list of loggers now
        assert self.settings.space is not None
        self.space = SearchSpace.load(self.settings.space)
        check_space(self.space, self.cli, self.fit_args)
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # each trial has its line (announce), not a traceback
        try:
            return self._run(self.space)
        finally:
            optuna.logging.set_verbosity(verbosity)

    def _run(self, space: SearchSpace) -> optuna.Study:
        study = self.open()
        study.set_user_attr("space", {p.key: p.short_name for p in space.parameters})
        limit = self.settings.n_trials
        deadline = None if self.settings.timeout is None else time.monotonic() + self.settings.timeout
        print(
            f"lightseg tune: study {self.name!r} ({self.direction} {self.metric}), folder {display_path(self.folder)}, "
            f"{len(counted_trials(study))} of {limit or 'unlimited'} trials done",
            file=sys.stderr,
        )
        while True:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            if limit and len(counted_trials(study)) >= limit:
                break
            if deadline is not None and time.monotonic() >= deadline:
                print(f"lightseg tune: --tune.timeout {self.settings.timeout} s reached", file=sys.stderr)
                break
            study.optimize(self.objective, n_trials=1, catch=(TrialFailure,), callbacks=[self.announce])
        return study

    def objective(self, trial: optuna.Trial) -> float:
        """One trial: ``lightseg fit`` with the sampled values, its best value of the metric returned."""
        assert self.space is not None
        values = self.space.suggest(trial)
        name = f"trial_{trial.number:04d}"
        args = ["fit", *self.fit_args, *self.space.arguments(values)]
        args += trial_arguments(self.config, self.folder / "trials", name, self.name)
        trial.set_user_attr("command", shlex.join(["lightseg", *args]))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        pruning = self.settings.pruner != "none"
        monitor = TrialMonitor(self.metric, self.direction, None if pruning else trial)
        callbacks: list[Callback] = [monitor]
        if pruning:
            callbacks.append(TrialPruning(trial, self.metric))
        shown = ", ".join(f"{p.short_name}={_short(values[p.key])}" for p in self.space.parameters)
        print(f"lightseg tune: trial {trial.number}: {shown}", file=sys.stderr)
        started = time.monotonic()
        try:
            with trial_processes(trial):
                cli = build_cli(args, cli_class=TrialCLI, trainer_defaults={"callbacks": callbacks})
            finish_wandb(cli.trainer)
            if pruning:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the values it reports again after DDP
                    cast(TrialPruning, callbacks[1]).check_pruned()
        except optuna.TrialPruned as pruned:
            trial.set_user_attr("reason", str(pruned))
            raise
        except (KeyboardInterrupt, SystemExit) as stop:
            # Lightning answers a Ctrl-C with sys.exit(1) inside its handler of the KeyboardInterrupt
            if isinstance(stop, SystemExit) and not any(isinstance(e, KeyboardInterrupt) for e in causes(stop)):
                raise StudyStop(f"trial {trial.number} stopped: exit status {stop.code}") from None
            trial.set_user_attr("reason", "interrupted (Ctrl-C)")
            trial.set_user_attr("interrupted", True)
            raise KeyboardInterrupt from None
        except StudyStop as err:
            trial.set_user_attr("reason", err.cli_message())
            raise
        except TrialFailure as err:
            trial.set_user_attr("reason", str(err))
            raise
        except Exception as err:
            user = find_user_error(err)
            reason = user_message(user) if user is not None else _one_line(err)
            trial.set_user_attr("reason", reason)
            raise TrialFailure(reason) from err
        finally:
            trial.set_user_attr("seconds", round(time.monotonic() - started, 1))
            trial.set_user_attr("epochs", len(monitor.values))
            if monitor.folder is not None:
                trial.set_user_attr("run_dir", str(monitor.folder))
        if monitor.best is None:
            reason = f"no validation ran, so {self.metric} has no value (check --trainer.limit_val_batches)"
            trial.set_user_attr("reason", reason)
            raise TrialFailure(reason)
        return monitor.best

    def run_other_rank(self, trial_id: int) -> None:
        """A trial's process of rank > 0 (which Lightning's DDP launcher started): the same run, nothing recorded."""
        storage = open_storage(self.settings.storage, self.folder)
        study = optuna.load_study(study_name=self.name, storage=storage)
        trial = optuna.trial.Trial(study, trial_id)
        args = shlex.split(str(trial.user_attrs["command"]))[1:]
        callbacks: list[Callback] = [TrialMonitor(self.metric, self.direction)]
        if self.settings.pruner != "none":
            callbacks.append(TrialPruning(trial, self.metric))
        build_cli(args, cli_class=TrialCLI, trainer_defaults={"callbacks": callbacks})

    def announce(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """One line per finished trial."""
        seconds = trial.user_attrs.get("seconds", 0.0)
        if trial.state == TrialState.COMPLETE:
            best = study.best_trial
            what = f"{self.metric} {trial.value:.4f} (best {best.value:.4f}, trial {best.number})"
        elif trial.state == TrialState.PRUNED:
            what = f"pruned after {trial.user_attrs.get('epochs', '?')} epochs"
        else:
            what = f"failed: {trial.user_attrs.get('reason', '?')}"
        print(f"lightseg tune: trial {trial.number} {what}, {seconds:.0f} s", file=sys.stderr)


#: set for the processes Lightning's DDP launcher starts for a trial: the trial's id in the storage
TRIAL_ENV = "LIGHTSEG_TUNE_TRIAL"


@contextlib.contextmanager
def trial_processes(trial: optuna.Trial) -> Iterator[None]:
    """Around a trial's run: its other processes (DDP) find the trial; the next trial starts processes anew.

    Lightning's launcher starts the other ranks with this process's command line and
    environment (so they run :meth:`Study.run_other_rank`), and leaves its variables
    (``LOCAL_RANK``, ``MASTER_PORT``, ...) and the process group behind: the next trial would take
    them for a launch made outside and wait for processes that have ended.
    """
    saved = dict(os.environ)
    os.environ[TRIAL_ENV] = str(trial._trial_id)  # Optuna's Trial(study, id) takes it; it has no public name
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def counted_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The trials that count toward ``--tune.n_trials`` (all but those a Ctrl-C ended)."""
    return [t for t in study.get_trials(deepcopy=False, states=COUNTED) if not t.user_attrs.get("interrupted")]


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".strip()


def restore_interrupt() -> None:
    """Lightning ignores further Ctrl-C after the first one: give it back its usual meaning."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


__all__ = ["Study", "TrialFailure", "TrialMonitor"]
