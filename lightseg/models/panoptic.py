"""Panoptic models: Panoptic FPN on lightseg's Mask R-CNN, and the merges that turn outputs into segments.

Panoptic FPN (Kirillov, Girshick, He and Dollár, CVPR 2019) adds a semantic branch to Mask
R-CNN's FPN: each of P2-P5 is brought to 1/4 scale by 3x3 convolutions (128 channels, GroupNorm,
ReLU) and 2x bilinear upsamplings, the four are summed and a 1x1 convolution classifies each
pixel as one of the stuff classes or "a thing" (Detectron2's semantic head). Training adds its
cross-entropy, weighted 0.5 (Detectron2's Panoptic FPN configs), to Mask R-CNN's losses.

Two merges make a panoptic map (segment ids, 0 void, and each segment's class):

- :func:`merge_instances_and_stuff`, the paper's heuristic for Panoptic FPN: instances by
  descending score above a score threshold, each dropped when more than ``overlap_threshold`` of
  its mask is already taken; then the stuff classes of the semantic map on what is left, each
  kept where it covers at least ``stuff_area`` pixels;
- :func:`merge_queries`, Mask2Former's (and EoMT's) panoptic inference: the queries whose best
  class is not "no object" and scores above ``score_threshold``, each pixel given to the query
  with the highest score x mask probability, a query kept where at least ``overlap_threshold``
  of its own mask (probability >= 0.5) is still its own; the stuff queries of one class merged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

#: published defaults: Panoptic FPN (Detectron2's ``MODEL.PANOPTIC_FPN.COMBINE``) and Mask2Former's test settings
FPN_SCORE_THRESHOLD, FPN_OVERLAP_THRESHOLD, FPN_STUFF_AREA = 0.5, 0.5, 4096
QUERY_SCORE_THRESHOLD, QUERY_OVERLAP_THRESHOLD = 0.8, 0.8


@dataclass  # not frozen: Lightning moves step outputs between devices field by field
class PanopticPrediction:
    """One image's panoptic map.

    ``segments`` ``[H, W]`` holds segment numbers (1..N, 0 void); per segment its class label,
    whether it is a thing, and its score (1 for stuff regions of a semantic map).
    """

    segments: torch.Tensor
    labels: list[int]
    isthing: list[bool]
    scores: list[float]

    def segment_info(self) -> list[dict[str, Any]]:
        """The segments as COCO panoptic's ``segments_info`` entries (``category_id`` = class label)."""
        return [
            {"id": i, "category_id": label, "isthing": thing, "score": score}
            for i, (label, thing, score) in enumerate(zip(self.labels, self.isthing, self.scores, strict=True), 1)
        ]


def merge_instances_and_stuff(
    masks: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    stuff_map: torch.Tensor,
    stuff_labels: Sequence[int],
    score_threshold: float = FPN_SCORE_THRESHOLD,
    overlap_threshold: float = FPN_OVERLAP_THRESHOLD,
    stuff_area: int = FPN_STUFF_AREA,
) -> PanopticPrediction:
    """Panoptic FPN's merge of one image.

    Args:
        masks: the instances' binary masks ``[N, H, W]``.
        scores: their scores ``[N]``.
        labels: their class labels ``[N]`` (the data's).
        stuff_map: the semantic branch's labels ``[H, W]``: 0 "a thing", ``k`` the ``k``-th stuff class.
        stuff_labels: the class label of each stuff class (``stuff_labels[k - 1]``).
        score_threshold: instances scoring less are left out.
        overlap_threshold: an instance more than this fraction of whose mask is taken is left out.
        stuff_area: a stuff region of fewer pixels (after the instances) is left out.
    """
    segments = torch.zeros(stuff_map.shape, dtype=torch.int32, device=stuff_map.device)
    out_labels: list[int] = []
    isthing: list[bool] = []
    out_scores: list[float] = []
    for index in torch.argsort(scores, descending=True).tolist():
        score = float(scores[index])
        if score < score_threshold:
            break
        mask = masks[index].bool()
        area = int(mask.sum())
        if area == 0:
            continue
        taken = int((mask & (segments > 0)).sum())
        if taken / area > overlap_threshold:
            continue
        mask = mask & (segments == 0)
        if not bool(mask.any()):
            continue
        out_labels.append(int(labels[index]))
        isthing.append(True)
        out_scores.append(score)
        segments[mask] = len(out_labels)
    free = segments == 0
    for stuff in torch.unique(stuff_map).tolist():
        if stuff == 0:
            continue
        mask = (stuff_map == stuff) & free
        if int(mask.sum()) < stuff_area:
            continue
        out_labels.append(int(stuff_labels[stuff - 1]))
        isthing.append(False)
        out_scores.append(1.0)
        segments[mask] = len(out_labels)
    return PanopticPrediction(segments, out_labels, isthing, out_scores)


