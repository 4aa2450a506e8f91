"""Find handwritten or printed digits in a photo and normalise each the way MNIST was made.

MNIST digits are light ink on black, scaled to fit 20x20 keeping aspect, then placed in
28x28 with their centre of mass at the centre. A photo is dark ink on light paper at any
size and place, under uneven light. The pipeline, all at a bounded working resolution:
  polarity (which tail of the histogram is ink) -> ink made bright -> background removed
  with a morphological top-hat (uneven light and shadows) -> Otsu threshold with a floor
  -> connected components -> pieces of one digit merged by horizontal overlap; groups far
  thinner than the page's writing (printed box sides) and filled blobs dropped, and with an
  ink detector's mark, a straight bar inside a group (a pen it marked with the writing) and
  a pen running on from a group beyond it erased from the group, and groups whose ink runs
  on beyond it (part of a pen or a drawing) dropped; wide ink
  offered whole and cut at thin ink columns into every plausible run of digits (the reader
  keeps the cut the classifier is surest of, choose_readings) -> each digit masked,
  contrast-stretched and normalised into a tile, left to right.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

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
    split_aspect: float = 0.95  # ink wider than this x height may be several touching digits...
    max_digits: int = 6  # ...at most this many, each this share of its height wide:
    min_piece: float = 0.12
    max_piece: float = 1.3
    piece_height: float = 0.7  # a piece is at least this share of its group's height
    cut_spacing: float = 0.12  # cuts closer than this x the group's height are one cut
    # Pen strokes are about equally wide everywhere: the widest point of a digit's ink is at
    # most 2.51x its mean stroke width over all 10,000 MNIST test digits (2.35 over UCI's
    # 1,797); filled shapes and the textures of photographs spread wider (docs/measurements.md: in the wild).
    max_stroke_spread: float = 2.8
    # One hand writes with one pen: with at least thin_groups groups of ink, a group whose
    # mean stroke width is below thin_share x the pen's (the median of the groups at least half
    # as wide as the widest) is printed furniture, a form box's side or a hairline, not a digit.
    # Digits of different MNIST writers in one number go down to 0.41x the pen's, box sides
    # 0.11-0.31x (docs/measurements.md: thin lines).
    thin_share: float = 0.35
    thin_groups: int = 3
    # With an ink detector: ink counts only this share of the image's longer side around
    # what the detector marked (its mark is coarse: a quarter of the frame's resolution).
    mask_grow: float = 0.006
    # ...and faint ink near stronger ink is lifted to its contrast (_lift_faint_ink; 0: off):
    # faint is below this share of the strongest ink within faint_radius x the image's
    # longer side, and at least faint_floor grey levels (docs/measurements.md: glare).
    faint_share: float = 0.5
    faint_radius: float = 0.015
    faint_floor: int = 20
    # ...and the paper's level is taken under every pixel of a part (_paper_level): an opening
    # this many pen stroke widths wide (0: one level a part), dark ink in dimmer paper scaled up at most this much.
    paper_kernel: float = 3.0
    max_paper_gain: float = 4.0
    # ...and a pixel within paper_delta grey levels of the darkest paper within paper_reach x that
    # opening's width, its neighbours too, is paper (0: off): a shadow's tip narrower than the
    # opening is not ink (docs/measurements.md: a shadow's tip).
    paper_reach: float = 2.0
    paper_delta: int = 8
    # ...and a group whose ink runs on beyond the detector's mark, as dark as the group and as
    # wide as its strokes, is part of something larger, not a digit: it is dropped when what
    # runs on is more than run_on x the group's own ink (_runs_on; 0: off; docs/measurements.md:
    # ink that runs on).
    run_on: float = 0.3
    # ...and ink outside the mark that joins two inks inside it across a gap no longer than
    # bridge x the image's longer side is read with them (_bridges; 0: off): the mark has holes
    # where it is unsure, and one stroke across a hole is one thing, read whole or not at all.
    bridge: float = 0.06
    # ...and a straight pen-wide stroke that runs on from a group beyond the mark (a pen lying
    # on the page, touching or across the writing) is erased from the group along its line
    # before run_on judges it (_pen_line; docs/detector.md: "What the desk loses, by cause").
    erase_pens: bool = True
    # ...and a straight bar at least erase_bars x the page's median group height long, inside
    # a group, is erased from it: a pen the detector marked with the writing it lies across
    # (_without_bars; 0: off; docs/detector.md, "A bar across the writing is erased").
    erase_bars: float = 1.5
    fill: int = 20  # MNIST: the digit fits in a fill x fill box...
    tile: int = 28  # ...centred by mass in a tile x tile image


@dataclass(frozen=True)
class Candidate:
    box: tuple[int, int, int, int]  # x, y, w, h in the original image
    tile: np.ndarray  # uint8 tile x tile, light ink on black
    area: int  # ink pixels at working scale, for ranking prominence
    # Wide ink may be several touching digits: it is offered whole and cut at several places
    # into pieces, all with the same group number, and choose_readings keeps the reading of
    # the whole group the classifier is surest of. group -1: ink offered once.
    group: int = -1
    piece: bool = False  # one piece of its group (False: the group whole, or ink never cut)
    span: tuple[int, int] = (0, 0)  # the columns of its group this candidate was cut from...
    extent: int = 0  # ...of the group's columns 0..extent
    ink: int = -1  # the index of its group of ink in the Page it came from (-1: none)

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


def fit_strip(ink: np.ndarray, width: int, height: int, share: float) -> tuple[np.ndarray, float, int]:
    """Light-on-dark ink cropped to its box -> (a height x width strip for a sequence reader
    (fit "strip"), scale, left column): the ink's height scaled to share x height (MNIST's 20 of
    28), or less where it would not fit the width within the same margin; centred."""
    ih, iw = ink.shape
    margin = (1 - share) * height
    scale = min(share * height / ih, (width - margin) / iw)
    nw, nh = max(1, round(iw * scale)), max(1, round(ih * scale))
    small = cv2.resize(ink, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    left, top = (width - nw) // 2, (height - nh) // 2
    out = np.zeros((height, width), np.uint8)
    out[top : top + nh, left : left + nw] = small
    return out, scale, left


def find_digits(image: np.ndarray, settings: FinderSettings = FinderSettings(),
                ink_mask: np.ndarray | None = None) -> list[Candidate]:
    """Digits in a photo, left to right, each as an MNIST-style tile: each group of ink whole
    and, when it is wide, in every plausible cut (find_ink(...).candidates())."""
    return find_ink(image, settings, ink_mask).candidates()


def find_ink(image: np.ndarray, settings: FinderSettings = FinderSettings(),
             ink_mask: np.ndarray | None = None) -> "Page":
    """The ink of a photo, grouped into digits or runs of touching digits. ink_mask (bool,
    any size, from an ink detector): only ink near what it marks is read, and the ink's
    polarity is what the marked pixels have against the paper around them."""
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
            return Page(settings, scale, (0, 0), work[:0, :0], np.float32(0), [], 0)
        (ox, oy), region, parts, dark = near  # ink, thresholds and labels below are within the crop at ox, oy
        crop = work[oy : oy + region.shape[0], ox : ox + region.shape[1]]
        ink, thresh_map = _local_ink(cv2.bitwise_not(crop) if dark else crop, parts, dark, settings)
        if settings.bridge > 0:
            region = _bridges(ink > thresh_map, region, settings.bridge * max(h, w))
        ink[~region] = 0
        if settings.faint_share > 0:
            ink = _lift_faint_ink(ink, thresh_map, settings, max(h, w))
    binary = (ink > thresh_map).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    groups, min_h = _group_components(stats[1:] + np.array([ox, oy, 0, 0, 0]), h, w, settings)
    masks, widths = [], []
    for members in groups:
        gx, gy, gw, gh = _union_box(stats[1:][members])
        member = np.zeros(count, bool)  # by label: a lookup, where np.isin sorts
        member[np.asarray(members) + 1] = True
        group_mask = member[labels[gy : gy + gh, gx : gx + gw]]
        spread, width = stroke_shape(group_mask)
        if spread <= settings.max_stroke_spread:  # pen strokes (and so are their pieces)
            masks.append(((gx, gy), group_mask))
            widths.append(width)
    if len(masks) >= settings.thin_groups and settings.thin_share > 0:
        widths = np.array(widths)
        pen = float(np.median(widths[widths >= 0.5 * widths.max()]))  # the writing's, however many lines there are
        kept = [w >= settings.thin_share * pen for w in widths]
        masks, widths = [m for m, k in zip(masks, kept) if k], [w for w, k in zip(widths, kept) if k]
    if ink_mask is not None and settings.erase_bars > 0 and masks:
        masks, widths = _without_bars(masks, widths, settings.erase_bars)
    if ink_mask is not None and (settings.erase_pens or settings.run_on > 0):
        masks = _beyond_the_mark(work, dark, region, (ox, oy), masks, widths, settings)
    return Page(settings, scale, (ox, oy), ink, thresh_map, masks, min_h)


@dataclass
class Page:
    """Groups of ink found in one photo, at the finder's working scale, from which candidates
    are made: each group whole (wholes), and the cuts of a wide one only when asked (pieces):
    the reader asks only for the groups whose whole the classifier doubts."""
    settings: FinderSettings
    scale: float  # working scale / original
    offset: tuple[int, int]  # of `ink` in the working image
    ink: np.ndarray  # bright ink above its paper
    thresh_map: np.ndarray  # the ink threshold, per pixel or one for all
    groups: list[tuple[tuple[int, int], np.ndarray]]  # (x, y) in `ink`, bool mask
    min_h: float  # the least height of a digit
    _group_inks: dict = field(default_factory=dict, init=False, repr=False)  # group -> _ink of it whole

    def cuttable(self) -> list[int]:
        """The groups wide enough to be several touching digits."""
        return [g for g, (_, m) in enumerate(self.groups) if m.shape[1] > self.settings.split_aspect * m.shape[0]]

    def wholes(self) -> list[Candidate]:
        found = (self._candidate(g, (0, m.shape[1])) for g, (_, m) in enumerate(self.groups))
        return [c for c in found if c is not None]

    def pieces(self, group: int) -> list[Candidate]:
        found = (self._candidate(group, span) for span in _cut_spans(self.groups[group][1], self.settings))
        return [c for c in found if c is not None]

    def candidates(self) -> list[Candidate]:
        """Every group whole and every cut of the wide ones, left to right."""
        found = self.wholes() + [c for g in self.cuttable() for c in self.pieces(g)]
        return sorted(found, key=lambda c: c.box[0])

    def _candidate(self, number: int, span: tuple[int, int]) -> Candidate | None:
        s = self.settings
        (gx, gy), group_mask = self.groups[number]
        gh, gw = group_mask.shape
        c0, c1 = span
        whole = span == (0, gw)
        group = number if gw > s.split_aspect * gh else -1  # offered in pieces too, or once
        mask = group_mask[:, c0:c1] if whole else _drop_slivers(group_mask[:, c0:c1], c0 > 0, c1 < gw)
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            return None
        r0, r1, k0, k1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        x, y, bw, bh = gx + c0 + k0, gy + r0, k1 - k0, r1 - r0
        if bh < self.min_h or bw > s.max_aspect * bh:  # too small, or a line rather than a digit
            return None
        if not whole and bh < s.piece_height * gh:  # a tail cut off one digit, not another
            return None
        mask = mask[r0:r1, k0:k1]
        ink = self._group_ink(number) if mask.shape == group_mask.shape else self._ink(x, y, mask)
        tile = normalise_tile(ink, s.fill, s.tile)
        return Candidate(self.box(x, y, bw, bh), tile, int(mask.sum()), group, not whole, span, gw, number)

    def strip(self, group: int, width: int, height: int) -> tuple[np.ndarray, float, int]:
        """A group's ink as a sequence reader takes it (fit_strip), with (scale, left): strip
        column c is the group's column (c - left) / scale."""
        return fit_strip(self._group_ink(group), width, height, self.settings.fill / self.settings.tile)

    def box(self, x: int, y: int, w: int, h: int) -> tuple[int, int, int, int]:
        """A box in `ink`'s pixels -> the same box in the original image's."""
        ox, oy = self.offset
        return tuple(int(round(v / self.scale)) for v in (x + ox, y + oy, w, h))

    def _group_ink(self, group: int) -> np.ndarray:
        """_ink of a whole group, made once: its tile and its strip are both cut from it."""
        if group not in self._group_inks:
            (gx, gy), mask = self.groups[group]
            self._group_inks[group] = self._ink(gx, gy, mask)
        return self._group_inks[group]

    def _ink(self, x: int, y: int, mask: np.ndarray) -> np.ndarray:
        """The ink under a bool mask at (x, y) of `ink`, a pixel wider (its soft edge), at MNIST's contrast."""
        h, w = mask.shape
        tm = self.thresh_map
        thresh = float(tm if tm.ndim == 0 else tm[y : y + h, x : x + w][mask].max())
        wider = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        return stretch_ink(np.where(wider, self.ink[y : y + h, x : x + w], 0), thresh)


