"""The settings every data module shares, as groups: how batches are loaded, how training images are augmented.

A data module takes ``loader:`` (:class:`LoaderSettings`) and ``augmentation:`` (the family's
:class:`FlipAugmentation`, :class:`CropAugmentation` or :class:`SemanticAugmentation`), each
defined once here; a data module changes only their defaults (VOC's ``LoaderSettings(batch_size=16)``).
The older flat spelling (``batch_size: 16`` beside ``root``) is read as the group in Python, configs,
command lines and search spaces (:meth:`BaseDataModule.take_settings`, ``lightseg.cli.flat_options``).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

from lightseg.errors import LightsegError, option
from lightseg.groups import SettingsGroup

#: data loader workers: a number, or ``auto`` (the CPU cores this process may use, at most 8)
Workers = int | Literal["auto"]
#: page-locked batches: ``auto`` pins them where a GPU is (pinning without one only warns)
Pinning = bool | Literal["auto"]


@dataclasses.dataclass(frozen=True)
class LoaderSettings(SettingsGroup):
    """How a data module's batches are loaded (its ``loader:``).

    Args:
        batch_size: samples per batch (per process).
        num_workers: data loader worker processes; ``auto``: the CPU cores this process may use, at most 8.
        pin_memory: pin batches in page-locked memory (faster host-to-GPU copies); ``auto``: where a GPU is.
        persistent_workers: keep workers alive between epochs.
        predict_batch_size: images per batch in ``lightseg predict``. 1 by default: a folder's
            images come in any size, and one at a time is what a CPU runs fastest, in the least
            memory; raise it on a GPU, for images of one size.
    """

    group_name: ClassVar[str] = "loader"

    batch_size: int = 8
    num_workers: Workers = "auto"
    pin_memory: Pinning = "auto"
    persistent_workers: bool = True
    predict_batch_size: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("batch_size", "predict_batch_size"):
            size = getattr(self, name)
            if size < 1:
                raise LightsegError(f"{option('data', f'loader.{name}')} must be >= 1, got {size}")


@dataclasses.dataclass(frozen=True)
class FlipAugmentation(SettingsGroup):
    """How training images are augmented where boxes and keypoints follow (a data module's ``augmentation:``).

    Args:
        hflip: random horizontal flips in training (keypoints swap left and right).
    """

    group_name: ClassVar[str] = "augmentation"

    hflip: bool = True


@dataclasses.dataclass(frozen=True)
class CropAugmentation(FlipAugmentation):
    """Random scale, crop and flip in training (a panoptic data module's ``augmentation:``).

    Args:
        crop_size: random training crop, a side or ``(H, W)`` (padded with void where the image is
            smaller); ``None`` trains on whole images.
        scale_range: random rescaling range in training; ``None`` disables it.
        hflip: random horizontal flips in training.
    """

    crop_size: int | tuple[int, int] | None = None
    scale_range: tuple[float, float] | None = None


@dataclasses.dataclass(frozen=True)
class SemanticAugmentation(CropAugmentation):
    """The semantic training pipeline (a semantic data module's ``augmentation:``): the DeepLab recipe.

    Random scale, pad to the crop with image 0 / mask ``ignore_index``, random crop, flips and
    an optional photometric distortion; validation and test stay unaugmented at native resolution.

    Args:
        crop_size: training crop ``int`` or ``(H, W)``; ``None`` trains on whole images.
        scale_range: random rescaling range in training; ``None`` disables it.
        hflip: random horizontal flips in training.
        vflip: random vertical flips in training.
        photometric: random brightness/contrast/saturation/hue in training.
    """

    vflip: bool = False
    photometric: bool = False


def in_process_loader(batch_size: int) -> LoaderSettings:
    """A loader that reads in this process (no workers, no pinning): small sets, plain Python use."""
    return LoaderSettings(batch_size=batch_size, num_workers=0, pin_memory=False, persistent_workers=False)


#: the loader of the detection and panoptic data modules: two images per batch (Detectron2's and
#: torchvision's recipes: 2 per GPU)
DETECTION_LOADER = LoaderSettings(batch_size=2)


def no_other_arguments(owner: object, kwargs: dict[str, object]) -> None:
    """Refuse what is left of a data module's ``**kwargs`` once its groups took their flat settings."""
    if kwargs:
        raise TypeError(f"{type(owner).__name__} got unexpected keyword argument(s) {', '.join(sorted(kwargs))}")
