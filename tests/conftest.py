from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
torch.set_num_threads(min(2, os.cpu_count() or 1))


def peer_data_dir() -> Path:
    """Where the peer fixtures are: ``$LIGHTSEG_PEER_DATA``, else ``../shared/peer-data`` beside the checkout."""
    folder = os.environ.get("LIGHTSEG_PEER_DATA")
    return Path(folder) if folder else ROOT.parent / "shared" / "peer-data"


@pytest.fixture(scope="session")
def peer() -> Path:
    """The peer fixtures folder (real-format files written by other projects).

    A user's clone has none: tests that take this fixture skip there, saying why. Where
    ``LIGHTSEG_REQUIRE_PEER_DATA`` is set (``.ci/run`` sets it when the folder exists) a
    missing folder fails instead, so CI can never pass by skipping them.
    """
    folder = peer_data_dir()
    if not folder.is_dir():
        reason = (
            f"peer fixtures not found at {folder}: this test reads other projects' real-format files, "
            "which only the development layout has (set LIGHTSEG_PEER_DATA to a copy of shared/peer-data)"
        )
        if os.environ.get("LIGHTSEG_REQUIRE_PEER_DATA"):
            pytest.fail(reason)
        pytest.skip(reason)
    return folder


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # never write into the user's ~/.cache from a test
    monkeypatch.setenv("LIGHTSEG_CACHE", str(tmp_path_factory.getbasetemp() / "lightseg-cache"))
    # nor into the clone: a run's default folders (runs/, predictions/) land in the test's own folder
    monkeypatch.chdir(tmp_path)


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
