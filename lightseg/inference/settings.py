"""How a semantic model runs outside training: :class:`InferenceSettings`, and older checkpoints' flat form."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import torch

from lightseg.errors import LightsegError, option
from lightseg.groups import SettingsGroup
from lightseg.inference.windows import Blend, Forward, pair_of, slide_logits, tta_probs


@dataclasses.dataclass(frozen=True)
class InferenceSettings(SettingsGroup):
    """How a semantic model is run on an image in validation, test, predict and the dashboard.

    One value read by everything that runs the model outside training: the task's evaluation
    and prediction steps (and so the dense CRF, which refines what they return), and the
    export, which refuses settings its graph cannot hold. In YAML, under the task's
    ``inference:``; only what differs from the defaults needs writing.

    Args:
        mode: ``whole`` image in one pass, or ``slide``: overlapping windows, logits averaged.
        window_size: sliding-window size ``int`` or ``(H, W)``; smaller images run whole.
        window_stride: sliding-window stride ``int`` or ``(H, W)``, at most the window size;
            ``None``: two thirds of the window (341 for 512), the overlap the default has.
        window_batch_size: windows per forward pass (bounds memory).
        tta_scales: test-time scales; softmax averaged over them (``[1.0]``: none).
        tta_flip: also average over horizontally flipped inputs.
        blend: how overlapping windows are weighted: ``mean`` (equally), ``gaussian`` or
            ``linear`` (a window's centre counts more than its border: fewer seams between
            tiles); in the sliding window and in large images' tiles.
    """

    group_name: ClassVar[str] = "inference"

    mode: Literal["whole", "slide"] = "whole"
    window_size: int | tuple[int, int] = 512
    window_stride: int | tuple[int, int] | None = None
    window_batch_size: int = 4
    tta_scales: tuple[float, ...] = (1.0,)
    tta_flip: bool = False
    blend: Blend = "mean"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in ("whole", "slide"):
            raise LightsegError(f"inference mode must be 'whole' or 'slide', got {self.mode!r}")
        sizes = {"window_size": self.window_size, "window_stride": self.stride}
        for name, value in sizes.items():
            if min(pair_of(value)) < 1:
                raise LightsegError(f"inference.{name} must be >= 1 (an int or [H, W]), got {value}")
        window, stride = pair_of(self.window_size), pair_of(self.stride)
        if stride[0] > window[0] or stride[1] > window[1]:
            raise LightsegError(
                f"inference.window_stride {self.stride} is larger than window_size {self.window_size}: the "
                "pixels between windows would get no prediction; set window_stride to at most the window (leave it "
                f"unset for two thirds of it: {[max(1, round(side * 2 / 3)) for side in window]})"
            )
        if self.blend not in ("mean", "gaussian", "linear"):
            raise LightsegError(f"inference.blend must be 'mean', 'gaussian' or 'linear', got {self.blend!r}")
        if self.window_batch_size < 1:
            raise LightsegError(f"inference.window_batch_size must be >= 1, got {self.window_batch_size}")
        if not self.tta_scales or min(self.tta_scales) <= 0:
            raise LightsegError(f"inference.tta_scales must be positive scales, e.g. [1.0], got {self.tta_scales}")
        # YAML gives lists; tuples keep the value hashable and comparable with the defaults
        object.__setattr__(self, "tta_scales", tuple(float(s) for s in self.tta_scales))
        for name, value in sizes.items():
            if not isinstance(value, int) and getattr(self, name) is not None:
                object.__setattr__(self, name, pair_of(value))

    @property
    def stride(self) -> int | tuple[int, int]:
        """The sliding window's stride: :attr:`window_stride`, or two thirds of the window where it is unset."""
        if self.window_stride is not None:
            return self.window_stride
        thirds = tuple(max(1, round(side * 2 / 3)) for side in pair_of(self.window_size))
        return thirds[0] if isinstance(self.window_size, int) else (thirds[0], thirds[1])

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
                return slide_logits(forward, x, self.window_size, self.stride, self.window_batch_size, self.blend)
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
