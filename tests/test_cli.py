from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from PIL import Image

from lightseg.callbacks import LineProgress, SegmentationWriter
from lightseg.callbacks.line_progress import lines_unless_terminal
from lightseg.callbacks.summary import RunSummary
from lightseg.cli import LightsegCLI, build_cli, main
from lightseg.cli.trainer import LightsegTrainer
from lightseg.datamodules import ShapesDataModule
from lightseg.inference import InferenceSettings
from lightseg.models import ModelSpec
from lightseg.tasks import DetectionTask, PanopticSegmentationTask, SemanticSegmentationTask

from conftest import ROOT, TINY_SHAPES

QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")
PRESET_DIRS = {"trainer", "eval", "tune"}  # fragments composed after a run config; search spaces
CONFIGS = sorted(str(p) for p in (ROOT / "configs").rglob("*.yaml") if not PRESET_DIRS & set(p.parts))


def tiny(shapes_root: Path, *extra: str) -> list[str]:
    return [
        "--config",
        QUICKSTART,
        *TINY_SHAPES,
        f"--data.init_args.root={shapes_root}",
        "--trainer.max_epochs=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        *extra,
    ]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: Path(p).name)
def test_every_shipped_config_instantiates(config: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # data roots are relative and absent: building must not touch them
    first_line = Path(config).read_text().splitlines()[0]
    assert first_line.startswith("# ") and len(first_line) > 60  # what it reproduces and where from
    content = yaml.safe_load(Path(config).read_text())
    task = content["model"]["class_path"]
    if content["data"]["class_path"] == "SegmentationFolderDataModule":  # its classes come from the data set's file
        root = tmp_path / content["data"]["init_args"]["root"]
        for folder in ("images", "masks"):
            (root / folder).mkdir(parents=True)
        (root / "classes.txt").write_text("background\nforeground\n")
    if task == "SemanticSegmentationTask":
        cli = build_cli(["--config", config, "--model.init_args.weights_backbone=null"], run=False)
        assert isinstance(cli.model, SemanticSegmentationTask)
        assert cli.model.hparams["num_classes"] == cli.datamodule.num_classes  # linked
        with torch.no_grad():
            assert cli.model.eval()(torch.rand(1, 3, 33, 47))["out"].shape == (1, cli.datamodule.num_classes, 33, 47)
        return
    write_coco_categories(tmp_path / "data" / "coco" / "annotations")  # COCO's categories come from its files
    weights = [] if "quickstart" in config or "mask2former" in config else ["--model.init_args.weights=null"]
    if task != "PanopticSegmentationTask" or str(content["model"]["init_args"].get("arch", "")).startswith(
        "panoptic_fpn"
    ):
        # the R-CNNs resize inputs to their min_size (800): the forward below needs no more than the input
        weights += ["--model.init_args.min_size=64", "--model.init_args.max_size=96"]
    if task == "PanopticSegmentationTask":
        cli = build_cli(["--config", config, "--model.init_args.weights_backbone=null", *weights], run=False)
        assert isinstance(cli.model, PanopticSegmentationTask)
        assert cli.model.hparams["num_classes"] == cli.datamodule.num_classes  # linked
        assert cli.model.hparams["thing_classes"] == cli.datamodule.thing_classes  # linked
        assert 0 < len(cli.model.things) < cli.datamodule.num_classes
        with torch.no_grad():
            predictions = cli.model.eval()([torch.rand(3, 64, 96)])
        assert predictions[0].segments.shape == (64, 96)
        return
    cli = build_cli(["--config", config, "--model.init_args.weights_backbone=null", *weights], run=False)
    assert isinstance(cli.model, DetectionTask)
    assert cli.model.hparams["num_classes"] == cli.datamodule.num_classes  # linked
    with torch.no_grad():
        detections = cli.model.eval()([torch.rand(3, 40, 56)])
    assert {"boxes", "labels", "scores"} <= set(detections[0])


def write_coco_categories(folder: Path) -> None:
    from torchvision.models.detection import KeypointRCNN_ResNet50_FPN_Weights, MaskRCNN_ResNet50_FPN_Weights

    names = MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]
    things = [{"id": i, "name": n} for i, n in enumerate(names) if n not in ("__background__", "N/A")]
    person = [
        {"id": 1, "name": "person", "keypoints": KeypointRCNN_ResNet50_FPN_Weights.COCO_V1.meta["keypoint_names"]}
    ]
    folder.mkdir(parents=True)
    panoptic = [{"id": 1, "name": "person", "isthing": 1}, {"id": 3, "name": "car", "isthing": 1},
                {"id": 184, "name": "tree-merged", "isthing": 0}]  # fmt: skip
    for name, categories in (("instances", things), ("person_keypoints", person), ("panoptic", panoptic)):
        content = {"images": [], "annotations": [], "categories": categories}
        (folder / f"{name}_val2017.json").write_text(json.dumps(content))


