"""How a task's parameters meet its optimizer and schedule: groups, learning-rate multipliers, the run's length.

:meth:`lightseg.tasks.BaseTask.parameter_groups` and ``configure_optimizers`` call these with
the task's settings (``head_lr_mult``, ``no_weight_decay_on``, ``freeze_backbone``,
``layer_decay``) and its trainer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from lightning.pytorch import LightningModule
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from lightseg.errors import LightsegError
from lightseg.optim import PolyLR, WarmupMultiStepLR

#: the length a poly schedule is given in a run without end: its rate stays at the base rate
UNENDING_STEPS = 2**62
#: module names whose parameters count as backbone for ``head_lr_mult``
BACKBONE_MODULES = frozenset({"encoder", "backbone", "to_pool3", "to_pool4", "to_pool5", "fc6", "fc7"})
#: normalisation layers with running statistics (torch's public classes: a lazy one becomes one of these when built)
RUNNING_STATISTICS_NORMS = (
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm1d, nn.InstanceNorm2d,
    nn.InstanceNorm3d,
)  # fmt: skip
_NORMS = (*RUNNING_STATISTICS_NORMS, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def group_parameters(
    task: nn.Module,
    is_backbone: Callable[[str], bool],
    layers: dict[str, int],
    head_lr_mult: float = 1.0,
    no_weight_decay_on: Sequence[str] = (),
    backbone_frozen: bool = False,
    layer_decay: float = 1.0,
) -> list[dict[str, Any]]:
    """``task``'s trainable parameters in optimizer groups (see :meth:`~lightseg.tasks.BaseTask.parameter_groups`).

    Args:
        task: the module whose parameters are grouped (its name is in the errors).
        is_backbone: whether a parameter name belongs to the backbone.
        layers: each backbone parameter's layer index, for ``layer_decay`` (empty: one rate).
        head_lr_mult: the rate multiplier of everything but the backbone.
        no_weight_decay_on: ``norm`` and / or ``bias``: parameters in groups without weight decay.
        backbone_frozen: the backbone is frozen for the whole run: in no group.
        layer_decay: the backbone's layer ``i`` of ``L`` trains at ``layer_decay ** (L - i)`` times the rate.
    """
    skip = set(no_weight_decay_on)
    norm_params = {
        id(p) for module in task.modules() if isinstance(module, _NORMS) for p in module.parameters(recurse=False)
    }
    deepest = max(layers.values(), default=0)
    split = head_lr_mult != 1.0 or bool(layers) or backbone_frozen
    groups: dict[tuple[str, bool], tuple[float, list[nn.Parameter]]] = {}
    for name, param in task.named_parameters():
        if not param.requires_grad:
            continue
        in_backbone = is_backbone(name)
        if backbone_frozen and in_backbone:
            continue
        no_decay = ("norm" in skip and id(param) in norm_params) or ("bias" in skip and name.endswith("bias"))
        if not split:
            part, rate = "all", 1.0
        elif not in_backbone:
            part, rate = "head", head_lr_mult
        elif layers:
            layer = layers[name]
            part, rate = f"backbone_layer{layer:02d}", layer_decay ** (deepest - layer)
        else:
            part, rate = "backbone", 1.0
        groups.setdefault((part, no_decay), (rate, []))[1].append(param)
    result = []
    order = sorted(groups.items(), key=lambda item: (item[0][0] == "head", item[0]))
    for (part, no_decay), (rate, params) in order:
        group: dict[str, Any] = {"params": params, "name": part + ("_no_decay" if no_decay else ""), "lr_mult": rate}
        if no_decay:
            group["weight_decay"] = 0.0
        result.append(group)
    parts = {g["name"].split("_")[0] for g in result}
    if backbone_frozen and "head" not in parts:
        raise LightsegError(
            f"freeze_backbone: true leaves nothing to train: {type(task).__name__}'s model has no parameters "
            "outside its backbone (see is_backbone_parameter); freeze it for some epochs only, or not at all"
        )
    if (head_lr_mult != 1.0 or layers) and not backbone_frozen and not {"backbone", "head"} <= parts:
        setting = f"head_lr_mult={head_lr_mult}" if head_lr_mult != 1.0 else f"layer_decay={layer_decay}"
        raise LightsegError(
            f"{setting}: {type(task).__name__}'s model does not have both trainable backbone and "
            "head parameters (see is_backbone_parameter); leave it at its default"
        )
    if len(result) == 1:
        del result[0]["name"]  # a single group: the learning-rate monitor logs it as lr-<Optimizer>
    return result


def fit_schedule_to_run(scheduler: Any, task: LightningModule) -> None:
    """Give a schedule that needs the run's length (:class:`PolyLR`, :class:`WarmupMultiStepLR`) ``task``'s run's.

    Other schedules are left alone (and the task need not be attached to a trainer).
    """
    if isinstance(scheduler, PolyLR) and scheduler.needs_total_iters:
        trainer = task.trainer
        total = trainer.estimated_stepping_batches  # infinite for max_epochs -1: train until stopped
        if math.isfinite(total):
            scheduler.total_iters = int(total)
        else:
            scheduler.total_iters = UNENDING_STEPS
            rank_zero_warn(
                "the run has no end (max_epochs -1, no max_steps): PolyLR has nothing to decay towards and keeps "
                "the base learning rate; give lr_scheduler.init_args.total_iters to decay over that many steps"
            )
    if isinstance(scheduler, WarmupMultiStepLR) and scheduler.needs_iters_per_epoch:
        trainer = task.trainer
        total = trainer.estimated_stepping_batches
        if math.isfinite(total):
            epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else 1
            scheduler.set_iters_per_epoch(math.ceil(total / epochs))
        else:  # estimated_stepping_batches has set up the training data: one epoch's optimizer steps
            batches = trainer.num_training_batches
            steps = batches / trainer.accumulate_grad_batches if math.isfinite(batches) else 1
            scheduler.set_iters_per_epoch(max(1, math.ceil(steps)))
