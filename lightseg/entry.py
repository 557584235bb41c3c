"""The ``lightseg`` console script: answers at once what needs no model library, hands the rest to the CLI.

``lightseg --help``, ``lightseg --version``, ``lightseg data check|pack --help``, a missing or
misspelt command: printed without importing torch, Lightning or the model libraries (a few
seconds each otherwise, before the first line). Everything else runs :func:`lightseg.cli.main`.
"""

from __future__ import annotations

import difflib
import sys

from lightseg.commands import COMMAND_LIST, COMMANDS, START, top_level_help, version_line

#: the CLI's own subcommands (``data`` has a command of its own)
SUBCOMMANDS = ("fit", "validate", "test", "predict", "export")


def fast_answer(args: list[str]) -> int | None:
    """The exit status of a command line answered without the model libraries, or ``None`` to run the CLI."""
    if not args:
        print(f"lightseg: error: no command given{START}", file=sys.stderr)
        print(f"commands: {COMMAND_LIST}; `lightseg --help` says what each does", file=sys.stderr)
        return 2
    first = args[0]
    if first in ("-h", "--help") and len(args) == 1:
        print(top_level_help())
        return 0
    if first == "--version":
        print(version_line())
        return 0
    if first == "data":
        from lightseg.cli.data_command import DATA_COMMANDS, USAGE, data_usage_error

        rest = args[1:]
        if not rest or rest[0] in ("-h", "--help"):
            print(USAGE)
            return 0 if rest else 2
        if rest[0] in DATA_COMMANDS and any(a in ("-h", "--help") for a in rest):
            print(DATA_COMMANDS[rest[0]])
            return 0
        if rest[0] not in DATA_COMMANDS:
            print(f"lightseg: error: {data_usage_error(rest[0])}", file=sys.stderr)
            return 2
        return None
    if first == "tune" and any(a in ("-h", "--help") for a in args[1:]):
        from lightseg.tune.settings import usage

        print(usage())
        return 0
    if not first.startswith("-") and first not in (*SUBCOMMANDS, "tune"):
        close = difflib.get_close_matches(first, [*SUBCOMMANDS, "data", "tune"], n=1)
        hint = f" (did you mean `lightseg {close[0]}`?)" if close else ""
        print(f"lightseg: error: unknown command {first!r}{hint}; commands: {COMMAND_LIST}", file=sys.stderr)
        return 2
    return None


def main(args: list[str] | None = None) -> None:
    """``lightseg ...``: a quick answer where one suffices, else the full CLI (:func:`lightseg.cli.main`)."""
    arguments = list(sys.argv[1:] if args is None else args)
    status = fast_answer(arguments)
    if status is not None:
        raise SystemExit(status)
    if arguments[0] == "tune":
        from lightseg.tune.command import tune_main

        tune_main(arguments[1:])
        return
    from lightseg.cli import main as cli_main

    cli_main(arguments)


def console_main() -> None:
    """The ``lightseg`` console script (exit status 0, or 2 for a user mistake)."""
    main()


__all__ = ["COMMANDS", "console_main", "fast_answer", "main"]
