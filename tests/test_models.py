from __future__ import annotations

import urllib.error

import pytest
import torch
import torch.nn.functional as F

from lightseg.errors import LightsegError
from lightseg.models import ARCHITECTURES, hf_adapter
from lightseg.models.deeplab import ASPPv2
from lightseg.models.fcn_vgg import FCNVGG16, bilinear_kernel

from conftest import semantic_model

#: the smallest backbone of each architecture (smp's decoders: resnet18, SegFormer's MiT-B0, DPT on DINOv2-S)
TINY_BACKBONE = {
    "fcn": "resnet50", "deeplabv2": "resnet50", "deeplabv3": "resnet50", "segformer": "mit_b0",
    "dpt": "tu-vit_small_patch14_dinov2", "linear": "tu-vit_small_patch14_dinov2",
}  # fmt: skip
SMP_DECODERS = ("unet", "unetplusplus", "manet", "linknet", "fpn", "pspnet", "deeplabv3", "deeplabv3plus", "pan",
                "upernet", "segformer", "dpt")  # fmt: skip


def tiny_backbone(arch: str) -> str | None:
    """A small backbone ``arch`` takes (the VGG FCNs have one: None)."""
    return TINY_BACKBONE.get(arch, "resnet18" if arch in SMP_DECODERS else None)


def test_every_smp_decoder_is_an_arch_and_the_choices_come_from_the_registry() -> None:
    import typing

    import segmentation_models_pytorch as smp

    from lightseg.models.semantic import ArchName

    assert set(SMP_DECODERS) == set(smp.MODEL_ARCHITECTURES_MAPPING) <= set(ARCHITECTURES)
    assert typing.get_args(ArchName) == tuple(ARCHITECTURES)  # --help and the YAML schema read this Literal
    assert ARCHITECTURES["segformer"].default_backbone == "mit_b0"  # the published encoder, not smp's resnet34
    assert ARCHITECTURES["upernet"].default_backbone == "resnet34"  # smp's own default
    assert {"decoder_attention_type", "decoder_channels"} <= ARCHITECTURES["unet"].arch_options
    assert "encoder_name" not in ARCHITECTURES["unet"].arch_options  # lightseg sets it (backbone)


@pytest.mark.parametrize(
    "arch", sorted(set(ARCHITECTURES) - set(hf_adapter.FAMILIES))
)  # those: test_transformers_models
def test_every_arch_outputs_logits_at_input_size(arch: str) -> None:
    model = semantic_model(arch, num_classes=3, backbone=tiny_backbone(arch)).eval()
    # PAN's pyramid attention halves its stride-16 features three times: 128 px at least
    for size in [(130, 150), (128, 128)] if arch == "pan" else [(33, 47), (64, 64)]:
        with torch.no_grad():
            out = model(torch.rand(2, 3, *size))
        assert out["out"].shape == (2, 3, *size)
        expected_keys = {"out", "aux"} if ARCHITECTURES[arch].has_aux else {"out"}
        assert set(out) == expected_keys
        if "aux" in out:
            assert out["aux"].shape == (2, 3, *size)


def test_classic_513_crop_with_smp_deeplabv3plus() -> None:
    model = semantic_model("deeplabv3plus", 21, "resnet18").eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 513, 513))["out"].shape == (1, 21, 513, 513)


def test_bilinear_kernel_upsamples_like_bilinear_interpolation() -> None:
    x = torch.rand(1, 2, 6, 7)
    weight = bilinear_kernel(2, 4)
    up = F.conv_transpose2d(x, weight, stride=2, padding=1)
    reference = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert up.shape == reference.shape
    # identical away from the border (the transposed convolution zero-pads there)
    torch.testing.assert_close(up[..., 2:-2, 2:-2], reference[..., 2:-2, 2:-2])
    assert weight[0, 1].abs().sum() == 0  # channels do not mix


def test_fcn_final_upsampling_is_frozen_unless_asked() -> None:
    frozen = FCNVGG16(3, "8s")
    assert not frozen.upscore_final.weight.requires_grad
    assert frozen.upscore2.weight.requires_grad and frozen.upscore_pool4.weight.requires_grad
    assert FCNVGG16(3, "32s", learnable_upsampling=True).upscore_final.weight.requires_grad


def test_fcn8s_skips_start_at_zero_so_it_equals_fcn32s_path() -> None:
    torch.manual_seed(0)
    net = FCNVGG16(3, "8s").eval()
    net.score_fr.weight.data.normal_()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        pool4 = net.to_pool4(net.to_pool3(x))
        score = net.score_fr(net.head(net.to_pool5(pool4)))
        expected = net.upscore_final(net.upscore_pool4(net.upscore2(score)))
        torch.testing.assert_close(net(x), expected)


