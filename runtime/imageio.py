"""Read any image file into uint8 gray or BGR, or fail with a one-line InputError."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from digitpipe.runtime.errors import InputError
from digitpipe.runtime.image_size import header_size

DEFAULT_MAX_PIXELS = 100_000_000  # 100 megapixels: above any phone camera, far below a decompression bomb

IMAGE_EXTENSIONS = frozenset(
    ".png .jpg .jpeg .jpe .bmp .dib .tif .tiff .webp .pgm .ppm .pbm .pnm .gif .jp2 .avif .hdr .exr".split()
)
_JPEG_MAGIC = b"\xff\xd8"


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder")
    try:
        data = np.fromfile(path, dtype=np.uint8)  # also reads non-ASCII paths on every OS
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror})") from None
    return decode_image(data, str(path), max_pixels)


def decode_image(data: np.ndarray, name: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    if data.size == 0:
        raise InputError(f"{name}: empty file")
    size = header_size(data[:65536].tobytes())
    if size is not None:
        w, h = size
        if w == 0 or h == 0:
            raise InputError(f"{name}: image has no pixels ({w}x{h})")
        if w * h > max_pixels:
            raise InputError(f"{name}: {w}x{h} is {w * h / 1e6:.0f} megapixels, over the limit of "
                             f"{max_pixels / 1e6:g} (raise it with --max-pixels)")
    # JPEGs are decoded with EXIF orientation applied (phone photos); others unchanged,
    # to keep alpha and 16-bit depth.
    flags = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH if bytes(data[:2]) == _JPEG_MAGIC else cv2.IMREAD_UNCHANGED
    try:
        image = cv2.imdecode(data, flags)
    except cv2.error as exc:
        raise InputError(f"{name}: cannot decode it ({str(exc).strip().splitlines()[-1]})") from None
    if image is None:
        raise InputError(f"{name}: not a readable image (unknown format or corrupt data)")
    return to_uint8(image, name)


def to_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Any depth and channel layout OpenCV returns -> uint8 gray (H x W) or BGR (H x W x 3)."""
    if image.size == 0 or min(image.shape[:2]) < 1:
        raise InputError(f"{name}: image has no pixels")
    image = _to_uint8_depth(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return image
    channels = image.shape[2]
    if channels == 2:
        return _flatten_alpha(image[:, :, :1], image[:, :, 1])[:, :, 0]
    if channels == 3:
        return image
    if channels == 4:
        return _flatten_alpha(image[:, :, :3], image[:, :, 3])
    raise InputError(f"{name}: {channels} channels is not an image layout this reads")


def _to_uint8_depth(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        image = np.nan_to_num(image.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        scale = 255.0 if image.max(initial=0.0) <= 1.0 else 1.0
        return np.clip(image * scale + 0.5, 0, 255).astype(np.uint8)
    return np.clip(image, 0, 255).astype(np.uint8)


def _flatten_alpha(color: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Composite onto a background that contrasts with the opaque pixels (ink stays visible)."""
    a = alpha.astype(np.float32)[:, :, None] / 255.0
    opaque = color[alpha > 127]
    background = 255.0 if opaque.size == 0 or float(opaque.mean()) < 128 else 0.0
    out = color.astype(np.float32) * a + background * (1.0 - a)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
