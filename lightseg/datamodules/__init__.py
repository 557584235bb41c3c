"""Data modules: your folders, VOC, SBD, VOC-aug, Cityscapes, ADE20K, COCO (all four kinds), packed sets, rasters."""

from lightseg.datamodules.ade20k import ADE20K_CLASSES, ADE20KDataModule
from lightseg.datamodules.base import BaseDataModule, SemanticDataModule, SplitDataModule, pad_collate
from lightseg.datamodules.cityscapes import CITYSCAPES_CLASSES, CityscapesDataModule, CityscapesInstanceDataModule
from lightseg.datamodules.cityscapes_panoptic import CityscapesPanopticDataModule
from lightseg.datamodules.coco import COCODataModule, COCOInstanceDataModule, COCOKeypointDataModule
from lightseg.datamodules.coco_format import COCOAnnotations, COCODataset
from lightseg.datamodules.coco_panoptic import COCOPanopticDataModule, PanopticDataModule
from lightseg.datamodules.coco_semantic import COCOSemanticDataModule, COCOSemanticDataset
from lightseg.datamodules.detection import DetectionDataModule
from lightseg.datamodules.files import Sample, SegmentationFiles
from lightseg.datamodules.folder import SegmentationFolderDataModule
from lightseg.datamodules.panoptic_files import COCOPanopticDataset
from lightseg.datamodules.predict_folder import ImageFolderDataset
from lightseg.datamodules.raster_windows import RasterWindows, RasterWindowsDataModule
from lightseg.datamodules.sbd import SBDDataModule, SBDSegmentationDataset, VOCAugDataModule
from lightseg.datamodules.shapes import ShapesDataModule, generate_scene, write_voc
from lightseg.datamodules.shapes_coco import ShapesInstanceDataModule, ShapesKeypointDataModule, write_coco
from lightseg.datamodules.shapes_panoptic import ShapesPanopticDataModule, write_panoptic
from lightseg.datamodules.streaming import StreamingDetectionDataModule, StreamingSegmentationDataModule
from lightseg.datamodules.voc import VOC_CLASSES, VOCDataModule, VOCSegmentationDataset

__all__ = [
    "ADE20K_CLASSES",
    "CITYSCAPES_CLASSES",
    "VOC_CLASSES",
    "ADE20KDataModule",
    "BaseDataModule",
    "COCOAnnotations",
    "COCODataModule",
    "COCODataset",
    "COCOInstanceDataModule",
    "COCOKeypointDataModule",
    "COCOPanopticDataModule",
    "COCOPanopticDataset",
    "COCOSemanticDataModule",
    "COCOSemanticDataset",
    "CityscapesDataModule",
    "CityscapesInstanceDataModule",
    "CityscapesPanopticDataModule",
    "DetectionDataModule",
    "ImageFolderDataset",
    "PanopticDataModule",
    "RasterWindows",
    "RasterWindowsDataModule",
    "SBDDataModule",
    "SBDSegmentationDataset",
    "Sample",
    "SegmentationFiles",
    "SegmentationFolderDataModule",
    "SemanticDataModule",
    "ShapesDataModule",
    "ShapesInstanceDataModule",
    "ShapesKeypointDataModule",
    "ShapesPanopticDataModule",
    "SplitDataModule",
    "StreamingDetectionDataModule",
    "StreamingSegmentationDataModule",
    "VOCAugDataModule",
    "VOCDataModule",
    "VOCSegmentationDataset",
    "generate_scene",
    "pad_collate",
    "write_coco",
    "write_panoptic",
    "write_voc",
]
