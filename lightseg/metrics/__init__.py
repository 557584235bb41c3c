"""Metrics: dataset-level confusion-matrix metrics, Boundary IoU and iIoU for semantic segmentation, COCO AP."""

from lightseg.metrics.coco import COCOEvaluator
from lightseg.metrics.segmentation import (
    EvaluationProtocol,
    ImageCounts,
    SegmentationMetrics,
    confusion_metrics,
    format_class_table,
    image_scores,
)

__all__ = [
    "COCOEvaluator",
    "EvaluationProtocol",
    "ImageCounts",
    "SegmentationMetrics",
    "confusion_metrics",
    "format_class_table",
    "image_scores",
]
