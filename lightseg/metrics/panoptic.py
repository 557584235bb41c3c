"""Panoptic quality (PQ, SQ, RQ; Kirillov et al., CVPR 2019), counted as the COCO panoptic evaluator counts it.

A panoptic map gives each pixel a segment id (0: void); each segment has a category and,
in the ground truth, a crowd flag. Per image and category, a predicted and a ground-truth
segment of that category match when their IoU exceeds 0.5 (so each matches at most once),
where the IoU leaves out the predicted pixels that lie on void ground truth. Unmatched
ground-truth segments are false negatives, except crowd regions. An unmatched predicted
segment is a false positive unless more than half of it lies on void ground truth or on the
crowd region of its own category. Summed over the data set per category:
``PQ = sum IoU(TP) / (TP + FP/2 + FN/2)``, ``SQ = sum IoU(TP) / TP``, ``RQ = TP / (TP + FP/2 + FN/2)``;
the overall, things and stuff numbers are the means over the categories that occur
(TP + FP + FN > 0). Two details follow the reference evaluator (panopticapi) exactly: a
ground-truth segment's area is the ``area`` of its annotation where given, and where an
image has several crowd segments of one category (the format merges them into one) the last
one counts. Where no category of a kind (things or stuff) occurs, its means are 0 with ``n`` 0
(panopticapi divides by zero there).

:class:`PanopticQuality` accumulates these counts over a split (summed across processes);
:func:`pq_compute` scores files on disk with panopticapi's signature and result layout.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from lightseg.coco_masks import id_to_rgb, read_segment_ids, rgb_to_id
from lightseg.errors import LightsegError

#: segment id of unlabelled pixels
VOID = 0
#: ids are below 256**3 (an RGB PNG): one integer holds a (ground truth, prediction) pair
_PAIR = 256**3


@dataclass(frozen=True)
class PanopticCounts:
    """Per category (in the order of the categories given): summed IoU of matches, TP, FP, FN."""

    iou: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray


def _areas(ids: np.ndarray) -> dict[int, int]:
    values, counts = np.unique(ids, return_counts=True)
    return dict(zip(values.tolist(), counts.tolist(), strict=True))


def image_counts(
    gt_ids: np.ndarray,
    gt_segments: Sequence[Mapping[str, Any]],
    pred_ids: np.ndarray,
    pred_segments: Sequence[Mapping[str, Any]],
    category_index: Mapping[int, int],
    where: str = "image",
) -> PanopticCounts:
    """The PQ counts of one image, per category (``category_index`` maps category ids to positions).

    ``*_ids`` are ``[H, W]`` maps of segment ids; ``*_segments`` the segments' ``id``,
    ``category_id`` and, for the ground truth, ``iscrowd`` and optionally ``area``. A
    predicted id missing from its segments (or a segment missing from the map), a category
    not in ``category_index``, or maps of different sizes raise a :class:`LightsegError`
    naming ``where``.
    """
    if gt_ids.shape != pred_ids.shape:
        raise LightsegError(f"{where}: the prediction is {pred_ids.shape}, the ground truth {gt_ids.shape}")
    size = len(category_index)
    iou, tp, fp, fn = np.zeros(size), np.zeros(size, np.int64), np.zeros(size, np.int64), np.zeros(size, np.int64)
    gt = {int(s["id"]): s for s in gt_segments}
    pred = {int(s["id"]): s for s in pred_segments}
    pred_area = _areas(pred_ids)
    unknown = sorted(set(pred_area) - set(pred) - {VOID})
    if unknown:
        raise LightsegError(f"{where}: the prediction's map holds segment ids {unknown[:5]} that its segments lack")
    absent = sorted(set(pred) - set(pred_area))
    if absent:
        raise LightsegError(f"{where}: the predicted segments {absent[:5]} have no pixel in the prediction's map")
    for segments, what in ((gt, "ground truth"), (pred, "prediction")):
        foreign = sorted({int(s["category_id"]) for s in segments.values()} - set(category_index))
        if foreign:
            raise LightsegError(f"{where}: the {what} has segments of unknown categories {foreign[:5]}")
    gt_area = {k: int(s["area"]) if s.get("area") is not None else 0 for k, s in gt.items()}
    if any(s.get("area") is None for s in gt.values()):
        counted = _areas(gt_ids)
        gt_area = {k: gt_area[k] if gt[k].get("area") is not None else counted.get(k, 0) for k in gt}

    pairs = gt_ids.astype(np.uint64) * _PAIR + pred_ids.astype(np.uint64)
    keys, overlaps = np.unique(pairs, return_counts=True)
    overlap = {(int(k // _PAIR), int(k % _PAIR)): int(n) for k, n in zip(keys, overlaps, strict=True)}
    on_void = {p: n for (g, p), n in overlap.items() if g == VOID}

    matched_gt: set[int] = set()
    matched_pred: set[int] = set()
    for (g, p), inter in overlap.items():
        if g not in gt or p not in pred or gt[g].get("iscrowd", 0) == 1:
            continue
        category = int(gt[g]["category_id"])
        if category != int(pred[p]["category_id"]):
            continue
        union = pred_area[p] + gt_area[g] - inter - on_void.get(p, 0)
        value = inter / union
        if value > 0.5:
            index = category_index[category]
            tp[index] += 1
            iou[index] += value
            matched_gt.add(g)
            matched_pred.add(p)

    crowd: dict[int, int] = {}
    for g, segment in gt.items():
        if g in matched_gt:
            continue
        if segment.get("iscrowd", 0) == 1:
            crowd[int(segment["category_id"])] = g  # several of one category: the last counts (see above)
            continue
        fn[category_index[int(segment["category_id"])]] += 1
    for p, segment in pred.items():
        if p in matched_pred:
            continue
        category = int(segment["category_id"])
        ignored = on_void.get(p, 0)
        if category in crowd:
            ignored += overlap.get((crowd[category], p), 0)
        if ignored / pred_area[p] > 0.5:
            continue
        fp[category_index[category]] += 1
    return PanopticCounts(iou, tp, fp, fn)


def summarize(counts: PanopticCounts, categories: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Panopticapi's result layout from summed counts: ``All``, ``Things``, ``Stuff`` and ``per_class``.

    Each of the first three is ``{"pq", "sq", "rq", "n"}`` (means over the ``n`` categories that
    occur); ``per_class`` maps each category id to its ``{"pq", "sq", "rq"}`` (zeros where it
    does not occur).
    """
    per_class: dict[int, dict[str, float]] = {}
    results: dict[str, Any] = {}
    for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        pq = sq = rq = 0.0
        n = 0
        for index, category in enumerate(categories):
            if isthing is not None and bool(category.get("isthing", 0) == 1) != isthing:
                continue
            tp, fp, fn = int(counts.tp[index]), int(counts.fp[index]), int(counts.fn[index])
            iou = float(counts.iou[index])
            if tp + fp + fn == 0:
                scores = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
            else:
                n += 1
                denominator = tp + 0.5 * fp + 0.5 * fn
                scores = {"pq": iou / denominator, "sq": iou / tp if tp else 0.0, "rq": tp / denominator}
                pq, sq, rq = pq + scores["pq"], sq + scores["sq"], rq + scores["rq"]
            if isthing is None:
                per_class[int(category["id"])] = scores
        results[name] = {"pq": pq / n if n else 0.0, "sq": sq / n if n else 0.0, "rq": rq / n if n else 0.0, "n": n}
    results["per_class"] = per_class
    return results


