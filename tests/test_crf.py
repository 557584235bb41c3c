from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from lightning import LightningModule, Trainer
from scipy import ndimage

from lightseg.callbacks import DenseCRF, DenseCRFSearch
from lightseg.callbacks.dense_crf import native_items
from lightseg.crf import CRF_PRESETS, CRFParams, dense_crf
from lightseg.datamodules import pad_collate
from lightseg.errors import LightsegError
from lightseg.metrics import SegmentationMetrics
from lightseg.types import SemanticEvalOutput

from conftest import ROOT

pytest.importorskip("pydensecrf")


def _scene(seed: int = 0, height: int = 60, width: int = 80) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An image with sharp colour edges, its true mask, and blurred, noisy probabilities of it."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((height, width), dtype=np.int64)
    truth[:, width // 2 :] = 1
    yy, xx = np.mgrid[:height, :width]
    truth[(yy - height // 2) ** 2 + (xx - width // 4) ** 2 < (min(height, width) // 5) ** 2] = 2
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
    callback.on_test_start(trainer, Detector())
    callback.on_test_batch_end(trainer, Detector(), None, {}, 0)  # nothing happens
    assert callback.metric is None


def test_presets_are_the_published_settings_and_values_override_them() -> None:
    assert DenseCRF(workers=0).params == CRF_PRESETS["deeplab_v2_resnet101"] == CRFParams(10, 4, 67, 3, 3, 1)
    assert CRF_PRESETS["deeplab_v2_vgg16"] == CRFParams(10, 4, 65, 3, 2, 2)
    assert CRF_PRESETS["deeplab_v1_largefov"] == CRFParams(10, 4, 121, 5, 3, 3)
    assert DenseCRF("deeplab_v1_largefov", gaussian_xy_std=5, workers=0).params == CRFParams(10, 4, 121, 5, 3, 5)
    with pytest.raises(LightsegError, match=r"unknown CRF preset 'deeplab_v2'.*deeplab_v2_resnet101"):
        DenseCRF("deeplab_v2", workers=0)  # type: ignore[arg-type]
    config = yaml.safe_load((ROOT / "configs" / "semantic" / "voc_aug_deeplabv2_resnet101_crf.yaml").read_text())
    crf = next(cb for cb in config["trainer"]["callbacks"] if cb["class_path"].endswith("DenseCRF"))
    assert DenseCRF(**crf["init_args"], workers=0).params == CRF_PRESETS["deeplab_v2_resnet101"]


def _padded_batch(scenes: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[dict, torch.Tensor]:
    """A collated batch of scenes of different sizes and its padded probabilities (uniform in the padding)."""
    items = [
        {"image": torch.from_numpy(image).permute(2, 0, 1).float() / 255, "mask": torch.from_numpy(truth)}
        for image, _, truth in scenes
    ]
    batch = pad_collate(items)
    height, width = batch["image"].shape[-2:]
    probs = torch.full((len(scenes), 3, height, width), 1 / 3)
    for i, (_, prob, _) in enumerate(scenes):
        probs[i, :, : prob.shape[1], : prob.shape[2]] = torch.from_numpy(prob)
    return batch, probs


MIXED = [(0, 60, 80), (1, 37, 52), (2, 64, 41), (3, 45, 70)]  # seed, height, width: VOC-like mixed sizes


def test_test_time_crf_refines_each_image_at_its_size_whatever_the_batch() -> None:
    from lightseg.tasks import SemanticSegmentationTask

    scenes = [_scene(seed, h, w) for seed, h, w in MIXED]
    task = SemanticSegmentationTask(arch="unet", backbone="resnet18", weights_backbone=None, num_classes=3)
    trainer = Trainer(logger=False, enable_progress_bar=False)
    results = []
    for groups in ([[0, 1, 2, 3]], [[0], [1], [2], [3]], [[2, 0], [3, 1]]):
        callback = DenseCRF(workers=0)
        callback.setup(trainer, task, "test")
        for group in groups:
            batch, probs = _padded_batch([scenes[i] for i in group])
            callback.on_test_batch_end(trainer, task, SemanticEvalOutput(probs, True, batch["size"]), batch, 0)
        assert callback.metric is not None
        results.append(callback.metric.compute()["confmat"])
    expected = SegmentationMetrics(3)
    for image, probs, truth in scenes:  # each image alone, at its size
        labels = dense_crf(image, probs, CRF_PRESETS["deeplab_v2_resnet101"]).argmax(0)
        expected.update(torch.from_numpy(labels)[None], torch.from_numpy(truth)[None])
    for confmat in results:
        assert torch.equal(confmat, expected.compute()["confmat"])
    assert int(results[0].sum()) == sum(h * w for _, h, w in MIXED)  # no padded pixel counted


def test_native_items_crop_the_padding() -> None:
    batch, probs = _padded_batch([_scene(seed, h, w) for seed, h, w in MIXED[:2]])
    items = native_items(batch, probs)
    assert [item[0].shape for item in items] == [(60, 80, 3), (37, 52, 3)]
    assert [item[1].shape for item in items] == [(3, 60, 80), (3, 37, 52)]
    assert items[1][2] is not None and (items[1][2] != 255).all()


def test_search_on_mixed_sizes_scores_every_setting_on_the_first_images(tmp_path: Path) -> None:
    from lightseg.tasks import SemanticSegmentationTask

    scenes = [_scene(seed, h, w) for seed, h, w in MIXED]
    search = DenseCRFSearch(
        (1.0, 4.0), (20.0,), (5.0, 10.0), max_images=3, output=str(tmp_path / "crf.yaml"), workers=0
    )
    task = SemanticSegmentationTask(arch="unet", backbone="resnet18", weights_backbone=None, num_classes=3)
    trainer = Trainer(logger=False, enable_progress_bar=False)
    search.setup(trainer, task, "validate")
    search.on_validation_epoch_start(trainer, task)
    for group in ([0, 1], [2, 3]):  # mixed sizes in one padded batch; the 4th image is beyond max_images
        batch, probs = _padded_batch([scenes[i] for i in group])
        search.on_validation_batch_end(trainer, task, SemanticEvalOutput(probs, True, batch["size"]), batch, 0)
    search.on_validation_epoch_end(trainer, task)
    written = (tmp_path / "crf.yaml").read_text()
    assert written.startswith("# Dense-CRF setting chosen on 3 validation images")
    callback = yaml.safe_load(written)["trainer"]["callbacks"][0]
    assert callback["class_path"] == "lightseg.callbacks.DenseCRF"
    assert search.best is not None and callback["init_args"] == search.best.as_dict()
    assert DenseCRF(**callback["init_args"], workers=0).params == search.best

    def miou(params: CRFParams) -> float:
        metric = SegmentationMetrics(3)
        for image, probs, truth in scenes[:3]:
            labels = dense_crf(image, probs, params).argmax(0)
            metric.update(torch.from_numpy(labels)[None], torch.from_numpy(truth)[None])
        return float(metric.compute()["miou"])

    expected = {params: miou(params) for params in search.grid}
    assert len(search.scores) == 4 and {p: m for m, p in search.scores} == expected
    assert search.scores[0][0] == max(expected.values()) and len(set(expected.values())) > 1
