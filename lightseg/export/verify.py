"""Whether an exported model computes what PyTorch does: the file run by its own runtime, each output compared.

Semantic outputs agree within a tolerance relative to their scale and in at least
``LABEL_AGREEMENT`` of the labels; R-CNN detections are paired (equal-score detections may
come out in another order) and their boxes, labels, masks and keypoints compared. Detections
within ``SCORE_MARGIN`` of the score threshold or of the top-k cut are borderline: a float
difference may put them on one side only, so they are counted, not compared. An image on which
PyTorch itself is unstable (see :func:`_unstable`) is run but not compared.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lightseg.errors import LightsegError

#: tolerances of the comparison with PyTorch
RTOL, ATOL, LABEL_AGREEMENT, MASK_IOU = 1e-3, 1e-4, 0.999, 0.99
#: detections scoring less than this above the score threshold (or the top-k cut) are borderline
SCORE_MARGIN = 0.01


def require(module: str) -> Any:
    """``module``, or one line naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise LightsegError(f'ONNX export needs {module}: pip install "lightseg[export]"') from None


def run_exported(fmt: str, path: Path) -> Callable[[torch.Tensor], tuple[np.ndarray, ...]]:
    """A function image -> numpy outputs, running the ``onnx`` / ``torchscript`` / ``pt2`` file with its own runtime."""
    if fmt == "onnx":
        onnxruntime = require("onnxruntime")
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda image: tuple(session.run(None, {"image": image.numpy()}))
    module = torch.jit.load(str(path)) if fmt == "torchscript" else torch.export.load(str(path)).module()

    def run(image: torch.Tensor) -> tuple[np.ndarray, ...]:
        with torch.no_grad():
            out = module(image)
        return tuple(o.numpy() for o in (out if isinstance(out, tuple | list) else (out,)))

    return run


def _compare_semantic(ours: np.ndarray, theirs: np.ndarray, output: str) -> dict[str, Any]:
    if ours.shape != theirs.shape:
        return {"ok": False, "problem": f"output shape {theirs.shape}, PyTorch's {ours.shape}"}
    if output == "labels":
        agreement = float((ours == theirs).mean())
        return {"ok": agreement >= LABEL_AGREEMENT, "label_agreement": agreement}
    delta = float(np.abs(ours - theirs).max())
    agreement = float((ours.argmax(1) == theirs.argmax(1)).mean())
    # tolerance relative to the output's scale: float32 noise of ~1e-4 on a logit near 0 is not a difference
    close = delta <= ATOL + RTOL * float(np.abs(ours).max())
    return {"ok": close and agreement >= LABEL_AGREEMENT, "max_abs_diff": delta, "label_agreement": agreement}


def _compare_queries(ours: Sequence[np.ndarray], theirs: Sequence[np.ndarray]) -> dict[str, Any]:
    """A query model's class and mask logits: within the tolerance, the masks' signs on >= LABEL_AGREEMENT."""
    if any(a.shape != b.shape for a, b in zip(ours, theirs, strict=True)):
        return {
            "ok": False,
            "problem": f"output shapes {[b.shape for b in theirs]}, PyTorch's {[a.shape for a in ours]}",
        }
    deltas = [float(np.abs(a - b).max()) for a, b in zip(ours, theirs, strict=True)]
    close = all(d <= ATOL + RTOL * float(np.abs(a).max()) for d, a in zip(deltas, ours, strict=True))
    agreement = float(((ours[1] > 0) == (theirs[1] > 0)).mean())
    return {"ok": close and agreement >= LABEL_AGREEMENT, "max_abs_diff": max(deltas), "mask_agreement": agreement}


def _match(boxes: np.ndarray, labels: np.ndarray, other_boxes: np.ndarray, other_labels: np.ndarray) -> np.ndarray:
    """For each detection, the index of the other's same detection (-1: none).

    The same position where label and box agree; otherwise the unpaired detection of the same
    label that overlaps it most (detections of nearly equal score may come out in another order).
    """
    from torchvision.ops import box_iou

    scale = max(1.0, float(np.abs(boxes).max(initial=0.0)))
    n = min(len(boxes), len(other_boxes))
    same = np.zeros(len(boxes), dtype=bool)
    same[:n] = (labels[:n] == other_labels[:n]) & (np.abs(boxes[:n] - other_boxes[:n]).max(axis=1) <= RTOL * scale)
    order = np.where(same, np.arange(len(boxes)), -1)
    free = np.ones(len(other_boxes), dtype=bool)
    free[np.flatnonzero(same)] = False
    iou = np.nan_to_num(box_iou(torch.from_numpy(boxes).float(), torch.from_numpy(other_boxes).float()).numpy(), nan=-1)
    iou[labels[:, None] != other_labels[None, :]] = -1.0
    for i in np.flatnonzero(~same):
        candidates = np.where(free, iou[i], -1.0)
        if not len(candidates):
            break
        j = int(candidates.argmax())
        if candidates[j] >= 0.5:
            order[i], free[j] = j, False
    return order


def score_floor(scores: np.ndarray, score_thresh: float, cap: int) -> float:
    """The score below which a detection is borderline: near the score threshold, or near the top-``cap`` cut.

    A borderline detection may exist on one side only: a float difference of 1e-6 moves it
    across the threshold or the cut, or reorders near-tied proposals before NMS.
    """
    floor = score_thresh + SCORE_MARGIN
    if cap and len(scores) >= cap:
        floor = max(floor, float(scores.min()) + SCORE_MARGIN)
    return floor