def _read_json(path: str | Path) -> dict[str, Any]:
    try:
        content = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LightsegError(f"{path}: no such file") from None
    except json.JSONDecodeError as err:
        raise LightsegError(f"{path}: not valid JSON (line {err.lineno}): {err.msg}") from None
    if not isinstance(content, dict) or not isinstance(content.get("annotations"), list):
        raise LightsegError(f"{path}: not a COCO panoptic file (no 'annotations' list)")
    return content


def pq_compute(
    gt_json_file: str | Path,
    pred_json_file: str | Path,
    gt_folder: str | Path | None = None,
    pred_folder: str | Path | None = None,
) -> dict[str, Any]:
    """PQ, SQ and RQ of COCO panoptic predictions on disk, as panopticapi's ``pq_compute`` gives them.

    Args:
        gt_json_file: the ground truth's JSON (``categories`` with ``isthing``, ``annotations``
            with ``image_id``, ``file_name`` and ``segments_info``).
        pred_json_file: the predictions' JSON, one annotation per ground-truth image.
        gt_folder: the ground truth's PNG folder (default: the JSON's path without ``.json``).
        pred_folder: the predictions' PNG folder (default: likewise).

    Returns:
        ``{"All": {"pq", "sq", "rq", "n"}, "Things": ..., "Stuff": ..., "per_class": {category id: {...}}}``
    """
    gt_json, pred_json = _read_json(gt_json_file), _read_json(pred_json_file)
    gt_dir = Path(gt_folder) if gt_folder is not None else Path(gt_json_file).with_suffix("")
    pred_dir = Path(pred_folder) if pred_folder is not None else Path(pred_json_file).with_suffix("")
    categories = list(gt_json.get("categories") or [])
    category_index = {int(c["id"]): i for i, c in enumerate(categories)}
    predictions = {a["image_id"]: a for a in pred_json["annotations"]}
    total = PanopticCounts(np.zeros(len(categories)), *(np.zeros(len(categories), np.int64) for _ in range(3)))
    for truth in gt_json["annotations"]:
        image = truth["image_id"]
        if image not in predictions:
            raise LightsegError(f"{pred_json_file}: no prediction for image {image!r} ({truth['file_name']})")
        prediction = predictions[image]
        counts = image_counts(
            read_segment_ids(gt_dir / truth["file_name"], "a panoptic PNG named in the JSON's file_name"),
            truth["segments_info"],
            read_segment_ids(pred_dir / prediction["file_name"], "a panoptic PNG named in the JSON's file_name"),
            prediction["segments_info"],
            category_index,
            where=str(pred_dir / prediction["file_name"]),
        )
        total = PanopticCounts(total.iou + counts.iou, total.tp + counts.tp, total.fp + counts.fp, total.fn + counts.fn)
    return summarize(total, categories)


