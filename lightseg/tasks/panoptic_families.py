"""The two families of panoptic models and what each does its own way: build, training loss, merge.

:class:`~lightseg.tasks.PanopticSegmentationTask` keeps what they share (targets, metrics,
epoch ends); its ``arch`` picks a family (:func:`family_of`), and the task hands it the work
that differs instead of branching on the architecture:

- :class:`PanopticFPN` (``panoptic_fpn_*``): a torchvision Mask R-CNN with a semantic FPN
  branch, trained on its detector's losses plus the stuff classes' cross-entropy, merged by
  instance score, overlap and stuff area (Kirillov et al. 2019).
- :class:`MaskClassification` (``mask2former``, ``eomt``): transformers' query models, trained
  with their set-prediction loss on the segments, merged by query class probability and overlap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from lightseg.errors import LightsegError
from lightseg.models.detection import RCNNSpec, build_rcnn
from lightseg.models.panoptic import (
    FPN_OVERLAP_THRESHOLD,
    FPN_SCORE_THRESHOLD,
    QUERY_OVERLAP_THRESHOLD,
    QUERY_SCORE_THRESHOLD,
    PanopticPrediction,
    merge_instances_and_stuff,
    merge_queries,
)
from lightseg.models.panoptic import PanopticFPN as PanopticFPNModel
from lightseg.models.predictors import coco_categories, predictor_classes
from lightseg.models.semantic import ARCHITECTURES, ModelSpec, build_semantic_model
from lightseg.models.wrapper import SegmentationModel
from lightseg.tasks.panoptic_views import pad_batch

if TYPE_CHECKING:
    from lightseg.tasks.panoptic import PanopticSegmentationTask

#: Panoptic FPN's architectures: the Mask R-CNN each is built on
PANOPTIC_FPN = {
    "panoptic_fpn_resnet50": "maskrcnn_resnet50_fpn",
    "panoptic_fpn_resnet18": "maskrcnn_resnet18_fpn",
    "panoptic_fpn_resnet34": "maskrcnn_resnet34_fpn",
}
#: the mask-classification models (transformers), trained with their set-prediction loss
QUERY_ARCHS = ("mask2former", "eomt")
if not TYPE_CHECKING:  # noqa: SIM108 (the runtime branch first: what jsonargparse validates; models/semantic.py)
    PanopticArch = Literal[tuple(PANOPTIC_FPN) + QUERY_ARCHS]
else:
    PanopticArch = str


@dataclass(frozen=True)
class PanopticSpec(RCNNSpec):
    """The network of a panoptic task (the task's ``network:``): Panoptic FPN's R-CNN settings or a query model's.

    Args:
        arch: ``panoptic_fpn_resnet50`` (torchvision's Mask R-CNN R50-FPN, COCO weights available),
            ``panoptic_fpn_resnet18`` / ``_resnet34`` (light, for CPU work), or transformers'
            ``mask2former`` / ``eomt`` (the ``transformers`` extra).
        weights: Panoptic FPN: ``coco`` (torchvision's COCO Mask R-CNN; its box and mask predictors keep
            the rows of the data's thing classes where every one is a COCO class, by name), a weights file
            of the whole model, or ``null``.
        weights_backbone: ``imagenet`` (``pretrained`` for transformers' models), a weights file, or ``null``.
        trainable_backbone_layers: Panoptic FPN: backbone stages that train (0-5).
        trainable_norm: Panoptic FPN: train the backbone's BatchNorm (``None``: only without pretrained weights).
        min_size: Panoptic FPN: shorter image side inside the model (a tuple: multi-scale training).
        max_size: Panoptic FPN: cap on the longer side.
        anchor_sizes: Panoptic FPN: RPN anchor size per FPN level (``None``: 32..512).
        detector_kwargs: Panoptic FPN: other torchvision ``MaskRCNN`` arguments.
        backbone: Mask2Former / EoMT: a published configuration's name or a ``save_pretrained`` folder
            (see :class:`~lightseg.models.semantic.ModelSpec`); Panoptic FPN's is in its arch name.
        arch_options: Mask2Former / EoMT: settings of transformers' configuration (``num_queries``, ...).
    """

    arch: PanopticArch = "panoptic_fpn_resnet50"
    backbone: str | None = None
    arch_options: dict[str, Any] | None = None


class PanopticFamily:
    """One family of panoptic models, working for ``task`` (whose hyperparameters and classes it reads)."""

    #: the family's name in messages
    title: ClassVar[str]
    #: the task's options this family does not read, at their defaults (another value is refused)
    unused: ClassVar[dict[str, Any]]

    def __init__(self, task: PanopticSegmentationTask) -> None:
        self.task = task

    def build(self) -> nn.Module:
        """The network, built from the task's hyperparameters."""
        raise NotImplementedError

    def compile_targets(self, model: nn.Module) -> list[nn.Module]:
        """The modules ``compile: true`` compiles."""
        raise NotImplementedError

    def training_loss(self, images: list[torch.Tensor], targets: list[dict[str, Any]]) -> torch.Tensor:
        """The training loss of a batch (its terms logged where there are several)."""
        raise NotImplementedError

    def predict(self, images: list[torch.Tensor]) -> list[PanopticPrediction]:
        """The merged panoptic prediction of each ``[3, H, W]`` image in [0, 1]."""
        raise NotImplementedError


class PanopticFPN(PanopticFamily):
    """Panoptic FPN: Mask R-CNN for the things, a semantic FPN branch for the stuff, merged by heuristics."""

    title = "Panoptic FPN"
    unused: ClassVar[dict[str, Any]] = {"backbone": None, "arch_options": None}

    def build(self) -> nn.Module:
        task, network = self.task, self.task.network
        detector = build_rcnn(PANOPTIC_FPN[network.arch], len(task.things) + 1, **network.rcnn_options())
        if predictor_classes(detector) != len(task.things) + 1:
            task.pretrained_classes = coco_categories(PANOPTIC_FPN[network.arch])
        return PanopticFPNModel(detector, len(task.stuff))

    def compile_targets(self, model: nn.Module) -> list[nn.Module]:
        # the backbone and FPN, as for an R-CNN (proposals and NMS change shape with the data)
        return [cast(nn.Module, model.backbone)]

    def training_loss(self, images: list[torch.Tensor], targets: list[dict[str, Any]]) -> torch.Tensor:
        task = self.task
        losses, logits = task.model(images, [task.detector_target(t) for t in targets])
        semantic = torch.stack(
            [task.criterion(x[None], task.stuff_target(t)[None]) for x, t in zip(logits, targets, strict=True)]
        ).nanmean()  # an image of void only has no semantic loss
        losses["loss_semantic"] = task.hparams["semantic_loss_weight"] * torch.nan_to_num(semantic)
        for name, value in losses.items():
            task.log(f"train_{name}", value, on_step=True, on_epoch=True, batch_size=len(images))
        return sum(losses.values(), torch.zeros((), device=task.device))

    def predict(self, images: list[torch.Tensor]) -> list[PanopticPrediction]:
        task, hp = self.task, self.task.hparams
        detections, logits = task.model(images)
        score = hp["score_threshold"] if hp["score_threshold"] is not None else FPN_SCORE_THRESHOLD
        overlap = hp["overlap_threshold"] if hp["overlap_threshold"] is not None else FPN_OVERLAP_THRESHOLD
        things = torch.tensor([-1, *task.things])
        return [
            merge_instances_and_stuff(
                d["masks"][:, 0] >= hp["mask_threshold"], d["scores"], things[d["labels"].cpu()],
                x.argmax(0), task.stuff, score, overlap, hp["stuff_area"],
            )
            for d, x in zip(detections, logits, strict=True)
        ]  # fmt: skip


class MaskClassification(PanopticFamily):
    """Mask2Former / EoMT: each query a mask and a class, trained by set prediction, merged by probability."""

    title = "Mask2Former / EoMT"
    unused: ClassVar[dict[str, Any]] = {
        "weights": None, "trainable_backbone_layers": None, "trainable_norm": None, "min_size": 800,
        "max_size": 1333, "anchor_sizes": None, "detector_kwargs": None, "semantic_loss_weight": 0.5,
        "stuff_area": 4096, "mask_threshold": 0.5,
    }  # fmt: skip

    def build(self) -> nn.Module:
        network = self.task.network
        if not ARCHITECTURES[network.arch].query:
            raise LightsegError(f"arch {network.arch!r} is not a mask-classification model")
        spec = ModelSpec(network.arch, network.backbone, network.weights_backbone, arch_options=network.arch_options)
        return build_semantic_model(spec, self.task.hparams["num_classes"])

    def compile_targets(self, model: nn.Module) -> list[nn.Module]:
        return [model]

    def training_loss(self, images: list[torch.Tensor], targets: list[dict[str, Any]]) -> torch.Tensor:
        model = cast(SegmentationModel, self.task.model)
        image, segments = pad_batch(images, [t["segments"] for t in targets])
        outputs = model(image)
        segments = model.pad_target(segments, 0)
        mask_labels, class_labels = [], []
        for target, padded in zip(targets, segments, strict=True):
            keep = [n for n, crowd in enumerate(target["iscrowd"].tolist()) if not crowd]
            masks = torch.stack([padded == n + 1 for n in keep]) if keep else padded.new_zeros((0, *padded.shape))
            present = masks.flatten(1).any(1)
            mask_labels.append(masks[present].float())
            class_labels.append(target["labels"][keep].to(padded.device)[present])
        return cast(Any, model.net).matched_loss(outputs, mask_labels, class_labels)

    def predict(self, images: list[torch.Tensor]) -> list[PanopticPrediction]:
        if len({tuple(x.shape[-2:]) for x in images}) > 1:
            # each image at its own size: padding a batch would reach the border masks (results would depend
            # on batching), as in semantic evaluation
            return [prediction for x in images for prediction in self.predict([x])]
        task, hp = self.task, self.task.hparams
        model = cast(SegmentationModel, task.model)
        image, _ = pad_batch(images)
        outputs = model(image)
        padded = model.pad_target(image[:, 0], 0).shape[-2:]
        masks = F.interpolate(outputs["mask_queries"][:, -1].float(), size=padded, mode="bilinear", align_corners=False)
        classes = outputs["class_queries"][:, -1]
        score = hp["score_threshold"] if hp["score_threshold"] is not None else QUERY_SCORE_THRESHOLD
        overlap = hp["overlap_threshold"] if hp["overlap_threshold"] is not None else QUERY_OVERLAP_THRESHOLD
        return [
            merge_queries(classes[i], masks[i, :, : x.shape[-2], : x.shape[-1]], task.things, score, overlap)
            for i, x in enumerate(images)
        ]


def family_of(task: PanopticSegmentationTask) -> PanopticFamily:
    """The family of ``task``'s ``arch``; an unknown arch is refused in one line."""
    arch = task.network.arch
    if arch in PANOPTIC_FPN:
        return PanopticFPN(task)
    if arch in QUERY_ARCHS:
        return MaskClassification(task)
    raise LightsegError(f"unknown panoptic arch {arch!r}; choose one of {', '.join([*PANOPTIC_FPN, *QUERY_ARCHS])}")
