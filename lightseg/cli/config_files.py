"""``--config`` files read before the parser does, with one line naming the file for what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lightseg.errors import LightsegError

#: the ``--config`` files of the command line being parsed, with their content (for messages about a key)
CONFIG_FILES: list[tuple[Path, dict[str, Any]]] = []


def check_config_files(args: list[str]) -> None:
    """Read every ``--config`` file the way the parser will, with one line naming the file for what is wrong."""
    CONFIG_FILES.clear()
    for position, arg in enumerate(args):
        if arg == "--config" and position + 1 < len(args):
            path = Path(args[position + 1])
        elif arg.startswith("--config="):
            path = Path(arg.split("=", 1)[1])
        else:
            continue
        if not path.is_file():
            raise LightsegError(
                f"config {path} {'is a folder' if path.is_dir() else 'does not exist'}; give a YAML file"
            )
        try:
            content = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as err:
            raise LightsegError(
                f"config {path} is not a UTF-8 text file (byte {err.start}); a config is YAML"
            ) from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).strip().splitlines()[0]
            raise LightsegError(f"config {path}: YAML syntax error{where}: {problem}") from None
        if not isinstance(content, dict):
            kind = "empty" if content is None else f"a YAML {type(content).__name__}"
            raise LightsegError(
                f"config {path} is {kind}; a config maps sections to their settings: `model:`, `data:`, `trainer:` "
                "(see configs/quickstart.yaml)"
            )
        CONFIG_FILES.append((path, content))


def file_setting(section: str, name: str, group: str | None = None) -> tuple[Path, str | None] | None:
    """The last ``--config`` file that sets ``name`` in ``section`` (directly or under ``init_args``), and the class.

    ``group`` looks for ``name`` inside that group of the section's arguments (``network``). The
    class is the section's ``class_path`` in the last config file that gives one.
    """
    found: Path | None = None
    class_path: str | None = None
    for path, content in CONFIG_FILES:
        part = content.get(section)
        if not isinstance(part, dict):
            continue
        arguments = part.get("init_args")
        places: list[Any] = [part, arguments if isinstance(arguments, dict) else {}]
        if group is not None:
            places = [place.get(group) for place in places]
        if any(isinstance(place, dict) and name in place for place in places):
            found = path
        if isinstance(part.get("class_path"), str):
            class_path = part["class_path"]
    return None if found is None else (found, class_path)
