"""What the CLI reads and adjusts in a parsed config before any class is built, and adds to the built run.

Before: the loggers (their packages, W&B defaults, resuming the W&B run), where an
evaluation's results go, where the run keeps checkpoints (``--ckpt_path best``/``last``),
and values that would only fail once a run is under way. After: the run's checkpoint files,
its summary, its resume command on Ctrl-C, the guard on its folders, and the class count
the data decides.
"""

from __future__ import annotations

import importlib
import os
import shlex
import sys
from pathlib import Path
from typing import Any, cast

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from lightseg.callbacks.checkpoints import InterruptCheckpoint
from lightseg.callbacks.checkpoints import ModelCheckpoint as RunCheckpoint
from lightseg.callbacks.summary import RunSummary, without_ckpt_path
from lightseg.checkpoints import BesideCheckpointIO, load_checkpoint
from lightseg.cli.adapter import as_list, field, give_behaviour, init_defaults
from lightseg.cli.checkpoint_aliases import ALIASES, find_checkpoints, resolve_checkpoint
from lightseg.cli.config_files import CONFIG_FILES, file_setting
from lightseg.contract import data_description
from lightseg.errors import LightsegError, class_count_mismatch
from lightseg.loggers import LIGHTNING_WANDB, WandbLogger
from lightseg.run_folder import RunFolderGuard

WANDB_ID_KEY = "lightseg_wandb_run_id"
# logger class -> the packages it can use (any one) and the lightseg extra that installs them
LOGGER_PACKAGES = (
    ("WandbLogger", ("wandb",), "wandb"),
    ("TensorBoardLogger", ("tensorboard", "tensorboardX"), "tensorboard"),
)


def prepare_loggers(config: Any) -> None:
    """Refuse a logger whose package is missing (one line naming the extra); lightseg's W&B logger, its group and tags.

    Lightning's ``WandbLogger`` becomes :class:`lightseg.loggers.WandbLogger` (the run folder
    in the same place as the other loggers'); W&B's group defaults to the run's name and its
    tags to what it trains.
    """
    for logger in as_list(config.get("trainer", {}).get("logger")):
        class_path = str(field(logger, "class_path"))
        for suffix, module, extra in LOGGER_PACKAGES:
            if class_path.endswith(suffix) and not any(importable(m) for m in module):
                raise LightsegError(
                    f"trainer.logger {suffix} needs the {module[0]} package, which is not installed: "
                    f'pip install "lightseg[{extra}]" (or -c constraints.txt -e ".[{extra}]" in a checkout), '
                    "or choose another logger"
                )
        if class_path == LIGHTNING_WANDB:  # the same logger, with the run folder where the others put theirs
            logger.class_path = f"{WandbLogger.__module__}.{WandbLogger.__name__}"
        if class_path.endswith("WandbLogger"):
            fill_wandb_defaults(field(logger, "init_args"), config)


def resolve_ckpt_option(config: Any, subcommand: str) -> None:
    """Check ``--ckpt_path`` and turn ``best``/``last`` into a file (printed with its run and score).

    A missing or unreadable file is one line before any work; ``fit`` from a weights-only
    checkpoint says how to resume instead; ``fit --ckpt_path last`` without a checkpoint yet
    starts from scratch, as Lightning does.
    """
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
    pictures go into the training run's folder, one folder per evaluation of a checkpoint
    (``test-last``, then ``test-last-2``: earlier results are kept, and the command says
    where). A logger pointed elsewhere (another ``name`` or ``save_dir``: the one place the
    user names), with an explicit ``version``, W&B, and checkpoints outside a run's
    ``checkpoints/`` folder keep the logger's own layout.
    """
    checkpoint = Path(str(config.get("ckpt_path") or ""))
    if checkpoint.suffix != ".ckpt" or checkpoint.parent.name != "checkpoints":
        return
    run = checkpoint.parent.parent
    for logger in as_list((config.get("trainer") or {}).get("logger")):
        init_args = field(logger, "init_args")
        if not str(field(logger, "class_path")).endswith(("CSVLogger", "TensorBoardLogger")) or init_args is None:
            continue
        if field(init_args, "version") is not None:
            continue
        root = Path(str(field(init_args, "save_dir") or ".")) / str(field(init_args, "name") or "")
        if root.resolve() == run.parent.resolve():
            init_args.version = f"{run.name}/{_new_results_folder(run, f'{subcommand}-{checkpoint.stem}')}"


def _new_results_folder(run: Path, name: str) -> str:
    """``name``, or ``name-2``, ``name-3``... where earlier evaluations' results are (said on stderr)."""
    if int(os.environ.get("LOCAL_RANK", "0") or 0) > 0 or not (run / name).exists():
        return name  # a DDP rank other than 0 writes no results; it takes the first name
    number = 2
    while (run / f"{name}-{number}").exists():
        number += 1
    print(
        f"lightseg: {run / name} holds an earlier evaluation of this checkpoint, kept; this one writes "
        f"{run / f'{name}-{number}'}",
        file=sys.stderr,
    )
    return f"{name}-{number}"


