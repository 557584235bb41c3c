"""The shapes scenes in COCO form: instance and keypoint data sets written once, read as COCO."""

from __future__ import annotations

import json
import os
import shutil
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from lightseg.datamodules.coco import COCOInstanceDataModule, COCOKeypointDataModule
from lightseg.datamodules.coco_format import COCOAnnotations, Kind
from lightseg.datamodules.io import progress
from lightseg.datamodules.settings import FlipAugmentation, LoaderSettings, in_process_loader, no_other_arguments
from lightseg.datamodules.shapes import Instance, generate_scene, shapes_folder

COCO_FORMAT_VERSION = 3  # bumped whenever the COCO-form scenes change, so caches are rewritten


#: the shapes categories in COCO form; keypoints are the triangle's apex and base corners
SHAPES_COCO_CATEGORIES = [
    {"id": 1, "name": "circle", "supercategory": "shape"},
    {"id": 2, "name": "square", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
]
SHAPES_KEYPOINT_CATEGORIES = [
    {
        "id": 3,
        "name": "triangle",
        "supercategory": "shape",
        "keypoints": ["apex", "left_base", "right_base"],
        "skeleton": [[1, 2], [2, 3], [3, 1]],
    }
]


def coco_annotation(instance: Instance, others: list[Instance], annotation_id: int, image_id: int,
                    keypoints: bool) -> dict[str, Any]:  # fmt: skip
    """One scene object as a COCO annotation.

    Unoccluded objects get their polygon (circles as 32-gons), occluded ones the compressed
    RLE of their visible part, so a file holds both encodings. Keypoints: visible (2) unless
    another object covers the point (1), outside the image: ``(0, 0, 0)``.
    """
    from pycocotools import mask as mask_api

    size = instance.mask.shape[0]
    ys, xs = np.nonzero(instance.mask)
    annotation: dict[str, Any] = {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": instance.category,
        "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)],
        "area": float(instance.mask.sum()),
        "iscrowd": 0,
    }
    if instance.occluded:
        rle = mask_api.encode(np.asfortranarray(instance.mask.astype(np.uint8)))
        annotation["segmentation"] = {"size": [size, size], "counts": rle["counts"].decode()}
    else:
        points = instance.points
        if instance.category == 1:  # circle: centre and a rim point
            (cx, cy), (rx, _) = points
            angles = np.linspace(0, 2 * np.pi, 32, endpoint=False)
            points = [(cx + (rx - cx) * np.cos(a), cy + (rx - cx) * np.sin(a)) for a in angles]
        annotation["segmentation"] = [[round(float(v), 2) for xy in points for v in xy]]
    if keypoints:
        values: list[float] = []
        for x, y in instance.points:
            col, row = int(np.floor(x)), int(np.floor(y))
            if not (0 <= col < size and 0 <= row < size):
                values += [0.0, 0.0, 0]
                continue
            covered = any(other.mask[row, col] for other in others)
            values += [round(float(x), 2), round(float(y), 2), 1 if covered else 2]
        annotation["keypoints"] = values
        annotation["num_keypoints"] = sum(1 for v in values[2::3] if v > 0)
    return annotation


def write_coco(root: Path, splits: dict[str, int], size: int = 128, seed: int = 0, kind: str = "instances") -> Path:
    """Write the scenes of each split as a COCO data set into ``root``; returns ``root``.

    Layout: ``images/{split}/{id:06d}.jpg`` and ``annotations/instances_{split}.json`` (every
    object) or ``annotations/person_keypoints_{split}.json`` (scenes of 1-3 upright triangles,
    each with its three keypoints). Written to a temporary folder and renamed.
    """
    keypoints = kind == "keypoints"
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "annotations").mkdir(parents=True)
    prefix = "person_keypoints" if keypoints else "instances"
    for split_index, (split, count) in enumerate(splits.items()):
        rng = np.random.default_rng([seed, split_index])
        (tmp / "images" / split).mkdir(parents=True)
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for image_id in progress(range(1, count + 1), f"writing shapes COCO {kind} ({split})", total=count):
            # keypoint scenes hold upright triangles only: every object is a training signal, and
            # which corner is which is as clear as a person's left and right when standing
            scene = generate_scene(rng, size, categories=(3,) if keypoints else None, upright=keypoints)
            name = f"{image_id:06d}.jpg"
            Image.fromarray(scene.image).save(tmp / "images" / split / name, quality=95)
            images.append({"id": image_id, "file_name": name, "height": size, "width": size})
            for k, instance in enumerate(scene.instances):
                if keypoints and instance.category != 3:
                    continue
                others = [o for j, o in enumerate(scene.instances) if j != k]
                annotations.append(coco_annotation(instance, others, len(annotations) + 1, image_id, keypoints))
        categories = SHAPES_KEYPOINT_CATEGORIES if keypoints else SHAPES_COCO_CATEGORIES
        content = {"info": {"description": "lightseg synthetic shapes"}, "licenses": [], "images": images,
                   "annotations": annotations, "categories": categories}  # fmt: skip
        (tmp / "annotations" / f"{prefix}_{split}.json").write_text(json.dumps(content))
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.rename(root)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return root


