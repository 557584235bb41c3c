"""transformers' segmentation models as architectures: configurations, weights, outputs and the set-prediction loss."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from lightseg.errors import LightsegError
from lightseg.models import hf_adapter
from lightseg.models.semantic import ARCHITECTURES
from lightseg.tasks import SemanticSegmentationTask

from conftest import semantic_model, tiny_transformers_config

transformers = pytest.importorskip("transformers")

HF_ARCHS = list(hf_adapter.FAMILIES)


def _parameters(arch: str, backbone: str, num_classes: int) -> float:
    """Millions of parameters of a published configuration, built on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        model = semantic_model(arch, num_classes, backbone, weights_backbone=None, aux=False)
    return sum(p.numel() for p in model.parameters()) / 1e6


@pytest.mark.parametrize(
    ("arch", "backbone", "classes", "published"),
    [
        # SegFormer Table 1 / 2 (encoder + decoder, ADE20K), EoMT Table 1 (ViT-L), Mask2Former Table 1 (Swin-T)
        ("hf_segformer", "nvidia/segformer-b0-finetuned-ade-512-512", 150, 3.8),
        ("hf_segformer", "nvidia/mit-b5", 150, 84.7),
        ("mask2former", "facebook/mask2former-swin-tiny-ade-semantic", 150, 47.4),
        ("mask2former", "resnet50", 150, 44.0),
        ("eomt", "tue-mps/ade20k_semantic_eomt_large_512", 150, 316.0),
    ],
)
def test_published_names_build_their_published_configuration_offline(
    arch: str, backbone: str, classes: int, published: float
) -> None:
    assert _parameters(arch, backbone, classes) == pytest.approx(published, rel=0.03)


def test_segformer_variants_differ_as_published() -> None:
    depths = [hf_adapter.FAMILIES["hf_segformer"].config(f"nvidia/mit-b{i}", 2, {}).depths for i in range(6)]
    assert depths[0] == [2, 2, 2, 2] and depths[2] == [3, 4, 6, 3] and depths[5] == [3, 6, 40, 3]


@pytest.mark.parametrize("arch", HF_ARCHS)
def test_any_input_size_gives_logits_at_that_size(arch: str, tiny_transformers: Callable[[str], Path]) -> None:
    model = semantic_model(arch, 3, str(tiny_transformers(arch)), weights_backbone=None).eval()
    with torch.no_grad():
        for size in [(50, 70), (64, 33)]:
            outputs = model(torch.rand(2, 3, *size))
            out = outputs["out"]
            assert out.shape == (2, 3, *size) and torch.isfinite(out).all()
            expected = {"out", "aux"} if ARCHITECTURES[arch].has_aux else {"out"}
            if ARCHITECTURES[arch].query:
                expected |= {"class_queries", "mask_queries"}
            assert set(outputs) == expected
            if "aux" in outputs:
                assert outputs["aux"].shape == (2, 3, *size)


def test_mask2former_semantic_map_is_transformers_post_processing(tiny_transformers: Callable[[str], Path]) -> None:
    model = semantic_model("mask2former", 4, str(tiny_transformers("mask2former")), weights_backbone=None).eval()
    image = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        ours = model(image)["out"]
        hf_out = model.net.hf(pixel_values=(image - model.mean) / model.std)  # type: ignore[operator]
    processor = transformers.Mask2FormerImageProcessor()
    theirs = processor.post_process_semantic_segmentation(hf_out, target_sizes=[(64, 96)] * 2)
    for mine, reference in zip(ours.argmax(1), theirs, strict=True):
        assert (mine == reference).float().mean() > 0.99  # resampled at another resolution: ties at edges


