"""Label Studio's brush PNG export: one grey PNG per painted region, merged into one label map per image.

Label Studio writes ``task-<task>-annotation-<annotation>-by-<annotator>-<tag>-<label>-<n>.png``
for every brush region (255 where painted). The names say which task, not which image: the
project's JSON export (a list of tasks with their ``data`` and ``annotations``) gives each
task's image, found in the image folder by its name (Label Studio prefixes uploads with
eight hex digits and a dash; both names are tried) and the label names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image

from lightseg.datamodules.exports import BRUSH_PNG
from lightseg.datamodules.files import OnMissing, Sample, SegmentationFiles
from lightseg.datamodules.io import IMAGE_EXTENSIONS
from lightseg.errors import LightsegError

#: Label Studio's prefix of an uploaded file's name
UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")
#: a brush region: painted where the PNG's value is above this (Label Studio writes 0 / 255)
PAINTED = 127
OVERLAP = 255


def _tasks(path: Path) -> list[dict[str, Any]]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise LightsegError(f"Label Studio JSON export {path} cannot be read: {err}") from None
    if not isinstance(content, list) or not all(isinstance(t, dict) and isinstance(t.get("id"), int) for t in content):
        raise LightsegError(f"{path} is not a Label Studio JSON export (a list of tasks, each with a whole-number id)")
    return content


def brush_labels(path: Path) -> tuple[str, list[str]]:
    """The brush tag's name and the label names used in the project's JSON export, in order of first use."""
    return _brush_labels(_tasks(path), path)


def _brush_labels(tasks: list[dict[str, Any]], path: Path) -> tuple[str, list[str]]:
    tags: list[str] = []
    labels: list[str] = []
    for task in tasks:
        for annotation in task.get("annotations") or []:
            for result in annotation.get("result") or []:
                if str(result.get("type", "")).lower() != "brushlabels":
                    continue
                tags += [str(result.get("from_name"))] if result.get("from_name") not in tags else []
                labels += [n for n in (result.get("value") or {}).get("brushlabels", []) if n not in labels]
    if not labels:
        raise LightsegError(f"{path}: no task has a brush region (brushlabels); is it the export of this project?")
    return (tags[0] if tags else "tag"), labels


def _image_name(task: dict[str, Any]) -> str | None:
    for value in (task.get("data") or {}).values():
        if isinstance(value, str) and Path(value.split("?")[0]).suffix.lower() in IMAGE_EXTENSIONS:
            return Path(value.split("?")[0]).name
    return None


def brush_samples(
    tasks_file: Path, brushes: Path, images: Path, class_names: tuple[str, ...]
) -> tuple[list[Sample], dict[Path, list[tuple[Path, int]]]]:
    """The samples of a brush PNG export and, by each sample's first PNG, its regions with their class.

    A task whose image is not in ``images`` is an error naming both; tasks without a brush PNG
    (not annotated, or annotated with nothing) are left out and counted.
    """
    tasks = _tasks(tasks_file)
    tag, _ = _brush_labels(tasks, tasks_file)
    label_of = {name: k for k, name in enumerate(class_names)}
    by_task: dict[int, list[tuple[int, Path, int]]] = {}
    for png in sorted(brushes.glob("task-*.png")):
        match = BRUSH_PNG.match(png.stem)
        if match is None:
            continue
        rest = match.group(4)
        label = rest[len(tag) + 1 :] if rest.startswith(tag + "-") else rest
        if label not in label_of:
            raise LightsegError(
                f"brush PNG {png} is of label {label!r}, which is not a class ({', '.join(class_names[1:])})"
            )
        by_task.setdefault(int(match.group(1)), []).append((int(match.group(2)), png, label_of[label]))
    found = {p.name: p for p in images.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS}
    samples: list[Sample] = []
    regions: dict[Path, list[tuple[Path, int]]] = {}
    unlabelled = 0
    for task in tasks:
        task_id = task["id"]
        if task_id not in by_task:
            unlabelled += 1
            continue
        name = _image_name(task)
        image = found.get(name or "") or found.get(UPLOAD_PREFIX.sub("", name or ""))
        if image is None:
            raise LightsegError(
                f"task {task_id} of {tasks_file} is the image {name!r}, which is not in {images}; put the project's "
                "images there (as uploaded, or with their original names)"
            )
        first = min(a for a, _, _ in by_task[task_id])  # one annotation per task: the first, if there are more
        kept = [(png, label) for a, png, label in by_task[task_id] if a == first]
        samples.append(Sample(str(task_id), image, kept[0][0]))
        regions[kept[0][0]] = kept
    if unlabelled:
        rank_zero_info(f"{tasks_file}: {unlabelled} task(s) without a brush PNG left out")
    return samples, regions


class BrushFiles(SegmentationFiles):
    """Label Studio brush regions merged into label maps: 0 = unpainted, a region's class where painted.

    Pixels painted with two different classes are void (``ignore_index``), as overlapping
    objects are in COCO's semantic protocol.
    """

    def __init__(
        self,
        samples: list[Sample],
        regions: dict[Path, list[tuple[Path, int]]],
        num_classes: int,
        transforms: Callable[..., Any] | None = None,
        ignore_index: int = OVERLAP,
        on_missing: OnMissing = "error",
        name: str = "Label Studio",
    ) -> None:
        self.regions = regions
        super().__init__(samples, num_classes, transforms, ignore_index, on_missing=on_missing, name=name)

    def mask_kind(self, index: int) -> str:
        """Brush regions, one PNG each."""
        return "Label Studio brush PNGs"

    def decode_mask(self, path: Path) -> np.ndarray:
        """The label map of the sample whose first region is ``path``."""
        label: np.ndarray | None = None
        for png, cls in self.regions[path]:
            try:
                with Image.open(png) as img:
                    painted = np.asarray(img.convert("L")) > PAINTED
            except (OSError, SyntaxError) as err:
                raise LightsegError(f"cannot read brush PNG {png}: {err}") from None
            if label is None:
                label = np.zeros(painted.shape, dtype=np.uint8)
            elif painted.shape != label.shape:
                raise LightsegError(f"brush PNG {png} is {painted.shape}, the task's other regions {label.shape}")
            clash = painted & (label != 0) & (label != cls)
            label[painted] = cls
            label[clash] = self.ignore_index
        assert label is not None
        return label
