"""Weights from local files: backbones, whole models and lightseg checkpoints (``init_from``).

Offline clusters and custom backbones bring weights as files. :func:`read_state_dict`
reads the common formats (a plain state dict, a torchvision / timm / smp checkpoint, a
Lightning checkpoint, ``.safetensors``) without running code from the file, and
:func:`load_matching` copies every weight whose name and shape fit a module, whatever
prefix the file or the module puts before the names (``module.``, ``backbone.``,
``encoder.``, ``model.``), and says in one line what it loaded, what it left out and why.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lightseg.errors import LightsegError

#: keys under which checkpoints of the usual libraries keep their weights
WRAPPER_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "module", "net", "weights")
PRETRAINED_NAMES = ("imagenet", "coco")


def is_weights_file(weights: str | None) -> bool:
    """Whether a ``weights`` / ``weights_backbone`` value names a file (not a pretrained set or ``None``)."""
    return weights is not None and weights not in PRETRAINED_NAMES


def check_weights_option(option: str, value: str | None, names: tuple[str, ...]) -> None:
    """Refuse a value that is neither one of ``names``, ``None``, nor an existing file, in one line."""
    if value is None or value in names:
        return
    path = Path(value).expanduser()
    if not path.is_file():
        where = "is a folder" if path.is_dir() else "does not exist"
        choices = f"is neither {' nor '.join(repr(n) for n in names)} nor a weights file" if names else "is no file"
        raise LightsegError(
            f"{option}: {value!r} {choices} ({path} {where}); give the path of a .pth/.pt/.ckpt/.safetensors file"
            + (", one of the names," if names else "")
            + " or null"
        )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, unwrapped from the checkpoint formats of the usual libraries.

    Files are read with ``weights_only=True`` (never running code they contain).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise LightsegError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            content: Any = load_file(str(path))
        else:
            content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LightsegError(
            f"{path} is not a readable weights file ({type(err).__name__}: {reason[:160]}); "
            "expected a state dict or a torchvision/timm/smp/Lightning checkpoint (torch.save), or .safetensors"
        ) from None
    while isinstance(content, dict):
        inner = next((content[k] for k in WRAPPER_KEYS if isinstance(content.get(k), dict)), None)
        if inner is None:
            break
        content = inner
    tensors = (
        {str(k): v for k, v in content.items() if isinstance(v, torch.Tensor)} if isinstance(content, dict) else {}
    )
    if not tensors:
        raise LightsegError(f"{path} holds no weights (no tensor in it, nor under {', '.join(WRAPPER_KEYS)})")
    return tensors


@dataclass
class LoadReport:
    """What :func:`load_matching` did."""

    loaded: list[str] = field(default_factory=list)
    reshaped: list[str] = field(default_factory=list)  # in both, of another shape: left as initialised
    #: RGB first layers loaded into a layer of another input channel count, spread over its channels
    spread: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the module only
    unexpected: list[str] = field(default_factory=list)  # in the file only

    def describe(self, what: str, source: str, total: int) -> str:
        """One line for the user."""
        parts = [f"{what}: loaded {len(self.loaded)} of {total} weights from {source}"]
        if self.spread:
            parts.append(
                f"{len(self.spread)} RGB first layer(s) spread over the input's channels ({_some(self.spread)})"
            )
        if self.reshaped:
            parts.append(f"{len(self.reshaped)} of another shape left at their initialisation ({_some(self.reshaped)})")
        if self.missing:
            parts.append(f"{len(self.missing)} not in the file ({_some(self.missing)})")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} in the file unused ({_some(self.unexpected)})")
        return "; ".join(parts)


def _some(names: list[str], count: int = 3) -> str:
    shown = ", ".join(names[:count])
    return shown + (", ..." if len(names) > count else "")


def _prefixes(keys: list[str]) -> list[str]:
    # "" and the one- and two-component prefixes that a large share of the names carry
    counts: Counter[str] = Counter()
    for key in keys:
        parts = key.split(".")
        for depth in (1, 2):
            if len(parts) > depth:
                counts[".".join(parts[:depth]) + "."] += 1
    common = [p for p, n in counts.items() if n >= max(2, len(keys) // 4)]
    return ["", *sorted(common, key=len)]


def load_matching(
    module: nn.Module, state: dict[str, torch.Tensor], what: str, source: str, quiet: bool = False
) -> LoadReport:
    """Copy the weights of ``state`` whose names (up to a common prefix) and shapes fit ``module``.

    Weights present in both under another shape (a head with another class count) stay
    as initialised and are listed. Refuses, in one line, a file of which nothing fits.

    Args:
        module: what to load into.
        state: name -> tensor (see :func:`read_state_dict`).
        what: the option being applied, for the messages (``weights_backbone``, ``init_from``).
        source: the file, for the messages.
        quiet: do not print the one-line summary.
    """
    target = module.state_dict()
    best: tuple[int, str, str] = (-1, "", "")
    for file_prefix, own_prefix in itertools.product(_prefixes(list(state)), _prefixes(list(target))):
        hits = sum(
            1
            for key in state
            if key.startswith(file_prefix) and own_prefix + key[len(file_prefix) :] in target
        )  # fmt: skip
        if hits > best[0]:
            best = (hits, file_prefix, own_prefix)
    _, file_prefix, own_prefix = best
    report = LoadReport()
    chosen: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = own_prefix + key[len(file_prefix) :] if key.startswith(file_prefix) else None
        if name is None or name not in target:
            report.unexpected.append(key)
        elif _rgb_into_channels(value, target[name]):
            chosen[name] = spread_over_channels(value, target[name].shape[1])
            report.spread.append(name)
        elif target[name].shape != value.shape:
            report.reshaped.append(name)
        else:
            chosen[name] = value
    report.loaded = [k for k in chosen if k not in report.spread]
    report.missing = [k for k in target if k not in chosen and k not in report.reshaped]
    if not chosen:
        example = f" (e.g. {next(iter(state))!r} in the file, {next(iter(target))!r} in the model)" if target else ""
        raise LightsegError(
            f"{what}: none of the {len(state)} weights in {source} fit this model{example}; "
            "is it a file of another architecture or backbone?"
        )
    module.load_state_dict(chosen, strict=False)
    if not quiet:
        rank_zero_info(report.describe(what, source, len(target)))
    return report


def _rgb_into_channels(value: torch.Tensor, target: torch.Tensor) -> bool:
    """A convolution's weight on RGB input, where the module's takes another number of channels (multispectral)."""
    return (
        value.dim() == 4 and target.dim() == 4 and value.shape[1] == 3 and target.shape[1] != 3
        and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]
    )  # fmt: skip


def spread_over_channels(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """An RGB convolution's ``[O,3,kh,kw]`` weight for ``channels`` input channels, as smp and timm adapt one.

    The RGB filters repeat over the channels, scaled by 3 / ``channels`` (one channel: their
    sum), so that an image whose channels repeat its RGB ones gets the RGB response.
    """
    if channels == 1:
        return weight.sum(1, keepdim=True)
    return weight[:, [c % 3 for c in range(channels)]] * (3 / channels)


def load_weights_file(module: nn.Module, path: str, what: str) -> LoadReport:
    """Read ``path`` and load what fits into ``module`` (:func:`read_state_dict` + :func:`load_matching`)."""
    return load_matching(module, read_state_dict(path), what, str(path))
