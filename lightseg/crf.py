"""The fully connected CRF of Krähenbühl & Koltun (NIPS 2011) on softmax probabilities, and a pool that runs it.

Kept free of torch and Lightning imports: :class:`CRFPool`'s worker processes import only
this module, numpy and pydensecrf.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np

INSTALL_HINT = "the dense CRF needs pydensecrf: pip install 'lightseg[crf]' (it builds pydensecrf2)"


@dataclass(frozen=True)
class CRFParams:
    """Mean-field iterations and pairwise terms.

    Defaults are DeepLab v2's ResNet-101 setting for VOC 2012 (the ``deeplab_v2_resnet101``
    entry of :data:`CRF_PRESETS`): ``w1 4, theta_alpha 67, theta_beta 3, w2 3, theta_gamma 1``,
    10 iterations.

    Args:
        iterations: mean-field steps.
        bilateral_weight: ``w1``, weight of the appearance kernel.
        bilateral_xy_std: ``theta_alpha``, its spatial standard deviation in pixels.
        bilateral_rgb_std: ``theta_beta``, its colour standard deviation (0-255 scale).
        gaussian_weight: ``w2``, weight of the smoothness kernel.
        gaussian_xy_std: ``theta_gamma``, its spatial standard deviation in pixels.
    """

    iterations: int = 10
    bilateral_weight: float = 4.0
    bilateral_xy_std: float = 67.0
    bilateral_rgb_std: float = 3.0
    gaussian_weight: float = 3.0
    gaussian_xy_std: float = 1.0

    def as_dict(self) -> dict[str, float]:
        """The parameters by name."""
        return asdict(self)


CRFPreset = Literal["deeplab_v1_largefov", "deeplab_v2_vgg16", "deeplab_v2_resnet101"]

#: The published VOC 2012 settings, each cross-validated by its authors for one network:
#:
#: - ``deeplab_v1_largefov``: DeepLab v1 (Chen et al., ICLR 2015), the DeepLab-LargeFOV
#:   (VGG-16) model's CRF: ``w1 4, theta_alpha 121, theta_beta 5, w2 3, theta_gamma 3``.
#: - ``deeplab_v2_vgg16``: DeepLab v2 (Chen et al., TPAMI 2017) release, VGG-16 ASPP-L:
#:   ``w1 4, theta_alpha 65, theta_beta 3, w2 2, theta_gamma 2``.
#: - ``deeplab_v2_resnet101``: the DeepLab v2 release's ResNet-101 ASPP-L setting behind the
#:   paper's 77.69 VOC val mIoU: ``w1 4, theta_alpha 67, theta_beta 3, w2 3, theta_gamma 1``.
#:
#: All use 10 mean-field iterations.
CRF_PRESETS: dict[str, CRFParams] = {
    "deeplab_v1_largefov": CRFParams(10, 4.0, 121.0, 5.0, 3.0, 3.0),
    "deeplab_v2_vgg16": CRFParams(10, 4.0, 65.0, 3.0, 2.0, 2.0),
    "deeplab_v2_resnet101": CRFParams(10, 4.0, 67.0, 3.0, 3.0, 1.0),
}


def crf_params(preset: str = "deeplab_v2_resnet101", **overrides: float | int | None) -> CRFParams:
    """The setting of ``preset`` with every non-``None`` value of ``overrides`` replacing its own."""
    if preset not in CRF_PRESETS:
        from lightseg.errors import LightsegError, closest_names

        raise LightsegError(f"unknown CRF preset {preset!r};{closest_names(preset, list(CRF_PRESETS))}")
    changes = {key: value for key, value in overrides.items() if value is not None}
    return replace(CRF_PRESETS[preset], **changes)  # type: ignore[arg-type]


def import_densecrf() -> object:
    """The ``pydensecrf.densecrf`` module, or a one-line error saying how to install it."""
    try:
        import pydensecrf.densecrf as dcrf
    except ImportError:
        from lightseg.errors import LightsegError

        raise LightsegError(INSTALL_HINT) from None
    return dcrf


def dense_crf(image: np.ndarray, probs: np.ndarray, params: CRFParams = CRFParams()) -> np.ndarray:
    """Refine ``probs`` ``[C,H,W]`` (float32, summing to 1 per pixel) with the RGB ``image`` ``[H,W,3]`` uint8.

    Unary = -log(prob) (clipped at 1e-8), a Gaussian (position) and a bilateral (position +
    RGB) Potts term, ``params.iterations`` mean-field steps. Returns refined probabilities
    of the same shape.
    """
    dcrf = import_densecrf()
    num_classes, height, width = probs.shape
    if image.shape != (height, width, 3) or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 [H,W,3] = [{height},{width},3], got {image.dtype} {list(image.shape)}")
    crf = dcrf.DenseCRF2D(width, height, num_classes)  # type: ignore[attr-defined]
    unary = -np.log(np.clip(probs, 1e-8, 1.0)).reshape(num_classes, -1).astype(np.float32)
    crf.setUnaryEnergy(np.ascontiguousarray(unary))
    if params.gaussian_weight > 0:
        crf.addPairwiseGaussian(sxy=params.gaussian_xy_std, compat=params.gaussian_weight)
    if params.bilateral_weight > 0:
        crf.addPairwiseBilateral(
            sxy=params.bilateral_xy_std,
            srgb=params.bilateral_rgb_std,
            rgbim=np.ascontiguousarray(image),
            compat=params.bilateral_weight,
        )
    refined = np.asarray(crf.inference(params.iterations), dtype=np.float32)
    return refined.reshape(num_classes, height, width)


def refine_many(items: list[tuple[np.ndarray, np.ndarray]], params: CRFParams) -> list[np.ndarray]:
    """:func:`dense_crf` over ``(image, probs)`` pairs (the unit of work of a pool worker)."""
    return [dense_crf(image, probs, params) for image, probs in items]


def refine_labels_many(items: list[tuple[np.ndarray, np.ndarray]], params: CRFParams) -> list[np.ndarray]:
    """Refined label maps ``[H,W]`` (uint8, or int32 above 256 classes) of ``(image, probs)`` pairs.

    What the test metrics and the predicted masks need; 1/16 of the data of the
    probabilities to send back from a worker process.
    """
    dtype = np.uint8 if items and items[0][1].shape[0] <= 256 else np.int32
    return [dense_crf(image, probs, params).argmax(0).astype(dtype) for image, probs in items]


class CRFPool:
    """Runs :func:`lightseg.crf.dense_crf` over many images in worker processes.

    ``workers <= 1`` refines in this process. Workers are spawned (not forked: forking a
    process that holds CUDA or DataLoader state is unsafe) and import only numpy,
    pydensecrf and :mod:`lightseg.crf`.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor: Executor | None = None

    def map(self, items: list[tuple[np.ndarray, np.ndarray]], params: CRFParams) -> list[np.ndarray]:
        """Refined probabilities for each ``(image, probs)`` pair, in order."""
        return self._run(refine_many, [(item, params) for item in items])

    def map_labels(self, items: list[tuple[np.ndarray, np.ndarray]], params: CRFParams) -> list[np.ndarray]:
        """Refined label maps (argmax of the refined probabilities) for each pair, in order."""
        return self._run(refine_labels_many, [(item, params) for item in items])

    def map_labels_each(self, jobs: list[tuple[tuple[np.ndarray, np.ndarray], CRFParams]]) -> list[np.ndarray]:
        """Refined label maps of ``((image, probs), params)`` jobs, each with its own setting, in order."""
        return self._run(refine_labels_many, jobs)

    def _run(
        self,
        work: Callable[[list[tuple[np.ndarray, np.ndarray]], CRFParams], list[np.ndarray]],
        jobs: list[tuple[tuple[np.ndarray, np.ndarray], CRFParams]],
    ) -> list[np.ndarray]:
        if self.workers <= 1 or len(jobs) <= 1:
            return [work([item], params)[0] for item, params in jobs]
        if self._executor is None:
            self._executor = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        # one image per task: the first worker starts after one image is sent, not after a whole chunk
        futures = [self._executor.submit(work, [item], params) for item, params in jobs]
        return [future.result()[0] for future in futures]

    def close(self) -> None:
        """Stop the worker processes."""
        if self._executor is not None:
            self._executor.shutdown()
            self._executor = None
