"""Whether an exported model computes what PyTorch does: the file run by its own runtime, each output compared.

Semantic outputs agree within a tolerance relative to their scale and in at least
``LABEL_AGREEMENT`` of the labels; R-CNN detections are paired (equal-score detections may
come out in another order) and their boxes, labels, masks and keypoints compared.
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


def _match(boxes: np.ndarray, labels: np.ndarray, other_boxes: np.ndarray, other_labels: np.ndarray) -> np.ndarray:
    """For each detection, the index of the other's same detection (-1: none).

    The same position where label and box agree; otherwise the unpaired detection of the same
    label that overlaps it most (detections of nearly equal score may come out in another order).
    """
    from torchvision.ops import box_iou

    scale = max(1.0, float(np.abs(boxes).max()))
    same = (labels == other_labels) & (np.abs(boxes - other_boxes).max(axis=1) <= RTOL * scale)
    order = np.where(same, np.arange(len(boxes)), -1)
    free = np.ones(len(other_boxes), dtype=bool)
    free[same] = False
    iou = np.nan_to_num(box_iou(torch.from_numpy(boxes).float(), torch.from_numpy(other_boxes).float()).numpy(), nan=-1)
    iou[labels[:, None] != other_labels[None, :]] = -1.0
    for i in np.flatnonzero(~same):
        candidates = np.where(free, iou[i], -1.0)
        j = int(candidates.argmax())
        if candidates[j] >= 0.5:
            order[i], free[j] = j, False
    return order


def _compare_detections(ours: Sequence[np.ndarray], theirs: Sequence[np.ndarray], names: list[str]) -> dict[str, Any]:
    count = len(ours[0])
    if len(theirs[0]) != count:
        return {"ok": False, "detections": count, "problem": f"{len(theirs[0])} detections, PyTorch {count}"}
    result: dict[str, Any] = {"detections": count, "ok": True}
    if count == 0:
        return result
    # detections of (nearly) equal score may come out in another order: pair each with its best match
    order = _match(ours[0], ours[1], theirs[0], theirs[1])
    if (order < 0).any():
        return {**result, "ok": False, "problem": f"{int((order < 0).sum())} detections without a counterpart"}
    theirs = [t[order] for t in theirs]
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
            entry = _compare_detections(ours, theirs, names)
        else:
            entry = _compare_semantic(ours[0], theirs[0], semantic_output)
        figures.append({"size": list(image.shape[-2:]), **entry})
    return figures
