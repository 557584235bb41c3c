"""Metrics must not change with the number of processes or how they are launched (DDP over gloo on CPU, via the CLI)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import rasterio
import torch
from distributed_driver import run
from PIL import Image
from rasterio.transform import from_origin
from test_evaluation_protocols import write_frames

from lightseg.cli import main
from lightseg.datamodules import CityscapesDataModule, ShapesDataModule
from lightseg.datamodules.packing import pack_datamodule

from conftest import ROOT
from layouts import write_voc

QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> str:
    """``lightseg ARGS`` with one or more devices: its output.

    One device runs in this process (it saves a new process's imports), with one thread as
    each process of a DDP run has (OMP_NUM_THREADS=1), so that both compute the same floats;
    DDP runs as the CLI in a subprocess (in-process it would relaunch pytest as rank 1).
    """
    if "--trainer.devices=1" in args:
        from lightseg.cli import main

        previous = Path.cwd()
        os.chdir(cwd)
        try:
            with _one_thread():
                main(args[1:])
        finally:
            os.chdir(previous)
        return ""
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _launch(commands: list[list[str]], envs: list[dict[str, str]], cwd: Path) -> None:
    """Start every process of a job at once and wait for all; a failure shows each one's output."""
    logs = [cwd / f"process{rank}.log" for rank in range(len(commands))]
    processes = [
        subprocess.Popen(command, cwd=cwd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
        for command, env, log in zip(commands, envs, logs, strict=True)
    ]
    try:
        codes = [process.wait(timeout=400) for process in processes]
    finally:
        for process in processes:
            process.kill()
    outputs = "\n".join(f"--- process {rank}:\n{log.read_text()[-3000:]}" for rank, log in enumerate(logs))
    assert codes == [0] * len(codes), outputs


def _job(runs: dict[str, list[str]], cwd: Path, launcher: str) -> dict[str, Any]:
    """Run ``runs`` (name -> lightseg arguments) as one multi-process job; rank 0's records.

    ``torchrun``: two nodes of one process each on this machine, as two torchrun launches
    (``--node_rank 0|1``) meet at 127.0.0.1. ``slurm``: three processes started as ``srun``
    would start them, with the variables by which Lightning picks its SLURM environment.
    """
    (cwd / "runs.json").write_text(json.dumps(runs))
    driver = [str(ROOT / "tests" / "distributed_driver.py"), "runs.json", "results.json"]
    base = {**os.environ, "OMP_NUM_THREADS": "1", "LIGHTSEG_CACHE": str(cwd / "cache")}
    base = {k: v for k, v in base.items() if not k.startswith(("SLURM_", "MASTER_", "LOCAL_RANK", "WORLD_SIZE"))}
    port = str(_free_port())
    if launcher == "torchrun":
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1"]
        address = ["--master_addr=127.0.0.1", f"--master_port={port}"]
        commands = [[*torchrun, f"--node_rank={node}", *address, *driver] for node in (0, 1)]
        envs = [base, base]
    else:
        tasks = SLURM_TASKS
        slurm = {"SLURM_NTASKS": str(tasks), "SLURM_NTASKS_PER_NODE": str(tasks), "SLURM_NNODES": "1",
                 "SLURM_NODEID": "0", "SLURM_JOB_NAME": "lightseg-test", "SLURM_JOB_ID": "4242",
                 "SLURM_NODELIST": "127.0.0.1", "MASTER_PORT": port}  # fmt: skip
        stub = cwd / "bin" / "scontrol"  # records the requeue request
        stub.parent.mkdir()
        stub.write_text(f'#!/bin/sh\necho "$@" >> {cwd / "scontrol.log"}\n')
        stub.chmod(0o755)
        slurm["PATH"] = f"{stub.parent}{os.pathsep}{base['PATH']}"
        commands = [[sys.executable, *driver]] * tasks
        envs = [{**base, **slurm, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)} for rank in range(tasks)]
    _launch(commands, envs, cwd)
    return cast(dict[str, Any], json.loads((cwd / "results.json").read_text()))


#: processes of the simulated SLURM job (the torchrun job has two nodes of one process)
SLURM_TASKS = 3
#: evaluation image counts: fewer images than processes (a process gets none), and uneven shares
IMAGE_COUNTS = (1, 2, 5)
CITYSCAPES_SIZES = [(48, 96), (40, 80), (48, 96), (32, 64), (40, 80)]


@dataclass
class Reference:
    """What every job runs, on data made once, and what one process scores on it."""

    folder: Path
    runs: dict[str, list[str]]
    scores: dict[str, dict[str, Any]]


def _cityscapes_test(data: list[str]) -> list[str]:
    # the user's subclass scores the truth with mistakes, so every score is neither 0 nor 1
    return ["test", "--seed_everything=0", "--model=user_task.NoisyTruthSegmentation",
            "--model.init_args.arch=unet", "--model.init_args.backbone=resnet18",
            "--model.init_args.weights_backbone=null", "--model.init_args.num_classes=19",
            *data, "--data.init_args.batch_size=2", "--data.init_args.crop_size=null",
            "--data.init_args.num_workers=0", "--trainer.logger=false",
            "--trainer.enable_progress_bar=false"]  # fmt: skip


def _instance_data(root: Path, images: int) -> list[str]:
    return ["--data.init_args.num_train=6", f"--data.init_args.num_val={images}", "--data.init_args.num_test=1",
            "--data.init_args.image_size=48", f"--data.init_args.root={root}",
            "--model.init_args.min_size=48", "--model.init_args.max_size=48"]  # fmt: skip


def _semantic_fit_data(root: Path) -> list[str]:
    # one validation image: inside fit, every process but the first validates none
    return ["--data.init_args.num_train=4", "--data.init_args.num_val=1",
            f"--data.init_args.num_test={SLURM_TASKS - 1}", "--data.init_args.image_size=32",
            "--data.init_args.batch_size=2", f"--data.init_args.root={root}"]  # fmt: skip


def _reference(folder: Path) -> Reference:
    """Cityscapes frames and shapes data of 1, 2 and 5 evaluation images, a briefly trained Mask R-CNN,
    the commands a job runs on them and their scores in this process."""
    folder.mkdir()
    instance = str(ROOT / "configs" / "quickstart_maskrcnn.yaml")
    runs: dict[str, list[str]] = {}
    with _in(folder), _one_thread():
        main(["fit", "--config", instance, *_instance_data(folder / "data", 2), "--trainer.max_epochs=2",
              "--trainer.enable_progress_bar=false", "--trainer.logger.init_args.name=trained"])  # fmt: skip
        detector = next((folder / "runs").rglob("last.ckpt"))
        for count in IMAGE_COUNTS:
            root = folder / f"cityscapes{count}"
            write_frames(root, CITYSCAPES_SIZES[:count])
            data = ["--data=CityscapesDataModule", f"--data.init_args.root={root}"]
            runs[f"semantic{count}"] = _cityscapes_test(data)
            runs[f"instance{count}"] = ["validate", "--config", instance, *_instance_data(folder / "data", count),
                                        f"--ckpt_path={detector}", "--trainer.enable_progress_bar=false",
                                        "--model.init_args.detector_kwargs.box_score_thresh=0.0",
                                        f"--trainer.logger.init_args.name=instance{count}"]  # fmt: skip
        # the 5 frames packed by lightseg data pack, streamed from the pack; and the shapes set a job trains on
        pack_datamodule(CityscapesDataModule(str(root), num_workers=0), str(folder / "packed"))
        shapes = ShapesDataModule(str(folder / "data"), num_train=4, num_val=1, num_test=SLURM_TASKS - 1,
                                  image_size=32, batch_size=2)  # fmt: skip
        pack_datamodule(shapes, str(folder / "packed-shapes"))
        runs["packed5"] = _cityscapes_test(["--data=StreamingSegmentationDataModule",
                                            f"--data.init_args.source={folder / 'packed'}"])  # fmt: skip
        if importlib.util.find_spec("pydensecrf"):  # the crf extra (CI has it)
            # 7 validation images of 5 sizes, the 7th beyond max_images: the CRF search's table
            frames = {"train": ["2007_a"], "val": [f"2008_{k}" for k in range(7)]}
            runs["crf"] = _crf_search_args(write_voc(folder / "voc", frames, mixed_sizes=True), "crf.yaml")
        one = ["--trainer.accelerator=cpu", "--trainer.devices=1"]
        scores = {name: run([*args, *one]) for name, args in runs.items()}
        assert scores["packed5"] == scores["semantic5"]  # the pack is its source, score for score
        # detections of 5 images into a relative folder (of each job's own folder), to be joined into one file
        images = next(d for d in (folder / "data").glob("*/images/val") if len(list(d.iterdir())) == 5)
        runs["detections"] = ["predict", "--config", instance, *_instance_data(folder / "data", 5),
                              f"--ckpt_path={detector}", "--trainer.enable_progress_bar=false",
                              "--model.init_args.detector_kwargs.box_score_thresh=0.0", f"--data.predict_dir={images}",
                              "--prediction.output_dir=detections", "--prediction.overlays=false"]  # fmt: skip
        scores["detections"] = run([*runs["detections"], *one])
    return Reference(folder, runs, scores)


@contextlib.contextmanager
def _in(folder: Path) -> Iterator[None]:
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def _assert_same(theirs: dict[str, Any], ours: dict[str, Any], name: str) -> None:
    assert set(theirs["metrics"]) == set(ours["metrics"]), name
    for key, value in ours["metrics"].items():
        if key.endswith("_loss"):  # a float mean summed in another order
            assert theirs["metrics"][key] == pytest.approx(value, rel=1e-6), (name, key)
        else:  # integer sums (confusion matrices, Boundary IoU counts) and COCOeval on the same detections
            assert theirs["metrics"][key] == value, (name, key, theirs["metrics"][key], value)
    assert theirs["per_image"] == ours["per_image"], name


def test_two_nodes_by_torchrun_and_a_slurm_job_score_as_one_process(tmp_path: Path) -> None:
    """Two nodes by torchrun, and a SLURM job of three processes, score every image once: equal to one process.

    Evaluations of 1, 2 and 5 images (a process with none, uneven shares) for semantic
    segmentation (confusion-matrix scores and the per-class table, Boundary IoU, Cityscapes'
    iIoU, the per-image CSV; the 5 images from folders and packed by ``lightseg data pack``) and
    instance segmentation (COCO AP); and a ``fit`` whose one
    validation image leaves the other processes none, then ``test`` of its checkpoint.
    """
    reference = _reference(tmp_path / "reference")
    for count in IMAGE_COUNTS:  # scores that can tell a mistake: neither perfect nor nothing
        semantic, instance = reference.scores[f"semantic{count}"], reference.scores[f"instance{count}"]["metrics"]
        assert 0.3 < semantic["metrics"]["test_miou"] < 0.99 and 0 < semantic["metrics"]["test_iiou"] < 0.99
        assert semantic["metrics"]["test_biou"] < semantic["metrics"]["test_miou"]
        assert semantic["per_image"].count("\n") == count + 1 and instance["val_bbox_map_50"] > 0
    for launcher in ("torchrun", "slurm"):
        _job_scores_as_one_process(launcher, reference, tmp_path / launcher)


def _job_scores_as_one_process(launcher: str, reference: Reference, folder: Path) -> None:
    devices = ["--trainer.accelerator=cpu", "--trainer.strategy=ddp"]
    devices += ["--trainer.num_nodes=2", "--trainer.devices=1"] if launcher == "torchrun" else [
        "--trainer.num_nodes=1", f"--trainer.devices={SLURM_TASKS}"]  # fmt: skip
    quickstart = ["--config", QUICKSTART, *_semantic_fit_data(reference.folder / "data")]
    runs = {name: [*args, *devices] for name, args in reference.runs.items()}
    runs["fit"] = ["fit", *quickstart, "--trainer.max_epochs=1", "--trainer.logger.init_args.name=ddp",
                   "--trainer.enable_progress_bar=false", *devices]  # fmt: skip
    runs["test"] = ["test", *quickstart, "--ckpt_path=last", "--trainer.logger.init_args.name=ddp",
                    "--trainer.enable_progress_bar=false", *devices]  # fmt: skip
    # one image to predict: the other processes get none
    images = folder / "images"
    images.mkdir(parents=True)
    shutil.copy(next((reference.folder / "cityscapes1" / "leftImg8bit").rglob("*.png")), images / "frame.png")
    # and a GeoTIFF predicted in tiles: the processes share its rows and write one file
    scene = np.random.default_rng(5).integers(0, 256, (3, 260, 300), dtype=np.uint8)
    with rasterio.open(images / "scene.tif", "w", driver="GTiff", height=260, width=300, count=3, dtype="uint8",
                       crs="EPSG:32633", transform=from_origin(500000, 4600000, 0.5, 0.5)) as raster:  # fmt: skip
        raster.write(scene)
    predict = ["predict", *quickstart, f"--data.predict_dir={images}", "--trainer.enable_progress_bar=false",
               "--data.init_args.predict_tile_above=200", "--model.init_args.inference.window_size=64",
               "--model.init_args.inference.window_stride=40"]  # fmt: skip
    runs["predict"] = [*predict, "--ckpt_path=last", f"--prediction.output_dir={folder / 'job'}", *devices]
    if launcher == "torchrun":  # the same training from the packed set, in chunks streamed by each process
        runs["fit_packed"] = ["fit", "--config", QUICKSTART, "--data=StreamingSegmentationDataModule",
                              f"--data.init_args.source={reference.folder / 'packed-shapes'}",
                              "--data.init_args.batch_size=2", "--data.init_args.vflip=true",
                              "--data.init_args.num_workers=0", "--trainer.max_epochs=1",
                              "--trainer.logger.init_args.name=packed", "--trainer.enable_progress_bar=false",
                              *devices]  # fmt: skip
    if launcher == "slurm":  # last: the requeue signal reaches one process only, and every process stops
        runs["requeue"] = ["fit", *quickstart, "--trainer.max_epochs=3", "--trainer.logger.init_args.name=requeue",
                           "--trainer.enable_progress_bar=false", "--trainer.callbacks+=user_task.SignalAtStep",
                           "--trainer.callbacks.step=1", "--trainer.callbacks.rank=1", *devices]  # fmt: skip
    with _in(folder):
        results = _job(runs, folder, launcher)
    if launcher == "slurm":
        assert results.pop("requeue") == {"exit": 0, "rank": 0}
        assert (folder / "scontrol.log").read_text() == "requeue 4242\n"  # once, by process 0
        saved = next((folder / "runs" / "quickstart" / "requeue").rglob("last-requeued.ckpt"))
        assert torch.load(saved, weights_only=True, map_location="cpu")["global_step"] == 2
    assert {r["world_size"] for r in results.values()} == {2 if launcher == "torchrun" else SLURM_TASKS}
    for name in reference.runs:
        _assert_same(results[name], reference.scores[name], name)
    if "crf" in reference.scores:  # the CRF search's table and choice
        crf = reference.scores["crf"]["crf"]
        assert len(crf) == 4 and len({score for score, _ in crf}) > 1  # settings that score differently
        assert results["crf"]["crf"] == crf
        assert (folder / "crf.yaml").read_text() == (reference.folder / "crf.yaml").read_text()
    # the processes' detections joined into one results.json, as one process writes it
    assert sorted(p.name for p in (folder / "detections").iterdir()) == ["results.json"]
    detections = json.loads((folder / "detections" / "results.json").read_text())
    assert len({d["image_id"] for d in detections}) >= 4  # images of every process
    assert detections == json.loads((reference.folder / "detections" / "results.json").read_text())
    # fit: the validation inside it equals validating its checkpoint in one process
    assert results["fit"]["last"]
    last = folder / results["fit"]["last"]  # relative to the job's folder, or absolute
    assert last.is_file()
    if launcher == "torchrun":  # trained from the pack, the same weights and scores as from the folders
        packed = torch.load(folder / results["fit_packed"]["last"], weights_only=True, map_location="cpu")
        weights = torch.load(last, weights_only=True, map_location="cpu")["state_dict"]
        assert packed["global_step"] == 1 and weights.keys() == packed["state_dict"].keys()
        for key, value in weights.items():
            assert torch.equal(value, packed["state_dict"][key]), key
        assert results["fit_packed"]["metrics"] == results["fit"]["metrics"]
    one = ["--trainer.logger.init_args.name=one", "--trainer.enable_progress_bar=false", "--trainer.accelerator=cpu",
           "--trainer.devices=1", f"--ckpt_path={last}"]  # fmt: skip
    with _in(folder), _one_thread():
        alone, tested = run(["validate", *quickstart, *one]), run(["test", *quickstart, *one])
        run([*predict, *one, f"--prediction.output_dir={folder / 'one'}"])
    written = sorted(p.relative_to(folder / "one") for p in (folder / "one").rglob("*") if p.is_file())
    assert [str(p) for p in written] == ["masks/frame.png", "masks/scene.tif", "overlays/frame.png",
                                         "overlays/scene.png"]  # fmt: skip
    for path in written:
        if path.suffix == ".tif":  # the same file, byte for byte
            assert (folder / "job" / path).read_bytes() == (folder / "one" / path).read_bytes(), path
            continue
        job, one_process = (np.asarray(Image.open(folder / kind / path)) for kind in ("job", "one"))
        assert np.array_equal(job, one_process), path
    with rasterio.open(folder / "job" / "masks" / "scene.tif") as labels:
        assert len(np.unique(labels.read(1))) > 1 and labels.crs == rasterio.crs.CRS.from_epsg(32633)
    assert sorted(p.name for p in folder.iterdir() if ".partial-" in p.name or ".resume" in p.name) == []
    fitted = {"metrics": {k: v for k, v in results["fit"]["metrics"].items() if k.startswith("val_")}}
    fitted["per_image"] = None
    _assert_same(fitted, alone, "fit")
    assert "val_miou" in alone["metrics"]
    _assert_same(results["test"], tested, "test")
    assert tested["per_image"] and tested["per_image"].count("\n") == SLURM_TASKS


def _crf_search_args(root: Path, output: str) -> list[str]:
    return [
        "validate",
        "--seed_everything=3",
        "--model=SemanticSegmentationTask",
        "--model.init_args.arch=unet",
        "--model.init_args.backbone=resnet18",
        "--model.init_args.weights_backbone=null",
        "--data=VOCDataModule",
        f"--data.init_args.root={root}",
        "--data.init_args.batch_size=2",
        "--data.init_args.num_workers=0",
        "--trainer.callbacks+=lightseg.callbacks.DenseCRFSearch",
        "--trainer.callbacks.bilateral_weights=[3.0, 5.0]",
        "--trainer.callbacks.bilateral_xy_stds=[2.0, 80.0]",
        "--trainer.callbacks.bilateral_rgb_stds=[3.0]",
        "--trainer.callbacks.iterations=3",
        "--trainer.callbacks.max_images=6",
        f"--trainer.callbacks.output={output}",
        "--trainer.callbacks.workers=0",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
    ]


def _crf_search(cwd: Path, root: Path, devices: int, caplog: pytest.LogCaptureFixture) -> tuple[str, list[str]]:
    out = cwd / f"crf{devices}.yaml"
    args = [
        "lightseg",
        *_crf_search_args(root, str(out)),
        "--trainer.accelerator=cpu",
        f"--trainer.devices={devices}",
        f"--trainer.strategy={'ddp' if devices > 1 else 'auto'}",
    ]
    caplog.clear()
    with caplog.at_level(logging.INFO):
        output = _run(args, cwd, {**os.environ, "OMP_NUM_THREADS": "1"})
    lines = (output or "\n".join(caplog.messages)).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Dense-CRF search on"))
    return out.read_text(), lines[start : start + 6]


def test_crf_search_on_mixed_sizes_chooses_the_same_on_one_and_two_processes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("pydensecrf")
    # 7 validation images of 5 sizes: each process gets a mix, and the 7th is beyond max_images
    root = write_voc(tmp_path / "voc", {"train": ["2007_a"], "val": [f"2008_{k}" for k in range(7)]}, mixed_sizes=True)
    single, double = _crf_search(tmp_path, root, 1, caplog), _crf_search(tmp_path, root, 2, caplog)
    assert single[1][0].startswith("Dense-CRF search on 6 validation images")
    assert single == double
    scores = [line.split()[0] for line in single[1][2:]]
    assert len(scores) == 4 and len(set(scores)) > 1, single[1]  # the settings differ: a choice was made


def test_the_processes_panoptic_annotations_are_joined_in_the_folders_order(tmp_path: Path) -> None:
    from lightseg.callbacks.prediction_files import PanopticFiles
    from lightseg.callbacks.staged_folder import StagedFolder

    categories = [{"id": 1, "name": "thing", "isthing": 1}]
    shares = {0: ["a/x.png", "c.png"], 1: ["a-b/y.png", "b.png"], 2: []}  # strided shares of the sorted folder
    for rank, names in shares.items():
        annotations = [{"image_id": name, "file_name": name, "segments_info": []} for name in names]
        content = {"annotations": annotations, "categories": categories}
        (tmp_path / f"panoptic.rank{rank}.json").write_text(json.dumps(content))
    PanopticFiles.join(StagedFolder(tmp_path), 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["panoptic.json"]
    joined = json.loads((tmp_path / "panoptic.json").read_text())
    # the order of a sorted folder of paths (a/x before a-b/y), as one process writes them
    assert [a["file_name"] for a in joined["annotations"]] == ["a/x.png", "a-b/y.png", "b.png", "c.png"]
    assert joined["categories"] == categories
