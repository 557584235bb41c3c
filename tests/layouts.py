"""Writers of tiny data sets in the official on-disk layouts (VOC 2012, SBD, Cityscapes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import io as sio

from lightseg.colors import voc_colormap

SIZE = (12, 16)  # H, W


def _image(path: Path, seed: int, size: tuple[int, int] = SIZE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)


def label_for(seed: int, num_classes: int = 21, size: tuple[int, int] = SIZE) -> np.ndarray:
    """A label map: background, one object of class 1 + seed % (num_classes - 1) with a 255 border."""
    label = np.zeros(size, dtype=np.uint8)
    cls = 1 + seed % (num_classes - 1)
    label[3:9, 4:12] = 255
    label[4:8, 5:11] = cls
    return label


MIXED_SIZES = ((12, 16), (15, 21), (20, 13), (17, 18), (9, 24))  # H, W: VOC's images differ in size too


def write_voc(
    root: Path,
    splits: dict[str, list[str]],
    extra_images: list[str] = (),  # type: ignore[assignment]
    mixed_sizes: bool = False,
) -> Path:
    """``root/VOCdevkit/VOC2012`` with palette masks for every id in ``splits``.

    With ``mixed_sizes`` the images take the sizes of :data:`MIXED_SIZES` in turn.
    """
    voc = root / "VOCdevkit" / "VOC2012"
    ids = sorted({i for split in splits.values() for i in split})
    sizes = {i: MIXED_SIZES[k % len(MIXED_SIZES)] if mixed_sizes else SIZE for k, i in enumerate(ids)}
    for image_id in [*ids, *extra_images]:
        _image(voc / "JPEGImages" / f"{image_id}.jpg", _seed(image_id), sizes.get(image_id, SIZE))
    (voc / "SegmentationClass").mkdir(parents=True, exist_ok=True)
    for image_id in ids:
        png = Image.fromarray(label_for(_seed(image_id), size=sizes[image_id]), mode="P")
        png.putpalette(voc_colormap().ravel().tolist())
        png.save(voc / "SegmentationClass" / f"{image_id}.png")
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
    for split, split_ids in splits.items():
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{i}\n" for i in split_ids))
    return voc


def write_sbd(root: Path, train: list[str], val: list[str]) -> Path:
    """``root/benchmark_RELEASE/dataset`` with ``cls/*.mat`` class labels (SBD labels: seed + 1)."""
    dataset = root / "benchmark_RELEASE" / "dataset"
    (dataset / "cls").mkdir(parents=True, exist_ok=True)
    for image_id in [*train, *val]:
        _image(dataset / "img" / f"{image_id}.jpg", _seed(image_id) + 1000)
        seg = label_for(_seed(image_id) + 1)
        seg[seg == 255] = 0  # SBD class labels have no void border
        gt = {"Segmentation": seg, "Boundaries": np.zeros(1), "CategoriesPresent": np.unique(seg[seg > 0])}
        sio.savemat(dataset / "cls" / f"{image_id}.mat", {"GTcls": gt})
    (dataset / "train.txt").write_text("".join(f"{i}\n" for i in train))
    (dataset / "val.txt").write_text("".join(f"{i}\n" for i in val))
    return dataset


def write_cityscapes(root: Path, frames: dict[str, list[str]], kind: str = "labelIds") -> Path:
    """``leftImg8bit`` + ``gtFine`` with label files of ``kind`` (labelIds, labelTrainIds, instanceIds).

    Every frame: road (id 7 / train 0) on top, a car (id 26 / train 13, instance 26001) in the
    middle, parking (id 9, not evaluated) at the bottom, an unlabeled (id 0) column on the left.
    """
    for split, names in frames.items():
        for frame in names:
            city = frame.split("_")[0]
            _image(root / "leftImg8bit" / split / city / f"{frame}_leftImg8bit.png", _seed(frame))
            ids = np.full(SIZE, 7, dtype=np.int32)
            ids[4:8] = 26
            ids[8:] = 9
            ids[:, 0] = 0
            if kind == "labelIds":
                array, mode = ids.astype(np.uint8), "L"
            elif kind == "labelTrainIds":
                lut = np.full(256, 255, dtype=np.uint8)
                lut[7], lut[26] = 0, 13
                array, mode = lut[ids], "L"
            else:
                array, mode = np.where(ids == 26, 26001, ids).astype(np.uint16), "I;16"
            out = root / "gtFine" / split / city / f"{frame}_gtFine_{kind}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array, mode=mode if mode == "L" else None).save(out)
    return root


# COCO's category ids and names (not contiguous); torchvision's COCO predictors use the ids as slots
COCO_SUBSET = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 3, "name": "car"}]


def write_coco(root: Path, images: int = 4, size: int = 64) -> dict:
    """``root/val2017`` + ``root/annotations/instances_val2017.json``: every image holds one dog filling it.

    Returns the annotation file's content (image ids 100, 101, ...).
    """
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    entries, annotations = [], []
    for k in range(images):
        name = f"{k:06d}.jpg"
        _image(root / "val2017" / name, k, (size, size))
        entries.append({"id": 100 + k, "file_name": name, "height": size, "width": size})
        polygon = [0.0, 0.0, float(size), 0.0, float(size), float(size), 0.0, float(size)]
        annotations.append(
            {
                "id": k + 1,
                "image_id": 100 + k,
                "category_id": 18,
                "bbox": [0.0, 0.0, float(size), float(size)],
                "area": float(size * size),
                "iscrowd": 0,
                "segmentation": [polygon],
            }
        )
    data = {"images": entries, "annotations": annotations, "categories": COCO_SUBSET}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    return data


def _seed(image_id: str) -> int:
    return sum(ord(c) * (i + 1) for i, c in enumerate(image_id)) % 1000


FOLDER_COLORS = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255)]


def write_folder(root: Path, names: list[str], mask_format: str, mask_ext: str = ".png") -> Path:
    """``root/images/<name>.jpg`` + ``root/masks/<name><mask_ext>`` in one of the own-data mask formats.

    Labels are :func:`label_for` with 4 classes (``binary``: 0 / 255), void borders as 255 in
    ``index``/``palette`` masks and as background where the format has no void (``rgb``, ``binary``).
    """
    for k, name in enumerate(names):
        size = MIXED_SIZES[k % len(MIXED_SIZES)]
        _image(root / "images" / f"{name}.jpg", k, size)
        label = label_for(k, num_classes=4, size=size)
        out = root / "masks" / f"{name}{mask_ext}"
        out.parent.mkdir(parents=True, exist_ok=True)
        if mask_format == "index":
            Image.fromarray(label, mode="L").save(out)
        elif mask_format == "index16":
            Image.fromarray(label.astype(np.uint16)).save(out)  # a 16-bit PNG or TIFF
        elif mask_format == "palette":
            png = Image.fromarray(label, mode="P")
            png.putpalette(list(np.random.default_rng(k).integers(0, 255, 768)))  # palettes differ per file
            png.save(out)
        elif mask_format == "rgb":
            colors = np.array([*FOLDER_COLORS, *[(0, 0, 0)] * 252], dtype=np.uint8)
            Image.fromarray(colors[np.where(label == 255, 0, label)]).save(out)
        elif mask_format == "binary":
            Image.fromarray(np.where((label > 0) & (label < 255), 255, 0).astype(np.uint8), mode="L").save(out)
    return root