class Records(logging.Handler):
    """Keeps the messages of the records it handles."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_fit_test_predict_round_trip(
    shapes_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    infos = Records()
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addHandler(infos)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            main(["fit", *tiny(shapes_root)])
    finally:
        logging.getLogger("lightning.pytorch.utilities.rank_zero").removeHandler(infos)
    # Lightning's messages, less its cloud advertisements and its own deprecated torch calls
    assert any(message.startswith("GPU available") for message in infos.messages)
    assert not any("💡 Tip" in message for message in infos.messages)
    assert not any("LeafSpec" in str(w.message) for w in caught)
    run = tmp_path / "runs" / "quickstart" / "unet_resnet18" / "version_0"
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and any(name.startswith("epoch") for name in checkpoints)
    # the monitored copy holds the weights, last.ckpt the full state to resume from
    best_file = run / "checkpoints" / next(name for name in checkpoints if name.startswith("epoch"))
    last_file = run / "checkpoints" / "last.ckpt"
    best_content = torch.load(best_file, map_location="cpu", weights_only=True)
    assert "state_dict" in best_content and "optimizer_states" not in best_content
    assert "optimizer_states" in torch.load(last_file, map_location="cpu", weights_only=True)
    assert best_file.stat().st_size < 0.6 * last_file.stat().st_size  # AdamW's two moments left out
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *tiny(shapes_root), "--ckpt_path", str(best_file)])
    assert exit_info.value.code == 2
    assert "holds the weights only" in capsys.readouterr().err
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    mious = [float(r["val_miou"]) for r in rows if r.get("val_miou")]
    assert len(mious) == 2 and all(0.0 <= v <= 1.0 for v in mious)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["class_path"] == "lightseg.tasks.SemanticSegmentationTask"
    assert saved["data"]["init_args"]["num_train"] == 32 and saved["trainer"]["max_epochs"] == 2
    hparams = yaml.safe_load((run / "hparams.yaml").read_text())
    assert hparams["config"]["data"]["init_args"]["image_size"] == 32  # the config reached the logger
    assert hparams["num_classes"] == 4  # linked from the data module into the model

    # the saved config alone reproduces the run's setup
    capsys.readouterr()
    main(["validate", "--config", str(run / "config.yaml"), "--ckpt_path", "last", "--trainer.logger=false"])
    assert "Validation, per class (%)" in capsys.readouterr().out

    capsys.readouterr()
    main(["test", *tiny(shapes_root), "--ckpt_path", "best"])
    captured = capsys.readouterr()
    assert "--ckpt_path best -> " in captured.err and "epoch" in captured.err
    table = captured.out[captured.out.index("Test, per class") :]
    for name in ("background", "circle", "square", "triangle", "mean"):
        assert name in table

    # the evaluation went beside the checkpoint it evaluated: one training run, no new version folder
    best = captured.err.split("--ckpt_path best -> ")[1].split()[0]
    assert [p.name for p in (tmp_path / "runs" / "quickstart" / "unet_resnet18").iterdir()] == ["version_0"]
    results = run / f"test-{Path(best).stem}"
    assert {"metrics.csv", "per_image_test.csv", "config.yaml"} <= {p.name for p in results.iterdir()}
    assert "test_miou" in (results / "metrics.csv").read_text()
    before = (results / "metrics.csv").read_text()
    main(["test", *tiny(shapes_root), "--ckpt_path", "best"])  # again: the earlier results are kept
    assert f"{results} holds an earlier evaluation of this checkpoint, kept" in capsys.readouterr().err
    assert (results / "metrics.csv").read_text() == before
    assert "test_miou" in (run / f"test-{Path(best).stem}-2" / "metrics.csv").read_text()

    images = tmp_path / "my_images"
    images.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)).save(images / "a.jpg")
    Image.fromarray(np.zeros((20, 30), dtype=np.uint8), mode="L").save(images / "b.png")
    out = tmp_path / "out"
    main(["predict", *tiny(shapes_root), "--ckpt_path", "last", "--data.init_args.predict_dir", str(images),
          "--prediction.output_dir", str(out)])  # fmt: skip
    mask_a = Image.open(out / "masks" / "a.png")
    assert mask_a.mode == "P" and mask_a.size == (53, 37)
    assert set(np.unique(np.asarray(mask_a)).tolist()) <= {0, 1, 2, 3}
    assert Image.open(out / "masks" / "b.png").size == (30, 20)
    overlay = Image.open(out / "overlays" / "a.png")
    # enlarged 7x to be seen (shorter side >= 256 pixels), with a legend below
    assert overlay.mode == "RGB" and overlay.size[0] == 53 * 7 and overlay.size[1] > 37 * 7
    # a prediction makes no run folder
    assert [p.name for p in (tmp_path / "runs" / "quickstart" / "unet_resnet18").iterdir()] == ["version_0"]
    folders = sorted(p.name for p in run.iterdir() if p.is_dir())
    assert folders == ["checkpoints", "confusion_matrix", results.name, f"{results.name}-2"]

    # an existing output folder is refused before anything is predicted, and nothing is lost
    before = (out / "masks" / "a.png").read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", *tiny(shapes_root), "--ckpt_path", "last", "--data.init_args.predict_dir", str(images),
              "--prediction.output_dir", str(out)])  # fmt: skip
    assert exit_info.value.code == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert (out / "masks" / "a.png").read_bytes() == before

    # masks only, two images of different sizes in one batch: the same masks, no overlays
    main(["predict", *tiny(shapes_root), "--ckpt_path", "last", "--data.init_args.predict_dir", str(images),
          "--data.init_args.predict_batch_size=2", "--prediction.overlays=false",
          "--prediction.output_dir", str(tmp_path / "masks_only")])  # fmt: skip
    assert f"predicted 2 images: masks/ in {tmp_path / 'masks_only'}" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "masks_only").iterdir()) == ["masks"]
    for name in ("a.png", "b.png"):
        alone = np.asarray(Image.open(tmp_path / "masks_only" / "masks" / name))
        np.testing.assert_array_equal(alone, np.asarray(Image.open(out / "masks" / name)))


def test_predictions_written_by_a_writer_are_not_also_kept_in_memory(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    for name in "abc":
        Image.fromarray(np.zeros((16, 24, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{name}.png")
    task = SemanticSegmentationTask(arch="unet", backbone="resnet18", weights_backbone=None, num_classes=4)
    data = ShapesDataModule(root=str(tmp_path / "cache"), predict_dir=str(tmp_path / "images"))
    options = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False}
    writer = SegmentationWriter(output_dir=str(tmp_path / "out"))
    # a folder of any size: the masks go to files, none piles up in the trainer
    assert LightsegTrainer(callbacks=[writer], **options).predict(task, datamodule=data) is None
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["a.png", "b.png", "c.png"]
    kept = LightsegTrainer(**options).predict(task, datamodule=data)  # no writer: Lightning's default, returned
    assert [tuple(p["mask"].shape) for p in kept] == [(1, 16, 24)] * 3


def test_progress_in_a_log_file_is_lines_not_a_redrawn_bar(
    shapes_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    main(["fit", *tiny(shapes_root, "--trainer.enable_progress_bar=true")])  # stdout is not a terminal here
    out = capsys.readouterr().out
    assert "\r" not in out and "it/s]" not in out  # no tqdm bar
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    number = r"[-\d.e]+"
    first = rf"epoch 0 \(1 of 2\): 4 steps in [\d.]+ s \({number} steps/s\); train_loss_epoch {number} "
    first += rf"train_miou {number}; val_loss {number} val_miou {number} \(validation [\d.]+ s\); about .+ left"
    assert len(epochs) == 2 and re.fullmatch(first, epochs[0]), epochs
    assert epochs[1].startswith("epoch 1 (2 of 2): 4 steps") and not epochs[1].endswith("left")  # no time left
    # train_miou is the task's score of the epoch the line is about, not of the one before
    rows = [r for r in csv.DictReader(next(tmp_path.rglob("metrics.csv")).open()) if r.get("train_miou")]
    assert f"train_miou {float(rows[0]['train_miou']):.4g};" in epochs[0]

    main(["fit", *tiny(shapes_root, "--trainer.enable_progress_bar=true", "--trainer.max_epochs=1",
                       "--trainer.callbacks+=LineProgress", "--trainer.callbacks.interval=0")])  # fmt: skip
    steps = [line for line in capsys.readouterr().out.splitlines() if " step " in line]
    assert [line.split(":")[0] for line in steps] == [f"epoch 0 (1 of 1) step {k}/4" for k in (1, 2, 3)]
    assert re.fullmatch(r".*: train_loss_step [\d.]+  [\d.]+ steps/s  epoch ends in [\d.]+ s", steps[0])
    main(["test", *tiny(shapes_root, "--trainer.enable_progress_bar=true"), "--ckpt_path", "best"])
    assert re.search(r"^test: 1 batch in [\d.]+ s$", capsys.readouterr().out, re.MULTILINE)  # 8 images, batches of 8

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    # Lightning's default bar (tqdm, or rich where rich is installed) stays in a terminal, becomes lines in a file
    for terminal, stream in ((True, Terminal()), (False, io.StringIO())):
        trainer = Trainer(logger=False, enable_checkpointing=False, enable_model_summary=False)
        default = type(trainer.progress_bar_callback)
        assert default in (TQDMProgressBar, RichProgressBar)
        lines_unless_terminal(trainer, [], stream)
        assert type(trainer.progress_bar_callback) is (default if terminal else LineProgress)
    printed = io.StringIO()  # LightningModule.print goes through it: its arguments are kept
    LineProgress().print("a", "b", sep="-", end="!", file=printed)
    assert printed.getvalue() == "a-b!"
    bar = TQDMProgressBar(refresh_rate=5)  # configured by the user: kept, also in a log
    trainer = Trainer(logger=False, enable_checkpointing=False, callbacks=[bar])
    lines_unless_terminal(trainer, [bar], io.StringIO())
    assert trainer.progress_bar_callback is bar


def test_user_subclass_by_import_path(shapes_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cli = build_cli([*tiny(shapes_root), "--model", "user_task.LovaszSegmentation"], run=False)
    assert type(cli.model).__name__ == "LovaszSegmentation"
    # without a subcommand (a script's run=False), the commands printed at the end keep the whole command line
    (summary,) = [c for c in cli.trainer.callbacks if isinstance(c, RunSummary)]
    assert summary.args[:2] == ["--config", QUICKSTART]
    assert type(cli.model.criterion).__name__ == "LovaszLoss"
    assert cli.model.hparams["network"]["arch"] == "unet"  # the quickstart's init_args carried over


def test_validate_prints_table_and_uses_short_names(
    shapes_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    main(["validate", "--model", "SemanticSegmentationTask", "--model.arch", "unet", "--model.backbone", "resnet18",
          "--model.weights_backbone", "null", "--data", "ShapesDataModule", *TINY_SHAPES,
          f"--data.init_args.root={shapes_root}", "--trainer.enable_progress_bar=false",
          "--trainer.logger=false"])  # fmt: skip
    assert "Validation, per class (%)" in capsys.readouterr().out


def test_user_mistakes_exit_with_one_line(
    shapes_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["test", *tiny(shapes_root), "--ckpt_path", "best"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "no checkpoint found" in err and "Traceback" not in err

    with pytest.raises(SystemExit) as info:
        main(["predict", *tiny(shapes_root)])
    assert info.value.code == 2
    assert "pass --data.predict_dir" in capsys.readouterr().err

    with pytest.raises(SystemExit) as info:
        main(["fit", *tiny(shapes_root), "--model.backbone", "resnet1800"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "backbone 'resnet1800' is not available" in err and "resnet18" in err

    with pytest.raises(SystemExit) as info:
        main(["fit", *tiny(shapes_root), "--model.arch", "unett"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "unett" in err and "deeplabv3plus" in err


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            ["--model.arch", "unett"],
            "model.network.arch: 'unett' is not valid; (did you mean 'unet'?) valid choices: deeplabv2",
        ),
        (["--model.loss", "dicee"], "model.loss: 'dicee' is not valid; (did you mean 'dice'?)"),
        (["--model.init_args.foo", "1"], "model: unknown option 'foo'"),
        (
            ["--model.init_args.inference", "slide"],
            "model.inference: 'slide' is not valid: inference is a group of settings; set each by name "
            "(--model.init_args.inference.<setting>, listed by --help)",
        ),
        (["--model.init_args.inference.mode", "slid"], "model.inference.mode: 'slid' is not valid; (did you mean"),
        (["--data.init_args.batch_size", "x"], "data.loader.batch_size: expected int, got 'x'"),
        (["--model", "NoSuchTask"], "model: 'NoSuchTask' is not a known class"),
        (["--model.init_args.optimizer.init_args.lr", "fast"], "model.optimizer.lr: expected float, got 'fast'"),
        (["--trainer.precision", "17"], "trainer.precision: '17' is not valid; valid choices: 16, 16-mixed"),
        (["--seed_everything", "abc"], "seed_everything: expected bool or int, got 'abc'"),
        (["--trainer.max_epoch", "3"], "unknown option '--trainer.max_epoch' (did you mean '--trainer.max_epochs'?)"),
    ],
)
def test_config_mistakes_are_one_line(override: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", QUICKSTART, *override])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"lightseg: error: {expected}"), err
    assert len(err) == 2 and err[1] == "`lightseg fit --help` lists every option"


def test_bad_label_in_data_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "shapes"
    args = tiny(root)
    build_cli(args, run=False).datamodule.prepare_data()
    data_dir = next(root.iterdir())
    bad = data_dir / "SegmentationClass" / "val_00003.png"
    label = np.asarray(Image.open(bad)).copy()
    label[0, 0] = 9
    Image.fromarray(label, mode="L").save(bad)
    with pytest.raises(SystemExit):
        main(["validate", *args, "--trainer.logger=false"])
    err = capsys.readouterr().err
    assert "val_00003.png holds label value(s) [9]" in err and "Traceback" not in err


def test_console_script_and_module_entry_point(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lightseg", "fit", "--config", QUICKSTART, "--print_config"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["model"]["init_args"]["network"]["arch"] == "unet"
    assert printed["data"]["class_path"] == "lightseg.datamodules.ShapesDataModule"
    error = subprocess.run(
        ["lightseg", "predict", "--config", QUICKSTART, "--ckpt_path", "last"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False,
    )  # fmt: skip
    assert error.returncode == 2
    assert error.stderr.strip().splitlines()[-1].startswith("lightseg: error: --ckpt_path last: no checkpoint found")
    assert "Traceback" not in error.stderr


def test_help_describes_lightseg_and_version_names_the_stack(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert re.fullmatch(
        r"lightseg \d+\.\d+\.\d+ \(torch \S+, torchvision \S+, lightning \S+\)\n", capsys.readouterr().out
    )
    with pytest.raises(SystemExit):
        main(["--help"])
    top = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "lightseg: semantic, instance and keypoint segmentation" in top and "Lightning Trainer" not in top
    for sentence in (
        "fit Train the model on the data's train split, validating on its val split; checkpoints go into the run "
        "folder.",
        "test Score a checkpoint on the test split: per-class table, per-image scores, metrics beside the checkpoint.",
        "predict Segment your images (--data.predict_dir) with a checkpoint: masks and overlays in "
        "--prediction.output_dir.",
    ):
        assert sentence in top  # whole sentences, not Lightning's cut docstrings
    with pytest.raises(SystemExit):
        main(["test", "--help"])
    test_help = " ".join(capsys.readouterr().out.split())
    # what a user configures first, the Trainer's options after, each group titled in user terms
    model, data, trainer = (test_help.index(k) for k in ("--model.help", "--data.help", "--trainer.accelerator.help"))
    assert model < data < trainer
    assert "The task: model, loss, metrics and optimiser" in test_help and "build_*" not in test_help
    assert "The data: data set, splits, augmentation, batches" in test_help
    assert "A DataModule standardizes" not in test_help  # Lightning's developer docstring
    assert (
        "--ckpt_path CKPT_PATH The checkpoint to score: ``best`` (the best-scoring checkpoint of all runs" in test_help
    )


def test_deeplabv3_recipe_runs_on_voc_and_sbd_layouts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from layouts import write_sbd, write_voc

    monkeypatch.chdir(tmp_path)
    write_voc(tmp_path / "voc", {"train": ["2007_a", "2008_b"], "val": ["2007_d", "2008_e"]})
    write_sbd(tmp_path / "sbd", ["2008_b", "2007_d", "2008_g"], ["2008_e", "2009_h"])
    caplog.set_level(logging.INFO)
    main(["fit", "--config", str(ROOT / "configs" / "deeplabv3.yaml"), "--model.init_args.weights_backbone=null",
          "--model.init_args.backbone=resnet50", "--data.init_args.voc_root=voc", "--data.init_args.sbd_root=sbd",
          "--data.init_args.crop_size=65", "--data.init_args.batch_size=2", "--data.init_args.num_workers=0",
          "--data.init_args.pin_memory=false", "--trainer.max_steps=2", "--trainer.check_val_every_n_epoch=1",
          "--trainer.log_every_n_steps=1",
          "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])  # fmt: skip
    metrics = next((tmp_path / "runs" / "deeplabv3").rglob("metrics.csv"))
    rows = list(csv.DictReader(metrics.open()))
    assert any(r.get("val_miou") for r in rows)
    lrs = [float(r["lr-SGD"]) for r in rows if r.get("lr-SGD")]
    assert lrs[0] == pytest.approx(0.01) and lrs[1] == pytest.approx(0.01 * 0.5**0.9)  # poly over max_steps=2
    assert "VOC-aug: 4 training images (2 labelled by VOC, 2 by SBD), 2 val images" in caplog.text


def test_missing_data_root_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["validate", "--config", str(ROOT / "configs" / "semantic" / "voc_unet_resnet34.yaml"),
              "--model.init_args.weights_backbone=null", "--trainer.logger=false"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2
    assert err[-1] == (
        "lightseg: error: data root data/voc does not exist; expected the layout "
        "VOCdevkit/VOC2012/{JPEGImages/<id>.jpg, SegmentationClass/<id>.png, ImageSets/Segmentation/<split>.txt}"
    )


def test_eval_preset_composes_with_a_run_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = [
        "--config",
        str(ROOT / "configs" / "deeplabv3.yaml"),
        "--config",
        str(ROOT / "configs" / "eval" / "ms_flip.yaml"),
    ]
    cli = build_cli(
        [*args, "--model.init_args.weights_backbone=null", "--model.init_args.backbone=resnet50"], run=False
    )
    inference = cli.model.hparams["inference"]
    assert tuple(inference["tta_scales"]) == (0.5, 0.75, 1.0, 1.25, 1.5, 1.75) and inference["tta_flip"]
    assert cli.model.hparams["network"]["arch"] == "deeplabv3" and cli.model.hparams["network"]["output_stride"] == 16


def test_checkpoint_fills_in_but_never_overrides_the_users_arguments(
    shapes_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    main(["fit", *tiny(shapes_root), "--trainer.max_epochs=1", "--model.init_args.boundary_ratio=0.03"])
    monkeypatch.setattr(LightsegCLI, "_run_subcommand", lambda self, subcommand: None)
    # an evaluation preset given with the checkpoint wins over the checkpoint's hyperparameters
    preset = ["--config", str(ROOT / "configs" / "eval" / "ms_flip.yaml")]
    cli = build_cli(["test", *tiny(shapes_root), *preset, "--ckpt_path", "last", "--trainer.logger=false"])
    assert cli.model.inference.tta_flip and min(cli.model.inference.tta_scales) == 0.5
    assert cli.model.hparams["boundary_ratio"] == 0.03  # what the user left at its default comes from the checkpoint
    # a checkpoint alone rebuilds its model
    checkpoint = next((tmp_path / "runs").rglob("last.ckpt"))
    alone = ["--model=SemanticSegmentationTask", "--data=ShapesDataModule", f"--data.init_args.root={shapes_root}"]
    cli = build_cli(["test", *alone, *TINY_SHAPES, f"--ckpt_path={checkpoint}", "--trainer.logger=false"])
    assert (cli.model.hparams["network"]["backbone"], cli.model.hparams["network"]["weights_backbone"]) == (
        "resnet18",
        None,
    )
    assert cli.model.hparams["loss"] == "ce+dice" and not cli.model.inference.tta_flip
    # a checkpoint written before the inference settings and the network's were grouped keeps them flat: migrated
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["hyper_parameters"]["inference"]["mode"] == "whole"  # plain values, loadable without pickle
    assert saved["hyper_parameters"]["network"]["arch_options"] == {"decoder_channels": [128, 64, 32, 16, 8]}
    network = saved["hyper_parameters"]["network"]
    flat = {k: v for k, v in saved["hyper_parameters"].items() if k not in ("inference", "network")}
    saved["hyper_parameters"] = {**flat, **network, "inference": "slide", "window_size": 32, "tta_flip": True}
    torch.save(saved, tmp_path / "old.ckpt")
    cli = build_cli(["test", *alone, *TINY_SHAPES, f"--ckpt_path={tmp_path / 'old.ckpt'}", "--trainer.logger=false"])
    assert cli.model.inference == InferenceSettings(mode="slide", window_size=32, tta_flip=True)
    assert cli.model.hparams["loss"] == "ce+dice"
    assert cli.model.network == ModelSpec.of(network) and cli.model.network.backbone == "resnet18"
    # and from Python, as Lightning rebuilds a task
    task = SemanticSegmentationTask.load_from_checkpoint(tmp_path / "old.ckpt", weights_only=True)
    assert task.inference == InferenceSettings(mode="slide", window_size=32, tta_flip=True)
    assert task.hparams["inference"] == task.inference.as_dict() and "window_size" not in task.hparams
    assert task.network == ModelSpec.of(network) and task.hparams["network"] == network and "arch" not in task.hparams


def test_dense_crf_under_test_and_predict_from_yaml(
    shapes_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    pytest.importorskip("pydensecrf")
    monkeypatch.chdir(tmp_path)
    crf = ["--config", str(ROOT / "tests" / "conf" / "crf.yaml")]
    main(["fit", *tiny(shapes_root)])
    caplog.set_level(logging.INFO)
    main(["test", *tiny(shapes_root), *crf, "--ckpt_path", "last"])
    assert "Test, network vs dense CRF, per class (%)" in caplog.text
    assert "circle" in caplog.text[caplog.text.index("network vs dense CRF") :]
    test_run = tmp_path / "runs" / "quickstart" / "unet_resnet18" / "version_0" / "test-last"
    row = next(csv.DictReader((test_run / "metrics.csv").open()))
    assert 0.0 <= float(row["test_crf_miou"]) <= 1.0 and 0.0 <= float(row["test_miou"]) <= 1.0
    assert 0.0 <= float(row["test_crf_biou"]) <= 1.0  # Boundary IoU of the refined masks: what the CRF buys
    assert re.search(r"^BIoU +[\d.]+ +[\d.]+ +[+-][\d.]+$", caplog.text, re.MULTILINE)

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for k in range(3):
        Image.fromarray(rng.integers(0, 255, (40 + k, 50, 3), dtype=np.uint8)).save(images / f"{k}.png")
    predict = ["predict", *tiny(shapes_root), "--ckpt_path", "last", "--data.init_args.predict_dir", str(images)]
    main([*predict, "--prediction.output_dir", str(tmp_path / "plain")])
    main([*predict, *crf, "--prediction.output_dir", str(tmp_path / "crf")])
    plain = [np.asarray(Image.open(tmp_path / "plain" / "masks" / f"{k}.png")) for k in range(3)]
    refined = [np.asarray(Image.open(tmp_path / "crf" / "masks" / f"{k}.png")) for k in range(3)]
    assert [m.shape for m in refined] == [(40, 50), (41, 50), (42, 50)]
    assert any((a != b).any() for a, b in zip(plain, refined, strict=True))  # the CRF changed the masks


def test_interrupted_and_resumed_run_ends_exactly_like_an_uninterrupted_one(
    shapes_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run = [*tiny(shapes_root), "--trainer.max_epochs=3"]
    main(["fit", *run, "--trainer.logger.init_args.name=full", "--ckpt_path", "last"])  # nothing yet: fresh start
    main(["fit", *run, "--trainer.logger.init_args.name=cut", "--trainer.callbacks+=user_task.StopAfterEpoch",
          "--trainer.callbacks.epoch=0"])  # fmt: skip
    runs = tmp_path / "runs" / "quickstart"
    interrupted = torch.load(runs / "cut" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert interrupted["epoch"] == 0 and "lightseg_rng" in interrupted
    main(["fit", *run, "--trainer.logger.init_args.name=cut", "--ckpt_path", "last"])

    full = torch.load(runs / "full" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = torch.load(runs / "cut" / "version_1" / "checkpoints" / "last.ckpt", weights_only=True)
    assert full["global_step"] == resumed["global_step"] == 12
    for key, value in full["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key  # CPU runs are bit-for-bit reproducible
    assert full["lr_schedulers"][0]["_last_lr"] == resumed["lr_schedulers"][0]["_last_lr"]
    last_miou = [
        [float(r["val_miou"]) for r in csv.DictReader((runs / name / "metrics.csv").open()) if r.get("val_miou")][-1]
        for name in ("full/version_0", "cut/version_1")
    ]
    assert last_miou[0] == last_miou[1]


def test_checkpoint_of_another_class_count_is_one_line(
    shapes_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from layouts import write_voc

    monkeypatch.chdir(tmp_path)
    main(["fit", *tiny(shapes_root), "--trainer.max_epochs=1"])
    checkpoint = next((tmp_path / "runs").rglob("last.ckpt"))
    write_voc(tmp_path / "voc", {"train": ["a"], "val": ["b"]})
    with pytest.raises(SystemExit) as info:
        main(["validate", "--config", str(ROOT / "configs" / "semantic" / "voc_unet_resnet34.yaml"),
              "--model.init_args.weights_backbone=null", "--model.init_args.backbone=resnet18",
              "--data.init_args.root=voc", "--data.init_args.num_workers=0", "--trainer.logger=false",
              "--ckpt_path", str(checkpoint)])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert info.value.code == 2 and "Traceback" not in err
    assert err.startswith(f"lightseg: error: checkpoint {checkpoint} does not fit this SemanticSegmentationTask")
    assert "num_classes=4 there, 21 here" in err and "differ in shape" in err


def test_gpu_asked_for_without_one_is_one_line(
    shapes_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(
            [
                "validate",
                *tiny(shapes_root),
                "--trainer.accelerator=gpu",
                "--trainer.devices=2",
                "--trainer.strategy=ddp",
            ]
        )
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert info.value.code == 2
    assert err.startswith("lightseg: error: the trainer asks for a GPU but torch sees none")


def test_checkpoint_writes_are_atomic_and_their_temporary_file_stays_beside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a write killed halfway leaves the previous last.ckpt intact, and nothing in the system temp folder
    import os
    import tempfile

    from lightseg.checkpoints import BesideCheckpointIO

    path = tmp_path / "run" / "last.ckpt"
    BesideCheckpointIO().save_checkpoint({"step": 1, "w": torch.ones(100)}, path)
    (path.parent / "last.ckpt.tmp-999999").write_bytes(b"left by a killed run")
    temp_before = set(os.listdir(tempfile.gettempdir()))
    save = torch.save

    def killed(obj: object, target: Path) -> None:
        assert Path(target).parent == path.parent  # written beside the checkpoint
        save(obj, target)
        Path(target).write_bytes(Path(target).read_bytes()[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        BesideCheckpointIO().save_checkpoint({"step": 2, "w": torch.zeros(100)}, path)
    monkeypatch.setattr(torch, "save", save)
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no partial file, the stale one removed too
    assert set(os.listdir(tempfile.gettempdir())) <= temp_before
    BesideCheckpointIO().save_checkpoint({"step": 3}, path)
    assert torch.load(path, weights_only=True)["step"] == 3
    cli = build_cli(["--config", QUICKSTART, "--data.init_args.root", str(tmp_path / "data")], run=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, BesideCheckpointIO)  # what every lightseg run uses


def test_num_classes_that_disagrees_with_the_data_is_refused(
    shapes_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["fit", *tiny(shapes_root), "--model.init_args.num_classes=7"])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1
    assert err[0].startswith("lightseg: error: model num_classes=7 disagrees with the data: ShapesDataModule has 4")
    assert not (tmp_path / "runs").exists()  # refused before anything was written
    cli = build_cli([*tiny(shapes_root), "--model.init_args.num_classes=4"], run=False)  # agreeing is fine
    assert cli.model.hparams["num_classes"] == 4


def test_evaluating_an_untrained_model_warns(
    shapes_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    main(["validate", *tiny(shapes_root), "--trainer.limit_val_batches=1"])
    captured = capsys.readouterr()
    assert "lightseg: warning: no --ckpt_path" in captured.err and "Validation, per class (%)" in captured.out
    assert not (tmp_path / "runs").exists()  # no run folder for an untrained head's scores


def test_binary_masks_stored_as_0_and_255_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from layouts import write_voc

    monkeypatch.chdir(tmp_path)
    voc = write_voc(tmp_path / "voc", {"train": ["a", "b"], "val": ["c", "d"]})
    for png in (voc / "SegmentationClass").iterdir():  # the usual binary export: foreground 255
        label = np.asarray(Image.open(png))
        Image.fromarray(np.where(label > 0, 255, 0).astype(np.uint8), mode="L").save(png)
    with pytest.raises(SystemExit) as info:
        main(["validate", "--config", str(ROOT / "configs" / "semantic" / "voc_unet_resnet34.yaml"),
              "--model.init_args.weights_backbone=null", "--model.init_args.backbone=resnet18",
              "--data.init_args.root=voc", "--data.init_args.num_workers=0", "--trainer.logger=false"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert info.value.code == 2 and "Traceback" not in err
    assert "masks checked" in err and "hold only 0 and 255" in err and "declare 2 classes" in err


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_go_on(
    shapes_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import signal

    monkeypatch.chdir(tmp_path)
    handler = signal.getsignal(signal.SIGINT)
    args = ["fit", *tiny(shapes_root, "--trainer.max_epochs=2")]
    with pytest.raises(SystemExit) as info:
        main([*args, "--trainer.callbacks+=user_task.InterruptAtStep", "--trainer.callbacks.step=3"])
    signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl-C while it shuts down
    assert info.value.code == 1
    err = capsys.readouterr().err
    saved = next((tmp_path / "runs").rglob("last-interrupted.ckpt"))
    assert f"lightseg: interrupted in epoch 0, step 3; saved {saved.relative_to(tmp_path)}" in err
    assert torch.load(saved, weights_only=True, map_location="cpu")["global_step"] == 3
    command = next(line.strip() for line in err.splitlines() if line.strip().startswith("lightseg fit"))
    assert command.endswith(f"--ckpt_path {saved.relative_to(tmp_path)}") and "InterruptAtStep" in command
    main([*args, "--ckpt_path", "last"])  # `last` picks the interrupted checkpoint: the run ends its 2 epochs
    final = torch.load(next((tmp_path / "runs").rglob("last.ckpt")), weights_only=True, map_location="cpu")
    assert final["epoch"] == 1 and final["global_step"] == 8  # 4 steps per epoch (32 images, batch 8)
    # the rest of the interrupted epoch had the same batches and augmentations: as if never interrupted
    monkeypatch.chdir(tmp_path / "runs")
    main(args)
    whole = torch.load(next((tmp_path / "runs" / "runs").rglob("last.ckpt")), weights_only=True, map_location="cpu")
    assert whole["global_step"] == 8
    for key, value in whole["state_dict"].items():
        assert torch.equal(value, final["state_dict"][key]), key


def test_a_slurm_requeue_signal_saves_requeues_and_the_job_goes_on_as_if_never_stopped(
    shapes_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import signal

    bin_dir = tmp_path / "bin"  # scontrol as a stub that records its arguments
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    slurm = {"SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "1", "SLURM_NODEID": "0",
             "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "4711"}  # fmt: skip
    for name, value in slurm.items():
        monkeypatch.setenv(name, value)
    handler = signal.getsignal(signal.SIGUSR1)
    monkeypatch.chdir(tmp_path)
    args = ["fit", *tiny(shapes_root, "--trainer.max_epochs=2"), "--trainer.callbacks+=user_task.SignalAtStep",
            "--trainer.callbacks.step=2"]  # fmt: skip
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 0 and signal.getsignal(signal.SIGUSR1) == handler  # the handler is put back
    saved = next((tmp_path / "runs").rglob("last-requeued.ckpt"))
    err = capsys.readouterr().err
    assert f"lightseg: SIGUSR1 in epoch 0, step 3: saved {saved.relative_to(tmp_path)}. Requeued job 4711" in err
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4711\n"
    assert torch.load(saved, weights_only=True, map_location="cpu")["global_step"] == 3
    assert not list((tmp_path / "runs").rglob("hpc_ckpt*")) and not list(tmp_path.glob("hpc_ckpt*"))  # not Lightning's
    main([*args, "--ckpt_path", "last"])  # the requeued job: `last` picks the requeue checkpoint
    runs = sorted((tmp_path / "runs").rglob("last.ckpt"))
    final = torch.load(runs[-1], weights_only=True, map_location="cpu")
    assert final["epoch"] == 1 and final["global_step"] == 8
    monkeypatch.chdir(tmp_path / "bin")  # the same job, never signalled
    main(args[:-2])
    whole = torch.load(next((tmp_path / "bin").rglob("last.ckpt")), weights_only=True, map_location="cpu")
    for key, value in whole["state_dict"].items():
        assert torch.equal(value, final["state_dict"][key]), key


def test_last_checkpoint_follows_every_epoch_even_when_the_metric_does_not_improve(
    shapes_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Lightning 2.6 writes last.ckpt only with a new top-k checkpoint. val_miou never improves: lr 0, and no
    # BatchNorm statistics that move in training (the encoder's frozen, none in the decoder)
    monkeypatch.chdir(tmp_path)
    still = ("--model.init_args.optimizer.init_args.lr=0.0", "--model.init_args.freeze_backbone=true",
             "--model.init_args.arch_options={decoder_use_norm: false}")  # fmt: skip
    main(["fit", *tiny(shapes_root, *still, "--trainer.max_epochs=3")])
    checkpoints = tmp_path / "runs" / "quickstart" / "unet_resnet18" / "version_0" / "checkpoints"
    err = capsys.readouterr().err  # the run says what it did and what comes next
    summary = err[err.index("lightseg: training ended after 3 epochs, 12 steps") :]
    assert "best checkpoint: runs/quickstart/unet_resnet18/version_0/checkpoints/epoch000-val_miou" in summary
    assert "last checkpoint: runs/quickstart/unet_resnet18/version_0/checkpoints/last.ckpt" in summary
    assert "run folder: runs/quickstart/unet_resnet18/version_0" in summary
    assert "lightseg test --config" in summary and summary.count("--ckpt_path") == 3
    commands = {line.split()[1]: line for line in summary.splitlines() if line.strip().startswith("lightseg ")}
    assert set(commands) == {"test", "predict", "fit"}
    # the training-only options stay with the fit command; the model's go everywhere
    assert "--trainer.max_epochs=3" in commands["fit"] and "max_epochs" not in commands["test"] + commands["predict"]
    assert all("--model.init_args.optimizer.init_args.lr=0.0" in line for line in commands.values())
    last = torch.load(checkpoints / "last.ckpt", weights_only=True, map_location="cpu")
    assert last["epoch"] == 2 and last["global_step"] == 12
    assert [p.name for p in checkpoints.glob("epoch*")] == ["epoch000-val_miou" + p.name.split("val_miou")[1]
                                                            for p in checkpoints.glob("epoch000*")]  # fmt: skip
    states = [k for k in last["callbacks"] if k.startswith("ModelCheckpoint")]
    assert len(states) == 1 and last["callbacks"][states[0]]["best_model_path"].endswith(".ckpt")


def test_best_is_the_best_of_all_runs_not_of_the_newest(
    shapes_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lightseg.cli.checkpoint_aliases import resolve_checkpoint

    monkeypatch.chdir(tmp_path)
    main(["fit", *tiny(shapes_root)])  # the real run
    main(
        ["fit", *tiny(shapes_root, "--model.init_args.optimizer.init_args.lr=0.0", "--trainer.max_epochs=1")]
    )  # a trial
    scores = {}
    for path in (tmp_path / "runs").rglob("epoch*.ckpt"):
        scores[path.resolve()] = float(path.stem.split("val_miou")[1])
    assert len({p.parent for p in scores}) == 2
    best, message = resolve_checkpoint("best", [tmp_path / "runs" / "quickstart", tmp_path / "runs"])
    assert best == max(scores, key=lambda p: scores[p]) and "version_0" in str(best)
    assert f"val_miou={max(scores.values()):.4f}" in message and "in 2 run folders" in message


def test_a_requeue_callback_with_a_bad_signal_or_command_is_one_line(
    shapes_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for option, wording in (("signal=SIGNOPE", "is not a signal name"), ("requeue=scontrol requeue {id}", "{job}")):
        with pytest.raises(SystemExit) as info:
            main(["fit", *tiny(shapes_root), "--trainer.callbacks+=lightseg.callbacks.RequeueCheckpoint",
                  f"--trainer.callbacks.{option}"])  # fmt: skip
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert info.value.code == 2 and err.startswith("lightseg: error: RequeueCheckpoint") and wording in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.ckpt"))


def test_arch_options_written_for_another_arch_are_left_out_with_a_line(
    shapes_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    quickstart = yaml.safe_load(Path(QUICKSTART).read_text())["model"]["init_args"]["network"]
    assert quickstart["arch"] == "unet" and quickstart["arch_options"] == {"decoder_channels": [128, 64, 32, 16, 8]}
    # the quickstart's own arch: its decoder widths are built
    cli = build_cli(tiny(shapes_root), run=False)
    assert cli.model.hparams["network"]["arch_options"] == {"decoder_channels": [128, 64, 32, 16, 8]}
    assert cli.model.model.net.decoder.blocks[0].conv2[0].out_channels == 128
    assert "arch_options" not in capsys.readouterr().err
    # another arch on the command line: the U-Net's widths are not deeplabv3plus's, and are left out, said in one line
    cli = build_cli([*tiny(shapes_root), "--model.init_args.network.arch=deeplabv3plus"], run=False)
    assert (
        cli.model.hparams["network"]["arch"] == "deeplabv3plus" and cli.model.hparams["network"]["arch_options"] is None
    )
    err = capsys.readouterr().err
    assert f"arch_options {{decoder_channels: [128, 64, 32, 16, 8]}} of {QUICKSTART} are unet's: left out for arch " \
        "deeplabv3plus (give its own with --model.init_args.network.arch_options)" in err  # fmt: skip
    # options given on the command line are the user's: kept (and checked) whatever the arch (here in the
    # settings' older flat spelling, which is read as the group)
    cli = build_cli(
        [*tiny(shapes_root), "--model.init_args.arch=unetplusplus", "--model.init_args.arch_options={decoder_channels: "
         "[64, 32, 16, 8, 4]}"], run=False,
    )  # fmt: skip
    assert cli.model.hparams["network"]["arch_options"] == {"decoder_channels": [64, 32, 16, 8, 4]}
    # a later config file that names the arch its options are for keeps them (a file in the flat spelling too)
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        "model:\n  init_args:\n    arch: unetplusplus\n    arch_options: {decoder_channels: [32, 16, 8, 8, 8]}\n"
    )
    cli = build_cli([*tiny(shapes_root), "--config", str(mine)], run=False)
    assert cli.model.hparams["network"]["arch"] == "unetplusplus"
    assert cli.model.hparams["network"]["arch_options"] == {"decoder_channels": [32, 16, 8, 8, 8]}
    assert "arch_options" not in capsys.readouterr().err
