"""The command line: LightningCLI with lightseg's subcommands, config checks, parser messages and checkpoint aliases.

``lightseg.cli.main`` and ``build_cli`` are loaded on first use, so that the light entry
point (``lightseg --help``) can import this package's parser messages without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightseg.cli.app import LightsegCLI, build_cli, main

__all__ = ["LightsegCLI", "build_cli", "main"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from lightseg.cli import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
