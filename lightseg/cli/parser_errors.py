"""jsonargparse's error messages, condensed to the key, the value given and what would be valid."""

from __future__ import annotations

import dataclasses
import difflib
import re
import sys
from typing import Any, NoReturn

from lightning.pytorch.cli import LightningArgumentParser
from typing_extensions import override

from lightseg.cli.config_files import file_setting
from lightseg.commands import COMMAND_LIST, START
from lightseg.errors import closest_names


class LightsegArgumentParser(LightningArgumentParser):
    """jsonargparse's parser, but a wrong value is one line, not the usage of 150 options."""

    @override
    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not getattr(self, "exit_on_error", True):  # nested parsers report to their parent
            super().error(message, ex)
        if self.prog.startswith("lightseg data "):  # a command of its own
            prog = self.prog
        else:
            prog = f"lightseg {self.prog.split()[-1]}" if " " in self.prog else "lightseg <subcommand>"
        unrecognized = re.match(r"unrecognized arguments: (\S+)", message)
        if unrecognized:  # argparse's own word for an unknown option: say which one was meant
            option = unrecognized.group(1).split("=")[0]
            known = [o for o in self._option_string_actions if o.startswith("--")]
            close = difflib.get_close_matches(option, known, n=1)
            message = f"unknown option {option!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
        if 'expected "subcommand"' in message:  # `lightseg` alone
            sys.stderr.write(f"lightseg: error: no command given{START}\n")
            sys.stderr.write(f"commands: {COMMAND_LIST}; `lightseg --help` says what each does\n")
            raise SystemExit(2)
        required = re.search(r"the following arguments are required: (\w+)\.", message)
        if required and re.search(r"\b\w+\.(data|model)\b", message):  # `lightseg fit` without a config
            command = required.group(1)
            sys.stderr.write(f"lightseg: error: lightseg {command} needs a model and data, given by a config{START}\n")
            raise SystemExit(2)
        condensed = condense_parser_error(message)
        from_file = _unknown_file_setting(message, condensed)
        if from_file is not None:  # a typo inside a config file: the file, and the nearest setting
            sys.stderr.write(f"lightseg: error: {from_file}\n")
            raise SystemExit(2)
        sys.stderr.write(f"lightseg: error: {condensed}\n")
        sys.stderr.write(f"`{prog} --help` lists every option\n")
        raise SystemExit(2)


def condense_parser_error(message: str) -> str:
    """The gist of a jsonargparse error: which key, which value, what would be valid.

    jsonargparse reports a nested value (``model.init_args.optimizer.init_args.lr``) from the
    outside in, each level with its ``Parser key``, and every type a union would have
    taken; the innermost ``Given value`` is what the user typed.
    """
    keys = list(dict.fromkeys(re.findall(r'Parser key "([^"]+)"', message)))
    where = f"{'.'.join(keys)}: " if keys else ""
    value = _given_value(message)
    literals = re.findall(r"Expected a typing\.Literal\[(.*?)\]", message)
    if literals and value is not None:
        valid = list(dict.fromkeys(c.strip().strip("'\"") for group in literals for c in group.split(",")))
        return f"{where}{value!r} is not valid;{closest_names(value, valid)}"
    types = [t for t in dict.fromkeys(re.findall(r"Expected a <class '(\w+)'>", message)) if t != "NoneType"]
    if types and value is not None:
        return f"{where}expected {' or '.join(types)}, got {value!r}"
    if "Expected a dot import path string" in message or "either not accessible or invalid" in message:
        name = value if value is not None else "?"
        return (
            f"{where}{name!r} is not a known class; use a short name (SemanticSegmentationTask, "
            "ShapesDataModule) or an import path (mypkg.module.MyTask)"
        )
    group = re.search(r"Unable to load config [\"']([^\"']*)[\"']", message)
    if group and len(keys) > 1:  # one value given for a group of settings (a dataclass)
        option = ".init_args.".join(keys)
        return (
            f"{where}{group.group(1)!r} is not valid: {keys[-1]} is a group of settings; set each by name "
            f"(--{option}.<setting>, listed by --help) or in YAML as {keys[-1]}: {{<setting>: <value>}}"
        )
    unknown = re.search(r"Option '([^']+)' is not accepted|NestedArg\(key='([^']+)'", message)
    if unknown:
        return f"{where}unknown option {unknown.group(1) or unknown.group(2)!r}"
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else message


def _given_value(message: str) -> str | None:
    # the innermost report of the value: "Expected a ... Got value: x", then a plain "Given
    # value: x", then the value inside an outer level's NestedArg(key=..., val=...)
    got = re.search(r"Expected a [^\n]*?\. Got value: (.*)$", message, flags=re.MULTILINE)
    if got:
        return got.group(1).strip()
    for given in re.findall(r"Given value: (.*?)(?:\. Got value: .*)?$", message, flags=re.MULTILINE):
        if not given.startswith("NestedArg("):
            return str(given).strip()
    nested = re.search(r"NestedArg\(key='[^']*', val=(.*)\)$", message, flags=re.MULTILINE)
    return nested.group(1).strip().strip("'\"") if nested else None


def _unknown_file_setting(message: str, condensed: str) -> str | None:
    """For an unknown setting written in a ``--config`` file: that file, the section and the nearest known name."""
    found = re.search(r"does not accept option '(\w+)\.([\w.]+)'", message)
    nested = re.match(r"(\w+)(?:\.init_args)?: unknown option '(\w+)'", condensed)
    if found:
        section, name = found.group(1), found.group(2).split(".")[-1]
    elif nested:
        section, name = nested.group(1), nested.group(2)
    else:
        return None
    where = file_setting(section, name)
    if where is None:
        return None
    path, class_path = where
    known = _settings_of(section, class_path)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    owner = f" ({class_path})" if class_path else ""
    return f"config {path}: {section}{owner} has no setting {name!r}{hint}"


def _settings_of(section: str, class_path: str | None) -> list[str]:
    """The argument names of the class a config section builds (the Trainer for ``trainer``)."""
    import importlib

    from lightseg.cli.adapter import init_parameters  # the adapter loads Lightning: only once a config is read

    cls: Any = None
    if section == "trainer":
        from lightning.pytorch import Trainer

        cls = Trainer
    elif class_path:
        module_name, _, name = class_path.rpartition(".")
        modules = [module_name] if module_name else ["lightseg.datamodules", "lightseg.tasks"]
        for module in modules:
            try:
                cls = getattr(importlib.import_module(module), name, None)
            except ImportError:
                cls = None
            if cls is not None:
                break
    if cls is None:
        return []
    parameters = init_parameters(cls)  # **kwargs pass settings on to the base classes
    # a settings group's own settings are also read where they are written flat (batch_size: 4)
    groups = [p.default for p in parameters.values() if dataclasses.is_dataclass(p.default)]
    return list(dict.fromkeys([*parameters, *(f.name for group in groups for f in dataclasses.fields(group))]))
