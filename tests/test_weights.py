"""Weights from local files: backbones and encoders, whole detection models, init_from for fine-tuning."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from torchvision.models import resnet18

from lightseg.cli import main
from lightseg.errors import LightsegError
from lightseg.tasks import SemanticSegmentationTask
from lightseg.weights import load_weights_file, read_state_dict

from conftest import ROOT, TINY_SHAPES
from layouts import write_coco


def _resnet18_file(path: Path, wrap: str | None = None, prefix: str = "") -> dict[str, torch.Tensor]:
    torch.manual_seed(7)
    state = {prefix + k: v for k, v in resnet18().state_dict().items()}
    torch.save({wrap: state, "epoch": 3} if wrap else state, path)
    return state


def _unet(weights: str | None, num_classes: int = 3, backbone: str = "resnet18") -> SemanticSegmentationTask:
    return SemanticSegmentationTask(arch="unet", backbone=backbone, weights_backbone=weights, num_classes=num_classes)


@pytest.mark.parametrize(
    ("wrap", "prefix"), [(None, ""), ("state_dict", "module."), ("model", "backbone.")], ids=["plain", "ddp", "nested"]
)
def test_smp_encoder_from_a_torchvision_state_dict(tmp_path: Path, wrap: str | None, prefix: str) -> None:
    path = tmp_path / "resnet18.pth"
    state = _resnet18_file(path, wrap, prefix)
    task = _unet(str(path))
    encoder = task.model.net.encoder  # type: ignore[union-attr]
    assert torch.equal(encoder.conv1.weight, state[prefix + "conv1.weight"])
    assert torch.equal(encoder.layer4[1].bn2.running_var, state[prefix + "layer4.1.bn2.running_var"])
    report = load_weights_file(encoder, str(path), "weights_backbone")
    assert len(report.loaded) == len(encoder.state_dict()) and not report.missing
    assert report.unexpected == [prefix + "fc.weight", prefix + "fc.bias"]  # the classifier has no place here


def test_timm_encoder_from_a_safetensors_file(tmp_path: Path) -> None:
    torch.manual_seed(3)
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    task = _unet(str(path), backbone="tu-resnet18")
    encoder = task.model.net.encoder  # type: ignore[union-attr]
    assert torch.equal(encoder.model.conv1.weight, state["conv1.weight"])
    assert torch.equal(encoder.model.layer3[0].downsample[0].weight, state["layer3.0.downsample.0.weight"])


def test_atrous_resnet_of_deeplab_v2_from_a_file(tmp_path: Path) -> None:
    from torchvision.models import resnet50

    torch.manual_seed(1)
    state = resnet50().state_dict()
    path = tmp_path / "resnet50_coco.pth"
    torch.save({"state_dict": state}, path)
    task = SemanticSegmentationTask(arch="deeplabv2", backbone="resnet50", weights_backbone=str(path), num_classes=5)
    body = task.model.net.backbone  # type: ignore[union-attr]
    assert torch.equal(body.layer4[2].conv3.weight, state["layer4.2.conv3.weight"])
    assert torch.equal(body.bn1.running_mean, state["bn1.running_mean"])


def test_bad_weight_files_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(
        LightsegError, match=r"weights_backbone: 'nowhere.pth' is neither 'imagenet' nor a weights file"
    ):
        _unet("nowhere.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(LightsegError, match=r"garbage.pth is not a readable weights file"):
        _unet(str(garbage))
    other = tmp_path / "other.pth"
    torch.save({"head.weight": torch.zeros(3, 3), "head.bias": torch.zeros(3)}, other)
    with pytest.raises(LightsegError, match=r"none of the 2 weights in .*other.pth fit this model"):
        _unet(str(other))
    empty = tmp_path / "empty.pth"
    torch.save({"epoch": 3}, empty)
    with pytest.raises(LightsegError, match=r"empty.pth holds no weights"):
        read_state_dict(empty)


def test_init_from_copies_what_fits_and_reinitialises_heads_of_another_class_count(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = _unet(None, num_classes=4)
    path = tmp_path / "source.ckpt"
    torch.save({"state_dict": source.state_dict(), "hyper_parameters": dict(source.hparams), "epoch": 9}, path)
    torch.manual_seed(1)
    target = SemanticSegmentationTask(
        arch="unet", backbone="resnet18", weights_backbone=None, num_classes=6, init_from=str(path)
    )
    fresh_head = target.model.net.segmentation_head[0].weight.clone()  # type: ignore[union-attr,index]
    report = target.init_weights_from(str(path))
    assert report.reshaped == ["net.segmentation_head.0.weight", "net.segmentation_head.0.bias"]
    assert not report.missing and len(report.loaded) == len(target.model.state_dict()) - 2
    encoder, decoder = target.model.net.encoder, target.model.net.decoder  # type: ignore[union-attr]
    assert torch.equal(encoder.conv1.weight, source.model.net.encoder.conv1.weight)  # type: ignore[union-attr]
    assert torch.equal(
        decoder.state_dict()["blocks.0.conv1.0.weight"],
        source.model.net.decoder.state_dict()["blocks.0.conv1.0.weight"],
    )  # type: ignore[union-attr]
    assert torch.equal(target.model.net.segmentation_head[0].weight, fresh_head)  # type: ignore[union-attr,index]


def _val_miou(run: Path) -> float:
    rows = list(csv.DictReader(next(run.rglob("metrics.csv")).open()))
    return float(next(r["val_miou"] for r in rows if r.get("val_miou")))


def test_init_from_on_the_command_line_starts_from_the_checkpoint(
    shapes_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    base = ["--config", str(ROOT / "configs" / "quickstart.yaml"), *TINY_SHAPES, f"--data.init_args.root={shapes_root}",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]  # fmt: skip
    main(["fit", *base, "--trainer.max_epochs=1", "--trainer.logger.init_args.name=source"])
    checkpoint = next((tmp_path / "runs").rglob("last.ckpt"))
    main(["validate", *base, f"--ckpt_path={checkpoint}", "--trainer.logger.init_args.name=resumed"])
    main(["validate", *base, f"--model.init_args.init_from={checkpoint}", "--trainer.logger.init_args.name=init"])
    capsys.readouterr()
    main(["validate", *base, "--trainer.logger.init_args.name=scratch"])
    # an untrained head's scores are printed, not kept in a run folder
    scratch = float(re.findall(r"\bval_miou\b[^\d\n]*([0-9.]+)", capsys.readouterr().out)[-1])  # tqdm or rich table
    assert not (tmp_path / "runs" / "quickstart" / "scratch").exists()
    resumed, initialised = (
        _val_miou(tmp_path / "runs" / "quickstart" / "resumed"),
        _val_miou(tmp_path / "runs" / "quickstart" / "init"),
    )
    assert initialised == resumed
    assert scratch != pytest.approx(resumed, abs=1e-6)


def _dog_detector_file(path: Path) -> None:
    """A Mask R-CNN in torchvision's COCO format (91 slots) whose predictors say "dog, this whole box" for every RoI."""
    from lightseg.models.detection import build_rcnn

    model = build_rcnn("maskrcnn_resnet18_fpn", 91, weights=None, weights_backbone=None)
    heads = model.roi_heads
    with torch.no_grad():
        heads.box_predictor.cls_score.weight.zero_()
        heads.box_predictor.cls_score.bias.fill_(-10.0)
        heads.box_predictor.cls_score.bias[18] = 10.0  # torchvision's slot of category 18, dog
        heads.box_predictor.bbox_pred.weight.zero_()
        heads.box_predictor.bbox_pred.bias.zero_()
        heads.mask_predictor.mask_fcn_logits.weight.zero_()
        heads.mask_predictor.mask_fcn_logits.bias.fill_(10.0)
    torch.save(model.state_dict(), path)