def merge_queries(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    thing_labels: Sequence[int] | set[int],
    score_threshold: float = QUERY_SCORE_THRESHOLD,
    overlap_threshold: float = QUERY_OVERLAP_THRESHOLD,
) -> PanopticPrediction:
    """Mask2Former's panoptic inference of one image.

    Args:
        class_logits: ``[Q, K + 1]`` class logits of the queries (the last: no object).
        mask_logits: ``[Q, H, W]`` mask logits at the image's size.
        thing_labels: the class labels that are things (the others are stuff, one segment per class).
        score_threshold: queries whose class probability is not above it are left out.
        overlap_threshold: a query is kept where at least this fraction of its mask is its own.
    """
    things = set(thing_labels)
    probs = class_logits.float().softmax(-1)
    scores, labels = probs.max(-1)
    keep = (labels != class_logits.shape[-1] - 1) & (scores > score_threshold)
    scores, labels, masks = scores[keep], labels[keep], mask_logits[keep].float().sigmoid()
    segments = torch.zeros(mask_logits.shape[-2:], dtype=torch.int32, device=mask_logits.device)
    out_labels: list[int] = []
    isthing: list[bool] = []
    out_scores: list[float] = []
    if len(labels) == 0:
        return PanopticPrediction(segments, out_labels, isthing, out_scores)
    owner = (scores[:, None, None] * masks).argmax(0)
    stuff_segment: dict[int, int] = {}
    for k, label in enumerate(labels.tolist()):
        own = owner == k
        original = masks[k] >= 0.5
        mask = own & original
        own_area, original_area = int(own.sum()), int(original.sum())
        if own_area == 0 or original_area == 0 or not bool(mask.any()):
            continue
        if own_area / original_area < overlap_threshold:
            continue
        thing = label in things
        if not thing and label in stuff_segment:
            segments[mask] = stuff_segment[label]
            continue
        out_labels.append(label)
        isthing.append(thing)
        out_scores.append(float(scores[k]))
        segments[mask] = len(out_labels)
        if not thing:
            stuff_segment[label] = len(out_labels)
    return PanopticPrediction(segments, out_labels, isthing, out_scores)


class SemanticFPNHead(nn.Module):
    """Panoptic FPN's semantic branch: P2-P5 brought to 1/4 scale, summed and classified per pixel.

    Args:
        in_channels: the FPN's channels (256).
        num_classes: the stuff classes plus one for "a thing".
        channels: the branch's width (128 in the paper).
        levels: FPN levels read, from stride 4 (P2) up.
        groups: GroupNorm groups.
    """

    def __init__(self, in_channels: int, num_classes: int, channels: int = 128, levels: int = 4, groups: int = 32):
        super().__init__()
        self.scale_heads = nn.ModuleList()
        for level in range(levels):
            layers: list[nn.Module] = []
            for k in range(max(1, level)):
                conv = nn.Conv2d(in_channels if k == 0 else channels, channels, 3, padding=1, bias=False)
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                layers += [conv, nn.GroupNorm(groups, channels), nn.ReLU(inplace=True)]
                if level > 0:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*layers))
        self.predictor = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(cast(torch.Tensor, self.predictor.bias))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Logits at the first level's scale (1/4) of the FPN's ``features`` (P2 first)."""
        summed = self.scale_heads[0](features[0])
        for level, head in enumerate(self.scale_heads):  # (TorchScript takes no slice of a ModuleList)
            if level > 0:
                summed = summed + head(features[level])
        logits: torch.Tensor = self.predictor(summed)  # (no typing.cast: TorchScript compiles this)
        return logits


class PanopticFPN(nn.Module):
    """A torchvision Mask R-CNN with Panoptic FPN's semantic branch on its FPN.

    Args:
        detector: a torchvision ``MaskRCNN`` on a ResNet FPN (levels ``0``-``3`` at strides 4-32).
        num_stuff: stuff classes (the branch predicts them and "a thing").

    In training, :meth:`forward` returns Mask R-CNN's losses and the branch's logits; in
    evaluation, the detections and the branch's logits, both at each image's own size.
    """

    def __init__(self, detector: nn.Module, num_stuff: int) -> None:
        super().__init__()
        self.detector = detector
        backbone: Any = detector.backbone
        self.semantic_head = SemanticFPNHead(int(backbone.out_channels), num_stuff + 1)

    @property
    def backbone(self) -> nn.Module:
        """The detector's backbone (ResNet body and FPN): what ``head_lr_mult`` and freezing call backbone."""
        return cast(nn.Module, self.detector.backbone)

    def forward(
        self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None
    ) -> tuple[Any, list[torch.Tensor]]:
        """Mask R-CNN's losses (training) or detections (evaluation), and the semantic logits of each image.

        The logits ``[S + 1, H, W]`` are at each image's own size (the detector resizes and pads its
        input; the branch's output is cropped and resized back).
        """
        detector: Any = self.detector
        original_sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
        image_list, targets = detector.transform(images, targets)
        features = detector.backbone(image_list.tensors)
        proposals, proposal_losses = detector.rpn(image_list, features, targets)
        detections, detector_losses = detector.roi_heads(features, proposals, image_list.image_sizes, targets)
        levels = list(features.values())[:4]
        logits = self.semantic_head(levels)
        logits = F.interpolate(logits, size=image_list.tensors.shape[-2:], mode="bilinear", align_corners=False)
        semantic = [
            F.interpolate(logits[i : i + 1, :, :height, :width], size=original, mode="bilinear", align_corners=False)[0]
            for i, ((height, width), original) in enumerate(zip(image_list.image_sizes, original_sizes, strict=True))
        ]
        if self.training:
            return {**detector_losses, **proposal_losses}, semantic
        return detector.transform.postprocess(detections, image_list.image_sizes, original_sizes), semantic
