"""Mask R-CNN and Keypoint R-CNN by name: torchvision's ResNet-50-FPN models and light FPN backbones."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torchvision.models import (
    MobileNet_V3_Large_Weights,
    ResNet18_Weights,
    ResNet34_Weights,
    ResNet50_Weights,
    mobilenet_v3_large,
    resnet18,
    resnet34,
    resnet50,
)
from torchvision.models import detection as tvd
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _mobilenet_extractor, _resnet_fpn_extractor
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
from torchvision.ops import misc as misc_nn_ops

from lightseg.errors import LightsegError
from lightseg.groups import NetworkSpec
from lightseg.models.backbones import load_backbone_file, offline_hint
from lightseg.weights import check_weights_option, is_weights_file, load_matching, read_state_dict

MaskRCNNArch = Literal[
    "maskrcnn_resnet50_fpn",
    "maskrcnn_resnet50_fpn_v2",
    "maskrcnn_resnet18_fpn",
    "maskrcnn_resnet34_fpn",
    "maskrcnn_mobilenet_v3_large_fpn",
]
KeypointRCNNArch = Literal[
    "keypointrcnn_resnet50_fpn",
    "keypointrcnn_resnet18_fpn",
    "keypointrcnn_resnet34_fpn",
    "keypointrcnn_mobilenet_v3_large_fpn",
]
COCO_WEIGHTS: dict[str, Any] = {
    "maskrcnn_resnet50_fpn": tvd.MaskRCNN_ResNet50_FPN_Weights.COCO_V1,
    "maskrcnn_resnet50_fpn_v2": tvd.MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1,
    "keypointrcnn_resnet50_fpn": tvd.KeypointRCNN_ResNet50_FPN_Weights.COCO_V1,
}
FPN_BACKBONES: dict[str, tuple[Any, Any]] = {
    "resnet18": (resnet18, ResNet18_Weights.IMAGENET1K_V1),
    "resnet34": (resnet34, ResNet34_Weights.IMAGENET1K_V1),
    "resnet50": (resnet50, ResNet50_Weights.IMAGENET1K_V1),
    "mobilenet_v3_large": (mobilenet_v3_large, MobileNet_V3_Large_Weights.IMAGENET1K_V1),
}


@dataclass(frozen=True)
class RCNNSpec(NetworkSpec):
    """The network of an R-CNN task: a torchvision architecture, its weights and sizes (the task's ``network:``).

    Args:
        arch: the torchvision architecture (see the tasks: ``maskrcnn_*``, ``keypointrcnn_*``).
        weights: ``coco`` loads torchvision's COCO model, a file path a whole model of this
            arch in torchvision's format (e.g. its COCO checkpoint, copied for an offline
            machine). When every class of the data is one of COCO's (by name), the box and
            mask predictors keep exactly those classes' pretrained rows (COCO itself: the
            model as torchvision trained it); otherwise they start fresh. ``null`` starts
            from ``weights_backbone``.
        weights_backbone: ``imagenet``, a backbone weights file (torchvision ResNet /
            MobileNetV3 state dict) or ``null`` (from scratch).
        trainable_backbone_layers: backbone stages that train (0-5; torchvision's default 3
            with pretrained weights, all without).
        trainable_norm: train the backbone's BatchNorm (``None``: only without pretrained weights).
        min_size: shorter image side inside the model (a tuple: picked at random in training,
            multi-scale).
        max_size: cap on the longer side.
        anchor_sizes: RPN anchor size per FPN level (ResNet: 5 levels; MobileNet: all sizes on
            each of its 3 levels); ``None``: torchvision's (32, 64, 128, 256, 512).
        detector_kwargs: other torchvision ``MaskRCNN`` / ``KeypointRCNN`` arguments
            (``rpn_batch_size_per_image``, ``box_batch_size_per_image``, ``rpn_post_nms_top_n_train``,
            ``box_detections_per_img``, ...).
    """

    arch: str = "maskrcnn_resnet50_fpn"
    weights: str | None = None
    weights_backbone: str | None = "imagenet"
    trainable_backbone_layers: int | None = None
    trainable_norm: bool | None = None
    min_size: int | tuple[int, ...] = 800
    max_size: int = 1333
    anchor_sizes: tuple[int, ...] | None = None
    detector_kwargs: dict[str, Any] | None = None

    def rcnn_options(self) -> dict[str, Any]:
        """The arguments of :func:`build_rcnn` beyond the architecture and class count."""
        shared = [name for name in RCNNSpec.names() if name not in ("arch", "detector_kwargs")]
        return {**{name: getattr(self, name) for name in shared}, **(self.detector_kwargs or {})}


@dataclass(frozen=True)
class MaskRCNNSpec(RCNNSpec):
    """The network of an instance segmentation task (see :class:`RCNNSpec` for the other settings).

    Args:
        arch: ``maskrcnn_resnet50_fpn`` / ``maskrcnn_resnet50_fpn_v2`` (COCO weights available), or
            the light ``maskrcnn_resnet18_fpn``, ``maskrcnn_resnet34_fpn``,
            ``maskrcnn_mobilenet_v3_large_fpn``.
    """

    arch: MaskRCNNArch = "maskrcnn_resnet50_fpn"


@dataclass(frozen=True)
class KeypointRCNNSpec(RCNNSpec):
    """The network of a keypoint task (see :class:`RCNNSpec` for the other settings).

    Args:
        arch: ``keypointrcnn_resnet50_fpn`` (COCO weights available), or the light
            ``keypointrcnn_resnet18_fpn``, ``keypointrcnn_resnet34_fpn``, ``keypointrcnn_mobilenet_v3_large_fpn``.
        min_size: shorter image side inside the model (a tuple, as torchvision's recipe: multi-scale
            training over 640..800).
        keypoint_head: ``(layers, channels)`` of the keypoint head (``None``: torchvision's 8 x 512;
            a lighter head trains faster from scratch).
        keypoint_box_scale: the keypoint branch's boxes enlarged this many times about their centres,
            as top-down pose estimators crop (1.25), so that keypoints on an object's outline stay
            inside a box predicted a little small; 1.0: torchvision's (the box itself).
    """

    arch: KeypointRCNNArch = "keypointrcnn_resnet50_fpn"
    min_size: int | tuple[int, ...] = (640, 672, 704, 736, 768, 800)
    keypoint_head: tuple[int, int] | None = None
    keypoint_box_scale: float = 1.0

    def rcnn_options(self) -> dict[str, Any]:
        """The arguments of :func:`build_rcnn`, the keypoint head's included."""
        head = {"keypoint_head": self.keypoint_head, "keypoint_box_scale": self.keypoint_box_scale}
        return {**super().rcnn_options(), **head}


