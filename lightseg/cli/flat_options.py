"""The settings groups' older, flat spelling in configs and on the command line, read as the groups.

Before the tasks took their architecture and its options as one ``network`` group, and the data
modules their loader and augmentation settings as ``loader`` and ``augmentation``, these were
the classes' own arguments: ``model: {init_args: {arch: deeplabv3}}``, ``--data.init_args.batch_size
16``. Configs, search spaces and scripts written that way keep working: the flat settings are
moved into their group before the parser reads them (YAML as it is loaded, the command line as it
is given), so the parsed config, ``--print_config`` and the run's saved ``config.yaml`` show the
groups. Checkpoints are migrated by the tasks themselves (:meth:`~lightseg.tasks.BaseTask.migrate_hparams`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import yaml
from jsonargparse import get_loader, set_loader

from lightseg.cli.adapter import import_class, init_parameters

#: the groups whose settings were once flat arguments, by config section
FLAT_GROUPS = {"model": ("network",), "data": ("loader", "augmentation")}
#: keys of a class's section that are not its arguments
_NOT_ARGUMENTS = frozenset({"class_path", "init_args", "dict_kwargs", "__path__"})
#: YAML's spellings of null
_NULLS = frozenset({"null", "Null", "NULL", "~"})


def _is_kind(section: str, cls: Any) -> bool:
    """Whether ``cls`` is a lightseg task (``model``) or data module (``data``), a user's subclass included."""
    from lightseg.datamodules.base import BaseDataModule
    from lightseg.tasks.base import BaseTask

    return isinstance(cls, type) and issubclass(cls, BaseTask if section == "model" else BaseDataModule)


@functools.cache
def _lightseg_classes(section: str) -> dict[str, type]:
    """Lightseg's own classes of a section by short name: the tasks (``model``) or the data modules (``data``)."""
    import lightseg.datamodules
    import lightseg.tasks

    package = lightseg.tasks if section == "model" else lightseg.datamodules
    found = {name: getattr(package, name) for name in dir(package)}
    return {name: cls for name, cls in found.items() if _is_kind(section, cls)}


def section_class(section: str, class_path: Any) -> type | None:
    """The class ``class_path`` names in ``section`` (a lightseg short name or an import path), if any."""
    if not isinstance(class_path, str):
        return None
    return _lightseg_classes(section).get(class_path) or import_class(class_path)


def groups_of(cls: type) -> dict[str, type]:
    """The class's arguments that are settings groups (their default a dataclass), with the group's type."""
    return {name: type(p.default) for name, p in init_parameters(cls).items() if dataclasses.is_dataclass(p.default)}


def _flat_names_of(section: str, cls: type) -> dict[str, str]:
    own = set(init_parameters(cls))  # an argument of that name that a class declares stays its own
    names: dict[str, str] = {}
    for group, kind in groups_of(cls).items():
        if group in FLAT_GROUPS[section]:
            names |= {f.name: group for f in dataclasses.fields(kind) if f.name not in own}
    return names


@functools.cache
def _all_flat_names(section: str) -> dict[str, str]:
    names: dict[str, str] = {}
    for cls in _lightseg_classes(section).values():
        names |= _flat_names_of(section, cls)
    return names


def flat_names(section: str, class_path: Any) -> dict[str, str]:
    """The flat argument names of the class at ``class_path`` that belong in a group, with the group's name.

    Those of every lightseg class of the section when the class is not known (a config file that
    gives no ``class_path``); none for a class that is not one of lightseg's kinds.
    """
    if class_path is None:
        return _all_flat_names(section)
    cls = section_class(section, class_path)
    return _flat_names_of(section, cls) if cls is not None and _is_kind(section, cls) else {}


