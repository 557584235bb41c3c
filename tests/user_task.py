"""A user's own task subclass, named in YAML by import path (tests the STYLE.md example)."""

from __future__ import annotations

from segmentation_models_pytorch.losses import LovaszLoss
from torch import nn

from lightseg.tasks import SemanticSegmentationTask


class LovaszSegmentation(SemanticSegmentationTask):
    def build_loss(self) -> nn.Module:
        return LovaszLoss("multiclass", ignore_index=self.hparams["ignore_index"])
