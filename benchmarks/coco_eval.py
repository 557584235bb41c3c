"""Time COCO evaluation (what every validation epoch of an R-CNN task ends with) per backend.

A synthetic val2017-sized split: 5,000 images of 640x480 with 7 objects each on average
(80 categories), and 100 detections per image (jittered true boxes and random ones), as
boxes and as RLE masks. For each IoU type it times pycocotools as its users call it (loadRes
of the result list, evaluate, accumulate, summarise: the reference) and then what
`COCOEvaluator.compute` does with each backend, and checks that every AP equals the
reference's. Prints a table and appends it to docs/benchmarks.md. The target (issue 33):
mask evaluation at least 3x as fast as pycocotools.

    python benchmarks/coco_eval.py [--images 5000] [--detections 100]
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Any

import numpy as np
from pycocotools import mask as mask_api

from lightseg.metrics.coco import evaluate, load_ground_truth

from report import record

HEIGHT, WIDTH = 480, 640


def synthetic(images: int, detections: int, seed: int = 0) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    rng = np.random.default_rng(seed)
    categories = [{"id": i, "name": f"c{i}"} for i in range(1, 91) if i % 9 != 0][:80]
    ids = [c["id"] for c in categories]
    truth: dict[str, Any] = {"images": [], "annotations": [], "categories": categories}
    results: dict[str, list[dict[str, Any]]] = {"bbox": [], "segm": []}

    def polygon(x: float, y: float, w: float, h: float) -> list[list[float]]:
        return [[x, y, x + w, y, x + w, y + 0.7 * h, x + 0.6 * w, y + h, x, y + h]]

    for image_id in range(1, images + 1):
        truth["images"].append({"id": image_id, "file_name": f"{image_id}.jpg", "height": HEIGHT, "width": WIDTH})
        boxes = []
        for _ in range(int(rng.poisson(7))):
            w, h = rng.uniform(8, 300, 2)
            x, y = rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h)
            category = int(rng.choice(ids))
            boxes.append((x, y, w, h, category))
            truth["annotations"].append(
                {
                    "id": len(truth["annotations"]) + 1,
                    "image_id": image_id,
                    "category_id": category,
                    "bbox": [x, y, w, h],
                    "area": float(w * h * 0.88),
                    "iscrowd": 0,
                    "segmentation": polygon(x, y, w, h),
                }
            )
        for k in range(detections):
            if k < len(boxes):
                x, y, w, h, category = boxes[k]
                x, y = x + rng.normal(0, 4), y + rng.normal(0, 4)
            else:
                w, h = rng.uniform(8, 300, 2)
                x, y, category = rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h), int(rng.choice(ids))
            x, y = float(np.clip(x, 0, WIDTH - w)), float(np.clip(y, 0, HEIGHT - h))
            score = float(rng.uniform(0.3, 1.0) if k < len(boxes) else rng.uniform(0.0, 0.6))
            base = {"image_id": image_id, "category_id": category, "score": score}
            results["bbox"].append({**base, "bbox": [x, y, float(w), float(h)]})
            rle = mask_api.merge(mask_api.frPyObjects(polygon(x, y, float(w), float(h)), HEIGHT, WIDTH))
            results["segm"].append(
                {**base, "segmentation": {"size": [HEIGHT, WIDTH], "counts": rle["counts"].decode()}}
            )
    return truth, results


def plain_pycocotools(truth: dict[str, Any], results: list[dict[str, Any]], iou_type: str) -> tuple[float, float]:
    """pycocotools as its users call it (the reference): ``loadRes`` of the result list, evaluate, accumulate."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO()
        ground_truth.dataset = {**truth, "info": {}, "licenses": []}
        ground_truth.createIndex()
        start = time.perf_counter()
        evaluator = COCOeval(ground_truth, ground_truth.loadRes(results), iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return time.perf_counter() - start, float(evaluator.stats[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--detections", type=int, default=100)
    args = parser.parse_args()
    truth, results = synthetic(args.images, args.detections)
    rows = []
    for iou_type in ("bbox", "segm"):
        reference, ap = plain_pycocotools(truth, copy.deepcopy(results[iou_type]), iou_type)
        rows.append(("pycocotools as is (the reference)", iou_type, None, reference, ap))
        print(rows[-1], flush=True)
        for backend in ("faster_coco_eval", "pycocotools"):
            start = time.perf_counter()
            ground_truth = load_ground_truth(truth, backend)  # type: ignore[arg-type]
            loaded = time.perf_counter()
            stats, _ = evaluate(ground_truth, results[iou_type], iou_type, backend)  # type: ignore[arg-type]
            done = time.perf_counter()
            rows.append((f"lightseg, {backend} backend", iou_type, loaded - start, done - loaded, float(stats[0])))
            print(rows[-1], flush=True)
            if stats[0] != ap:
                raise SystemExit(f"{backend} {iou_type}: AP {stats[0]} differs from pycocotools' {ap}")
    header = (
        f"| evaluation ({args.images} images x {args.detections} detections) | IoU | ground truth (s) | "
        "evaluation (s) | speed-up vs pycocotools | AP |\n|---|---|---:|---:|---:|---:|"
    )
    references = {t: e for name, t, _, e, _ in rows if name.startswith("pycocotools as is")}
    lines = [
        f"| {name} | {t} | {'-' if g is None else f'{g:.1f}'} | {e:.1f} | {references[t] / e:.1f}x | {ap:.4f} |"
        for name, t, g, e, ap in rows
    ]
    record("COCO evaluation", header + "\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