_K3 = np.ones((3, 3), np.uint8)


def _local_ink(ink: np.ndarray, parts: list[tuple[tuple[slice, slice], np.ndarray]], dark: bool,
               s: FinderSettings) -> tuple[np.ndarray, np.ndarray]:
    """(ink above its paper, a threshold for each pixel), each connected part of the context
    (the marked ink and the paper around it) on its own: a digit in a shadow or under glare
    has its own paper level and contrast. Outside the context: no ink, above any threshold.
    parts: (box slices, bool mask in the box) each. dark: the ink is darker than its paper
    (`ink` is then the photo inverted).

    Within a part the paper's level is taken under every pixel (_paper_level), so a digit
    across a hard shadow's edge is judged against the paper on each side of it; the
    threshold is Otsu's over the part, the paper's median below it subtracted."""
    out = np.zeros_like(ink)
    thresh_map = np.full(ink.shape, 256.0, np.float32)
    for box, inside in parts:
        above = _paper_level(ink[box], inside, dark, s)
        values = above[inside]
        otsu, _ = cv2.threshold(values[:, None], 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
        below = values[values <= otsu]
        paper = float(np.median(below)) if below.size else 0.0
        out[box][inside] = np.clip(values.astype(np.float32) - paper, 0, 255).astype(np.uint8)
        thresh_map[box][inside] = max(otsu - paper, s.min_contrast)
    return out, thresh_map


def _paper_level(part: np.ndarray, inside: np.ndarray, dark: bool, s: FinderSettings) -> np.ndarray:
    """One part's ink above the paper under it (uint8, bright ink). The paper is the part's
    morphological opening with a square paper_kernel times the pen's stroke width (from a first
    Otsu threshold): it drops the strokes and keeps what is wider, a shadow or a glare patch,
    edges included. Where a shadow's wedge narrows below the opening's width the opening drops
    its tip too, and the tip would join the digit beside it as ink; but ink stands out from
    every paper around it, and the tip does not: it is as dark as the wedge it ends, so a pixel
    as dark as the darkest paper within paper_reach openings, and its neighbours as well, is paper.
    Dark ink is then scaled by how much dimmer its paper is than the part's brightest paper (at
    most max_paper_gain): a shadow dims ink and paper alike, and the ink in it keeps the
    contrast it has in the light (docs/measurements.md: paper under every pixel)."""
    if s.paper_kernel <= 0:  # off: one paper level for the part (_local_ink's median)
        return part
    otsu, _ = cv2.threshold(part[inside][:, None], 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
    pen = _mean_width(np.pad(((part > otsu) & inside).astype(np.uint8), 1))
    k = max(3, int(s.paper_kernel * pen)) | 1
    paper = cv2.morphologyEx(part, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
    if s.paper_reach > 0:
        reach = max(3, int(s.paper_reach * k)) | 1
        darkest = cv2.dilate(paper, cv2.getStructuringElement(cv2.MORPH_RECT, (reach, reach)))
        # Not only as dark (then lit ink as dark as a deep shadow would go), and not beside what is
        # not (a stroke's blurred edge): measured so on shadows beyond the scenes' depth.
        unlike = cv2.dilate((cv2.absdiff(part, darkest) > s.paper_delta).astype(np.uint8), _K3)
        paper = np.where(unlike > 0, paper, part)
    above = cv2.subtract(part, paper)
    if not dark or s.max_paper_gain <= 1:
        return above
    # By the paper's level (a lookup: it is uint8), against the brightest paper of the part
    # (its 5th percentile here, where the photo is inverted).
    hist = cv2.calcHist([paper], [0], inside.astype(np.uint8), [256], [0, 256]).ravel()
    cdf = np.cumsum(hist)
    brightest = 255.0 - float(np.searchsorted(cdf, 0.05 * cdf[-1]))
    gain = np.clip(brightest / np.maximum(255.0 - np.arange(256, dtype=np.float32), 1.0), 1.0, s.max_paper_gain)
    if gain[np.flatnonzero(hist)[-1]] <= 1.0:  # even the dimmest paper of the part is lit alike: nothing to scale
        return above
    fixed = np.minimum(np.round(gain * 32), 255).astype(np.uint8)  # in 32nds, uint8 arithmetic: gains past 7.97 saturate
    return cv2.multiply(above, cv2.LUT(paper, fixed), scale=1 / 32)


def _lift_faint_ink(ink: np.ndarray, thresh_map: np.ndarray, s: FinderSettings, side: int) -> np.ndarray:
    """ink with faint strokes brought up to their part's contrast. Glare, blur and uneven light
    fade a stroke along its length, and one threshold per part then breaks it: each pixel's
    gain is its threshold over faint_share of the strongest ink near it (at least faint_floor
    grey levels), so ink at half the contrast of the strokes around it still reaches the
    threshold, and where the strokes are strong the gain is 1."""
    r = max(1, round(s.faint_radius * side))
    near = (2 * r + 1, 2 * r + 1)
    strongest = cv2.blur(cv2.dilate(ink, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, near)), near)
    # Never dimmer. Outside the context the threshold is 256, but the ink there is already 0.
    gain = np.maximum(thresh_map / np.maximum(s.faint_share * strongest.astype(np.float32), max(s.faint_floor, 1)), 1.0)
    return np.clip(ink * gain, 0, 255).astype(np.uint8)


CONTEXT = 4  # thresholds are chosen over the marked ink and this many times its margin of paper

# What counts as ink running on beyond a group (_runs_on), at the working scale:
RUN_ON_EDGE = 2  # pixels around the group that are its own blurred edge
RUN_ON_DARK = 0.85  # at least this far from the paper's level toward the group's ink (shadowed paper is not)
RUN_ON_THIN = 0.7  # at least this x the group's stroke width wide (printed rules and box sides are thinner)...
RUN_ON_BROAD = 3.0  # ...and less than this (broader: a dark shadow, a filled area)
# A pen running on from a group (_pen_line): at least PEN_LENGTH x the group's stroke width
# long, 95% of it within PEN_STRAIGHT x its width of its line. It is erased from the group,
# PEN_MARGIN pixels past its half width; a group with less than PEN_KEEP of its ink left was
# the pen and is dropped.
PEN_LENGTH = 2.5
PEN_STRAIGHT = 0.6
PEN_MARGIN = 1.5
PEN_KEEP = 0.4


class Pen(NamedTuple):
    """A pen's line in work pixels (_pen_line): direction, a point on it, half its width; the
    pen lies on the side `side` (1 or -1, along the direction) of `end`, measured along it."""
    vx: float
    vy: float
    x: float
    y: float
    half: float
    end: float
    side: int


def _median_u8(values: np.ndarray) -> float:
    """The median of uint8 values (the lower middle one of an even count), from their histogram."""
    counts = np.bincount(values, minlength=256).cumsum()
    return float(np.searchsorted(counts, (counts[-1] + 1) // 2))


def _beyond_the_mark(work: np.ndarray, dark: bool, region: np.ndarray, origin: tuple[int, int], masks: list,
                     widths: list, settings: FinderSettings) -> list:
    """The groups (masks, with their stroke widths) judged by the ink they run on into beyond
    the detector's mark: a pen running on from one is erased from it (erase_pens: _pen_line,
    _without_pen), and a group that still runs on, the pen counted, is dropped (run_on:
    _runs_on; not counting the pen kept more letters that read as digits, docs/detector.md)."""
    kept = []
    for (xy, m), width in zip(masks, widths):
        window = _window(work, dark, region, origin, xy, m)
        if window is not None and settings.erase_pens:
            pen = _pen_line(window, width)
            if pen is not None:
                rest = _without_pen(xy, m, pen, origin)
                if rest is None:
                    continue  # the group was the pen
                xy, m = rest
                window = _window(work, dark, region, origin, xy, m)
        if window is not None and settings.run_on > 0 and _runs_on(window, width, settings.run_on):
            continue
        kept.append((xy, m))
    return kept


@dataclass
class Window:
    """The group and half as much again around it, where its ink may run on (_runs_on, _pen_line)."""
    origin: tuple[int, int]  # (x, y) of the window in work
    ours: np.ndarray  # the group's own ink, bool
    inked: np.ndarray  # ink as dark as the group's, its own included, bool
    away: np.ndarray  # outside the region and beyond the group's blurred edge, bool

    @cached_property
    def out_there(self) -> int:
        """How much ink lies away from the group, joined to it or not."""
        return int(np.count_nonzero(self.inked & self.away))

    @cached_property
    def beyond(self) -> np.ndarray:
        """What runs on: the ink joined to the group that lies away from it, uint8; found once
        for both checks."""
        _, labels = cv2.connectedComponents(self.inked.astype(np.uint8), connectivity=8)
        mine = np.unique(labels[self.ours])  # one label or a few: compared, not looked up, is faster
        joined = labels == mine[0]
        for label in mine[1:]:
            joined |= labels == label
        return (joined & self.away).astype(np.uint8)


def _window(work: np.ndarray, dark: bool, region: np.ndarray, offset: tuple[int, int], xy: tuple[int, int],
            mask: np.ndarray) -> Window | None:
    """The group's Window, or None when the group ends within the mark."""
    h, w = mask.shape
    gx, gy = xy[0] + offset[0], xy[1] + offset[1]
    side = max(h, w) // 2
    x0, y0 = max(0, gx - side), max(0, gy - side)
    x1, y1 = min(work.shape[1], gx + w + side), min(work.shape[0], gy + h + side)
    own = np.zeros((y1 - y0, x1 - x0), np.uint8)
    own[gy - y0 : gy - y0 + h, gx - x0 : gx - x0 + w] = mask
    edge = cv2.dilate(own, _K3, iterations=RUN_ON_EDGE).astype(bool)
    inside = np.zeros(own.shape, bool)
    rx0, ry0 = max(x0, offset[0]), max(y0, offset[1])
    rx1, ry1 = min(x1, offset[0] + region.shape[1]), min(y1, offset[1] + region.shape[0])
    inside[ry0 - y0 : ry1 - y0, rx0 - x0 : rx1 - x0] = region[ry0 - offset[1] : ry1 - offset[1],
                                                              rx0 - offset[0] : rx1 - offset[0]]
    if not (edge & ~inside).any():
        return None
    bright = work[y0:y1, x0:x1]
    bright = cv2.bitwise_not(bright) if dark else bright  # ink brighter than its paper
    ours = own.astype(bool)
    ink = _median_u8(bright[ours])
    around = bright[inside & ~edge]  # the paper the group lies on, within the mark
    paper = _median_u8(around if around.size else bright[~edge])
    # A group fainter than what surrounds it in the mark gets a level just above its own ink:
    # the darker surroundings count as its ink, and it runs on into them.
    inked = (bright > paper + RUN_ON_DARK * (ink - paper)) | ours
    return Window((x0, y0), ours, inked, ~inside & ~edge)


def _pen_line(window: Window, stroke: float) -> Pen | None:
    """A straight stroke that runs on from a group beyond the detector's mark, as a pen lying on
    the page does from the digit it touches or crosses (its end where it leaves the group), or
    None. Straight: of the largest piece of what runs on (as wide as a pen stroke: _runs_on's
    opening), 95% lies within PEN_STRAIGHT x its width of the line fitted to it, and it is at
    least PEN_LENGTH x the group's stroke width long. window: the group's (_window)."""
    if window.out_there < PEN_LENGTH * stroke * stroke:
        return None  # too little out there to be a pen's length
    beyond = window.beyond
    if np.count_nonzero(beyond) < RUN_ON_THIN * PEN_LENGTH * stroke * stroke:
        return None  # less than the least pen: PEN_LENGTH long, RUN_ON_THIN wide
    thin = max(2, round(RUN_ON_THIN * stroke))
    bx, by, bw, bh = cv2.boundingRect(beyond)  # only where it runs on, with room around it
    bx, by = max(0, bx - thin), max(0, by - thin)
    beyond = beyond[by : by + bh + 2 * thin, bx : bx + bw + 2 * thin]
    beyond = cv2.morphologyEx(beyond, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (thin, thin)))
    n, pieces, stats, _ = cv2.connectedComponentsWithStats(beyond, connectivity=8)
    if n <= 1:
        return None
    ys, xs = np.nonzero(pieces == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA])))
    xs, ys = xs + bx, ys + by
    vx, vy, lx, ly = (float(v) for v in cv2.fitLine(np.stack([xs, ys], 1).astype(np.float32), cv2.DIST_L2, 0, 0.01, 0.01).ravel())
    along = (xs - lx) * vx + (ys - ly) * vy
    across = np.abs((xs - lx) * vy - (ys - ly) * vx)
    length = float(along.max() - along.min()) + 1
    width = xs.size / length
    if length < PEN_LENGTH * stroke or np.percentile(across, 95) > max(1.5, PEN_STRAIGHT * width):
        return None
    gy, gx = np.nonzero(window.ours)
    side = 1 if along.mean() > float(((gx - lx) * vx + (gy - ly) * vy).mean()) else -1
    x0, y0 = window.origin
    return Pen(vx, vy, lx + x0, ly + y0, width / 2, float(along.min() if side > 0 else along.max()), side)