def _whole_image_proposals(self, images, features, targets=None):  # type: ignore[no-untyped-def]
    # stands in for the RPN: one proposal, the whole image, so the box predictor decides the rest
    boxes = [
        torch.tensor([[0.0, 0.0, float(w), float(h)]], device=images.tensors.device) for h, w in images.image_sizes
    ]
    return boxes, {}


def test_coco_format_weights_keep_their_predictors_for_the_datas_categories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from torchvision.models.detection.rpn import RegionProposalNetwork

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(RegionProposalNetwork, "forward", _whole_image_proposals)
    write_coco(tmp_path / "coco")
    _dog_detector_file(tmp_path / "dogs.pth")
    args = [
        "--model=InstanceSegmentationTask",
        "--model.init_args.arch=maskrcnn_resnet18_fpn",
        f"--model.init_args.weights={tmp_path / 'dogs.pth'}",
        "--model.init_args.weights_backbone=null",
        "--model.init_args.min_size=64",
        "--model.init_args.max_size=64",
        "--data=COCOInstanceDataModule",
        f"--data.init_args.root={tmp_path / 'coco'}",
        "--data.init_args.num_workers=0",
        "--data.init_args.batch_size=2",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
    ]
    # one batch of two of the four images: AP counts the images evaluated, not the whole file
    main(["validate", *args, "--trainer.limit_val_batches=1", "--trainer.logger.init_args.name=subset"])
    rows = list(csv.DictReader(next((tmp_path / "runs").rglob("metrics.csv")).open()))
    assert float(rows[0]["val_bbox_map"]) == 1.0 and float(rows[0]["val_segm_map"]) == 1.0
    assert float(rows[0]["val_segm_ap_dog"]) == 1.0 and "val_segm_ap_car" not in rows[0]  # no car: no AP

    main(["predict", *args, f"--data.init_args.predict_dir={tmp_path / 'coco' / 'val2017'}",
          f"--prediction.output_dir={tmp_path / 'out'}"])  # fmt: skip
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(results) == 4 and {r["category_id"] for r in results} == {18}
    assert all(r["bbox"] == [0.0, 0.0, 64.0, 64.0] and r["score"] > 0.99 for r in results)


def test_predictors_start_fresh_when_the_data_has_classes_the_weights_lack(tmp_path: Path) -> None:
    from lightseg.models.predictors import predictor_classes
    from lightseg.tasks import InstanceSegmentationTask

    _dog_detector_file(tmp_path / "dogs.pth")
    kept = InstanceSegmentationTask(
        arch="maskrcnn_resnet18_fpn", num_classes=4, weights=str(tmp_path / "dogs.pth"), weights_backbone=None
    )
    assert predictor_classes(kept.model) == 91 and kept.pretrained_classes is not None
    kept.fit_predictors_to(["background", "person", "dog", "car"])
    box = kept.model.roi_heads.box_predictor
    assert predictor_classes(kept.model) == 4 and box.cls_score.bias.tolist() == [-10.0, -10.0, 10.0, -10.0]
    assert kept.model.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 4
    fresh = InstanceSegmentationTask(
        arch="maskrcnn_resnet18_fpn", num_classes=3, weights=str(tmp_path / "dogs.pth"), weights_backbone=None
    )
    fresh.fit_predictors_to(["background", "dog", "rider"])  # riders are no COCO class
    assert predictor_classes(fresh.model) == 3 and 10.0 not in fresh.model.roi_heads.box_predictor.cls_score.bias
