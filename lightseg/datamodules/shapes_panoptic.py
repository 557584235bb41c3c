"""The shapes scenes in COCO panoptic form: the shapes are things, the background's textures stuff.

Each scene's background is cut by a random line into two regions, each with one of three
textures (a smooth gradient, stripes, checks) in colours of its own (blues, greens, browns);
the circles, squares and triangles are drawn over it as in the other shapes sets, and a
1-pixel band on each side of an object's boundary is void. Written once, in COCO's layout: ``images/{split}/*.jpg``,
``annotations/panoptic_{split}.json`` and its PNG folder ``annotations/panoptic_{split}/``.
"""

from __future__ import annotations

import colorsys
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lightseg.coco_masks import id_to_rgb
from lightseg.datamodules.coco_panoptic import COCOPanopticDataModule
from lightseg.datamodules.io import progress
from lightseg.datamodules.panoptic_files import PanopticCategories
from lightseg.datamodules.settings import CropAugmentation, LoaderSettings, in_process_loader, no_other_arguments
from lightseg.datamodules.shapes import SHAPES_CLASSES, generate_scene, shapes_folder

#: things (the shapes) then stuff (the textures), with COCO panoptic's fields
SHAPES_PANOPTIC_CATEGORIES: list[dict[str, Any]] = [
    *({"id": i, "name": name, "supercategory": "shape", "isthing": 1} for i, name in enumerate(SHAPES_CLASSES) if i),
    {"id": 4, "name": "smooth", "supercategory": "texture", "isthing": 0},
    {"id": 5, "name": "stripes", "supercategory": "texture", "isthing": 0},
    {"id": 6, "name": "checks", "supercategory": "texture", "isthing": 0},
]
STUFF = (4, 5, 6)


#: each texture's hues (as real stuff has its colours: sky blue, grass green, earth brown); shapes take any colour
HUES = {4: (0.52, 0.68), 5: (0.22, 0.40), 6: (0.02, 0.12)}


def _colour(rng: np.random.Generator, hues: tuple[float, float], value: tuple[float, float]) -> np.ndarray:
    red, green, blue = colorsys.hsv_to_rgb(rng.uniform(*hues), rng.uniform(0.45, 0.85), rng.uniform(*value))
    return np.array([red, green, blue]) * 255


