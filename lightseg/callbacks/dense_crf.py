"""Dense-CRF post-processing at test and predict time, and a search for its parameters."""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import yaml
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torchmetrics import SumMetric
from typing_extensions import override

from lightseg.contract import LightsegTask, task_context
from lightseg.crf import CRFParams, CRFPool, CRFPreset, crf_params, dense_crf, import_densecrf
from lightseg.metrics import SegmentationMetrics
from lightseg.metrics.segmentation import PROTOCOL_SCALAR_KEYS, SCALAR_KEYS
from lightseg.metrics.tables import format_comparison_table
from lightseg.types import SemanticEvalOutput
from lightseg.visualize import to_uint8_image


def native_items(batch: dict[str, Any], probs: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """Each image of a padded batch at its own size: ``(uint8 [h,w,3] image, float32 [C,h,w] probs, mask or None)``.

    The CRF's kernels reach across the whole image it is given: refined on the padded batch,
    an image's result would depend on the images it was batched with.
    """
    images = [to_uint8_image(image) for image in batch["image"]]
    probs_np = probs.detach().float().cpu().numpy()
    height, width = probs_np.shape[-2:]
    sizes = batch.get("size") or [(height, width)] * len(images)
    masks = batch["mask"].cpu().numpy() if "mask" in batch else [None] * len(images)
    return [
        (image[:h, :w], prob[:, :h, :w], None if mask is None else mask[:h, :w])
        for image, prob, mask, (h, w) in zip(images, probs_np, masks, sizes, strict=True)
    ]


class _SemanticOnly(Callback):
    """Shared check: semantic tasks only (others get one warning and nothing is done)."""

    active = False

    def _attach(self, pl_module: LightningModule) -> bool:
        context = task_context(pl_module)
        self.active = context is not None and context.kind == "semantic"
        if not self.active:
            rank_zero_warn(
                f"{type(self).__name__} refines semantic segmentation probabilities; "
                f"{type(pl_module).__name__} is not a semantic task, so it does nothing"
            )
        return self.active


class DenseCRF(_SemanticOnly):
    """Refine semantic predictions with a fully connected CRF at test and predict time.

    ``lightseg test`` reports both the network's metrics (``test_miou``, ...) and the CRF's
    (``test_crf_miou``, ``test_crf_biou``, ...) and prints the per-class change and the Boundary IoU
    change; ``lightseg predict`` writes the
    refined masks. Works with any semantic task, a user's subclass included, and with any
    inference mode (sliding window, multi-scale + flip). The CRF runs on float32
    probabilities in a pool of ``workers`` processes.

    The setting starts from a published ``preset`` (:data:`lightseg.crf.CRF_PRESETS`); each
    parameter given explicitly replaces the preset's value. The default preset is DeepLab
    v2's ResNet-101 VOC setting, the one tuned for the ResNet-101 networks of lightseg's
    DeepLab recipes; ``deeplab_v2_vgg16`` and ``deeplab_v1_largefov`` are the VGG-16 ones.
    Each image is refined at its own size (never on a padded batch), so results do not
    depend on batching.

    Args:
        preset: ``deeplab_v2_resnet101`` (w1 4, theta_alpha 67, theta_beta 3, w2 3,
            theta_gamma 1), ``deeplab_v2_vgg16`` (4, 65, 3, 2, 2) or ``deeplab_v1_largefov``
            (4, 121, 5, 3, 3); 10 iterations each.
        iterations: mean-field steps (``None``: the preset's).
        bilateral_weight: ``w1``, weight of the appearance (position + RGB) kernel.
        bilateral_xy_std: ``theta_alpha`` in pixels.
        bilateral_rgb_std: ``theta_beta`` on the 0-255 colour scale.
        gaussian_weight: ``w2``, weight of the smoothness (position) kernel.
        gaussian_xy_std: ``theta_gamma`` in pixels.
        workers: CRF processes; ``None`` uses every core, ``0``/``1`` refines in-process.
    """

    def __init__(
        self,
        preset: CRFPreset = "deeplab_v2_resnet101",
        iterations: int | None = None,
        bilateral_weight: float | None = None,
        bilateral_xy_std: float | None = None,
        bilateral_rgb_std: float | None = None,
        gaussian_weight: float | None = None,
        gaussian_xy_std: float | None = None,
        workers: int | None = None,
    ) -> None:
        super().__init__()
        import_densecrf()  # fail at configuration time, not after an hour of inference
        self.params = crf_params(
            preset,
            iterations=iterations,
            bilateral_weight=bilateral_weight,
            bilateral_xy_std=bilateral_xy_std,
            bilateral_rgb_std=bilateral_rgb_std,
            gaussian_weight=gaussian_weight,
            gaussian_xy_std=gaussian_xy_std,
        )
        self.pool = CRFPool(os.cpu_count() or 1 if workers is None else workers)
        self.metric: SegmentationMetrics | None = None
        self._crf_results: dict[str, torch.Tensor] | None = None

    def refine(self, image: np.ndarray, probs: np.ndarray) -> np.ndarray:
        """Refined ``[C,H,W]`` probabilities of one ``[H,W,3]`` uint8 image (see :func:`lightseg.crf.dense_crf`)."""
        return dense_crf(image, probs, self.params)

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage not in ("test", "predict") or not self._attach(pl_module):
            return
        if stage == "predict":
            writers = [i for i, cb in enumerate(trainer.callbacks) if isinstance(cb, BasePredictionWriter)]  # type: ignore[attr-defined]
            if writers and min(writers) < trainer.callbacks.index(self):  # type: ignore[attr-defined]
                rank_zero_warn(
                    "DenseCRF comes after a prediction writer in trainer.callbacks: unrefined masks are written"
                )
        context = cast(LightsegTask, pl_module).context()
        self.metric = SegmentationMetrics(context.num_classes, context.ignore_index).to(pl_module.device)

    @override
    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.active:
            return
        # the task's protocol is known once it is set up: the CRF's masks get the same Boundary IoU
        context = cast(LightsegTask, pl_module).context()
        metric = SegmentationMetrics(context.num_classes, context.ignore_index, context.protocol)
        self.metric = metric.to(pl_module.device)

    @override
    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self.active or not isinstance(outputs, SemanticEvalOutput):
            return
        items = native_items(batch, outputs.probs)
        labels = self.pool.map_labels([(image, prob) for image, prob, _ in items], self.params)
        assert self.metric is not None
        for label, (*_, mask) in zip(labels, items, strict=True):
            target = torch.from_numpy(mask)[None].to(pl_module.device)
            self.metric.update(torch.from_numpy(label)[None].long().to(pl_module.device), target)

    @override
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.active or self.metric is None:
            return
        self._crf_results = self.metric.compute()
        for key in (*SCALAR_KEYS, *(k for k in PROTOCOL_SCALAR_KEYS if k in self._crf_results)):
            pl_module.log(f"test_crf_{key}", self._crf_results[key].float())
        self.metric.reset()

    @override
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # the network's results are the task's, computed in its epoch end (which runs after the callbacks')
        task = cast(LightsegTask, pl_module)
        network, crf = task.stage_results("test"), self._crf_results
        if not self.active or network is None or crf is None:
            return
        names = task.context().class_names
        rank_zero_info(format_comparison_table(network, crf, names, title="Test, network vs dense CRF, per class (%)"))
        self._crf_results = None

    @override
    def on_predict_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self.active or "probs" not in outputs:
            return
        items = native_items({"image": batch["image"], "size": outputs["size"]}, outputs["probs"])
        refined = self.pool.map_labels([(image, prob) for image, prob, _ in items], self.params)
        for i, labels in enumerate(refined):
            height, width = outputs["size"][i]
            outputs["mask"][i, :height, :width] = torch.from_numpy(labels).to(outputs["mask"].dtype)

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.pool.close()


class DenseCRFSearch(_SemanticOnly):
    """Grid search of the CRF's appearance kernel on the validation split; writes the best as YAML.

    Use with ``lightseg validate --ckpt_path best``: every one of the first ``max_images``
    validation images is refined at its own size with every combination of the grid as it
    arrives, and one confusion matrix per setting is accumulated (no probabilities are
    kept). At the end the matrices are summed across processes, the mIoU of each setting
    is printed, and the best setting is written to ``output`` as a config fragment
    (``lightseg test --config run.yaml --config crf.yaml``). The first ``max_images``
    images are those of the split's order, whatever the number of processes (the
    validation loaders of lightseg's data modules give process ``r`` of ``n`` the images
    ``r, r + n, ...``), so 1 and N processes choose the same setting with the same scores.
    The smoothness kernel stays fixed, at DeepLab's ``w2 = 3, theta_gamma = 3`` by default
    as in the paper's search.

    Args:
        bilateral_weights: values of ``w1`` to try.
        bilateral_xy_stds: values of ``theta_alpha`` to try.
        bilateral_rgb_stds: values of ``theta_beta`` to try.
        gaussian_weight: the fixed ``w2``.
        gaussian_xy_std: the fixed ``theta_gamma``.
        iterations: mean-field steps.
        max_images: validation images used (the paper used 100).
        output: where to write the best setting.
        workers: CRF processes (``None``: every core).
    """

    def __init__(
        self,
        bilateral_weights: Sequence[float] = (3.0, 4.0, 5.0),
        bilateral_xy_stds: Sequence[float] = (50.0, 67.0, 80.0, 121.0),
        bilateral_rgb_stds: Sequence[float] = (3.0, 5.0, 10.0),
        gaussian_weight: float = 3.0,
        gaussian_xy_std: float = 3.0,
        iterations: int = 10,
        max_images: int = 100,
        output: str = "crf.yaml",
        workers: int | None = None,
    ) -> None:
        super().__init__()
        import_densecrf()
        self.grid = [
            CRFParams(iterations, weight, xy_std, rgb_std, gaussian_weight, gaussian_xy_std)
            for weight, xy_std, rgb_std in itertools.product(bilateral_weights, bilateral_xy_stds, bilateral_rgb_stds)
        ]
        self.max_images = max_images
        self.output = Path(output)
        self.pool = CRFPool(os.cpu_count() or 1 if workers is None else workers)
        self.candidates: list[SegmentationMetrics] = []
        self.network: SegmentationMetrics | None = None
        self.images: SumMetric | None = None
        self.seen = 0  # validation images this process has been given in the current epoch
        self.best: CRFParams | None = None
        self.scores: list[tuple[float, CRFParams]] = []

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "validate" or not self._attach(pl_module):
            return
        context = cast(LightsegTask, pl_module).context()
        self.candidates = [
            SegmentationMetrics(context.num_classes, context.ignore_index).to(pl_module.device) for _ in self.grid
        ]
        self.network = SegmentationMetrics(context.num_classes, context.ignore_index).to(pl_module.device)
        self.images = SumMetric().to(pl_module.device)

    @override
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.seen = 0
        for metric in [*self.candidates, self.network, self.images]:
            if metric is not None:
                metric.reset()

    @override
    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self.active or not isinstance(outputs, SemanticEvalOutput):
            return
        if trainer.sanity_checking or self.network is None:
            return
        chosen = []
        for item in native_items(batch, outputs.probs):
            # the image's position in the split under the unpadded distributed sampler
            if trainer.global_rank + self.seen * trainer.world_size < self.max_images:
                chosen.append(item)
            self.seen += 1
        if not chosen:
            return
        device = pl_module.device
        jobs = [((image, prob), params) for params in self.grid for image, prob, _ in chosen]
        labels = iter(self.pool.map_labels_each(jobs))
        for metric in self.candidates:
            for *_, mask in chosen:
                metric.update(torch.from_numpy(next(labels))[None].long().to(device), torch.from_numpy(mask)[None])
        for _, prob, mask in chosen:
            self.network.update(torch.from_numpy(prob.argmax(0))[None].to(device), torch.from_numpy(mask)[None])
        assert self.images is not None
        self.images.update(torch.tensor(float(len(chosen)), device=device))

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.active or trainer.sanity_checking or self.network is None or self.images is None:
            return
        # every process computes the same sums (torchmetrics reduces the matrices across processes)
        count = int(self.images.compute())
        if count == 0:
            rank_zero_warn("DenseCRFSearch saw no validation image: nothing searched, nothing written")
            return
        network_miou = 100 * float(self.network.compute()["miou"])
        rows = [
            (float(metric.compute()["miou"]), params) for metric, params in zip(self.candidates, self.grid, strict=True)
        ]
        # best first; ties keep the grid's order, the same on every process
        self.scores = sorted(rows, key=lambda row: -row[0])
        self.best = self.scores[0][1]
        lines = [f"Dense-CRF search on {count} validation images (network mIoU {network_miou:.2f})"]
        lines += ["   mIoU     w1  theta_alpha  theta_beta"]
        lines += [
            f"  {100 * m:5.2f}  {p.bilateral_weight:5.1f}  {p.bilateral_xy_std:11.1f}  {p.bilateral_rgb_std:10.1f}"
            for m, p in self.scores
        ]
        fragment = {
            "trainer": {"callbacks": [{"class_path": "lightseg.callbacks.DenseCRF", "init_args": self.best.as_dict()}]}
        }
        if trainer.is_global_zero:
            self.output.write_text(
                f"# Dense-CRF setting chosen on {count} validation images (mIoU {100 * self.scores[0][0]:.2f}; "
                f"network without CRF {network_miou:.2f}).\n" + yaml.safe_dump(fragment, sort_keys=False)
            )
        lines.append(f"best setting written to {self.output}")
        rank_zero_info("\n".join(lines))

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.pool.close()
