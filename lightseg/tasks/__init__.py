"""LightningModules per task; subclass them and override a ``build_*`` seam."""

from lightseg.tasks.base import BaseTask
from lightseg.tasks.detection import DetectionTask, InstanceSegmentationTask, KeypointDetectionTask
from lightseg.tasks.onnx import ONNXSegmentationTask
from lightseg.tasks.panoptic import PanopticSegmentationTask
from lightseg.tasks.semantic import SemanticSegmentationTask

__all__ = [
    "BaseTask",
    "DetectionTask",
    "InstanceSegmentationTask",
    "KeypointDetectionTask",
    "ONNXSegmentationTask",
    "PanopticSegmentationTask",
    "SemanticSegmentationTask",
]
