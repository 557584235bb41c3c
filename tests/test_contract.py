"""lightseg.contract: what each data module describes, and what a data module without a description gets."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lightseg.colors import class_palette
from lightseg.contract import DetectionData, PixelStatistics, data_description, data_palette, datamodule_of
from lightseg.datamodules import (
    CityscapesDataModule,
    SegmentationFolderDataModule,
    ShapesDataModule,
    ShapesKeypointDataModule,
    VOCDataModule,
)
from lightseg.datamodules.voc import VOC_COLORS
from lightseg.tasks import SemanticSegmentationTask


def test_each_data_module_describes_its_data(tmp_path: Path) -> None:
    voc = data_description(VOCDataModule(root=str(tmp_path / "voc"), batch_size=3))
    assert voc is not None and voc.num_classes == 21 and voc.class_names is not None
    assert voc.class_names[:2] == ("background", "aeroplane") and voc.batch_size == 3
    assert voc.class_colors is not None and voc.class_colors[1] == tuple(VOC_COLORS[1])
    assert voc.evaluation_protocol is not None and voc.evaluation_protocol.boundary_ratio == 0.02
    assert voc.category_ids == () and voc.label_ids is None

    cityscapes = data_description(CityscapesDataModule(root=str(tmp_path / "cs")))
    assert cityscapes is not None and cityscapes.label_ids is not None
    assert cityscapes.label_ids[:3] == (7, 8, 11)  # road, sidewalk, building: the official label ids
    protocol = cityscapes.evaluation_protocol
    assert protocol is not None and protocol.boundary_ratio == 0.005 and "flat" in protocol.categories

    keypoints = ShapesKeypointDataModule(root=str(tmp_path / "k"), num_train=2, num_val=1, num_test=1, image_size=32)
    described = data_description(keypoints)
    assert isinstance(keypoints, DetectionData) and described is not None
    assert described.class_names == ("background", "triangle") and described.category_ids == (
        0,
        3,
    )  # triangle keeps its id
    assert described.keypoint_names == ("apex", "left_base", "right_base") and len(described.skeleton) == 3

    shapes = ShapesDataModule(root=str(tmp_path / "s"))
    assert isinstance(shapes, PixelStatistics) and not isinstance(shapes, DetectionData)
    np.testing.assert_array_equal(data_palette(shapes), class_palette())  # no colours of its own: generated


def test_a_folder_names_the_splits_it_has(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for k in range(10):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / f"{k}.png")
        Image.fromarray(np.full((8, 8), k % 2, np.uint8)).save(tmp_path / "masks" / f"{k}.png")
    colors = [[0, 0, 0], [9, 99, 199]]
    folder = SegmentationFolderDataModule(str(tmp_path), ["background", "thing"], colors=colors, val_fraction=0.5)
    assert folder.split_names() == ["train", "val"]  # no test images: no test split
    described = data_description(folder)
    assert described is not None and described.class_colors == ((0, 0, 0), (9, 99, 199))
    assert data_palette(folder)[1].tolist() == [9, 99, 199]


def test_a_data_module_of_ones_own_trains_with_the_defaults() -> None:
    class Plain(L.LightningDataModule):
        def train_dataloader(self) -> DataLoader[dict[str, torch.Tensor]]:
            items = [{"image": torch.rand(3, 32, 32), "mask": torch.randint(0, 3, (32, 32))} for _ in range(2)]
            return DataLoader(items, batch_size=2)  # type: ignore[arg-type]

    data = Plain()
    assert data_description(data) is None and data_description(None) is None
    np.testing.assert_array_equal(data_palette(data), class_palette())
    task = SemanticSegmentationTask(arch="unet", backbone="resnet18", weights_backbone=None, num_classes=3)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)  # fmt: skip
    trainer.fit(task, data)
    assert trainer.global_step == 1 and datamodule_of(trainer) is data
    assert task.context().class_names == ("0", "1", "2")  # no names from the data: the indices
