from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT.parent / "shared" / "peer-data"
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # never write into the user's ~/.cache from a test
    monkeypatch.setenv("LIGHTSEG_CACHE", str(tmp_path_factory.getbasetemp() / "lightseg-cache"))


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small shapes cache shared by the CLI tests: 32 train, 8 val, 8 test scenes at 32 px."""
    return tmp_path_factory.mktemp("shapes")


TINY_SHAPES = [
    "--data.init_args.num_train=32",
    "--data.init_args.num_val=8",
    "--data.init_args.num_test=8",
    "--data.init_args.image_size=32",
    "--data.init_args.batch_size=8",
]
