"""Pretrained R-CNN predictors fitted to a data set's classes: kept rows where the classes match, fresh ones where not.

torchvision's COCO weights predict 91 class slots; a data set has its own classes. Where every
class of the data is one of the weights' (by name), the box and mask predictors keep exactly
those rows, so a COCO model evaluates and fine-tunes on COCO, or a subset of it, as trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchvision.models import detection as tvd
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor


def coco_categories(arch: str) -> list[str]:
    """The class names of torchvision's COCO weights for ``arch``'s family, by predictor slot."""
    family = tvd.KeypointRCNN_ResNet50_FPN_Weights if arch.startswith("keypoint") else tvd.MaskRCNN_ResNet50_FPN_Weights
    return list(family.COCO_V1.meta["categories"])


def predictor_classes(model: nn.Module) -> int:
    """Number of class slots of the box predictor (background included)."""
    heads: Any = model.roi_heads
    return int(heads.box_predictor.cls_score.out_features)


def fit_predictors(model: nn.Module, slots: Sequence[int] | None, num_classes: int) -> None:
    """Give the box (and mask) predictors ``num_classes`` outputs.

    With ``slots`` (the pretrained predictor's slot of each class, background first) the
    pretrained rows of those classes are kept, so a COCO model evaluates and fine-tunes on
    COCO, or on any subset of its classes, as trained; without, fresh predictors.
    """
    heads: Any = model.roi_heads
    box, mask = heads.box_predictor, getattr(heads, "mask_predictor", None)
    fresh_box = FastRCNNPredictor(box.cls_score.in_features, num_classes).to(box.cls_score.weight.device)
    fresh_mask = None
    if mask is not None:
        fresh_mask = MaskRCNNPredictor(mask.conv5_mask.in_channels, mask.conv5_mask.out_channels, num_classes)
        fresh_mask = fresh_mask.to(mask.mask_fcn_logits.weight.device)
    if slots is not None:
        index = torch.as_tensor(list(slots), dtype=torch.long, device=box.cls_score.weight.device)
        with torch.no_grad():
            fresh_box.cls_score.weight.copy_(box.cls_score.weight[index])
            fresh_box.cls_score.bias.copy_(box.cls_score.bias[index])
            deltas = (index[:, None] * 4 + torch.arange(4, device=index.device)).flatten()
            fresh_box.bbox_pred.weight.copy_(box.bbox_pred.weight[deltas])
            fresh_box.bbox_pred.bias.copy_(box.bbox_pred.bias[deltas])
            if mask is not None and fresh_mask is not None:
                fresh_mask.conv5_mask.load_state_dict(mask.conv5_mask.state_dict())
                fresh_mask.mask_fcn_logits.weight.copy_(mask.mask_fcn_logits.weight[index])
                fresh_mask.mask_fcn_logits.bias.copy_(mask.mask_fcn_logits.bias[index])
    heads.box_predictor = fresh_box
    if fresh_mask is not None:
        heads.mask_predictor = fresh_mask


def fit_predictors_by_name(
    model: nn.Module, pretrained: Sequence[str], class_names: Sequence[str] | None, num_classes: int, source: str
) -> None:
    """Fit pretrained predictors (their slots named ``pretrained``) to ``num_classes`` classes, by name.

    When every class of ``class_names`` (background first) is one of the pretrained slots, the
    predictors keep exactly those rows; otherwise they start fresh. One line says which, naming
    the weights' ``source``.
    """
    names = list(class_names[1:]) if class_names is not None and len(class_names) == num_classes else None
    missing = [n for n in names if n not in pretrained] if names is not None else None
    if names is not None and not missing:
        fit_predictors(model, [0] + [list(pretrained).index(n) for n in names], num_classes)
        rank_zero_info(f"weights: kept the {source} predictors' rows of the data's {len(names)} classes")
        return
    fit_predictors(model, None, num_classes)
    why = (
        f"{', '.join(repr(n) for n in missing[:3])} not among its {len(pretrained) - 1} classes"
        if missing
        else "no class names to match them by"
    )
    rank_zero_info(f"weights: fresh box/mask predictors for {num_classes} classes ({source} predictor: {why})")
