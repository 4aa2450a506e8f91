"""Images -> network input blob, through cv2.dnn.blobFromImages, from the model's metadata.

blob = (pixel - 255 * mean) * scalefactor with scalefactor = 1 / (255 * std), per channel,
which is exactly the training transform (pixel / 255 - mean) / std.
"""
from __future__ import annotations

import cv2
import numpy as np

from runtime.metadata import Preprocess


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
    """The plain `resize` fit: the whole image scaled to the input size."""
    image = to_model_channels(image, pp)
    if image.shape[1] == pp.width and image.shape[0] == pp.height:
        return image
    return cv2.resize(image, (pp.width, pp.height), interpolation=cv2.INTER_AREA)


def to_blob(tiles: list[np.ndarray], params: cv2.dnn.Image2BlobParams) -> np.ndarray:
    """uint8 tiles already at the input size -> float32 N x C x H x W blob."""
    return cv2.dnn.blobFromImagesWithParams(tiles, params)
