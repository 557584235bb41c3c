"""``lightseg export``: a trained model as ONNX, TorchScript or torch.export, verified against PyTorch.

:mod:`~lightseg.export.writer` writes and verifies (``export_task``), :mod:`~lightseg.export.graphs`
holds the exportable graphs of each task kind, :mod:`~lightseg.export.verify` runs an exported
file and compares it with PyTorch.
"""

from lightseg.export.writer import (
    ExportResult,
    ExportSettings,
    category_ids,
    data_images,
    describe,
    export_task,
    metadata,
    verify,
)

__all__ = [
    "ExportResult", "ExportSettings", "category_ids", "data_images", "describe", "export_task", "metadata", "verify",
]  # fmt: skip
