"""Multispectral images: models for N input channels with their per-channel statistics, bands chosen from rasters."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from test_large_images import CRS, TRANSFORM
from test_large_images import _write_geotiff as _write
from torch import nn

from lightseg.cli import main
from lightseg.datamodules.rasters import open_raster
from lightseg.datamodules.settings import SemanticAugmentation
from lightseg.errors import LightsegError
from lightseg.models.smp_adapter import adapt_first_convolution
from lightseg.visualize import display_rgb, to_uint8_image

from conftest import ROOT, semantic_model

QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")
FOUR = {"mean": [0.1, 0.2, 0.3, 0.4], "std": [0.1, 0.1, 0.2, 0.2]}


def _first_convolution(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize(
    ("arch", "backbone"),
    [
        ("unet", "resnet18"),  # smp builds in_channels itself
        ("segformer", "mit_b0"),
        ("linear", "tu-resnet18"),  # timm's in_chans
        ("deeplabv3", "resnet50"),  # torchvision's ResNet, adapted after the build
        ("fcn8s", "vgg16"),
        ("deeplabv2", "resnet101"),
    ],
)
def test_every_family_takes_images_of_any_channel_count(arch: str, backbone: str) -> None:
    torch.manual_seed(0)
    model = semantic_model(arch, 3, backbone, weights_backbone=None, aux=False, in_channels=4, **FOUR).eval()
    assert model.in_channels == 4 and _first_convolution(model.net).in_channels == 4
    with torch.no_grad():
        out = model(torch.rand(1, 4, 64, 64))["out"]
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()
    torch.testing.assert_close(model.mean.flatten(), torch.tensor(FOUR["mean"]))
    with pytest.raises(LightsegError, match=r"have 3 channel\(s\) but the model takes 4 \(network.in_channels\)"):
        model(torch.rand(1, 3, 64, 64))


@pytest.mark.parametrize("arch", ["hf_segformer", "hf_upernet", "hf_dpt", "mask2former", "eomt"])
def test_transformers_architectures_take_images_of_any_channel_count(
    arch: str, tiny_transformers: Callable[[str], Path]
) -> None:
    torch.manual_seed(0)
    six = {"mean": [0.5] * 6, "std": [0.25] * 6}
    model = semantic_model(arch, 3, str(tiny_transformers(arch)), None, aux=False, in_channels=6, **six).eval()
    assert _first_convolution(model.net).in_channels == 6
    with torch.no_grad():
        out = model(torch.rand(1, 6, 64, 64))
    logits = out["out"] if "out" in out else out["mask_queries"]
    assert torch.isfinite(logits).all()
    if "out" in out:
        assert logits.shape == (1, 3, 64, 64)


def test_pretrained_rgb_filters_are_spread_over_the_bands(
    tmp_path: Path, tiny_transformers: Callable[[str], Path]
) -> None:
    # smp's rule, which timm follows too: the RGB filters repeated over the bands and scaled by 3 / bands, so that
    # an image whose bands repeat its RGB channels meets the filters as the RGB image did
    torch.manual_seed(0)
    rgb = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU())
    six = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU())
    six.load_state_dict(rgb.state_dict())
    adapt_first_convolution(six, 6, pretrained=True)
    weight = rgb[0].weight.detach()
    torch.testing.assert_close(six[0].weight.detach(), torch.cat([weight, weight], 1) * 0.5)
    image = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(six(torch.cat([image, image], 1)), rgb(image))
    grey = nn.Conv2d(3, 5, 3)
    grey.load_state_dict(rgb[0].state_dict())
    adapt_first_convolution(grey, 1, pretrained=True)
    torch.testing.assert_close(grey.weight.detach(), weight.sum(1, keepdim=True))
    # a transformers checkpoint's patch embedding: loaded first, then spread
    import transformers

    from conftest import tiny_transformers_config

    saved = transformers.SegformerForSemanticSegmentation(tiny_transformers_config("hf_segformer"))
    saved.save_pretrained(tmp_path / "segformer")
    first = _first_convolution(saved).weight.detach()
    model = semantic_model(
        "hf_segformer", 3, str(tmp_path / "segformer"), "pretrained", in_channels=4, mean=[0.5] * 4, std=[0.2] * 4
    )
    torch.testing.assert_close(
        _first_convolution(model.net).weight.detach(), torch.cat([first, first[:, :1]], 1) * 0.75
    )


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"in_channels": 4}, "in_channels=4: give the model each channel's mean and std"),
        ({"in_channels": 4, "mean": [0.5] * 3, "std": [0.2] * 3}, "mean has 3 value(s) but the model takes 4"),
        ({"in_channels": 4, "mean": [0.5] * 4}, "mean is set but std is not"),
        ({"mean": [0.5] * 3, "std": [0.2, 0.0, 0.2]}, "std must be > 0 for every channel"),
        ({"in_channels": 0}, "in_channels must be >= 1"),
    ],
    ids=["no statistics", "too few", "mean only", "zero std", "no channel"],
)
def test_statistics_that_do_not_fit_the_channels_are_one_line(options: dict[str, object], expected: str) -> None:
    with pytest.raises(LightsegError, match=re.escape(expected)):
        semantic_model("unet", 3, "resnet18", None, **options)  # type: ignore[arg-type]


def test_chosen_bands_read_in_their_order_and_16_bit_pictures_are_stretched(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    bands = rng.integers(0, 6000, (13, 40, 50), dtype=np.uint16)  # Sentinel-2-like reflectance (x 10,000)
    bands[:, :4, :6] = 0
    _write(tmp_path / "s2.tif", bands, nodata=0)
    raster = open_raster(tmp_path / "s2.tif", [4, 3, 2, 8])
    assert raster.channels == 4 and raster.bands == (4, 3, 2, 8)
    window = raster.read_windows([(10, 20)], (8, 9))[0]
    expected = bands[[3, 2, 1, 7], 10:18, 20:29].astype(np.float32) / 65535
    torch.testing.assert_close(window, torch.from_numpy(expected), rtol=0, atol=0)
    with pytest.raises(LightsegError, match=r"s2.tif has 13 band\(s\) but data.bands asks for band 14"):
        open_raster(tmp_path / "s2.tif", [4, 14])
    with pytest.raises(LightsegError, match="choose the bands the model reads with data.bands"):
        open_raster(tmp_path / "s2.tif")  # 13 unnamed bands are no RGB image
    # the overview shows the first three chosen bands, each stretched over its valid pixels; nodata black
    picture = raster.overview(50)
    assert picture.shape == (40, 50, 3) and (picture[:4, :6] == 0).all()
    valid = np.ones((40, 50), dtype=bool)
    valid[:4, :6] = False
    for k in range(3):
        shown = picture[..., k][valid]
        assert np.percentile(shown, 1) <= 5 and np.percentile(shown, 99) >= 250  # the full range, not 0..23
    # images of other channel counts in pictures: the first three bands, or one as grey
    four = torch.rand(4, 20, 30) * 0.1
    assert (to_uint8_image(four) == display_rgb(four.numpy())).all()
    grey = to_uint8_image(torch.rand(1, 20, 30) * 0.1)
    assert (grey[..., 0] == grey[..., 1]).all() and grey.max() >= 250


def _scene(labels: np.ndarray, seed: int) -> np.ndarray:
    """Five 16-bit bands; class 1 stands out in the near infrared (band 4) only, class 2 in the visible bands."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(500, 1500, (5, *labels.shape), dtype=np.uint16)
    pixels[3, labels == 1] += 3000
    pixels[:3, labels == 2] += 2000
    return pixels


