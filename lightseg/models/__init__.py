"""Model builders: semantic architectures by name (and, later, the R-CNN family)."""

from lightseg.models.semantic import ARCHITECTURES, SegmentationModel, build_semantic_model

__all__ = ["ARCHITECTURES", "SegmentationModel", "build_semantic_model"]
