"""Running a study: every trial an ordinary ``lightseg fit`` run; Optuna samples, prunes and keeps the study."""

from __future__ import annotations

import contextlib
import io
import math
import os
import random
import shlex
import signal
import socket
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, cast

import optuna
import sqlalchemy
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from optuna.trial import FrozenTrial, TrialState
from optuna_integration import PyTorchLightningPruningCallback
from typing_extensions import override

from lightseg.cli.adapter import field, import_class
from lightseg.cli.app import LightsegCLI, build_cli, find_user_error, finish_wandb, user_message
from lightseg.cli.config import check_values
from lightseg.cli.config_files import check_config_files
from lightseg.errors import LightsegError, causes, option
from lightseg.run_folder import display_path, run_dir
from lightseg.tune.settings import TuneSettings
from lightseg.tune.space import SearchSpace

#: the trial states that count toward ``--tune.n_trials`` (a trial ended by Ctrl-C does not)
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
#: a worker whose trial has sent no heartbeat for this long is taken for dead; its trial fails
HEARTBEAT_S, GRACE_S = 30, 120


class TrialFailure(Exception):
    """A trial that ended without a value (an error, out of memory, a NaN): the study goes on."""


class StudyStop(LightsegError):
    """A mistake every trial would make (a metric the task does not log): the study stops."""


class ParseOnlyCLI(LightsegCLI):
    """The fit command line parsed and checked, nothing built: the base of every trial."""

    @override
    def instantiate_classes(self) -> None:
        pass


class TrialCLI(LightsegCLI):
    """The CLI of one trial: a Ctrl-C stops the study (which says how to go on); the study prints its results."""

    interrupt_checkpoint = False
    run_summary = False


class TrialMonitor(Callback):
    """Records the trial's metric after each validation and stops a trial whose loss or metric is not finite.

    Args:
        metric: the optimised validation metric.
        direction: ``maximize`` or ``minimize``: which of the values is the best.
        trial: reports each value to this trial (the learning curve), where no pruning callback does.
    """

    def __init__(self, metric: str, direction: str, trial: optuna.Trial | None = None) -> None:
        self.metric = metric
        self.direction = direction
        self.trial = trial
        self.values: dict[int, float] = {}
        self.folder: Path | None = None
        self._finite: torch.Tensor | None = None

    @property
    def best(self) -> float | None:
        """The best value of the metric over the trial's validations."""
        if not self.values:
            return None
        return max(self.values.values()) if self.direction == "maximize" else min(self.values.values())

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.folder = run_dir(trainer)

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):  # no sync per step: checked once an epoch
            finite = torch.isfinite(loss.detach()).all()
            self._finite = finite if self._finite is None else self._finite & finite

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        finite = self._finite is None or bool(self._finite)
        if not trainer.strategy.reduce_boolean_decision(finite, all=True):  # every rank stops together
            raise TrialFailure(f"the training loss became NaN or infinite in epoch {trainer.current_epoch}")
        self._finite = None

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.metric)
        if value is None:
            logged = sorted(k for k in trainer.callback_metrics if k.startswith("val"))
            raise StudyStop(
                f"{option('tune', 'metric')} {self.metric} is not logged by the task; its validation metrics: "
                f"{', '.join(logged) or 'none'}"
            )
        number = float(value)
        if not math.isfinite(number):
            raise TrialFailure(f"{self.metric} is {number} after epoch {trainer.current_epoch}")
        self.values[trainer.current_epoch] = number
        if self.trial is not None and trainer.is_global_zero:  # the learning curve, where no pruner reports it
            self.trial.report(number, step=trainer.current_epoch)


class TrialPruning(PyTorchLightningPruningCallback):
    """Optuna's Lightning pruning callback, except after the last epoch: stopping then saves nothing.

    A trial judged at its last validation has trained all it will: it is complete, with its
    value (which the sampler learns from), not pruned.
    """

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        last = (
            trainer.max_epochs is not None
            and trainer.max_epochs > 0
            and trainer.current_epoch + 1 >= trainer.max_epochs
        )
        value = trainer.callback_metrics.get(self.monitor)
        if not last or trainer.sanity_checking or value is None:
            super().on_validation_end(trainer, pl_module)
            return
        if trainer.is_global_zero:  # the learning curve's last point
            self._trial.report(float(value), step=trainer.current_epoch)


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
            config = cli.parser.parse_args(args)
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


def open_storage(url: str | None, study_dir: Path) -> Any:
    """The Optuna storage at ``url`` (default: ``<study_dir>/study.db``), with one line where it cannot be used."""
    if url is None:
        study_dir.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{study_dir / 'study.db'}"
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    shown = _without_password(url)
    if url.startswith(("postgresql://", "postgres://")):  # SQLAlchemy's default driver is psycopg2: use psycopg 3
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    try:
        for attempt in range(5):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat
                    return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
            except sqlalchemy.exc.IntegrityError:  # workers starting together on a new database: one creates it
                if attempt == 4:
                    raise
                time.sleep(0.5 + random.random())
        raise AssertionError("unreachable")
    except ModuleNotFoundError as err:
        raise LightsegError(
            f'{option("tune", "storage")} {shown} needs the {err.name} package: pip install "lightseg[tune]"'
        ) from None
    except Exception as err:  # SQLAlchemy's errors: a wrong host, password or database
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise LightsegError(f"{option('tune', 'storage')} {shown}: cannot open the study's storage: {reason}") from None


def _without_password(url: str) -> str:
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url


def open_study(settings: TuneSettings, name: str, storage: Any, metric: str, direction: str) -> optuna.Study:
    """Create the study, or load it to continue; the same study name cannot change its metric or direction."""
    if settings.pruner == "median":
        pruner: optuna.pruners.BasePruner = optuna.pruners.MedianPruner(
            n_startup_trials=settings.startup_trials, n_warmup_steps=settings.warmup_epochs
        )
    elif settings.pruner == "halving":
        pruner = optuna.pruners.SuccessiveHalvingPruner()
    else:
        pruner = optuna.pruners.NopPruner()
    sampler: optuna.samplers.BaseSampler = (
        optuna.samplers.RandomSampler(seed=settings.seed)
        if settings.sampler == "random"
        else optuna.samplers.TPESampler(seed=settings.seed)
    )
    existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    if name in existing:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        known = study.user_attrs.get("metric")
        if known != metric or study.direction.name.lower() != direction:
            raise LightsegError(
                f"study {name!r} optimises {known} ({study.direction.name.lower()}), not {metric} ({direction}): "
                f"give a new {option('tune', 'study_name')}, or the same metric and direction to continue it"
            )
        return study
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction=cast(Literal["minimize", "maximize"], direction),
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )
    study.set_user_attr("metric", metric)
    return study


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
