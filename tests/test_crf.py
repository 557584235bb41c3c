from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from lightning import LightningModule, Trainer
from scipy import ndimage

from lightseg.callbacks import DenseCRF
from lightseg.crf import CRFParams, dense_crf
from lightseg.errors import LightsegError
from lightseg.metrics import SegmentationMetrics

pytest.importorskip("pydensecrf")


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An image with sharp colour edges, its true mask, and blurred, noisy probabilities of it."""
    rng = np.random.default_rng(seed)
    height, width = 60, 80
    truth = np.zeros((height, width), dtype=np.int64)
    truth[:, 40:] = 1
    yy, xx = np.mgrid[:height, :width]
    truth[(yy - 30) ** 2 + (xx - 20) ** 2 < 12**2] = 2
    colours = np.array([[200, 40, 40], [40, 40, 200], [40, 200, 40]], dtype=np.float64)
    image = np.clip(colours[truth] + rng.normal(0, 8, (height, width, 3)), 0, 255).astype(np.uint8)
    onehot = np.eye(3)[truth].transpose(2, 0, 1)
    blurred = np.stack([ndimage.gaussian_filter(c, 6) for c in onehot]) + rng.uniform(0, 0.6, (3, height, width))
    probs = (blurred / blurred.sum(0, keepdims=True)).astype(np.float32)
    return image, probs, truth


def _miou(probs: np.ndarray, truth: np.ndarray) -> float:
    metric = SegmentationMetrics(probs.shape[0])
    metric.update(torch.from_numpy(probs)[None], torch.from_numpy(truth)[None])
    return float(metric.compute()["miou"])


def test_crf_sharpens_blurred_noisy_probabilities() -> None:
    image, probs, truth = _scene()
    refined = DenseCRF(workers=0).refine(image, probs)
    assert refined.shape == probs.shape and refined.dtype == np.float32
    np.testing.assert_allclose(refined.sum(0), 1.0, atol=1e-4)
    before, after = _miou(probs, truth), _miou(refined, truth)
    assert after > before + 0.08, (before, after)


def test_without_pairwise_terms_the_argmax_is_kept() -> None:
    image, probs, _ = _scene(1)
    refined = dense_crf(image, probs, CRFParams(bilateral_weight=0, gaussian_weight=0))
    assert (refined.argmax(0) == probs.argmax(0)).mean() > 0.999


def test_pool_gives_the_same_result_as_in_process() -> None:
    items = [_scene(k)[:2] for k in range(3)]
    inline = DenseCRF(workers=0)
    pooled = DenseCRF(workers=2)
    try:
        results = pooled.pool.map(list(items), pooled.params)
    finally:
        pooled.pool.close()
    for (image, probs), result in zip(items, results, strict=True):
        np.testing.assert_allclose(result, inline.refine(image, probs), atol=1e-6)


def test_missing_pydensecrf_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pydensecrf", None)
    monkeypatch.setitem(sys.modules, "pydensecrf.densecrf", None)
    with pytest.raises(LightsegError, match=r"pip install 'lightseg\[crf\]'"):
        DenseCRF()


def test_callback_is_a_noop_with_a_warning_for_other_tasks() -> None:
    class Detector(LightningModule):
        def test_step(self, batch: object, batch_idx: int) -> None:
            return None

    callback = DenseCRF(workers=0)
    trainer = Trainer(logger=False, enable_progress_bar=False)
    with pytest.warns(UserWarning, match="Detector is not a semantic task, so it does nothing"):
        callback.setup(trainer, Detector(), "test")
    assert not callback.active
    callback.on_test_batch_end(trainer, Detector(), None, {}, 0)  # nothing happens


def test_search_writes_a_usable_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightseg.callbacks import DenseCRFSearch
    from lightseg.tasks import SemanticSegmentationTask

    image, probs, truth = _scene()
    search = DenseCRFSearch(
        (1.0, 4.0), (20.0,), (5.0, 10.0), max_images=1, output=str(tmp_path / "crf.yaml"), workers=0
    )
    task = SemanticSegmentationTask(arch="unet", backbone="resnet18", weights_backbone=None, num_classes=3)
    trainer = Trainer(logger=False, enable_progress_bar=False)
    search.setup(trainer, task, "validate")
    batch = {
        "image": torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255,
        "mask": torch.from_numpy(truth)[None],
    }
    search.on_validation_batch_end(trainer, task, {"probs": torch.from_numpy(probs)[None]}, batch, 0)
    search.on_validation_epoch_end(trainer, task)
    written = yaml.safe_load((tmp_path / "crf.yaml").read_text())
    callback = written["trainer"]["callbacks"][0]
    assert callback["class_path"] == "lightseg.callbacks.DenseCRF"
    assert search.best is not None and callback["init_args"] == search.best.as_dict()
    best_miou = _miou(dense_crf(image, probs, search.best), truth)
    for weight in (1.0, 4.0):
        for rgb in (5.0, 10.0):
            assert best_miou >= _miou(dense_crf(image, probs, CRFParams(10, weight, 20.0, rgb)), truth) - 1e-9
