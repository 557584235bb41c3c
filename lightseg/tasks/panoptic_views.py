"""What panoptic targets and predictions become for the metrics: PQ's segments, the semantic and instance views.

Also the padding that batches images of different sizes for a query model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from lightseg.models.panoptic import PanopticPrediction


def ground_truth(target: dict[str, Any]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """A panoptic target as PQ's ``(ids, segments)``: segment ``n`` has id ``n`` and its class as category."""
    segments = target["segments"]
    present = set(torch.unique(segments).tolist())
    info = [
        {"id": n, "category_id": int(label), "iscrowd": int(crowd)}
        for n, (label, crowd) in enumerate(zip(target["labels"].tolist(), target["iscrowd"].tolist(), strict=True), 1)
        if n in present
    ]
    return segments, info


def thing_detections(prediction: PanopticPrediction, things: Sequence[int]) -> dict[str, torch.Tensor]:
    """The things of a panoptic prediction as detections (``boxes``, ``labels`` 1..T, ``scores``, ``masks``)."""
    rank = {label: k + 1 for k, label in enumerate(things)}
    numbers = [n for n, thing in enumerate(prediction.isthing, start=1) if thing]
    segments = prediction.segments
    masks = torch.stack([segments == n for n in numbers]) if numbers else segments.new_zeros((0, *segments.shape))
    boxes = []
    for mask in masks.bool():
        ys, xs = mask.nonzero(as_tuple=True)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if len(xs) else [0, 0, 0, 0])
    return {
        "boxes": torch.tensor([[float(v) for v in box] for box in boxes]).reshape(-1, 4),
        "labels": torch.tensor([rank[prediction.labels[n - 1]] for n in numbers], dtype=torch.long),
        "scores": torch.tensor([prediction.scores[n - 1] for n in numbers], dtype=torch.float),
        "masks": masks[:, None].float(),
    }


def semantic_view(prediction: PanopticPrediction, num_classes: int) -> torch.Tensor:
    """Each pixel's class in a panoptic prediction; pixels left void get ``num_classes`` (no class)."""
    table = torch.tensor([num_classes, *prediction.labels], dtype=torch.long, device=prediction.segments.device)
    return table[prediction.segments.long()]


def pad_batch(
    images: Sequence[torch.Tensor], maps: Sequence[torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (and segment maps, padded with void) of different sizes as one batch, padded at the bottom/right."""
    height = max(int(i.shape[-2]) for i in images)
    width = max(int(i.shape[-1]) for i in images)

    def pad(x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (0, width - x.shape[-1], 0, height - x.shape[-2]))

    stacked = torch.stack([pad(i) for i in images])
    return stacked, torch.stack([pad(m.long()) for m in maps]) if maps is not None else stacked.new_zeros(0)
