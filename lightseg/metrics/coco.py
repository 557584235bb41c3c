"""Dataset-level COCO evaluation (boxes, masks, keypoints) against the data set's own annotations."""

from __future__ import annotations

import contextlib
import copy
import gc
import io
import itertools
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torchmetrics import Metric
from typing_extensions import override

from lightseg.coco_masks import encode_masks
from lightseg.errors import LightsegError

IoUType = Literal["bbox", "segm", "keypoints", "boundary"]
Backend = Literal["faster_coco_eval", "pycocotools"]
STAT_NAMES: dict[str, tuple[str, ...]] = {
    "bbox": ("map", "map_50", "map_75", "map_small", "map_medium", "map_large"),
    "segm": ("map", "map_50", "map_75", "map_small", "map_medium", "map_large"),
    "boundary": ("map", "map_50", "map_75", "map_small", "map_medium", "map_large"),
    "keypoints": ("map", "map_50", "map_75", "map_medium", "map_large"),
}
#: COCO's per-keypoint OKS constants for its 17 person keypoints
COCO_OKS_SIGMAS = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
    0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
)  # fmt: skip


class COCOEvaluator(Metric):
    """COCO AP over a whole split, computed by COCO's own evaluation against the ground-truth file.

    Detections are collected as COCO results (original category ids, ``[x, y, w, h]``
    boxes, RLE masks, keypoints) and gathered from every process; ``compute`` runs
    ``COCOeval`` (faster-coco-eval's C++ implementation, or pycocotools) on the data set's
    annotation content, so crowd regions, areas, ``ignore`` flags and images without
    annotations count exactly as in the official numbers. As Detectron2 does, mask results
    carry no box (COCO then uses the mask area for the small/medium/large ranges) and
    keypoint results carry no box (COCO's results format).

    Returns ``{iou_type}_{stat}`` for stats ``map``, ``map_50``, ``map_75``,
    ``map_small`` (not for keypoints), ``map_medium``, ``map_large``, plus
    ``{iou_type}_map_per_class`` (AP per contiguous label 1..K; NaN where a class has no
    ground truth).

    With ``boundary_ratio``, mask results are also scored with **Boundary AP** (Cheng et
    al., CVPR 2021: a detection's IoU is the smaller of its mask IoU and its Boundary IoU,
    the masks' contour bands of width ``round(boundary_ratio * image diagonal)``), through
    faster-coco-eval's ``boundary`` IoU type: ``boundary_map``, ... .

    Args:
        iou_types: what to evaluate: ``bbox``, ``segm``, ``keypoints``.
        category_ids: original category id of each contiguous label (index 0: background).
        mask_threshold: probability above which a predicted mask pixel is foreground.
        oks_sigmas: per-keypoint OKS constants (``None``: COCO's 17).
        num_keypoints: keypoints per detection (keypoint evaluation).
        backend: ``faster_coco_eval`` or ``pycocotools``.
        boundary_ratio: also compute Boundary AP with this band width (a fraction of the image
            diagonal; 0.02 in the official API for COCO); ``None``: no Boundary AP. Needs
            ``segm`` and the faster-coco-eval backend.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True
    rows: list[torch.Tensor]
    rle_bytes: list[torch.Tensor]
    rle_lengths: list[torch.Tensor]
    image_ids: list[torch.Tensor]

    def __init__(
        self,
        iou_types: Sequence[IoUType],
        category_ids: Sequence[int] | None = None,
        mask_threshold: float = 0.5,
        oks_sigmas: Sequence[float] | None = None,
        num_keypoints: int = 0,
        backend: Backend = "faster_coco_eval",
        boundary_ratio: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if boundary_ratio is not None and ("segm" not in iou_types or backend != "faster_coco_eval"):
            raise LightsegError(
                "Boundary AP scores instance masks (iou_types with segm) and needs the faster_coco_eval backend "
                f"(pycocotools has no boundary IoU); got iou_types {list(iou_types)}, backend {backend}"
            )
        if boundary_ratio is not None and boundary_ratio <= 0:
            raise LightsegError(f"boundary_ratio must be > 0 (a fraction of the image diagonal), got {boundary_ratio}")
        self.boundary_ratio = boundary_ratio
        self.iou_types = tuple(iou_types)
        self.category_ids = list(category_ids) if category_ids is not None else None
        self.mask_threshold = mask_threshold
        self.oks_sigmas = list(oks_sigmas) if oks_sigmas is not None else None
        self.row_width = 7 + (3 * num_keypoints if "keypoints" in self.iou_types else 0)
        self.backend: Backend = backend
        self.ground_truth: dict[str, Any] | None = None
        self._gt_cache: Any = None
        # Flat float64 rows (image id, category id, box, score, keypoints; ids stay exact below 2**53)
        # and RLE bytes: flat states gather across processes even where a process found nothing.
        self.add_state("rows", default=[], dist_reduce_fx="cat")
        self.add_state("rle_bytes", default=[], dist_reduce_fx="cat")
        self.add_state("rle_lengths", default=[], dist_reduce_fx="cat")
        # every image evaluated, with or without detections: AP is computed on these images only
        self.add_state("image_ids", default=[], dist_reduce_fx="cat")

    @override
    def sync(self, *args: Any, **kwargs: Any) -> None:
        """Torchmetrics' sync, with this metric's states typed where a process saw no image.

        torchmetrics gathers an empty list state as an empty tensor of the metric's float dtype,
        which the gather of the other processes' float64 / int64 / uint8 states does not match
        (a collective of different sizes: an error or a hang); an empty state of the right
        dtype gathers as nothing.
        """
        for name, dtype in (
            ("rows", torch.float64),
            ("rle_bytes", torch.uint8),
            ("rle_lengths", torch.int64),
            ("image_ids", torch.float64),
        ):
            state = getattr(self, name)
            if isinstance(state, list) and not state:
                state.append(torch.zeros(0, dtype=dtype, device=self.device))
        super().sync(*args, **kwargs)

    def set_ground_truth(self, data: dict[str, Any], category_ids: Sequence[int]) -> None:
        """The COCO-format ground truth (annotation file content) and the label -> category id map."""
        if data is not self.ground_truth:
            self.ground_truth = data
            self._gt_cache = None
        self.category_ids = list(category_ids)

    def update(self, predictions: Sequence[dict[str, torch.Tensor]], image_ids: Sequence[int]) -> None:
        """Add torchvision detection outputs (``boxes`` xyxy, ``labels``, ``scores``, ``masks``?, ``keypoints``?)."""
        if self.category_ids is None:
            raise LightsegError("COCOEvaluator needs category_ids (set_ground_truth) before update")
        lookup = torch.tensor(self.category_ids, dtype=torch.int64)
        if len(image_ids):
            self.image_ids.append(torch.tensor([float(i) for i in image_ids], dtype=torch.float64, device=self.device))
        for prediction, image_id in zip(predictions, image_ids, strict=True):
            boxes = prediction["boxes"].detach().double().cpu()
            n = len(boxes)
            if n == 0:
                continue
            labels = prediction["labels"].detach().cpu().long()
            xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)
            columns = [
                torch.full((n, 1), float(image_id), dtype=torch.float64),
                lookup[labels].double()[:, None],
                xywh,
                prediction["scores"].detach().double().cpu()[:, None],
            ]
            if "keypoints" in self.iou_types:
                columns.append(prediction["keypoints"].detach().double().cpu().reshape(n, -1))
            row = torch.cat(columns, dim=1)
            if row.shape[1] != self.row_width:
                raise LightsegError(
                    f"a detection has {row.shape[1] - 7} keypoint values, expected {self.row_width - 7}"
                )
            self.rows.append(row.flatten().to(self.device))
            if "segm" in self.iou_types and "masks" in prediction:
                encoded = encode_masks(prediction["masks"].detach() > self.mask_threshold)
                self.rle_lengths.append(torch.tensor([len(e) for e in encoded], dtype=torch.int64, device=self.device))
                joined = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
                self.rle_bytes.append(torch.from_numpy(joined).to(self.device))

    @property
    def evaluated_types(self) -> tuple[IoUType, ...]:
        """The IoU types :meth:`compute` scores: ``iou_types``, and ``boundary`` with ``boundary_ratio``."""
        return (*self.iou_types, "boundary") if self.boundary_ratio is not None else self.iou_types

    def results(self) -> dict[IoUType, list[dict[str, Any]]]:
        """The collected detections in COCO's results format, one list per IoU type."""
        rows = _cat(self.rows).cpu().double().reshape(-1, self.row_width)
        out: dict[IoUType, list[dict[str, Any]]] = {t: [] for t in self.evaluated_types}
        if not len(rows):
            return out
        rles: list[str] = []
        if "segm" in self.iou_types:
            data = _cat(self.rle_bytes).cpu().to(torch.uint8).numpy().tobytes()
            offsets = np.concatenate([[0], np.cumsum(_cat(self.rle_lengths).cpu().long().numpy())])
            rles = [data[a:b].decode() for a, b in itertools.pairwise(offsets)]
        for i, row in enumerate(rows.tolist()):
            base = {"image_id": int(row[0]), "category_id": int(row[1]), "score": float(row[6])}
            if "bbox" in out:
                out["bbox"].append({**base, "bbox": [float(v) for v in row[2:6]]})
            if "segm" in out and rles:
                height, width, counts = rles[i].split(" ", 2)
                out["segm"].append({**base, "segmentation": {"size": [int(height), int(width)], "counts": counts}})
                if "boundary" in out:
                    out["boundary"].append(out["segm"][-1])
            if "keypoints" in out:
                out["keypoints"].append({**base, "keypoints": [float(v) for v in row[7:]]})
        return out

    def evaluated_image_ids(self) -> list[int]:
        """The ids of the images given to :meth:`update` (in every process), sorted."""
        return sorted({int(i) for i in _cat(self.image_ids).cpu().tolist()})

    def compute(self) -> dict[str, torch.Tensor]:
        """Run COCO evaluation for each IoU type, on the images given to :meth:`update` only.

        A run that evaluates part of a split (``limit_val_batches``, ``fast_dev_run``, the
        sanity check, a subset of images) is scored on the images it saw, not penalised for
        the ones it did not.
        """
        if self.ground_truth is None:
            raise LightsegError("COCOEvaluator has no ground truth: call set_ground_truth() before compute()")
        if self._gt_cache is None:
            self._gt_cache = load_ground_truth(self.ground_truth, self.backend)
        output: dict[str, torch.Tensor] = {}
        num_labels = len(self.category_ids or []) - 1
        image_ids = self.evaluated_image_ids()
        for iou_type, results in self.results().items():
            stats, per_category = evaluate(
                self._gt_cache, results, iou_type, self.backend, self.oks_sigmas, image_ids, self.boundary_ratio
            )
            for name, value in zip(STAT_NAMES[iou_type], stats, strict=False):
                output[f"{iou_type}_{name}"] = torch.tensor(float(value), dtype=torch.float64)
            per_class = torch.full((num_labels,), float("nan"), dtype=torch.float64)
            for label, category in enumerate((self.category_ids or [])[1:]):
                if category in per_category:
                    per_class[label] = per_category[category]
            output[f"{iou_type}_map_per_class"] = per_class
        return output