def test_deeplabv3_output_stride_and_multi_grid() -> None:
    model = semantic_model("deeplabv3", 4, "resnet50", output_stride=16, multi_grid=(1, 2, 4))
    layer4 = model.net.backbone.layer4
    assert [block.conv2.dilation for block in layer4] == [(2, 2), (4, 4), (8, 8)]
    assert model.net.backbone.layer3[0].conv2.stride == (2, 2)
    rates = [m.dilation for m in model.net.classifier[0].convs[1:4].modules() if isinstance(m, torch.nn.Conv2d)]
    assert rates == [(6, 6), (12, 12), (18, 18)]
    os8 = semantic_model("deeplabv3", 4, "resnet50", output_stride=8)
    assert [b.conv2.dilation for b in os8.net.backbone.layer4] == [(4, 4), (8, 8), (16, 16)]
    assert os8.net.backbone.layer3[0].conv2.stride == (1, 1)
    with torch.no_grad():
        feats = os8.net.backbone(torch.rand(1, 3, 64, 64))
    assert feats["out"].shape[-2:] == (8, 8)


def test_options_an_architecture_would_ignore_are_refused_in_one_line() -> None:
    from lightseg.tasks import SemanticSegmentationTask

    cases = [
        ("deeplabv3", "resnet18", {"multi_grid": (1, 1, 1)}, r"multi_grid=\[1, 1, 1\] does not apply to arch "
         r"'deeplabv3' with backbone 'resnet18', which would ignore it \(read by deeplabv3\); remove it"),
        ("unet", None, {"output_stride": 8}, r"output_stride=8 does not apply to arch 'unet' with backbone 'resnet34'"
         r".* \(read by deeplabv3, deeplabv3plus, pan\)"),
        ("deeplabv2", None, {"learnable_upsampling": True}, r"learnable_upsampling=True .* \(read by fcn32s, fcn16s"),
    ]  # fmt: skip
    for arch, backbone, options, message in cases:
        with pytest.raises(LightsegError, match=message):
            semantic_model(arch, 3, backbone, **options)  # type: ignore[arg-type]
    with pytest.raises(LightsegError, match=r"aux_weight=0.4 does not apply to arch 'unet' .* no auxiliary head"):
        SemanticSegmentationTask(arch="unet", backbone="resnet18", weights_backbone=None, num_classes=3, aux_weight=0.4)
    # where they apply, and at their defaults, they build
    assert semantic_model("deeplabv3", 3, "resnet18", output_stride=8).size_divisor == 32  # smp's DeepLabV3
    task = SemanticSegmentationTask(
        arch="unet", backbone="resnet18", weights_backbone=None, num_classes=3, aux_weight=0
    )
    with torch.no_grad():
        assert task.hparams["network"]["output_stride"] == 16 and "aux" not in task.eval()(torch.rand(1, 3, 32, 32))


def test_deeplabv2_sums_four_aspp_branches() -> None:
    aspp = ASPPv2(8, 3)
    x = torch.rand(1, 8, 9, 9)
    assert [b.dilation for b in aspp.branches] == [(6, 6), (12, 12), (18, 18), (24, 24)]
    torch.testing.assert_close(aspp(x), sum(b(x) for b in aspp.branches))


