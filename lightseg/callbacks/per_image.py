"""Every evaluated image's scores in a CSV file: the images a model fails on, worst first."""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path
from typing import Any, cast

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from torch import distributed as dist
from typing_extensions import override

from lightseg.contract import LightsegTask
from lightseg.run_folder import display_path, run_dir
from lightseg.types import SemanticEvalOutput

#: the per-image scalars, in column order, and the per-class scores (``<score>_<class>`` columns)
SCALARS = ("miou", "pixel_acc", "mbiou")
PER_CLASS = ("iou", "acc", "biou")


class PerImageScores(Callback):
    """Writes each test image's IoU, accuracy and Boundary IoU, overall and per class, to a CSV file.

    Reads the per-image scores a semantic task's test step returns (``image_scores``: see
    :func:`~lightseg.metrics.image_scores`), gathers them from every process, and writes one
    row per image, lowest mIoU first: ``id``, ``miou``, ``pixel_acc``, ``mbiou`` (when Boundary
    IoU is on), then ``iou_<class>``, ``acc_<class>``, ``biou_<class>``. Scores are fractions;
    an empty cell is a class absent from both the image's ground truth and its prediction
    (for accuracy: from its ground truth). An image's mIoU is the mean over the classes
    present in its ground truth or prediction. ``lightseg test`` of a semantic task writes it
    by default.

    Args:
        path: the CSV file; ``None``: ``per_image_test.csv`` in the run folder.
    """

    def __init__(self, path: str | None = None) -> None:
        self.path = path
        self._rows: list[dict[str, Any]] = []
        #: where the last test wrote its table
        self.written: Path | None = None

    @override
    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._rows = []

    @override
    def on_test_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not isinstance(outputs, SemanticEvalOutput) or outputs.image_scores is None:
            return
        scores = outputs.image_scores
        names = [n.replace(" ", "_") for n in cast(LightsegTask, pl_module).context().class_names]
        for i, image_id in enumerate(outputs.ids or [None] * len(outputs.scores)):
            row: dict[str, Any] = {"id": image_id if image_id is not None else f"#{len(self._rows)}"}
            row.update({key: float(scores[key][i]) for key in SCALARS if key in scores})
            for key in PER_CLASS:
                if key in scores:
                    row.update({f"{key}_{name}": v for name, v in zip(names, scores[key][i].tolist(), strict=True)})
            self._rows.append(row)

    @override
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        rows = gather_lists(self._rows)
        path = Path(self.path) if self.path else run_dir(trainer) / "per_image_test.csv"
        if not trainer.is_global_zero or not rows:
            return
        rows.sort(key=lambda r: (math.isnan(r["miou"]), r["miou"], r["id"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _cell(v) for k, v in row.items()})
        self.written = path
        worst = rows[0]
        print(
            f"lightseg: per-image scores of {len(rows)} test images in {display_path(path)} "
            f"(lowest mIoU: {worst['id']}, {_cell(worst['miou'])})",
            file=sys.stderr,
        )


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6f}"
    return str(value)


def gather_lists(items: list[Any]) -> list[Any]:
    """``items`` of every process, concatenated in rank order (the list itself without DDP)."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return items
    gathered: list[list[Any] | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, items)
    return [item for part in gathered for item in part or []]