def _labels(height: int, width: int) -> np.ndarray:
    labels = np.zeros((height, width), dtype=np.uint8)
    labels[20:90, 30:150] = 1
    labels[100:140, 10:70] = 2
    return labels


def _options(root: Path) -> list[str]:
    return ["--data=RasterWindowsDataModule", f"--data.init_args.root={root}",
            "--data.init_args.class_names=[ground, vegetation, roof]", "--data.init_args.bands=[3, 2, 1, 4]",
            "--data.init_args.window_size=64", "--data.init_args.num_workers=0"]  # fmt: skip


def _refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line of a command lightseg refuses."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(args)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("lightseg: error: ")]
    assert info.value.code == 2 and len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_a_four_band_model_trains_on_raster_windows_predicts_and_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "rasters"
    for split, (height, width), seed in (("train", (160, 200), 0), ("val", (150, 170), 1)):
        labels = _labels(height, width)
        _write(root / split / "images" / "scene.tif", _scene(labels, seed))
        _write(root / split / "masks" / "scene.tif", labels[None])
    # the data check measures the four channels as the model reads them and prints them for the config
    main(["data", "check", "--config", QUICKSTART, *_options(root), "--out", "check"])
    printed = capsys.readouterr().out
    statistics = json.loads((tmp_path / "check" / "report.json").read_text())["splits"]["train"]["bands"]
    train = _scene(_labels(160, 200), 0)[[2, 1, 0, 3]].reshape(4, -1) / 65535
    # a sample of every 16th pixel (120 of these 32,000): close to the whole raster's, in the bands' order
    np.testing.assert_allclose(statistics["mean"], train.mean(1), rtol=0.1)
    np.testing.assert_allclose(statistics["std"], train.std(1), rtol=0.2)
    assert statistics["mean"][3] > 1.4 * max(statistics["mean"][:3])  # the near infrared, read fourth
    assert f"  network:\n    in_channels: 4\n    mean: {statistics['mean']}\n    std: {statistics['std']}" in printed
    model = ["--model.init_args.network.in_channels=4", f"--model.init_args.network.mean={statistics['mean']}",
             f"--model.init_args.network.std={statistics['std']}"]  # fmt: skip
    # an RGB model on four bands: one line before training
    line = _refused(["fit", "--config", QUICKSTART, *_options(root), "--trainer.max_epochs=1"], capsys)
    assert "the images of RasterWindowsDataModule (bands [3, 2, 1, 4]) have 4 channel(s) but the model takes 3" in line
    main(["fit", "--config", QUICKSTART, *_options(root), *model, "--data.init_args.windows_per_epoch=64",
          "--data.init_args.batch_size=8", "--trainer.max_epochs=3", "--trainer.enable_progress_bar=false",
          "--model.init_args.optimizer.init_args.lr=0.01"])  # fmt: skip
    checkpoint = next((tmp_path / "runs").rglob("last.ckpt"))
    metrics = next((tmp_path / "runs").rglob("metrics.csv")).read_text().splitlines()
    header = metrics[0].split(",")
    last = [row.split(",") for row in metrics[1:] if row.split(",")[header.index("val_miou")]][-1]
    # vegetation is told apart by the near-infrared band only: learnt, so the fourth channel is read
    assert float(last[header.index("val_iou_vegetation")]) > 0.5
    # predict: the same bands of a raster read whole and in tiles give the same labels, georeferenced
    scene = tmp_path / "predict" / "scene.tif"
    _write(scene, _scene(_labels(150, 170), 1))
    results = {}
    for name, tile_above in (("whole", 4096), ("tiled", 100)):
        main(["predict", "--config", QUICKSTART, *_options(root), *model, f"--ckpt_path={checkpoint}",
              f"--data.init_args.predict_dir={scene}", f"--data.init_args.predict_tile_above={tile_above}",
              "--model.init_args.inference.mode=slide", "--model.init_args.inference.window_size=64",
              "--model.init_args.inference.window_stride=48", f"--prediction.output_dir={name}",
              "--trainer.enable_progress_bar=false"])  # fmt: skip
        masks = list((tmp_path / name / "masks").glob("scene.*"))
        assert len(masks) == 1, masks
        with rasterio.open(masks[0]) as written:
            results[name] = written.read(1)
            if name == "tiled":
                assert written.crs.to_string() == CRS and written.transform == TRANSFORM
    assert results["whole"].shape == (150, 170)
    np.testing.assert_array_equal(results["tiled"], results["whole"])
    assert (results["whole"] == _labels(150, 170)).mean() > 0.8
    # a three-band image for the four-band model: one line naming it
    _write(tmp_path / "rgb" / "photo.tif", np.zeros((3, 40, 40), dtype=np.uint8))
    args = ["predict", "--config", QUICKSTART, *_options(root), *model, f"--ckpt_path={checkpoint}",
            f"--data.init_args.predict_dir={tmp_path / 'rgb'}", "--prediction.output_dir=rgb_out"]  # fmt: skip
    assert "photo.tif has 3 band(s) but data.bands asks for band 4" in _refused(args, capsys)
    assert not (tmp_path / "rgb_out").exists()
    # export: verified against PyTorch on four-band images, the metadata naming the channels and bands
    main(["export", "--config", QUICKSTART, *_options(root), *model, f"--ckpt_path={checkpoint}",
          "--export.format=onnx", "--export.output=model.onnx"])  # fmt: skip
    metadata = json.loads((tmp_path / "model.onnx.json").read_text())
    assert metadata["input"]["channels"] == 4 and metadata["input"]["bands"] == [3, 2, 1, 4]
    assert metadata["input"]["layout"] == "[B,4,H,W]"