def _compare_detections(
    ours: Sequence[np.ndarray], theirs: Sequence[np.ndarray], names: list[str], floor: float
) -> dict[str, Any]:
    count = len(ours[0])
    result: dict[str, Any] = {"detections": count, "ok": True}
    if count == 0 and len(theirs[0]) == 0:
        return result
    order = _match(ours[0], ours[1], theirs[0], theirs[1])
    paired = set(order[order >= 0].tolist())
    lone = [i for i in range(count) if order[i] < 0 and ours[2][i] >= floor]
    lone_theirs = [j for j in range(len(theirs[0])) if j not in paired and theirs[2][j] >= floor]
    if lone or lone_theirs:
        problem = (
            f"{len(lone) + len(lone_theirs)} detections scoring {floor:.2f} or more without a counterpart "
            f"({len(theirs[0])} detections, PyTorch {count})"
        )
        return {**result, "ok": False, "problem": problem}
    # borderline detections (below the floor) are not compared: they may pair with a neighbour
    keep = np.flatnonzero((order >= 0) & (ours[2] >= floor))
    borderline = count - len(keep)
    if borderline:
        result["borderline"] = borderline
    if not len(keep):
        return result
    ours = [o[keep] for o in ours]
    theirs = [t[order[keep]] for t in theirs]
    count = len(keep)
    scale = max(1.0, float(np.abs(ours[0]).max()))
    result["max_box_diff"] = float(np.abs(ours[0] - theirs[0]).max())
    result["ok"] = result["max_box_diff"] <= RTOL * scale and bool((ours[1] == theirs[1]).all())
    if "masks" in names:
        k = names.index("masks")
        a, b = ours[k] > 0.5 if ours[k].dtype != np.uint8 else ours[k] > 0, theirs[k]
        b = b > 0.5 if b.dtype != np.uint8 else b > 0
        union = (a | b).reshape(count, -1).sum(1)
        iou = np.where(union > 0, (a & b).reshape(count, -1).sum(1) / np.maximum(union, 1), 1.0)
        result["min_mask_iou"] = float(iou.min())
        result["ok"] = result["ok"] and result["min_mask_iou"] >= MASK_IOU
    if "keypoints" in names:
        k = names.index("keypoints")
        result["max_keypoint_diff"] = float(np.abs(ours[k][..., :2] - theirs[k][..., :2]).max())
        result["ok"] = result["ok"] and result["max_keypoint_diff"] <= RTOL * scale
    return result


UNSTABLE = "PyTorch's own detections change under a 1e-5 jitter of the image (tied scores): not compared"


def _unstable(
    graph: nn.Module, image: torch.Tensor, ours: Sequence[np.ndarray], names: list[str], floor: float
) -> bool:
    """Whether PyTorch itself gives other confident detections for ``image`` jittered by 1e-5.

    On an image of exactly tied proposal scores (a blank one, for a model that finds things
    there) the order of ties decides what is detected; no runtime reproduces it, PyTorch
    included, so a difference there says nothing about the export.
    """
    jitter = torch.rand(image.shape, generator=torch.Generator().manual_seed(1)) * 1e-5
    with torch.no_grad():
        again = tuple(r.numpy() for r in graph((image + jitter).clamp(0, 1)))
    return not _compare_detections(ours, again, names, floor)["ok"]


def compare_with_pytorch(
    graph: nn.Module,
    run: Callable[[torch.Tensor], tuple[np.ndarray, ...]],
    samples: Sequence[torch.Tensor],
    names: list[str],
    semantic_output: str,
) -> list[dict[str, Any]]:
    """Run ``graph`` and the exported file (``run``) on each sample; one entry per image, ``ok`` and the figures.

    ``names`` are the graph's output names: ``boxes`` first for an R-CNN, else the one semantic output.
    """
    detection = names[0] == "boxes"
    detector = getattr(graph, "model", None) or getattr(graph, "detector", None)
    heads = getattr(detector, "roi_heads", None)
    score_thresh = float(getattr(heads, "score_thresh", 0.0))
    cap = int(getattr(heads, "detections_per_img", 0) or 0)
    figures = []
    for image in samples:
        with torch.no_grad():
            reference = graph(image)
        ours = tuple(r.numpy() for r in (reference if isinstance(reference, tuple | list) else (reference,)))
        try:
            theirs = run(image)
        except Exception as err:  # e.g. a torch.export graph specialised to the example's shape
            problem = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:300]}"
            figures.append({"size": list(image.shape[-2:]), "ok": False, "problem": problem})
            continue
        if detection:
            floor = score_floor(ours[2], score_thresh, cap)
            entry = _compare_detections(ours, theirs, names, floor)
            if not entry["ok"] and _unstable(graph, image, ours, names, floor):
                entry = {"detections": len(ours[0]), "ok": True, "unstable": UNSTABLE}
            if "semantic" in names:  # Panoptic FPN's semantic branch: its labels agree
                k = names.index("semantic")
                agreement = float((ours[k] == theirs[k]).mean()) if ours[k].shape == theirs[k].shape else 0.0
                entry["semantic_agreement"] = agreement
                entry["ok"] = entry["ok"] and agreement >= LABEL_AGREEMENT
        elif names == ["class_logits", "mask_logits"]:
            entry = _compare_queries(ours, theirs)
        else:
            entry = _compare_semantic(ours[0], theirs[0], semantic_output)
        figures.append({"size": list(image.shape[-2:]), **entry})
    return figures
