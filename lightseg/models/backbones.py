"""Backbones and pretrained weights: torchvision ResNets with atrous convolution, VGG16.

Every pretrained download goes through :func:`pretrained`, so that an offline machine gets
one clear message instead of a socket traceback.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models import WeightsEnum

from lightseg.errors import LightsegError
from lightseg.weights import check_weights_option, is_weights_file, load_weights_file

#: ``"imagenet"`` (torchvision's / smp's pretrained weights) or the path of a local weights file
WeightsName = str

# The ImageNet weights torchvision's own segmentation builders use for their backbones.
IMAGENET_WEIGHTS: dict[str, WeightsEnum] = {
    "resnet50": tvm.ResNet50_Weights.IMAGENET1K_V1,
    "resnet101": tvm.ResNet101_Weights.IMAGENET1K_V1,
    "vgg16": tvm.VGG16_Weights.IMAGENET1K_V1,
}
ATROUS_RESNETS = ("resnet50", "resnet101")


def torchvision_weights(backbone: str, weights: WeightsName | None) -> WeightsEnum | None:
    """The torchvision weights enum for ``backbone``; ``None`` for from scratch or a local file (loaded after)."""
    check_weights_option("weights_backbone", weights, ("imagenet",))
    if weights is None or is_weights_file(weights):
        return None
    return IMAGENET_WEIGHTS[backbone]


def load_backbone_file(module: nn.Module, weights: WeightsName | None, what: str) -> None:
    """Load a local ``weights_backbone`` file into ``module`` (nothing for ``imagenet`` / ``None``)."""
    if is_weights_file(weights):
        assert weights is not None
        load_weights_file(module, weights, f"weights_backbone ({what})")


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the Hugging Face hub cannot be reached from here (``None``: it can, or a proxy decides)."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None  # only the proxy knows: let the download try
    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError as err:
        return f"{host} cannot be reached: {err}"
    return None


@contextmanager
def hub_cache_only_when_unreachable() -> Iterator[None]:
    """Hugging Face downloads read the local cache only while the hub cannot be reached.

    Offline, the hub client otherwise retries for ~25 s before it gives up (seen with smp's
    encoders); in offline mode it answers from the cache at once, or fails at once.
    """
    if hub_unreachable() is None:
        yield
        return
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True  # read at each call by huggingface_hub's is_offline_mode()
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


@contextmanager
def offline_hint(what: str, weights: WeightsEnum | str | None) -> Iterator[None]:
    """Turn a failed weight download into a message that says how to fix it."""
    try:
        yield
    except OSError as err:  # URLError, ConnectionError, a hub's offline error, a bad cache file
        if isinstance(weights, WeightsEnum):
            where = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
            how = f"download {weights.url} on a machine with internet and copy it to {where}"
        else:
            how = "populate the Hugging Face cache ($HF_HOME) on a machine with internet and copy it here"
        raise LightsegError(
            f"could not load the pretrained weights for {what} ({type(err).__name__}: {err}). "
            f"To use them offline, {how}; or set `weights_backbone: null` to train from scratch."
        ) from err


def atrous_resnet(
    name: str,
    output_stride: Literal[8, 16],
    weights: WeightsName | None,
    multi_grid: Sequence[int] | None = None,
) -> nn.Module:
    """A torchvision ResNet-50/101 whose last stages use atrous convolution.

    Args:
        name: ``resnet50`` or ``resnet101``.
        output_stride: 16 dilates ``layer4`` by 2; 8 dilates ``layer3`` by 2 and ``layer4`` by 4.
        weights: ``"imagenet"``, a local weights file or ``None``.
        multi_grid: DeepLab v3's unit rates for the three blocks of ``layer4`` (Sec. 3.2):
            block ``i`` gets dilation ``base * multi_grid[i]``. ``None`` keeps torchvision's
            layout (first block at the previous dilation).
    """
    if name not in ATROUS_RESNETS:
        raise LightsegError(f"atrous backbone {name!r} is not available; valid choices: {', '.join(ATROUS_RESNETS)}")
    enum = torchvision_weights(name, weights)
    dilate = [False, False, True] if output_stride == 16 else [False, True, True]
    with offline_hint(f"{name} (ImageNet)", enum):
        resnet = getattr(tvm, name)(weights=enum, replace_stride_with_dilation=dilate)
    load_backbone_file(resnet, weights, name)
    if multi_grid is not None:
        base = 2 if output_stride == 16 else 4
        blocks = list(resnet.layer4)
        if len(multi_grid) != len(blocks):
            raise LightsegError(f"multi_grid needs {len(blocks)} rates for {name}'s layer4, got {list(multi_grid)}")
        for block, unit in zip(blocks, multi_grid, strict=True):
            rate = base * unit
            block.conv2.dilation = (rate, rate)
            block.conv2.padding = (rate, rate)
    return resnet


def vgg16_layers(
    weights: WeightsName | None,
) -> tuple[nn.Sequential, nn.Sequential, nn.Sequential, nn.Sequential]:
    """VGG16 split at pool3 / pool4 / pool5, plus its classifier (for fc6/fc7 weights)."""
    enum = torchvision_weights("vgg16", weights)
    with offline_hint("vgg16 (ImageNet)", enum):
        vgg = tvm.vgg16(weights=enum)
    load_backbone_file(vgg, weights, "vgg16")
    f = vgg.features
    return f[:17], f[17:24], f[24:31], vgg.classifier