def _without_pen(xy: tuple[int, int], mask: np.ndarray, pen: Pen, origin: tuple[int, int]):
    """A group with a pen (_pen_line) erased, followed into the group to its tip: ((x, y), mask)
    cropped to what is left, or None when less than PEN_KEEP of the group's ink is
    left (the group was the pen). Followed: from where it leaves the group, inward along its
    line while at least half of its width is ink; past the tip the digit's strokes stay. origin:
    where the group's crop lies in work."""
    ys, xs = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]]
    dx, dy = xs + xy[0] + origin[0] - pen.x, ys + xy[1] + origin[1] - pen.y
    along, across = dx * pen.vx + dy * pen.vy, np.abs(dx * pen.vy - dy * pen.vx)
    on = mask & (across <= pen.half)
    steps = np.floor((along[on] - pen.end) * pen.side).astype(np.int64)  # 0 at its end, negative inward
    inward = np.bincount(-steps[steps < 0] - 1)
    full = inward >= pen.half  # at least half of its width 2 x half
    start = int(np.argmax(full)) if full.any() else 0  # past the group's blurred edge, where it leaves the mark
    thin = np.flatnonzero(~full[start:])
    tip = start + (int(thin[0]) if thin.size else full.size - start)
    end = pen.end - pen.side * tip
    kept = mask & ((across > pen.half + PEN_MARGIN) | ((along - end) * pen.side < -PEN_MARGIN))
    if kept.sum() < PEN_KEEP * mask.sum():
        return None
    return _cropped(xy, kept)


