"""What ``lightseg tune`` is told: the ``--tune.*`` options, read without importing torch or Optuna."""

from __future__ import annotations

import argparse
import difflib
from dataclasses import dataclass, fields
from typing import Any

from lightseg.errors import LightsegError, option

PRUNERS = ("median", "halving", "none")
SAMPLERS = ("tpe", "random")
DIRECTIONS = ("maximize", "minimize")


@dataclass
class TuneSettings:
    """The settings of a study (``--tune.NAME`` on the command line).

    Args:
        space: the search space, a YAML file mapping the command line's dotted keys to
            distributions (see :class:`lightseg.tune.SearchSpace`).
        n_trials: the study's number of trials, counted over every run of the command and
            every worker (running the command again continues up to it); ``0``: no limit.
        timeout: stop starting trials after this many seconds of this command (``None``: no limit).
        metric: the validation metric to optimise (default: the task's monitored metric, e.g. ``val_miou``).
        direction: ``maximize`` or ``minimize`` (default: the task's, for its metric; else
            ``minimize`` for a loss, ``maximize`` for anything else).
        study_name: the study's name in its storage (default: the config file's name).
        study_dir: the study's folder: trial runs, ``best.yaml``, plots, the SQLite file
            (default: ``runs/tune/<study_name>``).
        storage: where the study lives: a database URL (``sqlite:///study.db``,
            ``postgresql://user:password@host/db``, shared by workers on several machines) or a
            journal file (``journal:PATH``, for a shared file system); default: the SQLite file
            ``<study_dir>/study.db``.
        pruner: stop unpromising trials after a validation: ``median`` (below the median of
            earlier trials at the same epoch), ``halving`` (successive halving) or ``none``.
        startup_trials: trials that run to the end before the median pruner prunes.
        warmup_epochs: epochs of each trial before the median pruner judges it.
        sampler: ``tpe`` (Bayesian, Optuna's default) or ``random``.
        seed: the sampler's seed (the trials' own seed is the config's ``seed_everything``).
        report: print the study's table and write ``best.yaml`` and the plots, without running a trial.
    """

    space: str | None = None
    n_trials: int = 20
    timeout: float | None = None
    metric: str | None = None
    direction: str | None = None
    study_name: str | None = None
    study_dir: str | None = None
    storage: str | None = None
    pruner: str = "median"
    startup_trials: int = 5
    warmup_epochs: int = 0
    sampler: str = "tpe"
    seed: int | None = None
    report: bool = False

    def __post_init__(self) -> None:
        for name, value, valid in (
            ("pruner", self.pruner, PRUNERS),
            ("sampler", self.sampler, SAMPLERS),
            ("direction", self.direction, (*DIRECTIONS, None)),
        ):
            if value not in valid:
                choices = ", ".join(v for v in valid if v)
                raise LightsegError(f"{option('tune', name)} {value!r} is not valid; choose one of {choices}")
        for name in ("n_trials", "startup_trials", "warmup_epochs"):
            if getattr(self, name) < 0:
                raise LightsegError(f"{option('tune', name)} must be 0 or more, got {getattr(self, name)}")
        if self.timeout is not None and self.timeout <= 0:
            raise LightsegError(f"{option('tune', 'timeout')} must be a number of seconds above 0, got {self.timeout}")
        if self.space is None and not self.report:
            raise LightsegError(
                f"lightseg tune needs a search space: {option('tune', 'space')} SPACE.yaml "
                "(e.g. configs/tune/quickstart_space.yaml; docs/tune.md shows the format)"
            )


USAGE = """usage: lightseg tune --config CONFIG.yaml --tune.space SPACE.yaml [--tune.n_trials N] [--tune.* ...]
                     [any option of lightseg fit ...]

Searches the config's settings with Optuna: each trial is an ordinary `lightseg fit` run (its
own folder under the study folder) with the values the sampler picks from SPACE.yaml; trials
that fall behind are pruned after a validation; the study lives in a SQLite file in the study
folder (or a database several workers share), so running the command again continues it.
At the end: a table of the trials, the parameters' importances, plots and best.yaml, which
`lightseg fit --config STUDY/best.yaml` reproduces. docs/tune.md has the details.
Exit status: 0 done, 2 a usage error (or one every trial would make), 130 interrupted (Ctrl-C).

{options}
Every other option is lightseg fit's (`lightseg fit --help`), given to each trial."""


def _option_lines() -> str:
    from inspect import cleandoc

    doc = cleandoc(TuneSettings.__doc__ or "").split("Args:", 1)[1]
    described: dict[str, str] = {}
    current = ""
    for line in doc.splitlines():
        stripped = line.strip()
        if line.startswith("    ") and not line.startswith("        ") and ":" in stripped:
            current, _, text = stripped.partition(":")
            described[current] = text.strip()
        elif current and stripped:
            described[current] += " " + stripped
    import re
    import textwrap

    lines = []
    for field in fields(TuneSettings):
        text = re.sub(r":\w+:`~?([\w.]+)`", r"\1", described.get(field.name, "")).replace("``", "")
        if field.default is not None and field.name != "space":
            text = f"{text.rstrip('.')} (default {str(field.default).lower()})."
        wrapped = textwrap.wrap(text, 76)
        lines.append(f"  --tune.{field.name:<16}{wrapped[0]}")
        lines += [f"  {'':<23}{rest}" for rest in wrapped[1:]]
    return "\n".join(lines)


def usage() -> str:
    """What ``lightseg tune --help`` prints."""
    return USAGE.format(options=_option_lines())


def _bool(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _optional(kind: Any) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() in ("null", "none", "") else kind(text)

    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse exits; a LightsegError is the CLI's one line
        raise LightsegError(message.replace("argument ", ""))


def split_arguments(args: list[str]) -> tuple[TuneSettings, list[str]]:
    """``lightseg tune``'s command line as its settings and the ``lightseg fit`` options given to every trial."""
    parser = _Parser(prog="lightseg tune", allow_abbrev=False, add_help=False)
    kinds: dict[str, Any] = {"int": int, "float": float, "bool": _bool, "str": str}
    for field in fields(TuneSettings):
        kind = kinds[str(field.type).split(" ")[0]]
        parser.add_argument(
            f"--tune.{field.name}", dest=field.name, type=_optional(kind) if "None" in str(field.type) else kind
        )
    known, rest = parser.parse_known_args(args)
    for arg in rest:
        if arg.startswith("--tune."):
            name = arg.split("=")[0]
            names = [f"--tune.{f.name}" for f in fields(TuneSettings)]
            close = difflib.get_close_matches(name, names, n=1)
            raise LightsegError(
                f"unknown option {name!r}"
                + (f" (did you mean {close[0]!r}?)" if close else "")
                + "; `lightseg tune --help` lists the --tune options"
            )
    return TuneSettings(**{k: v for k, v in vars(known).items() if v is not None}), rest
