from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lightseg.callbacks import SegmentationDashboard
from lightseg.callbacks.dashboard import image_iou
from lightseg.cli import main
from lightseg.contract import TaskContext
from lightseg.datamodules import ShapesDataModule
from lightseg.types import SemanticEvalOutput
from lightseg.visualize import (
    HALO_COLOUR,
    PALETTE,
    confusion_matrix_image,
    enlarge,
    overlay,
    sample_panel,
    to_uint8_image,
)

from conftest import ROOT, TINY_SHAPES

QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")
WANDB = str(ROOT / "configs" / "trainer" / "wandb.yaml")
TENSORBOARD = str(ROOT / "configs" / "trainer" / "tensorboard.yaml")
CLASSES = ("background", "circle", "square", "triangle")


def run_args(shapes_root: Path, *presets: str, epochs: int = 2) -> list[str]:
    configs = [arg for preset in presets for arg in ("--config", preset)]
    return [
        *configs,
        "--config",
        QUICKSTART,
        *TINY_SHAPES,
        f"--data.init_args.root={shapes_root}",
        f"--trainer.max_epochs={epochs}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]


def val_items(shapes_root: Path) -> list[dict[str, torch.Tensor]]:
    data = ShapesDataModule(root=str(shapes_root), num_train=32, num_val=8, num_test=8, image_size=32)
    data.setup("validate")
    return [data.val_dataset[i] for i in range(len(data.val_dataset))]


def wandb_records(path: Path) -> Iterator[Any]:
    """The protobuf records of a ``run-<id>.wandb`` file (LevelDB log format: 32 KiB blocks, 7-byte headers)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunks = 7, 32768, []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        payload = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0:
            continue
        chunks = [payload] if kind in (1, 2) else [*chunks, payload]
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(b"".join(chunks))
            yield record


def wandb_run(folder: Path) -> dict[str, Any]:
    """Run id, group, tags, final summary, config and history of an offline W&B run folder.

    W&B's service process writes the file on its own: read it once it holds the run's exit record.
    """
    path = next(folder.glob("run-*.wandb"))
    for _ in range(100):
        records = list(wandb_records(path))
        if any(r.WhichOneof("record_type") == "exit" for r in records):
            break
        time.sleep(0.1)
    run: dict[str, Any] = {"summary": {}, "config": {}, "history": [], "artifacts": []}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(id=record.run.run_id, group=record.run.run_group, tags=list(record.run.tags))
        elif kind == "summary":
            nest(run["summary"], record.summary.update)
        elif kind == "config":
            for item in record.config.update:
                run["config"][item.key] = json.loads(item.value_json)
        elif kind == "history":
            run["history"].append(nest({}, record.history.item))
        elif kind == "artifact":
            run["artifacts"].append(record.artifact)
    return run


def nest(into: dict[str, Any], items: Any) -> dict[str, Any]:
    """W&B's flattened ``nested_key`` items as nested dicts."""
    for item in items:
        *parents, leaf = list(item.nested_key) or [item.key]
        node = into
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = json.loads(item.value_json)
    return into


@pytest.fixture
def wandb_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")


def test_wandb_offline_run_has_summary_masks_tables_and_resumes_the_same_run(
    shapes_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wandb_offline: None
) -> None:
    monkeypatch.chdir(tmp_path)
    args = run_args(shapes_root, WANDB)
    main(["fit", *args, "--trainer.logger.init_args.log_model=true"])
    folders = sorted((tmp_path / "runs" / "quickstart" / "wandb").glob("offline-run-*"))
    assert len(folders) == 1
    run = wandb_run(folders[0])
    assert run["group"] == "unet_resnet18"  # from the run config's name
    assert {"SemanticSegmentationTask", "unet", "resnet18", "ShapesDataModule"} <= set(run["tags"])
    assert run["config"]["config"]["data"]["init_args"]["image_size"] == 32  # the resolved config
    mious = [row["val_miou"] for row in run["history"] if "val_miou" in row]
    assert len(mious) == 2 and run["summary"]["val_miou"] == mious[-1]

    # the fixed validation images: every val image once (8 of 8), with their true masks
    samples = [row["val_samples"] for row in run["history"] if "val_samples" in row]
    assert len(samples) == 2 and samples[0]["count"] == 8 and (samples[0]["width"], samples[0]["height"]) == (32, 32)
    assert samples[0]["captions"][0].startswith("#0 IoU")
    files = folders[0] / "files"
    items = val_items(shapes_root)
    for i, masks in enumerate(samples[-1]["all_masks"]):
        truth = np.asarray(Image.open(files / masks["ground_truth"]["path"]))
        np.testing.assert_array_equal(truth, items[i]["mask"].numpy())
        predicted = np.asarray(Image.open(files / masks["predictions"]["path"]))
        assert predicted.shape == (32, 32) and set(np.unique(predicted)) <= {0, 1, 2, 3}
    image = np.asarray(Image.open(files / samples[-1]["filenames"][0]))
    np.testing.assert_array_equal(image, to_uint8_image(items[0]["image"]))

    # the per-class table holds the logged per-class IoUs
    table = json.loads((files / run["summary"]["val_per_class"]["path"]).read_text())
    assert table["columns"] == ["class", "IoU", "accuracy", "Dice", "Boundary IoU"]
    assert [row[0] for row in table["data"]] == list(CLASSES)
    for name, iou, _, _, biou in table["data"]:
        assert iou == pytest.approx(run["summary"][f"val_iou_{name}"], abs=1e-6)
        assert biou == pytest.approx(run["summary"][f"val_biou_{name}"], abs=1e-6)

    # checkpoints as artifacts, with their metric; the run folder holds config, checkpoints, confusion PNGs
    models = [a for a in run["artifacts"] if a.type == "model"]
    assert models and json.loads(models[-1].metadata)["ModelCheckpoint"]["monitor"] == "val_miou"
    assert "score" in json.loads(models[-1].metadata)
    own = tmp_path / "runs" / "quickstart" / "unet_resnet18" / run["id"]  # as CSV's <name>/version_N
    assert (own / "config.yaml").is_file() and (own / "checkpoints" / "last.ckpt").is_file()
    assert sorted(p.name for p in (own / "confusion_matrix").iterdir()) == ["val_epoch000.png", "val_epoch001.png"]

    # resuming continues the same W&B run
    main(["fit", *run_args(shapes_root, WANDB, epochs=3), "--ckpt_path", "last"])
    folders = sorted((tmp_path / "runs" / "quickstart" / "wandb").glob("offline-run-*"))
    assert len(folders) == 2
    resumed = wandb_run(folders[1])
    assert resumed["id"] == run["id"]
    assert [row["epoch"] for row in resumed["history"] if "val_miou" in row] == [2]


def test_tensorboard_gets_the_same_pictures(shapes_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    main(["fit", *run_args(shapes_root, TENSORBOARD, epochs=1)])
    main(["test", *run_args(shapes_root, TENSORBOARD), "--ckpt_path", "last"])
    versions = sorted((tmp_path / "runs" / "quickstart" / "unet_resnet18").iterdir())
    assert [v.name for v in versions] == ["version_0"]  # the test's results go beside the checkpoint
    versions.append(versions[0] / "test-last")

    fit = EventAccumulator(str(versions[0]), size_guidance={"images": 0, "tensors": 0})
    fit.Reload()
    tags = fit.Tags()["images"]
    assert {f"val_samples/{i}" for i in range(8)} <= set(tags) and "val_confusion_matrix" in tags
    items = val_items(shapes_root)
    for i in (0, 5):
        panel = np.asarray(Image.open(io.BytesIO(fit.Images(f"val_samples/{i}")[-1].encoded_image_string)))
        # enlarged 6x to 192 pixels, a legend below
        assert panel.shape[1] == 3 * 192 + 8 and panel.shape[0] > 192
        image, mask = enlarge(to_uint8_image(items[i]["image"]), items[i]["mask"].numpy(), 6)
        np.testing.assert_array_equal(panel[:192, :192], image)
        np.testing.assert_array_equal(panel[:192, 196:388], overlay(image, mask, outline=3))
        assert (panel[192:] != 255).any()  # the legend's swatches and names
    assert "val_per_class" in " ".join(fit.Tags()["tensors"])
    assert (versions[0] / "confusion_matrix" / "val_epoch000.png").is_file()

    test = EventAccumulator(str(versions[1]), size_guidance={"images": 0, "tensors": 0, "histograms": 0})
    test.Reload()
    worst = [t for t in test.Tags()["images"] if t.startswith("test_worst/")]
    assert len(worst) == 8  # k = 8 of the 8 test images
    assert (versions[1] / "confusion_matrix" / "test.png").is_file()
    # the distribution of per-image mIoU is the per-image CSV's
    rows = list(csv.DictReader((versions[1] / "per_image_test.csv").open()))
    histogram = test.Histograms("test_image_miou")[-1].histogram_value
    assert histogram.num == len(rows) == 8
    assert histogram.sum == pytest.approx(sum(float(r["miou"]) for r in rows), abs=1e-5)


def test_csv_logger_writes_the_confusion_matrix_and_warns_once_about_images(
    shapes_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recwarn: pytest.WarningsRecorder
) -> None:
    monkeypatch.chdir(tmp_path)
    main(["fit", *run_args(shapes_root), "--trainer.callbacks+=SegmentationDashboard"])
    run = tmp_path / "runs" / "quickstart" / "unet_resnet18" / "version_0"
    heatmaps = sorted((run / "confusion_matrix").iterdir())
    assert [p.name for p in heatmaps] == ["val_epoch000.png", "val_epoch001.png"]
    assert Image.open(heatmaps[0]).mode == "RGB" and min(Image.open(heatmaps[0]).size) > 4 * 28
    warnings = [w for w in recwarn if "cannot show images" in str(w.message)]
    assert len(warnings) == 1 and "configs/trainer/wandb.yaml" in str(warnings[0].message)


def test_missing_wandb_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", WANDB, "--config", QUICKSTART, "--trainer.max_epochs=1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install "lightseg[wandb]"' in err[0] and "WandbLogger" in err[0]
    assert not (tmp_path / "runs").exists()


def test_image_iou_averages_the_classes_present_in_truth_or_prediction() -> None:
    target = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 255]])
    prediction = torch.tensor([[0, 0, 1, 2], [0, 1, 1, 3]])
    # class 0: 3 / 4; class 1: 2 / 4; class 2: 0 / 1; the ignored pixel's prediction (3) does not count
    assert image_iou(prediction, target, 4, 255) == pytest.approx((3 / 4 + 2 / 4 + 0) / 3)
    assert image_iou(target.clamp(max=1), target.clamp(max=1), 4, 255) == 1.0
    assert np.isnan(image_iou(prediction, torch.full_like(target, 255), 4, 255))


