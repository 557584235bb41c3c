"""segmentation_models_pytorch's architectures as lightseg builds them.

smp's own list of architectures (``smp.MODEL_ARCHITECTURES_MAPPING``) is lightseg's: each is
built from its backbone name, class count and own arguments, after a dry build on the meta
device has turned smp's refusals into one line (before any weights are downloaded). Where smp
cannot run a combination users want, the build mends it: transformers defined for one input
size get timm's dynamic size, DPT on a patch-14 ViT (DINOv2) reassembles on its patch grid.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Collection
from contextlib import AbstractContextManager, nullcontext
from typing import Any, cast

import segmentation_models_pytorch as smp
import torch
from torch import nn

from lightseg.errors import LightsegError, option
from lightseg.models.backbones import WeightsName, hub_cache_only_when_unreachable, load_backbone_file, offline_hint
from lightseg.weights import check_weights_option

#: smp's architectures, in its order
ARCHITECTURES: tuple[str, ...] = tuple(smp.MODEL_ARCHITECTURES_MAPPING)
#: smp's arguments that lightseg sets itself (from the backbone, weights, class count and output stride)
_SET_BY_LIGHTSEG = frozenset(
    {"self", "encoder_name", "encoder_weights", "in_channels", "classes", "activation", "aux_params", "kwargs",
     "encoder_output_stride"}
)  # fmt: skip
#: where smp's default encoder is not the architecture's published one (SegFormer: Mix Transformer) or
#: lightseg kept its own default (the DeepLabs: ResNet-101, as in the papers)
_PUBLISHED_BACKBONE = {"segformer": "mit_b0", "deeplabv3": "resnet101", "deeplabv3plus": "resnet101"}
#: the smallest deepest-feature map an architecture runs on (PAN's feature pyramid attention halves it three times)
_MIN_FEATURE_SIZE = {"pan": 8}


def encoders() -> tuple[str, ...]:
    """Names of the encoders segmentation_models_pytorch provides."""
    return tuple(smp.encoders.get_encoder_names())


def arguments(name: str) -> frozenset[str]:
    """The arguments of smp's architecture ``name``."""
    return frozenset(inspect.signature(smp.MODEL_ARCHITECTURES_MAPPING[name]).parameters)


def settable(name: str) -> frozenset[str]:
    """The arguments a user may set through ``arch_options`` (``decoder_channels``, ...)."""
    return arguments(name) - _SET_BY_LIGHTSEG


def default_backbone(name: str) -> str:
    """The backbone ``name`` builds on unless told: smp's default, or the published one."""
    default = inspect.signature(smp.MODEL_ARCHITECTURES_MAPPING[name]).parameters["encoder_name"].default
    return _PUBLISHED_BACKBONE.get(name, str(default))


def build(
    name: str,
    backbone: str,
    weights_backbone: WeightsName | None,
    num_classes: int,
    kwargs: dict[str, Any],
    arch_options: Collection[str] = (),
) -> tuple[nn.Module, int, int]:
    """Smp's architecture ``name`` with the size its inputs are padded to a multiple of, and their smallest size.

    ``kwargs`` are smp's own arguments (``arch_options``, output stride, ASPP rates); ``arch_options``
    names those the user set, which a refusal names.
    """
    check_weights_option("weights_backbone", weights_backbone, ("imagenet",))
    weights = "imagenet" if weights_backbone == "imagenet" else None
    kwargs = dict(kwargs)
    if fixed_input_size(backbone):
        # a transformer whose position embedding / windows are fixed to its pretraining size (DINOv2: 518,
        # Swin: 224): timm adapts them to each input's patch grid instead, so that any input size runs
        kwargs.setdefault("dynamic_img_size", True)
    _dry_build(name, backbone, num_classes, kwargs, arch_options)
    downloads: AbstractContextManager[None] = hub_cache_only_when_unreachable() if weights else nullcontext()
    with offline_hint(f"smp encoder {backbone}", weights), downloads:
        net = smp.MODEL_ARCHITECTURES_MAPPING[name](backbone, encoder_weights=weights, classes=num_classes, **kwargs)
    load_backbone_file(cast(nn.Module, net.encoder), weights_backbone, f"smp encoder {backbone}")
    stride = int(getattr(net.encoder, "output_stride", 32))
    if name == "dpt":
        _reassemble_on_patch_grid(net, stride)
    min_size = _MIN_FEATURE_SIZE[name] * stride if name in _MIN_FEATURE_SIZE else 1
    return net, _size_divisor(stride), min_size


def adapt_first_convolution(net: nn.Module, in_channels: int, pretrained: bool) -> None:
    """``net``'s first RGB convolution made to take ``in_channels``, as smp adapts its own encoders.

    Pretrained filters are repeated over the new channels and scaled by 3 / ``in_channels``
    (summed for one channel), so that the layer's response to an image of equal bands is kept;
    random ones are drawn afresh. Modules that check the channel count of their input
    (transformers' patch embeddings keep ``num_channels``) and a transformers configuration
    are told the new count.
    """
    from segmentation_models_pytorch.encoders._utils import patch_first_conv

    if not any(isinstance(m, nn.Conv2d) and m.in_channels == 3 for m in net.modules()):
        raise LightsegError(
            f"{type(net).__name__} has no convolution on RGB input to adapt to in_channels={in_channels}"
        )
    patch_first_conv(net, in_channels, default_in_channels=3, pretrained=pretrained)
    for module in net.modules():
        if getattr(module, "num_channels", None) == 3 and not isinstance(module, nn.GroupNorm):
            setattr(module, "num_channels", in_channels)  # noqa: B010 (an attribute of transformers' modules)
        config = getattr(module, "config", None)
        for part in (config, getattr(config, "backbone_config", None)):
            if part is not None and getattr(part, "num_channels", None) == 3:
                part.num_channels = in_channels


