"""Instance segmentation (Mask R-CNN) and keypoint detection (Keypoint R-CNN) with COCO evaluation."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, cast

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle
from typing_extensions import override

from lightseg.contract import DataDescription, DetectionData, TaskContext, data_description, datamodule_of
from lightseg.errors import LightsegError, class_count_mismatch
from lightseg.metrics.coco import COCO_OKS_SIGMAS, STAT_NAMES, Backend, COCOEvaluator, IoUType
from lightseg.metrics.tables import format_ap_table
from lightseg.models.detection import KeypointRCNNSpec, MaskRCNNSpec, RCNNSpec, build_rcnn
from lightseg.models.predictors import coco_categories, fit_predictors, fit_predictors_by_name, predictor_classes
from lightseg.tasks.base import BaseTask
from lightseg.types import Stage


class DetectionTask(BaseTask):
    """What Mask R-CNN and Keypoint R-CNN share: torchvision's model, its losses, COCO evaluation.

    Training returns the sum of torchvision's losses and logs each (``train_loss_classifier``,
    ``train_loss_box_reg``, ``train_loss_mask`` / ``train_loss_keypoint``,
    ``train_loss_objectness``, ``train_loss_rpn_box_reg``) and ``train_loss``. Validation
    and test collect every detection and run COCO's evaluation once per epoch over the
    whole split and all processes: ``{stage}_{bbox|segm|keypoints}_map``, ``_map_50``,
    ``_map_75``, ``_map_small``, ``_map_medium``, ``_map_large`` and ``{stage}_{type}_ap_<class>``.

    The arguments below are those of every detection task (its subclasses take them as ``**kwargs``).

    Args:
        network: the architecture, its weights and sizes, as one group (a
            :class:`~lightseg.models.detection.RCNNSpec`; each subclass has its own), e.g.
            ``network: {arch: maskrcnn_resnet18_fpn, weights_backbone: null, min_size: 512}``. The
            older flat spelling (``arch:`` beside ``num_classes``) is still read.
        num_classes: classes including background (the CLI links it from the data module).
        eval_backend: ``faster_coco_eval`` or ``pycocotools``.
        kwargs: the optimiser and speed settings of :class:`~lightseg.tasks.BaseTask` (``optimizer``,
            ``lr_scheduler``, ``lr_interval``, ``head_lr_mult``, ``no_weight_decay_on``,
            ``init_from``, ``freeze_backbone``, ``layer_decay``, ``lora``, ``channels_last``, ``compile``).
    """

    iou_types: ClassVar[tuple[IoUType, ...]] = ("bbox",)
    stages: ClassVar[tuple[str, ...]] = ("val", "test")
    network_spec: ClassVar[type[RCNNSpec]] = RCNNSpec
    network: RCNNSpec

    def __init__(
        self,
        network: RCNNSpec = RCNNSpec(),  # noqa: B008 (frozen: one shared default is safe)
        num_classes: int = 91,
        eval_backend: Backend = "faster_coco_eval",
        **kwargs: Any,
    ) -> None:
        self.take_network(network, kwargs)
        super().__init__(**kwargs)

    @override
    def compile_targets(self) -> list[nn.Module]:
        # the backbone and FPN: proposals, NMS and RoI sampling change shape with the data
        return [cast(nn.Module, self.model.backbone)]

    def model_options(self) -> dict[str, Any]:
        """Arguments for :func:`~lightseg.models.detection.build_rcnn` beyond the shared ones."""
        return {}

    @override
    def build_model(self) -> nn.Module:
        hp = self.hparams
        if hp["num_classes"] < 2:
            raise LightsegError(f"num_classes counts the background too: it must be >= 2, got {hp['num_classes']}")
        arch = self.network.arch
        model = build_rcnn(arch, hp["num_classes"], **self.network.rcnn_options(), **self.model_options())
        #: class names of the pretrained predictor's slots, while it is not fitted to the data yet
        self.pretrained_classes: list[str] | None = None
        if predictor_classes(model) != hp["num_classes"]:
            self.pretrained_classes = coco_categories(arch)
            if len(self.pretrained_classes) != predictor_classes(model):
                self.pretrained_classes = [f"slot {i}" for i in range(predictor_classes(model))]
        return model

    def fit_predictors_to(self, class_names: Sequence[str] | None) -> None:
        """Fit pretrained box/mask predictors (COCO's 91 slots) to the data's classes, once.

        When every class of the data set (by name) is one of the weights' classes, the
        predictors keep exactly those rows: torchvision's COCO model evaluates and
        fine-tunes on COCO, or a subset of it, as trained. Otherwise they start fresh.
        """
        pretrained = self.pretrained_classes
        if pretrained is None:
            return
        self.pretrained_classes = None
        source = "COCO" if self.network.weights == "coco" else str(self.network.weights)
        fit_predictors_by_name(self.model, pretrained, class_names, self.hparams["num_classes"], source)

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # a checkpoint holds predictors already fitted to its data
        if self.pretrained_classes is not None:
            self.pretrained_classes = None
            fit_predictors(self.model, None, self.hparams["num_classes"])
        super().on_load_checkpoint(checkpoint)

    @override
    def build_loss(self) -> nn.Module:
        return nn.Identity()  # torchvision's detectors compute their own losses

    @override
    def build_metrics(self) -> nn.Module:
        return COCOEvaluator(self.iou_types, backend=self.hparams["eval_backend"], **self.evaluator_options())

    def evaluator_options(self) -> dict[str, Any]:
        """Extra :class:`~lightseg.metrics.COCOEvaluator` arguments."""
        return {}

    @override
    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Detections for a list of ``[3,H,W]`` images in [0, 1] (the model normalises and resizes)."""
        self.fit_predictors_to(self.class_names)
        return cast(list[dict[str, torch.Tensor]], self.model(images))

    @override
    def step(self, batch: dict[str, Any], stage: Stage) -> torch.Tensor:
        self.fit_predictors_to(self.class_names)
        images, targets = batch["images"], batch["targets"]
        if stage == "train":
            model_targets = [{k: v for k, v in t.items() if k != "image_id"} for t in targets]
            losses: dict[str, torch.Tensor] = self.model(images, model_targets)
            loss = sum(losses.values(), torch.zeros((), device=self.device))
            for name, value in losses.items():
                self.log(f"train_{name}", value, on_step=True, on_epoch=True, batch_size=len(images))
            self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(images))
            return loss
        predictions = self(images)
        self.stage_metrics(stage).update(predictions, [int(t["image_id"]) for t in targets])
        return torch.zeros((), device=self.device)

    @override
    def setup(self, stage: str) -> None:
        datamodule = datamodule_of(self.trainer) if self._trainer is not None else None
        data = data_description(datamodule)
        names = data.class_names if data is not None else None
        if not isinstance(datamodule, DetectionData) or data is None:
            self.fit_predictors_to(names)
            super().setup(stage)
            return
        self.check_data(data, type(datamodule).__name__)
        self.fit_predictors_to(names)
        super().setup(stage)
        protocol = data.evaluation_protocol
        for split in {"fit": ("val",), "validate": ("val",), "test": ("test",)}.get(stage, ()):
            truth = datamodule.ground_truth(split)
            evaluator = cast(COCOEvaluator, self.stage_metrics(split))
            evaluator.set_ground_truth(truth.data, truth.category_ids)
            if evaluator.boundary_ratio is not None and protocol is not None and protocol.boundary_ratio > 0:
                evaluator.boundary_ratio = protocol.boundary_ratio  # the data set's band (Cityscapes: 0.005)

    @override
    def context(self) -> TaskContext:
        threshold = float(self.hparams.get("mask_threshold", 0.5))
        return dataclasses.replace(
            super().context(), kind="detection", iou_types=tuple(self.iou_types), mask_threshold=threshold
        )

    def check_data(self, data: DataDescription, name: str) -> None:
        """Refuse data (described by ``data``, of the data module named ``name``) that does not fit the model."""
        if data.num_classes != self.hparams["num_classes"]:
            raise LightsegError(
                class_count_mismatch(
                    self.hparams["num_classes"], data.num_classes, name,
                    f"build the task with num_classes={data.num_classes} (the CLI links it from the data)",
                )
            )  # fmt: skip

    def _end_epoch(self, stage: str) -> None:
        metric = cast(COCOEvaluator, self.stage_metrics(stage))
        if metric.ground_truth is None:  # no evaluation data attached (plain Trainer use without a data module)
            metric.reset()
            return
        results = metric.compute()
        metric.reset()
        names = self.class_names_or_indices
        values: dict[str, torch.Tensor] = {}
        for iou_type in metric.evaluated_types:
            for stat in STAT_NAMES[iou_type]:
                values[f"{stage}_{iou_type}_{stat}"] = results[f"{iou_type}_{stat}"].float()
            for name, ap in zip(names[1:], results[f"{iou_type}_map_per_class"].reshape(-1).tolist(), strict=False):
                if ap == ap:
                    values[f"{stage}_{iou_type}_ap_{name.replace(' ', '_')}"] = torch.tensor(ap)
        monitored = f"{stage}_{self.iou_types[-1]}_map"
        self.log(monitored, values.pop(monitored), prog_bar=True)
        self.log_dict(values)
        self._stage_results[stage] = results

    @override
    def on_validation_epoch_end(self) -> None:
        self._end_epoch("val")

    @override
    def on_test_epoch_end(self) -> None:
        self._end_epoch("test")
        results = self.stage_results("test")
        if results is not None:
            evaluated = cast(COCOEvaluator, self.stage_metrics("test")).evaluated_types
            self.print(format_ap_table(results, evaluated, self.class_names))

    @override
    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        predictions = self(batch["images"])
        return {
            "detections": [{k: v.detach().cpu() for k, v in p.items()} for p in predictions],
            "path": batch.get("path"),
            "size": batch["size"],
        }


