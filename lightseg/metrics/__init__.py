"""Metrics: confusion-matrix metrics, Boundary IoU and iIoU for semantic segmentation, COCO AP, panoptic quality."""

from lightseg.metrics.coco import COCOEvaluator
from lightseg.metrics.panoptic import PanopticQuality, pq_compute
from lightseg.metrics.segmentation import (
    EvaluationProtocol,
    ImageCounts,
    SegmentationMetrics,
    confusion_metrics,
    image_scores,
)
from lightseg.metrics.tables import format_ap_table, format_class_table, format_comparison_table

__all__ = [
    "COCOEvaluator",
    "EvaluationProtocol",
    "ImageCounts",
    "PanopticQuality",
    "SegmentationMetrics",
    "confusion_metrics",
    "format_ap_table",
    "format_class_table",
    "format_comparison_table",
    "image_scores",
    "pq_compute",
]
