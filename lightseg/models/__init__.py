"""Model builders: semantic architectures by name (:class:`ModelSpec`) and the R-CNN family (:class:`RCNNSpec`)."""

from lightseg.models.detection import KeypointRCNNSpec, MaskRCNNSpec, RCNNSpec
from lightseg.models.semantic import ARCHITECTURES, ModelSpec, SegmentationModel, build_semantic_model

__all__ = [
    "ARCHITECTURES",
    "KeypointRCNNSpec",
    "MaskRCNNSpec",
    "ModelSpec",
    "RCNNSpec",
    "SegmentationModel",
    "build_semantic_model",
]
