"""The embedded synthetic shapes data set: scenes, a VOC-layout writer and its data module.

Scenes are generated deterministically from a seed; :func:`write_voc` stores them once in
the PASCAL VOC on-disk layout (JPEG images, palette PNG masks with 255 void borders,
``ImageSets/Segmentation`` split files) and :class:`ShapesDataModule` reads them back
through the same reader the VOC data module uses. The generator is separate from the
writer so the same scenes can be written in other formats (COCO JSON) too.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from torch.utils.data import Dataset

from lightseg.colors import voc_colormap
from lightseg.datamodules.base import SplitDataModule
from lightseg.datamodules.io import progress
from lightseg.datamodules.settings import LoaderSettings, SemanticAugmentation, in_process_loader, no_other_arguments
from lightseg.datamodules.voc import VOCSegmentationDataset
from lightseg.errors import LightsegError

SHAPES_CLASSES = ("background", "circle", "square", "triangle")
FORMAT_VERSION = 1
SUPERSAMPLE = 4
MIN_VISIBLE = 0.6  # fraction of an object that must stay visible under later ones


@dataclass
class Instance:
    """One object of a scene: its class, visible mask and defining points (pixel coordinates)."""

    category: int
    mask: np.ndarray
    points: list[tuple[float, float]] = field(default_factory=list)
    occluded: bool = False


@dataclass
class Scene:
    """A rendered scene: ``image`` uint8 ``[H,W,3]``, ``label`` uint8 ``[H,W]`` (255 = void)."""

    image: np.ndarray
    label: np.ndarray
    instances: list[Instance]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * xx + np.sin(angle) * yy
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    image = c0 + ramp[..., None] * (c1 - c0)
    for _ in range(3):  # low-frequency texture: a few random plane waves
        freq = rng.uniform(2, 9)
        theta = rng.uniform(0, np.pi)
        phase = rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * freq * (np.cos(theta) * xx + np.sin(theta) * yy) + phase)
        image += wave[..., None] * rng.uniform(5, 30, 3)
    return image


def _shape_points(
    rng: np.random.Generator, category: int, cx: float, cy: float, r: float, upright: bool = False
) -> list[tuple[float, float]]:
    # upright triangles point their apex up (+-45 degrees), as people in photos stand
    rot = -np.pi / 2 + rng.uniform(-np.pi / 4, np.pi / 4) if upright else rng.uniform(0, 2 * np.pi)
    if category == 1:  # circle: centre and a point on the rim
        return [(cx, cy), (cx + r, cy)]
    if category == 2:  # square, tilted by at most 30 degrees (more would make small ones look round)
        tilt = rng.uniform(-np.pi / 6, np.pi / 6)
        angles = tilt + np.pi / 4 + np.arange(4) * np.pi / 2
        return [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in angles]
    # isosceles triangle: apex, left base, right base (as seen from the apex)
    half = rng.uniform(0.6, 0.9)
    apex = (cx + r * np.cos(rot), cy + r * np.sin(rot))
    left = (cx + r * np.cos(rot + np.pi - half), cy + r * np.sin(rot + np.pi - half))
    right = (cx + r * np.cos(rot + np.pi + half), cy + r * np.sin(rot + np.pi + half))
    return [apex, left, right]


def _rasterise(category: int, points: list[tuple[float, float]], size: int, scale: int) -> np.ndarray:
    canvas = Image.new("L", (size * scale, size * scale), 0)
    draw = ImageDraw.Draw(canvas)
    pts = [(x * scale, y * scale) for x, y in points]
    if category == 1:
        (cx, cy), (rx, _) = pts
        r = rx - cx
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:
        draw.polygon(pts, fill=255)
    return np.asarray(canvas, dtype=np.float32) / 255


# Each class has a loose hue family (circle red, square green, triangle blue, +-25 degrees) with
# random saturation and brightness, while backgrounds take any colour: colour is a partial cue,
# shape has to settle the rest. With fully random colours a from-scratch U-Net needs several
# thousand steps instead of the few hundred the CPU quickstart can afford.
CLASS_HUES = {1: 0.0, 2: 1 / 3, 3: 2 / 3}


def _class_colour(rng: np.random.Generator, category: int) -> np.ndarray:
    import colorsys

    hue = (CLASS_HUES[category] + rng.uniform(-25, 25) / 360) % 1.0
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))
    return np.array(rgb) * 255


def generate_scene(
    rng: np.random.Generator,
    size: int = 64,
    max_objects: int = 3,
    categories: tuple[int, ...] | None = None,
    upright: bool = False,
    background: np.ndarray | None = None,
) -> Scene:
    """One scene: 1..``max_objects`` circles, squares and isosceles triangles on a textured background.

    Object colours come from a loose hue family per class and backgrounds from any colour, so
    colour alone is ambiguous and shape settles the rest; objects
    may overlap (later ones occlude earlier ones, each keeping >= 60 % visible), and a
    1-pixel band on each side of every object boundary is void (255), like VOC's borders. Rendering is anti-aliased.
    ``categories`` restricts the classes drawn (default: all three, uniformly); ``upright``
    turns triangles apex-up (+-45 degrees) instead of any way; ``background`` (float ``[H,W,3]``)
    replaces the textured background.
    """
    image = _background(rng, size) if background is None else background.astype(np.float64)
    label = np.zeros((size, size), dtype=np.uint8)
    owner = np.full((size, size), -1, dtype=np.int32)
    shapes: list[tuple[int, list[tuple[float, float]], np.ndarray]] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        category = int(rng.integers(1, len(SHAPES_CLASSES)) if categories is None else rng.choice(categories))
        for _attempt in range(10):
            r = rng.uniform(0.15, 0.3) * size
            cx, cy = rng.uniform(0.15, 0.85, 2) * size
            points = _shape_points(rng, category, float(cx), float(cy), float(r), upright)
            cover = _rasterise(category, points, size, SUPERSAMPLE)
            coverage = cover.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))
            inside = coverage >= 0.5
            # overlap, but never so much that an earlier object is reduced to an ambiguous sliver
            if all(((owner == k) & ~inside).sum() >= MIN_VISIBLE * full.sum() for k, (*_, full) in enumerate(shapes)):
                break
        else:
            continue
        colour = _class_colour(rng, category)
        shade = colour + rng.normal(0, 6, (size, size, 3))
        image = image * (1 - coverage[..., None]) + shade * coverage[..., None]
        owner[inside] = len(shapes)
        label[inside] = category
        shapes.append((category, points, inside))
    image += rng.normal(0, 8, image.shape)
    void = np.zeros_like(label, dtype=bool)
    instances = []
    for index, (category, points, full) in enumerate(shapes):
        visible = owner == index
        if not visible.any():
            continue
        band = ndimage.binary_dilation(visible) & ~ndimage.binary_erosion(visible)
        void |= band
        instances.append(Instance(category, visible, points, occluded=bool((full & ~visible).any())))
    label[void] = 255
    return Scene(np.clip(image, 0, 255).astype(np.uint8), label, instances)


def _palette_png(label: np.ndarray) -> Image.Image:
    png = Image.fromarray(label, mode="P")
    png.putpalette(voc_colormap().ravel().tolist())
    return png


def write_voc(root: Path, splits: dict[str, int], size: int = 64, seed: int = 0) -> Path:
    """Write scenes for each split into ``root`` in the VOC 2012 layout; returns ``root``.

    Writes to a temporary sibling folder and renames it at the end, so an interrupted
    run never leaves a half-written data set behind.
    """
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (tmp / sub).mkdir(parents=True)
    for split_index, (split, count) in enumerate(splits.items()):
        rng = np.random.default_rng([seed, split_index])
        ids = [f"{split}_{i:05d}" for i in range(count)]
        for image_id in progress(ids, f"writing shapes data set ({split})"):
            scene = generate_scene(rng, size)
            Image.fromarray(scene.image).save(tmp / "JPEGImages" / f"{image_id}.jpg", quality=95)
            _palette_png(scene.label).save(tmp / "SegmentationClass" / f"{image_id}.png")
        (tmp / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(root)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def default_cache_dir() -> Path:
    """``$LIGHTSEG_CACHE``, else ``$XDG_CACHE_HOME/lightseg``, else ``~/.cache/lightseg``."""
    if "LIGHTSEG_CACHE" in os.environ:
        return Path(os.environ["LIGHTSEG_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lightseg"


#: the smallest scene side on which the shapes (with their void borders) are drawn
MIN_IMAGE_SIZE = 16


def shapes_folder(root: str | None, name: str, image_size: int) -> Path:
    """``root / name`` (``root`` defaulting to the cache), refusing an image size or a root that cannot work."""
    if image_size < MIN_IMAGE_SIZE:
        raise LightsegError(f"image_size must be at least {MIN_IMAGE_SIZE} pixels for the shapes set, got {image_size}")
    base = Path(root) if root is not None else default_cache_dir()
    what = "root" if root is not None else "the cache folder ($LIGHTSEG_CACHE or ~/.cache/lightseg)"
    for folder in (base, *base.parents):
        if folder.exists():
            if not folder.is_dir():
                raise LightsegError(f"{what} {base}: {folder} is a file, not a folder; choose another folder")
            break
    return base / name


#: the shapes' training augmentation: flips both ways (a scene has no up)
SHAPES_AUGMENTATION = SemanticAugmentation(vflip=True)
#: the shapes' loader: 16 small scenes a batch, in this process
SHAPES_LOADER = in_process_loader(16)


class ShapesDataModule(SplitDataModule):
    """Synthetic circles, squares and triangles in the VOC layout, written once on first use.

    Classes: background, circle, square, triangle (``num_classes = 4``). The scenes depend
    only on the arguments below, so every machine writes the same data set; it lands in
    ``root/shapes-v{version}-{image_size}px-{seed}-{num_train}-{num_val}-{num_test}``.

    Args:
        root: cache folder (default: ``$LIGHTSEG_CACHE`` or ``~/.cache/lightseg``).
        num_train: training scenes.
        num_val: validation scenes (never seen in training).
        num_test: test scenes.
        image_size: side of the square images in pixels.
        seed: seed of the scene generator.
        augmentation: the training augmentation (a :class:`~lightseg.datamodules.settings.SemanticAugmentation`):
            horizontal and vertical flips; a ``scale_range`` rescales, then crops / pads back to ``image_size``.
        loader: how batches are loaded (a :class:`~lightseg.datamodules.settings.LoaderSettings`): 16 per
            batch, in this process (the scenes are small; workers would cost more than they bring).
        predict_dir: folder of images (or one image) for ``lightseg predict``.
        predict_tile_above: TIFF images with a side longer than this are predicted in tiles.
        **kwargs: the augmentation's and loader's settings in their older flat spelling (``batch_size=8``).
    """

    num_classes = len(SHAPES_CLASSES)
    class_names = SHAPES_CLASSES

    def __init__(
        self,
        root: str | None = None,
        num_train: int = 400,
        num_val: int = 100,
        num_test: int = 100,
        image_size: int = 64,
        seed: int = 0,
        augmentation: SemanticAugmentation = SHAPES_AUGMENTATION,
        loader: LoaderSettings = SHAPES_LOADER,
        predict_dir: str | None = None,
        predict_tile_above: int = 4096,
        **kwargs: Any,
    ) -> None:
        augmentation = SemanticAugmentation.with_flat(augmentation, kwargs)
        loader = LoaderSettings.with_flat(loader, kwargs)
        no_other_arguments(self, kwargs)
        if augmentation.scale_range is not None and augmentation.crop_size is None:
            augmentation = dataclasses.replace(augmentation, crop_size=image_size)  # back to the set's size
        super().__init__(
            "train", "val", "test", augmentation, loader=loader, predict_dir=predict_dir,
            predict_tile_above=predict_tile_above,
        )  # fmt: skip
        self.counts = {"train": num_train, "val": num_val, "test": num_test}
        self.image_size = image_size
        self.seed = seed
        name = f"shapes-v{FORMAT_VERSION}-{image_size}px-{seed}-{num_train}-{num_val}-{num_test}"
        self.data_dir = shapes_folder(root, name, image_size)

    def prepare_data(self) -> None:
        if not self.data_dir.is_dir():
            write_voc(self.data_dir, self.counts, self.image_size, self.seed)

    def setup(self, stage: str) -> None:
        self.prepare_data()  # no-op when present; lets plain-Python users skip the trainer
        super().setup(stage)

    def make_dataset(self, split: str, transforms: Callable[..., Any] | None) -> Dataset[Any]:
        return VOCSegmentationDataset(self.data_dir, split, self.num_classes, transforms)
