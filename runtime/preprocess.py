"""Images -> network input blob, through cv2.dnn.blobFromImages, from the model's metadata.

blob = (pixel - 255 * mean) * scalefactor with scalefactor = 1 / (255 * std), per channel,
which is exactly the training transform (pixel / 255 - mean) / std.
"""
from __future__ import annotations

import cv2
import numpy as np

from digitpipe.runtime.metadata import Preprocess


def blob_params(pp: Preprocess) -> cv2.dnn.Image2BlobParams:
    params = cv2.dnn.Image2BlobParams()
    pad = (0.0,) * (4 - len(pp.mean))
    params.scalefactor = tuple(1.0 / (255.0 * s) for s in pp.std) + pad
    params.mean = tuple(255.0 * m for m in pp.mean) + pad
    params.size = (pp.width, pp.height)
    params.swapRB = pp.swap_rb
    params.ddepth = cv2.CV_32F  # layout: the default, NCHW
    return params


def to_model_channels(image: np.ndarray, pp: Preprocess) -> np.ndarray:
    """A uint8 gray or BGR image in the channel count the model takes."""
    if pp.channels == 1:
        return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image


def resize_to_input(image: np.ndarray, pp: Preprocess) -> np.ndarray:
    """The `resize` fit: the whole image scaled to the input size, or (resize_shorter) its
    shorter side scaled to resize_shorter and the centre cropped, as in training."""
    image = to_model_channels(image, pp)
    if pp.resize_shorter:
        return center_crop(fit_shorter_side(image, pp.resize_shorter), pp.width, pp.height)
    if image.shape[1] == pp.width and image.shape[0] == pp.height:
        return image
    return cv2.resize(image, (pp.width, pp.height), interpolation=cv2.INTER_AREA)


def fit_shorter_side(image: np.ndarray, side: int) -> np.ndarray:
    """Scale so the shorter side is `side`, keeping the aspect ratio (training stores images this way)."""
    h, w = image.shape[:2]
    if min(h, w) == side:
        return image
    scale = side / min(h, w)
    size = (max(side, round(w * scale)), max(side, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def center_crop(image: np.ndarray, width: int, height: int) -> np.ndarray:
    h, w = image.shape[:2]
    top, left = (h - height) // 2, (w - width) // 2
    return image[top : top + height, left : left + width]


def to_blob(tiles: list[np.ndarray], params: cv2.dnn.Image2BlobParams) -> np.ndarray:
    """uint8 tiles already at the input size -> float32 N x C x H x W blob."""
    return cv2.dnn.blobFromImagesWithParams(tiles, params)
