"""Learning-rate schedules that segmentation recipes use."""

from __future__ import annotations

from typing import ClassVar, Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import PolynomialLR


class PolyLR(PolynomialLR):
    """DeepLab's "poly" schedule, ``lr = base_lr * (1 - it / total_iters) ** power``, stepped per iteration.

    With ``total_iters=None`` the task fills in the trainer's total number of optimizer
    steps (``trainer.estimated_stepping_batches``) before training starts, so one config
    works for any data set size, batch size or number of devices.

    Args:
        optimizer: the wrapped optimizer.
        total_iters: iterations until the learning rate reaches 0 (``None``: the whole run).
        power: the exponent (0.9 in DeepLab).
    """

    interval: ClassVar[Literal["step", "epoch"]] = "step"

    def __init__(self, optimizer: Optimizer, total_iters: int | None = None, power: float = 0.9) -> None:
        self.needs_total_iters = total_iters is None
        super().__init__(optimizer, total_iters=total_iters or 1, power=power)
