"""Metrics: dataset-level confusion-matrix metrics for semantic segmentation."""

from lightseg.metrics.segmentation import SegmentationMetrics, confusion_metrics, format_class_table

__all__ = ["SegmentationMetrics", "confusion_metrics", "format_class_table"]
