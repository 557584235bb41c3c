"""Data modules: the embedded shapes set (and, later, VOC, SBD, Cityscapes, COCO)."""

from lightseg.datamodules.base import ImageFolderDataset, SemanticDataModule, pad_collate
from lightseg.datamodules.shapes import ShapesDataModule, generate_scene, write_voc
from lightseg.datamodules.voc import VOC_CLASSES, VOCSegmentationDataset

__all__ = [
    "VOC_CLASSES",
    "ImageFolderDataset",
    "SemanticDataModule",
    "ShapesDataModule",
    "VOCSegmentationDataset",
    "generate_scene",
    "pad_collate",
    "write_voc",
]