def build_rcnn(
    arch: str,
    num_classes: int,
    weights: str | None = None,
    weights_backbone: str | None = "imagenet",
    trainable_backbone_layers: int | None = None,
    trainable_norm: bool | None = None,
    min_size: int | Sequence[int] = 800,
    max_size: int = 1333,
    anchor_sizes: Sequence[int] | None = None,
    num_keypoints: int = 17,
    keypoint_head: tuple[int, int] | None = None,
    keypoint_box_scale: float = 1.0,
    **kwargs: Any,
) -> nn.Module:
    """A torchvision Mask R-CNN (``maskrcnn_*``) or Keypoint R-CNN (``keypointrcnn_*``).

    ``weights="coco"`` loads torchvision's COCO model (ResNet-50-FPN archs), and a file
    path a whole model of this arch in torchvision's format (e.g. torchvision's COCO
    checkpoint copied from another machine, or a state dict of your own). Their box and
    mask predictors are kept as they are (91 COCO slots): :func:`~lightseg.models.predictors.fit_predictors` later
    keeps the rows of the data set's classes, or replaces them. A keypoint predictor of
    another keypoint count is replaced here. The light archs build an FPN on
    torchvision's ResNet-18/34 or MobileNetV3-Large (three feature maps, so a three-level
    anchor generator).

    Args:
        arch: see :data:`MaskRCNNArch` and :data:`KeypointRCNNArch`.
        num_classes: classes including background.
        weights: ``coco``, the path of a weights file of the whole model, or ``None``.
        weights_backbone: ``imagenet``, the path of a weights file of the backbone (a
            torchvision ResNet / MobileNetV3 state dict), or ``None`` (from scratch).
        trainable_backbone_layers: backbone stages that train (0-5; torchvision's default 3
            with pretrained weights, all without).
        trainable_norm: train BatchNorm (``None``: only when the backbone is not pretrained);
            frozen BatchNorm is torchvision's choice for pretrained backbones and small batches.
            Fixed by torchvision for ``weights="coco"`` (frozen) and the v2 arch (trainable).
        min_size: shorter side the model resizes images to (a tuple: picked at random in training).
        max_size: cap on the longer side.
        anchor_sizes: anchor size of each FPN level (ResNet: 5 levels; MobileNet: all sizes on
            each of its 3 levels); ``None``: torchvision's (32, 64, 128, 256, 512).
        num_keypoints: keypoints per instance (Keypoint R-CNN).
        keypoint_head: ``(layers, channels)`` of the keypoint head's convolution stack (torchvision:
            8 x 512); a lighter one trains faster from scratch. Not with ``weights="coco"``.
        keypoint_box_scale: the keypoint branch's boxes enlarged this many times about their centres
            (:class:`ScaledKeypointBoxes`); 1.0: torchvision's, the box itself.
        **kwargs: any other torchvision ``MaskRCNN`` / ``KeypointRCNN`` argument (e.g.
            ``rpn_batch_size_per_image``, ``box_batch_size_per_image``, ``box_detections_per_img``).
    """
    family, _, rest = arch.partition("_")
    keypoints = family == "keypointrcnn"
    if family not in ("maskrcnn", "keypointrcnn"):
        raise LightsegError(f"unknown detection arch {arch!r}")
    check_weights_option("weights", weights, ("coco",))
    check_weights_option("weights_backbone", weights_backbone, ("imagenet",))
    file_state: dict[str, Any] | None = None
    if is_weights_file(weights):
        assert weights is not None
        file_state = read_state_dict(weights)
        # build the model the file holds, then fit its predictors to the data (as for COCO weights)
        num_classes, file_keypoints = _predictor_sizes(file_state, weights, arch)
        num_keypoints = file_keypoints or num_keypoints
    options: dict[str, Any] = {"min_size": min_size, "max_size": max_size, **kwargs}
    if anchor_sizes is not None:
        options["rpn_anchor_generator"] = _anchors(anchor_sizes, mobilenet="mobilenet" in rest)
    if keypoints:
        options.update(_keypoint_options(num_keypoints, keypoint_head, coco=weights == "coco"))
    if keypoint_box_scale < 1 or (not keypoints and keypoint_box_scale != 1):
        raise LightsegError(
            f"keypoint_box_scale must be >= 1 (1: the box itself, 1.25: a quarter larger), got {keypoint_box_scale}"
            if keypoints
            else f"keypoint_box_scale does not apply to {arch}, which predicts no keypoints; remove it"
        )
    if weights == "coco":
        counted = num_keypoints if keypoints else None
        model = _coco_model(arch, options, trainable_backbone_layers, trainable_norm, counted)
    else:
        # a weights file of the whole model counts as pretrained (the backbone's stages freeze as with ImageNet)
        backbone = _Backbone(weights_backbone, trainable_backbone_layers, trainable_norm, file_state is not None)
        build = _torchvision_v2_model if arch.endswith("_v2") else _fpn_model
        model = _load_file(build(arch, num_classes, options, backbone), file_state, weights)
    if keypoint_box_scale != 1:
        heads: Any = model.roi_heads
        heads.keypoint_roi_pool = ScaledKeypointBoxes(heads.keypoint_roi_pool, keypoint_box_scale)
    return model


