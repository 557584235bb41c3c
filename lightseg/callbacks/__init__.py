"""Lightning callbacks shipped with lightseg."""

from lightseg.callbacks.prediction_writer import SegmentationWriter

__all__ = ["SegmentationWriter"]
