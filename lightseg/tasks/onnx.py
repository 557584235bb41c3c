"""An exported ONNX model behind the task interface, so that ``lightseg predict`` can run it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override

from lightseg.contract import TaskContext
from lightseg.errors import LightsegError
from lightseg.models.panoptic import PanopticPrediction, merge_instances_and_stuff, merge_queries
from lightseg.models.wrapper import channel_mismatch
from lightseg.tasks.base import BaseTask
from lightseg.types import Stage


class ONNXSegmentationTask(BaseTask):
    """Runs a model written by ``lightseg export`` (ONNX) with onnxruntime, for ``lightseg predict``.

    Checks the exported model on the user's own folder with the same writer, options and
    output as the PyTorch model: ``lightseg predict --config run.yaml --model
    ONNXSegmentationTask --model.init_args.path model.onnx --data.predict_dir images/``.
    Semantic models write masks and overlays; Mask R-CNN and Keypoint R-CNN models write
    ``results.json`` and overlays (the exported category ids mapped back to the data's labels
    through the metadata); Panoptic FPN models are merged here as the task merges them (the
    metadata's settings) and write the COCO panoptic files and overlays. Predicting only: there
    is nothing to train or evaluate.

    Args:
        path: the ``.onnx`` file of a lightseg task.
        num_classes: classes of the data (linked by the CLI); must be the model's.
    """

    def __init__(self, path: str, num_classes: int | None = None) -> None:
        session, metadata = _load(Path(path))
        exported = int(metadata["num_classes"])
        if num_classes is not None and num_classes != exported:
            raise LightsegError(f"{path} predicts {exported} classes but the data has {num_classes}")
        super().__init__()
        self.hparams["num_classes"] = exported
        self.session = session
        self.metadata = metadata
        self.outputs = [str(name) for name in metadata["outputs"]]
        self.output = self.outputs[0]
        #: whether the model is an R-CNN (one image in, detections out)
        self.detects = "boxes" in self.outputs
        #: whether the model is Panoptic FPN (detections and the semantic branch's labels; merged here)
        self.panoptic = "semantic" in self.outputs or "mask_logits" in self.outputs
        size = metadata.get("input", {}).get("size")
        #: the one ``(H, W)`` a graph exported with ``--export.input_size`` takes (images are resized to it)
        self.fixed_size = (int(size[0]), int(size[1])) if isinstance(size, list) else None
        #: channels of the images the graph takes (3: RGB; a multispectral model's band count)
        self.in_channels = int(metadata.get("input", {}).get("channels") or 3)
        # exported labels are the data set's category ids; the writer maps labels to ids itself
        self.label_of = {int(category): label for label, category in enumerate(metadata.get("category_ids") or [])}

    @override
    def context(self) -> TaskContext:
        context = dataclasses.replace(super().context(), in_channels=self.in_channels)
        if self.panoptic:
            return dataclasses.replace(context, kind="panoptic")
        if not self.detects:
            return context
        threshold = self.metadata.get("mask_threshold")
        found = {"boxes": "bbox", "masks": "segm", "keypoints": "keypoints"}
        return dataclasses.replace(
            context,
            kind="detection",
            iou_types=tuple(kind for output, kind in found.items() if output in self.outputs),
            mask_threshold=0.5 if threshold is None else float(threshold),
        )

    @override
    def build_model(self) -> nn.Module:
        return nn.Identity()  # the network is the ONNX session

    @override
    def build_loss(self) -> nn.Module:
        return nn.Identity()

    @override
    def build_metrics(self) -> nn.Module:
        return nn.Identity()

    @override
    def step(self, batch: Any, stage: Stage) -> torch.Tensor:
        raise LightsegError("an ONNX model only predicts: use it with lightseg predict")

    @override
    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        if batch.get("rasters"):
            source, _ = batch["rasters"][0]
            raise LightsegError(
                f"image {source.path} is larger than the data's predict_tile_above and would be predicted in tiles, "
                "which an ONNX model does not do yet: predict it with the checkpoint, or raise predict_tile_above"
            )
        if self.panoptic:
            maps = [self._panoptic(image) for image in batch["images"]]
            return {"panoptic": maps, "path": batch.get("path"), "size": batch["size"]}
        if self.detects:
            detections = [self._detect(image) for image in batch["images"]]
            return {"detections": detections, "path": batch.get("path"), "size": batch["size"]}
        if batch["image"].shape[1] != self.in_channels:
            where = f"images {', '.join(batch['path'][:3])}"
            raise LightsegError(channel_mismatch(self.in_channels, int(batch["image"].shape[1]), where))
        masks = []
        for image, (height, width) in zip(batch["image"], batch["size"], strict=True):  # each at its own size
            array = image[None, :, :height, :width].float().cpu()
            if self.fixed_size is not None:
                array = F.interpolate(array, size=self.fixed_size, mode="bilinear", antialias=True)
            (result,) = self.session.run(None, {"image": array.numpy()})
            output = torch.from_numpy(np.asarray(result))
            if self.fixed_size is not None and self.output == "labels":
                output = F.interpolate(output[:, None].float(), size=(height, width), mode="nearest")[:, 0]
            elif self.fixed_size is not None:  # scores resized back before the arg-max, as the sliding window does
                output = F.interpolate(output.float(), size=(height, width), mode="bilinear")
            labels = output[0] if self.output == "labels" else output[0].argmax(0)
            mask = np.zeros(image.shape[-2:], dtype=np.uint8)
            mask[:height, :width] = labels.numpy()
            masks.append(torch.from_numpy(mask))
        return {"mask": torch.stack(masks), "path": batch["path"], "size": batch["size"]}

    def _detect(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The exported R-CNN's detections of one ``[3,H,W]`` image, as the PyTorch task returns them."""
        results = self.session.run(None, {"image": image.float().cpu().numpy()})
        found = {name: torch.from_numpy(np.asarray(value)) for name, value in zip(self.outputs, results, strict=True)}
        labels = [self.label_of.get(int(c), 0) for c in found["labels"].tolist()]
        detections = {"boxes": found["boxes"].float(), "labels": torch.tensor(labels, dtype=torch.int64),
                      "scores": found["scores"].float()}  # fmt: skip
        if "masks" in found:
            detections["masks"] = found["masks"].float()
        if "keypoints" in found:
            detections["keypoints"] = found["keypoints"].float()
            detections["keypoints_scores"] = found["keypoint_scores"].float()
        return detections

    def _panoptic(self, image: torch.Tensor) -> PanopticPrediction:
        """The exported model's outputs of one image, merged as the PyTorch task merges them."""
        if "mask_logits" in self.outputs:
            return self._queries(image)
        results = self.session.run(None, {"image": image.float().cpu().numpy()})
        found = {name: torch.from_numpy(np.asarray(value)) for name, value in zip(self.outputs, results, strict=True)}
        labels = torch.tensor([self.label_of.get(int(c), -1) for c in found["labels"].tolist()], dtype=torch.int64)
        merge = self.metadata["merge"]
        stuff = [self.label_of[int(c)] for c in self.metadata["stuff_category_ids"]]
        return merge_instances_and_stuff(
            found["masks"][:, 0] > 0, found["scores"].float(), labels, found["semantic"].long(), stuff,
            float(merge["score_threshold"]), float(merge["overlap_threshold"]), int(merge["stuff_area"]),
        )  # fmt: skip

    def _queries(self, image: torch.Tensor) -> PanopticPrediction:
        """Mask2Former / EoMT: the last layer's queries of one image (at the graph's size, if it has one), merged."""
        height, width = image.shape[-2:]
        array = image[None].float().cpu()
        if self.fixed_size is not None:
            array = F.interpolate(array, size=self.fixed_size, mode="bilinear", antialias=True)
        classes, masks = (torch.from_numpy(np.asarray(r)) for r in self.session.run(None, {"image": array.numpy()}))
        if self.fixed_size is not None:
            masks = F.interpolate(masks.float(), size=(height, width), mode="bilinear")
        things = [self.label_of[int(c)] for c in self.metadata["thing_category_ids"]]
        merge = self.metadata["merge"]
        return merge_queries(
            classes[0], masks[0], things, float(merge["score_threshold"]), float(merge["overlap_threshold"])
        )


def _load(path: Path) -> tuple[Any, dict[str, Any]]:
    """An onnxruntime session of ``path`` and the lightseg metadata inside it; one line for what is wrong."""
    try:
        import onnxruntime
    except ImportError:
        raise LightsegError('running an ONNX model needs onnxruntime: pip install "lightseg[export]"') from None
    if not path.is_file():
        raise LightsegError(f"model.init_args.path {path} does not exist; give a file written by lightseg export")
    try:
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:
        raise LightsegError(f"{path} is not an ONNX model onnxruntime can load: {str(err).splitlines()[0]}") from None
    meta = session.get_modelmeta().custom_metadata_map.get("lightseg")
    metadata: dict[str, Any] = json.loads(meta) if meta else {}
    if not metadata.get("task") or not metadata.get("outputs"):
        raise LightsegError(
            f"{path} is not a model from lightseg export ({metadata.get('task', 'no lightseg metadata')}); "
            "lightseg predict runs the ONNX files lightseg export writes"
        )
    return session, metadata