def _reassemble_on_patch_grid(net: Any, stride: int) -> None:
    """DPT on a ViT whose patch is not a power of two (DINOv2's 14): reassemble at 4, 2, 1 and 1/2 times its grid.

    smp derives the reassembly factors from the strides (14/4 = 3.5 ... are no kernel sizes: smp issue 1328);
    DPT's factors are relative to the patch grid, as DINOv2's own DPT head uses them with patch 14.
    """
    from segmentation_models_pytorch.base.initialization import initialize_decoder

    if _size_divisor(stride) == 32:
        return  # a patch of 8, 16 or 32: smp's factors are whole
    for i, block in enumerate(net.decoder.reassemble_blocks):
        channels = block.project_to_out_channel.out_channels
        factor = 2 ** (2 - i)  # 4, 2, 1, 1/2: the blocks' scales for a patch-16 grid
        if factor > 1:
            block.upsample = nn.ConvTranspose2d(channels, channels, kernel_size=factor, stride=factor)
        elif factor == 1:
            block.upsample = nn.Identity()
        else:
            block.upsample = nn.Conv2d(channels, channels, kernel_size=3, stride=round(1 / factor), padding=1)
        initialize_decoder(block.upsample)


def _size_divisor(stride: int) -> int:
    # smp's models need inputs divisible by the encoder's total stride: a power of two pads to 32 as before
    # (DeepLab's dilated encoders included); a patch-14 ViT (DINOv2) to 28, as DPT's coarsest level halves
    # the patch grid and its fusion adds it back to the finer one (an odd grid would not meet)
    return 32 if 32 % stride == 0 else 2 * stride


def fixed_input_size(backbone: str) -> bool:
    """Whether the timm model behind a ``tu-`` backbone was defined for one input size only."""
    if not backbone.startswith("tu-"):
        return False
    import timm

    config = timm.get_pretrained_cfg(backbone[3:])
    return bool(config is not None and config.fixed_input_size)


#: smp's reasons for refusing an encoder, and which encoders the decoder takes instead
_REFUSALS: tuple[tuple[str, str], ...] = (
    ("Unsupported model downsampling pattern", "a plain ViT (one feature scale) works under dpt only; this decoder "
     "needs a feature pyramid: an smp encoder (resnet34, mit_b0, efficientnet-b0, ...) or a hierarchical timm "
     "model (tu-convnext_tiny, tu-swin_tiny_patch4_window7_224, tu-resnet50, ...)"),
    ("Only Timm encoders are supported for DPT", "dpt takes timm models only: tu-<timm model>, e.g. "
     "tu-vit_small_patch14_dinov2, tu-vit_base_patch16_224, tu-convnext_tiny"),
    ("output_stride", "output_stride needs an encoder that can dilate its last stages (resnet*, efficientnet-*, "
     "mobilenet_v2, tu-resnet50, tu-convnext_tiny, ...); transformers such as Swin and ViT cannot"),
    ("not support", "mit_b* encoders work under unet, manet, fpn, pspnet, deeplabv3(plus), pan, upernet and segformer"),
    ("is not supported for", "mit_b* encoders work under unet, manet, fpn, pspnet, deeplabv3(plus), pan, upernet and "
     "segformer"),
)  # fmt: skip


def _dry_build(arch: str, backbone: str, num_classes: int, kwargs: dict[str, Any], given: Collection[str]) -> None:
    """Build smp's ``arch`` on the meta device (no memory, no weights): smp's refusals, before any download."""
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the real build below says it again, once
            smp.MODEL_ARCHITECTURES_MAPPING[arch](backbone, encoder_weights=None, classes=num_classes, **kwargs)
    except (ValueError, TypeError, AssertionError, KeyError) as err:
        reason = str(err).split("\n")[0]
        hint = next((h for key, h in _REFUSALS if key in reason), "")
        if not hint and given:
            # arch_options are one architecture's arguments: a config written for another (the quickstart's U-Net
            # decoder widths under deeplabv3plus) gives values of the wrong kind
            settings = ", ".join(f"{k}: {kwargs[k]!r}" for k in given)
            hint = (
                f"arch_options {{{settings}}} may be another arch's (a config written for one sets them): give "
                f"{option('model', 'arch_options')} null for {arch}'s defaults"
            )
        raise LightsegError(
            f"arch {arch!r} cannot use backbone {backbone!r} with these options ({type(err).__name__}: {reason})"
            + (f"; {hint}" if hint else "")
        ) from None
    except RuntimeError:
        pass  # some encoders cannot be built on the meta device (mit_b*: .item() of a tensor): the real build decides
