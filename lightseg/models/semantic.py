"""Semantic segmentation models by name, behind one wrapper with one contract.

Every model built here takes images in [0, 1] (it normalises them itself, so checkpoints
are self-contained), accepts any input size (it pads to what the architecture needs and
crops back), and returns ``{"out": logits[, "aux": logits]}`` at the input resolution. It
takes RGB images, or any number of channels (``in_channels``: 4-band RGB + near infrared,
13-band Sentinel-2, ...) with their per-channel ``mean`` and ``std``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
from torch import nn
from torchvision.models import segmentation as tvseg

from lightseg.errors import LightsegError, closest_names
from lightseg.groups import NetworkSpec
from lightseg.models import hf_adapter, smp_adapter
from lightseg.models.backbones import (
    ATROUS_RESNETS,
    hub_cache_only_when_unreachable,
    load_backbone_file,
    offline_hint,
    torchvision_weights,
)
from lightseg.models.deeplab import DeepLabV2, deeplabv3_resnet
from lightseg.models.fcn_vgg import FCNVGG16
from lightseg.models.wrapper import SegmentationModel
from lightseg.weights import check_weights_option


@dataclass(frozen=True)
class ModelSpec(NetworkSpec):
    """The network of a semantic task: the architecture, its backbone and their options (the task's ``network:``).

    Each architecture reads what applies to it; a setting away from its default that the chosen
    architecture would ignore is refused in one line.

    Args:
        arch: ``fcn32s``/``fcn16s``/``fcn8s`` (VGG16 FCN), ``fcn`` (torchvision FCN-ResNet),
            ``deeplabv2``, ``deeplabv3`` (torchvision ResNet-50/101 or an smp encoder) and every
            architecture of segmentation_models_pytorch: ``unet``, ``unetplusplus``, ``manet``,
            ``linknet``, ``fpn``, ``pspnet``, ``deeplabv3plus``, ``pan``, ``upernet``,
            ``segformer``, ``dpt`` (see docs/models.md for which backbones each takes); ``linear``
            (DINOv2's linear head on a timm backbone); and
            transformers' ``hf_segformer``, ``hf_upernet``, ``hf_dpt``, ``mask2former`` and ``eomt``
            (the ``transformers`` extra; the last two train with their set-prediction loss).
        backbone: encoder; ``None`` takes the architecture's default (vgg16, resnet50 for
            ``fcn``, resnet101 for the DeepLabs, mit_b0 for ``segformer``, smp's default
            otherwise: resnet34, or a ViT-B/16 for ``dpt``). smp's encoders and any timm model
            as ``tu-<name>`` (``tu-convnext_tiny``, ``tu-vit_small_patch14_dinov2``, ...). For
            transformers' architectures: a published checkpoint's name (``nvidia/mit-b0``,
            ``facebook/mask2former-swin-tiny-ade-semantic``, ...) or a ``save_pretrained`` folder.
        weights_backbone: ``imagenet``, the path of a local weights file for the backbone or
            encoder (a state dict or a torchvision/timm/smp checkpoint; what was loaded and
            what not is printed in one line), or ``null`` (train from scratch; needed offline unless
            the weights are in the torch/Hugging Face cache). transformers' architectures also take
            ``pretrained`` (the named checkpoint's weights) and a ``save_pretrained`` folder.
        output_stride: 8 or 16 (``deeplabv3``, ``deeplabv3plus`` and smp's other dilating decoders).
        multi_grid: unit rates of the last ResNet stage (``deeplabv3`` on ResNet-50/101).
        learnable_upsampling: learn the final FCN-VGG upsampling (the release kept it fixed).
        arch_options: the architecture's own arguments, e.g. ``{decoder_attention_type: scse}``
            (``unet``), ``{decoder_channels: 128}`` (``upernet``), ``{decoder_readout: ignore}``
            (``dpt``), or the configuration settings of transformers' architectures
            (``{num_queries: 50}`` for ``mask2former``); names it does not take are refused.
        in_channels: channels of the input images: 3 (RGB) or the number of bands of multispectral
            images (4 for RGB + near infrared, 13 for Sentinel-2, ...; the raster data module's
            ``bands``). A pretrained first layer is adapted as smp and timm adapt it (its RGB
            filters repeated over the bands, scaled by 3 / ``in_channels``).
        mean: each input channel's mean (of the images in [0, 1], as lightseg reads them), which the
            model subtracts; ``None``: the backbone's pretraining statistics (ImageNet's; RGB only).
            ``lightseg data check`` prints a raster data set's.
        std: each input channel's standard deviation, by which the model divides.
    """

    arch: ArchName = "unet"
    backbone: str | None = None
    weights_backbone: str | None = "imagenet"
    output_stride: Literal[8, 16] = 16
    multi_grid: tuple[int, int, int] = (1, 2, 4)
    learnable_upsampling: bool = False
    arch_options: dict[str, Any] | None = None
    in_channels: int = 3
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @property
    def options(self) -> Mapping[str, Any]:
        """``arch_options`` as a mapping (empty when unset)."""
        return self.arch_options or {}

    @property
    def resolved_backbone(self) -> str:
        """The backbone that is built: :attr:`backbone`, or the architecture's default."""
        return self.backbone or ARCHITECTURES[self.arch].default_backbone

    @property
    def backbone_name(self) -> str | None:
        """The backbone that is built (the architecture's default where none is given)."""
        return self.resolved_backbone if self.arch in ARCHITECTURES else self.backbone


#: an architecture's builder: the network, the class count, and whether to build its auxiliary head
Builder = Callable[[ModelSpec, int, bool], SegmentationModel]


def _fcn_vgg(variant: Literal["32s", "16s", "8s"]) -> Builder:
    def build(spec: ModelSpec, num_classes: int, aux: bool) -> SegmentationModel:
        net = FCNVGG16(num_classes, variant, spec.weights_backbone, spec.learnable_upsampling)
        return SegmentationModel(net, size_divisor=32)

    return build


def _fcn_resnet(spec: ModelSpec, num_classes: int, aux: bool) -> SegmentationModel:
    builder = tvseg.fcn_resnet50 if spec.resolved_backbone == "resnet50" else tvseg.fcn_resnet101
    enum = torchvision_weights(spec.resolved_backbone, spec.weights_backbone)
    with offline_hint(f"{spec.resolved_backbone} (ImageNet)", enum):
        net = builder(weights=None, weights_backbone=enum, num_classes=num_classes, aux_loss=aux)
    load_backbone_file(cast(nn.Module, net.backbone), spec.weights_backbone, spec.resolved_backbone)
    return SegmentationModel(net)


def _aspp_rates(spec: ModelSpec) -> tuple[int, int, int]:
    # DeepLab v3 Sec. 3.3: rates (6, 12, 18) at output stride 16, doubled at 8
    return (6, 12, 18) if spec.output_stride == 16 else (12, 24, 36)


def _smp_decoder(name: str) -> Builder:
    """The builder of smp's architecture ``name``, given lightseg's output stride / ASPP rates where it reads them."""
    takes = smp_adapter.arguments(name)

    def build(spec: ModelSpec, num_classes: int, aux: bool) -> SegmentationModel:
        kwargs: dict[str, Any] = dict(spec.options)
        if "encoder_output_stride" in takes:
            kwargs["encoder_output_stride"] = spec.output_stride
        if "decoder_atrous_rates" in takes:
            kwargs.setdefault("decoder_atrous_rates", _aspp_rates(spec))
        kwargs["in_channels"] = spec.in_channels  # smp adapts a pretrained first convolution itself
        net, size_divisor, min_size = smp_adapter.build(
            name, spec.resolved_backbone, spec.weights_backbone, num_classes, kwargs, tuple(spec.options)
        )
        return SegmentationModel(net, size_divisor=size_divisor, min_size=min_size)

    return build


class LinearHead(nn.Module):
    """A linear probe: BatchNorm and a 1x1 convolution on the backbone's last feature map (DINOv2's linear head).

    Args:
        encoder: a timm model built with ``features_only`` for its last feature map.
        channels: that map's channels.
        num_classes: output classes.
    """

    def __init__(self, encoder: nn.Module, channels: int, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.bn = nn.BatchNorm2d(channels)
        self.classifier = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits at the backbone's stride (the wrapper upsamples them to the input)."""
        return self.classifier(self.bn(self.encoder(x)[-1]))


def _linear(spec: ModelSpec, num_classes: int, aux: bool) -> SegmentationModel:
    import timm

    check_weights_option("weights_backbone", spec.weights_backbone, ("imagenet",))
    pretrained = spec.weights_backbone == "imagenet"
    name = spec.resolved_backbone[3:]
    # a ViT defined for one size (DINOv2: 518) adapts its position embedding to each input's patch grid
    size: dict[str, Any] = {"dynamic_img_size": True} if smp_adapter.fixed_input_size(spec.resolved_backbone) else {}
    downloads = hub_cache_only_when_unreachable() if pretrained else contextlib.nullcontext()
    with offline_hint(f"timm {name}", spec.weights_backbone if pretrained else None), downloads:
        encoder = cast(Any, timm.create_model)(  # timm adapts a pretrained first layer to in_chans
            name, pretrained=pretrained, features_only=True, out_indices=(-1,), in_chans=spec.in_channels, **size
        )
    load_backbone_file(encoder, spec.weights_backbone, f"timm {name}")
    info = cast(Any, encoder).feature_info
    net = LinearHead(encoder, int(info.channels()[-1]), num_classes)
    return SegmentationModel(net, size_divisor=int(info.reduction()[-1]))


#: transformers' architectures with an auxiliary FCN head (UperNet's on the third stage, DPT's on the last fusion)
HF_AUX = frozenset({"hf_upernet", "hf_dpt"})


def _transformers(name: str) -> Builder:
    """The builder of transformers' architecture ``name`` (see :mod:`lightseg.models.hf_adapter`)."""

    def build(spec: ModelSpec, num_classes: int, aux: bool) -> SegmentationModel:
        options = dict(spec.options)
        if name in HF_AUX:
            options.setdefault("use_auxiliary_head", aux)
        net, family, size_divisor = hf_adapter.build(
            name, spec.resolved_backbone, spec.weights_backbone, num_classes, options
        )
        mean, std = family.mean_std
        return SegmentationModel(net, size_divisor=size_divisor, mean=mean, std=std)

    return build


def _deeplabv3(spec: ModelSpec, num_classes: int, aux: bool) -> SegmentationModel:
    if spec.resolved_backbone in ATROUS_RESNETS:
        if spec.options:
            raise LightsegError(
                f"arch_options {sorted(spec.options)} apply to smp's DeepLabV3 (smp encoders), not to "
                f"lightseg's DeepLab v3 on torchvision's {spec.resolved_backbone}; remove them or choose an smp encoder"
            )
        net = deeplabv3_resnet(
            num_classes, spec.resolved_backbone, spec.weights_backbone, spec.output_stride, spec.multi_grid, aux
        )
        if spec.in_channels != 3:  # the registry entry is smp's, which builds in_channels itself
            smp_adapter.adapt_first_convolution(net, spec.in_channels, pretrained=spec.weights_backbone is not None)
        return SegmentationModel(net)
    return _smp_decoder("deeplabv3")(spec, num_classes, aux)


def _deeplabv2(spec: ModelSpec, num_classes: int, aux: bool) -> SegmentationModel:
    return SegmentationModel(DeepLabV2(num_classes, spec.resolved_backbone, spec.weights_backbone))


FCN_VGG_OPTIONS = frozenset({"learnable_upsampling"})
AUX_ONLY = frozenset({"aux"})
STRIDE_ONLY = frozenset({"output_stride"})


@dataclass(frozen=True)
class Architecture:
    """A registered architecture: its builder, default backbone and valid backbones."""

    build: Builder
    default_backbone: str
    backbones: Callable[[], tuple[str, ...]]
    has_aux: bool = False
    #: also takes smp's ``tu-<name>`` encoders: any timm model with feature maps
    timm_encoders: bool = False
    #: the options of :class:`ModelSpec` beyond class count and backbone that it reads, by backbone
    options: Callable[[str], frozenset[str]] = lambda backbone: frozenset()
    #: the names ``arch_options`` may set (the smp model's own arguments, e.g. ``decoder_channels``)
    arch_options: frozenset[str] = frozenset()
    #: the builder checks the backbone and ``arch_options`` itself (transformers' configurations)
    checks_own: bool = False
    #: a mask-classification model, trained with its own set-prediction loss
    query: bool = False
    #: why a built model cannot be exported in a format (``None``: it can), with what to do instead; the
    #: third argument: the export is for one input size
    export_refusal: Callable[[nn.Module, str, bool], str | None] = lambda model, fmt, fixed_size: None
    #: the builder reads ``in_channels`` itself (smp, timm); otherwise the RGB network's first convolution is
    #: adapted after the build
    builds_in_channels: bool = False


def _deeplabv3_options(backbone: str) -> frozenset[str]:
    # the atrous ResNets are lightseg's own (multi-grid, auxiliary head); smp's DeepLabV3 has neither
    if backbone in ATROUS_RESNETS:
        return frozenset({"aux", "output_stride", "multi_grid"})
    return STRIDE_ONLY


def _smp_architecture(name: str) -> Architecture:
    """The registry entry of smp's architecture ``name``: its encoders, its default and its own options."""
    takes = smp_adapter.arguments(name)
    timm_only = name == "dpt"  # smp's DPT builds timm models only
    return Architecture(
        _smp_decoder(name),
        smp_adapter.default_backbone(name),
        (lambda: ()) if timm_only else smp_adapter.encoders,
        timm_encoders=True,
        options=lambda backbone: STRIDE_ONLY if "encoder_output_stride" in takes else frozenset(),
        arch_options=smp_adapter.settable(name),
        builds_in_channels=True,
    )


def _transformers_architecture(name: str) -> Architecture:
    """The registry entry of transformers' architecture ``name`` (its backbone is a configuration's name)."""
    family = hf_adapter.FAMILIES[name]
    options = AUX_ONLY if name in HF_AUX else frozenset()
    return Architecture(
        _transformers(name),
        family.default,
        lambda: family.examples,
        has_aux=name in HF_AUX,
        options=lambda backbone: options,
        checks_own=True,
        query=family.query,
        export_refusal=lambda model, fmt, fixed_size: hf_adapter.export_refusal(name, model, fmt, fixed_size),
    )


#: every architecture by ``arch`` name: lightseg's own, then each of segmentation_models_pytorch's
#: (taken from smp's own list, so that a new smp decoder arrives without an edit here)
ARCHITECTURES: dict[str, Architecture] = {
    "fcn32s": Architecture(_fcn_vgg("32s"), "vgg16", lambda: ("vgg16",), options=lambda b: FCN_VGG_OPTIONS),
    "fcn16s": Architecture(_fcn_vgg("16s"), "vgg16", lambda: ("vgg16",), options=lambda b: FCN_VGG_OPTIONS),
    "fcn8s": Architecture(_fcn_vgg("8s"), "vgg16", lambda: ("vgg16",), options=lambda b: FCN_VGG_OPTIONS),
    "fcn": Architecture(_fcn_resnet, "resnet50", lambda: ATROUS_RESNETS, has_aux=True, options=lambda b: AUX_ONLY),
    "deeplabv2": Architecture(_deeplabv2, "resnet101", lambda: ATROUS_RESNETS),
    "linear": Architecture(
        _linear, "tu-vit_small_patch14_dinov2", lambda: (), timm_encoders=True, builds_in_channels=True
    ),
    **{name: _smp_architecture(name) for name in smp_adapter.ARCHITECTURES},
    **{name: _transformers_architecture(name) for name in hf_adapter.FAMILIES},
}
# DeepLab v3 also runs on lightseg's atrous torchvision ResNets (multi-grid, the auxiliary FCN head)
ARCHITECTURES["deeplabv3"] = dataclasses.replace(
    ARCHITECTURES["deeplabv3"],
    build=_deeplabv3,
    backbones=lambda: ATROUS_RESNETS + smp_adapter.encoders(),
    has_aux=True,
    options=_deeplabv3_options,
)
# jsonargparse resolves a dataclass's annotations with the names an ``if TYPE_CHECKING:`` block gives: the
# choices are the runtime branch here, so that it validates them (mypy reads the other)
if not TYPE_CHECKING:  # noqa: SIM108 (mypy reads a type alias from a block only)
    #: the ``arch`` choices (``--help``, the YAML schema), derived from the registry
    ArchName = Literal[tuple(ARCHITECTURES)]
else:
    ArchName = str
#: the settings each architecture reads or ignores beyond its backbone, with their defaults (an ignored
#: setting at its default is never refused)
OPTION_DEFAULTS: dict[str, Any] = {
    name: getattr(ModelSpec(), name) for name in ("output_stride", "multi_grid", "learnable_upsampling")
}


def applicable_options(spec: ModelSpec) -> frozenset[str]:
    """The options (``aux``, ``output_stride``, ...) that ``spec``'s architecture reads on its backbone."""
    return ARCHITECTURES[spec.arch].options(spec.resolved_backbone)


def check_applicable(spec: ModelSpec, extra: Mapping[str, Any] | None = None) -> None:
    """Refuse, in one line, settings away from their default that the architecture on its backbone would ignore.

    Checks ``output_stride``, ``multi_grid`` and ``learnable_upsampling`` (at their
    :data:`OPTION_DEFAULTS` they are never refused) and the ``extra`` settings a task adds (``aux``,
    given as ``True`` when the task asks for the auxiliary head).
    """
    if spec.arch not in ARCHITECTURES:
        return  # build_semantic_model names the valid ones
    applies = applicable_options(spec)
    given = {name: getattr(spec, name) for name in OPTION_DEFAULTS} | dict(extra or {})
    ignored = {
        name: value
        for name, value in given.items()
        if name not in applies and _plain(value) != _plain(OPTION_DEFAULTS.get(name, False))
    }
    if ignored:
        where = [a for a, e in ARCHITECTURES.items() if set(ignored) <= e.options(e.default_backbone)]
        settings = ", ".join(f"{k}={_plain(v)}" for k, v in ignored.items())
        raise LightsegError(
            f"{settings} does not apply to arch {spec.arch!r} with backbone {spec.resolved_backbone!r}, which would "
            "ignore it" + (f" (read by {', '.join(where)})" if where else "") + "; remove it"
        )


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, list | tuple) else value


def build_semantic_model(spec: ModelSpec | str, num_classes: int, aux: bool = True) -> SegmentationModel:
    """Build a semantic segmentation model from its :class:`ModelSpec` (or an architecture's name alone).

    Args:
        spec: the architecture, backbone and options, e.g. ``ModelSpec("deeplabv3", "resnet101",
            output_stride=8)``; a name (``"unet"``) takes every default (ImageNet weights included).
        num_classes: output classes, background included.
        aux: build the auxiliary head where the architecture has one (``fcn``, ``deeplabv3``
            on torchvision ResNets, transformers' ``hf_upernet`` and ``hf_dpt``).
    """
    spec = ModelSpec(arch=spec) if isinstance(spec, str) else spec
    arch = spec.arch
    if arch not in ARCHITECTURES:
        raise LightsegError(f"unknown arch {arch!r};{closest_names(arch, list(ARCHITECTURES))}")
    entry = ARCHITECTURES[arch]
    backbone = spec.resolved_backbone
    valid = entry.backbones()
    if entry.checks_own:
        pass
    elif entry.timm_encoders and backbone.startswith("tu-"):
        import timm

        if not timm.is_model(backbone[3:]):
            hint = closest_names(backbone[3:], timm.list_models(backbone[3:5] + "*") or timm.list_models()[:0])
            raise LightsegError(f"backbone {backbone!r}: timm has no model {backbone[3:]!r};{hint}")
    elif not valid:
        raise LightsegError(
            f"arch {arch!r} takes timm models only: backbone tu-<timm model> (e.g. tu-vit_small_patch14_dinov2, "
            f"tu-convnext_tiny), got {backbone!r}"
        )
    elif backbone not in valid:
        timm_hint = " (or tu-<timm model>)" if entry.timm_encoders else ""
        raise LightsegError(
            f"backbone {backbone!r} is not available for arch {arch!r}{timm_hint};{closest_names(backbone, valid)}"
        )
    if num_classes < 1:
        raise LightsegError(f"num_classes must be >= 1, got {num_classes}")
    check_normalisation(spec.in_channels, spec.mean, spec.std)
    check_applicable(spec)
    unknown = [] if entry.checks_own else sorted(set(spec.options) - entry.arch_options)
    if unknown and not entry.arch_options:
        raise LightsegError(
            f"arch_options {unknown}: arch {arch!r} takes none (they set the arguments of smp's architectures); "
            "remove them"
        )
    if unknown:
        hint = closest_names(unknown[0], sorted(entry.arch_options))
        raise LightsegError(f"arch_options {unknown} are not arguments of arch {arch!r};{hint}")
    model = entry.build(spec, num_classes, aux and entry.has_aux)
    if spec.in_channels != 3 and not entry.builds_in_channels:
        smp_adapter.adapt_first_convolution(model.net, spec.in_channels, pretrained=spec.weights_backbone is not None)
    if spec.mean is not None and spec.std is not None:
        model.set_normalisation(spec.mean, spec.std)
    return model


def check_normalisation(in_channels: int, mean: Sequence[float] | None, std: Sequence[float] | None) -> None:
    """Refuse, in one line, a channel count below 1 and a ``mean`` / ``std`` that does not fit it."""
    if in_channels < 1:
        raise LightsegError(f"in_channels must be >= 1 (3 for RGB images), got {in_channels}")
    if (mean is None) != (std is None):
        given, missing = ("mean", "std") if std is None else ("std", "mean")
        raise LightsegError(f"{given} is set but {missing} is not: give both, one value per input channel")
    if mean is None or std is None:
        if in_channels != 3:
            raise LightsegError(
                f"in_channels={in_channels}: give the model each channel's mean and std (in [0, 1], as the images "
                "are read) to normalise them with, e.g. mean: [...] and std: [...] with one value per channel "
                "(lightseg data check prints them for data read with bands)"
            )
        return
    for name, values in (("mean", mean), ("std", std)):
        if len(values) != in_channels:
            raise LightsegError(
                f"{name} has {len(values)} value(s) but the model takes {in_channels} channel(s) (in_channels): "
                "give one per channel"
            )
    if min(std) <= 0:
        raise LightsegError(f"std must be > 0 for every channel, got {list(std)}")
