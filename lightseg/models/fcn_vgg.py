"""The original FCN-32s/16s/8s on VGG16 (Long, Shelhamer & Darrell, CVPR 2015)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from lightseg.models.backbones import WeightsName, vgg16_layers


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """A ``[C, C, k, k]`` transposed-convolution weight that performs bilinear upsampling.

    Channel ``i`` only feeds channel ``i``, as in the FCN release's ``upsample_filt``.
    """
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = torch.arange(kernel_size, dtype=torch.float64)
    filt1d = 1 - (og - center).abs() / factor
    filt = (filt1d[:, None] * filt1d[None, :]).float()
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = filt
    return weight


def _conv_from_linear(conv: nn.Conv2d, linear: nn.Module) -> None:
    """Recast a fully connected layer as a convolution (the FCN paper's "convolutionalization")."""
    assert isinstance(linear, nn.Linear) and conv.bias is not None
    conv.weight.data.copy_(linear.weight.data.view_as(conv.weight))
    conv.bias.data.copy_(linear.bias.data)


def _upsample(channels: int, factor: int, learnable: bool) -> nn.ConvTranspose2d:
    # kernel 2f, stride f, padding f/2 gives exactly f times the input size.
    layer = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False)
    layer.weight.data.copy_(bilinear_kernel(channels, 2 * factor))
    layer.weight.requires_grad_(learnable)
    return layer


class FCNVGG16(nn.Module):
    """FCN on VGG16 with fc6/fc7 as convolutions and skip layers on pool4 / pool3.

    Input height and width must be multiples of 32 (the wrapper in
    :mod:`lightseg.models.semantic` pads and crops, which replaces the release's padding
    100 + crop alignment). The 2x upsampling layers are learned; the final one is fixed
    bilinear unless ``learnable_upsampling`` (the release froze it: learning-rate
    multiplier 0). Score layers on the skips start at zero, so at initialisation FCN-8s
    predicts exactly what FCN-32s does.

    Args:
        num_classes: output channels, background included.
        variant: ``32s``, ``16s`` or ``8s``.
        weights_backbone: ``"imagenet"`` loads VGG16's convolutions and recasts its
            fully connected fc6/fc7 as 7x7 and 1x1 convolutions.
        learnable_upsampling: also learn the final upsampling.
    """

    def __init__(
        self,
        num_classes: int,
        variant: Literal["32s", "16s", "8s"] = "8s",
        weights_backbone: WeightsName | None = None,
        learnable_upsampling: bool = False,
    ) -> None:
        super().__init__()
        self.variant = variant
        self.to_pool3, self.to_pool4, self.to_pool5, classifier = vgg16_layers(weights_backbone)
        self.fc6 = nn.Conv2d(512, 4096, 7, padding=3)
        self.fc7 = nn.Conv2d(4096, 4096, 1)
        if weights_backbone is not None:
            _conv_from_linear(self.fc6, classifier[0])
            _conv_from_linear(self.fc7, classifier[3])
        self.head = nn.Sequential(
            self.fc6, nn.ReLU(inplace=True), nn.Dropout2d(), self.fc7, nn.ReLU(inplace=True), nn.Dropout2d()
        )
        self.score_fr = self._zero_conv(4096, num_classes)
        final = {"32s": 32, "16s": 16, "8s": 8}[variant]
        if variant in ("16s", "8s"):
            self.score_pool4 = self._zero_conv(512, num_classes)
            self.upscore2 = _upsample(num_classes, 2, learnable=True)
        if variant == "8s":
            self.score_pool3 = self._zero_conv(256, num_classes)
            self.upscore_pool4 = _upsample(num_classes, 2, learnable=True)
        self.upscore_final = _upsample(num_classes, final, learnable=learnable_upsampling)

    @staticmethod
    def _zero_conv(in_channels: int, num_classes: int) -> nn.Conv2d:
        conv = nn.Conv2d(in_channels, num_classes, 1)
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)  # type: ignore[arg-type]
        return conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pool3 = self.to_pool3(x)
        pool4 = self.to_pool4(pool3)
        score = self.score_fr(self.head(self.to_pool5(pool4)))
        if self.variant in ("16s", "8s"):
            score = self.upscore2(score) + self.score_pool4(pool4)
        if self.variant == "8s":
            score = self.upscore_pool4(score) + self.score_pool3(pool3)
        return self.upscore_final(score)
