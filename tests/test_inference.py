from __future__ import annotations

import pytest
import torch
from torch import nn

from lightseg.errors import LightsegError
from lightseg.inference import InferenceSettings, slide_logits, tta_probs, window_starts
from lightseg.models.wrapper import SegmentationModel
from lightseg.tasks import SemanticSegmentationTask


class SymmetricConv(SemanticSegmentationTask):
    """A task whose model is flip-equivariant: one 3x3 convolution with left-right symmetric kernels."""

    def build_model(self) -> nn.Module:
        conv = nn.Conv2d(3, self.hparams["num_classes"], 3, padding=1)
        with torch.no_grad():
            conv.weight.copy_((conv.weight + conv.weight.flip(-1)) / 2)
        return SegmentationModel(conv)


def _unet_task(**kwargs: object) -> SemanticSegmentationTask:
    torch.manual_seed(0)
    return SemanticSegmentationTask(
        arch="unet", backbone="resnet18", weights_backbone=None, num_classes=3, **kwargs
    ).eval()  # type: ignore[arg-type]


def test_window_starts_cover_and_align_to_the_end() -> None:
    assert window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(11, 4, 3) == [0, 3, 6, 7]
    assert window_starts(4, 8, 3) == [0]


def test_the_stride_follows_the_window_and_never_leaves_a_gap() -> None:
    assert InferenceSettings().stride == 341  # two thirds of 512, as before
    assert InferenceSettings(window_size=64).stride == 43  # not 341: windows 0 and 86 of 150 would leave a gap
    assert InferenceSettings(window_size=[96, 48]).stride == (64, 32)  # type: ignore[arg-type]
    assert InferenceSettings(window_size=64, window_stride=64).stride == 64
    assert InferenceSettings.of(InferenceSettings(window_size=64).as_dict()).stride == 43  # checkpoints
    with pytest.raises(LightsegError, match=r"window_stride 341 is larger than window_size 64: .* \[43, 43\]\)"):
        InferenceSettings(window_size=64, window_stride=341)
    with pytest.raises(LightsegError, match=r"window_stride \(20, 50\) is larger than window_size \(32, 40\)"):
        InferenceSettings(window_size=(32, 40), window_stride=(20, 50))


def test_slide_with_window_at_least_the_image_equals_whole() -> None:
    task = _unet_task()
    image = torch.rand(2, 3, 45, 70)
    forward = lambda x: task(x)["out"]  # noqa: E731
    with torch.no_grad():
        whole = forward(image)
        torch.testing.assert_close(slide_logits(forward, image, (64, 96), 32), whole)
        torch.testing.assert_close(slide_logits(forward, image, 100, 50), whole)


def test_slide_averages_overlaps_and_batches_windows() -> None:
    calls: list[tuple[int, ...]] = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x.shape))
        return x[:, :1] * 0 + 1.0  # every window predicts 1 everywhere

    image = torch.rand(1, 3, 20, 30)
    out = slide_logits(forward, image, 10, 5, batch_size=4)
    torch.testing.assert_close(out, torch.ones(1, 1, 20, 30))  # averaged, not summed
    assert sum(c[0] for c in calls) == 3 * 5 and max(c[0] for c in calls) <= 4  # 15 windows, <= 4 at once
    assert all(c[-2:] == (10, 10) for c in calls)


def test_slide_equals_whole_for_a_local_model() -> None:
    # a 1x1 convolution sees no context, so any tiling gives the same logits
    conv = nn.Conv2d(3, 4, 1)
    image = torch.rand(1, 3, 33, 50)
    with torch.no_grad():
        torch.testing.assert_close(slide_logits(conv, image, (16, 20), (7, 9), batch_size=3), conv(image))


def test_flip_tta_on_a_flip_equivariant_model_equals_single_pass() -> None:
    task = SymmetricConv(num_classes=4, weights_backbone=None, inference=InferenceSettings(tta_flip=True)).eval()
    image = torch.rand(2, 3, 17, 23)
    with torch.no_grad():
        single = task(image)["out"].softmax(1)
        torch.testing.assert_close(task.predict_probs(image), single)
    # and it really is averaging over a flip: a non-equivariant model changes
    unet = _unet_task(inference=InferenceSettings(tta_flip=True))
    with torch.no_grad():
        assert not torch.allclose(unet.predict_probs(image), unet(image)["out"].softmax(1))


def test_one_scale_of_one_equals_whole_and_scales_are_averaged() -> None:
    task = _unet_task(inference=InferenceSettings(tta_scales=(1.0,)))
    image = torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        torch.testing.assert_close(task.predict_probs(image), task(image)["out"].softmax(1))
        multi = tta_probs(lambda x: task(x)["out"], image, scales=(0.5, 1.0, 1.5), flip=True)
    assert multi.shape == (1, 3, 40, 56)
    torch.testing.assert_close(multi.sum(1), torch.ones(1, 40, 56))


def test_evaluation_uses_the_configured_inference(monkeypatch: pytest.MonkeyPatch) -> None:
    task = _unet_task(inference=InferenceSettings(mode="slide", window_size=32, window_stride=16))
    assert not task.inference.plain
    batch = {"image": torch.rand(2, 3, 48, 48), "mask": torch.randint(0, 3, (2, 48, 48))}
    with torch.no_grad():
        loss, scores = task.evaluate(batch, "val")  # type: ignore[arg-type]
        expected = slide_logits(lambda x: task(x)["out"], batch["image"], 32, 16).softmax(1)
    torch.testing.assert_close(scores, expected)
    per_image = torch.stack(
        [nn.functional.nll_loss(expected[i : i + 1].log(), batch["mask"][i : i + 1]) for i in range(2)]
    )
    torch.testing.assert_close(loss, per_image, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        prediction = task.predict_step({"image": batch["image"], "path": ["a", "b"], "size": [(48, 48)] * 2}, 0)
    assert torch.equal(prediction["mask"], expected.argmax(1).to(torch.uint8))