def test_worst_images_are_the_lowest_iou_ones_across_batches() -> None:
    dashboard = SegmentationDashboard(worst_k=2)
    task = SimpleNamespace(context=lambda: TaskContext("semantic", 2, ("0", "1"), 255), stage_results=lambda s: None)
    dashboard.on_test_start(None, task)  # type: ignore[arg-type]
    target = torch.zeros(2, 4, 4, dtype=torch.long)
    target[:, :, 2:] = 1
    scores = {}
    for batch_idx, wrong_columns in enumerate([(0, 1), (2, 3), (1, 2)]):
        labels = target.clone()
        for image, columns in enumerate(wrong_columns):
            labels[image, :, :columns] = 1 - labels[image, :, :columns]  # the first `columns` columns wrong
            scores[(batch_idx, image)] = image_iou(labels[image], target[image], 2, 255)
        batch = {"image": torch.rand(2, 3, 4, 4), "mask": target, "size": [(4, 4), (4, 4)]}
        logits = F.one_hot(labels, 2).permute(0, 3, 1, 2).float()  # the step's scores; labels are their argmax
        outputs = SemanticEvalOutput(logits, sizes=batch["size"])
        dashboard.on_test_batch_end(None, task, outputs, batch, batch_idx)  # type: ignore[arg-type]
    kept = sorted(entry[2]["iou"] for entry in dashboard._worst)
    assert kept == pytest.approx(sorted(scores.values())[:2])
    assert kept[0] == pytest.approx((0 + 4 / 16) / 2)  # three of four columns wrong


