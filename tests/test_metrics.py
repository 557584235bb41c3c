from __future__ import annotations

import math

import pytest
import torch

from lightseg.errors import LightsegError
from lightseg.metrics import SegmentationMetrics, format_class_table


def test_metrics_against_hand_computed_values() -> None:
    # 4 classes; class 3 never occurs (NaN, excluded); 255 pixels never count
    target = torch.tensor([[0, 0, 0, 1, 1, 2, 255, 255]])
    preds = torch.tensor([[0, 0, 1, 1, 2, 2, 3, 0]])
    metric = SegmentationMetrics(num_classes=4)
    metric.update(preds, target)
    r = metric.compute()
    # confusion: n00=2 n01=1 | n11=1 n12=1 | n22=1 ; t=[3,2,1], p=[2,2,2]
    iou = [2 / 3, 1 / 3, 1 / 2]
    assert r["pixel_acc"].item() == pytest.approx(4 / 6)
    assert r["macc"].item() == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert r["miou"].item() == pytest.approx(sum(iou) / 3)
    assert r["fwiou"].item() == pytest.approx((3 * iou[0] + 2 * iou[1] + 1 * iou[2]) / 6)
    assert r["mdice"].item() == pytest.approx((4 / 5 + 2 / 4 + 2 / 3) / 3)
    assert r["iou_per_class"][:3].tolist() == pytest.approx(iou)
    assert math.isnan(r["iou_per_class"][3]) and math.isnan(r["acc_per_class"][3])


def test_predicted_but_absent_class_counts_as_zero_iou() -> None:
    metric = SegmentationMetrics(num_classes=3)
    metric.update(torch.tensor([[0, 2]]), torch.tensor([[0, 0]]))
    r = metric.compute()
    assert r["iou_per_class"][2].item() == 0.0  # predicted, never true: a real error
    assert math.isnan(r["iou_per_class"][1])  # absent from both
    assert math.isnan(r["acc_per_class"][2])  # accuracy is undefined without target pixels
    assert r["miou"].item() == pytest.approx((0.5 + 0.0) / 2)


def test_logits_input_and_accumulation_over_batches() -> None:
    target = torch.tensor([[[0, 1], [1, 1]]])
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 1] = 1.0  # predicts class 1 everywhere
    metric = SegmentationMetrics(num_classes=2)
    metric.update(logits, target)
    metric.update(torch.tensor([[[0, 0], [0, 0]]]), torch.tensor([[[0, 0], [0, 0]]]))
    assert metric.confmat.tolist() == [[4, 1], [0, 3]]
    assert metric.compute()["pixel_acc"].item() == pytest.approx(7 / 8)


def test_out_of_range_label_is_an_error() -> None:
    metric = SegmentationMetrics(num_classes=3)
    with pytest.raises(ValueError, match="label 7, outside"):
        metric.update(torch.tensor([[0, 1]]), torch.tensor([[0, 7]]))
    with pytest.raises(LightsegError, match=r"target holds label -2, outside \[0, 3\)"):
        metric.update(torch.tensor([[2, 0]]), torch.tensor([[0, -2]]))
    with pytest.raises(LightsegError, match=r"preds hold label 3, outside \[0, 3\)"):
        metric.update(torch.tensor([[0, 3]]), torch.tensor([[0, 1]]))
    with pytest.raises(LightsegError, match=r"preds hold label -1, outside"):
        metric.update(torch.tensor([[-1, 0]]), torch.tensor([[0, 1]]))
    with pytest.raises(LightsegError, match=r"preds have 4 class scores, the metric 3 classes"):
        metric.update(torch.zeros(1, 4, 1, 2), torch.tensor([[[0, 1]]]))
    assert int(metric.confmat.sum()) == 0  # nothing half-counted
    negative_ignore = SegmentationMetrics(3, ignore_index=-1)
    negative_ignore.update(torch.tensor([[2, 0]]), torch.tensor([[-1, 0]]))
    assert negative_ignore.confmat.tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 0]]


def test_class_table_lists_every_class() -> None:
    metric = SegmentationMetrics(num_classes=3)
    metric.update(torch.tensor([[0, 1, 1]]), torch.tensor([[0, 1, 0]]))
    table = format_class_table(metric.compute(), ["background", "cat", "dog"], title="T")
    lines = table.splitlines()
    assert lines[0] == "T"
    assert any(line.startswith("background") and " 50.0 " in line for line in lines)
    assert any(line.startswith("dog") and line.rstrip().endswith("-") for line in lines)
    assert any(line.startswith("mean") for line in lines)


def test_every_per_class_score_is_declared_once_and_shown_everywhere() -> None:
    from lightseg.callbacks.dashboard import class_table
    from lightseg.contract import EvaluationProtocol
    from lightseg.metrics.segmentation import PER_CLASS_SCORES

    metric = SegmentationMetrics(3, protocol=EvaluationProtocol(boundary_ratio=0.1))
    target = torch.zeros(1, 16, 16, dtype=torch.long)
    target[:, 4:12, 4:12] = 1
    target[:, :, 14:] = 2
    metric.update(torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float(), target)
    results = metric.compute()
    computed = [score for score in PER_CLASS_SCORES if score.key in results]
    assert [s.key for s in computed] == ["iou_per_class", "acc_per_class", "dice_per_class", "biou_per_class"]
    assert all(s.mean in results and len(results[s.key]) == 3 for s in computed)  # a mean beside each
    header = format_class_table(results, ["a", "b", "c"]).splitlines()[0].split()
    assert header == ["class", *(s.column for s in computed)]  # the text table's columns, in order
    assert class_table(results, ["a", "b", "c"]).columns == ["class", *(s.title for s in computed)]  # the dashboard's