class ScaledKeypointBoxes(nn.Module):
    """The keypoint branch's RoI pooling on boxes enlarged ``scale`` times about their centres.

    Keypoint R-CNN's heatmap spans its box exactly, so a keypoint outside a predicted box
    cannot be predicted, and keypoints on an object's outline (a triangle's corners, a
    fingertip) fall outside whenever the box comes out a pixel small. Top-down pose
    estimators crop each box enlarged for this reason (SimpleBaseline and HRNet: 1.25).
    torchvision's ``RoIHeads`` hands one list of boxes to this pooling, then to its loss
    (keypoints into target heatmaps) and its inference (heatmaps into keypoints): the boxes
    are enlarged in that list, so that all three use the same enlarged box (the boxes a model
    returns stay as predicted). ``tests/test_detection.py`` pins that torchvision passes the list on.

    Args:
        pool: torchvision's ``MultiScaleRoIAlign`` of the keypoint branch.
        scale: how many times larger each box's width and height become (> 1).
    """

    def __init__(self, pool: nn.Module, scale: float) -> None:
        super().__init__()
        self.pool = pool
        self.scale = scale

    def forward(
        self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor], image_shapes: list[tuple[int, int]]
    ) -> torch.Tensor:
        """Pooled ``[N,C,14,14]`` features of the enlarged boxes (``boxes`` is changed in place)."""
        for i, box in enumerate(boxes):
            centre, half = (box[:, :2] + box[:, 2:]) / 2, (box[:, 2:] - box[:, :2]) * (self.scale / 2)
            boxes[i] = torch.cat([centre - half, centre + half], dim=1)
        return self.pool(features, boxes, image_shapes)


