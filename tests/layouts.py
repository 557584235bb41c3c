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


def write_ade20k(root: Path, splits: dict[str, int]) -> Path:
    """``ADEChallengeData2016`` below ``root``: JPEG images and grey annotation PNGs, as the release.

    Each annotation: 0 (other objects, not evaluated) in the left column, wall (1) on top, a
    band of floor (4), and flag (150, the last class) in the bottom-right corner.
    """
    release = root / "ADEChallengeData2016"
    for split, count in splits.items():
        folder = "training" if split == "train" else "validation"
        for k in range(count):
            name = f"ADE_{'train' if split == 'train' else 'val'}_{k + 1:08d}"
            path = release / "images" / folder / f"{name}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng(k + (0 if split == "train" else 1000))  # no image in both splits
            Image.fromarray(rng.integers(0, 255, (*SIZE, 3), dtype=np.uint8)).save(path, quality=90)
            labels = np.ones(SIZE, dtype=np.uint8)
            labels[6:10] = 4
            labels[-3:, -3:] = 150
            labels[:, 0] = 0
            out = release / "annotations" / folder / f"{name}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(labels, mode="L").save(out)
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


# Labelling tools' semantic exports, each as its tool writes it (names, folders, class lists)
EXPORT_CLASSES = ("background", "cat", "dog")
CVAT_COLOURS = ((0, 0, 0), (250, 50, 83), (61, 245, 61))


def export_label(k: int, size: tuple[int, int] = SIZE, void: bool = False) -> np.ndarray:
    """Scene ``k``'s labels: a cat (k % 3 == 0), a dog (1) or both (2); ``void`` adds an ignored corner."""
    label = np.zeros(size, dtype=np.uint8)
    if k % 3 in (0, 2):
        label[2:7, 3:9] = 1
    if k % 3 in (1, 2):
        label[7:11, 9:15] = 2
    if void:
        label[0:2, 0:3] = 255
    return label


def _palette_png(label: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    png = Image.fromarray(label, mode="P")
    png.putpalette(voc_colormap().ravel().tolist())
    png.save(path)


def write_labelme(root: Path, count: int, version: str = "png") -> Path:
    """``labelme2voc.py``'s output: ``png`` (SegmentationClass/ PNGs + SegmentationClassNpy/), ``old``
    (SegmentationClass/ .npy + SegmentationClassPNG/), ``npy`` (only the arrays); -1/255 = ``__ignore__``.
    """
    for k in range(count):
        name = f"2011_{k:06d}"
        _image(root / "JPEGImages" / f"{name}.jpg", 500 + k)
        label = export_label(k, void=k == 0)
        as_npy = np.where(label == 255, -1, label).astype(np.int32)
        if version == "png":
            _palette_png(label, root / "SegmentationClass" / f"{name}.png")
        if version == "old":
            _palette_png(label, root / "SegmentationClassPNG" / f"{name}.png")
        npy_folder = root / ("SegmentationClass" if version == "old" else "SegmentationClassNpy")
        npy_folder.mkdir(parents=True, exist_ok=True)
        np.save(npy_folder / f"{name}.npy", as_npy)
    (root / "class_names.txt").write_text("_background_\ncat\ndog")  # written without a final newline
    return root


def write_cvat(root: Path, count: int, subsets: dict[str, list[int]] | None = None) -> Path:
    """CVAT's "Segmentation mask 1.1": RGB masks in labelmap.txt's colours, the subset lists."""
    colours = np.array(CVAT_COLOURS, dtype=np.uint8)
    for k in range(count):
        _image(root / "JPEGImages" / f"frame_{k:06d}.jpg", 600 + k)
        (root / "SegmentationClass").mkdir(parents=True, exist_ok=True)
        Image.fromarray(colours[export_label(k)]).save(root / "SegmentationClass" / f"frame_{k:06d}.png")
    (root / "labelmap.txt").write_text(
        "# label:color_rgb:parts:actions\n"
        + "".join(f"{n}:{','.join(map(str, c))}::\n" for n, c in zip(EXPORT_CLASSES, CVAT_COLOURS, strict=True))
    )
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    for subset, ks in (subsets or {"default": list(range(count))}).items():
        (lists / f"{subset}.txt").write_text("".join(f"frame_{k:06d}\n" for k in ks))
    return root


def roboflow_name(k: int) -> str:
    return f"photo{k}_jpg.rf.{k:032x}"


def write_roboflow(root: Path, splits: dict[str, list[int]]) -> Path:
    """Roboflow's "Semantic Segmentation Masks": x.jpg beside x_mask.png in train/, valid/, test/."""
    for folder, ks in splits.items():
        for k in ks:
            _image(root / folder / f"{roboflow_name(k)}.jpg", 700 + k)
            Image.fromarray(export_label(k)).save(root / folder / f"{roboflow_name(k)}_mask.png")
        (root / folder / "_classes.csv").write_text("Pixel Value, Class\n0, background\n1, cat\n2, dog\n")
    return root


def write_labelstudio_coco(root: Path, count: int) -> Path:
    """Label Studio's COCO export: images/ and result.json (category ids from 0, file names under images/)."""
    images, annotations = [], []
    for k in range(count):
        _image(root / "images" / f"shot{k}.jpg", 800 + k)
        images.append({"id": k, "file_name": f"images/shot{k}.jpg", "width": SIZE[1], "height": SIZE[0]})
        label = export_label(k)
        for category in (0, 1):
            ys, xs = np.nonzero(label == category + 1)
            if not len(ys):
                continue
            x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
            annotations.append({
                "id": len(annotations), "image_id": k, "category_id": category, "iscrowd": 0,
                "segmentation": [[x0, y0, x1, y0, x1, y1, x0, y1]], "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": (x1 - x0) * (y1 - y0),
            })  # fmt: skip
    content = {
        "images": images, "annotations": annotations,
        "categories": [{"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}],
        "info": {"description": "Label Studio"},
    }  # fmt: skip
    (root / "result.json").write_text(json.dumps(content))
    return root


def write_labelstudio_brush(root: Path, count: int) -> Path:
    """Label Studio's brush PNG export (one 0/255 PNG per region) with the project's JSON export beside it.

    Task ``100 + k`` shows ``images/shot{k}.jpg`` (uploaded as ``<8 hex>-shot{k}.jpg``); one more task
    has no annotation and no PNG.
    """
    tasks = []
    for k in range(count):
        _image(root / "images" / f"shot{k}.jpg", 900 + k)
        label = export_label(k)
        results = []
        for index, name in ((1, "cat"), (2, "dog")):
            if not (label == index).any():
                continue
            results.append({"from_name": "tag", "to_name": "image", "type": "brushlabels",
                            "value": {"format": "rle", "rle": [0], "brushlabels": [name]}})  # fmt: skip
            png = root / "masks" / f"task-{100 + k}-annotation-{200 + k}-by-1-tag-{name}-0.png"
            png.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(((label == index) * 255).astype(np.uint8)).save(png)
        tasks.append({"id": 100 + k, "data": {"image": f"/data/upload/1/{k:08x}-shot{k}.jpg"},
                      "annotations": [{"id": 200 + k, "result": results}]})  # fmt: skip
    tasks.append({"id": 999, "data": {"image": "/data/upload/1/0000abcd-unlabelled.jpg"}, "annotations": []})
    (root / "project-1-at-2026-12-01.json").write_text(json.dumps(tasks))
    return root