def arch_options_for_the_arch_run(config: Any, args: list[str]) -> None:
    """Leave out ``network.arch_options`` that a config file wrote for another ``arch`` than the one that runs.

    ``arch_options`` are one architecture's own arguments (smp's ``decoder_channels``, ...): a
    config file that sets them for its ``arch`` (the quickstart's U-Net decoder widths) would make
    ``--model.init_args.network.arch deeplabv3`` on top of it fail. Options given on the command
    line, or by a file that names no ``arch`` or the one that runs, are kept. Says so in one line.
    """
    network = field(field(config.get("model"), "init_args"), "network")
    options, arch = field(network, "arch_options"), field(network, "arch")
    if not options or arch is None:
        return
    if any(a.startswith("--model.init_args.network.arch_options") for a in args):
        return
    where = file_setting("model", "arch_options", group="network")
    if where is None:
        return
    path = where[0]
    content = next(c for p, c in CONFIG_FILES if p == path)["model"]
    written_for = ((content.get("init_args") or content).get("network") or {}).get("arch")
    if written_for is None or written_for == arch:
        return
    settings = ", ".join(f"{k}: {v}" for k, v in dict(options).items())
    print(
        f"lightseg: arch_options {{{settings}}} of {path} are {written_for}'s: left out for arch {arch} (give its "
        "own with --model.init_args.network.arch_options)",
        file=sys.stderr,
    )
    if isinstance(network, dict):
        network["arch_options"] = None
    else:
        network.arch_options = None


def check_values(config: Any) -> None:
    """Refuse, before any work, values that would fail (or silently misbehave) only once a run is under way."""
    optimizer = field(field(config.get("model"), "init_args"), "optimizer")
    for key in ("lr", "weight_decay", "momentum"):
        value = field(field(optimizer, "init_args"), key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            raise LightsegError(f"model.optimizer.{key} must be >= 0, got {value}")
    for folder in checkpoint_roots(config):
        blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            where = "is a file" if blocking == folder else f"is below {blocking}, which is a file"
            raise LightsegError(
                f"{folder} (default_root_dir, a logger's save_dir or a checkpoint dirpath) {where}, not a folder; "
                "choose another folder for the run"
            )


def warn_if_untrained(config: Any, model: Any) -> bool:
    """Warn when an evaluation has no trained weights (almost always a forgotten ``--ckpt_path``); ``True`` then."""
    # an exported model's path says where its weights are
    hparams = getattr(model, "hparams", {})
    whole_model = (hparams.get("network") or {}).get("weights")
    if config.get("ckpt_path") or hparams.get("init_from") or whole_model or hparams.get("path"):
        return False
    print(
        "lightseg: warning: no --ckpt_path (nor init_from or whole-model weights): evaluating a model whose head "
        "is untrained, without a run folder (its scores are printed only); pass --ckpt_path best|last|<file.ckpt>",
        file=sys.stderr,
    )
    return True


def continue_wandb_run(config: Any, checkpoint: Path) -> None:
    """Resume the W&B run recorded in ``checkpoint`` when a W&B logger has no run id of its own."""
    for logger in as_list((config.get("trainer") or {}).get("logger")):
        init_args = field(logger, "init_args")
        if not str(field(logger, "class_path")).endswith("WandbLogger") or init_args is None:
            continue
        if field(init_args, "id") or field(init_args, "version"):
            return
        try:
            run_id = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True).get(WANDB_ID_KEY)
        except Exception:  # not a readable checkpoint: loading it reports that, with its own message
            return
        if run_id:
            init_args.id = run_id
            print(f"lightseg: continuing W&B run {run_id}", file=sys.stderr)


