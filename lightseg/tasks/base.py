"""The base task: hyperparameters, build seams, one ``step``, injected optimizer and schedule."""

from __future__ import annotations

import functools
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from typing_extensions import override

from lightseg.contract import TaskContext, data_description, datamodule_of
from lightseg.errors import LightsegError
from lightseg.groups import NetworkSpec, SettingsGroup, migrate_flat_group
from lightseg.models.lora import LoRASettings, add_lora
from lightseg.tasks.checkpoint_state import capture_rng, incompatibility, restore_rng, with_migrated_hparams
from lightseg.tasks.optimisation import (
    BACKBONE_MODULES,
    RUNNING_STATISTICS_NORMS,
    fit_schedule_to_run,
    group_parameters,
)
from lightseg.types import Stage
from lightseg.weights import LoadReport, check_weights_option, load_weights_file

#: ``compile``'s torch.compile modes (``true``: ``default``)
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
COMPILE_MODES: tuple[str, ...] = CompileMode.__args__  # type: ignore[attr-defined]
#: what torch's inductor builds CPU kernels with (any one, or ``$CXX``)
CXX_COMPILERS = ("g++", "clang++", "c++")


class BaseTask(LightningModule, ABC):
    """The task: model, loss, metrics and optimiser (--model NAME; its options: --model.help NAME).

    Base of every lightseg task: subclasses implement the ``build_*`` seams and :meth:`step`.
    The ``__init__`` signature of a task is its YAML schema: every argument is saved as a
    hyperparameter (``self.hparams``), and a user's subclass changes one seam in a few
    lines and is named in the config by its import path.

    Args:
        optimizer: a callable ``params -> Optimizer`` (in YAML: ``class_path`` + ``init_args``).
        lr_scheduler: a callable ``optimizer -> LRScheduler``, or ``None`` for a constant rate.
            :class:`lightseg.optim.PolyLR` steps per iteration; others per epoch unless
            ``lr_interval`` says otherwise.
        lr_interval: ``step`` or ``epoch``; ``None`` takes the scheduler's own preference.
        head_lr_mult: learning-rate multiplier of everything but the backbone (the classifier,
            decoder, ASPP, FPN and R-CNN heads): DeepLab v2's release trains its classifier at
            10x the backbone's rate. Any schedule scales every group alike.
        no_weight_decay_on: parameters without weight decay: ``norm`` (BatchNorm, GroupNorm,
            LayerNorm weights and biases) and/or ``bias`` (every bias), as torchvision's
            recipes do with ``--norm-weight-decay 0``.
        init_from: a lightseg checkpoint (or a state dict of this task's model) to start from
            for fine-tuning: every weight whose name and shape fit is copied when a run starts
            without ``--ckpt_path``; heads of another class count keep their fresh
            initialisation and are listed. Optimizer, schedule and epoch are not restored
            (that is ``--ckpt_path``).
        freeze_backbone: ``true`` trains the head only (the backbone, see
            :meth:`is_backbone_parameter`, gets no gradient, no optimizer state and keeps its
            normalisation statistics); a number ``N`` freezes it for the first ``N`` epochs, after
            which it trains at its scheduled rate; ``false`` (or 0) trains everything.
        layer_decay: layer-wise learning-rate decay of a timm backbone (``tu-<name>``: ViT,
            DINOv2, ConvNeXt, Swin, ...) or a transformers encoder (``hf_*``, ``mask2former``,
            ``eomt``): the backbone's layer ``i`` of ``L`` trains at ``layer_decay ** (L - i)`` times
            the rate, its last layer at the full rate (BEiT's, ConvNeXt's and DINOv2's segmentation
            recipes: 0.65 to 0.9; EoMT's: 0.8); ``null``: one rate.
        lora: LoRA adapters on the backbone's linear layers (a :class:`~lightseg.models.lora.LoRASettings`,
            e.g. ``lora: {rank: 8, targets: [qkv]}`` for a ViT / DINOv2 backbone): the rest of the
            backbone is frozen, the head trains whole, and export merges the adapters into the
            weights; ``null``: none. Needs ``pip install "lightseg[finetune]"``.
        channels_last: keep the model's weights and activations in channels-last (NHWC) memory:
            faster convolutions on CPUs (oneDNN's kernels prefer it) and on tensor-core GPUs,
            especially in 16-bit precision; the same arithmetic (docs/benchmarks.md has the speeds).
        compile: ``torch.compile`` what :meth:`compile_targets` names (the whole network of a semantic
            model; the backbone and FPN of an R-CNN, whose heads' proposals and NMS depend on the
            data) in place, so checkpoints keep their keys: ``true`` (torch's ``default`` mode) or a
            mode: ``reduce-overhead``, ``max-autotune``, ``max-autotune-no-cudagraphs``. On a CPU
            it needs a C++ compiler (g++); the first batches of each input size take the compile time.
    """

    monitor: ClassVar[str] = "val_loss"
    mode: ClassVar[Literal["min", "max"]] = "min"
    stages: ClassVar[tuple[str, ...]] = ("train", "val", "test")
    #: the type of the task's ``network`` argument (its architecture and options as one group)
    network_spec: ClassVar[type[NetworkSpec]] = NetworkSpec
    #: the task's network group, set by the subclass's ``__init__`` (:meth:`take_network`) before this one's
    network: NetworkSpec

    def __init__(
        self,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        lr_interval: Literal["step", "epoch"] | None = None,
        head_lr_mult: float = 1.0,
        no_weight_decay_on: Sequence[Literal["norm", "bias"]] = (),
        init_from: str | None = None,
        freeze_backbone: bool | int = False,
        layer_decay: float | None = None,
        lora: LoRASettings | None = None,
        channels_last: bool = False,
        compile: bool | CompileMode = False,
    ) -> None:
        settings = LoRASettings.of(lora) if lora is not None else None
        super().__init__()
        if head_lr_mult < 0:
            raise LightsegError(f"head_lr_mult must be >= 0, got {head_lr_mult}")
        if not isinstance(freeze_backbone, bool) and freeze_backbone < 0:
            raise LightsegError(
                f"freeze_backbone must be true, false or a number of epochs >= 0, got {freeze_backbone}"
            )
        if not isinstance(compile, bool) and compile not in COMPILE_MODES:
            raise LightsegError(f"compile must be true, false or a mode ({', '.join(COMPILE_MODES)}), got {compile!r}")
        if layer_decay is not None and not 0 < layer_decay <= 1:
            raise LightsegError(
                f"layer_decay must be in (0, 1] (0.65 to 0.9 in the published recipes), got {layer_decay}"
            )
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        # plain values in checkpoints and hparams.yaml (a subclass's **kwargs carry the value as given)
        self.hparams["lora"] = settings.as_dict() if settings is not None else None
        for key, value in list(self.hparams.items()):
            if isinstance(value, SettingsGroup):
                self.hparams[key] = value.as_dict()
        if hasattr(self, "network"):
            self.hparams["network"] = self.network.as_dict()
            for name in self.__dict__.pop("_flat_network", ()):  # its older spelling, as a subclass's frame kept it
                self.hparams.pop(name, None)
        self._initialised_from: str | None = None
        self._compiled = False
        #: optimizer steps of the run (set when training starts; what schedules inside the model follow)
        self._total_steps = 1.0
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.model = self.build_model()
        if settings is not None:
            add_lora(self.model, settings, self.is_backbone_parameter)
        self.criterion = self.build_loss()
        self.metrics = nn.ModuleDict({f"{stage}_metrics": self.build_metrics() for stage in self.stages})
        # the last dataset-level results of each evaluated stage (:meth:`stage_results`)
        self._stage_results: dict[str, dict[str, torch.Tensor]] = {}

    def take_network(self, network: NetworkSpec | dict[str, Any] | str | None, kwargs: dict[str, Any]) -> None:
        """Set :attr:`network` from the ``network`` argument and the older flat settings in ``kwargs``.

        A subclass's ``__init__`` calls this before ``super().__init__(**kwargs)``: the flat
        spelling (``arch="unet"`` beside ``num_classes``) is popped from ``kwargs`` into the group,
        and a name alone (``"deeplabv3"``) is the architecture with every default.
        """
        flat = tuple(name for name in self.network_spec.names() if name in kwargs)
        given = {"arch": network} if isinstance(network, str) else network
        self.network = self.network_spec.with_flat(given, kwargs)
        self._flat_network = flat

    @classmethod
    def migrate_hparams(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        """A checkpoint's saved hyperparameters in the form this version's ``__init__`` takes.

        Called before a checkpoint's hyperparameters rebuild the task (``--ckpt_path``); a task
        whose arguments changed form moves the old ones here, so that its checkpoints keep working.
        Here: the network's settings, saved flat before they were one group.
        """
        if cls.network_spec is NetworkSpec:  # a task without a network group of lightseg's
            return hparams
        return migrate_flat_group(hparams, "network", cls.network_spec)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:
        """Lightning's ``load_from_checkpoint``, the saved hyperparameters migrated first (:meth:`migrate_hparams`).

        Lightning rebuilds the task from the checkpoint's hyperparameters, so a checkpoint whose
        arguments changed form is rewritten (in memory) before it does.
        """
        return super().load_from_checkpoint(
            with_migrated_hparams(checkpoint_path, cls.migrate_hparams), *args, **kwargs
        )

    @abstractmethod
    def build_model(self) -> nn.Module:
        """Build the network from ``self.hparams``."""

    def compile_targets(self) -> list[nn.Module]:
        """What ``compile`` compiles: the whole network (a subclass names the parts that can take it)."""
        return [self.model]

    @override
    def configure_model(self) -> None:
        # Lightning's hook, called on the device before each run: memory format and compilation
        if self.hparams.get("channels_last"):
            self.model.to(memory_format=torch.channels_last)
        mode = self.hparams.get("compile")
        if not mode or self._compiled:
            return
        if self.device.type == "cpu" and not (os.environ.get("CXX") or any(map(shutil.which, CXX_COMPILERS))):
            raise LightsegError(
                f"compile={mode!r} on a CPU needs a C++ compiler, and none is on PATH ({', '.join(CXX_COMPILERS)}) "
                "or in $CXX: install one (apt-get install g++) or set compile: false"
            )
        for module in self.compile_targets():
            module.compile(mode=None if mode is True else mode)
        self._compiled = True

    @abstractmethod
    def build_loss(self) -> nn.Module:
        """Build the training criterion from ``self.hparams``."""

    @abstractmethod
    def build_metrics(self) -> nn.Module:
        """Build one stage's metric (called once per stage)."""

    @abstractmethod
    def step(self, batch: Any, stage: Stage) -> torch.Tensor:
        """Forward, loss, logging and metric update for one batch; returns the loss."""

    def init_weights_from(self, path: str) -> LoadReport:
        """Copy the weights of a lightseg checkpoint (or state dict) that fit this task (see ``init_from``)."""
        check_weights_option("init_from", path, ())
        report = load_weights_file(self.model, path, "init_from")  # the network; loss settings stay the config's
        self._initialised_from = path
        return report

    @override
    def setup(self, stage: str) -> None:
        # init_from applies to a run that starts from the configured weights, never over a
        # checkpoint that the run resumes or evaluates (Lightning restores it after setup)
        path = self.hparams.get("init_from")
        resuming = self._trainer is not None and self.trainer.ckpt_path is not None
        if path and not resuming and self._initialised_from != path:
            self.init_weights_from(path)

    @property
    def class_names(self) -> Sequence[str] | None:
        """Class names from the attached data module, if it has one of the right length."""
        data = data_description(datamodule_of(self.trainer)) if self._trainer is not None else None
        names = data.class_names if data is not None else None
        return names if names is not None and len(names) == self.hparams.get("num_classes") else None

    @property
    def class_names_or_indices(self) -> list[str]:
        """:attr:`class_names`, or the class indices as text where the data names none (tables, logs)."""
        return list(self.class_names or [str(i) for i in range(int(self.hparams["num_classes"]))])

    def context(self) -> TaskContext:
        """What callbacks, the prediction writer and export know of this task (see :mod:`lightseg.contract`)."""
        return TaskContext(
            "semantic",
            int(self.hparams["num_classes"]),
            tuple(self.class_names_or_indices),
            int(self.hparams.get("ignore_index", 255)),
            monitor=self.monitor,
            mode=self.mode,
            arch=self.network.arch if hasattr(self, "network") else "",
            backbone=self._backbone_name,
        )

    @property
    def _backbone_name(self) -> str | None:
        return self.network.backbone_name if hasattr(self, "network") else None

    def stage_results(self, stage: str) -> dict[str, torch.Tensor] | None:
        """The dataset-level results of ``stage``'s last epoch (``None`` before one ended)."""
        return self._stage_results.get(stage)

    def stage_metrics(self, stage: str) -> Any:
        """The metric instance of ``stage``."""
        return self.metrics[f"{stage}_metrics"]

    @override
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.step(batch, "train")

    @override
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.step(batch, "val")

    @override
    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.step(batch, "test")

    def is_backbone_parameter(self, name: str) -> bool:
        """Whether the parameter ``name`` belongs to the (pretrainable) backbone, for ``head_lr_mult``.

        Backbones are the modules named ``encoder`` (smp), ``backbone`` (torchvision; for
        detectors its ``body``, not the FPN), VGG16's layers up to fc7 (FCN), and the encoder
        that a transformers model's wrapper names (``is_backbone``).
        """
        # transformers' models name their encoders their own way: their wrapper knows which is which
        net = getattr(self.model, "net", None)
        if hasattr(net, "is_backbone") and name.startswith("model.net."):
            return bool(net.is_backbone(name.removeprefix("model.net.")))  # type: ignore[union-attr]
        parts = name.split(".")
        if "fpn" in parts:
            return False
        return any(part in BACKBONE_MODULES for part in parts)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The trainable parameters in groups: backbone / head, with / without weight decay.

        With ``head_lr_mult`` the groups are named ``backbone`` / ``head`` (``..._no_decay``), else
        ``all`` / ``all_no_decay``; a lone group has no name. With ``layer_decay`` each backbone
        layer is a group of its own (``backbone_layer<i>``). Each carries ``lr_mult``; groups
        without decay carry ``weight_decay: 0``. A backbone frozen for the whole run
        (``freeze_backbone: true``) is in no group.
        """
        hp = self.hparams
        return group_parameters(
            self,
            self.is_backbone_parameter,
            layers=self.backbone_layers() if hp.get("layer_decay") is not None else {},
            head_lr_mult=float(hp.get("head_lr_mult", 1.0)),
            no_weight_decay_on=tuple(hp.get("no_weight_decay_on") or ()),
            backbone_frozen=hp.get("freeze_backbone") is True,
            layer_decay=float(hp.get("layer_decay") or 1.0),
        )

    def backbone_layers(self) -> dict[str, int]:
        """The layer index (0 = the input's) of each backbone parameter, for ``layer_decay``.

        Read from the timm model inside the backbone (its own ``group_matcher``, as timm's
        layer-decay optimiser does); a backbone without one is refused in one line.
        """
        from lightseg.models.layers import timm_layer_ids

        backbone = {name: p for name, p in self.named_parameters() if self.is_backbone_parameter(name)}
        layers = timm_layer_ids(self, list(backbone))
        if layers is None:
            raise LightsegError(
                f"layer_decay needs a timm backbone, whose layers timm can tell apart (backbone tu-<name>: "
                f"tu-vit_small_patch14_dinov2, tu-convnext_tiny, tu-swin_tiny_patch4_window7_224, ...) or one of "
                f"transformers' architectures (hf_segformer, hf_upernet, hf_dpt, mask2former, eomt); "
                f"{type(self).__name__}'s backbone {self._backbone_name!r} is not one: remove layer_decay"
            )
        return layers

    def _backbone_frozen_now(self) -> bool:
        setting = self.hparams.get("freeze_backbone") or False
        if setting is True:
            return True
        return bool(setting) and self._trainer is not None and self.current_epoch < int(setting)

    def _train_backbone(self, trainable: bool) -> None:
        for name, param in self.named_parameters():
            if self.is_backbone_parameter(name):
                param.requires_grad_(trainable)

    @functools.cached_property
    def _backbone_norms(self) -> list[nn.Module]:
        return [
            module
            for name, module in self.named_modules()
            if isinstance(module, RUNNING_STATISTICS_NORMS) and self.is_backbone_parameter(name)
        ]

    @override
    def on_train_epoch_start(self) -> None:
        # freeze_backbone N: the backbone (in the optimizer from the start) takes no gradient for N epochs
        if not isinstance(self.hparams.get("freeze_backbone"), bool) and self.hparams.get("freeze_backbone"):
            self._train_backbone(not self._backbone_frozen_now())

    @override
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # a frozen backbone keeps its normalisation statistics: its BatchNorm layers run in eval mode (set
        # before each step, as Lightning restores every module's mode after validation)
        if self.hparams.get("freeze_backbone"):
            frozen = self._backbone_frozen_now()
            for module in self._backbone_norms:
                module.train(not frozen)
        anneal = getattr(getattr(self.model, "net", None), "anneal", None)
        if anneal is not None:  # EoMT's masked attention fades out over the run
            anneal(self.global_step / self._total_steps)

    @override
    def on_train_start(self) -> None:
        # read once per run: Lightning derives it from the loaders' lengths and the trainer's limits
        self._total_steps = max(1.0, float(self.trainer.estimated_stepping_batches))  # inf: an unbounded run

    @override
    def configure_optimizers(self) -> Any:
        if self.hparams.get("freeze_backbone") is True:
            self._train_backbone(False)
        optimizer = self.optimizer_factory(self.parameter_groups())
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * group.get("lr_mult", 1.0)  # before any scheduler reads its base rate
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        fit_schedule_to_run(scheduler, self)
        interval = self.hparams.get("lr_interval") or getattr(scheduler, "interval", "epoch")
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": interval, "monitor": self.monitor},
        }

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning restores weights, optimizer, scheduler and loops; the random streams that
        # pick the next epoch's shuffle order and augmentations are saved here so that a
        # resumed run continues exactly as an uninterrupted one.
        checkpoint["lightseg_rng"] = capture_rng()

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.strict_loading and "state_dict" in checkpoint:
            self.check_compatible(checkpoint)
        if self._trainer is not None and self.trainer.state.fn == "fit" and "lightseg_rng" in checkpoint:
            restore_rng(checkpoint["lightseg_rng"])

    def check_compatible(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint whose weights do not fit this model, in one message.

        Another task, architecture or class count would otherwise end in PyTorch's wall of
        size mismatches.
        """
        where = f" {self.trainer.ckpt_path}" if self._trainer is not None and self.trainer.ckpt_path else ""
        problem = incompatibility(checkpoint, self.state_dict(), dict(self.hparams), type(self).__name__, where)
        if problem is not None:
            raise LightsegError(problem)
