from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# under pytest-xdist the cores are shared between the workers: one worker's torch must not take them all
torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))


#: test modules whose tests start processes of their own and take the longest (DDP, tune studies): run first, so
#: that the workers' other tests fill the time around them instead of one worker finishing alone with them
LONG_MODULES = ("test_distributed.py", "test_tune.py")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (pyproject's addopts): one worker a core, at most four (each holds its own torch and models)."""
    return max(1, min(4, os.cpu_count() or 1))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name not in LONG_MODULES)  # stable: the order within a module is kept


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


def tiny_transformers_config(arch: str) -> Any:
    """A transformers configuration of ``arch`` small enough for a CPU test (random weights)."""
    import transformers as tf

    stages = ["stage1", "stage2", "stage3", "stage4"]
    swin = tf.SwinConfig(embed_dim=8, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=7, out_features=stages)
    convnext = tf.ConvNextConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32], out_features=stages)
    vit = {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2, "image_size": 64, "patch_size": 16}
    configs = {
        "hf_segformer": lambda: tf.SegformerConfig(
            hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], decoder_hidden_size=16, num_attention_heads=[1, 1, 1, 1]
        ),
        "hf_upernet": lambda: tf.UperNetConfig(
            backbone_config=convnext, hidden_size=16, auxiliary_in_channels=24, auxiliary_channels=8
        ),
        "hf_dpt": lambda: tf.DPTConfig(
            **vit,
            intermediate_size=64,
            backbone_out_indices=[0, 1, 2, 3],
            neck_hidden_sizes=[8, 16, 24, 32],
            fusion_hidden_size=16,
        ),
        "mask2former": lambda: tf.Mask2FormerConfig(
            backbone_config=swin,
            feature_size=64,
            mask_feature_size=64,
            hidden_dim=64,
            encoder_feedforward_dim=32,
            dim_feedforward=32,
            encoder_layers=1,
            decoder_layers=2,
            num_queries=10,
            num_attention_heads=2,
            train_num_points=256,
        ),
        "eomt": lambda: tf.EomtConfig(**vit, num_queries=10, num_blocks=2, num_upscale_blocks=2, train_num_points=256),
    }
    return configs[arch]()


@pytest.fixture(scope="session")
def tiny_transformers(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """A folder holding a tiny ``arch``'s config.json (as save_pretrained writes it), by arch name."""
    root = tmp_path_factory.mktemp("transformers")

    def folder(arch: str) -> Path:
        path = root / arch
        if not path.exists():
            tiny_transformers_config(arch).save_pretrained(path)
        return path

    return folder


def semantic_model(
    arch: str,
    num_classes: int,
    backbone: str | None = None,
    weights_backbone: str | None = None,
    aux: bool = True,
    **options: Any,
) -> Any:
    """``build_semantic_model`` of a :class:`ModelSpec` from scratch unless ``weights_backbone`` says otherwise."""
    from lightseg.models.semantic import ModelSpec, build_semantic_model

    return build_semantic_model(ModelSpec(arch, backbone, weights_backbone, **options), num_classes, aux=aux)
