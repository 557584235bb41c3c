"""One palette per data set: colours far apart (CIEDE2000), the data set's own where it has them, legible overlays."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightseg.colors import DISTINCT, ciede2000, class_palette, rgb_to_lab, voc_colormap
from lightseg.contract import data_palette
from lightseg.data_check import check_data
from lightseg.data_check.report import write_report
from lightseg.datamodules import CityscapesDataModule, SegmentationFolderDataModule, VOCDataModule
from lightseg.visualize import annotated_overlay, legend

from layouts import CVAT_COLOURS, write_cvat


@pytest.mark.parametrize(
    ("lab1", "lab2", "expected"),
    [((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
     ((50.0, 2.5, 0.0), (50.0, 3.1736, 0.5854), 1.0000),
     ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
     ((22.7233, 20.0904, -46.6940), (23.0331, 14.9730, -42.5619), 2.0373),
     ((90.8027, -2.0831, 1.4410), (91.1528, -1.6435, 0.0447), 1.4441)],
)  # fmt: skip
def test_ciede2000_gives_the_published_test_values(
    lab1: tuple[float, ...], lab2: tuple[float, ...], expected: float
) -> None:
    # Sharma, Wu and Dalal (2005), Table 1
    assert float(ciede2000(np.array(lab1), np.array(lab2))) == pytest.approx(expected, abs=1e-4)


def test_every_pair_of_the_first_30_class_colours_is_far_apart() -> None:
    palette = class_palette()
    colours = palette[:31].astype(int)  # background and 30 classes
    with_void = np.concatenate([colours, palette[255:256]])
    lab = rgb_to_lab(with_void)
    closest = min(float(ciede2000(lab[a], lab[b])) for a, b in itertools.combinations(range(len(lab)), 2))
    assert closest >= 17.0
    assert len(DISTINCT) == 30
    # the palette of the complaint had two classes 3 units apart: (243, 195, 0) and (242, 190, 36)
    assert float(ciede2000(rgb_to_lab(np.array([243, 195, 0])), rgb_to_lab(np.array([242, 190, 36])))) < 6


def test_a_data_set_keeps_its_own_colours_everywhere(tmp_path: Path) -> None:
    assert (data_palette(VOCDataModule(root=str(tmp_path)))[:21] == voc_colormap(21)).all()
    cityscapes = data_palette(CityscapesDataModule(root=str(tmp_path)))
    assert tuple(cityscapes[0]) == (128, 64, 128)  # road
    cvat = SegmentationFolderDataModule(str(write_cvat(tmp_path / "cvat", 4)), num_workers=0)
    palette = data_palette(cvat)
    assert [tuple(int(v) for v in palette[k]) for k in range(3)] == list(CVAT_COLOURS)
    # the data check's picture draws the masks and the legend in them
    report = check_data(cvat, 1)
    _, png = write_report(report, tmp_path / "check")
    pixels = np.asarray(Image.open(png).convert("RGB"))
    for colour in CVAT_COLOURS[1:]:
        assert (pixels == colour).all(-1).sum() > 50, colour


def test_overlay_borders_carry_the_legend_colour_over_any_background() -> None:
    palette = class_palette()
    image = np.zeros((32, 32, 3), np.uint8)
    image[:] = (40, 90, 230)  # a blue thing under the region: a blend alone would read as another class
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 2
    picture = annotated_overlay(image, mask, ["background", "a", "b"], colours=palette)
    factor = 8  # 32 px is enlarged to 256
    region = picture[8 * factor : 24 * factor, 8 * factor : 24 * factor]
    border = np.concatenate([region[:2].reshape(-1, 3), region[-2:].reshape(-1, 3),
                             region[:, :2].reshape(-1, 3), region[:, -2:].reshape(-1, 3)])  # fmt: skip
    assert (border == palette[2]).all()  # an opaque border, at least 2 pixels wide, in the class colour
    inside = region[8 * factor // 2, 8 * factor // 2]
    assert not (inside == palette[2]).all() and not (inside == image[0, 0]).all()  # translucent: both show
    key = picture[256:]
    assert (key == palette[2]).all(-1).sum() >= 100  # the legend's swatch is the border's colour
    swatch = legend([(2, "b")], 200, palette)
    assert (swatch == palette[2]).all(-1).sum() >= 100
