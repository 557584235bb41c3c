"""What each logger does with a picture, a table or a distribution: one board per logger kind.

Callbacks build a payload of the items below and hand it to :func:`boards`; supporting
another logger is one :class:`Board` subclass and one line in :func:`boards`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import Logger, TensorBoardLogger, WandbLogger

from lightseg.colors import class_palette
from lightseg.visualize import sample_panel


@dataclass
class Picture:
    """An RGB picture ``[H,W,3]`` uint8 (e.g. a drawing of detections) with its caption."""

    image: np.ndarray
    caption: str = ""


@dataclass
class MaskedPicture:
    """An image with its ground-truth and predicted label masks (``[H,W]``) and the class names by label."""

    image: np.ndarray
    target: np.ndarray
    prediction: np.ndarray
    caption: str = ""
    class_labels: dict[int, str] = field(default_factory=dict)
    #: the data set's ``[256, 3]`` palette (:func:`~lightseg.colors.class_palette`)
    colours: np.ndarray = field(default_factory=class_palette)


@dataclass
class Table:
    """A table of ``rows`` ``[name, value, ...]``; values are fractions (shown in %) or ``None``."""

    columns: list[str]
    rows: list[list[Any]]


@dataclass
class Histogram:
    """A distribution of values in [0, 1] (e.g. each test image's mIoU)."""

    values: list[float]


Item = Picture | MaskedPicture | Table | Histogram
Payload = dict[str, Item | list[Picture] | list[MaskedPicture]]


class Board(ABC):
    """One logger's way of showing a payload."""

    def __init__(self, logger: Logger) -> None:
        self.logger: Any = logger

    @abstractmethod
    def log(self, payload: Payload, step: int) -> None:
        """Show every item of ``payload`` at ``step``."""


class WandbBoard(Board):
    """W&B: images (masks as interactive overlays), ``wandb.Table`` and ``wandb.Histogram``, in one log call."""

    def log(self, payload: Payload, step: int) -> None:
        import wandb

        def convert(item: Item) -> Any:
            if isinstance(item, MaskedPicture):
                masks = {
                    "ground_truth": {"mask_data": item.target, "class_labels": item.class_labels},
                    "predictions": {"mask_data": item.prediction, "class_labels": item.class_labels},
                }
                return wandb.Image(item.image, masks=masks, caption=item.caption)
            if isinstance(item, Picture):
                return wandb.Image(item.image, caption=item.caption)
            if isinstance(item, Table):
                return wandb.Table(columns=list[str | int](item.columns), data=item.rows)
            return wandb.Histogram(item.values, num_bins=20)

        logged = {key: [convert(i) for i in v] if isinstance(v, list) else convert(v) for key, v in payload.items()}
        # the step axis Lightning's WandbLogger defines for every metric
        self.logger.experiment.log({**logged, "trainer/global_step": step})


class TensorBoardBoard(Board):
    """TensorBoard: images (masks as image | truth | prediction panels), Markdown tables, histograms."""

    def log(self, payload: Payload, step: int) -> None:
        writer = self.logger.experiment
        for key, value in payload.items():
            if isinstance(value, list):
                items = cast(list[Picture | MaskedPicture], value)
                for i, item in enumerate(items):
                    writer.add_image(f"{key}/{i}", _panel(item), step, dataformats="HWC")
                if any(item.caption for item in items):
                    writer.add_text(f"{key}/captions", " | ".join(item.caption for item in items), step)
            elif isinstance(value, Table):
                writer.add_text(key, markdown_table(value.columns, value.rows), step)
            elif isinstance(value, Histogram):
                writer.add_histogram(key, np.asarray(value.values), step, bins=np.linspace(0, 1, 21))
            else:
                writer.add_image(key, _panel(value), step, dataformats="HWC")


def boards(trainer: Trainer) -> list[Board]:
    """A board for each of the run's loggers that can show pictures (W&B, TensorBoard)."""
    found: list[Board] = []
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            found.append(WandbBoard(logger))
        elif isinstance(logger, TensorBoardLogger):
            found.append(TensorBoardBoard(logger))
    return found


def markdown_table(columns: list[str], rows: list[list[Any]]) -> str:
    """Rows ``[name, value, ...]`` (fractions, shown in %; text as it is) as a Markdown table."""
    lines = [f"| {' | '.join(columns)} |", "|---|" + "---:|" * (len(columns) - 1)]
    for name, *values in rows:
        cells = ["-" if v is None else v if isinstance(v, str) else f"{100 * v:.1f}" for v in values]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return "\n".join(lines)


def _panel(item: Picture | MaskedPicture) -> np.ndarray:
    if isinstance(item, MaskedPicture):
        names = [item.class_labels.get(label, str(label)) for label in range(max(item.class_labels, default=-1) + 1)]
        return sample_panel(item.image, item.target, item.prediction, names, colours=item.colours)
    return item.image