def _cat(parts: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    if isinstance(parts, torch.Tensor):  # after a distributed sync torchmetrics hands one tensor
        return parts.flatten()
    if not parts:
        return torch.zeros(0, dtype=torch.float64)
    return torch.cat([p.flatten() for p in parts])


def load_ground_truth(data: dict[str, Any], backend: Backend) -> Any:
    """A COCO ground-truth object of ``backend`` on a copy of ``data`` (COCOeval writes into it)."""
    data = copy.deepcopy(data)
    data.setdefault("info", {})  # pycocotools' loadRes copies it; mmdetection's sample has null
    if data["info"] is None:
        data["info"] = {}
    data.setdefault("licenses", [])
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO as FasterCOCO

        return FasterCOCO(data)
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = data
        coco.createIndex()
    return coco


def _own_copies(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A new dict for each result, for ``loadRes`` and COCOeval to write into.

    They add ``id``, ``area``, ``bbox``, ``iscrowd`` and the decoded mask, and a mask result that
    kept its ``bbox`` would be loaded as a box the next time. The values inside (masks, boxes,
    keypoints) are only read, so they are shared: a deep copy of a val2017-sized result list took
    ~45 % of the whole mask evaluation.
    """
    return [dict(result) for result in results]


def _load_mask_results(ground_truth: Any, results: list[dict[str, Any]]) -> Any:
    """faster-coco-eval's ``loadRes`` of RLE mask results, with the areas computed in one call.

    The same object ``loadRes`` makes (each result with ``id`` from 1, its mask's ``area`` and
    ``iscrowd`` 0; the ground truth's images and categories) except the box around each mask,
    which mask evaluation never reads. ``loadRes`` decodes every mask twice, one call each, for
    the area and that box: a quarter of a val2017-sized evaluation.
    """
    from faster_coco_eval import COCO as FasterCOCO
    from faster_coco_eval.core import mask as mask_api

    unknown = {result["image_id"] for result in results} - set(ground_truth.getImgIds())
    if unknown:
        raise LightsegError(f"COCO results name images the ground truth does not hold: {sorted(unknown)[:5]}")
    areas = mask_api.area([result["segmentation"] for result in results]).tolist()
    detections = FasterCOCO()
    detections.dataset = {
        "info": {},
        "images": list(ground_truth.dataset["images"]),
        "categories": copy.deepcopy(ground_truth.dataset["categories"]),
        "annotations": [
            {**result, "area": area, "id": index, "iscrowd": 0}
            for index, (result, area) in enumerate(zip(results, areas, strict=True), start=1)
        ],
    }
    detections.createIndex()
    return detections


@contextlib.contextmanager
def _without_cycle_collection() -> Iterator[None]:
    """Python's cyclic garbage collector paused (restored after).

    COCO evaluation makes millions of dicts and lists, none of them in a reference cycle; the
    collector would scan them again and again while they are made (~15 % of a val2017-sized mask
    evaluation). Plain reference counting still frees everything.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def evaluate(
    ground_truth: Any,
    results: list[dict[str, Any]],
    iou_type: IoUType,
    backend: Backend = "faster_coco_eval",
    oks_sigmas: Sequence[float] | None = None,
    image_ids: Sequence[int] | None = None,
    boundary_ratio: float | None = None,
) -> tuple[np.ndarray, dict[int, float]]:
    """COCOeval of ``results`` against ``ground_truth``: the summary stats and the AP of each category.

    ``iou_type="boundary"`` (faster-coco-eval only) scores mask results with Boundary AP at
    ``boundary_ratio`` (default 0.02).

    ``image_ids`` restricts the evaluation to those images (COCOeval's ``params.imgIds``);
    ``None`` evaluates every image of the ground truth. Without any detection, or without
    any image, every AP is 0 (COCOeval cannot load an empty result list).
    """
    count = len(STAT_NAMES[iou_type])
    if not results or (image_ids is not None and not image_ids):
        return np.zeros(count), {}
    with contextlib.redirect_stdout(io.StringIO()), _without_cycle_collection():
        if backend == "faster_coco_eval":
            from faster_coco_eval import COCOeval_faster

            if iou_type in ("segm", "boundary"):
                detections = _load_mask_results(ground_truth, results)
            else:
                detections = ground_truth.loadRes(_own_copies(results))
            options = {"boundary_dilation_ratio": boundary_ratio or 0.02} if iou_type == "boundary" else {}
            evaluator = COCOeval_faster(
                ground_truth, detections, iou_type, print_function=lambda *a, **k: None, **options
            )
        else:
            if iou_type == "boundary":
                raise LightsegError("Boundary AP needs the faster_coco_eval backend (pycocotools has no boundary IoU)")
            from pycocotools.cocoeval import COCOeval

            detections = ground_truth.loadRes(_own_copies(results))
            evaluator = COCOeval(ground_truth, detections, iou_type)
        if image_ids is not None:
            evaluator.params.imgIds = list(image_ids)
        if iou_type == "keypoints":
            evaluator.params.kpt_oks_sigmas = np.array(oks_sigmas if oks_sigmas is not None else COCO_OKS_SIGMAS)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = np.asarray(evaluator.stats[:count], dtype=np.float64)
    precision = np.asarray(evaluator.eval["precision"])  # [T, R, K, A, M]
    per_category = {}
    for k, category in enumerate(evaluator.params.catIds):
        values = precision[:, :, k, 0, -1]
        values = values[values > -1]
        per_category[int(category)] = float(values.mean()) if values.size else float("nan")
    return stats, per_category
