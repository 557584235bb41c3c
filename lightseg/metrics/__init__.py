"""Metrics: dataset-level confusion-matrix metrics for semantic segmentation, COCO AP for detection."""

from lightseg.metrics.coco import COCOEvaluator
from lightseg.metrics.segmentation import SegmentationMetrics, confusion_metrics, format_class_table

__all__ = ["COCOEvaluator", "SegmentationMetrics", "confusion_metrics", "format_class_table"]