#: the shapes COCO sets' loader: 4 scenes a batch, in this process
SHAPES_COCO_LOADER = in_process_loader(4)


class _ShapesCOCO:
    """What the two COCO-format shapes modules share: arguments, cache folder, writer, static categories."""

    kind: ClassVar[Kind]
    categories: ClassVar[list[dict[str, Any]]]
    data_dir: Path
    counts: dict[str, int]
    image_size: int
    seed: int

    def __init__(
        self,
        root: str | None = None,
        num_train: int = 200,
        num_val: int = 50,
        num_test: int = 50,
        image_size: int = 128,
        seed: int = 0,
        augmentation: FlipAugmentation = FlipAugmentation(),  # noqa: B008 (frozen: one shared default is safe)
        loader: LoaderSettings = SHAPES_COCO_LOADER,
        predict_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.counts = {"train": num_train, "val": num_val, "test": num_test}
        self.image_size, self.seed = image_size, seed
        name = f"shapes-coco-{self.kind}-v{COCO_FORMAT_VERSION}-{image_size}px-{seed}-"
        name += "-".join(map(str, self.counts.values()))
        self.data_dir = shapes_folder(root, name, image_size)
        prefix = "person_keypoints" if self.kind == "keypoints" else "instances"
        paths = {}
        for split in ("train", "val", "test"):
            paths[f"{split}_images"] = f"images/{split}"
            paths[f"{split}_annotations"] = f"annotations/{prefix}_{split}.json"
        augmentation = FlipAugmentation.with_flat(augmentation, kwargs)
        loader = LoaderSettings.with_flat(loader, kwargs)
        no_other_arguments(self, kwargs)
        options = {"augmentation": augmentation, "train_skip_empty": True, "loader": loader, "predict_dir": predict_dir}
        super().__init__(str(self.data_dir), **paths, **options)  # type: ignore[call-arg]

    @cached_property
    def reference(self) -> COCOAnnotations:
        """The categories, known before the files are written."""
        return COCOAnnotations("shapes", {"images": [], "annotations": [], "categories": self.categories})

    def prepare_data(self) -> None:
        if not self.data_dir.is_dir():
            write_coco(self.data_dir, self.counts, self.image_size, self.seed, self.kind)

    def setup(self, stage: str) -> None:
        self.prepare_data()  # no-op when present; lets plain-Python users skip the trainer
        super().setup(stage)  # type: ignore[misc]


class ShapesInstanceDataModule(_ShapesCOCO, COCOInstanceDataModule):
    """The shapes scenes as a COCO instance-segmentation data set (circle, square, triangle), written once.

    The same generator as :class:`ShapesDataModule`, written by ``prepare_data`` in the COCO
    layout (polygons for whole objects, RLE for occluded ones) and read back through
    :class:`COCOInstanceDataModule`.

    Args:
        root: cache folder (default: ``$LIGHTSEG_CACHE`` or ``~/.cache/lightseg``).
        num_train: training scenes.
        num_val: validation scenes.
        num_test: test scenes.
        image_size: side of the square images.
        seed: seed of the scene generator.
        augmentation: random horizontal flips in training (a :class:`~lightseg.datamodules.settings.FlipAugmentation`).
        loader: how batches are loaded (a :class:`~lightseg.datamodules.settings.LoaderSettings`): 4 per batch,
            in this process.
        predict_dir: folder of images (or one image) for ``lightseg predict``.
        **kwargs: the augmentation's and loader's settings in their older flat spelling (``batch_size=8``).
    """

    categories = SHAPES_COCO_CATEGORIES


class ShapesKeypointDataModule(_ShapesCOCO, COCOKeypointDataModule):
    """Shapes scenes of triangles as a COCO keypoint data set: apex, left and right base corner.

    Flips swap ``left_base`` and ``right_base``. Arguments as :class:`ShapesInstanceDataModule`.

    Args:
        root: cache folder (default: ``$LIGHTSEG_CACHE`` or ``~/.cache/lightseg``).
        num_train: training scenes.
        num_val: validation scenes.
        num_test: test scenes.
        image_size: side of the square images.
        seed: seed of the scene generator.
        augmentation: random horizontal flips in training (a :class:`~lightseg.datamodules.settings.FlipAugmentation`).
        loader: how batches are loaded (a :class:`~lightseg.datamodules.settings.LoaderSettings`): 4 per batch,
            in this process.
        predict_dir: folder of images (or one image) for ``lightseg predict``.
        **kwargs: the augmentation's and loader's settings in their older flat spelling (``batch_size=8``).
    """

    categories = SHAPES_KEYPOINT_CATEGORIES
