"""LoRA adapters on a backbone's linear layers, through ``peft`` (``pip install "lightseg[finetune]"``).

Low-rank adaptation (Hu et al., ICLR 2022) trains two small matrices beside each chosen
weight ``W`` (``W + (alpha / rank) B A``, ``B`` starting at zero) and freezes everything else
in the backbone: a ViT or DINOv2 encoder is fine-tuned with a fraction of its parameters while
the decoder trains whole. For export the adapters are merged into ``W``, so the exported
graph is the plain network.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar

from torch import nn

from lightseg.errors import LightsegError
from lightseg.groups import SettingsGroup


@dataclasses.dataclass(frozen=True)
class LoRASettings(SettingsGroup):
    """The ``lora`` option of a task: where the adapters go and how large they are.

    Args:
        rank: the rank ``r`` of each adapter (4 to 16 in the published recipes).
        alpha: the scale numerator: the adapters' output is multiplied by ``alpha / rank``.
        dropout: dropout on the adapters' input in training.
        targets: names (the last part) of the backbone's linear layers that get adapters:
            ``qkv`` (timm's ViT / DINOv2 attention), also ``proj``, ``fc1``, ``fc2`` (its MLP).
    """

    group_name: ClassVar[str] = "lora"

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("qkv",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rank < 1 or self.alpha <= 0 or not 0 <= self.dropout < 1 or not self.targets:
            raise LightsegError(
                f"lora needs rank >= 1, alpha > 0, dropout in [0, 1) and at least one target, got {self.as_dict()}"
            )


def add_lora(model: nn.Module, settings: LoRASettings, is_backbone: Callable[[str], bool]) -> int:
    """Put adapters on the backbone's ``settings.targets`` layers; freeze the rest of the backbone.

    ``is_backbone`` tells backbone module names apart (the task's own rule). Returns the number
    of adapted layers; a backbone without such layers is refused in one line naming the ones it has.
    """
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise LightsegError(
            'lora needs the peft package: pip install "lightseg[finetune]" (or pip install peft)'
        ) from None
    roots = [
        (name, module)
        for name, module in model.named_modules()
        if name and is_backbone(name) and not is_backbone(name.rsplit(".", 1)[0] if "." in name else "")
    ]
    linears = sorted({n.rsplit(".", 1)[-1] for r, m in roots for n, x in m.named_modules() if isinstance(x, nn.Linear)})
    if not roots or not set(settings.targets) & set(linears):
        has = ", ".join(linears[:12]) or "it has none: LoRA is for transformers, e.g. tu-vit_small_patch14_dinov2"
        raise LightsegError(f"lora targets {list(settings.targets)} match no linear layer of the backbone ({has})")
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,  # type: ignore[arg-type]  # peft annotates int; it takes any number
        lora_dropout=settings.dropout,
        target_modules=list(settings.targets),
    )
    for _, root in roots:
        inject_adapter_in_model(config, root)  # marks only the adapters of ``root`` trainable
    return sum(1 for m in model.modules() if hasattr(m, "lora_A"))


def merge_lora(model: nn.Module) -> int:
    """Merge every adapter of ``model`` into its weight and put the plain layer back (in place).

    Returns the number of merged layers; the model computes what it computed, without adapters.
    """
    merged = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            merge = getattr(child, "merge", None)
            if hasattr(child, "lora_A") and hasattr(child, "base_layer") and callable(merge):
                merge()
                setattr(parent, name, child.base_layer)
                merged += 1
    return merged
