"""transformers' segmentation models as lightseg architectures (the ``transformers`` extra).

Five architectures: ``hf_segformer`` (SegFormer B0-B5), ``hf_upernet`` (UperNet on ConvNeXt or
Swin), ``hf_dpt`` (DPT on a ViT), ``mask2former`` (on Swin) and ``eomt`` (a plain ViT whose last
blocks decode queries). The ``backbone`` names the model's configuration: a published checkpoint's
name (``nvidia/mit-b0``, ``facebook/mask2former-swin-tiny-ade-semantic``, ...; their
configurations are written here, so that no network is needed to build them) or a local folder
written by ``save_pretrained``. ``weights_backbone: pretrained`` (or ``imagenet``) loads that
checkpoint's weights with ``from_pretrained`` (from the hub or its cache; offline in one line),
a folder or weights file loads those, ``null`` starts from random weights. A different class count
re-initialises the classifier only.

This module does not import transformers: the registry lists these architectures without it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lightseg.errors import LightsegError, closest_names, option
from lightseg.weights import LoadReport, load_weights_file

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
#: ``weights_backbone`` values that load the named checkpoint's own weights
PRETRAINED = ("pretrained", "imagenet")

_SEGFORMER = {  # variant: hidden sizes, depths, decoder size (the paper's Table 6 / the released configs)
    0: ([32, 64, 160, 256], [2, 2, 2, 2], 256),
    1: ([64, 128, 320, 512], [2, 2, 2, 2], 256),
    2: ([64, 128, 320, 512], [3, 4, 6, 3], 768),
    3: ([64, 128, 320, 512], [3, 4, 18, 3], 768),
    4: ([64, 128, 320, 512], [3, 8, 27, 3], 768),
    5: ([64, 128, 320, 512], [3, 6, 40, 3], 768),
}
_CONVNEXT = {  # size: depths, widths
    "tiny": ([3, 3, 9, 3], [96, 192, 384, 768]),
    "small": ([3, 3, 27, 3], [96, 192, 384, 768]),
    "base": ([3, 3, 27, 3], [128, 256, 512, 1024]),
    "large": ([3, 3, 27, 3], [192, 384, 768, 1536]),
    "xlarge": ([3, 3, 27, 3], [256, 512, 1024, 2048]),
}
_SWIN = {  # size: embedding width, depths, heads, window (base and large as pretrained at 384)
    "tiny": (96, [2, 2, 6, 2], [3, 6, 12, 24], 7),
    "small": (96, [2, 2, 18, 2], [3, 6, 12, 24], 7),
    "base": (128, [2, 2, 18, 2], [4, 8, 16, 32], 12),
    "large": (192, [2, 2, 18, 2], [6, 12, 24, 48], 12),
}
_STAGES = ["stage1", "stage2", "stage3", "stage4"]
#: the class count of each data set a published checkpoint was fine-tuned on
_DATASET_CLASSES = {"ade": 150, "ade20k": 150, "cityscapes": 19, "coco": 133, "mapillary-vistas": 65}


def _segformer(match: re.Match[str]) -> dict[str, Any]:
    sizes, depths, decoder = _SEGFORMER[int(match["variant"])]
    return {"hidden_sizes": sizes, "depths": depths, "decoder_hidden_size": decoder}


def _swin(size: str) -> Any:
    from transformers import SwinConfig

    embed, depths, heads, window = _SWIN[size]
    image = 384 if window == 12 else 224
    settings: dict[str, Any] = {
        "embed_dim": embed, "depths": depths, "num_heads": heads, "window_size": window, "image_size": image,
        "drop_path_rate": 0.3, "out_features": _STAGES,
    }  # fmt: skip
    return SwinConfig(**settings)


def _upernet(match: re.Match[str]) -> dict[str, Any]:
    from transformers import ConvNextConfig

    size = match["size"]
    if match["family"] == "convnext":
        depths, widths = _CONVNEXT[size]
        settings: dict[str, Any] = {
            "depths": depths, "hidden_sizes": widths, "drop_path_rate": 0.4, "out_features": _STAGES,
        }  # fmt: skip
        backbone = ConvNextConfig(**settings)
        third = widths[2]
    else:
        backbone, third = _swin(size), _SWIN[size][0] * 4
    return {"backbone_config": backbone, "hidden_size": 512, "auxiliary_in_channels": third}


def _dpt(match: re.Match[str]) -> dict[str, Any]:
    return {
        "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
        "backbone_out_indices": [5, 11, 17, 23], "neck_hidden_sizes": [256, 512, 1024, 1024], "image_size": 384,
    }  # fmt: skip


def _mask2former(match: re.Match[str]) -> dict[str, Any]:
    return {"backbone_config": _swin(match["size"]), "num_queries": 100}


#: ResNets as transformers builds them (a 7x7 stem, bottleneck blocks), and their ImageNet weights on the hub
_RESNETS = {"resnet50": ([3, 4, 6, 3], "microsoft/resnet-50"), "resnet101": ([3, 4, 23, 3], "microsoft/resnet-101")}


def _mask2former_resnet(match: re.Match[str]) -> dict[str, Any]:
    from transformers import ResNetConfig

    settings: dict[str, Any] = {
        "depths": _RESNETS[match["resnet"]][0], "hidden_sizes": [256, 512, 1024, 2048], "layer_type": "bottleneck",
        "out_features": _STAGES,
    }  # fmt: skip
    return {"backbone_config": ResNetConfig(**settings), "num_queries": 100}


def _eomt(match: re.Match[str]) -> dict[str, Any]:
    # ViT-L/16 with 4 registers (DINOv2's); 100 queries decoded in its last 4 blocks, as released for semantic use
    size = int(match["image"])
    return {
        "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "patch_size": 16, "image_size": size,
        "num_queries": 100, "num_blocks": 4, "num_register_tokens": 4,
    }  # fmt: skip


@dataclass(frozen=True)
class Family:
    """One transformers architecture: its model class, published names and input conventions."""

    model_type: str
    model_class: str
    default: str
    #: published checkpoint names (a regular expression with named groups) and their configuration
    published: tuple[tuple[str, Callable[[re.Match[str]], dict[str, Any]]], ...]
    #: examples of published names, for messages and docs
    examples: tuple[str, ...]
    #: the input size's divisor: a fixed number or, for a ViT, read from the config's patch size
    size_divisor: Callable[[Any], int]
    mean_std: tuple[tuple[float, ...], tuple[float, ...]] = IMAGENET
    query: bool = False
    #: the encoder's module (a ``weights_backbone`` file is loaded into it); empty: the whole model (EoMT's ViT)
    encoder: str = ""
    #: export formats that cannot hold the model, and why (checked before exporting)
    export_refusals: tuple[tuple[str, str], ...] = ()
    #: why a graph of the model holds at the traced input size only (empty: it follows the input size)
    fixed_size_only: str = ""

    def config(self, backbone: str, num_classes: int, options: dict[str, Any]) -> Any:
        """The configuration of ``backbone`` (a published name or a ``save_pretrained`` folder)."""
        import transformers

        config_class = transformers.CONFIG_MAPPING[self.model_type]
        folder = Path(backbone).expanduser()
        if folder.is_dir():
            if not (folder / "config.json").is_file():
                raise LightsegError(
                    f"backbone {backbone!r}: the folder has no config.json; give a folder written by a transformers "
                    f"model's save_pretrained, or a published name such as {self.examples[0]!r}"
                )
            config = transformers.AutoConfig.from_pretrained(folder)
            if config.model_type != self.model_type:
                raise LightsegError(
                    f"backbone {backbone!r} holds a {config.model_type!r} model, not a {self.model_type!r} one; "
                    f"use the architecture that builds it or another folder"
                )
        else:
            for pattern, settings in self.published:
                match = re.fullmatch(pattern, backbone)
                if match:
                    config = config_class(**settings(match))
                    break
            else:
                close = difflib.get_close_matches(backbone, self.examples, n=1)
                raise LightsegError(
                    f"backbone {backbone!r} is neither a published {self.model_type} checkpoint lightseg knows nor a "
                    "folder" + (f" (did you mean {close[0]!r}?)" if close else "") + "; published names are like "
                    f"{', '.join(self.examples)} (docs/models.md lists them), or give a folder written by "
                    "save_pretrained"
                )
        _apply_options(config, options, self.model_type)
        config.num_labels = num_classes
        config.id2label = {i: str(i) for i in range(num_classes)}
        config.label2id = {str(i): i for i in range(num_classes)}
        return config


def _apply_options(config: Any, options: dict[str, Any], model_type: str) -> None:
    """Set ``arch_options`` on ``config``, refusing names it does not have."""
    from transformers import PretrainedConfig

    generic = set(PretrainedConfig().to_dict()) | {"transformers_version", "architectures"}
    known = set(config.to_dict()) - generic
    for name, value in options.items():
        if name not in known:
            raise LightsegError(
                f"arch_options {name!r} is not a setting of transformers' {model_type} configuration;"
                + closest_names(name, sorted(k for k in known if not k.startswith("_")))
            )
        setattr(config, name, value)


def _patch(config: Any) -> int:
    return int(config.patch_size)


def _pyramid_or_patch(config: Any) -> int:
    # UperNet on a plain ViT (DINOv2: one feature scale, the patch grid) pads to its patch; on a pyramid, to 32
    backbone = getattr(config, "backbone_config", None)
    return _patch(backbone) if getattr(backbone, "model_type", "") == "dinov2" else 32


FAMILIES: dict[str, Family] = {
    "hf_segformer": Family(
        "segformer", "SegformerForSemanticSegmentation", "nvidia/mit-b0",
        ((r"nvidia/(?:mit|segformer)-b(?P<variant>[0-5])(?:-finetuned-[\w-]+)?", _segformer),),
        ("nvidia/mit-b0", "nvidia/mit-b5", "nvidia/segformer-b0-finetuned-ade-512-512",
         "nvidia/segformer-b5-finetuned-cityscapes-1024-1024"),
        lambda config: 32, encoder="segformer",
    ),
    "hf_upernet": Family(
        "upernet", "UperNetForSemanticSegmentation", "openmmlab/upernet-convnext-tiny",
        ((r"openmmlab/upernet-(?P<family>convnext)-(?P<size>tiny|small|base|large|xlarge)", _upernet),
         (r"openmmlab/upernet-(?P<family>swin)-(?P<size>tiny|small|base|large)", _upernet)),
        ("openmmlab/upernet-convnext-tiny", "openmmlab/upernet-convnext-base", "openmmlab/upernet-swin-tiny",
         "openmmlab/upernet-swin-base"),
        _pyramid_or_patch, encoder="backbone",
    ),
    "hf_dpt": Family(
        "dpt", "DPTForSemanticSegmentation", "Intel/dpt-large-ade",
        ((r"Intel/dpt-large-ade", _dpt),),
        ("Intel/dpt-large-ade",),
        lambda config: 2 * _patch(config), mean_std=HALF, encoder="dpt",
    ),
    "mask2former": Family(
        "mask2former", "Mask2FormerForUniversalSegmentation", "facebook/mask2former-swin-tiny-ade-semantic",
        ((r"facebook/mask2former-swin-(?P<size>tiny|small|base|large)(?:-IN21k)?-(?P<data>ade|cityscapes|coco"
          r"|mapillary-vistas)-semantic", _mask2former),
         (r"(?P<resnet>resnet50|resnet101)", _mask2former_resnet)),
        ("facebook/mask2former-swin-tiny-ade-semantic", "facebook/mask2former-swin-large-ade-semantic",
         "facebook/mask2former-swin-tiny-cityscapes-semantic", "facebook/mask2former-swin-base-IN21k-ade-semantic",
         "resnet50", "resnet101"),
        lambda config: 32, query=True, encoder="model.pixel_level_module.encoder",
        fixed_size_only="Mask2Former computes parts of its graph from the input size in Python (Swin's shifted-window "
        "masks, its pixel decoder's multi-scale shapes), which an exported graph fixes to the size it was made at "
        "(other sizes come out wrong, on a Swin and on a ResNet)",
    ),
    "eomt": Family(
        "eomt", "EomtForUniversalSegmentation", "tue-mps/ade20k_semantic_eomt_large_512",
        ((r"tue-mps/(?P<data>ade20k|cityscapes|coco)_semantic_eomt_large_(?P<image>\d+)", _eomt),),
        ("tue-mps/ade20k_semantic_eomt_large_512", "tue-mps/cityscapes_semantic_eomt_large_1024"),
        _patch, query=True,
        export_refusals=(("pt2", "torch.export cannot hold EoMT's check of its masked-attention schedule (a "
                          "data-dependent branch); export eomt with "
                          f"{option('export', 'format')} onnx or torchscript"),),
    ),
}  # fmt: skip


def export_refusal(arch: str, model: nn.Module, fmt: str, fixed_size: bool) -> str | None:
    """Why the built ``model`` of ``arch`` cannot be exported as ``fmt`` (``None``: it can).

    ``fixed_size``: the export is for one input size (``ExportSettings.input_size``).
    """
    family = FAMILIES[arch]
    refusal = dict(family.export_refusals).get(fmt)
    if refusal or fixed_size or not family.fixed_size_only:
        return refusal
    return (
        f"{family.fixed_size_only}; export it for one input size, e.g. {option('export', 'input_size')} [512,512] "
        "(the graph then takes images of that size only: resize them to it)"
    )


def _from_pretrained(model_class: Any, name: str, config: Any, arch: str) -> nn.Module:
    """``from_pretrained`` saying what it loaded in lightseg's one line instead of transformers' report table."""
    from transformers.utils import logging as hf_logging

    from lightseg.models.backbones import hub_cache_only_when_unreachable, offline_hint

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with offline_hint(f"{arch} {name}", name), hub_cache_only_when_unreachable():
            model, info = model_class.from_pretrained(
                name, config=config, ignore_mismatched_sizes=True, output_loading_info=True
            )
    finally:
        hf_logging.set_verbosity(verbosity)
    state = model.state_dict()
    report = LoadReport(
        reshaped=sorted(key for key, *_ in info["mismatched_keys"]),
        missing=sorted(info["missing_keys"]),
        unexpected=sorted(info["unexpected_keys"]),
    )
    report.loaded = [k for k in state if k not in report.reshaped and k not in report.missing]
    rank_zero_info(report.describe(f"weights_backbone ({arch})", name, len(state)))
    return cast(nn.Module, model)


#: modules transformers builds but these models never use for segmentation (Swin's and DPT's ViT's final norm,
#: whose output the decoders do not read; DPT's first fusion layer's residual branch, which gets no residual)
_UNUSED = (r"(.*\.)?swin\.layernorm", r"dpt\.layernorm", r"neck\.fusion_stage\.layers\.0\.residual_layer1")


def _drop_unused(model: nn.Module) -> None:
    """Replace unused modules by identities: parameters without a gradient stop DDP (and waste optimizer state)."""
    for name, _ in list(model.named_modules()):
        if any(re.fullmatch(pattern, name) for pattern in _UNUSED):
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, nn.Identity())


def build(
    arch: str, backbone: str, weights: str | None, num_classes: int, options: dict[str, Any]
) -> tuple[nn.Module, Family, int]:
    """The transformers architecture ``arch`` as a lightseg network, its family and its input size divisor."""
    family = FAMILIES[arch]
    try:
        import transformers
    except ImportError:
        raise LightsegError(f"arch {arch!r} needs transformers: pip install 'lightseg[transformers]'") from None
    from lightseg.models import hf_models

    config = family.config(backbone, num_classes, options)
    model_class = hf_models.AnySizeEomt if arch == "eomt" else getattr(transformers, family.model_class)
    if weights is None or (weights not in PRETRAINED and Path(weights).expanduser().is_file()):
        model = model_class(config)
        if weights is not None:  # the encoder's weights (e.g. an ImageNet Swin's), as for every arch
            encoder = model.get_submodule(family.encoder) if family.encoder else model
            load_weights_file(encoder, weights, f"weights_backbone ({arch} encoder)")
    elif weights in PRETRAINED and arch == "mask2former" and backbone in _RESNETS:
        # Mask2Former on a ResNet: no model released on the hub; its encoder starts from ImageNet, as the paper's
        model = model_class(config)
        encoder = model.get_submodule(family.encoder)
        backbone_class = transformers.AutoBackbone
        name = _RESNETS[backbone][1]
        loaded = _from_pretrained(backbone_class, name, config.backbone_config, f"{arch} encoder")
        encoder.load_state_dict(loaded.state_dict())
    else:
        source = Path(backbone if weights in PRETRAINED else weights).expanduser()
        if weights not in PRETRAINED and not source.is_dir():
            raise LightsegError(
                f"weights_backbone {weights!r} is neither 'pretrained' (the weights of {backbone!r}), a folder written "
                "by save_pretrained, a weights file (.pt/.pth/.ckpt/.safetensors) nor null; fix the value"
            )
        if source.is_dir() and not [*source.glob("*.safetensors"), *source.glob("*.bin")]:
            raise LightsegError(
                f"weights_backbone: the folder {str(source)!r} holds a configuration but no weights "
                "(model.safetensors); save the model with save_pretrained, or set weights_backbone: null to start "
                "from random weights"
            )
        name = str(source) if source.is_dir() else backbone
        model = _from_pretrained(model_class, name, config, arch)
    _drop_unused(model)
    net: nn.Module
    if arch == "eomt":
        net = hf_models.EomtSegmenter(model)
    elif family.query:
        net = hf_models.QuerySegmenter(model)
    else:
        net = hf_models.PixelSegmenter(model)
    return net, family, family.size_divisor(config)
