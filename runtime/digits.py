"""Find handwritten or printed digits in a photo and normalise each the way MNIST was made.

MNIST digits are light ink on black, scaled to fit 20x20 keeping aspect, then placed in
28x28 with their centre of mass at the centre. A photo is dark ink on light paper at any
size and place, under uneven light. The pipeline, all at a bounded working resolution:
  polarity (which tail of the histogram is ink) -> ink made bright -> background removed
  with a morphological top-hat (uneven light and shadows) -> Otsu threshold with a floor
  -> connected components -> pieces of one digit merged by horizontal overlap -> each
  digit masked, contrast-stretched and normalised into a tile, left to right.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class FinderSettings:
    work_side: int = 480  # detection runs with the longer image side at most this (see README: speed)
    min_contrast: int = 40  # grey levels ink must stand above the paper; below: no digit
    min_height: float = 0.06  # a digit is at least this share of the shorter image side
    relative_height: float = 0.4  # ...and at least this share of the tallest digit found
    max_aspect: float = 2.5  # wider than this x height: a line, not a digit
    fill: int = 20  # MNIST: the digit fits in a fill x fill box...
    tile: int = 28  # ...centred by mass in a tile x tile image


@dataclass(frozen=True)
class Candidate:
    box: tuple[int, int, int, int]  # x, y, w, h in the original image
    tile: np.ndarray  # uint8 tile x tile, light ink on black
    area: int  # ink pixels at working scale, for ranking prominence


def to_gray(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def ink_is_dark(gray: np.ndarray) -> bool:
    """True when the ink is darker than the background (paper), from the histogram tails."""
    hist = cv2.calcHist([gray], [0], None, [256], [0, 256]).ravel()
    cdf = np.cumsum(hist) / max(hist.sum(), 1.0)
    lo, mid, hi = (int(np.searchsorted(cdf, q)) for q in (0.002, 0.5, 0.998))
    return (mid - lo) > (hi - mid)


def bright_ink(gray: np.ndarray) -> np.ndarray:
    """The image with ink brighter than its background, as MNIST has it."""
    return cv2.bitwise_not(gray) if ink_is_dark(gray) else gray


def normalise_tile(ink: np.ndarray, fill: int = 20, tile: int = 28) -> np.ndarray:
    """Light-on-dark ink crop (uint8) -> MNIST tile: fit fill x fill, centre of mass centred."""
    ys, xs = np.nonzero(ink)
    out = np.zeros((tile, tile), np.uint8)
    if len(xs) == 0:
        return out
    crop = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = crop.shape
    scale = fill / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    small = cv2.resize(crop, (nw, nh), interpolation=interp)
    m = cv2.moments(small, binaryImage=False)
    if m["m00"] <= 0:
        return out
    cx, cy = m["m10"] / m["m00"], m["m01"] / m["m00"]
    shift = np.float32([[1, 0, tile / 2 - cx - 0.5], [0, 1, tile / 2 - cy - 0.5]])
    return cv2.warpAffine(small, shift, (tile, tile), flags=cv2.INTER_LINEAR, borderValue=0)


def find_digits(image: np.ndarray, settings: FinderSettings = FinderSettings()) -> list[Candidate]:
    """Digits in a photo, left to right, each as an MNIST-style tile."""
    gray = to_gray(image)
    h0, w0 = gray.shape
    scale = min(1.0, settings.work_side / max(h0, w0))
    # INTER_AREA at a non-integer ratio costs 3x INTER_LINEAR; above half size the aliasing is harmless.
    interp = cv2.INTER_LINEAR if scale >= 0.5 else cv2.INTER_AREA
    work = gray if scale == 1.0 else cv2.resize(gray, (max(1, round(w0 * scale)), max(1, round(h0 * scale))),
                                                interpolation=interp)
    ink = bright_ink(work)
    h, w = ink.shape
    # Top-hat: keeps structures thinner than the kernel (pen strokes), drops light gradients.
    k = max(15, max(h, w) // 8) | 1
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (k, k))
    ink = cv2.morphologyEx(ink, cv2.MORPH_TOPHAT, kernel)
    otsu, _ = cv2.threshold(ink, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    thresh = max(otsu, settings.min_contrast)
    binary = (ink > thresh).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    groups = _group_components(stats[1:], h, w, settings)
    found = []
    for members in groups:
        x, y, bw, bh = _union_box(stats[1:][members])
        mask = np.isin(labels[y : y + bh, x : x + bw], [i + 1 for i in members])
        mask = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        crop = np.where(mask, ink[y : y + bh, x : x + bw], 0)
        tile = normalise_tile(_stretch(crop, thresh), settings.fill, settings.tile)
        box = tuple(int(round(v / scale)) for v in (x, y, bw, bh))
        found.append(Candidate(box, tile, int(stats[1:][members, cv2.CC_STAT_AREA].sum())))
    return sorted(found, key=lambda c: c.box[0])


def _stretch(crop: np.ndarray, thresh: float) -> np.ndarray:
    """Ink contrast to MNIST's: faint anti-aliasing kept, the stroke core at 255."""
    strokes = crop[crop > thresh]
    if strokes.size == 0:
        return np.zeros_like(crop)
    k = int(0.9 * (strokes.size - 1))
    top = float(np.partition(strokes, k)[k])  # 90th percentile; np.percentile's first call costs 9 ms
    floor = thresh * 0.5
    out = (crop.astype(np.float32) - floor) * (255.0 / max(top - floor, 1.0))
    return np.clip(out, 0, 255).astype(np.uint8)


def _union_box(stats: np.ndarray) -> tuple[int, int, int, int]:
    x0 = stats[:, cv2.CC_STAT_LEFT].min()
    y0 = stats[:, cv2.CC_STAT_TOP].min()
    x1 = (stats[:, cv2.CC_STAT_LEFT] + stats[:, cv2.CC_STAT_WIDTH]).max()
    y1 = (stats[:, cv2.CC_STAT_TOP] + stats[:, cv2.CC_STAT_HEIGHT]).max()
    return int(x0), int(y0), int(x1 - x0), int(y1 - y0)


def _group_components(stats: np.ndarray, h: int, w: int, s: FinderSettings) -> list[list[int]]:
    """Indices of components grouped into digits: pieces overlapping in x belong together."""
    min_area = max(4, int(0.0002 * h * w))
    keep = []
    for i, (x, y, bw, bh, area) in enumerate(stats):
        if area < min_area:
            continue
        spans_frame = (bw > 0.9 * w or bh > 0.95 * h) and (x == 0 or y == 0 or x + bw == w or y + bh == h)
        if not spans_frame:  # paper edges and shadows touch the border across the frame
            keep.append(i)
    keep.sort(key=lambda i: stats[i, cv2.CC_STAT_LEFT])
    groups: list[list[int]] = []
    for i in keep:
        x, _, bw, _, _ = stats[i]
        for g in groups:
            gx, _, gw, _ = _union_box(stats[g])
            overlap = min(x + bw, gx + gw) - max(x, gx)
            if overlap > 0.5 * min(bw, gw):
                g.append(i)
                break
        else:
            groups.append([i])
    boxes = [_union_box(stats[g]) for g in groups]
    tallest = max((b[3] for b in boxes), default=0)
    min_h = max(s.min_height * min(h, w), s.relative_height * tallest, 6)
    return [g for g, (_, _, bw, bh) in zip(groups, boxes) if bh >= min_h and bw <= s.max_aspect * bh]