def test_confusion_matrix_image_shades_row_shares_and_greys_absent_classes() -> None:
    confmat = torch.tensor([[10, 0, 0], [0, 5, 5], [0, 0, 0]])
    image = confusion_matrix_image(confmat, ["a", "bb", "ccc"], title="t")
    colours = {tuple(c) for c in image.reshape(-1, 3).tolist()}
    assert (8, 48, 107) in colours  # 100 %: the darkest blue
    assert (200, 200, 200) in colours  # class "ccc" is absent from the ground truth
    half = tuple(int(c) for c in np.array([247, 251, 255.0]) + 0.5 * (np.array([8, 48, 107.0]) - [247, 251, 255]))
    assert half in colours  # 50 %
    blank, ones = np.zeros((5, 6, 3), np.uint8), np.ones((5, 6), np.uint8)
    panel = sample_panel(blank, ones, np.zeros((5, 6), np.uint8), ["bg", "cat"])
    # 8x (the most a small picture is enlarged): 40 x 48 tiles, 4-pixel gaps, a legend of class 1 below
    assert panel.shape[1] == 3 * 48 + 8 and panel.shape[0] > 40
    assert panel[:40, 52:100].any() and not panel[:40, 104:].any()
    legend_colours = {tuple(c) for c in panel[40:].reshape(-1, 3).tolist()}
    assert tuple(int(c) for c in PALETTE[1]) in legend_colours


