"""Semantic segmentation models by name, behind one wrapper with one contract.

Every model built here takes images in [0, 1] (it normalises them itself, so checkpoints
are self-contained), accepts any input size (it pads to what the architecture needs and
crops back), and returns ``{"out": logits[, "aux": logits]}`` at the input resolution.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal, cast

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import segmentation as tvseg

from lightseg.errors import LightsegError, closest_names
from lightseg.models.backbones import (
    ATROUS_RESNETS,
    WeightsName,
    hub_cache_only_when_unreachable,
    load_backbone_file,
    offline_hint,
    torchvision_weights,
)
from lightseg.models.deeplab import DeepLabV2, deeplabv3_resnet
from lightseg.models.fcn_vgg import FCNVGG16
from lightseg.weights import check_weights_option

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ArchName = Literal["fcn32s", "fcn16s", "fcn8s", "fcn", "unet", "deeplabv2", "deeplabv3", "deeplabv3plus"]


@dataclass(frozen=True)
class ModelSpec:
    """Everything a builder may use; each architecture reads only what applies to it."""

    num_classes: int
    backbone: str
    weights_backbone: WeightsName | None
    aux: bool
    output_stride: Literal[8, 16]
    multi_grid: tuple[int, ...]
    learnable_upsampling: bool


class SegmentationModel(nn.Module):
    """Normalise, pad to ``size_divisor``, run ``net``, return a dict of logits at input size.

    Args:
        net: returns a logits tensor, or a dict with ``out`` (and optionally ``aux``).
        size_divisor: the input height and width ``net`` needs to be divisible by.
        mean: per-channel mean for normalisation (ImageNet's by default).
        std: per-channel standard deviation.

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
    ) -> None:
        super().__init__()
        self.net = net
        self.size_divisor = size_divisor
        self.crop_by_index = False
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Map ``[B,3,H,W]`` images in [0, 1] to ``{"out": [B,C,H,W], "aux"?: [B,C,H,W]}``."""
        height, width = image.shape[-2:]
        x = (image - self.mean) / self.std
        d = self.size_divisor
        # zero after normalisation = the mean colour, the least surprising filler; padded by zero
        # pixels where nothing is needed, as a branch on the size would freeze an exported graph to one case.
        # Rounded up by floor division, not ``(-width) % d``: torch.compile's dynamic shapes fail on the
        # modulo of a negative size (inductor has no handler for it) at the second input size
        x = F.pad(x, (0, (width + d - 1) // d * d - width, 0, (height + d - 1) // d * d - height))
        raw = self.net(x)
        outputs = {"out": raw} if isinstance(raw, torch.Tensor) else {k: raw[k] for k in ("out", "aux") if k in raw}
        padded = (x.shape[-2], x.shape[-1])
        return {key: self._crop(logits, padded, height, width) for key, logits in outputs.items()}

    def _crop(self, logits: torch.Tensor, padded: tuple[int, int], height: int, width: int) -> torch.Tensor:
        """Logits at the padded input's size (upsampled if coarser), the padding cropped away."""
        if (logits.shape[-2], logits.shape[-1]) != padded:
            logits = F.interpolate(logits, size=padded, mode="bilinear", align_corners=False)
        if self.crop_by_index:
            rows = torch.arange(height, device=logits.device)
            return logits.index_select(-2, rows).index_select(-1, torch.arange(width, device=logits.device))
        return logits[..., :height, :width]


def _fcn_vgg(variant: Literal["32s", "16s", "8s"]) -> Callable[[ModelSpec], SegmentationModel]:
    def build(spec: ModelSpec) -> SegmentationModel:
        net = FCNVGG16(spec.num_classes, variant, spec.weights_backbone, spec.learnable_upsampling)
        return SegmentationModel(net, size_divisor=32)

    return build


def _fcn_resnet(spec: ModelSpec) -> SegmentationModel:
    builder = tvseg.fcn_resnet50 if spec.backbone == "resnet50" else tvseg.fcn_resnet101
    enum = torchvision_weights(spec.backbone, spec.weights_backbone)
    with offline_hint(f"{spec.backbone} (ImageNet)", enum):
        net = builder(weights=None, weights_backbone=enum, num_classes=spec.num_classes, aux_loss=spec.aux)
    load_backbone_file(cast(nn.Module, net.backbone), spec.weights_backbone, spec.backbone)
    return SegmentationModel(net)