class InstanceSegmentationTask(DetectionTask):
    """Mask R-CNN (torchvision): boxes, classes and per-class sigmoid masks of every object.

    Args:
        network: the architecture (``maskrcnn_resnet50_fpn``, ``maskrcnn_resnet50_fpn_v2``: torchvision's,
            COCO weights available; the light ``maskrcnn_resnet18_fpn``, ``maskrcnn_resnet34_fpn``,
            ``maskrcnn_mobilenet_v3_large_fpn`` for CPU work and quick experiments), its weights and
            sizes: a :class:`~lightseg.models.detection.MaskRCNNSpec`.
        num_classes: classes including background (the CLI links it from the data module).
        mask_threshold: mask probability that counts as foreground in evaluation and prediction.
        boundary_ap: also score masks with Boundary AP (``{stage}_boundary_map``, ...; Cheng et al.
            2021: IoU = min(mask IoU, Boundary IoU)), band 0.02 of the image diagonal (0.005 on
            Cityscapes); needs the faster_coco_eval backend.
        **kwargs: the settings every detection task shares (evaluation backend, optimiser):
            see :class:`DetectionTask`.
    """

    monitor: ClassVar[str] = "val_segm_map"
    mode: ClassVar[Literal["min", "max"]] = "max"
    iou_types: ClassVar[tuple[IoUType, ...]] = ("bbox", "segm")
    network_spec: ClassVar[type[MaskRCNNSpec]] = MaskRCNNSpec
    network: MaskRCNNSpec

    def __init__(
        self,
        network: MaskRCNNSpec = MaskRCNNSpec(),  # noqa: B008 (frozen: one shared default is safe)
        num_classes: int = 91,
        mask_threshold: float = 0.5,
        boundary_ap: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(network, num_classes, **kwargs)

    @override
    def evaluator_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"mask_threshold": self.hparams["mask_threshold"]}
        if self.hparams.get("boundary_ap"):
            options["boundary_ratio"] = 0.02  # the official API's for COCO; the data module may set its own
        return options


