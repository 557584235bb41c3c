"""Settings groups: frozen dataclasses a task takes as one YAML value (``network:``, ``inference:``).

A group is defined once: its fields are the signature, its docstring's ``Args`` the help text
(jsonargparse reads it for ``--help`` and ``--print_config``), its defaults the defaults. A task
keeps the plain dict form in its hyperparameters (checkpoints load with ``weights_only``) and
the group itself as an attribute.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from lightseg.errors import LightsegError


@dataclasses.dataclass(frozen=True)
class SettingsGroup:
    """The shared behaviour of a frozen dataclass of settings: built from its dict form, saved as plain values.

    A dataclass itself (with no settings), so that jsonargparse reads its subclasses as plain groups of
    settings, each setting a ``--model.init_args.<group>.<setting>`` option.
    """

    #: the group's name in a task's arguments (``network``), for messages
    group_name: ClassVar[str] = "settings"

    def __post_init__(self) -> None:
        # YAML gives lists; tuples keep a group comparable with its defaults (a subclass calls this first)
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                object.__setattr__(self, f.name, tuple(value))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The group's settings, in their order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def of(cls, value: Self | Mapping[str, Any] | None) -> Self:
        """The group from itself, its dict form (as checkpoints and YAML keep it) or ``None`` (the defaults)."""
        if isinstance(value, cls):
            return value
        if value is None:
            return cls()
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(cls.names()))
            if unknown:
                raise LightsegError(f"unknown {cls.group_name} setting(s) {unknown}; known: {list(cls.names())}")
            return cls(**value)
        raise LightsegError(f"{cls.group_name} must be a mapping of settings, got {value!r}")

    @classmethod
    def with_flat(cls, value: Self | Mapping[str, Any] | None, flat: dict[str, Any]) -> Self:
        """The group with the settings of its older, flat spelling popped from ``flat`` on top.

        Before a group existed its settings were the task's own arguments (``arch: unet`` beside
        ``num_classes``); a task passes its ``**kwargs`` here, so that Python code and checkpoints
        written that way keep working.
        """
        moved = {name: flat.pop(name) for name in cls.names() if name in flat}
        group = cls.of(value)
        return dataclasses.replace(group, **moved) if moved else group

    def as_dict(self) -> dict[str, Any]:
        """Plain values (lists for tuples), as saved in checkpoints and ``hparams.yaml``."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclasses.dataclass(frozen=True)
class NetworkSpec(SettingsGroup):
    """What every task's ``network`` group holds: the architecture's name (each task adds its options)."""

    group_name: ClassVar[str] = "network"

    arch: str = ""

    @property
    def backbone_name(self) -> str | None:
        """The backbone's name where the group names one apart from the architecture (for run tags and metadata)."""
        return getattr(self, "backbone", None)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def migrate_flat_group(hparams: dict[str, Any], key: str, group: type[SettingsGroup]) -> dict[str, Any]:
    """Saved hyperparameters with the group's older flat settings moved into ``hparams[key]``."""
    flat = {name: hparams[name] for name in group.names() if name in hparams}
    if not flat:
        return hparams
    migrated = {k: v for k, v in hparams.items() if k not in flat}
    migrated[key] = {**(migrated.get(key) or {}), **flat}
    return migrated