def test_instance_task_draws_truth_and_prediction_and_logs_ap_per_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit",
            "--config",
            TENSORBOARD,
            "--config",
            str(ROOT / "configs" / "quickstart_maskrcnn.yaml"),
            "--data.init_args.num_train=8",
            "--data.init_args.num_val=3",
            "--data.init_args.num_test=2",
            "--data.init_args.image_size=48",
            "--model.init_args.min_size=48",
            "--model.init_args.max_size=48",
            f"--data.init_args.root={tmp_path / 'data'}",
            "--trainer.max_epochs=1",
            "--trainer.enable_progress_bar=false",
        ]
    )
    run = next((tmp_path / "runs" / "quickstart_maskrcnn").glob("*/version_0"))
    events = EventAccumulator(str(run), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    assert {f"val_samples/{i}" for i in range(3)} <= set(events.Tags()["images"])
    panel = np.asarray(Image.open(io.BytesIO(events.Images("val_samples/0")[-1].encoded_image_string)))
    assert panel.shape == (192, 2 * 192 + 2, 3)  # enlarged 4x to be seen
    # the left half is the ground truth drawn over the image: the true masks change the picture
    from lightseg.datamodules import ShapesInstanceDataModule

    data = ShapesInstanceDataModule(root=str(tmp_path / "data"), num_train=8, num_val=3, num_test=2, image_size=48)
    data.setup("validate")
    item = data.val_dataset[0]
    plain, masks = enlarge(to_uint8_image(item["image"]), item["target"]["masks"].sum(0).numpy(), 4)
    changed = (panel[:, :192] != plain).any(-1)
    assert masks is not None and changed[masks > 0].mean() > 0.5
    table = events.Tensors("val_per_class/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "| class | bbox AP | segm AP |" in table and "triangle" in table and "background" not in table


def test_overlays_are_legible_outlined_and_captions_never_cover_each_other() -> None:
    from lightseg.visualize import annotated_overlay, display_scale
    from lightseg.visualize.detections import _draw_captions

    mask = np.zeros((6, 6), np.uint8)
    mask[1:5, 1:5] = 1
    painted = overlay(np.zeros((6, 6, 3), np.uint8), mask)
    np.testing.assert_array_equal(painted[1, 1], PALETTE[1])  # border: opaque
    np.testing.assert_array_equal(painted[2, 2], np.round(PALETTE[1] * 0.5))  # inside: blended
    assert (painted[0, 1:5] == HALO_COLOUR).all() and not painted[0, 0].any()  # a dark line outside; else untouched
    labels = np.zeros((6, 6), np.int64)
    labels[1:5, 1:5] = 257  # beyond the palette: wraps to its 1
    labels[2, 2] = 255  # ignore: washed with the palette's last colour, never outlined
    painted = overlay(np.full((6, 6, 3), 101, np.uint8), labels, alpha=0.3)
    np.testing.assert_array_equal(painted[1, 1], PALETTE[1])
    for (y, x), colour in (((2, 2), PALETTE[255]), ((3, 3), PALETTE[1])):
        np.testing.assert_array_equal(painted[y, x], np.round(0.7 * 101 + 0.3 * colour.astype(np.float64)))
    assert (painted[0, 0] == 101).all()
    # a 37 x 53 image is enlarged 7x (shorter side >= 256), a legend below
    assert display_scale(37, 53) == 7 and display_scale(600, 800) == 1
    picture = annotated_overlay(np.zeros((37, 53, 3), np.uint8), np.ones((37, 53), np.uint8), ["bg", "cat"])
    assert picture.shape[1] == 53 * 7 and picture.shape[0] > 37 * 7
    # overlapping boxes: the lower-scoring caption moves below the other, inside the picture
    canvas = Image.new("RGB", (100, 60))
    placed = _draw_captions(canvas, [[10, 20, 50, 50], [12, 22, 60, 55], [80, 0, 99, 10]],
                            ["cat 0.9", "dog 0.8", "cow 0.7"], [(255, 0, 0)] * 3)  # fmt: skip
    for a in range(3):
        assert placed[a][0] >= 0 and placed[a][2] <= 100 and placed[a][1] >= 0 and placed[a][3] <= 60
        for b in range(a):
            (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = placed[a], placed[b]
            assert ax2 <= bx1 or bx2 <= ax1 or ay2 <= by1 or by2 <= ay1, (placed[a], placed[b])


@pytest.mark.parametrize("outline", [0, 1, 2])
def test_overlay_paints_every_pixel_as_its_definition_says(outline: int) -> None:
    """Speckled masks (as an early checkpoint predicts them), ignore and wrapped labels: each pixel by the rule."""
    rng = np.random.default_rng(outline)
    image = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    labels = rng.choice([0, 0, 1, 2, 258, 255], size=(13, 17)).astype(np.int64)
    labels[4:9, 5:12] = 2  # one block, so that rings lie inside a region too
    alpha = 0.3
    painted = overlay(image, labels, alpha=alpha, outline=outline)

    def label(y: int, x: int) -> int:
        return int(labels[y, x]) if 0 <= y < 13 and 0 <= x < 17 else -1

    def ring(y: int, x: int) -> int:  # 1 on a region's border (a 4-neighbour in the picture differs), 2 inside...
        depth = 0
        while depth < 20:
            reach = depth + 1
            near = [(y + dy, x + dx) for dy in range(-reach, reach + 1) for dx in range(-reach, reach + 1)
                    if abs(dy) + abs(dx) == reach]  # fmt: skip
            if any(label(a, b) not in (-1, labels[y, x]) for a, b in near):
                return reach
            depth += 1
        return 99

    for y in range(13):
        for x in range(17):
            value, pixel = int(labels[y, x]), image[y, x].astype(np.float32)
            colour = PALETTE[value % 256]
            if value == 0:
                touches = any(label(y + dy, x + dx) not in (-1, 0, 255)
                              for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)))  # fmt: skip
                expected = np.array(HALO_COLOUR) if outline and touches else image[y, x]
            elif value != 255 and ring(y, x) <= outline:
                expected = colour
            else:
                expected = np.round((1 - alpha) * pixel + alpha * colour.astype(np.float32)).clip(0, 255)
            np.testing.assert_array_equal(painted[y, x], expected, err_msg=f"pixel ({y}, {x}), label {value}")


@pytest.mark.parametrize("deflate", ["isal", "zlib"])
def test_pictures_are_standard_png_files_that_readers_open_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, deflate: str
) -> None:
    import importlib

    from lightseg.visualize import png
    from lightseg.visualize.png import encode_png, write_png

    monkeypatch.setattr(png, "_deflate", importlib.import_module("isal.isal_zlib" if deflate == "isal" else "zlib"))

    rng = np.random.default_rng(0)
    for shape, mode in (((1, 1), "L"), ((5, 7), "L"), ((1, 9, 3), "RGB"), ((31, 17, 3), "RGB"), ((6, 4, 4), "RGBA")):
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
        write_png(tmp_path / "p.png", pixels)
        with Image.open(tmp_path / "p.png") as read:
            assert read.mode == mode and read.format == "PNG"
            np.testing.assert_array_equal(np.asarray(read), pixels)
    flat = np.full((256, 256, 3), 128, np.uint8)
    assert len(encode_png(flat)) < flat.size / 100  # compressed
    for bad, words in ((flat.astype(np.float32), "uint8"), (np.zeros((4, 4, 2), np.uint8), "shape (4, 4, 2)")):
        with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
            encode_png(bad)