def test_the_documented_multispectral_check_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_docs_commands import multispectral_check

    page = (ROOT / "docs" / "inference.md").read_text()
    shown = page.split("**Multispectral images.**")[1].split("```yaml")[1].split("```")[0]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    rng = np.random.default_rng(3)
    for split in ("train", "val"):
        labels = _labels(150, 160)
        _write(tmp_path / "rasters" / split / "images" / "tile.tif", rng.integers(0, 4000, (8, 150, 160), np.uint16))
        _write(tmp_path / "rasters" / split / "masks" / "tile.tif", labels[None])
    capsys.readouterr()
    main(shlex.split(multispectral_check())[1:])
    printed = capsys.readouterr().out
    # the lines the page shows, with this set's numbers: four channels, as the page's model section has them
    keys = [line.split(":")[0] for line in shown.strip().splitlines()[-3:]]
    assert keys == ["      in_channels", "      mean", "      std"]
    lines = printed.split("in the model's network group of the config:\n")[1].splitlines()[:4]
    assert [line.split(":")[0].strip() for line in lines] == ["network", "in_channels", "mean", "std"]
    assert lines[1] == "    in_channels: 4" and len(json.loads(lines[2].split(": ", 1)[1])) == 4


def test_a_stopped_tiled_prediction_resumes_only_with_the_same_bands_and_normalisation(tmp_path: Path) -> None:
    from lightseg.tasks import SemanticSegmentationTask

    _write(tmp_path / "scene.tif", _scene(_labels(150, 170), 0))

    def fingerprint(bands: list[int], mean: list[float]) -> str:
        torch.manual_seed(0)
        task = SemanticSegmentationTask(arch="unet", backbone="resnet18", weights_backbone=None, num_classes=3,
                                        in_channels=4, mean=mean, std=[0.1] * 4)  # fmt: skip
        return task.predict_tiled(open_raster(tmp_path / "scene.tif", bands), "scene.tif").fingerprint

    first = fingerprint([1, 2, 3, 4], [0.1] * 4)
    assert fingerprint([1, 2, 3, 4], [0.1] * 4) == first  # the same run: resumed
    assert fingerprint([4, 3, 2, 1], [0.1] * 4) != first  # other bands: started over
    assert fingerprint([1, 2, 3, 4], [0.2] * 4) != first  # other statistics (not in the weights): started over