def test_model_normalises_its_input() -> None:
    model = semantic_model("unet", 2, "resnet18").eval()
    seen = {}
    model.net.register_forward_pre_hook(lambda _m, args: seen.setdefault("x", args[0]))
    image = torch.full((1, 3, 32, 32), 0.5)
    with torch.no_grad():
        model(image)
    expected = (0.5 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(seen["x"][0, :, 0, 0], expected)


def test_unknown_arch_and_backbone_list_the_choices() -> None:
    with pytest.raises(LightsegError, match=r"unknown arch 'unett'.*did you mean 'unet'.*deeplabv3plus"):
        semantic_model("unett", 3)
    with pytest.raises(LightsegError, match=r"backbone 'resnet18' is not available for arch 'fcn'.*resnet50"):
        semantic_model("fcn", 3, "resnet18")


def test_offline_weights_error_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(LightsegError) as info:
        semantic_model("deeplabv3", 3, "resnet50", weights_backbone="imagenet")
    message = str(info.value)
    assert "resnet50" in message and "weights_backbone: null" in message
    assert "resnet50-0676ba61.pth" in message  # the file to put in the torch hub cache


def test_transformer_backbones_run_at_any_input_size() -> None:
    # DINOv2 (patch 14, position embedding fixed to 518 px) under DPT: padded to a multiple of 28, the
    # embedding interpolated to each input's grid, DPT's reassembly at 4, 2, 1, 1/2 times that grid
    dpt = semantic_model("dpt", 3, "tu-vit_small_patch14_dinov2").eval()
    assert dpt.size_divisor == 28
    blocks = dpt.net.decoder.reassemble_blocks
    assert [type(b.upsample).__name__ for b in blocks] == ["ConvTranspose2d", "ConvTranspose2d", "Identity", "Conv2d"]
    assert [blocks[0].upsample.stride, blocks[1].upsample.stride, blocks[3].upsample.stride] == [(4, 4), (2, 2), (2, 2)]
    # Swin (windows fixed to 224 px) under U-Net
    swin = semantic_model("unet", 3, "tu-swin_tiny_patch4_window7_224").eval()
    for model in (dpt, swin):
        for size in [(45, 61), (70, 98)]:
            with torch.no_grad():
                assert model(torch.rand(1, 3, *size))["out"].shape == (1, 3, *size)


def test_backbones_a_decoder_cannot_take_are_refused_before_building(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("nothing may be downloaded before the combination is known to work")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_download)
    cases = [
        ("upernet", "tu-vit_small_patch14_dinov2", {}, r"arch 'upernet' cannot use backbone "
         r"'tu-vit_small_patch14_dinov2' .*Unsupported model downsampling pattern.*plain ViT .* works under dpt only; "
         r"this decoder needs a feature pyramid: .*tu-convnext_tiny"),
        ("linknet", "mit_b0", {}, r"arch 'linknet' cannot use backbone 'mit_b0'.*mit_b\* encoders work under unet"),
        ("deeplabv3plus", "tu-swin_tiny_patch4_window7_224", {}, r"output_stride.*needs an encoder that can dilate"),
        ("dpt", "resnet34", {}, r"arch 'dpt' takes timm models only: backbone tu-<timm model>"),
        ("unet", "tu-resnett50", {}, r"timm has no model 'resnett50'"),
    ]  # fmt: skip
    for arch, backbone, options, message in cases:
        with pytest.raises(LightsegError, match=message) as info:
            semantic_model(arch, 3, backbone, weights_backbone="imagenet", **options)
        assert "\n" not in str(info.value)


def test_arch_options_reach_the_smp_model_and_typos_are_named() -> None:
    from segmentation_models_pytorch.base.modules import SCSEModule

    unet = semantic_model("unet", 3, "resnet18", arch_options={"decoder_attention_type": "scse"})
    assert any(isinstance(m, SCSEModule) for m in unet.modules())
    upernet = semantic_model("upernet", 3, "resnet18", arch_options={"decoder_channels": 64})
    assert upernet.net.segmentation_head[0].in_channels == 64
    with pytest.raises(
        LightsegError,
        match=r"arch_options \['decoder_chanels'\] are not arguments of arch "
        r"'upernet'; \(did you mean 'decoder_channels'\?\) valid choices: .*decoder_use_norm",
    ):
        semantic_model("upernet", 3, "resnet18", arch_options={"decoder_chanels": 64})
    with pytest.raises(LightsegError, match=r"arch_options \['scale'\]: arch 'deeplabv2' takes none"):
        semantic_model("deeplabv2", 3, "resnet50", arch_options={"scale": 2})
    with pytest.raises(LightsegError, match=r"apply to smp's DeepLabV3 .* not to lightseg's DeepLab v3 on .*resnet50"):
        semantic_model("deeplabv3", 3, "resnet50", arch_options={"decoder_channels": 64})


def test_an_input_too_small_for_the_architecture_is_one_line() -> None:
    pan = semantic_model("pan", 3, "resnet18").eval()
    with pytest.raises(LightsegError, match=r"an input of 45x61 pixels is too small for this model, which needs at "
                       r"least 128x128.*use larger images or crops"):  # fmt: skip
        pan(torch.rand(1, 3, 45, 61))
    with pytest.raises(LightsegError, match=r"arch 'pan' cannot use .*PAN support output stride 16 or 32, got 8"):
        semantic_model("pan", 3, "resnet18", output_stride=8)


def test_linear_head_is_a_probe_on_the_last_feature_map_and_freezes_to_batchnorm_and_a_convolution() -> None:
    from lightseg.tasks import SemanticSegmentationTask

    task = SemanticSegmentationTask(
        arch="linear", backbone="tu-vit_small_patch14_dinov2", weights_backbone=None, num_classes=4,
        freeze_backbone=True,
    )  # fmt: skip
    assert task.model.size_divisor == 14  # DINOv2's patch: the input padded to its grid
    trained = {
        n for g in task.parameter_groups() for n, p in task.named_parameters() if any(p is q for q in g["params"])
    }
    assert trained == {
        "model.net.bn.weight",
        "model.net.bn.bias",
        "model.net.classifier.weight",
        "model.net.classifier.bias",
    }
    with torch.no_grad():
        assert task.eval()(torch.rand(1, 3, 45, 61))["out"].shape == (1, 4, 45, 61)
