"""Lightning callbacks shipped with lightseg."""

from lightseg.callbacks.checkpoints import RequeueCheckpoint
from lightseg.callbacks.dashboard import SegmentationDashboard
from lightseg.callbacks.dense_crf import DenseCRF, DenseCRFSearch
from lightseg.callbacks.line_progress import LineProgress
from lightseg.callbacks.per_image import PerImageScores
from lightseg.callbacks.prediction_writer import SegmentationWriter

__all__ = [
    "DenseCRF",
    "DenseCRFSearch",
    "LineProgress",
    "PerImageScores",
    "RequeueCheckpoint",
    "SegmentationDashboard",
    "SegmentationWriter",
]