def _keypoint_options(num_keypoints: int, keypoint_head: tuple[int, int] | None, coco: bool) -> dict[str, Any]:
    if keypoint_head is None:
        return {"num_keypoints": num_keypoints}
    if coco:
        raise LightsegError("keypoint_head: COCO weights come with torchvision's 8 x 512 head; leave it null")
    layers, channels = keypoint_head
    return {
        "keypoint_head": KeypointRCNNHeads(256, (channels,) * layers),
        "keypoint_predictor": KeypointRCNNPredictor(channels, num_keypoints),
        "num_keypoints": None,  # torchvision takes the count from the predictor
    }


def _check_torchvision_norm(arch: str, trainable_norm: bool | None, coco: bool) -> None:
    # torchvision's own builders: the v1 COCO models have frozen BatchNorm, v2's backbone
    # always has plain BatchNorm (trained in the stages that train)
    frozen = not arch.endswith("_v2")
    if trainable_norm is not None and trainable_norm == frozen:
        raise LightsegError(
            f"{arch}{' with COCO weights' if coco and frozen else ''} keeps torchvision's "
            f"{'frozen' if frozen else 'trainable'} BatchNorm; set trainable_norm: null"
            + (" or weights: null for your own choice" if frozen else "")
        )


def _coco_model(
    arch: str,
    options: dict[str, Any],
    trainable_backbone_layers: int | None,
    trainable_norm: bool | None,
    num_keypoints: int | None,
) -> nn.Module:
    """Torchvision's COCO model of ``arch`` (predictors as trained; a keypoint predictor refitted to the count)."""
    if arch not in COCO_WEIGHTS:
        raise LightsegError(
            f"torchvision has no COCO weights for {arch}; use one of {sorted(COCO_WEIGHTS)}, a weights file or null"
        )
    _check_torchvision_norm(arch, trainable_norm, coco=True)
    coco = COCO_WEIGHTS[arch]
    coco_options = {k: v for k, v in options.items() if k != "num_keypoints"}
    with offline_hint(arch, coco):
        model = getattr(tvd, arch)(weights=coco, trainable_backbone_layers=trainable_backbone_layers, **coco_options)
    return _refit_keypoints(model, num_keypoints)


@dataclass(frozen=True)
class _Backbone:
    """The backbone settings of a build without COCO weights."""

    weights: str | None
    trainable_layers: int | None
    trainable_norm: bool | None
    #: a whole-model weights file will be loaded (it counts as pretrained)
    pretrained_file: bool

    def pretrained(self, imagenet: Any) -> bool:
        """Whether the backbone starts from weights (``imagenet``: the ImageNet enum chosen, or ``None``)."""
        return imagenet is not None or is_weights_file(self.weights) or self.pretrained_file


def _torchvision_v2_model(arch: str, num_classes: int, options: dict[str, Any], backbone: _Backbone) -> nn.Module:
    """Torchvision's v2 builder (its backbone always has plain BatchNorm), ImageNet or file backbone weights."""
    _check_torchvision_norm(arch, backbone.trainable_norm, coco=False)
    imagenet = ResNet50_Weights.IMAGENET1K_V1 if backbone.weights == "imagenet" else None
    with offline_hint(arch, imagenet):
        model = getattr(tvd, arch)(
            weights=None,
            weights_backbone=imagenet,
            num_classes=num_classes,
            trainable_backbone_layers=backbone.trainable_layers if backbone.pretrained(imagenet) else None,
            **options,
        )
    load_backbone_file(model.backbone.body, backbone.weights, "resnet50")
    return model


