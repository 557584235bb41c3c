"""What each kind of task exports: its refusals, graph, verification inputs, dynamic axes and metadata.

:func:`export_kind` picks the kind from the task's :class:`~lightseg.contract.TaskContext`;
:mod:`lightseg.export.writer` writes, verifies and describes any kind the same way. A new task
kind exports by adding a class here and an entry in :data:`KINDS`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
from lightning.pytorch import LightningDataModule, LightningModule
from torch import nn

from lightseg.contract import LightsegTask, TaskContext, data_description
from lightseg.errors import LightsegError, option
from lightseg.export.graphs import DetectionGraph, PanopticFPNGraph, PanopticQueryGraph, SemanticGraph

if TYPE_CHECKING:
    from lightseg.export.writer import ExportSettings
    from lightseg.tasks.detection import DetectionTask
    from lightseg.tasks.semantic import SemanticSegmentationTask

#: opset 17 for semantic models; R-CNN needs 16+ for RoiAlign's ``output_half_pixel`` mode, which is
#: torchvision's ``aligned=False`` exactly
ONNX_OPSET = 17

#: a verification image: ``(index, (H, W)) -> [3,H,W]`` in [0, 1]
ImageMaker = Callable[[int, tuple[int, ...]], torch.Tensor]


class ExportKind(ABC):
    """How one kind of task is exported (see :data:`KINDS`)."""

    #: the graph is scripted (data-dependent control flow) rather than traced for TorchScript
    scripted: bool = False
    #: the ONNX opset when none is asked for
    default_opset: int = ONNX_OPSET
    #: what runs outside the graph (the metadata's ``not_in_graph``)
    not_in_graph: tuple[str, ...] = ()
    #: the input's layout in the metadata
    layout: str = "[B,3,H,W]"
    #: an operator the TorchScript-based ONNX exporter lacks may be written by torch.export's exporter instead
    dynamo_fallback: bool = False

    def __init__(self, task: LightningModule) -> None:
        self.task = task
        self.context: TaskContext = cast(LightsegTask, task).context()

    @abstractmethod
    def check(self, settings: ExportSettings) -> None:
        """Refuse, in one line and before any work, what this kind cannot export."""

    @abstractmethod
    def output_names(self, settings: ExportSettings) -> list[str]:
        """The graph's outputs, in order."""

    @abstractmethod
    def samples(self, image: ImageMaker, sizes: Sequence[tuple[int, ...]]) -> list[torch.Tensor]:
        """The verification inputs at ``sizes``; the first is the example the graph is made from."""

    @abstractmethod
    def onnx_axes(self, names: list[str], settings: ExportSettings) -> dict[str, dict[int, str]]:
        """The ONNX exporter's dynamic axes of the input and the outputs."""

    @abstractmethod
    def graph(self, settings: ExportSettings, datamodule: LightningDataModule | None) -> nn.Module:
        """The exportable graph of the (loaded, CPU, eval) task."""

    def prepare(self, datamodule: LightningDataModule | None) -> None:  # noqa: B027 (most kinds need nothing)
        """Ready a task exported without a checkpoint (its own weights) for ``datamodule``'s classes."""

    def metadata(self, datamodule: LightningDataModule | None, settings: ExportSettings) -> dict[str, Any]:
        """The kind's own entries of the metadata."""
        return {}

    def category_ids(self, datamodule: LightningDataModule | None) -> list[int]:
        """The data set's category id of each label (the labels themselves without a data module that has them)."""
        data = data_description(datamodule)
        return (
            list(data.category_ids) if data is not None and data.category_ids else list(range(self.context.num_classes))
        )


class SemanticExport(ExportKind):
    """A semantic task: ``[B,3,H,W]`` in, ``labels`` / ``probs`` / ``logits`` out, at any size (or one)."""

    not_in_graph: tuple[str, ...] = (
        "sliding-window inference",
        "multi-scale / flip test-time augmentation",
        "dense CRF",
    )
    # a ViT's antialiased bicubic resize of its position embedding to each input's patch grid
    dynamo_fallback = True

    def check(self, settings: ExportSettings) -> None:
        from lightseg.models.semantic import ARCHITECTURES

        task = cast("SemanticSegmentationTask", self.task)
        arch = self.context.arch
        entry = ARCHITECTURES.get(arch)
        model = cast(nn.Module, task.model)
        refusal = entry.export_refusal(model, settings.format, settings.input_size is not None) if entry else None
        if refusal:
            raise LightsegError(f"arch {arch!r} cannot be exported as {settings.format}: {refusal}")
        outside = task.inference.changes_for_one_pass()
        if outside:
            raise LightsegError(
                "the exported graph runs each image whole, once; sliding windows and test-time augmentation run "
                f"outside it (see the export docs): export with {' '.join(outside)}"
            )

    def output_names(self, settings: ExportSettings) -> list[str]:
        return [settings.semantic_output]

    def samples(self, image: ImageMaker, sizes: Sequence[tuple[int, ...]]) -> list[torch.Tensor]:
        first = torch.stack([image(0, sizes[0]), image(1, sizes[0])])  # a batch of two
        return [first, *(image(k, size)[None] for k, size in enumerate(sizes[1:], start=1))]

    def onnx_axes(self, names: list[str], settings: ExportSettings) -> dict[str, dict[int, str]]:
        if settings.input_size:
            return {"image": {0: "batch"}, names[0]: {0: "batch"}}
        spatial = (1, 2) if names[0] == "labels" else (2, 3)
        return {"image": {0: "batch", 2: "height", 3: "width"},
                names[0]: {0: "batch", spatial[0]: "height", spatial[1]: "width"}}  # fmt: skip

    def graph(self, settings: ExportSettings, datamodule: LightningDataModule | None) -> nn.Module:
        return SemanticGraph(
            cast(Any, self.task).model,
            settings.semantic_output,
            self.context.num_classes,
            crop_by_index=settings.format == "pt2",
            onnx=settings.format == "onnx",
        )

    def metadata(self, datamodule: LightningDataModule | None, settings: ExportSettings) -> dict[str, Any]:
        return {"ignore_index": self.context.ignore_index}


