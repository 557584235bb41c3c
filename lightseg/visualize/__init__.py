"""Pictures for dashboards and run folders: masks over images, detections, legends, confusion-matrix heatmaps.

Pictures meant for a person (prediction overlays, dashboard samples) are drawn at a size one
can see (small images enlarged by a whole factor), in the data set's palette (:func:`~lightseg.colors.class_palette`)
with each region outlined, and carry a legend of the classes they show. One module per kind of
picture: :mod:`~lightseg.visualize.masks`, :mod:`~lightseg.visualize.panels`,
:mod:`~lightseg.visualize.charts`, :mod:`~lightseg.visualize.detections`.
"""

from lightseg.visualize.charts import confusion_matrix_image
from lightseg.visualize.detections import draw_detections
from lightseg.visualize.masks import (
    DISPLAY_SIDE,
    HALO_COLOUR,
    PALETTE,
    SAMPLE_SIDE,
    annotated_overlay,
    display_rgb,
    display_scale,
    enlarge,
    instance_shades,
    legend,
    outline_width,
    overlay,
    panoptic_overlay,
    shown_labels,
    to_uint8_image,
    with_legend,
)
from lightseg.visualize.panels import labelled_rows, sample_panel

__all__ = [
    "DISPLAY_SIDE",
    "HALO_COLOUR",
    "PALETTE",
    "SAMPLE_SIDE",
    "annotated_overlay",
    "confusion_matrix_image",
    "display_rgb",
    "display_scale",
    "draw_detections",
    "enlarge",
    "instance_shades",
    "labelled_rows",
    "legend",
    "outline_width",
    "overlay",
    "panoptic_overlay",
    "sample_panel",
    "shown_labels",
    "to_uint8_image",
    "with_legend",
]