def test_panoptic_task_draws_true_and_predicted_maps_and_logs_pq_per_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", TENSORBOARD, "--config", str(ROOT / "configs" / "quickstart_panoptic.yaml"),
          "--data.init_args.num_train=4", "--data.init_args.num_val=3", "--data.init_args.num_test=2",
          "--data.init_args.image_size=48", "--model.init_args.min_size=48", "--model.init_args.max_size=48",
          f"--data.init_args.root={tmp_path / 'data'}", "--trainer.max_epochs=1", "--trainer.limit_train_batches=1",
          "--trainer.enable_progress_bar=false"])  # fmt: skip
    run = next((tmp_path / "runs" / "quickstart_panoptic").glob("*/version_0"))
    events = EventAccumulator(str(run), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    assert {f"val_samples/{i}" for i in range(3)} <= set(events.Tags()["images"])
    panel = np.asarray(Image.open(io.BytesIO(events.Images("val_samples/0")[-1].encoded_image_string)))
    assert panel.shape[1] == 2 * 192 + 2 and panel.shape[0] > 192  # enlarged 4x, each half with its legend
    # the left half is the ground truth: its segments painted over the image
    from lightseg.datamodules import ShapesPanopticDataModule

    data = ShapesPanopticDataModule(root=str(tmp_path / "data"), num_train=4, num_val=3, num_test=2, image_size=48)
    data.setup("validate")
    item = data.val_dataset[0]
    plain, _ = enlarge(to_uint8_image(item["image"]), None, 4)
    assert (panel[:192, :192] != plain).any(-1).mean() > 0.5
    table = events.Tensors("val_per_class/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "| class | kind | PQ | SQ | RQ | IoU |" in table and "| triangle | thing |" in table
    assert "| checks | stuff |" in table


def test_pictures_are_painted_on_a_thread_below_the_model_and_written_as_drawn(tmp_path: Path) -> None:
    import os
    import threading

    from lightseg.callbacks.staged_folder import PAINTER_NICENESS, StagedFolder

    seen: list[tuple[int, int]] = []

    def render() -> np.ndarray:
        seen.append((threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
        return np.full((3, 5, 3), 7, np.uint8)

    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    folder = StagedFolder(tmp_path / "out")
    folder.open()
    folder.save_picture(render, Path("overlays/a.png"))
    folder.finish_pictures()
    folder.publish(merge=False)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "overlays" / "a.png")), render())
    (painter, niceness), _ = seen
    assert painter != threading.get_native_id()
    if sys.platform.startswith("linux"):  # the nice value is a thread's own there
        assert niceness == max(before, PAINTER_NICENESS)
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before  # the caller keeps its own