def migrate_section(section: str, content: Any, class_path: Any = None) -> Any:
    """A config's ``model`` or ``data`` section with its flat settings moved into their groups."""
    if not isinstance(content, dict):
        return content
    names = flat_names(section, content.get("class_path", class_path))
    arguments = content.get("init_args")
    flat = {k: v for k, v in content.items() if k in names and k not in _NOT_ARGUMENTS}
    if isinstance(arguments, dict):
        flat |= {k: v for k, v in arguments.items() if k in names}
    if not flat:
        return content
    migrated = {k: v for k, v in content.items() if k not in flat}
    arguments = {k: v for k, v in (arguments or {}).items() if k not in flat}
    for name, value in flat.items():
        group = arguments.get(names[name])
        arguments[names[name]] = {**(group if isinstance(group, dict) else {}), name: value}
    if "init_args" in content or "class_path" in content:
        migrated["init_args"] = arguments
    else:  # a section that gives the arguments directly keeps that form
        migrated.update(arguments)
    return migrated


def migrate_loaded(value: Any) -> Any:
    """A loaded YAML value with the flat settings of its task or data module moved into their groups.

    Reads a whole config (a mapping with ``model:`` / ``data:``) and a class's own section (a
    mapping with the ``class_path`` of a task or a data module, as ``--model FILE`` gives);
    anything else is returned as it is.
    """
    if not isinstance(value, dict):
        return value
    if any(isinstance(value.get(section), dict) for section in FLAT_GROUPS):
        return {k: migrate_section(k, v) if k in FLAT_GROUPS else v for k, v in value.items()}
    for section in FLAT_GROUPS:
        if "class_path" in value and _is_kind(section, section_class(section, value["class_path"])):
            return migrate_section(section, value)
    return value


def _class_path(section: str, args: list[str], files: list[dict[str, Any]]) -> str | None:
    """The class the command line and its config files name for ``section`` (the last one given)."""
    found: str | None = None
    for content in files:
        part = content.get(section)
        if isinstance(part, dict) and isinstance(part.get("class_path"), str):
            found = part["class_path"]
    for position, arg in enumerate(args):
        value = None
        if arg in (f"--{section}", f"--{section}.class_path") and position + 1 < len(args):
            value = args[position + 1]
        elif arg.startswith((f"--{section}=", f"--{section}.class_path=")):
            value = arg.split("=", 1)[1]
        if value is not None and value.replace(".", "").replace("_", "").isalnum():
            found = value
    return found


def rewrite_args(args: list[str], files: list[dict[str, Any]]) -> list[str]:
    """``args`` with ``--model[.init_args].<flat setting>`` spelt ``--model.init_args.<group>.<setting>``.

    The same for ``--data``. Also gives a group's setting set to null as the group's mapping
    (``--model.init_args.network {weights_backbone: null}``): jsonargparse 4.5x reads ``null`` after
    a setting of a group inside a class's arguments as the text ``'None'``, and merges a mapping
    setting by setting.
    """
    for section in FLAT_GROUPS:
        class_path = _class_path(section, args, files)
        cls = section_class(section, class_path) if class_path is not None else None
        groups = set(groups_of(cls)) if cls is not None else set(FLAT_GROUPS[section])
        args = _rewrite_section(args, section, flat_names(section, class_path), groups)
    return args


def _rewrite_section(args: list[str], section: str, names: dict[str, str], groups: set[str]) -> list[str]:
    spelt: list[str] = []
    for arg in args:
        for prefix in (f"--{section}.init_args.", f"--{section}."):
            if arg.startswith(prefix):
                rest = arg[len(prefix) :]
                name = rest.split("=", 1)[0].split(".", 1)[0]
                if name in names:
                    arg = f"--{section}.init_args.{names[name]}.{rest}"
                elif name in groups and prefix == f"--{section}.":
                    arg = f"--{section}.init_args.{rest}"
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
        if len(parts) == 4 and parts[:2] == [f"--{section}", "init_args"] and parts[2] in groups and value in _NULLS:
            rewritten += [".".join(parts[:3]), f"{{{parts[3]}: null}}"]
            position += 1 if equals else 2
            continue
        rewritten.append(arg)
        position += 1
    return rewritten


_installed: list[Callable[[str], Any]] = []


def read_flat_options() -> None:
    """Have jsonargparse's YAML loader move flat settings into their groups (once per process)."""
    if _installed:
        return
    load_yaml = get_loader("yaml")
    _installed.append(load_yaml)

    def load(text: str) -> Any:
        return migrate_loaded(load_yaml(text))

    set_loader("yaml", load, exceptions=(yaml.YAMLError,))
