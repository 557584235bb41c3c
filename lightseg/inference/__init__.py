"""Inference modes for semantic models: whole image, sliding window, multi-scale + flip, large images.

- :mod:`~lightseg.inference.settings`: :class:`InferenceSettings`, the one value every caller reads.
- :mod:`~lightseg.inference.windows`: the sliding window and test-time augmentation in memory.
- :mod:`~lightseg.inference.tiling`: the same sliding window over images read window by window.
"""

from lightseg.inference.settings import LEGACY_KEYS, InferenceSettings, migrate_flat_settings
from lightseg.inference.tiling import BAND_BYTES, RowBlend, band_columns, column_stripes, tiled_logits
from lightseg.inference.windows import (
    MIN_RAMP_WEIGHT,
    Blend,
    Forward,
    pair_of,
    slide_logits,
    tta_probs,
    window_boxes,
    window_starts,
    window_weights,
)

__all__ = [
    "BAND_BYTES",
    "LEGACY_KEYS",
    "MIN_RAMP_WEIGHT",
    "Blend",
    "Forward",
    "InferenceSettings",
    "RowBlend",
    "band_columns",
    "column_stripes",
    "migrate_flat_settings",
    "pair_of",
    "slide_logits",
    "tiled_logits",
    "tta_probs",
    "window_boxes",
    "window_starts",
    "window_weights",
]
