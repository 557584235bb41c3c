"""Panoptic segmentation: every pixel a class and, for things, an instance; scored by PQ."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Literal, cast

import torch
from torch import nn
from typing_extensions import override

from lightseg.coco_masks import semantic_map
from lightseg.contract import PanopticData, TaskContext, data_description, datamodule_of
from lightseg.errors import LightsegError, class_count_mismatch
from lightseg.metrics.coco import COCOEvaluator
from lightseg.metrics.panoptic import PanopticQuality
from lightseg.metrics.segmentation import SegmentationMetrics
from lightseg.metrics.tables import format_pq_table
from lightseg.models.panoptic import PanopticFPN, PanopticPrediction
from lightseg.models.predictors import fit_predictors, fit_predictors_by_name
from lightseg.tasks.base import BaseTask
from lightseg.tasks.panoptic_families import PANOPTIC_FPN, QUERY_ARCHS, PanopticFamily, PanopticSpec, family_of
from lightseg.tasks.panoptic_views import ground_truth, semantic_view, thing_detections
from lightseg.types import Stage

__all__ = ["PANOPTIC_FPN", "PQ_SCORES", "QUERY_ARCHS", "PanopticSegmentationTask"]
#: the scores of each class in the per-class table and logs
PQ_SCORES = ("pq", "sq", "rq")


class PanopticSegmentationTask(BaseTask):
    """Panoptic segmentation with Panoptic FPN (Mask R-CNN and a semantic FPN branch) or Mask2Former / EoMT.

    Batches are those of :class:`~lightseg.datamodules.COCOPanopticDataModule`: lists of images in
    [0, 1] and panoptic targets (a map of segment numbers, each segment's class, crowd and thing
    flags). Training logs ``train_loss`` (and Panoptic FPN's terms: Mask R-CNN's and
    ``train_loss_semantic``); validation and test log the data set's ``{stage}_pq``, ``_sq``,
    ``_rq``, the same over things (``_pq_things``, ...) and stuff (``_pq_stuff``, ...) and per class
    (``{stage}_pq_<class>``, ...), counted as the COCO panoptic evaluator (panopticapi) counts them;
    ``validate`` and ``test`` print the per-class table. Predict steps return each image's
    :class:`~lightseg.models.panoptic.PanopticPrediction`.

    Args:
        network: the architecture and its options, as one group (a
            :class:`~lightseg.tasks.panoptic_families.PanopticSpec`), e.g. ``network: {arch:
            panoptic_fpn_resnet18, weights_backbone: null}``. The older flat spelling (``arch:``
            beside ``num_classes``) is still read.
        num_classes: things and stuff classes (the CLI links it from the data module).
        thing_classes: the class labels that are things (the CLI links them from the data module).
        semantic_loss_weight: Panoptic FPN: weight of the semantic branch's loss (0.5, Detectron2's).
        score_threshold: the merge's instance score (Panoptic FPN, 0.5) or query class probability
            (Mask2Former / EoMT, 0.8) below which a prediction is left out; ``null``: the published value.
        overlap_threshold: the fraction of an instance's mask already taken above which it is left out
            (Panoptic FPN, 0.5), or of a query's mask that must be its own (Mask2Former / EoMT, 0.8);
            ``null``: the published value.
        stuff_area: Panoptic FPN: stuff regions of fewer pixels are left out (4096, Detectron2's for COCO).
        mask_threshold: Panoptic FPN: instance mask probability that counts as foreground.
        kwargs: the optimiser and speed settings of :class:`~lightseg.tasks.BaseTask` (``channels_last``,
            ``compile``: of the backbone and FPN for Panoptic FPN, the whole network for a query model).
    """

    monitor: ClassVar[str] = "val_pq"
    mode: ClassVar[Literal["min", "max"]] = "max"
    stages: ClassVar[tuple[str, ...]] = ("val", "test")
    network_spec: ClassVar[type[PanopticSpec]] = PanopticSpec
    network: PanopticSpec

    def __init__(
        self,
        network: PanopticSpec = PanopticSpec(),  # noqa: B008 (frozen: one shared default is safe)
        num_classes: int = 133,
        thing_classes: list[int] | None = None,
        semantic_loss_weight: float = 0.5,
        score_threshold: float | None = None,
        overlap_threshold: float | None = None,
        stuff_area: int = 4096,
        mask_threshold: float = 0.5,
        **kwargs: Any,
    ) -> None:
        self.take_network(network, kwargs)
        super().__init__(**kwargs)
        # the semantic view of the panoptic maps: each pixel's class; one more class for pixels left void,
        # which count against their true class (a miss) but as no other class's prediction
        self.semantic_metrics = nn.ModuleDict(
            {stage: SegmentationMetrics(num_classes + 1, ignore_index=255) for stage in self.stages}
        )
        # the instance view: the things of the panoptic maps scored as instances (mask AP), where the data
        # gives its things as COCO instances (PanopticData)
        self.instance_metrics = nn.ModuleDict({stage: COCOEvaluator(("segm",)) for stage in self.stages})
        self._thing_image_ids: dict[str, dict[Any, int]] = {}
        #: box/mask predictor slot names of pretrained weights, until they are fitted to the data's things
        self.pretrained_classes: list[str] | None = getattr(self, "pretrained_classes", None)

    @property
    def fpn(self) -> bool:
        """Whether the model is Panoptic FPN (else a mask-classification model)."""
        return self.network.arch in PANOPTIC_FPN

    @property
    def family(self) -> PanopticFamily:
        """The model family of ``arch``, which builds, trains and merges its own way (:mod:`.panoptic_families`)."""
        return family_of(self)

    @property
    def things(self) -> list[int]:
        """The class labels that are things, ascending."""
        return sorted(int(c) for c in self.hparams["thing_classes"])

    @property
    def stuff(self) -> list[int]:
        """The class labels that are stuff, ascending."""
        things = set(self.things)
        return [c for c in range(int(self.hparams["num_classes"])) if c not in things]

    def _check_options(self) -> None:
        hp = self.hparams
        family = self.family  # refuses an unknown arch
        if hp["thing_classes"] is None:
            raise LightsegError(
                "thing_classes: give the class labels that are things; the CLI links them from a panoptic data "
                "module (COCOPanopticDataModule, CityscapesPanopticDataModule, ShapesPanopticDataModule), and "
                "this data has none"
            )
        bad = [c for c in hp["thing_classes"] if not 0 <= int(c) < hp["num_classes"]]
        if bad:
            raise LightsegError(f"thing_classes {bad} are not class labels 0..{hp['num_classes'] - 1}")
        given = {**hp, **self.network.as_dict()}
        changed = [f"{k}={given[k]!r}" for k, default in family.unused.items() if given[k] != default]
        if changed:
            raise LightsegError(
                f"{', '.join(changed)} does not apply to arch {self.network.arch!r} ({family.title}); remove it"
            )

    @override
    def build_model(self) -> nn.Module:
        self._check_options()
        return self.family.build()

    @override
    def compile_targets(self) -> list[nn.Module]:
        return self.family.compile_targets(self.model)

    @override
    def build_loss(self) -> nn.Module:
        return nn.CrossEntropyLoss(ignore_index=255)  # Panoptic FPN's semantic branch

    @override
    def build_metrics(self) -> nn.Module:
        names = [str(i) for i in range(int(self.hparams["num_classes"]))]
        things = set(self.hparams["thing_classes"] or [])
        return PanopticQuality([{"id": i, "name": n, "isthing": int(i in things)} for i, n in enumerate(names)])

    def _fit_predictors(self) -> None:
        """Fit pretrained box/mask predictors to the data's thing classes (by name), once."""
        if self.pretrained_classes is None or not self.fpn:
            return
        pretrained, self.pretrained_classes = self.pretrained_classes, None
        names = self.class_names
        thing_names = ["background", *(names[c] for c in self.things)] if names is not None else None
        source = "COCO" if self.network.weights == "coco" else str(self.network.weights)
        detector = cast(PanopticFPN, self.model).detector
        fit_predictors_by_name(detector, pretrained, thing_names, len(self.things) + 1, source)

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.pretrained_classes is not None:  # a checkpoint holds predictors already fitted to its data
            self.pretrained_classes = None
            fit_predictors(cast(PanopticFPN, self.model).detector, None, len(self.things) + 1)
        super().on_load_checkpoint(checkpoint)

    @override
    def setup(self, stage: str) -> None:
        datamodule = datamodule_of(self.trainer)
        data = data_description(datamodule)
        if data is not None:
            name = type(datamodule).__name__
            if data.num_classes != self.hparams["num_classes"]:
                raise LightsegError(
                    class_count_mismatch(
                        self.hparams["num_classes"], data.num_classes, name,
                        f"build the task with num_classes={data.num_classes} (the CLI links it from the data)",
                    )
                )  # fmt: skip
            if data.thing_classes is not None and sorted(data.thing_classes) != self.things:
                raise LightsegError(
                    f"the model's thing_classes {self.things} differ from {name}'s things {sorted(data.thing_classes)}"
                    ": a model's things and stuff must be the data's (the CLI links them)"
                )
        self._fit_predictors()
        super().setup(stage)
        if isinstance(datamodule, PanopticData):
            for split in {"fit": ("val",), "validate": ("val",), "test": ("test",)}.get(stage, ()):
                truth = datamodule.thing_ground_truth(split)
                cast(COCOEvaluator, self.instance_metrics[split]).set_ground_truth(truth.data, truth.category_ids)
                self._thing_image_ids[split] = truth.image_ids
        names = self.class_names_or_indices
        for split in self.stages:
            metric = cast(PanopticQuality, self.stage_metrics(split))
            for category in metric.categories:
                category["name"] = names[int(category["id"])]

    @override
    def context(self) -> TaskContext:
        return dataclasses.replace(super().context(), kind="panoptic", mask_threshold=self.hparams["mask_threshold"])

    # --- targets -------------------------------------------------------------------------------

    def detector_target(self, target: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Mask R-CNN's target of a panoptic target: the non-crowd thing segments with pixels."""
        segments = target["segments"]
        rank = {c: i + 1 for i, c in enumerate(self.things)}
        masks, labels = [], []
        for n, (label, crowd) in enumerate(zip(target["labels"].tolist(), target["iscrowd"].tolist(), strict=True)):
            if label in rank and not crowd:
                mask = segments == n + 1
                if bool(mask.any()):
                    masks.append(mask)
                    labels.append(rank[label])
        device = segments.device
        if not masks:
            h, w = segments.shape[-2:]
            empty = torch.zeros((0, h, w), dtype=torch.uint8, device=device)
            return {"boxes": torch.zeros((0, 4), device=device), "labels": torch.zeros(0, dtype=torch.long,
                    device=device), "masks": empty}  # fmt: skip
        stacked = torch.stack(masks)
        rows, cols = stacked.any(2), stacked.any(1)
        boxes = [
            [c.nonzero()[0, 0], r.nonzero()[0, 0], c.nonzero()[-1, 0] + 1, r.nonzero()[-1, 0] + 1]
            for r, c in zip(rows, cols, strict=True)
        ]
        return {
            "boxes": torch.tensor([[float(v) for v in box] for box in boxes], device=device),
            "labels": torch.tensor(labels, dtype=torch.long, device=device),
            "masks": stacked.to(torch.uint8),
        }

    def stuff_target(self, target: dict[str, Any]) -> torch.Tensor:
        """The semantic branch's target: 0 on things (crowds too), ``k`` on the ``k``-th stuff class, 255 void."""
        table = torch.full((int(self.hparams["num_classes"]),), 0, dtype=torch.long)
        for k, c in enumerate(self.stuff):
            table[c] = k + 1
        per_segment = torch.cat([torch.tensor([255]), table[target["labels"].cpu()]]).to(target["segments"].device)
        return per_segment[target["segments"].long()]

    # --- steps ---------------------------------------------------------------------------------

    @override
    def step(self, batch: dict[str, Any], stage: Stage) -> torch.Tensor:
        images, targets = batch["images"], batch["targets"]
        if stage != "train":
            predictions = self.predictions(batch)
            metric = cast(PanopticQuality, self.stage_metrics(stage))
            metric.update([(p.segments, p.segment_info()) for p in predictions], [ground_truth(t) for t in targets])
            view = cast(SegmentationMetrics, self.semantic_metrics[stage])
            for prediction, target in zip(predictions, targets, strict=True):
                view.update(semantic_view(prediction, int(self.hparams["num_classes"])), semantic_map(target))
            image_ids = self._thing_image_ids.get(stage)
            if image_ids is not None:
                instances = cast(COCOEvaluator, self.instance_metrics[stage])
                ids = [image_ids[t["image_id"]] for t in targets]
                instances.update([thing_detections(p, self.things) for p in predictions], ids)
            return torch.zeros((), device=self.device)
        self._fit_predictors()
        loss = self.family.training_loss(images, targets)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(images))
        return loss

    @override
    def forward(self, images: list[torch.Tensor]) -> list[PanopticPrediction]:
        """The panoptic prediction of each ``[3, H, W]`` image in [0, 1]."""
        return self.predict_panoptic(images)

    def predictions(self, batch: dict[str, Any]) -> list[PanopticPrediction]:
        """The panoptic prediction of each image of ``batch`` in validation, test and predict.

        The seam a subclass changes to predict otherwise (e.g. with test-time augmentation).
        """
        return self.predict_panoptic(batch["images"])

    def predict_panoptic(self, images: list[torch.Tensor]) -> list[PanopticPrediction]:
        """Run the model on ``images`` and merge its outputs into panoptic maps (:mod:`lightseg.models.panoptic`)."""
        self._fit_predictors()
        return self.family.predict(images)

    @override
    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        predictions = self.predictions(batch)
        moved = [dataclasses.replace(p, segments=p.segments.cpu()) for p in predictions]
        return {"panoptic": moved, "path": batch.get("path"), "size": batch["size"]}

    # --- epoch ends ----------------------------------------------------------------------------

    def _end_epoch(self, stage: str) -> dict[str, torch.Tensor]:
        metric = self.stage_metrics(stage)
        results: dict[str, torch.Tensor] = metric.compute()
        metric.reset()
        semantic = cast(SegmentationMetrics, self.semantic_metrics[stage])
        view = semantic.compute()
        semantic.reset()
        iou, pixel_acc = view["iou_per_class"][:-1], view["pixel_acc"]  # the void column dropped
        results.update(iou_per_class=iou, miou=iou.nanmean(), pixel_acc=pixel_acc)
        instances = cast(COCOEvaluator, self.instance_metrics[stage])
        if stage in self._thing_image_ids and instances.evaluated_image_ids():
            scored = instances.compute()
            results.update(segm_map=scored["segm_map"], segm_map_50=scored["segm_map_50"])
        instances.reset()
        self._stage_results[stage] = results
        values = {f"{stage}_{k}": v.float() for k, v in results.items() if v.ndim == 0}
        for score in (*PQ_SCORES, "iou"):
            for name, value in zip(self.class_names_or_indices, results[f"{score}_per_class"].tolist(), strict=True):
                if not math.isnan(value):
                    values[f"{stage}_{score}_{name.replace(' ', '_')}"] = torch.tensor(value)
        self.log(f"{stage}_pq", values.pop(f"{stage}_pq"), prog_bar=True)
        self.log_dict(values)
        return results

    @override
    def on_validation_epoch_end(self) -> None:
        results = self._end_epoch("val")
        if self.trainer.state.fn == "validate" and not self.trainer.sanity_checking:
            self.print(self._table(results, "Validation, panoptic quality per class (%)"))

    @override
    def on_test_epoch_end(self) -> None:
        self.print(self._table(self._end_epoch("test"), "Test, panoptic quality per class (%)"))

    def _table(self, results: dict[str, torch.Tensor], title: str) -> str:
        return format_pq_table(results, self.class_names_or_indices, self.things, title)
