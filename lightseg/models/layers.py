"""The depth of each backbone parameter, for layer-wise learning-rate decay.

timm's models know their own layers (``group_matcher``: the stem, each block or stage, the
final norm); timm's layer-decay optimiser groups parameters by it, and so does lightseg. smp
builds a timm backbone either whole (DPT's ViT) or as timm's ``features_only`` wrapper, whose
module names flatten the first level (``stages.0`` -> ``stages_0``): the wrapper's names are
matched to the whole model's by undoing that.
"""

from __future__ import annotations

import re

import torch
from torch import nn


def _layer_map(model: nn.Module, names: list[str]) -> dict[str, int]:
    from timm.models import group_parameters

    # coarse: a ViT by block (BEiT, DINOv2), a ConvNeXt or Swin by stage (as their segmentation recipes)
    matcher = model.group_matcher(coarse=True)  # type: ignore[operator]
    layers: dict[str, int] = group_parameters(model, matcher, reverse=True)
    return {name: layers[name] for name in names if name in layers}


def _whole_model(wrapper: nn.Module) -> nn.Module | None:
    """The full timm model a ``features_only`` wrapper was cut from, built on the meta device (no memory)."""
    import timm

    config = getattr(wrapper, "pretrained_cfg", None) or {}
    name = config.get("architecture")
    if not name:
        return None
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False)


def _unflatten(name: str) -> str:
    # timm's feature wrappers name first-level children of a Sequential "stages_0" for "stages.0"
    return re.sub(r"^([A-Za-z]+)_(\d+)\.", r"\1.\2.", name)


def timm_layer_ids(root: nn.Module, names: list[str]) -> dict[str, int] | None:
    """Layer index of each of ``names`` (parameters of ``root``), or ``None`` unless timm's layers cover them all.

    The index counts from the input (0: the stem / patch embedding); what follows the last
    block (a final norm) is deepest.
    """
    found: dict[str, int] = {}
    placed: list[str] = []  # modules whose parameters are placed: their children are not searched again
    for prefix, module in root.named_modules():
        if any(prefix.startswith(done + ".") for done in placed):
            continue
        inner = [n[len(prefix) + 1 :] for n in names if n.startswith(prefix + ".")] if prefix else list(names)
        if not inner:
            continue
        if callable(getattr(module, "group_matcher", None)):
            layers = _layer_map(module, inner)
        elif hasattr(module, "feature_info") and getattr(module, "pretrained_cfg", None):
            whole = _whole_model(module)
            if whole is None or not callable(getattr(whole, "group_matcher", None)):
                continue
            mapped = {_unflatten(n): n for n in inner}
            layers = {mapped[k]: v for k, v in _layer_map(whole, list(mapped)).items()}
        else:
            continue
        if layers:
            found.update({f"{prefix}.{n}" if prefix else n: layer for n, layer in layers.items()})
            placed.append(prefix)
    return found if set(found) == set(names) else None
