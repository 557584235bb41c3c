"""The data check's report: its findings and per-split statistics, as tables, JSON and a picture.

:mod:`lightseg.data_check` fills a :class:`DataReport` by reading a data set;
``lightseg data check`` (:mod:`lightseg.cli.data_command`) prints and writes it with the functions here.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lightseg.visualize import labelled_rows

#: what each kind of problem means, for the table
KINDS = {
    "missing_image": "samples whose image file is missing",
    "missing_mask": "images without a mask",
    "orphan_mask": "masks without an image",
    "unreadable_image": "images that cannot be decoded",
    "unreadable_mask": "masks that cannot be decoded",
    "bad_labels": "masks with values or colours that are not classes",
    "size_mismatch": "image and mask (or annotation) of different sizes",
    "leakage": "identical images in two splits",
    "data": "data sets that cannot be read (root, class list, layout)",
    "split": "splits that cannot be read",
    "invalid_annotation": "annotations left out (broken content)",
    "count": "split sizes that differ from the official release",
}


@dataclass
class Finding:
    """One problem: its kind (a key of :data:`KINDS`), where it is and what it is."""

    kind: str
    split: str
    file: str
    detail: str
    severity: str = "error"


@dataclass
class SplitStats:
    """What one split holds."""

    name: str
    num_classes: int
    samples: int = 0
    sizes: list[tuple[int, int]] = field(default_factory=list)
    mask_kinds: Counter[str] = field(default_factory=Counter)
    class_pixels: np.ndarray = field(init=False)
    class_images: np.ndarray = field(init=False)
    ignore_pixels: int = 0
    exif_oriented: int = 0  # images whose EXIF orientation turns them when read
    #: per channel as the model reads it (in [0, 1]): pixel count, sum, sum of squares (large rasters, sampled)
    band_moments: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.class_pixels = np.zeros(self.num_classes, dtype=np.int64)
        self.class_images = np.zeros(self.num_classes, dtype=np.int64)

    def summary(self, class_names: Sequence[str], instances: bool) -> dict[str, Any]:
        """The split's JSON entry."""
        sizes = np.array(self.sizes or [(0, 0)])
        labelled = int(self.class_pixels.sum())
        classes = {}
        for k, name in enumerate(class_names):
            entry: dict[str, Any] = {"images": int(self.class_images[k])}
            if instances:
                entry["instances"] = int(self.class_pixels[k])
            else:
                entry["pixels"] = int(self.class_pixels[k])
                entry["pixel_share"] = round(float(self.class_pixels[k]) / labelled, 6) if labelled else 0.0
            classes[name] = entry
        return {
            "samples": self.samples,
            "image_size": {
                "min": [int(sizes[:, 0].min()), int(sizes[:, 1].min())],
                "median": [int(np.median(sizes[:, 0])), int(np.median(sizes[:, 1]))],
                "max": [int(sizes[:, 0].max()), int(sizes[:, 1].max())],
            },
            "mask_formats": dict(sorted(self.mask_kinds.items())),
            "exif_oriented_images": self.exif_oriented,
            "ignore_pixels": self.ignore_pixels,
            "classes": classes,
            "absent_classes": [n for k, n in enumerate(class_names) if k > 0 and self.class_images[k] == 0],
            **({"bands": self.band_statistics()} if self.band_moments is not None else {}),
        }

    def band_statistics(self) -> dict[str, list[float]]:
        """Mean and standard deviation of each channel as the model reads it (the normalisation's numbers)."""
        assert self.band_moments is not None
        count, total, squares = self.band_moments
        mean = total / np.maximum(count, 1)
        std = np.sqrt(np.maximum(squares / np.maximum(count, 1) - mean**2, 0))
        # four significant digits: a 16-bit band read in [0, 1] often has a std of 0.01 or less
        return {"mean": [float(f"{v:.4g}") for v in mean], "std": [float(f"{v:.4g}") for v in std]}


@dataclass
class DataReport:
    """The result of :func:`check_data`."""

    data: str
    class_names: tuple[str, ...]
    colors: np.ndarray
    instances: bool
    splits: dict[str, SplitStats] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    pictures: dict[str, list[tuple[np.ndarray, np.ndarray | None]]] = field(default_factory=dict)

    @property
    def errors(self) -> list[Finding]:
        """The problems that stop a run."""
        return [f for f in self.findings if f.severity == "error"]

    def to_json(self) -> dict[str, Any]:
        """The report as written to ``report.json``."""
        absent = [
            name for k, name in enumerate(self.class_names)
            if k > 0 and all(s.class_images[k] == 0 for s in self.splits.values())
        ]  # fmt: skip
        return {
            "data": self.data,
            "classes": list(self.class_names),
            "splits": {name: s.summary(self.class_names, self.instances) for name, s in self.splits.items()},
            "absent_classes": absent,
            "error_counts": dict(sorted(Counter(f.kind for f in self.errors).items())),
            "warning_counts": dict(sorted(Counter(f.kind for f in self.findings if f.severity != "error").items())),
            "findings": [vars(f) for f in self.findings],
        }


