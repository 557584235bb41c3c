"""Inference modes for semantic models: whole image, sliding window, multi-scale + flip.

All functions take ``forward``, a callable mapping ``[B,3,h,w]`` images in [0, 1] to logits
``[B,C,h,w]`` at the same size (what every lightseg semantic model returns as ``"out"``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F

from lightseg.errors import LightsegError, option

Forward = Callable[[torch.Tensor], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class InferenceSettings:
    """How a semantic model is run on an image in validation, test, predict and the dashboard.

    One value read by everything that runs the model outside training: the task's evaluation
    and prediction steps (and so the dense CRF, which refines what they return), and the
    export, which refuses settings its graph cannot hold. In YAML, under the task's
    ``inference:``; only what differs from the defaults needs writing.

    Args:
        mode: ``whole`` image in one pass, or ``slide``: overlapping windows, logits averaged.
        window_size: sliding-window size ``int`` or ``(H, W)``; smaller images run whole.
        window_stride: sliding-window stride ``int`` or ``(H, W)``.
        window_batch_size: windows per forward pass (bounds memory).
        tta_scales: test-time scales; softmax averaged over them (``[1.0]``: none).
        tta_flip: also average over horizontally flipped inputs.
    """

    mode: Literal["whole", "slide"] = "whole"
    window_size: int | tuple[int, int] = 512
    window_stride: int | tuple[int, int] = 341
    window_batch_size: int = 4
    tta_scales: tuple[float, ...] = (1.0,)
    tta_flip: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("whole", "slide"):
            raise LightsegError(f"inference mode must be 'whole' or 'slide', got {self.mode!r}")
        sizes = {"window_size": self.window_size, "window_stride": self.window_stride}
        for name, value in sizes.items():
            if min(_pair(value)) < 1:
                raise LightsegError(f"inference.{name} must be >= 1 (an int or [H, W]), got {value}")
        if self.window_batch_size < 1:
            raise LightsegError(f"inference.window_batch_size must be >= 1, got {self.window_batch_size}")
        if not self.tta_scales or min(self.tta_scales) <= 0:
            raise LightsegError(f"inference.tta_scales must be positive scales, e.g. [1.0], got {self.tta_scales}")
        # YAML gives lists; tuples keep the value hashable and comparable with the defaults
        object.__setattr__(self, "tta_scales", tuple(float(s) for s in self.tta_scales))
        for name, value in sizes.items():
            if not isinstance(value, int):
                object.__setattr__(self, name, _pair(value))

    @classmethod
    def of(cls, value: InferenceSettings | dict[str, Any] | None) -> InferenceSettings:
        """The settings from themselves, their dict form (as checkpoints keep them) or ``None`` (defaults)."""
        if isinstance(value, cls):
            return value
        if value is None:
            return cls()
        if isinstance(value, dict):
            unknown = set(value) - {f.name for f in dataclasses.fields(cls)}
            if unknown:
                raise LightsegError(
                    f"unknown inference setting(s) {sorted(unknown)}; known: "
                    f"{[f.name for f in dataclasses.fields(cls)]}"
                )
            return cls(**value)
        raise LightsegError(f"inference must be a mapping of settings (e.g. {{mode: slide}}), got {value!r}")

    def as_dict(self) -> dict[str, Any]:
        """Plain values (lists for tuples), as saved in checkpoints and ``hparams.yaml``."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @property
    def plain(self) -> bool:
        """Whether this is one whole-image pass (no sliding window, no test-time augmentation)."""
        return self.mode == "whole" and self.tta_scales == (1.0,) and not self.tta_flip

    def changes_for_one_pass(self) -> list[str]:
        """The options that would make these settings :attr:`plain` (what an export graph holds)."""
        changes = []
        if self.mode != "whole":
            changes.append(f"{option('model', 'inference.mode')} whole")
        if self.tta_scales != (1.0,) or self.tta_flip:
            changes.append(
                f"{option('model', 'inference.tta_scales')} [1.0] {option('model', 'inference.tta_flip')} false"
            )
        return changes

    def probs(self, forward: Forward, image: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[B,C,H,W]`` of ``image`` ``[B,3,H,W]``: sliding window and TTA as set."""

        def logits(x: torch.Tensor) -> torch.Tensor:
            if self.mode == "slide":
                return slide_logits(forward, x, self.window_size, self.window_stride, self.window_batch_size)
            return forward(x)

        return tta_probs(logits, image, self.tta_scales, self.tta_flip)


#: the flat task arguments the settings replaced (checkpoints written before they were grouped
#: keep them) and the setting each became
LEGACY_KEYS = {"inference": "mode", **{k: k for k in ("window_size", "window_stride", "window_batch_size",
                                                      "tta_scales", "tta_flip")}}  # fmt: skip


def migrate_flat_settings(hparams: dict[str, Any]) -> dict[str, Any]:
    """Saved hyperparameters with older checkpoints' flat inference arguments moved into ``inference``."""
    flat = [k for k in LEGACY_KEYS if k in hparams and not (k == "inference" and not isinstance(hparams[k], str))]
    if not flat:
        return hparams
    migrated = {k: v for k, v in hparams.items() if k not in flat}
    migrated["inference"] = InferenceSettings.of({LEGACY_KEYS[k]: hparams[k] for k in flat}).as_dict()
    return migrated


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    height, width = value
    return int(height), int(width)


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of windows covering ``length``; the last one is aligned to the end.

    A ``length`` no larger than ``window`` gives one window, the whole extent.
    """
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    return [*starts, length - window]


def slide_logits(
    forward: Forward,
    image: torch.Tensor,
    window: int | Sequence[int],
    stride: int | Sequence[int],
    batch_size: int = 4,
) -> torch.Tensor:
    """Logits of ``image`` ``[B,3,H,W]`` averaged over overlapping windows.

    Windows are clipped to the image, so an image smaller than the window (in either
    dimension) is processed whole in that dimension: the model pads it to what it needs,
    and a window at least as large as the image gives exactly whole-image inference.
    At most ``batch_size`` windows go through the model at once, which bounds memory.
    """
    win_h, win_w = _pair(window)
    stride_h, stride_w = _pair(stride)
    if min(win_h, win_w, stride_h, stride_w, batch_size) < 1:
        raise ValueError("window size, stride and window batch size must be >= 1")
    height, width = image.shape[-2:]
    win_h, win_w = min(win_h, height), min(win_w, width)
    boxes = [(y, x) for y in window_starts(height, win_h, stride_h) for x in window_starts(width, win_w, stride_w)]
    total: torch.Tensor | None = None
    count = image.new_zeros(1, 1, height, width)
    for first in range(0, len(boxes), batch_size):
        chunk = boxes[first : first + batch_size]
        crops = torch.cat([image[..., y : y + win_h, x : x + win_w] for y, x in chunk])
        logits = forward(crops).float()
        if total is None:
            total = logits.new_zeros(image.shape[0], logits.shape[1], height, width)
        for k, (y, x) in enumerate(chunk):
            total[..., y : y + win_h, x : x + win_w] += logits[k * image.shape[0] : (k + 1) * image.shape[0]]
            count[..., y : y + win_h, x : x + win_w] += 1
    assert total is not None
    return total / count


def tta_probs(
    logits_fn: Forward,
    image: torch.Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> torch.Tensor:
    """Softmax probabilities averaged over rescaled (and horizontally flipped) copies of ``image``.

    Each copy's logits are resized back to the input size (bilinear) before the softmax.
    """
    height, width = image.shape[-2:]
    total = None
    passes = 0
    for scale in scales:
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        scaled = image if size == (height, width) else F.interpolate(image, size, mode="bilinear", align_corners=False)
        variants = [(scaled, False), (scaled.flip(-1), True)] if flip else [(scaled, False)]
        for inputs, flipped in variants:
            logits = logits_fn(inputs).float()
            if flipped:
                logits = logits.flip(-1)
            if logits.shape[-2:] != (height, width):
                logits = F.interpolate(logits, (height, width), mode="bilinear", align_corners=False)
            probs = logits.softmax(1)
            total = probs if total is None else total + probs
            passes += 1
    assert total is not None
    return total / passes