def _texture(rng: np.random.Generator, kind: int, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    base, other = _colour(rng, HUES[kind], (0.3, 0.55)), _colour(rng, HUES[kind], (0.7, 0.95))
    if kind == 4:  # a smooth gradient
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * xx + np.sin(angle) * yy
        ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
        return base + ramp[..., None] * (other - base) * 0.6
    if kind == 5:  # stripes of a few pixels
        angle = rng.uniform(0, np.pi)
        wave = np.sin(2 * np.pi * rng.uniform(6, 10) * (np.cos(angle) * xx + np.sin(angle) * yy))
        return base + (wave[..., None] > 0) * (other - base)
    period = rng.uniform(0.08, 0.14)  # checks: a turned checkerboard of squares a few pixels wide
    angle = rng.uniform(0, np.pi / 2)
    u, v = np.cos(angle) * xx + np.sin(angle) * yy, -np.sin(angle) * xx + np.cos(angle) * yy
    checks = (np.floor(u / period) + np.floor(v / period)) % 2
    return base + checks[..., None] * (other - base)


def generate_panoptic_scene(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """One scene: the image, its map of segment numbers (1..N, 0 void) and each segment's category id."""
    kinds = [int(k) for k in rng.choice(STUFF, size=2, replace=False)]
    yy, xx = np.mgrid[0:size, 0:size]
    angle = rng.uniform(0, 2 * np.pi)
    offset = rng.uniform(0.3, 0.7) * size
    side = (np.cos(angle) * (xx - size / 2) + np.sin(angle) * (yy - size / 2) + size / 2) > offset
    background = np.where(side[..., None], _texture(rng, kinds[1], size), _texture(rng, kinds[0], size))
    scene = generate_scene(rng, size, background=background)
    segments = np.zeros((size, size), np.int32)
    categories: list[int] = []
    things = np.zeros((size, size), bool)
    for instance in scene.instances:
        categories.append(instance.category)
        segments[instance.mask] = len(categories)
        things |= instance.mask
    for region, kind in ((~side, kinds[0]), (side, kinds[1])):
        stuff = region & ~things
        if stuff.any():
            categories.append(kind)
            segments[stuff] = len(categories)
    segments[scene.label == 255] = 0  # the void band around each object
    present = set(np.unique(segments).tolist())
    keep = [n for n in range(1, len(categories) + 1) if n in present]
    renumber = np.zeros(len(categories) + 1, np.int32)
    renumber[keep] = np.arange(1, len(keep) + 1)
    return scene.image, renumber[segments], [categories[n - 1] for n in keep]


def write_panoptic(root: Path, splits: dict[str, int], size: int = 64, seed: int = 0) -> Path:
    """Write the panoptic scenes of each split into ``root`` (a temporary folder renamed at the end)."""
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    for split_index, (split, count) in enumerate(splits.items()):
        rng = np.random.default_rng([seed, split_index, 7])
        (tmp / "images" / split).mkdir(parents=True)
        (tmp / "annotations" / f"panoptic_{split}").mkdir(parents=True)
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for image_id in progress(range(1, count + 1), f"writing shapes COCO panoptic ({split})", total=count):
            image, numbers, categories = generate_panoptic_scene(rng, size)
            ids = rng.choice(np.arange(1, 256**3, dtype=np.int64), size=len(categories), replace=False)
            table = np.concatenate([[0], ids])
            name = f"{image_id:06d}"
            Image.fromarray(image).save(tmp / "images" / split / f"{name}.jpg", quality=95)
            Image.fromarray(id_to_rgb(table[numbers])).save(tmp / "annotations" / f"panoptic_{split}" / f"{name}.png")
            segments = []
            for number, (segment, category) in enumerate(zip(ids.tolist(), categories, strict=True), start=1):
                ys, xs = np.nonzero(numbers == number)
                box = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
                segments.append({"id": segment, "category_id": category, "iscrowd": 0, "area": len(ys),
                                 "bbox": box})  # fmt: skip
            images.append({"id": image_id, "file_name": f"{name}.jpg", "height": size, "width": size})
            annotations.append({"image_id": image_id, "file_name": f"{name}.png", "segments_info": segments})
        content = {"info": {"description": "lightseg synthetic shapes, panoptic"}, "licenses": [], "images": images,
                   "annotations": annotations, "categories": SHAPES_PANOPTIC_CATEGORIES}  # fmt: skip
        (tmp / "annotations" / f"panoptic_{split}.json").write_text(json.dumps(content))
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(root)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return root


#: bumped whenever the panoptic scenes change, so caches are rewritten
PANOPTIC_FORMAT_VERSION = 3


#: the shapes panoptic set's loader: 16 small scenes a batch, in this process
SHAPES_PANOPTIC_LOADER = in_process_loader(16)


class ShapesPanopticDataModule(COCOPanopticDataModule):
    """The shapes scenes in COCO panoptic form, written once into the cache (or ``root``) and read as COCO.

    Args:
        root: where the set is written (default: the lightseg cache).
        num_train: training scenes.
        num_val: validation scenes.
        num_test: test scenes.
        image_size: scene side in pixels.
        seed: the scenes' seed.
        augmentation: random horizontal flips in training, and a crop and scale if set (a
            :class:`~lightseg.datamodules.settings.CropAugmentation`).
        loader: how batches are loaded (a :class:`~lightseg.datamodules.settings.LoaderSettings`): 16 per
            batch, in this process.
        predict_dir: folder of images (or one image) for ``lightseg predict``.
        **kwargs: the augmentation's and loader's settings in their older flat spelling (``batch_size=8``).
    """

    def __init__(
        self,
        root: str | None = None,
        num_train: int = 400,
        num_val: int = 100,
        num_test: int = 100,
        image_size: int = 64,
        seed: int = 0,
        augmentation: CropAugmentation = CropAugmentation(),  # noqa: B008 (frozen: one shared default is safe)
        loader: LoaderSettings = SHAPES_PANOPTIC_LOADER,
        predict_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.counts = {"train": num_train, "val": num_val, "test": num_test}
        self.image_size, self.seed = image_size, seed
        name = f"shapes-panoptic-v{PANOPTIC_FORMAT_VERSION}-{image_size}px-{seed}-" + "-".join(
            map(str, self.counts.values())
        )
        self.data_dir = shapes_folder(root, name, image_size)
        augmentation = CropAugmentation.with_flat(augmentation, kwargs)
        loader = LoaderSettings.with_flat(loader, kwargs)
        no_other_arguments(self, kwargs)
        super().__init__(
            str(self.data_dir),
            train_images="images/train", train_annotations="annotations/panoptic_train.json",
            val_images="images/val", val_annotations="annotations/panoptic_val.json",
            test_images="images/test", test_annotations="annotations/panoptic_test.json",
            augmentation=augmentation, loader=loader, predict_dir=predict_dir,
        )  # fmt: skip

    @property
    def categories(self) -> PanopticCategories:
        """Known before the files are written."""
        categories: list[dict[str, Any]] = SHAPES_PANOPTIC_CATEGORIES
        return PanopticCategories(
            tuple(int(c["id"]) for c in categories),
            tuple(str(c["name"]) for c in categories),
            tuple(c["isthing"] == 1 for c in categories),
        )

    def prepare_data(self) -> None:
        if not self.data_dir.is_dir():
            write_panoptic(self.data_dir, self.counts, self.image_size, self.seed)

    def setup(self, stage: str) -> None:
        self.prepare_data()  # no-op when present; lets plain-Python users skip the trainer
        super().setup(stage)
