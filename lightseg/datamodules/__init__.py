"""Data modules: PASCAL VOC, SBD, VOC-aug, Cityscapes and the embedded shapes set."""

from lightseg.datamodules.base import ImageFolderDataset, SemanticDataModule, SplitDataModule, pad_collate
from lightseg.datamodules.cityscapes import CITYSCAPES_CLASSES, CityscapesDataModule
from lightseg.datamodules.files import Sample, SegmentationFiles
from lightseg.datamodules.sbd import SBDDataModule, SBDSegmentationDataset, VOCAugDataModule
from lightseg.datamodules.shapes import ShapesDataModule, generate_scene, write_voc
from lightseg.datamodules.voc import VOC_CLASSES, VOCDataModule, VOCSegmentationDataset

__all__ = [
    "CITYSCAPES_CLASSES",
    "VOC_CLASSES",
    "CityscapesDataModule",
    "ImageFolderDataset",
    "SBDDataModule",
    "SBDSegmentationDataset",
    "Sample",
    "SegmentationFiles",
    "SemanticDataModule",
    "ShapesDataModule",
    "SplitDataModule",
    "VOCAugDataModule",
    "VOCDataModule",
    "VOCSegmentationDataset",
    "generate_scene",
    "pad_collate",
    "write_voc",
]
