"""Metrics must not change with the number of processes (DDP over gloo on CPU, via the CLI)."""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from layouts import write_voc

QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")


def _data(cwd: Path) -> list[str]:
    return [
        # 9 images over 2 processes: a padding sampler would count one of them twice
        "--data.init_args.num_train=4",
        "--data.init_args.num_val=9",
        "--data.init_args.num_test=2",
        "--data.init_args.image_size=32",
        "--data.init_args.batch_size=2",
        f"--data.init_args.root={cwd / 'data'}",
    ]


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


def _validate(cwd: Path, devices: int, name: str, checkpoint: Path) -> dict[str, float]:
    args = [
        "lightseg",
        "validate",
        "--config",
        QUICKSTART,
        *_data(cwd),
        "--ckpt_path",
        str(checkpoint),
        "--trainer.accelerator=cpu",
        f"--trainer.devices={devices}",
        f"--trainer.strategy={'ddp' if devices > 1 else 'auto'}",
        f"--trainer.logger.init_args.name={name}",
        "--trainer.enable_progress_bar=false",
    ]
    _run(args, cwd, {**os.environ, "LIGHTSEG_CACHE": str(cwd / "cache"), "OMP_NUM_THREADS": "1"})
    row = next(csv.DictReader((cwd / "runs" / "quickstart" / name / "version_0" / "metrics.csv").open()))
    return {key: float(value) for key, value in row.items() if key.startswith("val_") and value}


def test_validation_metrics_are_identical_on_one_and_two_processes(tmp_path: Path) -> None:
    from lightseg.cli import main

    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:  # one epoch in this process (one device): a checkpoint to evaluate (an untrained head gets no run folder)
        main(["fit", "--config", QUICKSTART, *_data(tmp_path), "--trainer.max_epochs=1",
              "--trainer.logger.init_args.name=trained", "--trainer.enable_progress_bar=false"])  # fmt: skip
    finally:
        os.chdir(cwd)
    checkpoint = next((tmp_path / "runs" / "quickstart" / "trained").rglob("last.ckpt"))
    single = _validate(tmp_path, 1, "one", checkpoint)
    double = _validate(tmp_path, 2, "two", checkpoint)
    assert set(single) == set(double) and "val_miou" in single
    for key, value in single.items():
        if key == "val_loss":  # a float mean summed in another order
            assert double[key] == pytest.approx(value, rel=1e-6)
        else:  # from one integer confusion matrix: bit-identical
            assert double[key] == value, key


def test_coco_ap_is_identical_on_one_and_two_processes(tmp_path: Path) -> None:
    from lightseg.cli import main

    config = str(ROOT / "configs" / "quickstart_maskrcnn.yaml")
    data = [
        # 5 images over 2 processes: a padding sampler would evaluate one twice
        "--data.init_args.num_train=6",
        "--data.init_args.num_val=5",
        "--data.init_args.num_test=2",
        "--data.init_args.image_size=48",
        f"--data.init_args.root={tmp_path / 'data'}",
        "--model.init_args.min_size=48",
        "--model.init_args.max_size=48",
    ]
    cwd = tmp_path
    os.chdir(cwd)
    try:  # a briefly trained model, so that there are detections to match
        main(
            [
                "fit",
                "--config",
                config,
                *data,
                "--trainer.max_epochs=2",
                "--trainer.enable_progress_bar=false",
                "--trainer.logger.init_args.name=trained",
            ]
        )
    finally:
        os.chdir(ROOT)
    checkpoint = next((cwd / "runs").rglob("last.ckpt"))
    results = {}
    for devices in (1, 2):
        args = [
            "lightseg",
            "validate",
            "--config",
            config,
            *data,
            "--trainer.accelerator=cpu",
            f"--trainer.devices={devices}",
            f"--trainer.strategy={'ddp' if devices > 1 else 'auto'}",
            f"--trainer.logger.init_args.name=p{devices}",
            "--trainer.enable_progress_bar=false",
            f"--ckpt_path={checkpoint}",
            "--model.init_args.detector_kwargs.box_score_thresh=0.0",
        ]
        _run(args, cwd, {**os.environ, "OMP_NUM_THREADS": "1"})
        row = next(
            csv.DictReader((cwd / "runs" / "quickstart_maskrcnn" / f"p{devices}" / "version_0" / "metrics.csv").open())
        )
        results[devices] = {key: float(value) for key, value in row.items() if key.startswith("val_") and value}
    assert set(results[1]) == set(results[2]) and "val_segm_map" in results[1]
    assert results[1]["val_bbox_map_50"] > 0  # detections that match: a test that can fail
    assert results[1] == results[2]


def _crf_search(cwd: Path, root: Path, devices: int, caplog: pytest.LogCaptureFixture) -> tuple[str, list[str]]:
    out = cwd / f"crf{devices}.yaml"
    args = [
        "lightseg",
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
        f"--trainer.callbacks.output={out}",
        "--trainer.callbacks.workers=0",
        "--trainer.accelerator=cpu",
        f"--trainer.devices={devices}",
        f"--trainer.strategy={'ddp' if devices > 1 else 'auto'}",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
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