class DetectionExport(ExportKind):
    """An R-CNN task: one ``[3,H,W]`` image in, boxes, category ids, scores, masks / keypoints out."""

    scripted = True
    default_opset = 16
    layout = "[3,H,W], one image"

    def check(self, settings: ExportSettings) -> None:
        if settings.input_size is not None:
            raise LightsegError(
                f"{option('export', 'input_size')} is for semantic models; an R-CNN graph resizes its input itself "
                "and takes any size"
            )
        if settings.format == "pt2":
            raise LightsegError(
                "torch.export cannot hold the R-CNN's data-dependent post-processing (a different number of boxes "
                f"per image); export R-CNN models with {option('export', 'format')} onnx or torchscript"
            )
        if settings.format == "onnx" and settings.opset is not None and settings.opset < 16:
            raise LightsegError(
                f"{option('export', 'opset')} {settings.opset}: R-CNN models need opset 16 or later, whose RoiAlign "
                "computes exactly what torchvision's does (coordinate_transformation_mode output_half_pixel)"
            )

    def output_names(self, settings: ExportSettings) -> list[str]:
        names = ["boxes", "labels", "scores"]
        if "segm" in self.context.iou_types:
            names.append("masks")
        if "keypoints" in self.context.iou_types:
            names += ["keypoints", "keypoint_scores"]
        return names

    def samples(self, image: ImageMaker, sizes: Sequence[tuple[int, ...]]) -> list[torch.Tensor]:
        return [*(image(k, size) for k, size in enumerate(sizes)), torch.zeros(3, *sizes[0])]  # blank: no detections

    def onnx_axes(self, names: list[str], settings: ExportSettings) -> dict[str, dict[int, str]]:
        return {"image": {1: "height", 2: "width"}, **{name: {0: "detections"} for name in names}}

    def prepare(self, datamodule: LightningDataModule | None) -> None:
        data = data_description(datamodule)
        cast("DetectionTask", self.task).fit_predictors_to(data.class_names if data is not None else None)

    def graph(self, settings: ExportSettings, datamodule: LightningDataModule | None) -> nn.Module:
        model = cast(Any, self.task).model
        return DetectionGraph(model, self.category_ids(datamodule), settings.mask_threshold)

    def metadata(self, datamodule: LightningDataModule | None, settings: ExportSettings) -> dict[str, Any]:
        return {"category_ids": self.category_ids(datamodule), "mask_threshold": settings.mask_threshold}


