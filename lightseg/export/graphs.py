"""The modules ``lightseg export`` writes: a model wrapped with its input convention and the output asked for.

:class:`SemanticGraph` takes ``[B,3,H,W]`` RGB in [0, 1] and returns logits, probabilities or
labels; :class:`DetectionGraph` takes one ``[3,H,W]`` image and returns boxes, the data set's
category ids, scores and masks / keypoints, resizing as eager PyTorch does
(:class:`ExactSizeResize`) whether traced, scripted or run.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from lightseg.models.lora import merge_lora
from lightseg.models.wrapper import SegmentationModel

SemanticOutput = Literal["logits", "probs", "labels"]


class GridAveragePool(nn.Module):
    """``nn.AdaptiveAvgPool2d`` to a fixed grid, written with operations ONNX has for inputs of any size.

    ONNX has no adaptive pooling: the TorchScript-based exporter records a grid pooling (PSPNet's and
    UPerNet's 2x2 to 6x6) for the example's size only. This computes the same bins (row ``i`` of ``n``
    spans ``floor(i*H/n)`` to ``ceil((i+1)*H/n)``, as PyTorch's kernel) from the input's size, as
    differences of a summed-area table (CumSum and Gather in the graph).
    """

    def __init__(self, output_size: int | tuple[int | None, int | None]) -> None:
        super().__init__()
        rows, cols = (output_size, output_size) if isinstance(output_size, int) else output_size
        if rows is None or cols is None:
            raise ValueError("GridAveragePool needs both output sizes")
        self.rows, self.cols = int(rows), int(cols)

    @staticmethod
    def _bins(count: int, size: int | torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.arange(count, device=device)
        starts = torch.div(index * size, count, rounding_mode="floor")
        ends = -torch.div(-(index + 1) * size, count, rounding_mode="floor")  # ceil
        return starts, ends

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2], x.shape[-1]
        table = F.pad(x.cumsum(-2).cumsum(-1), (1, 0, 1, 0))  # table[..., r, c]: the sum of x[..., :r, :c]
        top, bottom = self._bins(self.rows, height, x.device)
        left, right = self._bins(self.cols, width, x.device)

        def corner(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
            return table.index_select(-2, rows).index_select(-1, cols)

        sums = corner(bottom, right) - corner(top, right) - corner(bottom, left) + corner(top, left)
        areas = (bottom - top).unsqueeze(1) * (right - left).unsqueeze(0)
        return sums / areas.to(x.dtype)


class _PyramidBranch(nn.Module):
    """smp's ``PSPBlock`` as it runs in PyTorch: pool, 1x1 convolution, resize back.

    Under ONNX export smp's block switches to an area interpolation, which the exporter records for
    the example's size only; this runs the block's own layers, its pooling made portable.
    """

    def __init__(self, pool: nn.Sequential) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[-2], x.shape[-1])
        return F.interpolate(self.pool(x), size=size, mode="bilinear", align_corners=True)


def portable_pooling(model: nn.Module) -> nn.Module:
    """``model`` with each adaptive average pooling to a grid larger than 1x1 replaced by :class:`GridAveragePool`."""
    from segmentation_models_pytorch.decoders.pspnet.decoder import PSPBlock

    for name, child in list(model.named_children()):
        if isinstance(child, nn.AdaptiveAvgPool2d) and child.output_size not in (1, (1, 1)):
            pool = GridAveragePool(child.output_size)  # type: ignore[arg-type]
            setattr(model, name, pool)
            for value in vars(model).values():  # a plain list the forward iterates (transformers' UperNet)
                if isinstance(value, list):
                    value[:] = [pool if item is child else item for item in value]
            continue
        portable_pooling(child)
        if isinstance(child, PSPBlock):
            setattr(model, name, _PyramidBranch(child.pool))
    return model


class SemanticGraph(nn.Module):
    """A semantic model as exported: ``[B,3,H,W]`` RGB in [0, 1] -> logits, probabilities or labels.

    Args:
        model: the task's model (copied: the task's own is left as it is).
        output: what the graph returns.
        num_classes: the class count (labels are uint8 up to 256 classes).
        crop_by_index: for ``torch.export``; see :class:`~lightseg.models.semantic.SegmentationModel`.
        onnx: replace adaptive grid pooling by :class:`GridAveragePool`, which ONNX can hold at every size.
    """

    def __init__(
        self,
        model: nn.Module,
        output: SemanticOutput,
        num_classes: int,
        crop_by_index: bool = False,
        onnx: bool = False,
    ) -> None:
        super().__init__()
        self.model = copy.deepcopy(model)
        merge_lora(self.model)  # LoRA adapters (if any) become part of the weights: the plain network
        if isinstance(self.model, SegmentationModel):
            self.model.crop_by_index = crop_by_index  # for torch.export: see SegmentationModel
        if onnx:
            portable_pooling(self.model)
        net = getattr(self.model, "net", None)
        if getattr(net, "aux_classifier", None) is not None:  # the training-only auxiliary head stays out
            net.aux_classifier = None  # type: ignore[union-attr]
        self.output = output
        self.label_dtype = torch.uint8 if num_classes <= 256 else torch.int64

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits = self.model(image)["out"]
        if self.output == "logits":
            return logits
        if self.output == "probs":
            return logits.softmax(1)
        return logits.argmax(1).to(self.label_dtype)


class ExactSizeResize(GeneralizedRCNNTransform):
    """torchvision's R-CNN input transform, its inference resize computing the output size explicitly.

    torchvision resizes with ``scale_factor`` and ``recompute_scale_factor``; traced to ONNX or
    scripted, that computes the size in float32, so an image may come out a pixel short
    (769x783 to 799x814, not 800x814 as in eager PyTorch), which moves detections. Here the
    scale and ``floor(side * scale)`` are float64, as eager torchvision computes them, and the
    resize samples by that size.
    """

    @classmethod
    def like(cls, transform: GeneralizedRCNNTransform) -> ExactSizeResize:
        """A transform with ``transform``'s settings (sizes, normalisation, padding) and this resize."""
        exact = cls(
            transform.min_size, transform.max_size, transform.image_mean, transform.image_std,
            size_divisible=transform.size_divisible, fixed_size=transform.fixed_size,
            _skip_resize=getattr(transform, "_skip_resize", False),
        )  # fmt: skip
        return exact.train(transform.training)

    def resize(
        self, image: torch.Tensor, target: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """Scale the shorter side to ``min_size`` (the longer at most ``max_size``), as torchvision does."""
        if torch.jit.is_scripting():  # TorchScript compiles only this branch (the export graph's, inference)
            sides = torch.tensor(image.shape[-2:]).to(torch.float64)
            size = self._size(sides)
            resized = F.interpolate(
                image[None], size=[int(size[0]), int(size[1])], mode="bilinear", align_corners=False
            )
            return resized[0], target
        if self.training or self.fixed_size is not None or target is not None:
            return super().resize(image, target)
        sides = torch._shape_as_tensor(image)[-2:] if torch.jit.is_tracing() else torch.tensor(image.shape[-2:])
        size = self._size(sides.to(torch.float64))
        resized = F.interpolate(image[None], size=(size[0], size[1]), mode="bilinear", align_corners=False)  # type: ignore[arg-type]
        return resized[0], target

    def _size(self, sides: torch.Tensor) -> torch.Tensor:
        # 1-d float64 tensors: the ONNX exporter casts a 0-d one (or a Python number) to float32
        limits = torch.tensor([float(self.min_size[-1]), float(self.max_size)], dtype=torch.float64)
        scale = (limits / torch.stack([sides.min(), sides.max()])).min()
        return torch.floor(sides * scale).to(torch.int64)


class DetectionGraph(nn.Module):
    """An R-CNN as exported: one ``[3,H,W]`` RGB image in [0, 1] -> boxes, category ids, scores, masks/keypoints."""

    # (no class-level annotation of the category_ids buffer: TorchScript cannot read it as a string)

    def __init__(self, model: nn.Module, category_ids: Sequence[int], mask_threshold: float | None) -> None:
        super().__init__()
        self.model = copy.deepcopy(model)
        transform = getattr(self.model, "transform", None)
        if type(transform) is GeneralizedRCNNTransform:  # eager PyTorch's resize, also when traced or scripted
            cast(Any, self.model).transform = ExactSizeResize.like(transform)
        self.register_buffer("category_ids", torch.tensor(list(category_ids), dtype=torch.int64))
        self.threshold = -1.0 if mask_threshold is None else float(mask_threshold)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        # scripted R-CNNs return (losses, detections)
        detections = self.model([image])[1][0] if torch.jit.is_scripting() else self.model([image])[0]
        outputs = [detections["boxes"], self.category_ids[detections["labels"]], detections["scores"]]  # type: ignore[index]
        if "masks" in detections:
            masks = detections["masks"]
            outputs.append((masks > self.threshold).to(torch.uint8) if self.threshold >= 0 else masks)
        if "keypoints" in detections:
            outputs += [detections["keypoints"], detections["keypoints_scores"]]
        return outputs


class PanopticFPNGraph(nn.Module):
    """Panoptic FPN as exported: one ``[3,H,W]`` image in [0, 1] -> the detections and the semantic branch's labels.

    The outputs are Mask R-CNN's (boxes, category ids, scores, 0/1 masks at image size) and
    ``semantic`` ``[H,W]``: the branch's label of each pixel (0 "a thing", ``k`` the ``k``-th stuff
    class). The merge into a panoptic map runs beside the graph
    (:func:`~lightseg.models.panoptic.merge_instances_and_stuff`, with the thresholds in the metadata).
    """

    def __init__(self, model: nn.Module, category_ids: Sequence[int], mask_threshold: float) -> None:
        super().__init__()
        model = copy.deepcopy(model)
        self.detector = cast(Any, model).detector
        self.semantic_head = cast(Any, model).semantic_head
        transform = getattr(self.detector, "transform", None)
        if type(transform) is GeneralizedRCNNTransform:  # eager PyTorch's resize, also when traced or scripted
            self.detector.transform = ExactSizeResize.like(transform)
        self.register_buffer("category_ids", torch.tensor(list(category_ids), dtype=torch.int64))
        self.threshold = float(mask_threshold)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        height, width = image.shape[-2], image.shape[-1]
        images, _ = self.detector.transform([image])
        features = self.detector.backbone(images.tensors)
        proposals, _ = self.detector.rpn(images, features)
        detections, _ = self.detector.roi_heads(features, proposals, images.image_sizes)
        detections = self.detector.transform.postprocess(detections, images.image_sizes, [(height, width)])
        found = detections[0]
        levels = [features["0"], features["1"], features["2"], features["3"]]
        logits = self.semantic_head(levels)
        padded = images.tensors.shape[-2:]
        logits = F.interpolate(logits, size=(padded[0], padded[1]), mode="bilinear", align_corners=False)
        resized = images.image_sizes[0]
        logits = logits[:, :, : resized[0], : resized[1]]
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        semantic = logits[0].argmax(0).to(torch.uint8)
        masks = (found["masks"] > self.threshold).to(torch.uint8)
        labels = self.category_ids[found["labels"]]  # type: ignore[index]
        return [found["boxes"], labels, found["scores"], masks, semantic]


class PanopticQueryGraph(nn.Module):
    """Mask2Former / EoMT panoptic as exported: ``[B,3,H,W]`` in [0, 1] -> the last layer's queries.

    ``class_logits`` ``[B,Q,K+1]`` (the last: no object) and ``mask_logits`` ``[B,Q,H,W]`` at the
    input's size; the panoptic merge (:func:`~lightseg.models.panoptic.merge_queries`) runs beside.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = copy.deepcopy(model)
        merge_lora(self.model)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        outputs = self.model(image)
        masks = outputs["mask_queries"][:, -1]
        d = cast(SegmentationModel, self.model).size_divisor
        height, width = image.shape[-2], image.shape[-1]
        padded = ((height + d - 1) // d * d, (width + d - 1) // d * d)
        masks = F.interpolate(masks, size=padded, mode="bilinear", align_corners=False)
        # gathered rows and columns, not a slice: an exported slice would be fixed to the example's padding
        rows, columns = torch.arange(height, device=image.device), torch.arange(width, device=image.device)
        masks = masks.index_select(-2, rows).index_select(-1, columns)
        return [outputs["class_queries"][:, -1], masks]
