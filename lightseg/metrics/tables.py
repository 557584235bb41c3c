"""Plain-text tables of results: semantic per class (and per category), a before/after comparison, COCO AP per class."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from lightseg.metrics.segmentation import PER_CATEGORY_SCORES, PER_CLASS_SCORES


def _pct(v: float) -> str:
    return "    -" if v != v else f"{100 * v:5.1f}"


def format_class_table(
    results: Mapping[str, torch.Tensor],
    class_names: Sequence[str] | None = None,
    title: str = "",
    category_names: Sequence[str] | None = None,
) -> str:
    """A plain-text per-class table (IoU, accuracy, Dice, and BIoU / iIoU when computed, in %) with the means.

    When the results hold category scores, a category table (IoU, iIoU) follows.
    """
    columns = [(score.column, score.key, score.mean) for score in PER_CLASS_SCORES if score.key in results]
    values = [results[k].tolist() for _, k, _ in columns]
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(values[0]))]
    width = max(len("class"), *(len(n) for n in names))
    rule = "-" * (width + 2 + 7 * len(columns))
    lines = [title] if title else []
    lines.append(f"{'class':<{width}}  " + "  ".join(f"{h:>5}" for h, _, _ in columns))
    lines.append(rule)
    for i, name in enumerate(names):
        lines.append(f"{name:<{width}}  " + "  ".join(_pct(v[i]) for v in values))
    lines.append(rule)
    lines.append(f"{'mean':<{width}}  " + "  ".join(_pct(float(results[m])) for _, _, m in columns))
    pixel_acc, fwiou = (_pct(float(results[k])).strip() for k in ("pixel_acc", "fwiou"))
    lines.append(f"pixel acc {pixel_acc}  fwIoU {fwiou}")
    scores = [score for score in PER_CATEGORY_SCORES if score.key in results]
    if scores:
        categories = [str(c) for c in category_names or range(len(results[scores[0].key]))]
        cwidth = max(len("category"), *(len(str(c)) for c in categories))
        crule = "-" * (cwidth + 7 * len(scores))
        lines.append("")
        lines.append(f"{'category':<{cwidth}}  " + "  ".join(f"{s.column:>5}" for s in scores))
        lines.append(crule)
        per_category = [results[s.key].tolist() for s in scores]
        for k, name in enumerate(categories):
            lines.append(f"{name:<{cwidth}}  " + "  ".join(_pct(v[k]) for v in per_category))
        lines.append(crule)
        lines.append(f"{'mean':<{cwidth}}  " + "  ".join(_pct(float(results[s.mean])) for s in scores))
    return "\n".join(lines)


def format_comparison_table(
    before: dict[str, torch.Tensor],
    after: dict[str, torch.Tensor],
    class_names: Sequence[str] | None = None,
    title: str = "",
) -> str:
    """Per-class IoU (%) of two results side by side with the change, e.g. network vs CRF."""
    first, second = before["iou_per_class"].tolist(), after["iou_per_class"].tolist()
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(first))]
    width = max(len("class"), *(len(n) for n in names))
    pct = _pct

    def delta(a: float, b: float) -> str:
        return "     -" if a != a or b != b else f"{100 * (b - a):+6.1f}"

    lines = [title] if title else []
    lines.append(f"{'class':<{width}}  before  after  change")
    lines.append("-" * (width + 24))
    for name, a, b in zip(names, first, second, strict=False):
        lines.append(f"{name:<{width}}   {pct(a)}  {pct(b)}  {delta(a, b)}")
    lines.append("-" * (width + 24))
    m0, m1 = float(before["miou"]), float(after["miou"])
    lines.append(f"{'mIoU':<{width}}   {pct(m0)}  {pct(m1)}  {delta(m0, m1)}")
    if "biou" in before and "biou" in after:  # what a refinement buys at the edges
        b0, b1 = float(before["biou"]), float(after["biou"])
        lines.append(f"{'BIoU':<{width}}   {pct(b0)}  {pct(b1)}  {delta(b0, b1)}")
    return "\n".join(lines)


def format_ap_table(
    results: dict[str, torch.Tensor], iou_types: Sequence[str], class_names: Sequence[str] | None
) -> str:
    """COCO AP (%) per class and IoU type, with the summary row."""
    per_class = [results[f"{t}_map_per_class"].reshape(-1).tolist() for t in iou_types]
    names = list(class_names[1:]) if class_names else [str(i + 1) for i in range(len(per_class[0]))]
    width = max(len("class"), *(len(n) for n in names))
    header = f"{'class':<{width}}" + "".join(f"  {t:>9}" for t in iou_types)
    lines = ["Test, COCO AP per class (%)", header, "-" * len(header)]
    for i, name in enumerate(names):
        cells = "".join("          -" if v[i] != v[i] else f"  {100 * v[i]:9.1f}" for v in per_class)
        lines.append(f"{name:<{width}}{cells}")
    lines.append("-" * len(header))
    lines.append(f"{'AP':<{width}}" + "".join(f"  {100 * float(results[f'{t}_map']):9.1f}" for t in iou_types))
    lines.append(f"{'AP50':<{width}}" + "".join(f"  {100 * float(results[f'{t}_map_50']):9.1f}" for t in iou_types))
    return "\n".join(lines)


def format_pq_table(
    results: Mapping[str, torch.Tensor], class_names: Sequence[str], things: Sequence[int], title: str = ""
) -> str:
    """PQ, SQ and RQ (%) per class with its kind (thing / stuff), then the overall, things and stuff rows.

    Where the results hold the semantic view's ``iou_per_class`` and ``miou``, an IoU column follows;
    where they hold the instance view's ``segm_map``, a line with the things' mask AP.
    """
    scores = [s for s in ("pq", "sq", "rq", "iou") if f"{s}_per_class" in results]
    per_class = [results[f"{score}_per_class"].tolist() for score in scores]
    width = max(len("class"), len("things"), *(len(n) for n in class_names))
    columns = {"pq": "PQ", "sq": "SQ", "rq": "RQ", "iou": "IoU"}
    header = f"{'class':<{width}}  kind   " + "  ".join(f"{columns[s]:>5}" for s in scores)
    rule = "-" * len(header)
    lines = [title] if title else []
    lines += [header, rule]
    for i, name in enumerate(class_names):
        kind = "thing" if i in things else "stuff"
        lines.append(f"{name:<{width}}  {kind:<5}  " + "  ".join(_pct(v[i]) for v in per_class))
    lines.append(rule)
    for label, suffix in (("all", ""), ("things", "_things"), ("stuff", "_stuff")):
        cells = [_pct(float(results[f"{score}{suffix}"])) for score in ("pq", "sq", "rq")]
        if "iou" in scores:
            cells.append(_pct(float(results["miou"])) if not suffix else "     ")
        lines.append(f"{label:<{width}}         " + "  ".join(cells).rstrip())
    if "segm_map" in results:
        ap, ap50 = (_pct(float(results[k])).strip() for k in ("segm_map", "segm_map_50"))
        lines.append(f"things as instances: mask AP {ap}, AP50 {ap50}")
    return "\n".join(lines)
