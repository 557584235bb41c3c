"""The network settings' older, flat spelling in configs and on the command line, read as the group.

Before the tasks took their architecture and its options as one ``network`` group, they were
the task's own arguments: ``model: {init_args: {arch: deeplabv3, backbone: resnet101}}`` and
``--model.init_args.arch deeplabv3``. Configs, search spaces and scripts written that way keep
working: the flat settings are moved into ``network`` before the parser reads them (YAML as it
is loaded, the command line as it is given), so the parsed config, ``--print_config`` and the
run's saved ``config.yaml`` show the group. Checkpoints are migrated by the tasks themselves
(:meth:`~lightseg.tasks.BaseTask.migrate_hparams`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any

import yaml
from jsonargparse import get_loader, set_loader

from lightseg.cli.adapter import import_class

#: keys of a class's section that are not its arguments
_NOT_ARGUMENTS = frozenset({"class_path", "init_args", "dict_kwargs", "__path__"})


@functools.cache
def _lightseg_tasks() -> dict[str, type]:
    import lightseg.tasks
    from lightseg.tasks.base import BaseTask

    found = {name: getattr(lightseg.tasks, name) for name in dir(lightseg.tasks)}
    return {name: cls for name, cls in found.items() if isinstance(cls, type) and issubclass(cls, BaseTask)}


def task_class(class_path: Any) -> type | None:
    """The task class ``class_path`` names (a lightseg task's short name or an import path), if any."""
    if not isinstance(class_path, str):
        return None
    return _lightseg_tasks().get(class_path) or import_class(class_path)


@functools.cache
def _all_flat_names() -> frozenset[str]:
    return frozenset(name for cls in _lightseg_tasks().values() for name in _flat_names_of(cls))


def _flat_names_of(cls: type) -> frozenset[str]:
    spec = getattr(cls, "network_spec", None)
    if spec is None or not hasattr(spec, "names"):
        return frozenset()
    own = set(inspect.signature(cls).parameters)  # a subclass's own argument of that name stays its own
    return frozenset(name for name in spec.names() if name not in own)


def flat_names(class_path: Any) -> frozenset[str]:
    """The flat argument names that belong in ``network`` for the task at ``class_path``.

    Every lightseg task's when the class is not known (a config file that gives no
    ``class_path``); none for a class that is not a task with a network group.
    """
    if class_path is None:
        return _all_flat_names()
    cls = task_class(class_path)
    if cls is None:
        return _all_flat_names() if class_path in ("", None) else frozenset()
    return _flat_names_of(cls)


def migrate_model_section(section: Any, class_path: Any = None) -> Any:
    """A config's ``model`` section with its flat network settings moved into ``init_args.network``."""
    if not isinstance(section, dict):
        return section
    names = flat_names(section.get("class_path", class_path))
    arguments = section.get("init_args")
    flat = {k: v for k, v in section.items() if k in names and k not in _NOT_ARGUMENTS}
    if isinstance(arguments, dict):
        flat |= {k: v for k, v in arguments.items() if k in names}
    if not flat:
        return section
    migrated = {k: v for k, v in section.items() if k not in flat}
    arguments = {k: v for k, v in (arguments or {}).items() if k not in flat}
    network = arguments.get("network")
    arguments["network"] = {**(network if isinstance(network, dict) else {}), **flat}
    if "init_args" in section or "class_path" in section:
        migrated["init_args"] = arguments
    else:  # a section that gives the arguments directly keeps that form
        migrated.update(arguments)
    return migrated


def migrate_loaded(value: Any) -> Any:
    """A loaded YAML value with the flat network settings of its task moved into ``network``.

    Reads a whole config (a mapping with ``model:``) and a task's own section (a mapping with
    the ``class_path`` of a task, as ``--model FILE`` gives); anything else is returned as it is.
    """
    if not isinstance(value, dict):
        return value
    if isinstance(value.get("model"), dict):
        return {**value, "model": migrate_model_section(value["model"])}
    if "class_path" in value and task_class(value["class_path"]) is not None:
        return migrate_model_section(value)
    return value


def _model_class_path(args: list[str], files: list[dict[str, Any]]) -> str | None:
    """The task class the command line and its config files name (the last one given)."""
    found: str | None = None
    for content in files:
        section = content.get("model")
        if isinstance(section, dict) and isinstance(section.get("class_path"), str):
            found = section["class_path"]
    for position, arg in enumerate(args):
        value = None
        if arg in ("--model", "--model.class_path") and position + 1 < len(args):
            value = args[position + 1]
        elif arg.startswith(("--model=", "--model.class_path=")):
            value = arg.split("=", 1)[1]
        if value is not None and value.replace(".", "").replace("_", "").isalnum():
            found = value
    return found


#: YAML's spellings of null
_NULLS = frozenset({"null", "Null", "NULL", "~"})


def _groups_of(class_path: Any) -> frozenset[str]:
    """The task's arguments that are settings groups (their default a dataclass: ``network``, ``inference``)."""
    cls = task_class(class_path) if class_path is not None else None
    if cls is None:
        return frozenset({"network"})
    parameters = inspect.signature(cls).parameters.values()
    return frozenset(p.name for p in parameters if dataclasses.is_dataclass(p.default))


def rewrite_args(args: list[str], files: list[dict[str, Any]]) -> list[str]:
    """``args`` with ``--model[.init_args].<flat network setting>`` spelt ``--model.init_args.network.<setting>``.

    Also gives a group's setting set to null as the group's mapping (``--model.init_args.network
    {weights_backbone: null}``): jsonargparse 4.5x reads ``null`` after a setting of a group inside a
    class's arguments as the text ``'None'``, and merges a mapping setting by setting.
    """
    class_path = _model_class_path(args, files)
    names, groups = flat_names(class_path), _groups_of(class_path)
    spelt: list[str] = []
    for arg in args:
        for prefix in ("--model.init_args.", "--model."):
            if arg.startswith(prefix):
                rest = arg[len(prefix) :]
                name = rest.split("=", 1)[0].split(".", 1)[0]
                if name in names:
                    arg = f"--model.init_args.network.{rest}"
                elif name in groups and prefix == "--model.":
                    arg = f"--model.init_args.{rest}"
                break
        spelt.append(arg)
    rewritten: list[str] = []
    position = 0
    while position < len(spelt):
        arg = spelt[position]
        option, equals, value = arg.partition("=")
        if not equals and position + 1 < len(spelt):
            value = spelt[position + 1]
        parts = option.split(".")
        if len(parts) == 4 and parts[:2] == ["--model", "init_args"] and parts[2] in groups and value in _NULLS:
            rewritten += [".".join(parts[:3]), f"{{{parts[3]}: null}}"]
            position += 1 if equals else 2
            continue
        rewritten.append(arg)
        position += 1
    return rewritten


_installed: list[Callable[[str], Any]] = []


def read_flat_options() -> None:
    """Have jsonargparse's YAML loader move flat network settings into ``network`` (once per process)."""
    if _installed:
        return
    load_yaml = get_loader("yaml")
    _installed.append(load_yaml)

    def load(text: str) -> Any:
        return migrate_loaded(load_yaml(text))

    set_loader("yaml", load, exceptions=(yaml.YAMLError,))
