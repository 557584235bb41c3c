"""The one exception type for user mistakes.

The CLI prints a :class:`LightsegError` as a single ``lightseg: error: ...`` line and exits
non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterator


class LightsegError(ValueError):
    """A user mistake: the message names the file or value at fault and the fix."""


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