def _smp(model_class: Callable[..., nn.Module], spec: ModelSpec, **kwargs: Any) -> SegmentationModel:
    check_weights_option("weights_backbone", spec.weights_backbone, ("imagenet",))
    weights = "imagenet" if spec.weights_backbone == "imagenet" else None
    downloads: AbstractContextManager[None] = hub_cache_only_when_unreachable() if weights else nullcontext()
    with offline_hint(f"smp encoder {spec.backbone}", weights), downloads:
        net = model_class(spec.backbone, encoder_weights=weights, classes=spec.num_classes, **kwargs)
    load_backbone_file(cast(nn.Module, net.encoder), spec.weights_backbone, f"smp encoder {spec.backbone}")
    return SegmentationModel(net, size_divisor=32)


def _aspp_rates(spec: ModelSpec) -> tuple[int, int, int]:
    # DeepLab v3 Sec. 3.3: rates (6, 12, 18) at output stride 16, doubled at 8
    return (6, 12, 18) if spec.output_stride == 16 else (12, 24, 36)


def _unet(spec: ModelSpec) -> SegmentationModel:
    return _smp(smp.Unet, spec)


def _deeplabv3(spec: ModelSpec) -> SegmentationModel:
    if spec.backbone in ATROUS_RESNETS:
        net = deeplabv3_resnet(
            spec.num_classes, spec.backbone, spec.weights_backbone, spec.output_stride, spec.multi_grid, spec.aux
        )
        return SegmentationModel(net)
    return _smp(smp.DeepLabV3, spec, encoder_output_stride=spec.output_stride, decoder_atrous_rates=_aspp_rates(spec))


def _deeplabv3plus(spec: ModelSpec) -> SegmentationModel:
    return _smp(
        smp.DeepLabV3Plus, spec, encoder_output_stride=spec.output_stride, decoder_atrous_rates=_aspp_rates(spec)
    )


def _deeplabv2(spec: ModelSpec) -> SegmentationModel:
    return SegmentationModel(DeepLabV2(spec.num_classes, spec.backbone, spec.weights_backbone))


def smp_encoders() -> tuple[str, ...]:
    """Names of the encoders segmentation_models_pytorch provides."""
    return tuple(smp.encoders.get_encoder_names())


FCN_VGG_OPTIONS = frozenset({"learnable_upsampling"})
AUX_ONLY = frozenset({"aux"})
STRIDE_ONLY = frozenset({"output_stride"})


@dataclass(frozen=True)
class Architecture:
    """A registered architecture: its builder, default backbone and valid backbones."""

    build: Callable[[ModelSpec], SegmentationModel]
    default_backbone: str
    backbones: Callable[[], tuple[str, ...]]
    has_aux: bool = False
    #: also takes smp's ``tu-<name>`` encoders: any timm model with feature maps
    timm_encoders: bool = False
    #: the options of :class:`ModelSpec` beyond class count and backbone that it reads, by backbone
    options: Callable[[str], frozenset[str]] = lambda backbone: frozenset()


def _deeplabv3_options(backbone: str) -> frozenset[str]:
    # the atrous ResNets are lightseg's own (multi-grid, auxiliary head); smp's DeepLabV3 has neither
    if backbone in ATROUS_RESNETS:
        return frozenset({"aux", "output_stride", "multi_grid"})
    return STRIDE_ONLY


ARCHITECTURES: dict[str, Architecture] = {
    "fcn32s": Architecture(_fcn_vgg("32s"), "vgg16", lambda: ("vgg16",), options=lambda b: FCN_VGG_OPTIONS),
    "fcn16s": Architecture(_fcn_vgg("16s"), "vgg16", lambda: ("vgg16",), options=lambda b: FCN_VGG_OPTIONS),
    "fcn8s": Architecture(_fcn_vgg("8s"), "vgg16", lambda: ("vgg16",), options=lambda b: FCN_VGG_OPTIONS),
    "fcn": Architecture(_fcn_resnet, "resnet50", lambda: ATROUS_RESNETS, has_aux=True, options=lambda b: AUX_ONLY),
    "unet": Architecture(_unet, "resnet34", smp_encoders, timm_encoders=True),
    "deeplabv2": Architecture(_deeplabv2, "resnet101", lambda: ATROUS_RESNETS),
    "deeplabv3": Architecture(
        _deeplabv3,
        "resnet101",
        lambda: ATROUS_RESNETS + smp_encoders(),
        has_aux=True,
        timm_encoders=True,
        options=_deeplabv3_options,
    ),
    "deeplabv3plus": Architecture(
        _deeplabv3plus, "resnet101", smp_encoders, timm_encoders=True, options=lambda b: STRIDE_ONLY
    ),
}
#: the settings a user may give each architecture beyond its backbone (what the task checks)
OPTION_DEFAULTS: dict[str, Any] = {"output_stride": 16, "multi_grid": (1, 2, 4), "learnable_upsampling": False}


