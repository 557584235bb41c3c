"""Lightning callbacks shipped with lightseg."""

from lightseg.callbacks.dashboard import SegmentationDashboard
from lightseg.callbacks.dense_crf import DenseCRF, DenseCRFSearch
from lightseg.callbacks.prediction_writer import SegmentationWriter

__all__ = ["DenseCRF", "DenseCRFSearch", "SegmentationDashboard", "SegmentationWriter"]
