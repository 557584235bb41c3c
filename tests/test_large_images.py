"""Images too large to hold: predicted in tiles read from (Geo)TIFFs, written band by band as tiled GeoTIFFs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.transform import from_origin

from lightseg.callbacks.raster_output import RasterOutput
from lightseg.cli import main
from lightseg.datamodules.io import read_image
from lightseg.datamodules.rasters import open_raster
from lightseg.errors import LightsegError
from lightseg.inference import InferenceSettings, slide_logits, tiled_logits, window_weights

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


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as raster:
        values: np.ndarray = raster.read()
    return values


def _predict(shapes_root: Path, images: Path, out: Path, *extra: str) -> None:
    main(["predict", "--config", QUICKSTART, f"--data.init_args.root={shapes_root}", "--seed_everything=0",
          "--trainer.enable_progress_bar=false", f"--data.init_args.predict_dir={images}",
          f"--prediction.output_dir={out}", *WINDOWS, *extra])  # fmt: skip


def test_tiled_windows_equal_the_in_memory_sliding_window() -> None:
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 5, 5, padding=2), nn.ReLU(), nn.Conv2d(5, 5, 3, padding=1))
    image = torch.rand(1, 3, 103, 157)

    def read(boxes: list[tuple[int, int]], size: tuple[int, int]) -> torch.Tensor:
        return torch.cat([image[..., y : y + size[0], x : x + size[1]] for y, x in boxes])

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
             "--prediction.probabilities=all")  # fmt: skip
    assert "predicted 2 images: masks/ and overlays/ in" in capsys.readouterr().err
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


def test_a_stopped_prediction_resumes_at_its_first_unwritten_row(
    shapes_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    images = tmp_path / "images"
    _write_geotiff(images / "scene.tif", _scene(), nodata=0)
    tiles = ["--data.init_args.predict_tile_above=100", "--prediction.probabilities=top", "--prediction.overlays=false"]
    _predict(shapes_root, images, tmp_path / "whole", *tiles)
    capsys.readouterr()

    put = RasterOutput._write_rows
    calls = []

    def full_disk(self: RasterOutput, name: str, first: int, values: np.ndarray) -> None:
        calls.append(first)
        if len(calls) == 5:  # two bands of labels and probabilities went, the third band's labels do not
            raise OSError(28, "No space left on device")
        put(self, name, first, values)

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
    assert 0 < kept["rows_done"] < 230 and kept["rows_done"] == calls[4]  # the two bands written in full

    monkeypatch.setattr(RasterOutput, "_write_rows", put)
    _predict(shapes_root, images, out, *tiles)
    assert f"scene.tif: resuming after row {kept['rows_done']} of 230" in capsys.readouterr().err
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
