"""Writes semantic predictions: palette PNGs of class indices and overlays."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image
from typing_extensions import override

from lightseg.datamodules.io import voc_colormap
from lightseg.errors import LightsegError
from lightseg.visualize import overlay


class SegmentationWriter(BasePredictionWriter):
    """For each input image, ``masks/<name>.png`` and ``overlays/<name>.png`` in ``output_dir``.

    The mask is a palette PNG of class indices (VOC palette) of the input's size; the overlay
    blends the class colours over the image (background left as is). Sub-folders of the
    input folder are mirrored. An existing, non-empty ``output_dir`` is refused unless
    ``overwrite`` is set, before anything is predicted.

    Args:
        output_dir: where to write.
        overwrite: allow writing into an existing, non-empty folder.
        alpha: opacity of the class colours in the overlay.
    """

    def __init__(self, output_dir: str = "predictions", overwrite: bool = False, alpha: float = 0.5) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)
        self.overwrite = overwrite
        self.alpha = alpha
        self.palette = voc_colormap()

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "predict":
            return
        if self.output_dir.exists() and any(self.output_dir.iterdir()) and not self.overwrite:
            raise LightsegError(
                f"output folder {self.output_dir} already exists and is not empty; choose another with "
                "--prediction.output_dir or pass --prediction.overwrite true"
            )
        (self.output_dir / "masks").mkdir(parents=True, exist_ok=True)
        (self.output_dir / "overlays").mkdir(parents=True, exist_ok=True)

    @override
    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        images = batch["image"].detach().cpu()
        for i, (relative, (height, width)) in enumerate(zip(prediction["path"], prediction["size"], strict=True)):
            mask = prediction["mask"][i, :height, :width].numpy()
            image = (images[i, :, :height, :width].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            name = Path(relative).with_suffix(".png")
            self._save_mask(mask, self.output_dir / "masks" / name)
            self._save_overlay(image, mask, self.output_dir / "overlays" / name)

    def _save_mask(self, mask: np.ndarray, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if mask.dtype != np.uint8:  # more than 256 classes: a 16-bit grey PNG of indices
            Image.fromarray(mask.astype(np.uint16)).save(path)
            return
        png = Image.fromarray(mask, mode="P")
        png.putpalette(self.palette.ravel().tolist())
        png.save(path)

    def _save_overlay(self, image: np.ndarray, mask: np.ndarray, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(overlay(image, mask, self.alpha)).save(path)
