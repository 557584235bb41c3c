"""Today's architectures through the whole tool: train, every metric, sliding window + TTA, the CRF, predict, export."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightseg.cli import main

from conftest import ROOT, TINY_SHAPES

#: structurally different newcomers: a Mix-Transformer encoder, a ConvNeXt under UPerNet's pyramid pooling,
#: DPT on a patch-14 ViT (DINOv2)
#: DPT on a patch-14 ViT (DINOv2); transformers' mask-classification models (a tiny configuration saved by the test)
ZOO = [
    ("segformer", "mit_b0"),
    ("upernet", "tu-convnext_atto"),
    ("dpt", "tu-vit_small_patch14_dinov2"),
    ("hf_segformer", "tiny"),
    ("hf_upernet", "tiny"),
    ("hf_dpt", "tiny"),
    ("mask2former", "tiny"),
    ("eomt", "tiny"),
]


@pytest.mark.parametrize(("arch", "backbone"), ZOO, ids=[a for a, _ in ZOO])
def test_a_modern_architecture_trains_evaluates_predicts_and_exports(
    arch: str,
    backbone: str,
    shapes_root: Path,
    tmp_path: Path,
    tiny_transformers: Callable[[str], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("pydensecrf")
    if backbone == "tiny":
        backbone = str(tiny_transformers(arch))
    common = [
        "--config", str(ROOT / "configs" / "quickstart.yaml"), *TINY_SHAPES, f"--data.init_args.root={shapes_root}",
        f"--model.init_args.arch={arch}", f"--model.init_args.backbone={backbone}",
        *(["--model.init_args.loss=ce"] if arch in ("mask2former", "eomt") else []),
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--trainer.logger.init_args.name=zoo",
    ]  # fmt: skip
    main(["fit", *common, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2"])
    run = tmp_path / "runs" / "quickstart" / "zoo" / "version_0"
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    val = next(r for r in rows if r.get("val_miou"))
    for key in ("val_miou", "val_pixel_acc", "val_macc", "val_fwiou", "val_mdice", "val_biou", "val_iou_circle"):
        assert 0.0 <= float(val[key]) <= 1.0, key
    hparams = (run / "hparams.yaml").read_text()
    assert f"arch: {arch}" in hparams and f"backbone: {backbone}" in hparams

    # test with a sliding window smaller than the images, flip TTA and the dense CRF
    crf = ["--config", str(ROOT / "tests" / "conf" / "crf.yaml")]
    settings = ("mode=slide", "window_size=28", "window_stride=14", "tta_flip=true")
    inference = [f"--model.init_args.inference.{setting}" for setting in settings]
    main(["test", *common, *crf, *inference, "--ckpt_path", "last"])
    tested = next(csv.DictReader((run / "test-last" / "metrics.csv").open()))
    for key in ("test_miou", "test_crf_miou", "test_biou", "test_crf_biou"):
        assert 0.0 <= float(tested[key]) <= 1.0, key

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for k, size in enumerate([(37, 50), (64, 45)]):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(images / f"{k}.png")
    main(["predict", *common, "--ckpt_path", "last", "--data.init_args.predict_dir", str(images),
          "--prediction.output_dir", str(tmp_path / "predicted")])  # fmt: skip
    masks = [np.asarray(Image.open(tmp_path / "predicted" / "masks" / f"{k}.png")) for k in range(2)]
    assert [m.shape for m in masks] == [(37, 50), (64, 45)] and all(m.max() < 4 for m in masks)

    if arch == "dpt":
        return  # its ONNX export (torch.export's exporter) is the slow test in test_export.py
    export = ["export", *common, "--ckpt_path", "last", "--export.output", str(tmp_path / "model.onnx")]
    if arch == "mask2former":
        with pytest.raises(SystemExit) as stop:
            main(export)
        assert stop.value.code == 2 and "Swin's shifted-window masks" in capsys.readouterr().err
        assert not (tmp_path / "model.onnx").exists()
        return
    main(export)
    info = json.loads((tmp_path / "model.onnx.json").read_text())
    assert info["architecture"] == arch and info["backbone"] == backbone
    assert all(figure["ok"] for figure in info["verification"])
