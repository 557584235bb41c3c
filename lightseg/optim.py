"""Learning-rate schedules that segmentation recipes use."""

from __future__ import annotations

from bisect import bisect_right
from typing import ClassVar, Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, PolynomialLR

from lightseg.errors import LightsegError


class PolyLR(PolynomialLR):
    """DeepLab's "poly" schedule, ``lr = base_lr * (1 - it / total_iters) ** power``, stepped per iteration.

    With ``total_iters=None`` the task fills in the trainer's total number of optimizer
    steps (``trainer.estimated_stepping_batches``) before training starts, so one config
    works for any data set size, batch size or number of devices.

    With ``warmup_iters`` the rate first rises linearly from ``warmup_factor`` times the base
    rate to the base rate, and the poly decay runs over the remaining iterations (the
    SegFormer / Mask2Former / ViT recipes: MMSegmentation's ``LinearLR`` then ``PolyLR``).

    Args:
        optimizer: the wrapped optimizer.
        total_iters: iterations until the learning rate reaches 0 (``None``: the whole run).
        power: the exponent (0.9 in DeepLab, 1.0 in SegFormer).
        warmup_iters: linear warm-up length in iterations (0: none).
        warmup_factor: the warm-up's starting fraction of the base rate (SegFormer: 1e-6).
    """

    interval: ClassVar[Literal["step", "epoch"]] = "step"

    def __init__(
        self,
        optimizer: Optimizer,
        total_iters: int | None = None,
        power: float = 0.9,
        warmup_iters: int = 0,
        warmup_factor: float = 1e-6,
    ) -> None:
        if warmup_iters < 0 or not 0 <= warmup_factor <= 1:
            raise LightsegError(
                f"PolyLR: warmup_iters must be >= 0 and warmup_factor in [0, 1], got {warmup_iters} and {warmup_factor}"
            )
        self.needs_total_iters = total_iters is None
        self.warmup_iters = warmup_iters
        self.warmup_factor = warmup_factor
        super().__init__(optimizer, total_iters=total_iters or 1, power=power)

    def factor(self, iteration: int) -> float:
        """The multiplier of the base rate at ``iteration``."""
        if iteration < self.warmup_iters:
            alpha = iteration / self.warmup_iters
            return self.warmup_factor * (1 - alpha) + alpha
        span = max(1, self.total_iters - self.warmup_iters)
        return (1.0 - min(iteration - self.warmup_iters, span) / span) ** self.power

    def get_lr(self) -> list[float]:  # type: ignore[override]
        # in closed form: the warm-up and the decay after it are one function of the iteration
        return [float(base) * self.factor(self.last_epoch) for base in self.base_lrs]


class WarmupMultiStepLR(LRScheduler):
    """torchvision's detection recipe: linear warm-up over the first iterations, then x ``gamma`` at epoch milestones.

    Stepped per iteration. ``lr = base_lr * gamma ** (milestones passed) * warm-up``, where
    the warm-up factor rises linearly from ``warmup_factor`` to 1 over ``warmup_iters``
    iterations (at most the first epoch, as in torchvision's reference scripts). With
    ``iters_per_epoch=None`` the task fills in the trainer's optimizer steps per epoch.

    Args:
        optimizer: the wrapped optimizer.
        milestones: epochs after which the rate is multiplied by ``gamma`` (torchvision's
            Mask R-CNN recipe: 16 and 22 of 26).
        gamma: the factor.
        warmup_iters: warm-up length in iterations.
        warmup_factor: the warm-up's starting fraction of the rate.
        iters_per_epoch: optimizer steps per epoch (``None``: from the trainer).
    """

    interval: ClassVar[Literal["step", "epoch"]] = "step"

    def __init__(
        self,
        optimizer: Optimizer,
        milestones: list[int],
        gamma: float = 0.1,
        warmup_iters: int = 1000,
        warmup_factor: float = 0.001,
        iters_per_epoch: int | None = None,
    ) -> None:
        self.milestones = sorted(milestones)
        self.gamma = gamma
        self.warmup_iters = warmup_iters
        self.warmup_factor = warmup_factor
        self.needs_iters_per_epoch = iters_per_epoch is None
        self.iters_per_epoch = iters_per_epoch or 1
        super().__init__(optimizer)

    def set_iters_per_epoch(self, iters: int) -> None:
        """Fix the epoch length (and so the warm-up cap and milestones in iterations), then reapply the rate."""
        self.iters_per_epoch = max(1, iters)
        self.warmup_iters = min(self.warmup_iters, max(1, self.iters_per_epoch - 1))
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def factor(self, iteration: int) -> float:
        """The multiplier of the base rate at ``iteration``."""
        value = self.gamma ** bisect_right(self.milestones, iteration // self.iters_per_epoch)
        if iteration < self.warmup_iters:
            alpha = iteration / self.warmup_iters
            value *= self.warmup_factor * (1 - alpha) + alpha
        return value

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return [float(base) * self.factor(self.last_epoch) for base in self.base_lrs]
