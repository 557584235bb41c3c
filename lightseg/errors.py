"""The one exception type for user mistakes.

The CLI prints a :class:`LightsegError` as a single ``lightseg: error: ...`` line and exits
non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class LightsegError(ValueError):
    """A user mistake: the message names the file or value at fault and the fix."""


class MaskLabelError(LightsegError):
    """A mask holds values (or colours) that are not classes; ``values`` lists them."""

    def __init__(self, message: str, values: list[object]) -> None:
        super().__init__(message)
        self.values = values


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
