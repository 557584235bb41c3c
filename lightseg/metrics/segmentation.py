"""Dataset-level semantic segmentation metrics: confusion matrix, Boundary IoU, Cityscapes' iIoU and categories."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchmetrics import Metric

from lightseg.contract import EvaluationProtocol
from lightseg.errors import LightsegError
from lightseg.metrics.boundary import boundary_band, boundary_width

SCALAR_KEYS = ("pixel_acc", "macc", "miou", "fwiou", "mdice")
#: scalars reported when the protocol asks for them (Boundary IoU, Cityscapes' instance and category scores)
PROTOCOL_SCALAR_KEYS = ("biou", "iiou", "category_iou", "category_iiou")


@dataclass(frozen=True)
class PerClassScore:
    """One score that :class:`SegmentationMetrics` computes per class (or per category), declared once.

    The text tables, the dashboard's per-class table and the task's logged per-class values
    (``<stage>_<log_prefix>_<class>``) are all made from :data:`PER_CLASS_SCORES` and
    :data:`PER_CATEGORY_SCORES`: adding a per-class score is computing it in
    :meth:`SegmentationMetrics.compute` and declaring it here.

    Attributes:
        key: the result's per-class key (``iou_per_class``).
        mean: the result's key of its mean (``miou``).
        column: its column in the plain-text tables (five characters at most).
        title: its name in the dashboard's table.
        log_prefix: logged per class as ``<stage>_<log_prefix>_<class>``; ``None``: not logged per class.
        higher_is_better: its direction.
    """

    key: str
    mean: str
    column: str
    title: str
    log_prefix: str | None = None
    higher_is_better: bool = True


#: the per-class scores, in table order (those of the protocol only where computed)
PER_CLASS_SCORES = (
    PerClassScore("iou_per_class", "miou", "IoU", "IoU", "iou"),
    PerClassScore("acc_per_class", "macc", "Acc", "accuracy"),
    PerClassScore("dice_per_class", "mdice", "Dice", "Dice"),
    PerClassScore("biou_per_class", "biou", "BIoU", "Boundary IoU", "biou"),
    PerClassScore("iiou_per_class", "iiou", "iIoU", "iIoU", "iiou"),
)
#: the per-category scores (Cityscapes' 7 categories), in table order
PER_CATEGORY_SCORES = (
    PerClassScore("category_iou_per_category", "category_iou", "IoU", "category IoU", "category_iou"),
    PerClassScore("category_iiou_per_category", "category_iiou", "iIoU", "category iIoU", "category_iiou"),
)


@dataclass(frozen=True)
class ImageCounts:
    """Per-image counts of one batch: the basis of per-image scores (see :func:`image_scores`).

    ``confusion`` is ``[B,C,C]`` (rows: target); ``boundary_intersection`` and
    ``boundary_union`` are ``[B,C]`` when Boundary IoU is on.
    """

    confusion: torch.Tensor
    boundary_intersection: torch.Tensor | None = None
    boundary_union: torch.Tensor | None = None


class SegmentationMetrics(Metric):
    """Pixel accuracy, mean accuracy, mean IoU, frequency-weighted IoU, Dice; Boundary IoU, iIoU and categories.

    One ``[C, C]`` confusion matrix ``n[i, j]`` (pixels of class ``i`` predicted as ``j``)
    is accumulated over the whole split and summed across processes, so the numbers are
    dataset-level (not averages of per-batch values). With ``t_i = sum_j n[i, j]``:

    - ``pixel_acc = sum_i n_ii / sum_i t_i``
    - ``acc_i = n_ii / t_i``; ``macc`` is their mean
    - ``iou_i = n_ii / (t_i + sum_j n_ji - n_ii)``; ``miou`` is their mean
    - ``fwiou = sum_i t_i iou_i / sum_i t_i``
    - ``dice_i = 2 n_ii / (t_i + sum_j n_ji)``; ``mdice`` is their mean

    A class whose value is 0/0 (absent from target and prediction; for accuracy, absent
    from the target) is NaN in the per-class vector and left out of the mean. Pixels
    labelled ``ignore_index`` never count.

    With ``boundary_ratio > 0``, **Boundary IoU** (Cheng et al., CVPR 2021): per class, IoU of
    the ground-truth and predicted masks restricted to their contour bands of width
    ``d = round(boundary_ratio * image diagonal)`` (see :func:`boundary_band`), ignore pixels
    excluded, intersections and unions summed over the split: ``biou_per_class`` and their
    mean ``biou``.

    With ``categories``, **category IoU** as cityscapesScripts computes it: the classes of a
    category merged (``category_iou_per_category``, mean ``category_iou``). With
    ``instance_sizes`` and instance ids passed to :meth:`update`, **iIoU**: each ground-truth
    instance's true-positive and false-negative pixels weighted by the class's average
    instance size over the instance's size, false positives as in IoU
    (``iiou_per_class``, mean ``iiou``; per category ``category_iiou_per_category``, mean
    ``category_iiou``), reported when every image came with instance ids.

    Args:
        num_classes: number of classes, background included.
        ignore_index: label of pixels to skip (padding, void borders).
        protocol: Boundary IoU, categories and iIoU settings (``None``: confusion-matrix metrics only).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True
    confmat: torch.Tensor
    images: torch.Tensor
    instance_images: torch.Tensor
    boundary_intersection: torch.Tensor
    boundary_union: torch.Tensor
    category_of: torch.Tensor
    average_instance_size: torch.Tensor
    instance_tp: torch.Tensor
    instance_fn: torch.Tensor
    category_instance_tp: torch.Tensor
    category_instance_fn: torch.Tensor

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        protocol: EvaluationProtocol | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.protocol = protocol or EvaluationProtocol(boundary_ratio=0.0)
        p = self.protocol
        for name, classes in p.categories.items():
            if any(not 0 <= c < num_classes for c in classes):
                raise LightsegError(f"category {name!r} names classes {classes} outside [0, {num_classes})")
        #: the per-image counts of the most recent :meth:`update` (replaced by each update; not a state)
        self.last_counts: ImageCounts | None = None
        self.add_state("confmat", torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("images", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        if p.boundary_ratio > 0:
            for name in ("boundary_intersection", "boundary_union"):
                self.add_state(name, torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")
        self._category_names = list(p.categories)
        # class -> category index (-1: none), for category masks of predictions and targets
        lut = torch.full((num_classes + 1,), -1, dtype=torch.long)
        for k, classes in enumerate(p.categories.values()):
            lut[list(classes)] = k
        self.register_buffer("category_of", lut, persistent=False)
        if p.instance_sizes:
            sizes = torch.full((num_classes + 1,), float("nan"), dtype=torch.float64)
            for c, size in p.instance_sizes.items():
                sizes[c] = size
            self.register_buffer("average_instance_size", sizes, persistent=False)
            self.add_state("instance_images", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
            for name in ("instance_tp", "instance_fn"):
                self.add_state(name, torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")
            for name in ("category_instance_tp", "category_instance_fn"):
                self.add_state(name, torch.zeros(len(p.categories), dtype=torch.float64), dist_reduce_fx="sum")

    def update(
        self,
        preds: torch.Tensor,
        target: torch.Tensor,
        sizes: Sequence[tuple[int, int]] | None = None,
        instances: torch.Tensor | None = None,
    ) -> None:
        """Add a batch: ``preds`` logits ``[B,C,H,W]`` or labels ``[B,H,W]``; ``target`` ``[B,H,W]``.

        ``sizes`` gives each image's ``(H, W)`` inside a padded batch (Boundary IoU's band and
        diagonal are the image's own). ``instances`` ``[B,H,W]`` holds ground-truth instance ids
        (0: no instance; an instance's class is the target's label on it), for iIoU.

        Raises:
            LightsegError: a predicted label outside ``[0, num_classes)``, or a target label
                outside it that is not ``ignore_index`` (naming the value).
        """
        n = self.num_classes
        if preds.ndim == target.ndim + 1:
            if preds.shape[1] != n:
                raise LightsegError(f"preds have {preds.shape[1]} class scores, the metric {n} classes")
            # max(dim).indices: same first-maximum rule as argmax, ~10x faster on CPU
            preds = preds.max(1).indices
        elif preds.numel() and (int(preds.min()) < 0 or int(preds.max()) >= n):
            bad = int(preds.min()) if int(preds.min()) < 0 else int(preds.max())
            raise LightsegError(f"preds hold label {bad}, outside [0, {n})")
        if preds.shape != target.shape:
            raise LightsegError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} differ in shape")
        if target.ndim == 2:
            preds, target = preds[None], target[None]
            instances = instances[None] if instances is not None else None
        preds, target = preds.long(), target.long()
        valid = target != self.ignore_index
        if valid.any():
            labelled = torch.where(valid, target, 0)
            low, high = int(labelled.min()), int(labelled.max())
            if low < 0 or high >= n:
                raise LightsegError(
                    f"target holds label {low if low < 0 else high}, outside [0, {n}) and not "
                    f"ignore_index={self.ignore_index}"
                )
        batch = target.shape[0]
        confusion = image_confusion(preds, target, n, valid)
        self.confmat += confusion.sum(0)
        self.images += batch
        counts = ImageCounts(confusion)
        if self.protocol.boundary_ratio > 0:
            intersection, union = self._boundary_counts(preds, target, valid, sizes)
            self.boundary_intersection += intersection.sum(0)
            self.boundary_union += union.sum(0)
            counts = ImageCounts(confusion, intersection, union)
        if self.protocol.instance_sizes and instances is not None:
            self._add_instances(preds, target, instances.to(target.device))
        self.last_counts = counts

    def _boundary_counts(
        self,
        preds: torch.Tensor,
        target: torch.Tensor,
        valid: torch.Tensor,
        sizes: Sequence[tuple[int, int]] | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.num_classes
        batch, height, width = target.shape
        intersection = torch.zeros(batch, n, dtype=torch.long, device=target.device)
        union = torch.zeros_like(intersection)
        for i in range(batch):
            h, w = sizes[i] if sizes is not None else (height, width)
            t, p, v = target[i, :h, :w], preds[i, :h, :w], valid[i, :h, :w]
            d = boundary_width(h, w, self.protocol.boundary_ratio)
            gt_band = boundary_band(t, d) & v
            pred_band = boundary_band(p, d) & v
            both = gt_band & pred_band & (t == p)
            inter = torch.bincount(t[both], minlength=n)
            intersection[i] = inter
            union[i] = torch.bincount(t[gt_band], minlength=n) + torch.bincount(p[pred_band], minlength=n) - inter
        return intersection, union

    def _add_instances(self, preds: torch.Tensor, target: torch.Tensor, instances: torch.Tensor) -> None:
        # every (image, instance id) pair is one instance; its class is the target's label on it
        self.instance_images += target.shape[0]
        inside = instances > 0
        if not inside.any():
            return
        image = torch.arange(target.shape[0], device=target.device).view(-1, 1, 1).expand_as(instances)
        keys = image[inside] * (int(instances.max()) + 1) + instances[inside].long()
        _, which = torch.unique(keys, return_inverse=True)
        count = int(which.max()) + 1
        t, p = target[inside], preds[inside]
        t = torch.where(t == self.ignore_index, self.num_classes, t)
        size = torch.bincount(which, minlength=count).double()
        label = torch.zeros(count, dtype=torch.long, device=t.device).scatter_(0, which, t)
        tp = torch.bincount(which[p == t], minlength=count).double()
        weight = self.average_instance_size[label] / size
        kept = ~weight.isnan()  # classes without instance-level evaluation, and ignored regions
        label, size, tp, weight = label[kept], size[kept], tp[kept], weight[kept]
        self.instance_tp.index_add_(0, label, tp * weight)
        self.instance_fn.index_add_(0, label, (size - tp) * weight)
        category = self.category_of[label]
        if self._category_names:
            same = self.category_of[p] == self.category_of[t]
            category_tp = torch.bincount(which[same], minlength=count).double()[kept]
            has = category >= 0
            self.category_instance_tp.index_add_(0, category[has], (category_tp * weight)[has])
            self.category_instance_fn.index_add_(0, category[has], ((size - category_tp) * weight)[has])

    def compute(self) -> dict[str, torch.Tensor]:
        """Scalars ``pixel_acc``, ``macc``, ``miou``, ``fwiou``, ``mdice``, per-class vectors and ``confmat``.

        With the protocol's parts: ``biou`` / ``biou_per_class``; ``category_iou`` /
        ``category_iou_per_category``; ``iiou`` / ``iiou_per_class`` and ``category_iiou`` /
        ``category_iiou_per_category`` (when every image had instance ids).
        """
        results = {**confusion_metrics(self.confmat), "confmat": self.confmat.clone()}
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=self.confmat.device)
        if self.protocol.boundary_ratio > 0:
            inter, union = self.boundary_intersection.double(), self.boundary_union.double()
            results["biou_per_class"] = torch.where(union > 0, inter / union.clamp(min=1), nan)
            results["biou"] = results["biou_per_class"].nanmean()
        if self._category_names:
            tp, fn, fp = self._category_counts()
            total = tp + fn + fp
            results["category_iou_per_category"] = torch.where(total > 0, tp / total.clamp(min=1), nan)
            results["category_iou"] = results["category_iou_per_category"].nanmean()
        if self.protocol.instance_sizes and int(self.images) > 0 and int(self.instance_images) == int(self.images):
            results.update(self._instance_scores(nan))
        return results

    def _instance_scores(self, nan: torch.Tensor) -> dict[str, torch.Tensor]:
        n = self.confmat.double()
        fp = n.sum(0) - n.diag()
        tp, fn = self.instance_tp, self.instance_fn
        evaluated = ~self.average_instance_size[: self.num_classes].isnan()
        denominator = tp + fn + fp
        iiou = torch.where(evaluated & (denominator > 0), tp / denominator, nan)
        results = {"iiou_per_class": iiou, "iiou": iiou.nanmean()}
        if self._category_names:
            _, _, category_fp = self._category_counts()
            ctp, cfn = self.category_instance_tp, self.category_instance_fn
            total = ctp + cfn + category_fp
            names = self.protocol.instance_categories
            reported = torch.tensor([n in names for n in self._category_names], device=total.device)
            results["category_iiou_per_category"] = torch.where(reported & (total > 0), ctp / total, nan)
            results["category_iiou"] = results["category_iiou_per_category"].nanmean()
        return results

    def _category_counts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # per category k: pixels of its classes predicted as any of them (tp), missed (fn), and
        # pixels of any other class predicted as one of them (fp), as cityscapesScripts counts them
        n = self.confmat.double()
        k = len(self._category_names)
        member = (self.category_of[: self.num_classes][None] == torch.arange(k, device=n.device)[:, None]).double()
        tp = (member @ n @ member.T).diag()
        return tp, member @ n.sum(1) - tp, member @ n.sum(0) - tp

    @property
    def category_names(self) -> list[str]:
        """The protocol's category names, in the order of the per-category vectors."""
        return list(self._category_names)


def image_confusion(preds: torch.Tensor, target: torch.Tensor, num_classes: int, valid: torch.Tensor) -> torch.Tensor:
    """One confusion matrix per image, ``[B,C,C]`` (rows: target), of labels ``[B,H,W]`` over ``valid`` pixels."""
    n, batch = num_classes, target.shape[0]
    # bin 0 takes the pixels left out, then one n*n matrix per image
    image = torch.arange(batch, device=target.device).view(-1, 1, 1)
    index = torch.where(valid, image * (n * n) + target.long() * n + preds.long() + 1, 0)
    return torch.bincount(index.flatten(), minlength=batch * n * n + 1)[1:].view(batch, n, n)


def image_scores(counts: ImageCounts) -> dict[str, torch.Tensor]:
    """Per-image scores of a batch.

    Returns:
        ``iou``, ``acc``, ``biou`` ``[B,C]`` (NaN where 0/0) and their means ``miou``,
        ``mbiou`` and ``pixel_acc`` ``[B]``.
    """
    n = counts.confusion.double()
    diag = n.diagonal(dim1=-2, dim2=-1)
    target_total, pred_total = n.sum(-1), n.sum(-2)
    union = target_total + pred_total - diag
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=n.device)
    iou = torch.where(union > 0, diag / union.clamp(min=1), nan)
    acc = torch.where(target_total > 0, diag / target_total.clamp(min=1), nan)
    total = target_total.sum(-1)
    scores = {
        "iou": iou,
        "acc": acc,
        "miou": iou.nanmean(-1),
        "pixel_acc": torch.where(total > 0, diag.sum(-1) / total.clamp(min=1), nan),
    }
    if counts.boundary_intersection is not None and counts.boundary_union is not None:
        b_union = counts.boundary_union.double()
        biou = torch.where(b_union > 0, counts.boundary_intersection.double() / b_union.clamp(min=1), nan)
        scores["biou"] = biou
        scores["mbiou"] = biou.nanmean(-1)
    return scores


def confusion_metrics(confmat: torch.Tensor) -> dict[str, torch.Tensor]:
    """The metric formulas on a confusion matrix (rows: target, columns: prediction)."""
    n = confmat.double()
    diag = n.diag()
    target_total = n.sum(1)
    pred_total = n.sum(0)
    union = target_total + pred_total - diag
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=n.device)
    iou = torch.where(union > 0, diag / union.clamp(min=1), nan)
    acc = torch.where(target_total > 0, diag / target_total.clamp(min=1), nan)
    dice = torch.where(target_total + pred_total > 0, 2 * diag / (target_total + pred_total).clamp(min=1), nan)
    total = target_total.sum()
    present = target_total > 0
    return {
        "pixel_acc": diag.sum() / total if total > 0 else nan,
        "macc": acc.nanmean(),
        "miou": iou.nanmean(),
        "fwiou": (target_total[present] * iou[present]).sum() / total if total > 0 else nan,
        "mdice": dice.nanmean(),
        "iou_per_class": iou,
        "acc_per_class": acc,
        "dice_per_class": dice,
    }