def _fpn_model(arch: str, num_classes: int, options: dict[str, Any], backbone: _Backbone) -> nn.Module:
    """An FPN R-CNN built as torchvision's builder does, on any of :data:`FPN_BACKBONES`.

    The v1 ResNet-50 archs are built this way too (resnet50 with the chosen norm,
    ``_resnet_fpn_extractor``, MaskRCNN/KeypointRCNN), which lets ``trainable_norm`` and
    ``trainable_backbone_layers`` also apply without pretrained weights.
    """
    family, _, rest = arch.partition("_")
    name = rest.removesuffix("_fpn")
    if name not in FPN_BACKBONES:
        raise LightsegError(f"unknown detection arch {arch!r}")
    factory, enum = FPN_BACKBONES[name]
    imagenet = enum if backbone.weights == "imagenet" else None
    pretrained = backbone.pretrained(imagenet)
    train_norm = backbone.trainable_norm if backbone.trainable_norm is not None else not pretrained
    norm = nn.BatchNorm2d if train_norm else misc_nn_ops.FrozenBatchNorm2d
    with offline_hint(arch, imagenet):
        trunk = factory(weights=imagenet, norm_layer=norm)
    load_backbone_file(trunk, backbone.weights, name)
    default_layers = 3 if pretrained else (6 if "mobilenet" in name else 5)
    layers = backbone.trainable_layers if backbone.trainable_layers is not None else default_layers
    if "mobilenet" in name:
        features = _mobilenet_extractor(trunk, True, layers)
        options.setdefault("rpn_anchor_generator", _anchors((32, 64, 128, 256, 512), mobilenet=True))
    else:
        features = _resnet_fpn_extractor(trunk, layers)
    detector = tvd.KeypointRCNN if family == "keypointrcnn" else tvd.MaskRCNN
    return detector(features, num_classes=num_classes, **options)


def _predictor_sizes(state: dict[str, Any], path: str, arch: str) -> tuple[int, int | None]:
    """The class count (and keypoint count) of the predictors in a whole-model weights file."""
    scores = [v for k, v in state.items() if k.endswith("roi_heads.box_predictor.cls_score.weight")]
    if not scores:
        raise LightsegError(
            f"weights: {path} holds no R-CNN box predictor (no '...roi_heads.box_predictor.cls_score.weight'); "
            f"give a whole {arch} model in torchvision's format, or use it as weights_backbone if it is a backbone"
        )
    keypoints = [v for k, v in state.items() if k.endswith("roi_heads.keypoint_predictor.kps_score_lowres.weight")]
    return int(scores[0].shape[0]), int(keypoints[0].shape[1]) if keypoints else None


def _load_file(model: nn.Module, state: dict[str, Any] | None, path: str | None) -> nn.Module:
    if state is not None:
        load_matching(model, state, "weights", str(path))
    return model


def _anchors(sizes: Sequence[int], mobilenet: bool) -> AnchorGenerator:
    if mobilenet:  # three feature maps, every size on each
        levels: tuple[tuple[int, ...], ...] = (tuple(sizes),) * 3
    else:
        if len(sizes) != 5:
            raise LightsegError(f"anchor_sizes: FPN on a ResNet has 5 levels, got {len(sizes)} sizes {list(sizes)}")
        levels = tuple((int(s),) for s in sizes)
    return AnchorGenerator(levels, ((0.5, 1.0, 2.0),) * len(levels))


def _refit_keypoints(model: nn.Module, num_keypoints: int | None) -> nn.Module:
    # COCO weights predict 17 keypoints; another count gets a fresh keypoint predictor
    heads: Any = model.roi_heads
    if num_keypoints is not None and heads.keypoint_predictor.kps_score_lowres.out_channels != num_keypoints:
        heads.keypoint_predictor = KeypointRCNNPredictor(heads.keypoint_predictor.kps_score_lowres.in_channels,
                                                         num_keypoints)  # fmt: skip
    return model
