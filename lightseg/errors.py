"""The one exception type for user mistakes.

The CLI prints a :class:`LightsegError` as a single ``lightseg: error: ...`` line and exits
non-zero; anything else is a bug and keeps its traceback.

A message names the arguments it is about with :func:`option`: in Python they read as the
argument (``inference.mode``), and the CLI prints them as the command line spells them
(``--model.init_args.inference.mode``), so library code never speaks command-line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

#: how each group's arguments are spelt on the command line
_CLI_PREFIX = {"model": "--model.init_args.", "data": "--data.", "export": "--export.",
               "prediction": "--prediction.", "trainer": "--trainer.", "tune": "--tune.", "pack": "--pack.",
               "run": "--"}  # fmt: skip
_TOKEN = re.compile(r"\x00(\w+):([\w.]+)\x00")


def option(group: str, name: str) -> str:
    """The argument ``name`` of ``group`` (model, data, export, prediction, trainer, tune, pack, run) in a message.

    ``str(error)`` shows ``name``; :meth:`LightsegError.cli_message` shows the command line's
    spelling (``--model.init_args.name``, ``--export.name``, ``--ckpt_path`` for ``run``).
    """
    if group not in _CLI_PREFIX:
        raise ValueError(f"unknown option group {group!r}")
    return f"\x00{group}:{name}\x00"


class LightsegError(ValueError):
    """A user mistake: the message names the file or value at fault and the fix."""

    def __str__(self) -> str:
        return _TOKEN.sub(lambda m: m.group(2), super().__str__())

    def cli_message(self) -> str:
        """The message with its arguments spelt as on the command line."""
        return _TOKEN.sub(lambda m: _CLI_PREFIX[m.group(1)] + m.group(2), super().__str__())


class MaskLabelError(LightsegError):
    """A mask holds values (or colours) that are not classes; ``values`` lists them."""

    def __init__(self, message: str, values: list[object]) -> None:
        super().__init__(message)
        self.values = values


def causes(err: BaseException) -> Iterator[BaseException]:
    """``err`` and every exception behind it (``__cause__``, ``__context__``), each once."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [err]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [current.__cause__, current.__context__]


def user_error(err: BaseException) -> LightsegError | None:
    """The :class:`LightsegError` behind ``err`` (jsonargparse and Lightning wrap what a class raises)."""
    return next((e for e in causes(err) if isinstance(e, LightsegError)), None)


def closest_names(value: str, choices: list[str] | tuple[str, ...]) -> str:
    """Format ``choices`` for an error message, the likeliest match first."""
    import difflib

    close = difflib.get_close_matches(value, list(choices), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint} valid choices: {', '.join(sorted(choices))}"


def class_count_mismatch(
    given: int, data_classes: int, data_name: str, fix: str = "leave model num_classes out"
) -> str:
    """The message for a model ``num_classes`` the data disagrees with (the data decides); ``fix`` says what to do."""
    return (
        f"model num_classes={given} disagrees with the data: {data_name} has {data_classes} classes "
        f"(background included), and the data decides; {fix}"
    )
