"""The one contract every semantic model keeps: images in [0, 1], any size, logits at the input size.

:class:`SegmentationModel` wraps a network: it normalises (so checkpoints are self-contained),
pads to what the architecture needs, runs it and crops back.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lightseg.errors import LightsegError, option

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SegmentationModel(nn.Module):
    """Normalise, pad to ``size_divisor``, run ``net``, return a dict of logits at input size.

    Args:
        net: returns a logits tensor, or a dict with ``out`` (and optionally ``aux``).
        size_divisor: the input height and width ``net`` needs to be divisible by.
        mean: per-channel mean for normalisation (ImageNet's by default).
        std: per-channel standard deviation.
        min_size: the smallest height and width ``net`` can take (after padding to ``size_divisor``);
            a smaller input is refused in one line naming the size.

    Attributes:
        crop_by_index: crop the padding away by gathering rows and columns instead of slicing.
            ``torch.export`` guards a sliced view on whether the padding was zero, which freezes the
            exported program to inputs that are (or are not) multiples of ``size_divisor``; a gather
            has no such guard but costs a copy of the logits, so only the ``pt2`` export turns it on.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        net: nn.Module,
        size_divisor: int = 1,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        min_size: int = 1,
    ) -> None:
        super().__init__()
        self.net = net
        self.size_divisor = size_divisor
        self.min_size = min_size
        self.crop_by_index = False
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    @property
    def in_channels(self) -> int:
        """Channels of the images the model takes (3: RGB)."""
        return int(self.mean.shape[1])

    def set_normalisation(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Normalise inputs with these per-channel statistics (of images in [0, 1]) instead of the default."""
        device = self.mean.device
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Map ``[B,C,H,W]`` images (``C``: :attr:`in_channels`) in [0, 1] to ``{"out": [B,C,H,W], "aux"?: [B,C,H,W]}``.

        A query-based network's predictions (``class_queries``, ``mask_queries``) pass through as they
        are, at the padded input's scale (see :meth:`pad_target`).
        """
        height, width = image.shape[-2:]
        if image.shape[-3] != self.mean.shape[1] and not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            raise LightsegError(channel_mismatch(self.in_channels, int(image.shape[-3])))
        x = (image - self.mean) / self.std
        d = self.size_divisor
        # zero after normalisation = the mean colour, the least surprising filler; padded by zero
        # pixels where nothing is needed, as a branch on the size would freeze an exported graph to one case.
        # Rounded up by floor division, not ``(-width) % d``: torch.compile's dynamic shapes fail on the
        # modulo of a negative size (inductor has no handler for it) at the second input size
        x = F.pad(x, (0, (width + d - 1) // d * d - width, 0, (height + d - 1) // d * d - height))
        if self.min_size > 1 and not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            self._check_size(x.shape[-2], x.shape[-1], height, width)
        raw = self.net(x)
        outputs = {"out": raw} if isinstance(raw, torch.Tensor) else dict(raw)
        padded = (x.shape[-2], x.shape[-1])
        return {
            key: self._crop(value, padded, height, width) if key in ("out", "aux") else value
            for key, value in outputs.items()
        }

    def pad_target(self, mask: torch.Tensor, ignore_index: int) -> torch.Tensor:
        """``[B,H,W]`` labels padded as :meth:`forward` pads their images, the padding ``ignore_index``."""
        d = self.size_divisor
        height, width = mask.shape[-2:]
        padding = (0, (width + d - 1) // d * d - width, 0, (height + d - 1) // d * d - height)
        return F.pad(mask, padding, value=ignore_index)

    def _check_size(self, padded_height: int, padded_width: int, height: int, width: int) -> None:
        if min(padded_height, padded_width) < self.min_size:
            raise LightsegError(
                f"an input of {height}x{width} pixels is too small for this model, which needs at least "
                f"{self.min_size}x{self.min_size} (its deepest features must keep a few pixels): use larger images "
                "or crops (data.augmentation.crop_size, inference.window_size), a smaller network.output_stride, or "
                "another arch"
            )

    def _crop(self, logits: torch.Tensor, padded: tuple[int, int], height: int, width: int) -> torch.Tensor:
        """Logits at the padded input's size (upsampled if coarser), the padding cropped away."""
        if (logits.shape[-2], logits.shape[-1]) != padded:
            logits = F.interpolate(logits, size=padded, mode="bilinear", align_corners=False)
        if self.crop_by_index:
            rows = torch.arange(height, device=logits.device)
            return logits.index_select(-2, rows).index_select(-1, torch.arange(width, device=logits.device))
        return logits[..., :height, :width]


def channel_mismatch(expected: int, given: int, where: str = "the images") -> str:
    """The one line for images whose channel count is not the model's."""
    channels = option("model", "network.in_channels")
    return (
        f"{where} have {given} channel(s) but the model takes {expected} ({channels}): read the images' bands "
        f"the model was built for (data.bands for rasters), or build the model with {channels}={given} and that "
        f"many {option('model', 'network.mean')} / {option('model', 'network.std')} values"
    )
