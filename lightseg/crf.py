"""The fully connected CRF of Krähenbühl & Koltun (NIPS 2011) on softmax probabilities.

Kept free of torch and Lightning imports: the DenseCRF callback's worker processes import
only this module, numpy and pydensecrf.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

INSTALL_HINT = "the dense CRF needs pydensecrf: pip install 'lightseg[crf]' (it builds pydensecrf2)"


@dataclass(frozen=True)
class CRFParams:
    """Mean-field iterations and pairwise terms.

    Defaults are DeepLab v2's published VOC 2012 setting for ResNet-101 (the ``DenseCRF``
    layer of the release's ``test.prototxt``: ``bi_w 4, bi_xy_std 121, bi_rgb_std 5,
    pos_w 3, pos_xy_std 3``, 10 iterations; Chen et al., TPAMI 2017, Sec. 4.1, which
    cross-validated ``w1, theta_alpha, theta_beta`` on VOC val and fixed ``w2 = 3,
    theta_gamma = 3``).

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
    bilateral_xy_std: float = 121.0
    bilateral_rgb_std: float = 5.0
    gaussian_weight: float = 3.0
    gaussian_xy_std: float = 3.0

    def as_dict(self) -> dict[str, float]:
        """The parameters by name."""
        return asdict(self)


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