class PanopticQuality(Metric):
    """PQ, SQ and RQ over a split: the counts of :func:`image_counts` per category, summed across processes.

    Args:
        categories: the data set's categories: ``id``, ``name``, ``isthing`` (COCO panoptic's).

    :meth:`update` takes, per image, a ``(ids, segments)`` pair for the prediction and one for the
    ground truth (``ids`` an ``[H, W]`` tensor or array of segment ids, ``segments`` their
    ``id``/``category_id``/``iscrowd``/``area`` mappings); :meth:`compute` returns ``pq``, ``sq``,
    ``rq``, ``pq_things``, ``sq_things``, ``rq_things``, ``pq_stuff``, ``sq_stuff``, ``rq_stuff``
    and the per-class vectors ``pq_per_class``, ``sq_per_class``, ``rq_per_class`` (NaN where a
    category does not occur).
    """

    full_state_update = False
    iou: torch.Tensor
    tp: torch.Tensor
    fp: torch.Tensor
    fn: torch.Tensor

    def __init__(self, categories: Sequence[Mapping[str, Any]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.categories = [dict(c) for c in categories]
        self.category_index = {int(c["id"]): i for i, c in enumerate(self.categories)}
        size = len(self.categories)
        self.add_state("iou", torch.zeros(size, dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("tp", "fp", "fn"):
            self.add_state(name, torch.zeros(size, dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self,
        preds: Sequence[tuple[Any, Sequence[Mapping[str, Any]]]],
        targets: Sequence[tuple[Any, Sequence[Mapping[str, Any]]]],
    ) -> None:
        """Add the counts of each (prediction, ground truth) pair of images."""
        for (pred_ids, pred_segments), (gt_ids, gt_segments) in zip(preds, targets, strict=True):
            counts = image_counts(_numpy(gt_ids), gt_segments, _numpy(pred_ids), pred_segments, self.category_index)
            self.iou += torch.from_numpy(counts.iou).to(self.iou)
            self.tp += torch.from_numpy(counts.tp).to(self.tp)
            self.fp += torch.from_numpy(counts.fp).to(self.fp)
            self.fn += torch.from_numpy(counts.fn).to(self.fn)

    def counts(self) -> PanopticCounts:
        """The summed counts (after synchronisation, inside :meth:`compute`)."""
        return PanopticCounts(*(t.detach().cpu().numpy() for t in (self.iou, self.tp, self.fp, self.fn)))

    def compute(self) -> dict[str, torch.Tensor]:
        counts = self.counts()
        summary = summarize(counts, self.categories)
        values = {}
        for name, suffix in (("All", ""), ("Things", "_things"), ("Stuff", "_stuff")):
            for score in ("pq", "sq", "rq"):
                values[f"{score}{suffix}"] = torch.tensor(float(summary[name][score]), dtype=torch.float64)
        occurs = torch.from_numpy(counts.tp + counts.fp + counts.fn) > 0
        for score in ("pq", "sq", "rq"):
            per_class = torch.tensor([summary["per_class"][int(c["id"])][score] for c in self.categories])
            values[f"{score}_per_class"] = torch.where(occurs, per_class.double(), torch.nan)
        return values


def _numpy(ids: Any) -> np.ndarray:
    return ids.detach().cpu().numpy() if isinstance(ids, torch.Tensor) else np.asarray(ids)


__all__ = [
    "VOID",
    "PanopticCounts",
    "PanopticQuality",
    "id_to_rgb",
    "image_counts",
    "pq_compute",
    "rgb_to_id",
    "summarize",
]