def applicable_options(arch: str, backbone: str | None) -> frozenset[str]:
    """The :class:`ModelSpec` options (``aux``, ``output_stride``, ...) ``arch`` reads on ``backbone``."""
    entry = ARCHITECTURES[arch]
    return entry.options(backbone or entry.default_backbone)


def check_applicable(arch: str, backbone: str | None, given: dict[str, Any]) -> None:
    """Refuse, in one line, settings away from their default that ``arch`` on ``backbone`` would ignore.

    ``given`` maps option names (``output_stride``, ``multi_grid``, ``learnable_upsampling``,
    ``aux``) to the values set; options at their default (:data:`OPTION_DEFAULTS`; ``aux``:
    ``False``) are never refused.
    """
    if arch not in ARCHITECTURES:
        return  # build_semantic_model names the valid ones
    entry = ARCHITECTURES[arch]
    backbone = backbone or entry.default_backbone
    applies = entry.options(backbone)
    ignored = {
        name: value
        for name, value in given.items()
        if name not in applies and _plain(value) != _plain(OPTION_DEFAULTS.get(name, False))
    }
    if ignored:
        where = [a for a, e in ARCHITECTURES.items() if set(ignored) <= e.options(e.default_backbone)]
        settings = ", ".join(f"{k}={_plain(v)}" for k, v in ignored.items())
        raise LightsegError(
            f"{settings} does not apply to arch {arch!r} with backbone {backbone!r}, which would ignore it"
            + (f" (read by {', '.join(where)})" if where else "")
            + "; remove it"
        )


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, list | tuple) else value


def build_semantic_model(
    arch: str,
    num_classes: int,
    backbone: str | None = None,
    weights_backbone: WeightsName | None = None,
    aux: bool = True,
    output_stride: Literal[8, 16] = 16,
    multi_grid: Sequence[int] = (1, 2, 4),
    learnable_upsampling: bool = False,
) -> SegmentationModel:
    """Build a semantic segmentation model by architecture name.

    Args:
        arch: one of :data:`ARCHITECTURES`.
        num_classes: output classes, background included.
        backbone: encoder name; ``None`` takes the architecture's default.
        weights_backbone: ``"imagenet"``, the path of a local weights file for the backbone /
            encoder (see :mod:`lightseg.weights`), or ``None`` (from scratch).
        aux: build the auxiliary head where the architecture has one (``fcn``, ``deeplabv3``
            on torchvision ResNets).
        output_stride: 8 or 16, for ``deeplabv3`` / ``deeplabv3plus``.
        multi_grid: unit rates of ``layer4`` for ``deeplabv3`` on ResNets.
        learnable_upsampling: learn FCN-VGG's final upsampling instead of fixing it.
    """
    if arch not in ARCHITECTURES:
        raise LightsegError(f"unknown arch {arch!r};{closest_names(arch, list(ARCHITECTURES))}")
    entry = ARCHITECTURES[arch]
    backbone = backbone or entry.default_backbone
    valid = entry.backbones()
    if entry.timm_encoders and backbone.startswith("tu-"):
        import timm

        if not timm.is_model(backbone[3:]):
            hint = closest_names(backbone[3:], timm.list_models(backbone[3:5] + "*") or timm.list_models()[:0])
            raise LightsegError(f"backbone {backbone!r}: timm has no model {backbone[3:]!r};{hint}")
    elif backbone not in valid:
        timm_hint = " (or tu-<timm model>)" if entry.timm_encoders else ""
        raise LightsegError(
            f"backbone {backbone!r} is not available for arch {arch!r}{timm_hint};{closest_names(backbone, valid)}"
        )
    if num_classes < 1:
        raise LightsegError(f"num_classes must be >= 1, got {num_classes}")
    check_applicable(
        arch,
        backbone,
        {"output_stride": output_stride, "multi_grid": multi_grid, "learnable_upsampling": learnable_upsampling},
    )
    spec = ModelSpec(
        num_classes=num_classes,
        backbone=backbone,
        weights_backbone=weights_backbone,
        aux=aux and entry.has_aux,
        output_stride=output_stride,
        multi_grid=tuple(multi_grid),
        learnable_upsampling=learnable_upsampling,
    )
    return entry.build(spec)
