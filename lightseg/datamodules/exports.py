"""Labelling tools' semantic exports, read as they are: the layout is recognised from the folder.

Each tool writes its own layout and its own class list:

- lightseg's own folders: ``images/`` + ``masks/`` (``classes.yaml`` or ``classes.txt``);
- labelme (``labelme2voc.py``): ``JPEGImages/``, palette PNGs in ``SegmentationClass/`` (or
  ``SegmentationClassPNG/`` in older versions; ``.npy`` arrays in ``SegmentationClassNpy/``),
  ``class_names.txt`` with ``_background_`` first;
- CVAT "Segmentation mask 1.1": ``labelmap.txt`` (``name:r,g,b:parts:actions``), colour
  masks in ``SegmentationClass/``, ``ImageSets/Segmentation/<subset>.txt``, images in
  ``JPEGImages/``;
- Roboflow "Semantic Segmentation Masks": ``train/``, ``valid/``, ``test/``, each holding
  ``x.jpg`` beside ``x_mask.png`` (class indices) and ``_classes.csv`` (pixel value, class);
- Label Studio: its COCO export (``result.json`` + ``images/``) and its brush PNG export
  (one ``task-<id>-annotation-<id>-by-<who>-<tag>-<label>-<n>.png`` per region, paired with
  the images through the project's JSON export).

:func:`recognise` says which one a folder is; :func:`read_class_list` reads every class
list format.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from lightseg.errors import LightsegError

LayoutName = Literal["auto", "folder", "labelme", "cvat", "roboflow", "labelstudio"]
LAYOUTS: tuple[str, ...] = ("folder", "labelme", "cvat", "roboflow", "labelstudio")
Colour = tuple[int, int, int]
#: a labelme labels file's entry for pixels left out (-1 in its ``.npy``, 255 in its PNG)
LABELME_IGNORE = "__ignore__"
#: Roboflow's split folders by lightseg's split names
ROBOFLOW_SPLITS = {"train": "train", "val": "valid", "test": "test"}
#: the file name of a Label Studio brush PNG: task id, annotation id, annotator, then tag, label and index
BRUSH_PNG = re.compile(r"^task-(\d+)-annotation-(\d+)-by-([^-]*)-(.+)-(\d+)$")


@dataclass(frozen=True)
class ClassList:
    """Class names (background first) and, where the list gives them, their colours."""

    names: tuple[str, ...]
    colors: list[Colour] | None = None


@dataclass(frozen=True)
class Layout:
    """Where a data set's images, masks, class list and splits are.

    Attributes:
        name: ``folder``, ``labelme``, ``cvat``, ``roboflow``, ``labelstudio`` (brush PNGs) or
            ``labelstudio-coco``.
        title: how messages call it (``a labelme export (labelme2voc)``).
        images: the image folder.
        masks: the mask folder.
        image_suffix: removed from image names before pairing.
        mask_suffix: removed from mask names before pairing (Roboflow's ``_mask``).
        class_file: the export's class list, if it has one.
        split_files: split name -> list of names (``all`` for a list to split by hash).
        split_folders: split name -> sub-folder of ``images`` and ``masks``.
        annotations: the annotation file (Label Studio's COCO ``result.json`` or JSON export).
    """

    name: str
    title: str
    images: Path
    masks: Path
    image_suffix: str = ""
    mask_suffix: str = ""
    class_file: Path | None = None
    split_files: dict[str, Path] = field(default_factory=dict)
    split_folders: dict[str, str] = field(default_factory=dict)
    annotations: Path | None = None


def _first(*paths: Path) -> Path | None:
    return next((p for p in paths if p.exists()), None)


def _holds(folder: Path, *suffixes: str) -> bool:
    return folder.is_dir() and any(p.suffix.lower() in suffixes for p in folder.iterdir())


def _folder(root: Path, images: str | None, masks: str | None) -> Layout:
    return Layout(
        "folder",
        "an image folder and a mask folder",
        root / (images or "images"),
        root / (masks or "masks"),
        class_file=_first(*(root / n for n in ("classes.yaml", "classes.yml", "classes.txt", "class_names.txt"))),
        split_files={s: root / "splits" / f"{s}.txt" for s in ("train", "val", "test")}
        if (root / "splits").is_dir()
        else {},
    )


def _labelme(root: Path) -> Layout:
    masks = next(
        (f for f in (root / "SegmentationClassPNG", root / "SegmentationClass") if _holds(f, ".png")),
        None,
    ) or next((f for f in (root / "SegmentationClassNpy", root / "SegmentationClass") if _holds(f, ".npy")), None)
    if masks is None:
        raise LightsegError(
            f"{root} looks like a labelme export (class_names.txt, JPEGImages/) but has no masks: expected PNGs in "
            "SegmentationClass/ (or SegmentationClassPNG/) or .npy arrays in SegmentationClassNpy/"
        )
    return Layout(
        "labelme",
        "a labelme export (labelme2voc)",
        root / "JPEGImages",
        masks,
        class_file=_first(root / "class_names.txt", root / "labels.txt"),
    )


def _cvat(root: Path) -> Layout:
    lists = root / "ImageSets" / "Segmentation"
    split_files = {s: lists / f"{s}.txt" for s in ("train", "val", "test") if (lists / f"{s}.txt").is_file()}
    if not split_files:  # CVAT names a task's subset "default" unless it was given one
        others = sorted(lists.glob("*.txt")) if lists.is_dir() else []
        if len(others) == 1:
            split_files = {"all": others[0]}
        elif others:
            raise LightsegError(
                f"{lists} holds the subsets {', '.join(p.stem for p in others)}; lightseg reads train.txt, val.txt "
                "and test.txt (or one list, split by a hash of the names): rename the subsets in CVAT or the files"
            )
    return Layout(
        "cvat",
        "a CVAT export (Segmentation mask 1.1)",
        root / "JPEGImages",
        root / "SegmentationClass",
        class_file=root / "labelmap.txt",
        split_files=split_files,
    )


def _roboflow(root: Path) -> Layout:
    folders = {s: f for s, f in ROBOFLOW_SPLITS.items() if (root / f).is_dir()}
    class_file = next(
        (root / f / "_classes.csv" for f in folders.values() if (root / f / "_classes.csv").is_file()), None
    )
    return Layout(
        "roboflow",
        "a Roboflow export (Semantic Segmentation Masks)",
        root,
        root,
        mask_suffix="_mask",
        class_file=class_file,
        split_folders=folders,
    )


def _labelstudio_json(root: Path) -> Path | None:
    """The project's JSON export beside brush PNGs: a list of tasks with ``id`` and ``data``."""
    for path in sorted(root.glob("*.json")):
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(content, list) and content and isinstance(content[0], dict) and "data" in content[0]:
            return path
    return None


def _brush_folder(root: Path) -> Path | None:
    for folder in (root / "masks", root):
        if folder.is_dir() and any(BRUSH_PNG.match(p.stem) for p in folder.glob("task-*.png")):
            return folder
    return None


def recognise(root: Path, layout: LayoutName = "auto", images: str | None = None, masks: str | None = None) -> Layout:
    """The layout of the data set at ``root``: the one named by ``layout``, or recognised from the files.

    ``images`` / ``masks`` set the folders of the ``folder`` layout (and make it the one read).
    """
    if not root.is_dir():
        raise LightsegError(
            f"data root {root} does not exist" if not root.exists() else f"data root {root} is a file, not a folder"
        )
    if layout == "folder" or images is not None or masks is not None:
        return _folder(root, images, masks)
    if layout == "auto":
        layout = _recognised(root)
    if layout == "labelme":
        return _labelme(root)
    if layout == "cvat":
        return _cvat(root)
    if layout == "roboflow":
        if not any((root / f).is_dir() for f in ROBOFLOW_SPLITS.values()):
            raise LightsegError(f"{root} is not a Roboflow export: it has none of the folders train/, valid/, test/")
        return _roboflow(root)
    if layout == "labelstudio":
        return _labelstudio(root)
    return _folder(root, images, masks)


def _recognised(root: Path) -> LayoutName:
    labelstudio = (root / "result.json").is_file() or _brush_folder(root) is not None
    if ((root / "images").is_dir() or (root / "masks").is_dir()) and not labelstudio:
        return "folder"  # lightseg's own layout; a missing half is named when the samples are read
    if (root / "labelmap.txt").is_file():
        return "cvat"
    if (root / "JPEGImages").is_dir() and ((root / "class_names.txt").is_file() or (root / "labels.txt").is_file()):
        return "labelme"
    if any((root / f / "_classes.csv").is_file() for f in ROBOFLOW_SPLITS.values()):
        return "roboflow"
    if labelstudio:
        return "labelstudio"
    raise LightsegError(
        f"{root} is not a layout lightseg recognises: expected images/ + masks/ (your own folders), a labelme export "
        "(JPEGImages/, SegmentationClass/, class_names.txt), a CVAT Segmentation mask export (labelmap.txt, "
        "SegmentationClass/), a Roboflow Semantic Segmentation Masks export (train/_classes.csv) or a Label Studio "
        "export (result.json + images/, or brush PNGs); name other folders with images: and masks:"
    )


def _labelstudio(root: Path) -> Layout:
    if (root / "result.json").is_file():
        return Layout(
            "labelstudio-coco",
            "a Label Studio COCO export",
            root,
            root,
            annotations=root / "result.json",
        )
    brushes = _brush_folder(root)
    if brushes is None:
        raise LightsegError(
            f"{root} is not a Label Studio export: it has no result.json (COCO export) and no brush PNGs "
            "(task-<id>-annotation-<id>-by-...png)"
        )
    tasks = _labelstudio_json(root)
    if tasks is None:
        raise LightsegError(
            f"{brushes} holds Label Studio brush PNGs, which name tasks, not images: put the project's JSON export "
            f"(Export -> JSON) into {root} so that each task's image can be found"
        )
    return Layout(
        "labelstudio",
        "a Label Studio brush PNG export",
        _first(root / "images", root / "upload") or root,
        brushes,
        annotations=tasks,
    )


def read_class_list(path: Path) -> ClassList:
    """The classes of a class list file, whichever tool wrote it.

    - ``.yaml`` / ``.yml`` / ``.json``: a list of names, or of ``{name, color}`` entries;
    - ``labelmap.txt`` (CVAT, Datumaro): ``name:r,g,b:parts:actions`` lines;
    - ``_classes.csv`` (Roboflow): ``Pixel Value, Class`` rows;
    - any other ``.txt``: one name per line (labelme's ``class_names.txt`` and ``labels.txt``:
      ``_background_`` is read as ``background``, and ``__ignore__`` is the void label, not a class).
    """
    if not path.is_file():
        raise LightsegError(f"class_names file {path} does not exist; give a list of names or a class file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise LightsegError(f"class_names file {path} is not a UTF-8 text file (byte {err.start})") from None
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml", ".json"):
        result = _yaml_classes(path, text)
    elif suffix == ".csv":
        result = _csv_classes(path, text)
    elif suffix == ".txt" and _is_labelmap(text):
        result = _labelmap_classes(path, text)
    elif suffix == ".txt":
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        names = [("background" if n == "_background_" else n) for n in lines if n != LABELME_IGNORE]
        result = ClassList(tuple(names))
    else:
        raise LightsegError(
            f"class_names file {path}: lightseg reads .yaml/.json lists, .txt (one name per line, or CVAT's "
            "labelmap.txt) and Roboflow's _classes.csv"
        )
    check_class_names(result.names, str(path))
    return result


def check_class_names(names: Sequence[str], source: str) -> None:
    """Refuse a class list with fewer than two classes or with a name given twice."""
    if len(names) < 2:
        raise LightsegError(f"{source}: give the background and at least one class, got {list(names)}")
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in seen:
            raise LightsegError(
                f"{source}: class {name!r} is listed twice (classes {seen[name]} and {index}); every class needs its "
                "own name, or masks of the second would be scored as another class with the same name"
            )
        seen[name] = index


def _yaml_classes(path: Path, text: str) -> ClassList:
    try:
        content = yaml.safe_load(text)  # JSON is YAML too
    except yaml.YAMLError as err:
        raise LightsegError(f"class_names file {path} is not YAML/JSON: {str(err).splitlines()[0]}") from None
    if not isinstance(content, list) or not content:
        raise LightsegError(f"class_names file {path} must hold a list of names (or of {{name, color}} entries)")
    if all(isinstance(c, str) for c in content):
        return ClassList(tuple(content))
    try:
        names = tuple(str(c["name"]) for c in content)
        colors = [_colour(c["color"]) for c in content] if all("color" in c for c in content) else None
    except (TypeError, KeyError, ValueError):
        raise LightsegError(
            f"class_names file {path}: every entry needs a name (and, for all or none, a color)"
        ) from None
    return ClassList(names, colors)


def _colour(value: Sequence[object]) -> Colour:
    r, g, b = (int(v) for v in value)  # type: ignore[call-overload]
    if not all(0 <= v <= 255 for v in (r, g, b)):
        raise ValueError(value)
    return (r, g, b)


def _is_labelmap(text: str) -> bool:
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return bool(lines) and all(re.match(r"^[^:]*:\s*\d+\s*,\s*\d+\s*,\s*\d+\s*:", line) for line in lines)


def _labelmap_classes(path: Path, text: str) -> ClassList:
    names: list[str] = []
    colors: list[Colour] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        name, colour = line.split(":")[:2]
        try:
            colors.append(_colour(colour.split(",")))
        except ValueError:
            raise LightsegError(f"{path}, line {number}: colour {colour!r} is not r,g,b in 0..255") from None
        names.append(name.strip())
    if "background" not in names and (0, 0, 0) not in colors:  # CVAT paints unlabelled pixels black
        names.insert(0, "background")
        colors.insert(0, (0, 0, 0))
    return ClassList(tuple(names), colors)


def _csv_classes(path: Path, text: str) -> ClassList:
    rows = [[cell.strip() for cell in row] for row in csv.reader(text.splitlines()) if any(c.strip() for c in row)]
    if rows and not rows[0][0].lstrip("-").isdigit():
        rows = rows[1:]  # the header: Pixel Value, Class
    by_value: dict[int, str] = {}
    for row in rows:
        if len(row) < 2 or not row[0].isdigit():
            raise LightsegError(f"{path}: row {','.join(row)!r} is not 'pixel value, class name'")
        by_value[int(row[0])] = row[1]
    if sorted(by_value) != list(range(len(by_value))):
        raise LightsegError(
            f"{path}: pixel values {sorted(by_value)} are not 0..{len(by_value) - 1}; lightseg reads masks whose "
            "values are the classes' positions"
        )
    return ClassList(tuple(by_value[v] for v in range(len(by_value))))
