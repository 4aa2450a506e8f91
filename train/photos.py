"""Render digit tiles as photos: dark ink on paper-like backgrounds, like a phone sees them.

Used by tests, benchmarks and `make demo`; never by the runtime. Ink comes from real
digit images (e.g. MNIST test tiles, light-on-dark uint8), placed in a row at random
scale and position, under a light gradient, with sensor noise and JPEG compression.
"""
from __future__ import annotations

import cv2
import numpy as np

# OpenCV's Hershey fonts for printed digits (bench.wild's printed kind, the detector's printed scenes)
HERSHEY = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
           cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_SCRIPT_SIMPLEX)


def layout_ink(tiles: list[np.ndarray], rng: np.random.Generator, size=(640, 480),
               digit_height: float | None = None, gap=(0.05, 0.25)) -> tuple[np.ndarray, list[tuple]]:
    """(ink coverage 0..1 as an h x w float32 image, each tile's box (x, y, w, h)): the tiles
    written left to right at a random height, place and spacing."""
    w, h = size
    dh = int(digit_height or rng.uniform(0.25, 0.5) * h)
    gap = int(dh * rng.uniform(*gap))
    # MNIST ink is at most 20 px tall; larger tiles (printed glyphs) scale by their own height.
    crops = [_crop_ink(t) for t in tiles]
    cells = [cv2.resize(c, None, fx=dh / max(20, c.shape[0]), fy=dh / max(20, c.shape[0]), interpolation=cv2.INTER_CUBIC)
             for c in crops]
    total_w = sum(c.shape[1] for c in cells) + gap * (len(cells) - 1)
    if total_w > 0.9 * w:  # shrink a long number to fit the frame
        f = 0.9 * w / total_w
        cells = [cv2.resize(c, None, fx=f, fy=f, interpolation=cv2.INTER_AREA) for c in cells]
        gap, total_w = int(gap * f), int(0.9 * w)
    ink = np.zeros((h, w), np.float32)
    x = int(rng.uniform(0.05 * w, max(0.05 * w + 1, w - total_w - 0.05 * w)))
    tallest = max(c.shape[0] for c in cells)
    row_y = rng.uniform(0.05 * h, max(0.05 * h + 1, h - 1.1 * tallest - 0.05 * h))
    boxes = []
    for c in cells:
        ch, cw = c.shape
        y = int(np.clip(row_y + rng.normal(0, 0.04 * tallest), 0, h - ch))
        ink[y : y + ch, x : x + cw] = np.maximum(ink[y : y + ch, x : x + cw], c.astype(np.float32) / 255)
        boxes.append((x, y, cw, ch))
        x += cw + gap
    ink[ink < 0.08] = 0  # cubic resampling rings faintly around each cell
    return ink, boxes


def render_photo(tiles: list[np.ndarray], rng: np.random.Generator, size=(640, 480),
                 digit_height: float | None = None, tint=True, jpeg_quality: int | None = 85,
                 gap=(0.05, 0.25)) -> np.ndarray:
    """A BGR photo of the tiles written left to right on paper; gap is a share of the digit
    height between neighbours (negative: they touch)."""
    w, h = size
    ink, _ = layout_ink(tiles, rng, size, digit_height, gap)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    gradient = (np.cos(angle) * xx / w + np.sin(angle) * yy / h) * rng.uniform(20, 70)
    paper = rng.uniform(170, 230) + gradient - gradient.mean()
    ink_level = rng.uniform(20, 70)
    gray = paper * (1 - ink) + ink_level * ink + rng.normal(0, 3, (h, w))
    gray = np.clip(gray, 0, 255).astype(np.uint8)
    photo = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    if tint:
        photo = np.clip(photo * rng.uniform(0.85, 1.0, 3), 0, 255).astype(np.uint8)
    if jpeg_quality:
        ok, jpg = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        photo = cv2.imdecode(jpg, cv2.IMREAD_COLOR)
    return photo


def _crop_ink(tile: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(tile > 20)
    return tile if len(xs) == 0 else tile[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
