"""Images too large to hold: predicted in tiles read from (Geo)TIFFs, written band by band as tiled GeoTIFFs."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.transform import from_origin

from lightseg import inference
from lightseg.callbacks.raster_output import RasterOutput
from lightseg.cli import main
from lightseg.datamodules.io import read_image
from lightseg.datamodules.rasters import open_raster
from lightseg.errors import LightsegError
from lightseg.inference import InferenceSettings, column_stripes, slide_logits, tiled_logits, window_weights

from conftest import ROOT

QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")
WINDOWS = [
    "--model.init_args.inference.mode=slide",
    "--model.init_args.inference.window_size=64",
    "--model.init_args.inference.window_stride=40",
    "--model.init_args.inference.window_batch_size=3",
]
CRS = "EPSG:32633"
TRANSFORM = from_origin(500000, 4600000, 0.5, 0.5)


def _scene(height: int = 230, width: int = 310) -> np.ndarray:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, height, width), dtype=np.uint8)
    pixels[:, 40:120, 60:200] = 240  # a bright block the model tells apart
    pixels[:, :20, :30] = 0  # nodata (every band 0)
    return pixels


def _write_geotiff(path: Path, pixels: np.ndarray, **extra: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "height": pixels.shape[1], "width": pixels.shape[2], "count": pixels.shape[0],
               "dtype": pixels.dtype.name, "crs": CRS, "transform": TRANSFORM, "tiled": True, "blockxsize": 64,
               "blockysize": 64, "compress": "deflate", **extra}  # fmt: skip
    with rasterio.open(path, "w", **profile) as out:
        out.write(pixels)


def _ring_area(ring: list[list[float]]) -> float:
    xs, ys = np.array(ring).T
    return abs(float(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1)))) / 2


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as raster:
        values: np.ndarray = raster.read()
    return values


def _predict(shapes_root: Path, images: Path, out: Path, *extra: str) -> None:
    main(["predict", "--config", QUICKSTART, f"--data.init_args.root={shapes_root}", "--seed_everything=0",
          "--trainer.enable_progress_bar=false", f"--data.init_args.predict_dir={images}",
          f"--prediction.output_dir={out}", *WINDOWS, *extra])  # fmt: skip


def _model_and_reader() -> tuple[torch.nn.Module, torch.Tensor, Callable[..., torch.Tensor]]:
    """A small convolutional model (context of 3 pixels), a 103 x 157 image and its window reader."""
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 5, 5, padding=2), nn.ReLU(), nn.Conv2d(5, 5, 3, padding=1))
    image = torch.rand(1, 3, 103, 157)

    def read(boxes: list[tuple[int, int]], size: tuple[int, int]) -> torch.Tensor:
        return torch.cat([image[..., y : y + size[0], x : x + size[1]] for y, x in boxes])

    return model, image, read


def test_tiled_windows_equal_the_in_memory_sliding_window() -> None:
    model, image, read = _model_and_reader()
    for blend in ("mean", "gaussian", "linear"):
        for window, stride, batch in (((32, 40), (20, 25), 3), (200, 50, 2), ((17, 300), (9, 100), 5)):
            settings = InferenceSettings(window_size=window, window_stride=stride, window_batch_size=batch, blend=blend)
            with torch.no_grad():
                expected = slide_logits(model, image, window, stride, batch, blend)[0]
                for rows, most in ((None, 128), (None, 7), ((30, 71), 10), ((90, 103), 50)):
                    start, stop = rows or (0, 103)
                    got = torch.full_like(expected, float("nan"))
                    for first, band in tiled_logits(model, read, (103, 157), settings, rows, most):
                        assert band.shape[1] <= most and torch.isnan(got[:, first : first + band.shape[1]]).all()
                        got[:, first : first + band.shape[1]] = band
                    assert torch.equal(got[:, start:stop], expected[:, start:stop]), (blend, window, rows)
                    assert torch.isnan(got[:, :start]).all() and torch.isnan(got[:, stop:]).all()


def test_column_stripes_cover_the_width_and_give_the_sliding_windows_averages() -> None:
    model, image, read = _model_and_reader()
    settings = InferenceSettings(window_size=(32, 40), window_stride=(20, 25), window_batch_size=3, blend="gaussian")
    with torch.no_grad():
        expected = slide_logits(model, image, (32, 40), (20, 25), 3, "gaussian")[0]
        for most in (1000, 60, 1):
            stripes = column_stripes(157, settings, most)
            assert stripes[0][0] == 0 and stripes[-1][1] == 157
            assert all(a < b <= a + max(most, 40) for a, b in stripes)  # at most `most` columns, or one window
            assert all(right == left for (_, right), (left, _) in itertools.pairwise(stripes))
            got = torch.full_like(expected, float("nan"))
            for left, right in stripes:
                for first, band in tiled_logits(model, read, (103, 157), settings, (10, 90), 13, (left, right)):
                    got[:, first : first + band.shape[1], left:right] = band
            # one stripe: the same batches, the same numbers; more: batched per stripe, equal to float precision
            if len(stripes) == 1:
                assert torch.equal(got[:, 10:90], expected[:, 10:90])
            else:
                torch.testing.assert_close(got[:, 10:90], expected[:, 10:90], rtol=0, atol=1e-6)
    assert len(column_stripes(157, settings, 60)) == 3


def test_blend_weights_trust_the_centre_and_keep_a_one_window_border() -> None:
    assert window_weights(8, 8, "mean") is None
    for blend in ("gaussian", "linear"):
        weights = window_weights(9, 12, blend)
        assert weights is not None and weights.shape == (1, 1, 9, 12)
        assert weights.max() == pytest.approx(1.0, abs=0.02) and weights.min() >= 1e-3
        assert weights[0, 0, 4, 6] > weights[0, 0, 4, 1] > weights[0, 0, 4, 0]  # falls toward the border
    # a model predicting a constant: any weighting averages to that constant
    constant = slide_logits(lambda x: x[:, :2] * 0 + 3.0, torch.rand(1, 3, 50, 70), 32, 20, 4, "gaussian")
    torch.testing.assert_close(constant, torch.full((1, 2, 50, 70), 3.0))
    with pytest.raises(LightsegError, match="inference.blend must be"):
        InferenceSettings(blend="cosine")  # type: ignore[arg-type]


def test_a_large_geotiff_is_predicted_in_tiles_as_the_in_memory_path_predicts_it(
    shapes_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "images"
    pixels = _scene()
    _write_geotiff(images / "area" / "scene.tif", pixels, nodata=0)
    Image.fromarray(pixels[:, 100:140, 100:150].transpose(1, 2, 0)).save(images / "small.png")
    # in memory (the image is under the threshold) and in tiles, the same model (seeded) and windows
    _predict(shapes_root, images, tmp_path / "memory", "--prediction.overlays=false")
    _predict(shapes_root, images, tmp_path / "tiles", "--data.init_args.predict_tile_above=200",
             "--prediction.probabilities=all", "--prediction.polygons=true")  # fmt: skip
    assert "predicted 2 images: masks/, probabilities/, polygons/ and overlays/ in" in capsys.readouterr().err
    memory = np.asarray(Image.open(tmp_path / "memory" / "masks" / "area" / "scene.png"))
    with rasterio.open(tmp_path / "tiles" / "masks" / "area" / "scene.tif") as written:
        labels = written.read(1)
        assert written.crs == rasterio.crs.CRS.from_string(CRS) and written.transform == TRANSFORM
        assert written.nodata == 255 and written.dtypes == ("uint8",) and written.profile["tiled"]
        assert written.colormap(1)[1] != written.colormap(1)[2]  # the class colours
        assert '"circle"' in written.tags()["CLASSES"]
    valid = pixels.max(axis=0) > 0  # nodata: all three bands 0
    assert (~valid).sum() == 600
    np.testing.assert_array_equal(labels[valid], memory[valid])  # the same labels, exactly
    assert (labels[~valid] == 255).all()
    assert len(np.unique(memory)) > 1  # a model that predicts more than one class
    # the small image took the usual path: a PNG
    assert Image.open(tmp_path / "tiles" / "masks" / "small.png").size == (50, 40)
    with rasterio.open(tmp_path / "tiles" / "probabilities" / "area" / "scene.tif") as probabilities:
        scores = probabilities.read()
    assert scores.shape == (4, 230, 310) and probabilities.transform == TRANSFORM
    np.testing.assert_array_equal(scores.argmax(0)[valid & (np.sort(scores, 0)[-1] > np.sort(scores, 0)[-2])],
                                  labels[valid & (np.sort(scores, 0)[-1] > np.sort(scores, 0)[-2])])  # fmt: skip
    assert abs(scores.astype(int).sum(0) - 255).max() <= 2  # probabilities summing to one, as 0..255
    overlay = Image.open(tmp_path / "tiles" / "overlays" / "area" / "scene.png")
    assert overlay.size[0] == 2 * 310 and overlay.size[1] > 2 * 230  # enlarged to be seen, a legend below
    assert not list(tmp_path.glob("tiles/**/*.raw"))
    # polygons: each class's regions cover its pixels exactly (areas in map units: 0.25 m² a pixel)
    regions = json.loads((tmp_path / "tiles" / "polygons" / "area" / "scene.geojson").read_text())
    assert regions["crs"]["properties"]["name"].endswith("EPSG::32633")
    areas: dict[int, float] = {}
    for feature in regions["features"]:
        label, rings = feature["properties"]["label"], feature["geometry"]["coordinates"]
        assert feature["properties"]["class"] == ["background", "circle", "square", "triangle"][label]
        area = _ring_area(rings[0]) - sum(_ring_area(ring) for ring in rings[1:])
        areas[label] = areas.get(label, 0.0) + area / 0.25
    assert {k: round(v) for k, v in areas.items()} == {
        int(k): int((labels == k).sum()) for k in np.unique(labels) if k != 255
    }


def test_a_16_bit_grey_raster_reads_as_the_image_reader_reads_it(tmp_path: Path) -> None:
    grey = np.random.default_rng(1).integers(0, 65536, (1, 40, 50), dtype=np.uint16)
    _write_geotiff(tmp_path / "grey.tif", grey)
    raster = open_raster(tmp_path / "grey.tif")
    assert raster.size == (40, 50) and raster.bands == (1,) and raster.crs is not None
    windows = raster.read_windows([(0, 0), (8, 10)], (32, 40))
    assert windows.shape == (2, 3, 32, 40)
    expected = torch.from_numpy(grey[0].astype(np.float32) / 65535)
    torch.testing.assert_close(windows[1, 2], expected[8:40, 10:50], rtol=0, atol=0)
    assert torch.equal(windows[:, 0], windows[:, 1])


def test_large_images_that_cannot_be_tiled_are_refused_in_one_line(
    shapes_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "bands"
    _write_geotiff(images / "sentinel.tif", np.zeros((5, 64, 300), dtype=np.uint16))
    with pytest.raises(SystemExit):
        _predict(shapes_root, images, tmp_path / "out", "--data.init_args.predict_tile_above=100")
    message = capsys.readouterr().err
    assert "sentinel.tif has 5 bands" in message and "Traceback" not in message
    assert not (tmp_path / "out").exists()

    _write_geotiff(tmp_path / "rgb" / "scene.tif", _scene())
    with pytest.raises(SystemExit):
        _predict(shapes_root, tmp_path / "rgb", tmp_path / "out", "--data.init_args.predict_tile_above=100",
                 "--model.init_args.inference.tta_flip=true")  # fmt: skip
    message = capsys.readouterr().err
    assert "test-time augmentation" in message and "Traceback" not in message, message
    assert not (tmp_path / "out").exists()

    # a damaged tile: the file named, nothing written
    damaged = tmp_path / "damaged"
    _write_geotiff(damaged / "scene.tif", _scene())
    content = bytearray((damaged / "scene.tif").read_bytes())
    content[len(content) // 2 : len(content) // 2 + 4000] = bytes(4000)
    (damaged / "scene.tif").write_bytes(bytes(content))
    with pytest.raises(SystemExit):
        _predict(shapes_root, damaged, tmp_path / "out", "--data.init_args.predict_tile_above=100")
    message = capsys.readouterr().err
    assert "cannot read image" in message and "scene.tif" in message and "Traceback" not in message
    assert not (tmp_path / "out").exists()


def test_an_image_beyond_the_readers_pixel_limit_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(np.zeros((40, 50, 3), dtype=np.uint8)).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 2,000 pixels > twice the limit: Pillow refuses
    with pytest.raises(LightsegError, match=r"huge.png has more pixels than the image reader takes whole.*TIFF"):
        read_image(tmp_path / "huge.png")


@pytest.mark.parametrize("stripes", [False, True], ids=["whole width", "column stripes"])
def test_a_stopped_prediction_resumes_at_its_first_unwritten_row(
    shapes_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    stripes: bool,
) -> None:
    if stripes:  # bands of at most 100 columns of 4 classes' scores, 64 rows high: the image in 4 stripes
        monkeypatch.setattr(inference.tiling, "BAND_BYTES", 4 * 64 * 12 * 100)
    images = tmp_path / "images"
    _write_geotiff(images / "scene.tif", _scene(), nodata=0)
    tiles = ["--data.init_args.predict_tile_above=100", "--prediction.probabilities=top", "--prediction.overlays=false"]
    _predict(shapes_root, images / "scene.tif", tmp_path / "whole", *tiles)  # one image, not a folder
    capsys.readouterr()

    put = RasterOutput._write_rows
    calls = []
    # whole width: two bands of labels and probabilities go, the third band's labels do not; in stripes, the
    # first stripe's 7 bands and the second's first go
    stop_at = 17 if stripes else 5

    def full_disk(self: RasterOutput, name: str, first: int, left: int, values: np.ndarray) -> None:
        calls.append(first)
        if len(calls) == stop_at:
            raise OSError(28, "No space left on device")
        put(self, name, first, left, values)

    monkeypatch.setattr(RasterOutput, "_write_rows", full_disk)
    out = tmp_path / "out"
    with pytest.raises(SystemExit):
        _predict(shapes_root, images, out, *tiles)
    message = capsys.readouterr().err
    assert "is the disk full?" in message and "Traceback" not in message, message
    assert "the same command goes on from there" in message
    assert not out.exists()  # nothing half-written where the result goes
    resume = tmp_path / "out.resume"
    kept = json.loads((resume / "scene.json").read_text())
    stripe, row = kept["done"]
    assert stripe == (1 if stripes else 0) and 0 < row < 230 and row == calls[stop_at - 1]

    monkeypatch.setattr(RasterOutput, "_write_rows", put)
    _predict(shapes_root, images, out, *tiles)
    where = f"row {row} of 230" + (" in column stripe 2 of 4" if stripes else "")
    assert f"scene.tif: resuming after {where}" in capsys.readouterr().err
    for folder in ("masks", "probabilities"):
        with (
            rasterio.open(out / folder / "scene.tif") as resumed,
            rasterio.open(tmp_path / "whole" / folder / "scene.tif") as whole,
        ):
            np.testing.assert_array_equal(resumed.read(), whole.read())
    assert not resume.exists()

    # rows kept from another model are not mixed in: the image starts over
    monkeypatch.setattr(RasterOutput, "_write_rows", full_disk)
    calls.clear()
    with pytest.raises(SystemExit):
        _predict(shapes_root, images, tmp_path / "again", *tiles)
    monkeypatch.setattr(RasterOutput, "_write_rows", put)
    capsys.readouterr()
    _predict(shapes_root, images, tmp_path / "again", *tiles, "--seed_everything=1")
    assert "resuming" not in capsys.readouterr().err
    with (
        rasterio.open(tmp_path / "again" / "masks" / "scene.tif") as other,
        rasterio.open(out / "masks" / "scene.tif") as first,
    ):
        assert (other.read() != first.read()).any()


def _raster_pair(root: Path, split: str, name: str, labels: np.ndarray, **mask_profile: object) -> np.ndarray:
    """An RGB GeoTIFF whose pixels tell its labels apart, and the mask GeoTIFF of ``labels``; returns the pixels."""
    rng = np.random.default_rng(len(name))
    pixels = rng.integers(0, 100, (3, *labels.shape), dtype=np.uint8)
    pixels[:, labels == 1] += 120
    pixels[:, labels == 2] = (250, 30, 30)[0]
    _write_geotiff(root / split / "images" / f"{name}.tif", pixels)
    _write_geotiff(root / split / "masks" / f"{name}.tif", labels[None].astype(np.uint8), **mask_profile)
    return pixels


def _labels(height: int, width: int) -> np.ndarray:
    labels = np.zeros((height, width), dtype=np.uint8)
    labels[50:150, 80:260] = 1
    labels[200:210, 20:30] = 2  # a rare class: 100 pixels
    return labels


def test_training_windows_of_large_rasters_read_only_the_window(tmp_path: Path) -> None:
    from lightseg.datamodules import RasterWindowsDataModule

    labels = _labels(230, 310)
    labels[0:5, :] = 9  # the mask's nodata
    pixels = _raster_pair(tmp_path, "train", "a", labels, nodata=9)
    _raster_pair(tmp_path, "val", "b", _labels(150, 200))
    data = RasterWindowsDataModule(str(tmp_path), ["ground", "roof", "pool"], window_size=64, windows_per_epoch=24,
                                   batch_size=4, num_workers=0, hflip=False, vflip=False)  # fmt: skip
    data.setup("fit")
    assert data.describe().class_names == ("ground", "roof", "pool")
    train = data.train_dataset
    assert train is not None and len(train) == 24  # type: ignore[arg-type]
    torch.manual_seed(0)
    for index in range(24):
        item = train[index]
        y, x = map(int, item["id"].split("@")[1].split(","))
        assert item["image"].shape == (3, 64, 64) and item["mask"].shape == (64, 64)
        expected = torch.from_numpy(pixels[:, y : y + 64, x : x + 64].astype(np.float32) / 255)
        assert torch.equal(item["image"], expected)  # the pixels of the window the id names
        window = labels[y : y + 64, x : x + 64].astype(np.int64)
        window[window == 9] = 255
        assert torch.equal(item["mask"], torch.from_numpy(window))
    # the grid covers every validation pixel once, windows clipped at the edges
    val = data.val_dataset
    assert val is not None and len(val) == 3 * 4  # type: ignore[arg-type]
    area = sum(int(val[i]["mask"].numel()) for i in range(12))
    assert area == 150 * 200
    last = val[11]
    assert last["id"] == "b@128,192" and last["mask"].shape == (22, 8)
    # balanced windows see the rare class far more often than its share of the area (100 of 71,300 pixels)
    balanced = RasterWindowsDataModule(str(tmp_path), ["ground", "roof", "pool"], window_size=32,
                                       windows_per_epoch=90, balance_classes=True, num_workers=0)  # fmt: skip
    balanced.setup("fit")
    seen = sum(bool((balanced.train_dataset[i]["mask"] == 2).any()) for i in range(90))  # type: ignore[index]
    assert seen >= 15  # about a third of the draws pick the class


def test_a_model_trains_and_validates_on_raster_windows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "rasters"
    _raster_pair(data, "train", "a", _labels(230, 310))
    _raster_pair(data, "val", "b", _labels(150, 200))
    main(["fit", "--config", QUICKSTART, "--data=RasterWindowsDataModule", f"--data.init_args.root={data}",
          "--data.init_args.class_names=[ground, roof, pool]", "--data.init_args.window_size=64",
          "--data.init_args.windows_per_epoch=8", "--data.init_args.batch_size=4", "--data.init_args.num_workers=0",
          "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false"])  # fmt: skip
    metrics = next((tmp_path / "runs").rglob("metrics.csv")).read_text()
    assert "val_miou" in metrics and "val_iou_pool" in metrics


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (
            lambda root: _write_geotiff(root / "train" / "masks" / "a.tif", _labels(100, 120)[None]),
            "is (230, 310) but its mask",
        ),
        (
            lambda root: _write_geotiff(root / "train" / "masks" / "a.tif", _labels(230, 310)[None], crs="EPSG:4326"),
            "are not on the same grid",
        ),
        (lambda root: (root / "train" / "masks" / "a.tif").unlink(), "have no mask"),
        (
            lambda root: _write_geotiff(root / "train" / "masks" / "a.tif", (_labels(230, 310) * 3)[None]),
            "holds label 3 at rows",
        ),
    ],
    ids=["size", "crs", "missing mask", "label"],
)
def test_raster_pairs_that_do_not_agree_are_one_line(
    tmp_path: Path, make: Callable[[Path], object], expected: str
) -> None:
    from lightseg.datamodules import RasterWindowsDataModule

    _raster_pair(tmp_path, "train", "a", _labels(230, 310))
    make(tmp_path)
    data = RasterWindowsDataModule(str(tmp_path), ["ground", "roof", "pool"], window_size=512, num_workers=0)
    with pytest.raises(LightsegError, match=re.escape(expected)):
        data.make_dataset("train", data.train_transform)[0]


def test_data_check_reads_raster_pairs_headers_labels_and_a_window(tmp_path: Path) -> None:
    from lightseg.data_check import check_data
    from lightseg.data_check.report import format_report, samples_picture
    from lightseg.datamodules import RasterWindowsDataModule

    labels = _labels(230, 310)
    _raster_pair(tmp_path, "train", "a", labels)
    wrong = _labels(230, 310)
    wrong[0, 0] = 7
    _raster_pair(tmp_path, "train", "c", wrong)
    _raster_pair(tmp_path, "val", "b", _labels(150, 200))
    _write_geotiff(tmp_path / "val" / "images" / "d.tif", np.zeros((3, 90, 90), dtype=np.uint8))
    _write_geotiff(tmp_path / "val" / "masks" / "d.tif", np.zeros((1, 80, 90), dtype=np.uint8))
    data = RasterWindowsDataModule(str(tmp_path), ["ground", "roof", "pool"], window_size=64, num_workers=0)
    report = check_data(data, 1)
    train, val = report.splits["train"], report.splits["val"]
    assert train.samples == 2 and train.sizes == [(230, 310), (230, 310)] and val.samples == 1
    assert train.class_pixels.tolist() == [2 * int((labels == 0).sum()) - 1, 2 * 18000, 2 * 100]
    assert train.class_images.tolist() == [2, 2, 2]
    kinds = {(f.kind, Path(f.file).name) for f in report.findings}
    assert kinds == {("bad_labels", "c.tif"), ("size_mismatch", "d.tif")}
    assert any("values [7]" in f.detail for f in report.findings)
    assert [image.shape for image, _ in report.pictures["train"]] == [(64, 64, 3), (64, 64, 3)]
    assert samples_picture(report).size[0] > 128
    # the channels' statistics in [0, 1], from a sample of every 16th pixel: close to the whole rasters'
    pixels = _raster_pair(tmp_path / "again", "train", "a", labels).reshape(3, -1) / 255  # c's pixels are a's
    statistics = report.to_json()["splits"]["train"]["bands"]
    np.testing.assert_allclose(statistics["mean"], pixels.mean(1), atol=0.02)
    np.testing.assert_allclose(statistics["std"], pixels.std(1), atol=0.02)
    assert statistics["mean"][0] != statistics["mean"][1]  # per channel
    assert "channels as the model reads them" in format_report(report)


def test_a_float_raster_reads_in_unit_range_with_its_nodata_as_zero(tmp_path: Path) -> None:
    values = np.random.default_rng(2).random((3, 30, 40), dtype=np.float32)
    values[:, :5, :7] = -9999.0  # nodata, outside [0, 1]
    _write_geotiff(tmp_path / "reflectance.tif", values, nodata=-9999.0)
    windows = open_raster(tmp_path / "reflectance.tif").read_windows([(0, 0)], (30, 40))
    assert (windows[0, :, :5, :7] == 0).all()
    torch.testing.assert_close(windows[0, :, 5:, 7:], torch.from_numpy(values[:, 5:, 7:]), rtol=0, atol=0)
    values[0, 10, 10] = 1.5  # a pixel outside [0, 1] that is not nodata: refused, naming the file
    _write_geotiff(tmp_path / "bright.tif", values, nodata=-9999.0)
    with pytest.raises(LightsegError, match="bright.tif holds floating-point values outside"):
        open_raster(tmp_path / "bright.tif").read_windows([(0, 0)], (30, 40))