class KeypointDetectionTask(DetectionTask):
    """Keypoint R-CNN (torchvision): person (or any object) boxes and their keypoints.

    Keypoints are predicted as 56x56 one-hot heatmaps with a softmax over each map.
    Horizontal flips in training swap left and right keypoints: that is the data module's
    (:class:`~lightseg.datamodules.COCODataModule`'s ``flip_pairs``).

    Args:
        network: the architecture (``keypointrcnn_resnet50_fpn``: COCO weights available; the light
            ``keypointrcnn_resnet18_fpn``, ``keypointrcnn_resnet34_fpn``, ``keypointrcnn_mobilenet_v3_large_fpn``),
            its weights, sizes and keypoint head: a :class:`~lightseg.models.detection.KeypointRCNNSpec`.
        num_classes: classes including background (2 for people).
        num_keypoints: keypoints per instance (17 for COCO people).
        keypoint_names: names of the keypoints (``None``: the data set's).
        oks_sigmas: per-keypoint OKS constants for evaluation; ``None`` takes COCO's for 17
            keypoints and is an error for other skeletons.
        **kwargs: the settings every detection task shares (evaluation backend, optimiser):
            see :class:`DetectionTask`.
    """

    monitor: ClassVar[str] = "val_keypoints_map"
    mode: ClassVar[Literal["min", "max"]] = "max"
    iou_types: ClassVar[tuple[IoUType, ...]] = ("bbox", "keypoints")
    network_spec: ClassVar[type[KeypointRCNNSpec]] = KeypointRCNNSpec
    network: KeypointRCNNSpec

    def __init__(
        self,
        network: KeypointRCNNSpec = KeypointRCNNSpec(),  # noqa: B008 (frozen: one shared default is safe)
        num_classes: int = 2,
        num_keypoints: int = 17,
        keypoint_names: list[str] | None = None,
        oks_sigmas: list[float] | None = None,
        **kwargs: Any,
    ) -> None:
        if oks_sigmas is None and num_keypoints != len(COCO_OKS_SIGMAS):
            raise LightsegError(
                f"oks_sigmas: COCO's constants are for its 17 person keypoints; give {num_keypoints} values "
                "for this skeleton (about 0.025 for precise points, 0.1 for vague ones)"
            )
        if oks_sigmas is not None and len(oks_sigmas) != num_keypoints:
            raise LightsegError(f"oks_sigmas has {len(oks_sigmas)} values for {num_keypoints} keypoints")
        if keypoint_names is not None and len(keypoint_names) != num_keypoints:
            raise LightsegError(f"keypoint_names has {len(keypoint_names)} names for {num_keypoints} keypoints")
        super().__init__(network, num_classes, **kwargs)
        self._heatmap_hook: RemovableHandle | None = None

    @override
    def configure_model(self) -> None:
        super().configure_model()
        if self.hparams.get("channels_last") and self._heatmap_hook is None:
            # torchvision's keypoint loss views the heatmaps as [N * K, H * W], which a channels-last
            # tensor cannot give: the (small) heatmaps come out contiguous
            predictor = cast(nn.Module, cast(Any, self.model).roi_heads.keypoint_predictor)
            self._heatmap_hook = predictor.register_forward_hook(_contiguous_output)

    @override
    def model_options(self) -> dict[str, Any]:
        return {"num_keypoints": self.hparams["num_keypoints"]}

    @override
    def evaluator_options(self) -> dict[str, Any]:
        sigmas = self.hparams["oks_sigmas"]
        return {
            "oks_sigmas": sigmas if sigmas is not None else COCO_OKS_SIGMAS,
            "num_keypoints": self.hparams["num_keypoints"],
        }

    @override
    def check_data(self, data: DataDescription, name: str) -> None:
        super().check_data(data, name)
        names = data.keypoint_names
        k = self.hparams["num_keypoints"]
        if names and len(names) != k:
            raise LightsegError(
                f"the data has {len(names)} keypoints ({', '.join(names)}) but the model num_keypoints={k}; "
                "set model num_keypoints (and oks_sigmas) to match"
            )
        own = self.hparams["keypoint_names"]
        if own is not None and names and tuple(own) != names:
            raise LightsegError(f"keypoint_names {own} differ from the data set's {list(names)}")


def _contiguous_output(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
    return output.contiguous()