@pytest.mark.parametrize("arch", ["mask2former", "eomt"])
def test_set_prediction_loss_equals_transformers_own(arch: str, tiny_transformers: Callable[[str], Path]) -> None:
    model = semantic_model(arch, 4, str(tiny_transformers(arch)), weights_backbone=None).train()
    image = torch.rand(2, 3, 64, 64)
    target = torch.randint(0, 4, (2, 64, 64))
    target[0, :10] = 255  # ignored pixels belong to no mask
    target[1] = 2
    torch.manual_seed(0)
    ours = model.net.set_loss(model(image), target, 255)  # type: ignore[operator]
    masks = [(t[None] == t.unique()[t.unique() != 255][:, None, None]).float() for t in target]
    classes = [t.unique()[t.unique() != 255] for t in target]
    torch.manual_seed(0)
    normalised = (image - model.mean) / model.std
    theirs = model.net.hf(pixel_values=normalised, mask_labels=masks, class_labels=classes).loss  # type: ignore[operator]
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)
    ours.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_eomt_anneals_its_masked_attention_block_by_block(tiny_transformers: Callable[[str], Path]) -> None:
    net = semantic_model("eomt", 3, str(tiny_transformers("eomt")), weights_backbone=None).net
    probs = net.hf.attn_mask_probs  # type: ignore[union-attr]
    schedule = []
    for progress in (0.0, 0.25, 0.375, 0.5, 0.75, 1.0):  # 2 blocks: block i fades over [(i+1)/4, (i+2)/4]
        net.anneal(progress)  # type: ignore[operator]
        schedule.append(probs.tolist())
    assert schedule[:2] == [[1.0, 1.0], [1.0, 1.0]]
    assert schedule[2][0] == pytest.approx(0.5**0.9) and schedule[2][1] == 1.0
    assert schedule[3] == [0.0, 1.0] and schedule[4] == [0.0, 0.0] and schedule[5] == [0.0, 0.0]


def test_weights_from_a_saved_folder_load_and_a_new_class_count_replaces_the_classifier_only(
    tmp_path: Path,
) -> None:
    config = tiny_transformers_config("hf_segformer")
    config.num_labels = 5
    saved = transformers.SegformerForSemanticSegmentation(config)
    saved.save_pretrained(tmp_path / "segformer")
    model = semantic_model("hf_segformer", 5, str(tmp_path / "segformer"), weights_backbone="pretrained")
    assert all(torch.equal(v, saved.state_dict()[k]) for k, v in model.net.hf.state_dict().items())  # type: ignore[union-attr]
    other = semantic_model("hf_segformer", 3, str(tmp_path / "segformer"), weights_backbone="pretrained")
    state = other.net.hf.state_dict()  # type: ignore[union-attr]
    encoder = [k for k in state if k.startswith("segformer.")]
    assert encoder and all(torch.equal(state[k], saved.state_dict()[k]) for k in encoder)
    assert state["decode_head.classifier.weight"].shape[0] == 3