def fill_wandb_defaults(init_args: Any, config: Any) -> None:
    """A W&B run is found by its group and tags: by default the run's name and what it trains."""
    if init_args is None:
        return
    model = field(config.get("model"), "init_args")
    if field(init_args, "group") is None and field(init_args, "name"):
        init_args.group = field(init_args, "name")
    if field(init_args, "tags") is None:
        task = str(field(config.get("model"), "class_path") or "").rsplit(".", 1)[-1]
        data = str(field(config.get("data"), "class_path") or "").rsplit(".", 1)[-1]
        network = field(model, "network")
        tags = [task, str(field(network, "arch") or ""), str(field(network, "backbone") or ""), data]
        init_args.tags = [t for t in tags if t and t != "None"]


def importable(module: str) -> bool:
    """Whether ``module`` can be imported."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def checkpoint_roots(config: Any) -> list[Path]:
    """Folders where the configured run writes checkpoints.

    These are the ModelCheckpoint dirpaths, the loggers' save dirs and the trainer's ``default_root_dir``.
    """
    trainer = config.get("trainer") or {}
    roots: list[Path] = []
    for callback in as_list(trainer.get("callbacks")):
        if "ModelCheckpoint" in str(field(callback, "class_path")):
            dirpath = field(field(callback, "init_args"), "dirpath")
            if dirpath:
                roots.append(Path(dirpath))
    for logger in as_list(trainer.get("logger")):
        save_dir = field(field(logger, "init_args"), "save_dir")
        if save_dir:
            roots.append(Path(save_dir))
    roots.append(Path(trainer.get("default_root_dir") or "."))
    return list(dict.fromkeys(roots))


def user_num_classes(model: Any) -> int | None:
    """The model's ``num_classes`` where the user set it (command line or config), else ``None``."""
    given = field(field(model, "init_args"), "num_classes")
    default = init_defaults(str(field(model, "class_path") or "")).get("num_classes")
    return given if given is not None and given != default else None


def check_num_classes(given: int | None, datamodule: Any) -> None:
    """Refuse a ``num_classes`` the user set that the data disagrees with (the data decides)."""
    data = data_description(datamodule)
    data_classes = data.num_classes if data is not None else None
    if given is not None and data_classes is not None and given != data_classes:
        raise LightsegError(class_count_mismatch(given, data_classes, type(datamodule).__name__))


def equip_run(
    trainer: Trainer, args: list[str], subcommand: str | None, interrupt_checkpoint: bool = True, summary: bool = True
) -> RunFolderGuard:
    """What a command-line run adds to its trainer; returns the guard on the run's folders.

    Lightning's plain ``ModelCheckpoint`` becomes lightseg's (``last.ckpt`` after every epoch);
    checkpoints are written beside a temporary name and renamed (unless the user configured a
    checkpoint IO); ``fit`` saves and prints the resume command on Ctrl-C (unless
    ``interrupt_checkpoint`` is false: a study's trial); every run prints its
    summary (unless ``summary`` is false); the guard notes the run folders before the run makes any.
    """
    callbacks = cast(Any, trainer).callbacks
    for callback in callbacks:
        if type(callback) is ModelCheckpoint:
            give_behaviour(callback, RunCheckpoint)
    if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
        trainer.strategy.checkpoint_io = BesideCheckpointIO()
    if subcommand == "fit" and interrupt_checkpoint:
        callbacks.append(InterruptCheckpoint(resume_command(args)))
    if summary:
        callbacks.append(RunSummary(args[1:] if subcommand is not None else args))  # run=False: no subcommand
    guard = RunFolderGuard()
    guard.watch(trainer)
    return guard


def resume_command(args: list[str]) -> str:
    """``lightseg <args>`` without its ``--ckpt_path``, for the user to copy."""
    return shlex.join(["lightseg", *without_ckpt_path(args)])
