from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightseg.errors import LightsegError
from lightseg.losses import SegmentationLoss, median_frequency_weights, unet_weight_map


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 6)
    target = torch.randint(0, 3, (2, 5, 6))
    target[0, 0, :] = 255
    return logits, target


def test_ce_ignores_void_pixels() -> None:
    logits, target = _data()
    valid = target != 255
    manual = -F.log_softmax(logits, 1).gather(1, target.clamp(max=2)[:, None])[:, 0][valid].mean()
    torch.testing.assert_close(SegmentationLoss("ce", 3)(logits, target), manual)
    # changing logits at ignored pixels changes nothing
    changed = logits.clone()
    changed[0, :, 0, :] += 100
    torch.testing.assert_close(SegmentationLoss("ce", 3)(changed, target), manual)


def test_class_weighted_ce() -> None:
    logits, target = _data()
    loss = SegmentationLoss("ce", 3, class_weights=[1.0, 2.0, 0.5])(logits, target)
    expected = F.cross_entropy(logits, target, weight=torch.tensor([1.0, 2.0, 0.5]), ignore_index=255)
    torch.testing.assert_close(loss, expected)


def test_dice_is_zero_for_perfect_prediction_and_ignores_void() -> None:
    _, target = _data()
    logits = F.one_hot(target.clamp(max=2), 3).permute(0, 3, 1, 2).float() * 50
    logits[0, :, 0, :] = torch.tensor([0.0, 50.0, 0.0])[:, None]  # wrong, but on ignored pixels
    assert SegmentationLoss("dice", 3)(logits, target) < 1e-3
    assert SegmentationLoss("ce+dice", 3)(logits, target) < 1e-3
    assert SegmentationLoss("dice", 3)(torch.zeros_like(logits), target) > 0.3


def test_focal_ignores_void() -> None:
    logits, target = _data()
    changed = logits.clone()
    changed[0, :, 0, :] += 100
    loss = SegmentationLoss("focal", 3)
    torch.testing.assert_close(loss(logits, target), loss(changed, target))
    assert loss(logits, target) > 0


def test_median_frequency_weights_by_hand() -> None:
    # class 0: 60 px in images totalling 100 px; class 1: 10 in 50; class 2: 5 in 50; class 3 absent
    weights = median_frequency_weights(np.array([60, 10, 5, 0]), np.array([100, 50, 50, 0]))
    freq = np.array([0.6, 0.2, 0.1])
    np.testing.assert_allclose(weights, [0.2 / 0.6, 1.0, 2.0, 1.0])
    assert np.median(freq) == 0.2


def test_unet_weight_map_peaks_between_touching_objects() -> None:
    mask = np.zeros((20, 30), dtype=np.uint8)
    mask[5:15, 2:12] = 1
    mask[5:15, 14:24] = 1  # two objects 2 px apart
    weights = unet_weight_map(mask, w0=10, sigma=5)
    assert weights[10, 12] == pytest.approx(10 * np.exp(-((1 + 2) ** 2) / 50), rel=1e-5)
    assert weights[10, 12] > weights[10, 28] > 0  # the gap outweighs the open background
    assert (weights[mask == 1] == 0).all()
    assert not unet_weight_map(mask[:, :13]).any()  # one object: no border term


def test_boundary_weighted_ce_increases_weight_of_gap_pixels() -> None:
    target = torch.zeros(1, 20, 30, dtype=torch.long)
    target[0, 5:15, 2:12] = 1
    target[0, 5:15, 14:24] = 1
    logits = torch.zeros(1, 2, 20, 30)
    logits[0, 1, 10, 12:14] = 5.0  # wrong only in the gap
    plain = SegmentationLoss("ce", 2)(logits, target)
    weighted = SegmentationLoss("ce", 2, boundary_w0=10, boundary_sigma=5)(logits, target)
    assert weighted > plain


def test_loss_configuration_errors() -> None:
    with pytest.raises(LightsegError, match="unknown loss 'dicee'.*did you mean 'dice'"):
        SegmentationLoss("dicee", 3)
    with pytest.raises(LightsegError, match="class_weights has 2 values but there are 3 classes"):
        SegmentationLoss("ce", 3, class_weights=[1.0, 2.0])
    with pytest.raises(LightsegError, match="class_weights apply to the cross-entropy"):
        SegmentationLoss("focal", 3, class_weights=[1.0, 1.0, 1.0])