def test_weight_and_configuration_mistakes_are_one_line(
    tmp_path: Path, tiny_transformers: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = str(tiny_transformers("hf_segformer"))
    with pytest.raises(LightsegError, match="holds a configuration but no weights"):
        semantic_model("hf_segformer", 3, folder, weights_backbone="pretrained")
    with pytest.raises(LightsegError, match="holds a 'segformer' model, not a 'mask2former' one"):
        semantic_model("mask2former", 3, folder, weights_backbone=None)
    with pytest.raises(LightsegError, match="did you mean 'nvidia/mit-b0'"):
        semantic_model("hf_segformer", 3, "nvidia/mit_b0", None)
    with pytest.raises(LightsegError, match="'num_querys' is not a setting.*did you mean 'num_queries'"):
        semantic_model("mask2former", 3, str(tiny_transformers("mask2former")), None, arch_options={"num_querys": 1})
    with pytest.raises(LightsegError, match="neither 'pretrained'"):
        semantic_model("hf_segformer", 3, folder, weights_backbone=str(tmp_path / "nowhere"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(LightsegError, match=r"could not load the pretrained weights for hf_segformer nvidia/mit-b0 .*"):
        semantic_model("hf_segformer", 3, "nvidia/mit-b0", weights_backbone="pretrained")


def test_arch_options_set_the_configuration(tiny_transformers: Callable[[str], Path]) -> None:
    folder = str(tiny_transformers("mask2former"))
    model = semantic_model("mask2former", 3, folder, None, arch_options={"num_queries": 7})
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 3, 32, 32))["class_queries"].shape == (1, 2, 7, 4)


def test_query_models_refuse_the_per_pixel_loss_settings(tiny_transformers: Callable[[str], Path]) -> None:
    backbone = str(tiny_transformers("eomt"))
    with pytest.raises(LightsegError, match=r"loss='dice'.* own set-prediction loss"):
        SemanticSegmentationTask(arch="eomt", backbone=backbone, weights_backbone=None, num_classes=3, loss="dice")
    task = SemanticSegmentationTask(arch="eomt", backbone=backbone, weights_backbone=None, num_classes=3)
    assert (
        ARCHITECTURES["eomt"].query
        and task.compute_loss(task(torch.rand(1, 3, 32, 32)), torch.zeros(1, 32, 32, dtype=torch.long)).isfinite()
    )


@pytest.mark.parametrize(("arch", "encoder"), [("mask2former", "pixel_level_module.encoder"), ("eomt", "layers")])
def test_the_encoder_is_the_backbone_for_freezing_and_learning_rates(
    arch: str, encoder: str, tiny_transformers: Callable[[str], Path]
) -> None:
    task = SemanticSegmentationTask(
        arch=arch, backbone=str(tiny_transformers(arch)), weights_backbone=None, num_classes=3, head_lr_mult=10.0
    )
    backbone = {n for n, _ in task.named_parameters() if task.is_backbone_parameter(n)}
    assert backbone and all(encoder in n or "embeddings" in n for n in backbone)
    assert not any("decoder" in n or "class_predictor" in n for n in backbone)
    groups = {g["name"]: g for g in task.parameter_groups()}
    assert {"backbone", "head"} <= set(groups) and groups["head"]["lr_mult"] == 10.0


SIZES = [(70, 90), (65, 100)]  # neither divisible by 32, of two aspect ratios


@pytest.mark.parametrize(
    ("arch", "fmt"),
    [("hf_segformer", "onnx"), ("hf_segformer", "pt2"), ("hf_upernet", "onnx"),
     ("hf_dpt", "onnx"), pytest.param("hf_dpt", "pt2", marks=pytest.mark.slow), ("eomt", "onnx"),
     ("eomt", "torchscript")],
)  # fmt: skip
def test_exports_match_pytorch_at_sizes_it_was_not_traced_at(
    arch: str, fmt: str, tmp_path: Path, tiny_transformers: Callable[[str], Path]
) -> None:
    from lightseg.export import ExportSettings, export_task

    backbone = str(tiny_transformers(arch))
    task = SemanticSegmentationTask(arch=arch, backbone=backbone, weights_backbone=None, num_classes=5)
    output = "probs" if arch == "eomt" else "logits"  # a query model's log-scores amplify float noise where p ~ 0
    settings = ExportSettings(fmt, str(tmp_path / f"m.{fmt}"), output, verify_sizes=SIZES)  # type: ignore[arg-type]
    result = export_task(task, None, settings)
    assert [f["size"] for f in result.verification] == [list(s) for s in SIZES]
    assert all(f["ok"] and f.get("label_agreement", 1.0) >= 0.999 for f in result.verification)
    assert result.path.is_file()


@pytest.mark.parametrize(("arch", "fmt", "reason"), [
    ("mask2former", "onnx", r"shifted-window masks, its pixel decoder.*export it for one input size, e.g. "
     r"input_size \[512,512\]"),
    ("eomt", "pt2", "masked-attention schedule"),
])  # fmt: skip
def test_exports_that_would_be_wrong_or_fail_are_refused_before_any_work(
    arch: str, fmt: str, reason: str, tmp_path: Path, tiny_transformers: Callable[[str], Path]
) -> None:
    from lightseg.export import ExportSettings, export_task

    backbone = str(tiny_transformers(arch))
    task = SemanticSegmentationTask(arch=arch, backbone=backbone, weights_backbone=None, num_classes=5)
    with pytest.raises(LightsegError, match=f"arch {arch!r} cannot be exported as {fmt}: .*{reason}"):
        export_task(task, None, ExportSettings(fmt, str(tmp_path / "m"), verify_sizes=SIZES))  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2"])
def test_mask2former_exports_for_one_input_size(
    fmt: str, tmp_path: Path, tiny_transformers: Callable[[str], Path]
) -> None:
    from lightseg.export import ExportSettings, export_task

    task = SemanticSegmentationTask(
        arch="mask2former", backbone=str(tiny_transformers("mask2former")), weights_backbone=None, num_classes=5
    )
    settings = ExportSettings(fmt, str(tmp_path / f"m.{fmt}"), "probs", input_size=(70, 90))  # type: ignore[arg-type]
    result = export_task(task, None, settings)
    assert [f["size"] for f in result.verification] == [[70, 90], [70, 90]]
    assert all(f["ok"] and f["label_agreement"] >= 0.999 for f in result.verification)
    assert json.loads(result.metadata_path.read_text())["input"]["size"] == [70, 90]


@pytest.mark.parametrize(("arch", "layers"), [("eomt", 5), ("hf_segformer", 4), ("mask2former", 5), ("hf_dpt", 5)])
def test_layer_decay_groups_the_encoder_by_block_or_stage(
    arch: str, layers: int, tiny_transformers: Callable[[str], Path]
) -> None:
    # the tiny models: EoMT's and DPT's ViT have 4 blocks and Swin 4 stages, after the embeddings; SegFormer's
    # 4 stages each begin with their own patch embedding
    task = SemanticSegmentationTask(
        arch=arch, backbone=str(tiny_transformers(arch)), weights_backbone=None, num_classes=3, layer_decay=0.5
    )
    depth = task.backbone_layers()
    assert len(set(depth.values())) in (layers, layers + 1)  # + a final norm after the last block, if any
    embeddings = [n for n in depth if ".embeddings." in n or ".patch_embeddings." in n]
    assert embeddings and all(depth[n] == 0 for n in embeddings if not re.search(r"stages\.[1-9]", n))
    groups = {g["name"]: g["lr_mult"] for g in task.parameter_groups() if g["name"].startswith("backbone_layer")}
    deepest = max(depth.values())
    assert groups["backbone_layer00"] == pytest.approx(0.5**deepest)
    assert groups[f"backbone_layer{deepest:02d}"] == 1.0


def test_a_weights_backbone_file_loads_into_the_encoder(tmp_path: Path) -> None:
    # an ImageNet Swin as transformers' image classifiers save it (microsoft/swin-tiny-patch4-window7-224's layout)
    from safetensors.torch import save_file

    config = tiny_transformers_config("mask2former")
    swin = transformers.SwinForImageClassification(config.backbone_config)
    save_file({k: v.contiguous() for k, v in swin.state_dict().items()}, str(tmp_path / "swin.safetensors"))
    folder = tmp_path / "m2f"
    config.save_pretrained(folder)
    model = semantic_model("mask2former", 3, str(folder), weights_backbone=str(tmp_path / "swin.safetensors"))
    encoder = model.net.hf.model.pixel_level_module.encoder.state_dict()  # type: ignore[union-attr]
    theirs = swin.state_dict()
    shared = [k for k in encoder if k in theirs]  # all but the per-stage output norms, new in Mask2Former
    assert len(shared) > 10 and all(torch.equal(encoder[k], theirs[k]) for k in shared)
    assert all(k.startswith("hidden_states_norms.") for k in encoder if k not in theirs)


def test_without_transformers_the_architectures_say_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(__import__("sys").modules, "transformers", None)  # as if not installed
    with pytest.raises(LightsegError, match=r"arch 'eomt' needs transformers: pip install 'lightseg\[transformers\]'"):
        semantic_model("eomt", 3, None, weights_backbone=None)


def test_upernet_on_a_dinov2_backbone_from_a_folder(tmp_path: Path) -> None:
    dinov2 = transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, patch_size=14, image_size=518,
        out_features=["stage1", "stage2", "stage3", "stage4"], reshape_hidden_states=True,
    )  # fmt: skip
    config = transformers.UperNetConfig(
        backbone_config=dinov2, hidden_size=16, auxiliary_in_channels=32, auxiliary_channels=8
    )
    config.save_pretrained(tmp_path / "upernet-dinov2")
    task = SemanticSegmentationTask(
        arch="hf_upernet", backbone=str(tmp_path / "upernet-dinov2"), weights_backbone=None, num_classes=3,
        layer_decay=0.9,
    )  # fmt: skip
    assert task.model.size_divisor == 14  # padded to its patch grid, not to a pyramid's 32
    with torch.no_grad():
        outputs = task.eval()(torch.rand(1, 3, 50, 61))
    assert outputs["out"].shape == outputs["aux"].shape == (1, 3, 50, 61)
    assert len(set(task.backbone_layers().values())) >= 5  # the embeddings and 4 blocks


def test_mask2former_on_a_resnet_is_refused_for_export_and_starts_from_imagenet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightseg.export import ExportSettings, export_task

    config = tiny_transformers_config("mask2former")
    config.backbone_config = transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], layer_type="basic",
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )  # fmt: skip
    config.save_pretrained(tmp_path / "m2f-resnet")
    task = SemanticSegmentationTask(
        arch="mask2former", backbone=str(tmp_path / "m2f-resnet"), weights_backbone=None, num_classes=4
    )
    # not Swin's masks alone: on a ResNet the traced graph is wrong at other sizes too (measured: 0 % labels agree)
    settings = ExportSettings("onnx", str(tmp_path / "m.onnx"), "probs", verify_sizes=SIZES)
    with pytest.raises(LightsegError, match="pixel decoder's multi-scale shapes"):
        export_task(task, None, settings)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(LightsegError, match=r"mask2former encoder microsoft/resnet-50 .*"):
        semantic_model("mask2former", 3, "resnet50", weights_backbone="pretrained")