def _chips(root: Path, count: int) -> list[np.ndarray]:
    """``count`` 4-band 16-bit TIFF chips with index PNG masks in the folder layout; returns their pixels."""
    from PIL import Image

    chips = []
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for k in range(count):
        labels = np.zeros((48, 64), dtype=np.uint8)
        labels[8 + k : 30, 10 : 40 + k] = 1
        labels[34:44, 40:60] = 2
        pixels = np.random.default_rng(k).integers(300, 1200, (4, 48, 64), dtype=np.uint16)
        pixels[3, labels == 1] += 2500
        pixels[:3, labels == 2] += 1500
        _write(root / "images" / f"chip_{k}.tif", pixels)
        Image.fromarray(labels).save(root / "masks" / f"chip_{k}.png")
        chips.append(pixels)
    return chips


def test_folder_chips_read_their_bands_for_training_the_data_check_and_a_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from lightseg.data_check import check_data
    from lightseg.datamodules import SegmentationFolderDataModule

    chips = _chips(tmp_path / "chips", 6)
    names = ["background", "field", "water"]
    data = SegmentationFolderDataModule(str(tmp_path / "chips"), names, bands=[4, 1, 2, 3], val_fraction=0.3,
                                        mask_format="index", num_workers=0, batch_size=2)  # fmt: skip
    assert data.describe().in_channels == 4 and data.describe().bands == (4, 1, 2, 3)
    data.setup("fit")
    item = data.val_dataset[0]  # type: ignore[index]
    k = int(item["id"].split("_")[1])
    expected = chips[k][[3, 0, 1, 2]].astype(np.float32) / 65535
    torch.testing.assert_close(item["image"], torch.from_numpy(expected), rtol=0, atol=0)
    # the data check: every image's chosen bands, their statistics and pictures
    report = check_data(data, 1)
    every = np.concatenate([c[[3, 0, 1, 2], ::16, ::16].reshape(4, -1) for c in chips], 1) / 65535
    measured = [report.splits[s].band_moments for s in report.splits if report.splits[s].band_moments is not None]
    count, total, _ = sum(measured)
    np.testing.assert_allclose(total / count, every.mean(1), rtol=1e-5)
    assert all(picture.shape == (48, 64, 3) for picture, _ in report.pictures["train"])
    # bad bands: one line each, before any work
    with pytest.raises(LightsegError, match=r"chip_\d.tif has 4 band\(s\) but data.bands asks for band 5"):
        bad = SegmentationFolderDataModule(str(tmp_path / "chips"), names, bands=[1, 5], val_fraction=0.3,
                                           mask_format="index", num_workers=0)  # fmt: skip
        bad.setup("fit")
    with pytest.raises(LightsegError, match="augmentation.photometric jitters the colours of RGB images"):
        SegmentationFolderDataModule(str(tmp_path / "chips"), names, bands=[1, 2, 3, 4], photometric=True)
    jitter = SemanticAugmentation(photometric=True)  # the group's spelling is checked alike
    with pytest.raises(LightsegError, match="augmentation.photometric jitters the colours of RGB images"):
        SegmentationFolderDataModule(str(tmp_path / "chips"), names, bands=[1, 2, 3, 4], augmentation=jitter)
    # a 4-band model trains on the chips from the command line
    monkeypatch.chdir(tmp_path)
    main(["fit", "--config", QUICKSTART, "--data=SegmentationFolderDataModule", "--data.init_args.root=chips",
          "--data.init_args.class_names=[background, field, water]", "--data.init_args.bands=[4, 1, 2, 3]",
          "--data.init_args.val_fraction=0.3", "--data.init_args.num_workers=0", "--data.init_args.batch_size=2",
          "--model.init_args.in_channels=4", "--model.init_args.mean=[0.05, 0.012, 0.012, 0.012]",
          "--model.init_args.std=[0.04, 0.005, 0.005, 0.005]", "--trainer.max_epochs=1",
          "--trainer.enable_progress_bar=false"])  # fmt: skip
    assert "val_miou" in next((tmp_path / "runs").rglob("metrics.csv")).read_text()


