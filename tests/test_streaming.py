"""``lightseg data pack`` and the streaming modules: a packed set is its source, sample for sample, run for run."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from lightseg.cli import main
from lightseg.data_check import check_data
from lightseg.datamodules import (
    CityscapesDataModule,
    ShapesInstanceDataModule,
    ShapesKeypointDataModule,
    ShapesPanopticDataModule,
    StreamingDetectionDataModule,
    StreamingSegmentationDataModule,
)
from lightseg.datamodules.packing import pack_datamodule
from lightseg.datamodules.sampling import EvaluationShardSampler, SeededSamples, TrainingOrder
from lightseg.errors import LightsegError

from conftest import ROOT, TINY_SHAPES
from layouts import write_cityscapes, write_folder

pytest.importorskip("litdata", reason="the stream extra (litdata) is not installed")

QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def _same(a: Any, b: Any, where: str) -> None:
    """Items (dicts of tensors, lists, numbers, strings) equal exactly."""
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            _same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b, where


def _metrics(run: Path) -> list[dict[str, str]]:
    return [row for row in csv.DictReader((run / "metrics.csv").open()) if row.get("val_miou")]


def test_a_packed_semantic_set_trains_evaluates_and_resumes_exactly_as_its_source(
    shapes_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import signal

    monkeypatch.chdir(tmp_path)
    source = ["--config", QUICKSTART, *TINY_SHAPES, f"--data.init_args.root={shapes_root}", *QUIET]
    main(["data", "pack", *source, "--trainer.max_epochs=2", "--pack.output", "packed"])
    out = capsys.readouterr().out
    assert "  train        32 samples  train/" in out and "  test          8 samples  test/" in out
    assert sorted(p.name for p in (tmp_path / "packed").iterdir()) == ["meta", "test", "train", "val"]
    # the printed data section reads the pack with the source's batch size and augmentation
    section = yaml.safe_load(out[out.index("data:\n") :])
    augmentation = {"hflip": True, "crop_size": None, "scale_range": None, "vflip": True, "photometric": False}
    assert section["data"]["init_args"] == {
        "source": "packed",
        "augmentation": augmentation,
        "loader": {"batch_size": 8},
    }
    (tmp_path / "stream.yaml").write_text(yaml.safe_dump(section))
    packed = ["--config", QUICKSTART, "--config", "stream.yaml", *QUIET]
    # masks that hold class indices are their files, bytes for bytes (no re-compression)
    first_mask = next(shapes_root.rglob("shapes-v1-32px-0-32-8-8/SegmentationClass/train_00000.png")).read_bytes()
    assert first_mask in (tmp_path / "packed" / "train" / "chunk-0-0.bin").read_bytes()

    two_epochs = ["--trainer.max_epochs=2"]
    main(["fit", *source, *two_epochs, "--trainer.logger.init_args.name=source"])
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit):  # stopped in the middle of the first epoch, then resumed
        main(["fit", *packed, *two_epochs, "--trainer.logger.init_args.name=packed",
              "--trainer.callbacks+=user_task.InterruptAtStep", "--trainer.callbacks.step=3"])  # fmt: skip
    signal.signal(signal.SIGINT, handler)
    main(["fit", *packed, *two_epochs, "--trainer.logger.init_args.name=packed", "--ckpt_path", "last"])

    runs = tmp_path / "runs" / "quickstart"
    whole = torch.load(runs / "source" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = torch.load(runs / "packed" / "version_1" / "checkpoints" / "last.ckpt", weights_only=True)
    assert whole["global_step"] == resumed["global_step"] == 8
    for key, value in whole["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    source_scores = _metrics(runs / "source" / "version_0")
    packed_scores = _metrics(runs / "packed" / "version_1")
    assert [r["val_miou"] for r in source_scores][-1] == [r["val_miou"] for r in packed_scores][-1]

    last = str(runs / "source" / "version_0" / "checkpoints" / "last.ckpt")
    for name, args in (("source", source), ("packed", packed)):
        main(["test", *args, "--ckpt_path", last, "--trainer.logger.init_args.name", f"test-{name}"])
    scores = [
        next(r for r in csv.DictReader(next((runs / f"test-{n}").rglob("metrics.csv")).open()) if r.get("test_miou"))
        for n in ("source", "packed")
    ]
    assert scores[0] == scores[1] and float(scores[0]["test_miou"]) > 0  # every test metric, per class too


def test_packed_cityscapes_keeps_train_ids_instances_and_the_benchmark_protocol(tmp_path: Path) -> None:
    frames = {"train": ["aachen_000000_000019", "aachen_000001_000019"], "val": ["lindau_000001_000019"]}
    root = write_cityscapes(tmp_path / "cs", frames)
    write_cityscapes(root, {"val": frames["val"]}, "instanceIds")
    source = CityscapesDataModule(str(root), test_split="val", num_workers=0)
    meta = pack_datamodule(source, str(tmp_path / "packed"))
    assert meta["stages"]["test"]["folder"] == "val"  # val and test share one packed split
    packed = StreamingSegmentationDataModule(str(tmp_path / "packed"), num_workers=0)
    assert packed.describe() == source.describe()  # classes, colours, label ids, iIoU sizes, categories
    source.setup("fit")
    packed.setup("fit")
    for ours, theirs in zip(packed.class_pixel_statistics(), source.class_pixel_statistics(), strict=True):
        assert np.array_equal(ours, theirs)  # median-frequency class weights read the packed labels
    source.setup("test")
    packed.setup("test")
    for split in ("val_dataset", "test_dataset"):
        a, b = getattr(source, split), getattr(packed, split)
        assert len(a) == len(b) == 1
        _same(a[0], b[0], split)
        assert b[0]["instances"].max() == 26001  # the car's instance id, for iIoU
    # a label-id mask is stored as a PNG of the train ids it reads as
    record = packed.train_dataset.records[0]  # type: ignore[union-attr]
    with Image.open(io.BytesIO(record["mask"])) as img:
        assert set(np.unique(np.asarray(img)).tolist()) == {0, 13, 255}


@pytest.mark.parametrize("module", [ShapesInstanceDataModule, ShapesKeypointDataModule])
def test_packed_instances_and_keypoints_read_as_their_source(module: type, tmp_path: Path) -> None:
    source = module(str(tmp_path / "cache"), num_train=6, num_val=3, num_test=2, image_size=64)
    pack_datamodule(source, str(tmp_path / "packed"), workers=2)
    packed = StreamingDetectionDataModule(str(tmp_path / "packed"), batch_size=source.batch_size, num_workers=0)
    assert packed.describe() == source.describe()
    assert packed.keypoint_flip_pairs() == (source.keypoint_flip_pairs() if module is ShapesKeypointDataModule else [])
    for stage in ("fit", "test"):
        source.setup(stage)
        packed.setup(stage)
    for split in ("val", "test"):
        assert packed.ground_truth(split).data == source.ground_truth(split).data  # what COCO evaluation reads
        a, b = getattr(source, f"{split}_dataset"), getattr(packed, f"{split}_dataset")
        assert len(a) == len(b)
        for k in range(len(a)):
            _same(a[k], b[k], f"{split}[{k}]")
    a, b = SeededSamples(source.train_dataset), SeededSamples(packed.train_dataset)
    assert len(a) == len(b) == 6
    for k in range(6):  # the training flips drawn from the same seeds: the same targets
        _same(a[(k, 7 + k)], b[(k, 7 + k)], f"train[{k}]")


def test_two_processes_share_a_packed_epoch_without_overlap(shapes_root: Path, tmp_path: Path) -> None:
    from lightseg.datamodules import ShapesDataModule

    source = ShapesDataModule(str(shapes_root), num_train=32, num_val=8, num_test=8, image_size=32)
    pack_datamodule(source, str(tmp_path / "packed"))
    packed = StreamingSegmentationDataModule(str(tmp_path / "packed"), num_workers=0)
    packed.setup("fit")
    train, val = packed.train_dataset, packed.val_dataset
    assert train is not None and val is not None
    for epoch in (0, 1):
        shares = []
        for rank in (0, 1):
            order = TrainingOrder(train, seed=5, batch_size=8, num_replicas=2, rank=rank)
            order.set_epoch(epoch)
            shares.append([index for index, _ in order])
        assert len(shares[0]) == len(shares[1]) == 16
        assert sorted(shares[0] + shares[1]) == list(range(32))  # every sample once in the epoch
    ids = [[val[i]["id"] for i in EvaluationShardSampler(val, num_replicas=3, rank=r)] for r in range(3)]
    assert sorted(i for share in ids for i in share) == sorted(val[i]["id"] for i in range(8))
    packed.num_workers = 2  # read in this process above; each forked worker opens a reader of its own
    assert [i for batch in packed.val_dataloader() for i in batch["id"]] == [val[i]["id"] for i in range(8)]


def test_a_broken_sample_stops_the_pack_with_its_name_and_leaves_nothing(tmp_path: Path) -> None:
    from lightseg.datamodules import SegmentationFolderDataModule

    root = write_folder(tmp_path / "set", [f"img{k}" for k in range(8)], "index")
    (root / "classes.txt").write_text("background\nforeground\ncircle\nsquare\ntriangle\n")
    mask = next(root.rglob("img5.png"))
    mask.write_bytes(mask.read_bytes()[:60])
    data = SegmentationFolderDataModule(root=str(root), num_workers=0, check_samples="none")
    with pytest.raises(LightsegError) as info:
        pack_datamodule(data, str(tmp_path / "packed"), workers=2)
    assert f"1 of the 8 samples of the train split cannot be packed (first: cannot read mask {mask}" in str(info.value)
    assert not (tmp_path / "packed").exists()


def test_pack_and_stream_mistakes_are_one_line(shapes_root: Path, tmp_path: Path) -> None:
    from lightseg.datamodules import ShapesDataModule

    source = ShapesDataModule(str(shapes_root), num_train=32, num_val=8, num_test=8, image_size=32)
    pack_datamodule(source, str(tmp_path / "packed"))
    with pytest.raises(LightsegError, match="exists and is not empty; give a new folder"):
        pack_datamodule(source, str(tmp_path / "packed"))
    panoptic = ShapesPanopticDataModule(str(tmp_path / "pan"), num_train=2, num_val=1, num_test=1)
    with pytest.raises(LightsegError, match="writes semantic .* and COCO-style instance or keypoint"):
        pack_datamodule(panoptic, str(tmp_path / "pan-pack"))
    source.bands = (4, 3, 2, 1)  # multispectral: a pack would stream them as RGB
    with pytest.raises(LightsegError, match=r"writes RGB images; ShapesDataModule reads bands \[4, 3, 2, 1\]"):
        pack_datamodule(source, str(tmp_path / "bands-pack"))
    assert not (tmp_path / "bands-pack").exists()
    source.bands = None
    with pytest.raises(LightsegError, match="is a pack of semantic data, not instances: read it with Streaming"):
        StreamingDetectionDataModule(str(tmp_path / "packed")).describe()
    with pytest.raises(LightsegError, match="is not a folder; write a pack there"):
        StreamingSegmentationDataModule(str(tmp_path / "nowhere")).describe()
    (tmp_path / "half").mkdir()
    with pytest.raises(LightsegError, match="is not a complete lightseg pack"):
        StreamingSegmentationDataModule(str(tmp_path / "half")).describe()
    with pytest.raises(LightsegError, match="use 255 as the ignore label, not 0: set .*ignore_index 255"):
        StreamingSegmentationDataModule(str(tmp_path / "packed"), ignore_index=0).setup("fit")
    with pytest.raises(LightsegError, match="reads a pack .*: check the data module it was packed from"):
        check_data(StreamingSegmentationDataModule(str(tmp_path / "packed")))
