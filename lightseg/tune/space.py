"""The search space of ``lightseg tune``: the command line's dotted keys, each with a distribution.

.. code-block:: yaml

    model.init_args.optimizer.init_args.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    data.init_args.loader.batch_size: {type: categorical, choices: [4, 8, 16]}
    model.init_args.loss: {type: categorical, choices: [ce, ce+dice]}
    trainer.max_epochs: {type: int, low: 5, high: 20, step: 5}

``float`` and ``int`` take ``low``, ``high`` and either ``log: true`` or a ``step``;
``categorical`` takes ``choices`` (numbers, text, booleans or null). A trial's values reach
``lightseg fit`` as command-line options (``--model.init_args.loss=ce``), so every key is
exactly what the command line takes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lightseg.errors import LightsegError

KINDS = ("float", "int", "categorical")
FIELDS = {"float": ("low", "high", "log", "step"), "int": ("low", "high", "log", "step"), "categorical": ("choices",)}


@dataclass(frozen=True)
class Parameter:
    """One searched option: its dotted key and its distribution."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    @property
    def short_name(self) -> str:
        """The key without its ``init_args`` levels (``model.optimizer.lr``), for tables and plots."""
        return ".".join(part for part in self.key.split(".") if part != "init_args")

    def suggest(self, trial: Any) -> Any:
        """The value ``trial`` (an ``optuna.Trial``) picks."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low or 0), int(self.high or 0), step=int(self.step or 1),
                                     log=self.log)  # fmt: skip
        return trial.suggest_float(self.key, float(self.low or 0), float(self.high or 0), step=self.step, log=self.log)

    def candidates(self) -> list[Any]:
        """The values that bound the distribution, checked against the config's schema before the first trial."""
        if self.kind == "categorical":
            return list(self.choices)
        kind = int if self.kind == "int" else float
        return [kind(self.low or 0), kind(self.high or 0)]

    def argument(self, value: Any) -> str:
        """The ``lightseg fit`` option that sets ``value``."""
        text = value if isinstance(value, str) else json.dumps(value)
        return f"--{self.key}={text}"


@dataclass(frozen=True)
class SearchSpace:
    """The parameters of a study, read from a YAML file (:meth:`load`) with one line for each mistake."""

    parameters: tuple[Parameter, ...]
    path: str = "space"

    @classmethod
    def load(cls, path: str | Path) -> SearchSpace:
        """Read and check the space file at ``path``."""
        file = Path(path)
        if not file.is_file():
            raise LightsegError(f"search space {path}: no such file (--tune.space takes a YAML file; docs/tune.md)")
        try:
            content = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise LightsegError(f"search space {path}: not valid YAML{where}: {getattr(err, 'problem', err)}") from None
        return cls.from_dict(content, str(path))

    @classmethod
    def from_dict(cls, content: Any, path: str = "space") -> SearchSpace:
        """The space of ``content`` (a mapping of dotted keys to distributions)."""
        if not isinstance(content, dict) or not content:
            raise LightsegError(
                f"search space {path}: expected a mapping of options to distributions, e.g. "
                "model.init_args.optimizer.init_args.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}"
            )
        return cls(tuple(_parameter(str(key), spec, path) for key, spec in content.items()), path)

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Each parameter's value for ``trial``."""
        return {p.key: p.suggest(trial) for p in self.parameters}

    def arguments(self, values: dict[str, Any]) -> list[str]:
        """The ``lightseg fit`` options that set ``values``."""
        by_key = {p.key: p for p in self.parameters}
        return [by_key[key].argument(value) for key, value in values.items() if key in by_key]


def _parameter(key: str, spec: Any, path: str) -> Parameter:
    key = key.removeprefix("--")
    where = f"search space {path}: {key}"
    if not isinstance(spec, dict) or "type" not in spec:
        raise LightsegError(
            f"{where}: expected a distribution such as {{type: float, low: 0.0001, high: 0.01, log: true}} or "
            f"{{type: categorical, choices: [a, b]}}, got {spec!r}"
        )
    kind = spec["type"]
    if kind not in KINDS:
        raise LightsegError(f"{where}: type {kind!r} is not valid; choose one of {', '.join(KINDS)}")
    unknown = sorted(set(spec) - {"type", *FIELDS[kind]})
    if unknown:
        raise LightsegError(f"{where}: {kind} takes {', '.join(FIELDS[kind])}, not {', '.join(unknown)}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise LightsegError(f"{where}: categorical needs a non-empty list of choices, got {choices!r}")
        odd = [c for c in choices if not (c is None or isinstance(c, bool | int | float | str))]
        if odd:
            raise LightsegError(
                f"{where}: choices must be numbers, text, booleans or null, got {odd[0]!r} "
                "(to search over classes or groups, search their settings one by one)"
            )
        if len(set(map(repr, choices))) != len(choices):
            raise LightsegError(f"{where}: choices repeat a value: {choices}")
        return Parameter(key, kind, choices=tuple(choices))
    numbers = {}
    for name in ("low", "high"):
        value = spec.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise LightsegError(f"{where}: {kind} needs a number for {name}, got {value!r}")
        if kind == "int" and not float(value).is_integer():
            raise LightsegError(f"{where}: int needs a whole number for {name}, got {value!r}")
        numbers[name] = value
    low, high = numbers["low"], numbers["high"]
    log, step = spec.get("log", False), spec.get("step")
    if low > high:
        raise LightsegError(f"{where}: low {low} is above high {high}")
    if not isinstance(log, bool):
        raise LightsegError(f"{where}: log is true or false, got {log!r}")
    if log and low <= 0:
        raise LightsegError(f"{where}: a log scale needs low above 0, got {low}")
    if step is not None:
        if log:
            raise LightsegError(f"{where}: give log or step, not both (Optuna samples a log scale without steps)")
        if isinstance(step, bool) or not isinstance(step, int | float) or step <= 0:
            raise LightsegError(f"{where}: step must be a number above 0, got {step!r}")
        if kind == "int" and not float(step).is_integer():
            raise LightsegError(f"{where}: int needs a whole-number step, got {step!r}")
    return Parameter(key, kind, float(low), float(high), log, None if step is None else float(step))