class PanopticExport(DetectionExport):
    """Panoptic FPN: one ``[3,H,W]`` image in; Mask R-CNN's detections and the semantic branch's labels out.

    The merge into a panoptic map runs beside the graph, with the thresholds the metadata records
    (``lightseg predict`` with the ONNX file does it).
    """

    not_in_graph = ("the panoptic merge (instances by score, then stuff regions; its settings in the metadata)",)

    def check(self, settings: ExportSettings) -> None:
        from lightseg.tasks.panoptic import PANOPTIC_FPN

        arch = self.context.arch
        if arch not in PANOPTIC_FPN:
            raise LightsegError(
                f"lightseg export writes Panoptic FPN models ({', '.join(PANOPTIC_FPN)}); {arch} panoptic models "
                "are not exported yet: run them in PyTorch (lightseg predict --ckpt_path ...)"
            )
        super().check(settings)

    def output_names(self, settings: ExportSettings) -> list[str]:
        return ["boxes", "labels", "scores", "masks", "semantic"]

    def onnx_axes(self, names: list[str], settings: ExportSettings) -> dict[str, dict[int, str]]:
        return {**super().onnx_axes(names[:-1], settings), "semantic": {0: "height", 1: "width"}}

    def prepare(self, datamodule: LightningDataModule | None) -> None:
        cast(Any, self.task)._fit_predictors()

    def _things(self, datamodule: LightningDataModule | None) -> tuple[list[int], list[int]]:
        task = cast(Any, self.task)
        ids = self.category_ids(datamodule)
        return [ids[c] for c in task.things], [ids[c] for c in task.stuff]

    def graph(self, settings: ExportSettings, datamodule: LightningDataModule | None) -> nn.Module:
        things, _ = self._things(datamodule)
        return PanopticFPNGraph(cast(Any, self.task).model, [0, *things], self._mask_threshold(settings))

    def _mask_threshold(self, settings: ExportSettings) -> float:
        # the merge takes 0/1 masks: the task's threshold unless the export names one
        return float(settings.mask_threshold if settings.mask_threshold is not None else self.context.mask_threshold)

    def metadata(self, datamodule: LightningDataModule | None, settings: ExportSettings) -> dict[str, Any]:
        from lightseg.models.panoptic import FPN_OVERLAP_THRESHOLD, FPN_SCORE_THRESHOLD

        hp = self.task.hparams
        things, stuff = self._things(datamodule)
        merge = {
            "score_threshold": hp["score_threshold"] if hp["score_threshold"] is not None else FPN_SCORE_THRESHOLD,
            "overlap_threshold": hp["overlap_threshold"] if hp["overlap_threshold"] is not None
            else FPN_OVERLAP_THRESHOLD,
            "stuff_area": hp["stuff_area"],
        }  # fmt: skip
        return {"category_ids": self.category_ids(datamodule), "thing_category_ids": things,
                "stuff_category_ids": stuff, "mask_threshold": self._mask_threshold(settings),
                "merge": merge}  # fmt: skip


class PanopticQueryExport(SemanticExport):
    """Mask2Former / EoMT panoptic: ``[B,3,H,W]`` in, the last layer's class and mask logits out; merged beside."""

    not_in_graph = ("the panoptic merge (Mask2Former's; its settings in the metadata)",)
    dynamo_fallback = True

    def check(self, settings: ExportSettings) -> None:
        from lightseg.models.semantic import ARCHITECTURES

        arch = self.context.arch
        entry = ARCHITECTURES[arch]
        refusal = entry.export_refusal(
            cast(nn.Module, self.task.model), settings.format, settings.input_size is not None
        )
        if refusal:
            raise LightsegError(f"arch {arch!r} cannot be exported as {settings.format}: {refusal}")

    def output_names(self, settings: ExportSettings) -> list[str]:
        return ["class_logits", "mask_logits"]

    def onnx_axes(self, names: list[str], settings: ExportSettings) -> dict[str, dict[int, str]]:
        if settings.input_size:
            return {"image": {0: "batch"}, names[0]: {0: "batch"}, names[1]: {0: "batch"}}
        return {"image": {0: "batch", 2: "height", 3: "width"}, names[0]: {0: "batch"},
                names[1]: {0: "batch", 2: "height", 3: "width"}}  # fmt: skip

    def graph(self, settings: ExportSettings, datamodule: LightningDataModule | None) -> nn.Module:
        return PanopticQueryGraph(cast(Any, self.task).model)

    def metadata(self, datamodule: LightningDataModule | None, settings: ExportSettings) -> dict[str, Any]:
        from lightseg.models.panoptic import QUERY_OVERLAP_THRESHOLD, QUERY_SCORE_THRESHOLD

        hp, task = self.task.hparams, cast(Any, self.task)
        ids = self.category_ids(datamodule)
        merge = {
            "score_threshold": hp["score_threshold"] if hp["score_threshold"] is not None else QUERY_SCORE_THRESHOLD,
            "overlap_threshold": hp["overlap_threshold"] if hp["overlap_threshold"] is not None
            else QUERY_OVERLAP_THRESHOLD,
        }  # fmt: skip
        return {"category_ids": ids, "thing_category_ids": [ids[c] for c in task.things], "merge": merge}


def _panoptic_export(task: LightningModule) -> ExportKind:
    """Panoptic FPN's export, or the query models'."""
    from lightseg.tasks.panoptic import PANOPTIC_FPN

    arch = cast(LightsegTask, task).context().arch
    return (PanopticExport if arch in PANOPTIC_FPN else PanopticQueryExport)(task)


#: the export of each task kind (:attr:`~lightseg.contract.TaskContext.kind`)
KINDS: dict[str, type[ExportKind]] = {"semantic": SemanticExport, "detection": DetectionExport,
                                      "panoptic": PanopticExport}  # fmt: skip


def export_kind(task: LightningModule) -> ExportKind:
    """How ``task`` is exported; one line for a module that is not a lightseg task."""
    if not isinstance(task, LightsegTask):
        raise LightsegError(f"lightseg export writes lightseg's tasks; {type(task).__name__} is not one")
    kind = task.context().kind
    return _panoptic_export(task) if kind == "panoptic" else KINDS[kind](task)
