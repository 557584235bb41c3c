"""Dense-CRF post-processing at test and predict time, and a search for its parameters."""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import yaml
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter, Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from typing_extensions import override

from lightseg.crf import CRFParams, dense_crf, import_densecrf, refine_labels_many, refine_many
from lightseg.metrics import SegmentationMetrics
from lightseg.metrics.segmentation import SCALAR_KEYS, format_comparison_table


def _to_uint8_images(images: torch.Tensor) -> list[np.ndarray]:
    return list((images.detach().float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy())


class CRFPool:
    """Runs :func:`lightseg.crf.dense_crf` over many images in worker processes.

    ``workers <= 1`` refines in this process. Workers are spawned (not forked: forking a
    process that holds CUDA or DataLoader state is unsafe) and import only numpy,
    pydensecrf and :mod:`lightseg.crf`.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor: Executor | None = None

    def map(self, items: list[tuple[np.ndarray, np.ndarray]], params: CRFParams) -> list[np.ndarray]:
        """Refined probabilities for each ``(image, probs)`` pair, in order."""
        return self._run(refine_many, items, params)

    def map_labels(self, items: list[tuple[np.ndarray, np.ndarray]], params: CRFParams) -> list[np.ndarray]:
        """Refined label maps (argmax of the refined probabilities) for each pair, in order."""
        return self._run(refine_labels_many, items, params)

    def _run(
        self,
        work: Callable[[list[tuple[np.ndarray, np.ndarray]], CRFParams], list[np.ndarray]],
        items: list[tuple[np.ndarray, np.ndarray]],
        params: CRFParams,
    ) -> list[np.ndarray]:
        if self.workers <= 1 or len(items) <= 1:
            return work(items, params)
        if self._executor is None:
            self._executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        # one image per task: the first worker starts after one image is sent, not after a whole chunk
        futures = [self._executor.submit(work, [item], params) for item in items]
        return [future.result()[0] for future in futures]

    def close(self) -> None:
        """Stop the worker processes."""
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None


class _SemanticOnly(Callback):
    """Shared checks: semantic tasks only (others get one warning), probabilities requested."""

    active = False

    def _attach(self, pl_module: LightningModule) -> bool:
        if not hasattr(pl_module, "return_probs") or not hasattr(pl_module, "predict_probs"):
            rank_zero_warn(
                f"{type(self).__name__} refines semantic segmentation probabilities; "
                f"{type(pl_module).__name__} is not a semantic task, so it does nothing"
            )
            self.active = False
            return False
        cast(Any, pl_module).return_probs = True
        self.active = True
        return True


class DenseCRF(_SemanticOnly):
    """Refine semantic predictions with a fully connected CRF at test and predict time.

    ``lightseg test`` reports both the network's metrics (``test_miou``, ...) and the CRF's
    (``test_crf_miou``, ...) and prints the per-class change; ``lightseg predict`` writes the
    refined masks. Works with any semantic task, a user's subclass included, and with any
    inference mode (sliding window, multi-scale + flip). The CRF runs on float32
    probabilities in a pool of ``workers`` processes.

    Defaults are DeepLab v2's published VOC setting (see :class:`lightseg.crf.CRFParams`).

    Args:
        iterations: mean-field steps.
        bilateral_weight: ``w1``, weight of the appearance (position + RGB) kernel.
        bilateral_xy_std: ``theta_alpha`` in pixels.
        bilateral_rgb_std: ``theta_beta`` on the 0-255 colour scale.
        gaussian_weight: ``w2``, weight of the smoothness (position) kernel.
        gaussian_xy_std: ``theta_gamma`` in pixels.
        workers: CRF processes; ``None`` uses every core, ``0``/``1`` refines in-process.
    """

    def __init__(
        self,
        iterations: int = 10,
        bilateral_weight: float = 4.0,
        bilateral_xy_std: float = 121.0,
        bilateral_rgb_std: float = 5.0,
        gaussian_weight: float = 3.0,
        gaussian_xy_std: float = 3.0,
        workers: int | None = None,
    ) -> None:
        super().__init__()
        import_densecrf()  # fail at configuration time, not after an hour of inference
        self.params = CRFParams(
            iterations, bilateral_weight, bilateral_xy_std, bilateral_rgb_std, gaussian_weight, gaussian_xy_std
        )
        self.pool = CRFPool(os.cpu_count() or 1 if workers is None else workers)
        self.metric: SegmentationMetrics | None = None

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
        hp = pl_module.hparams
        self.metric = SegmentationMetrics(hp["num_classes"], hp["ignore_index"]).to(pl_module.device)

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
        if not self.active or not outputs:
            return
        probs = outputs["probs"].float().cpu().numpy()
        labels = self.pool.map_labels(list(zip(_to_uint8_images(batch["image"]), probs, strict=True)), self.params)
        assert self.metric is not None
        self.metric.update(torch.from_numpy(np.stack(labels)).long().to(pl_module.device), batch["mask"])

    @override
    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.active or self.metric is None:
            return
        crf = self.metric.compute()
        network = pl_module.stage_metrics("test").compute()  # type: ignore[operator]
        for key in SCALAR_KEYS:
            pl_module.log(f"test_crf_{key}", crf[key].float())
        names = getattr(pl_module, "class_names", None)
        rank_zero_info(format_comparison_table(network, crf, names, title="Test, network vs dense CRF, per class (%)"))
        self.metric.reset()

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
        probs = outputs.pop("probs").numpy()
        images = _to_uint8_images(batch["image"])
        items = [(img[:h, :w], p[:, :h, :w]) for img, p, (h, w) in zip(images, probs, outputs["size"], strict=True)]
        for i, labels in enumerate(self.pool.map_labels(items, self.params)):
            height, width = outputs["size"][i]
            outputs["mask"][i, :height, :width] = torch.from_numpy(labels).to(outputs["mask"].dtype)

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.pool.close()
        if self.active:
            cast(Any, pl_module).return_probs = False


class DenseCRFSearch(_SemanticOnly):
    """Grid search of the CRF's appearance kernel on the validation split; writes the best as YAML.

    Use with ``lightseg validate --ckpt_path best``: it collects the network's probabilities
    for up to ``max_images`` validation images, refines them with every combination of the
    grid, prints the mIoU of each, and writes the best setting to ``output`` as a config
    fragment (``lightseg test --config run.yaml --config crf.yaml``). The smoothness kernel
    stays at DeepLab's fixed ``w2 = 3, theta_gamma = 3`` as in the paper's search.

    Args:
        bilateral_weights: values of ``w1`` to try.
        bilateral_xy_stds: values of ``theta_alpha`` to try.
        bilateral_rgb_stds: values of ``theta_beta`` to try.
        iterations: mean-field steps.
        max_images: validation images used (the paper used 100).
        output: where to write the best setting.
        workers: CRF processes (``None``: every core).
    """

    def __init__(
        self,
        bilateral_weights: Sequence[float] = (3.0, 4.0, 5.0),
        bilateral_xy_stds: Sequence[float] = (50.0, 80.0, 121.0),
        bilateral_rgb_stds: Sequence[float] = (3.0, 5.0, 10.0),
        iterations: int = 10,
        max_images: int = 100,
        output: str = "crf.yaml",
        workers: int | None = None,
    ) -> None:
        super().__init__()
        import_densecrf()
        self.grid = list(itertools.product(bilateral_weights, bilateral_xy_stds, bilateral_rgb_stds))
        self.iterations = iterations
        self.max_images = max_images
        self.output = Path(output)
        self.pool = CRFPool(os.cpu_count() or 1 if workers is None else workers)
        self.items: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.best: CRFParams | None = None

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "validate":
            self._attach(pl_module)

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
        if not self.active or not outputs or len(self.items) >= self.max_images:
            return
        probs = outputs["probs"].float().cpu().numpy()
        masks = batch["mask"].cpu().numpy()
        for image, prob, mask in zip(_to_uint8_images(batch["image"]), probs, masks, strict=True):
            if len(self.items) < self.max_images:
                self.items.append((image, prob, mask))

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.active or not self.items or trainer.sanity_checking:
            return
        hp = pl_module.hparams
        pairs = [(image, prob) for image, prob, _ in self.items]
        masks = torch.from_numpy(np.stack([mask for *_, mask in self.items]))
        rows = []
        for weight, xy_std, rgb_std in self.grid:
            params = CRFParams(self.iterations, weight, xy_std, rgb_std)
            metric = SegmentationMetrics(hp["num_classes"], hp["ignore_index"])
            metric.update(torch.from_numpy(np.stack(self.pool.map_labels(pairs, params))).long(), masks)
            rows.append((float(metric.compute()["miou"]), params))
        baseline = SegmentationMetrics(hp["num_classes"], hp["ignore_index"])
        baseline.update(torch.from_numpy(np.stack([prob for _, prob, _ in self.items])), masks)
        rows.sort(key=lambda row: -row[0])
        network_miou = 100 * float(baseline.compute()["miou"])
        lines = [f"Dense-CRF search on {len(self.items)} validation images (network mIoU {network_miou:.2f})"]
        lines += ["   mIoU     w1  theta_alpha  theta_beta"]
        lines += [
            f"  {100 * m:5.2f}  {p.bilateral_weight:5.1f}  {p.bilateral_xy_std:11.1f}  {p.bilateral_rgb_std:10.1f}"
            for m, p in rows
        ]
        self.best = rows[0][1]
        fragment = {
            "trainer": {"callbacks": [{"class_path": "lightseg.callbacks.DenseCRF", "init_args": self.best.as_dict()}]}
        }
        if trainer.is_global_zero:
            self.output.write_text(
                f"# Dense-CRF setting chosen on {len(self.items)} validation images (mIoU {100 * rows[0][0]:.2f}).\n"
                + yaml.safe_dump(fragment, sort_keys=False)
            )
        lines.append(f"best setting written to {self.output}")
        rank_zero_info("\n".join(lines))
        self.items.clear()

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.pool.close()
        if self.active:
            cast(Any, pl_module).return_probs = False
