"""Find handwritten or printed digits in a photo and normalise each the way MNIST was made.

MNIST digits are light ink on black, scaled to fit 20x20 keeping aspect, then placed in
28x28 with their centre of mass at the centre. A photo is dark ink on light paper at any
size and place, under uneven light. The pipeline, all at a bounded working resolution:
  polarity (which tail of the histogram is ink) -> ink made bright -> background removed
  with a morphological top-hat (uneven light and shadows) -> Otsu threshold with a floor
  -> connected components -> pieces of one digit merged by horizontal overlap, touching
  digits cut at the thinnest ink column -> each digit masked, contrast-stretched and
  normalised into a tile, left to right.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class FinderSettings:
    work_side: int = 480  # detection runs with the longer image side at most this (see docs/measurements.md: speed)
    min_contrast: int = 40  # grey levels ink must stand above the paper; below: no digit
    min_height: float = 0.06  # a digit is at least this share of the shorter image side
    relative_height: float = 0.4  # ...and at least this share of the tallest digit found
    max_row_gap: float = 0.5  # ink further below other ink than this x the taller one's height: another row
    max_aspect: float = 2.5  # wider than this x height: a line, not a digit
    split_aspect: float = 1.15  # ink wider than this x height may be several touching digits
    # Pen strokes are about equally wide everywhere: the widest point of a digit's ink is at
    # most 2.51x its mean stroke width over all 10,000 MNIST test digits (2.35 over UCI's
    # 1,797); filled shapes and the textures of photographs spread wider (docs/measurements.md: in the wild).
    max_stroke_spread: float = 2.8
    # With an ink detector: ink counts only this share of the image's longer side around
    # what the detector marked (its mark is coarse: a quarter of the frame's resolution).
    mask_grow: float = 0.006
    fill: int = 20  # MNIST: the digit fits in a fill x fill box...
    tile: int = 28  # ...centred by mass in a tile x tile image


@dataclass(frozen=True)
class Candidate:
    box: tuple[int, int, int, int]  # x, y, w, h in the original image
    tile: np.ndarray  # uint8 tile x tile, light ink on black
    area: int  # ink pixels at working scale, for ranking prominence
    # Wide ink may be several touching digits: it is offered whole and cut into pieces, all
    # with the same group number, and choose_readings keeps whichever the classifier is
    # surer of. group -1: ink offered once.
    group: int = -1
    piece: bool = False  # one piece of its group (False: the group whole, or ink never cut)

    @property
    def offered_twice(self) -> bool:
        return self.group >= 0


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


def find_digits(image: np.ndarray, settings: FinderSettings = FinderSettings(),
                ink_mask: np.ndarray | None = None) -> list[Candidate]:
    """Digits in a photo, left to right, each as an MNIST-style tile. ink_mask (bool, any
    size, from an ink detector): only ink near what it marks is read, and the ink's polarity
    is what the marked pixels have against the paper around them."""
    gray = to_gray(image)
    h0, w0 = gray.shape
    scale = min(1.0, settings.work_side / max(h0, w0))
    # INTER_AREA at a non-integer ratio costs 3x INTER_LINEAR; above half size the aliasing is harmless.
    interp = cv2.INTER_LINEAR if scale >= 0.5 else cv2.INTER_AREA
    work = gray if scale == 1.0 else cv2.resize(gray, (max(1, round(w0 * scale)), max(1, round(h0 * scale))),
                                                interpolation=interp)
    h, w = work.shape
    if ink_mask is None:
        # Top-hat: keeps structures thinner than the kernel (pen strokes), drops light gradients.
        k = max(15, max(h, w) // 8) | 1
        kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (k, k))
        ink = cv2.morphologyEx(bright_ink(work), cv2.MORPH_TOPHAT, kernel)
        otsu, _ = cv2.threshold(ink, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
        thresh_map = np.float32(max(otsu, settings.min_contrast))
        ox = oy = 0
    else:  # the paper's level is taken around each marked part instead: a top-hat's is wrong near shadow edges
        near = _detected_region(work, ink_mask, settings.mask_grow)
        if near is None:
            return []
        (ox, oy), region, parts, dark = near  # ink, thresholds and labels below are within the crop at ox, oy
        crop = work[oy : oy + region.shape[0], ox : ox + region.shape[1]]
        ink, thresh_map = _local_ink(cv2.bitwise_not(crop) if dark else crop, parts, settings.min_contrast)
        ink[~region] = 0
    binary = (ink > thresh_map).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    groups, min_h = _group_components(stats[1:] + np.array([ox, oy, 0, 0, 0]), h, w, settings)
    found = []
    for number, members in enumerate(groups):
        gx, gy, gw, gh = _union_box(stats[1:][members])
        group_mask = np.isin(labels[gy : gy + gh, gx : gx + gw], [i + 1 for i in members])
        pieces = _split_touching(group_mask, settings.split_aspect)
        if len(pieces) > 1:
            pieces = [(0, gw, number, False)] + [(c0, c1, number, True) for c0, c1 in pieces]
        else:
            pieces = [(0, gw, -1, False)]
        for c0, c1, group, piece in pieces:
            rows = np.flatnonzero(group_mask[:, c0:c1].any(axis=1))
            if rows.size == 0:
                continue
            r0, r1 = int(rows[0]), int(rows[-1]) + 1
            x, y, bw, bh = gx + c0, gy + r0, c1 - c0, r1 - r0
            if bh < min_h or bw > settings.max_aspect * bh:  # too small, or a line rather than a digit
                continue
            mask = group_mask[r0:r1, c0:c1]
            if stroke_spread(mask) > settings.max_stroke_spread:
                continue
            area = int(mask.sum())
            thresh = float(thresh_map if thresh_map.ndim == 0 else thresh_map[y : y + bh, x : x + bw][mask].max())
            mask = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            crop = np.where(mask, ink[y : y + bh, x : x + bw], 0)
            tile = normalise_tile(stretch_ink(crop, thresh), settings.fill, settings.tile)
            box = tuple(int(round(v / scale)) for v in (x + ox, y + oy, bw, bh))
            found.append(Candidate(box, tile, area, group, piece))
    return sorted(found, key=lambda c: c.box[0])


def _local_ink(ink: np.ndarray, parts: list[tuple[tuple[slice, slice], np.ndarray]],
               floor: int) -> tuple[np.ndarray, np.ndarray]:
    """(ink above its paper, a threshold for each pixel), each connected part of the context
    (the marked ink and the paper around it) on its own: a digit in a shadow or under glare
    has its own paper level (the median below its Otsu threshold) and contrast. Outside the
    context: no ink, above any threshold. parts: (box slices, bool mask in the box) each."""
    out = np.zeros_like(ink)
    thresh_map = np.full(ink.shape, 256.0, np.float32)
    for box, inside in parts:
        values = ink[box][inside]
        otsu, _ = cv2.threshold(values[:, None], 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
        below = values[values <= otsu]
        paper = float(np.median(below)) if below.size else 0.0
        out[box][inside] = np.clip(values.astype(np.float32) - paper, 0, 255).astype(np.uint8)
        thresh_map[box][inside] = max(otsu - paper, floor)
    return out, thresh_map


CONTEXT = 4  # thresholds are chosen over the marked ink and this many times its margin of paper


def _detected_region(work: np.ndarray, ink_mask: np.ndarray, grow: float):
    """Where the detector marked ink, at the working size, or None when it marked nothing:
    ((x, y) of the crop of `work` that holds all of it; where ink may be read in that crop,
    bool; the parts of the wider context its thresholds are chosen in, for _local_ink, in
    crop coordinates; True when the ink is darker than the paper around it).

    The margins are grown, and the context split into parts, at the mask's own size (the
    detector's input, e.g. 160x120) and then scaled up: at the working size the same
    dilations and labelling cost 3 ms a frame, a third of the finder's time. The finder
    then labels only the crop around the context."""
    h, w = work.shape
    mh, mw = ink_mask.shape
    marked = ink_mask.astype(np.uint8)
    if not marked.any():
        return None
    r = max(1, round(grow * max(mh, mw)))  # the margin in mask pixels
    region = cv2.dilate(marked, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    context = cv2.dilate(marked, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * CONTEXT * r + 1,) * 2))
    small = cv2.resize(work, (mw, mh), interpolation=cv2.INTER_AREA)
    ring = context > marked  # paper around the marked ink
    dark = not ring.any() or float(small[marked > 0].mean()) < float(small[ring].mean())
    count, labels, stats, _ = cv2.connectedComponentsWithStats(context, connectivity=8)
    sx, sy = w / mw, h / mh

    def to_work(x, y, bw, bh):  # a box in mask pixels -> slice bounds at the working size, a pixel wider
        return (max(0, int(x * sx) - 1), max(0, int(y * sy) - 1),
                min(w, int(np.ceil((x + bw) * sx)) + 1), min(h, int(np.ceil((y + bh) * sy)) + 1))

    x0, y0, x1, y1 = to_work(*cv2.boundingRect(context))
    labels_up = cv2.resize(labels.astype(np.uint16), (w, h), interpolation=cv2.INTER_NEAREST)[y0:y1, x0:x1]
    parts = []
    for c in range(1, count):
        px0, py0, px1, py1 = to_work(*stats[c, :4])
        box = (slice(py0 - y0, py1 - y0), slice(px0 - x0, px1 - x0))
        parts.append((box, labels_up[box] == c))
    region_up = cv2.resize(region, (w, h), interpolation=cv2.INTER_NEAREST)[y0:y1, x0:x1] > 0
    return (x0, y0), region_up, parts, dark


def most_prominent(found: list[Candidate]) -> list[Candidate]:
    """The one digit --single reads: the largest ink offered whole. When a wide group's whole
    was turned away (too wide for one digit) and only its pieces are left, the largest piece."""
    if not found:
        return []
    whole = [c for c in found if not c.piece]
    return [max(whole or found, key=lambda c: c.area)]


def choose_readings(found: list[Candidate], score: np.ndarray) -> list[int]:
    """Indices of the candidates to report, given the classifier's score for each: for ink
    offered whole and in pieces, the reading the classifier is surer of (the pieces win when
    their least confident beats the whole; pieces whose whole was turned away stay)."""
    whole: dict[int, int] = {}
    pieces: dict[int, list[int]] = {}
    for k, c in enumerate(found):
        if c.piece:
            pieces.setdefault(c.group, []).append(k)
        elif c.offered_twice:
            whole[c.group] = k
    keep = []
    for k, c in enumerate(found):
        if not c.offered_twice:
            keep.append(k)
        elif not c.piece:
            parts = pieces.get(c.group, [])
            if not parts or score[k] >= min(score[p] for p in parts):
                keep.append(k)
        elif c.group not in whole or min(score[p] for p in pieces[c.group]) > score[whole[c.group]]:
            keep.append(k)
    return keep


def stroke_spread(mask: np.ndarray) -> float:
    """The widest point of the ink over its mean stroke width: 1.3-2.5 for pen strokes,
    more for filled blobs and photographed textures."""
    mask = np.pad(mask.astype(np.uint8), 1)
    widest = 2 * float(cv2.distanceTransform(mask, cv2.DIST_L2, 3).max())
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)  # same length, fewer points
    perimeter = sum(cv2.arcLength(c, True) for c in contours)
    mean_width = 2 * float(mask.sum()) / max(perimeter, 1.0)  # a stroke of length L, width t: area Lt, perimeter ~2L
    return widest / max(mean_width, 1e-6)


def _split_touching(mask: np.ndarray, split_aspect: float) -> list[tuple[int, int]]:
    """Column ranges of the digits in one ink group: touching digits are cut where the
    column profile of the ink is thinnest, near where equal-width digits would meet."""
    h, w = mask.shape
    if w <= split_aspect * h:
        return [(0, w)]
    n = max(2, round(w / (0.8 * h)))  # handwritten digits are ~0.5-1.0 x their height wide
    profile = mask.sum(axis=0)
    edges, start = [0], 0
    for k in range(1, n):
        centre, reach = k * w // n, max(1, w // (3 * n))
        lo, hi = max(start + 1, centre - reach), min(w - 1, centre + reach)
        cut = lo + int(np.argmin(profile[lo:hi])) if hi > lo else centre
        edges.append(cut)
        start = cut
    edges.append(w)
    return list(zip(edges[:-1], edges[1:]))


def stretch_ink(crop: np.ndarray, thresh: float) -> np.ndarray:
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


def _group_components(stats: np.ndarray, h: int, w: int, s: FinderSettings) -> tuple[list[list[int]], float]:
    """Indices of components grouped into digits (pieces overlapping in x and close in y belong
    together), and the minimum height a digit must have."""
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
        x, y, bw, bh, _ = stats[i]
        for g in groups:
            gx, gy, gw, gh = _union_box(stats[g])
            overlap = min(x + bw, gx + gw) - max(x, gx)
            gap = max(y, gy) - min(y + bh, gy + gh)  # negative: they overlap in y too
            # Pieces of one digit lie close above one another; further apart, it is another row.
            if overlap > 0.5 * min(bw, gw) and gap <= s.max_row_gap * max(bh, gh):
                g.append(i)
                break
        else:
            groups.append([i])
    boxes = [_union_box(stats[g]) for g in groups]
    tallest = max((b[3] for b in boxes), default=0)
    min_h = max(s.min_height * min(h, w), s.relative_height * tallest, 6)
    return [g for g, (_, _, _, bh) in zip(groups, boxes) if bh >= min_h], min_h