def _cropped(xy: tuple[int, int], mask: np.ndarray) -> tuple[tuple[int, int], np.ndarray]:
    """A group's mask (at xy) cropped to its ink, with its new place."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return (xy[0] + int(cols[0]), xy[1] + int(rows[0])), mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


# A straight bar inside a group (_bar): at least erase_bars x the page's median group height
# and BAR_LEAST x the group's stroke width long, found by a probabilistic Hough transform
# whose segments may have gaps of BAR_GAP pixels. Erased where it is at least half its width
# of ink, except where a stroke crosses it (ink within BAR_CROSS pixels beyond its edges, and
# BAR_CROSS_SPAN steps either side); what is erased must span BAR_SPAN x that length (a
# digit's straight stroke that lines up with its neighbour's is cut up by their strokes).
BAR_LEAST = 6.0
BAR_GAP = 2
BAR_CROSS = 3
BAR_CROSS_SPAN = 1
BAR_SPAN = 0.45
BAR_KEEP = 0.2  # a digit crossed by a long pen may keep only a third of the group


def _without_bars(masks: list, widths: list, length: float) -> tuple[list, list]:
    """The groups (masks, with their stroke widths) with each one's longest straight bar
    erased (_bar): a pen lying across the writing that the detector marked with it. A group
    left with less than BAR_KEEP of its ink was the bar and is dropped."""
    height = float(np.median([m.shape[0] for _, m in masks]))
    kept_masks, kept_widths = [], []
    for (xy, m), width in zip(masks, widths):
        erased = _bar(m, max(length * height, BAR_LEAST * width), width)
        if erased is not None:
            rest = m & ~erased
            if rest.sum() < BAR_KEEP * m.sum():
                continue  # the group was the bar
            xy, m = _cropped(xy, rest)
        kept_masks.append((xy, m))
        kept_widths.append(width)
    return kept_masks, kept_widths


def _bar(mask: np.ndarray, reach: float, stroke: float) -> np.ndarray | None:
    """The pixels of the longest straight bar at least `reach` long in a group's mask, to be
    erased, or None: followed along its line while at least half its width is ink, less
    where strokes cross it (see BAR_CROSS)."""
    h, w = mask.shape
    if h * h + w * w < reach * reach:
        return None  # no room for it
    lines = cv2.HoughLinesP(mask.astype(np.uint8), 1, np.pi / 90, int(0.8 * reach), minLineLength=reach,
                            maxLineGap=BAR_GAP)
    if lines is None or lines.size == 0:
        return None
    x1, y1, x2, y2 = (float(v) for v in max(lines.reshape(-1, 4), key=lambda l: (l[2] - l[0]) ** 2 + (l[3] - l[1]) ** 2))
    span = float(np.hypot(x2 - x1, y2 - y1))
    vx, vy = (x2 - x1) / span, (y2 - y1) / span
    ys, xs = np.mgrid[0:h, 0:w]
    dx, dy = xs - x1, ys - y1
    along, across = dx * vx + dy * vy, np.abs(dx * vy - dy * vx)
    # The segment may run along one side of a broad bar: its line is fitted to the ink near it.
    near = mask & (across <= stroke) & (along >= 0) & (along <= span)
    vx, vy, cx, cy = (float(v) for v in cv2.fitLine(np.stack([xs[near], ys[near]], 1).astype(np.float32),
                                                     cv2.DIST_L2, 0, 0.01, 0.01).ravel())
    x1, y1 = cx + ((x1 - cx) * vx + (y1 - cy) * vy) * vx, cy + ((x1 - cx) * vx + (y1 - cy) * vy) * vy
    dx, dy = xs - x1, ys - y1
    along, across = dx * vx + dy * vy, np.abs(dx * vy - dy * vx)
    if (x2 - x1) * vx + (y2 - y1) * vy < 0:
        along = -along  # the segment's direction, start to end
    step = np.floor(along).astype(np.int64)  # steps along the line, 0 at the segment's start
    first = int(step.min())
    counts = np.bincount(step[mask & (across <= stroke)] - first, minlength=int(step.max()) - first + 1)
    bar = float(np.median(counts[-first : -first + int(span)]))  # its width, within the segment
    if bar <= 0:
        return None  # no ink along most of the segment: no bar
    full = counts >= 0.5 * bar
    start, end = -first, -first + int(span) - 1
    while start > 0 and full[start - 1]:
        start -= 1
    while end < counts.size - 1 and full[end + 1]:
        end += 1
    edge = bar / 2 + PEN_MARGIN
    on = (across <= edge) & (step - first >= start - PEN_MARGIN) & (step - first <= end + PEN_MARGIN)
    crossed = np.zeros(counts.size, bool)
    crossed[step[mask & (across > edge) & (across <= edge + BAR_CROSS)] - first] = True
    crossed = np.convolve(crossed, np.ones(2 * BAR_CROSS_SPAN + 1), "same") > 0
    erased = mask & on & ~crossed[step - first]
    if np.unique(step[erased]).size < BAR_SPAN * reach:
        return None
    return erased


def _runs_on(window: Window, stroke: float, share: float) -> bool:
    """True when a group's ink runs on beyond the detector's mark: the ink joined to it outside
    the region the finder reads, as dark as the group's own ink and of a pen stroke's width, is
    more than `share` x the group's ink. A digit's ink ends inside its mark; what the detector
    marks only a part of (a horse's leg, the arc of a drawn face, a pen across the page) runs
    on. window: the group's (_window); a group that ends within the mark has none, and is kept
    (a shortcut; the same figures measured with and without it)."""
    limit = share * int(window.ours.sum())
    if window.out_there <= limit:
        return False  # too little ink out there to run on, joined to the group or not
    beyond = window.beyond
    if int(beyond.sum()) <= limit:
        return False  # what follows only takes away: too little runs on already
    thin = max(2, round(RUN_ON_THIN * stroke))
    broad = RUN_ON_BROAD * stroke / 2  # the radius of a broad area's core
    x, y, bw, bh = cv2.boundingRect(beyond)  # only where it runs on, with room around it
    margin = thin + round(broad) + 3
    beyond = beyond[max(0, y - margin) : y + bh + margin, max(0, x - margin) : x + bw + margin]
    beyond = cv2.morphologyEx(beyond, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (thin, thin)))
    # Broad areas away, as an opening with a disc would take them, from distances (a large
    # kernel's opening costs a millisecond): the cores deeper than the radius, and all near them.
    core = (cv2.distanceTransform(beyond, cv2.DIST_L2, 3) > broad).astype(np.uint8)
    if core.any():
        beyond[cv2.distanceTransform(1 - core, cv2.DIST_L2, 3) <= broad + 2] = 0
    return int(beyond.sum()) > limit


BRIDGE_THICK = 0.5  # a bridge is at least this x the pen's mean stroke width thick


def _bridges(inked: np.ndarray, region: np.ndarray, longest: float) -> np.ndarray:
    """region with the bridges added: each piece of ink outside it no longer than `longest`
    pixels either way that touches two or more pieces of the ink inside it."""
    inside = (inked & region).astype(np.uint8)
    pieces_count, pieces = cv2.connectedComponents(inside, connectivity=8)
    whole_count, whole = cv2.connectedComponents(inked.astype(np.uint8), connectivity=8)
    # Most frames have nothing to join: each whole stroke holds at most one piece inside.
    if np.count_nonzero(np.bincount(whole[pieces > 0], minlength=whole_count)) == pieces_count - 1:
        return region
    count, gaps, stats, _ = cv2.connectedComponentsWithStats((inked & ~region).astype(np.uint8), connectivity=8)
    short = np.zeros(count, bool)
    short[1:] = np.maximum(stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT]) <= longest
    if not short.any():
        return region
    # Each inside pixel beside a short gap: (the gap, the piece); labels stay exact in float32.
    beside = cv2.dilate(np.where(short[gaps], gaps, 0).astype(np.float32), _K3).astype(np.int64)
    at = (beside > 0) & (pieces > 0)
    pairs = np.unique(beside[at] * pieces_count + pieces[at])
    labels, joins = np.unique(pairs // pieces_count, return_counts=True)
    labels = labels[joins >= 2]
    if labels.size == 0:
        return region
    # As thick as the pen's strokes (at least half: across a short gap the piece is cut square);
    # a printed box side or rule is thinner (0.11-0.31x, FinderSettings.thin_share).
    thick = stats[labels, cv2.CC_STAT_AREA] / np.maximum(stats[labels, cv2.CC_STAT_WIDTH], stats[labels, cv2.CC_STAT_HEIGHT])
    labels = labels[thick >= BRIDGE_THICK * _mean_width(np.pad(inside, 1))]
    bridge = np.zeros(count, bool)
    bridge[labels] = True
    return region | bridge[gaps] if labels.size else region


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


# Ink read in pieces is a reading only if every piece is a confident digit: of the many cuts
# tried, some pieces of a letter or a doodle pass for digits (the halves of a "V" for "1"s).
PIECE_MIN = 0.85
UNREAD = 0.01  # the score of columns left unread (ink no candidate covers, e.g. a stray tail)


def choose_readings(found: list[Candidate], score: np.ndarray) -> list[int]:
    """Indices of the candidates to report, given the classifier's score for each (0 for
    "none of these"): ink offered once is kept; for each group of ink offered whole and in
    pieces, the candidates that cover the group's columns with the largest product of
    scores (segmentation by recognition: dynamic programming over the cut positions)."""
    groups: dict[int, list[int]] = {}
    keep = []
    for k, c in enumerate(found):
        if c.offered_twice:
            groups.setdefault(c.group, []).append(k)
        else:
            keep.append(k)
    piece = np.array([c.piece for c in found], bool)
    log_score = np.log(np.maximum(np.where(piece & (score < PIECE_MIN), 0.0, score), 1e-4))
    for members in groups.values():
        keep += _best_path(found, log_score, members)
    return sorted(keep)


def _best_path(found: list[Candidate], log_score: np.ndarray, members: list[int]) -> list[int]:
    width = found[members[0]].extent
    stops = sorted({0, width, *(p for k in members for p in found[k].span)})
    # column -> (log score of the best reading of the columns before it, its candidates)
    best: dict[int, tuple[float, list[int]]] = {0: (0.0, [])}
    for stop in stops[1:]:
        options = [(best[p][0] + np.log(UNREAD), best[p][1]) for p in stops if p < stop]
        for k in members:
            c0, c1 = found[k].span
            if c1 == stop:
                options.append((best[c0][0] + log_score[k], best[c0][1] + [k]))
        best[stop] = max(options, key=lambda o: o[0])
    return best[width][1]


def stroke_shape(mask: np.ndarray) -> tuple[float, float]:
    """(spread, mean stroke width in pixels) of a bool mask of ink. spread: the widest point
    of the ink over its mean stroke width, 1.3-2.5 for pen strokes, more for filled blobs and
    photographed textures."""
    padded = np.pad(mask.astype(np.uint8), 1)
    widest = 2 * float(cv2.distanceTransform(padded, cv2.DIST_L2, 3).max())
    mean_width = _mean_width(padded)
    return widest / max(mean_width, 1e-6), mean_width


def _mean_width(padded: np.ndarray) -> float:
    """Mean stroke width of uint8 ink with a free border: a stroke of length L and width t has
    area Lt and a perimeter of about 2L."""
    contours, _ = cv2.findContours(padded, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)  # same length, fewer points
    perimeter = sum(cv2.arcLength(c, True) for c in contours)
    return 2 * float(padded.sum()) / max(perimeter, 1.0)


def _cut_spans(mask: np.ndarray, s: FinderSettings) -> list[tuple[int, int]]:
    """Column ranges of one wide group of ink to offer the classifier as pieces: every range
    between two candidate cuts that could be one digit. Cuts are where the column profile of
    the ink is thinnest near where n equal-width digits would meet, for each plausible n, and
    at its local minima."""
    h, w = mask.shape
    profile = mask.sum(axis=0).astype(np.float32)
    cuts = set()
    for n in range(2, min(s.max_digits, max(2, int(w / (0.35 * h)))) + 1):
        start = 0
        for k in range(1, n):
            centre, reach = k * w // n, max(1, w // (3 * n))
            lo, hi = max(start + 1, centre - reach), min(w - 1, centre + reach)
            start = lo + int(np.argmin(profile[lo:hi])) if hi > lo else centre
            cuts.add(start)
    inner = profile[1:-1]
    minima = 1 + np.flatnonzero((inner <= profile[:-2]) & (inner <= profile[2:]) & (inner < 0.5 * inner.max()))
    cuts.update(int(m) for m in minima)
    stops, near = [0], max(2, round(s.cut_spacing * h))
    for c in sorted(cuts):  # cuts closer than this are one cut
        if c - stops[-1] >= near and w - c >= near:
            stops.append(c)
    stops.append(w)
    spans = []
    for i, a in enumerate(stops):
        for b in stops[i + 1 :]:
            if (a, b) != (0, w) and s.min_piece * h <= b - a <= s.max_piece * h:
                spans.append((a, b))
    return spans


def _drop_slivers(mask: np.ndarray, cut_left: bool, cut_right: bool) -> np.ndarray:
    """A piece cut from touching digits without the bits of its neighbours' ink the cut left
    at its edges: small parts touching a cut side."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 2:
        return mask
    w = mask.shape[1]
    small = 0.15 * stats[1:, cv2.CC_STAT_AREA].sum()
    drop = [c for c in range(1, count) if stats[c, cv2.CC_STAT_AREA] < small and (
        (cut_left and stats[c, cv2.CC_STAT_LEFT] == 0)
        or (cut_right and stats[c, cv2.CC_STAT_LEFT] + stats[c, cv2.CC_STAT_WIDTH] == w))]
    return mask & ~np.isin(labels, drop) if drop else mask


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