def test_bands_are_for_the_folder_layout_only(tmp_path: Path) -> None:
    from lightseg.datamodules import SegmentationFolderDataModule

    from layouts import write_labelme

    root = write_labelme(tmp_path / "export", 4)
    data = SegmentationFolderDataModule(str(root), bands=[1, 2, 3, 4], validate_on_train=True, num_workers=0)
    with pytest.raises(LightsegError, match=r"bands reads multispectral images of the folder layout .* remove bands"):
        data.setup("fit")


def test_a_weights_files_rgb_first_layer_is_spread_over_the_bands(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import torchvision

    from lightseg.weights import spread_over_channels

    resnet = torchvision.models.resnet18()
    torch.save(resnet.state_dict(), tmp_path / "resnet18.pt")
    rgb = resnet.conv1.weight.detach()
    # smp's encoder built for 4 bands, then the file loaded into it: the first layer spread, not dropped
    model = semantic_model("unet", 3, "resnet18", str(tmp_path / "resnet18.pt"), in_channels=4, **FOUR)
    spread = torch.cat([rgb, rgb[:, :1]], 1) * 0.75
    torch.testing.assert_close(model.net.encoder.conv1.weight.detach(), spread)
    torch.testing.assert_close(model.net.encoder.layer1[0].conv1.weight.detach(), resnet.layer1[0].conv1.weight)
    assert "loaded 119 of 120 weights" in caplog.text
    assert "1 RGB first layer(s) spread over the input's channels (conv1.weight)" in caplog.text
    # the same rule as the pretrained path's (smp's patch_first_conv): one band sums the filters
    torch.testing.assert_close(spread_over_channels(rgb, 1), rgb.sum(1, keepdim=True))
    torch.testing.assert_close(spread_over_channels(rgb, 6), torch.cat([rgb, rgb], 1) * 0.5)