def samples_picture(report: DataReport) -> Image.Image:
    """The report's samples: ``image | mask`` rows per split in the class colours, a legend below."""
    legend = [*enumerate(report.class_names), *([] if report.instances else [(255, "ignore")])]
    return labelled_rows(report.pictures, report.colors, legend)


def format_report(report: DataReport) -> str:
    """The report as the tables ``lightseg data check`` prints."""
    summary = report.to_json()
    lines = [f"{report.data}: {len(report.class_names)} classes"]
    header = f"{'split':<12}{'samples':>9}  {'image size min / median / max (H x W)':<42}mask format"
    lines += ["", header, "-" * len(header)]
    for name, split in summary["splits"].items():
        sizes = " / ".join(f"{h}x{w}" for h, w in split["image_size"].values())
        formats = ", ".join(f"{k} ({v})" for k, v in split["mask_formats"].items()) or "-"
        lines.append(f"{name:<12}{split['samples']:>9}  {sizes:<42}{formats}")
    splits = list(summary["splits"])
    if splits:
        what = "instances" if report.instances else "pixels %"
        header = f"{'class':<20}" + "".join(f"{s + ' ' + what:>22}{s + ' images':>14}" for s in splits)
        lines += ["", header, "-" * len(header)]
        for name in report.class_names:
            cells = ""
            for s in splits:
                entry = summary["splits"][s]["classes"][name]
                amount = f"{entry['instances']}" if report.instances else f"{100 * entry['pixel_share']:.2f}"
                cells += f"{amount:>22}{entry['images']:>14}"
            lines.append(f"{name[:19]:<20}{cells}")
    absent = [f"classes that never occur: {', '.join(summary['absent_classes'])}"] if summary["absent_classes"] else []
    for name, split in summary["splits"].items():
        missing = [c for c in split["absent_classes"] if c not in summary["absent_classes"]]
        if missing:
            absent.append(f"classes absent from {name}: {', '.join(missing)}")
    lines += ["", *absent] if absent else []
    turned = [f"{split['exif_oriented_images']} in {name}" for name, split in summary["splits"].items()
              if split["exif_oriented_images"]]  # fmt: skip
    if turned:
        lines += ["", f"images with an EXIF orientation ({', '.join(turned)}): read turned as viewers and labelling "
                      "tools show them; their masks must match them as shown"]  # fmt: skip
    bands = [f"{name}: mean {split['bands']['mean']}, std {split['bands']['std']}"
             for name, split in summary["splits"].items() if "bands" in split]  # fmt: skip
    if bands:
        lines += ["", "channels as the model reads them (in [0, 1], nodata left out; every 16th pixel of each image):",
                  *bands]  # fmt: skip
        measured = {name: split["bands"] for name, split in summary["splits"].items() if "bands" in split}
        source = "train" if "train" in measured else next(iter(measured))
        values = measured[source]
        lines += [
            f"to normalise with the {source} split's, in the model's network group of the config:",
            "  network:",
            f"    in_channels: {len(values['mean'])}",
            f"    mean: {values['mean']}",
            f"    std: {values['std']}",
        ]
    for severity in ("error", "warning"):
        found = [f for f in report.findings if f.severity == severity]
        if not found:
            continue
        lines += ["", f"{len(found)} {severity}{'s' if len(found) > 1 else ''}:"]
        for kind, count in sorted(Counter(f.kind for f in found).items()):
            examples = [f for f in found if f.kind == kind][:3]
            lines.append(f"  {count} {KINDS[kind]}:")
            lines += [f"    [{f.split}] {f.file + ': ' if f.file else ''}{f.detail}" for f in examples]
            if count > len(examples):
                lines.append(f"    ... and {count - len(examples)} more (report.json lists them all)")
    if not report.findings:
        lines += ["", "no problem found"]
    return "\n".join(lines)


def write_report(report: DataReport, out: Path) -> tuple[Path, Path]:
    """``report.json`` and ``samples.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / "report.json", out / "samples.png"
    json_path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    samples_picture(report).save(png_path)
    return json_path, png_path
