"""The written contracts between lightseg's layers: what a task tells the callbacks, what a data module tells the rest.

Callbacks import no task class and read no task attribute: what they need of a task travels
in what its steps return (:mod:`lightseg.types`) and in the :class:`TaskContext` it gives
through :meth:`LightsegTask.context`; its dataset-level scores of a stage come from
:meth:`LightsegTask.stage_results`. A user's task that implements these two methods (a
subclass of a lightseg task does) gets the dashboard, the per-image scores, the dense CRF and
the prediction writer; any other module gets a one-line refusal from the callbacks that need
a lightseg task.

Tasks, callbacks, export and the CLI read a data module only through :class:`DescribedData`
(:func:`data_description`: classes, colours, evaluation protocol, category ids, keypoints) and,
for what is more than a description, the protocols :class:`DetectionData` (ground truth to
evaluate against) and :class:`PixelStatistics` (median-frequency class weights). A user's own
``LightningDataModule`` without them trains with the defaults (class indices as names, the
generated palette, the default protocol).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch

from lightseg.colors import class_palette

#: what a task predicts: per-pixel classes, or detections (boxes, masks, keypoints)
TaskKind = Literal["semantic", "detection", "panoptic"]


@dataclass(frozen=True)
class EvaluationProtocol:
    """What a data set's benchmark reports besides the confusion-matrix metrics.

    Args:
        boundary_ratio: Boundary IoU's band width as a fraction of the image diagonal (0.02
            in the official API for COCO-style data, 0.005 for Cityscapes); 0 turns it off.
        categories: class indices of each category (Cityscapes' 7 categories): category IoU.
        instance_sizes: average instance size in pixels of each class evaluated with instance-level
            IoU (iIoU), by class index; needs instance ids with the ground truth.
        instance_categories: the categories also evaluated with iIoU (those whose classes all have
            instances).
    """

    boundary_ratio: float = 0.02
    categories: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    instance_sizes: Mapping[int, float] = field(default_factory=dict)
    instance_categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class TaskContext:
    """What a task tells the callbacks, the prediction writer and export about itself.

    Attributes:
        kind: ``semantic`` (per-pixel classes), ``detection`` (Mask R-CNN, Keypoint R-CNN) or ``panoptic``.
        num_classes: classes the model predicts (detection: background included).
        class_names: each class's name from the data, or its index as text where the data names none.
        ignore_index: the label of pixels that are not scored (semantic).
        protocol: the data set's evaluation protocol (semantic: Boundary IoU, categories, iIoU).
        iou_types: the COCO evaluations a detection task runs (``bbox``, ``segm``, ``keypoints``).
        mask_threshold: the probability above which a detected mask's pixel is in the mask.
        monitor: the validation metric that picks the best checkpoint, and ``mode``, its direction.
        in_channels: channels of the images the model takes (3: RGB; more for multispectral bands).
        arch: the architecture's name (the task's ``network.arch``; empty for a task without one).
        backbone: the backbone's name where the network names one apart from the architecture.
    """

    kind: TaskKind
    num_classes: int
    class_names: tuple[str, ...]
    ignore_index: int = 255
    protocol: EvaluationProtocol = field(default_factory=EvaluationProtocol)
    iou_types: tuple[str, ...] = ()
    mask_threshold: float = 0.5
    monitor: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    in_channels: int = 3
    arch: str = ""
    backbone: str | None = None


@runtime_checkable
class LightsegTask(Protocol):
    """What the callbacks use of a task (every lightseg task, and a user's subclass, has it)."""

    def context(self) -> TaskContext:
        """The task's :class:`TaskContext` (valid from setup on: class names come from the data)."""
        ...

    def stage_results(self, stage: str) -> dict[str, torch.Tensor] | None:
        """The dataset-level results of ``stage``'s last epoch (``None`` before one ended)."""
        ...


@runtime_checkable
class SemanticPredictor(LightsegTask, Protocol):
    """A semantic task as the dashboard runs it on its fixed validation images."""

    def predict_probs(self, image: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[B,C,H,W]`` of images ``[B,channels,H,W]`` in [0, 1], as the task infers them."""
        ...


def task_context(module: object) -> TaskContext | None:
    """``module``'s :class:`TaskContext`, or ``None`` where it is not a lightseg task."""
    return module.context() if isinstance(module, LightsegTask) else None


@dataclass(frozen=True)
class DataDescription:
    """What a data module tells the tasks, callbacks, export and the CLI about its data.

    Attributes:
        num_classes: classes of the labels (detection: background included).
        class_names: each class's name (``None`` where the data names none).
        class_colors: each class's RGB colour where the data set has its own (VOC, Cityscapes, a
            labelling tool's); ``None``: lightseg's generated palette.
        evaluation_protocol: what evaluation reports besides the confusion matrix (``None``: the default).
        batch_size: samples per batch and process (``None`` where the module does not say).
        category_ids: the data set's category id of each label (COCO-style data; empty: the labels).
        label_ids: the official label id of each class index (Cityscapes' train ids), for submissions.
        keypoint_names: the keypoints of keypoint data, and ``skeleton``, their connections (0-based).
        score_caveat: what the validation score does not mean for this data, if anything.
        thing_classes: the class labels that are things, in panoptic data (``None``: not panoptic data).
        in_channels: channels of the images the data gives (3: RGB, grey read as RGB; more for the
            bands of multispectral rasters).
        bands: the 1-based bands of each image file read as those channels, where the data chooses them.
    """

    num_classes: int
    class_names: tuple[str, ...] | None = None
    class_colors: tuple[tuple[int, ...], ...] | None = None
    evaluation_protocol: EvaluationProtocol | None = None
    batch_size: int | None = None
    category_ids: tuple[int, ...] = ()
    label_ids: tuple[int, ...] | None = None
    keypoint_names: tuple[str, ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()
    score_caveat: str | None = None
    thing_classes: tuple[int, ...] | None = None
    in_channels: int = 3
    bands: tuple[int, ...] | None = None


@runtime_checkable
class DescribedData(Protocol):
    """A data module that describes its data (every lightseg data module)."""

    def describe(self) -> DataDescription:
        """The :class:`DataDescription` of the data (class names may need the data's files)."""
        ...


@runtime_checkable
class DetectionData(DescribedData, Protocol):
    """A data module of instance or keypoint annotations that evaluation compares against."""

    def ground_truth(self, stage: str) -> Any:
        """The COCO annotations of ``stage`` (``val`` or ``test``)."""
        ...


@dataclass(frozen=True)
class ThingTruth:
    """The thing instances of a panoptic split as COCO instance annotations (the instance view's ground truth).

    Attributes:
        data: COCO instance content (``images``, ``annotations`` with RLE masks, ``categories``);
            image ids are positions in the split, from 1.
        category_ids: the category id of each contiguous thing label, background (0) first.
        image_ids: the COCO image id of each image of the split, by its panoptic ``image_id``.
    """

    data: dict[str, Any]
    category_ids: tuple[int, ...]
    image_ids: dict[Any, int]


@runtime_checkable
class PanopticData(DescribedData, Protocol):
    """A panoptic data module whose thing instances evaluation also scores as instances (mask AP)."""

    def thing_ground_truth(self, stage: str) -> ThingTruth:
        """The :class:`ThingTruth` of ``stage`` (``val`` or ``test``)."""
        ...


@runtime_checkable
class PixelStatistics(Protocol):
    """A semantic data module that counts its training pixels (median-frequency class weights)."""

    def class_pixel_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """Per class: labelled training pixels, and the pixels of the images it occurs in."""
        ...


def data_description(datamodule: object) -> DataDescription | None:
    """``datamodule``'s :class:`DataDescription`, or ``None`` where it gives none (or there is no data module)."""
    return datamodule.describe() if isinstance(datamodule, DescribedData) else None


def datamodule_of(trainer: object) -> object | None:
    """The data module Lightning attached to ``trainer`` (``None``: loaders without one, or no trainer)."""
    return getattr(trainer, "datamodule", None)


def data_palette(datamodule: object) -> np.ndarray:
    """The ``[256,3]`` palette of ``datamodule``'s masks: its own class colours, else the generated one."""
    description = data_description(datamodule)
    return class_palette(description.class_colors if description is not None else None)
