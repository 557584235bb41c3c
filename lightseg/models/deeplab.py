"""DeepLab v2 (ASPP with summed class-score branches) and DeepLab v3 on atrous ResNets."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import DeepLabHead, DeepLabV3
from torchvision.models.segmentation.fcn import FCNHead

from lightseg.models.backbones import WeightsName, atrous_resnet


class ASPPv2(nn.Module):
    """DeepLab v2's ASPP: parallel 3x3 atrous convolutions to class scores, summed (Sec. 3.1)."""

    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int] = (6, 12, 18, 24)) -> None:
        super().__init__()
        convs = [nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r) for r in rates]
        for conv in convs:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)  # type: ignore[arg-type]
        self.branches = nn.ModuleList(convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([branch(x) for branch in self.branches]).sum(0)


class DeepLabV2(nn.Module):
    """DeepLab v2: atrous ResNet at output stride 8, ASPP-L (rates 6/12/18/24), bilinear x8.

    The paper's model starts from MS-COCO-pretrained weights; ``weights_backbone`` here
    offers torchvision's ImageNet ResNet.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet101",
        weights_backbone: WeightsName | None = None,
        rates: Sequence[int] = (6, 12, 18, 24),
    ) -> None:
        super().__init__()
        resnet = atrous_resnet(backbone, output_stride=8, weights=weights_backbone)
        self.backbone = IntermediateLayerGetter(resnet, return_layers={"layer4": "out"})
        self.aspp = ASPPv2(2048, num_classes, rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.aspp(self.backbone(x)["out"])
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def deeplabv3_resnet(
    num_classes: int,
    backbone: str = "resnet101",
    weights_backbone: WeightsName | None = None,
    output_stride: Literal[8, 16] = 16,
    multi_grid: Sequence[int] = (1, 2, 4),
    aux: bool = True,
) -> DeepLabV3:
    """DeepLab v3 as in the paper: output stride 8/16, multi-grid, ASPP with image pooling.

    ASPP rates are (6, 12, 18) at output stride 16 and doubled at 8 (Sec. 3.3); the head is
    torchvision's (1x1 + three 3x3 atrous + image pooling, concatenated, 1x1 256 + BN).
    torchvision's own ``deeplabv3_resnet*`` is the output-stride-8, rates-12/24/36 variant
    without multi-grid. The auxiliary FCN head sits on ``layer3``.
    """
    resnet = atrous_resnet(backbone, output_stride, weights_backbone, multi_grid=multi_grid)
    rates = (6, 12, 18) if output_stride == 16 else (12, 24, 36)
    layers = {"layer4": "out", "layer3": "aux"} if aux else {"layer4": "out"}
    return DeepLabV3(
        IntermediateLayerGetter(resnet, return_layers=layers),
        DeepLabHead(2048, num_classes, atrous_rates=rates),
        FCNHead(1024, num_classes) if aux else None,
    )
