"""DigitReader.read(image) -> Reading: the one verb the CLI, video loop and tests use."""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from digitpipe.runtime.detector import InkDetector
from digitpipe.runtime.digits import (Candidate, FinderSettings, Page, bright_ink, choose_readings, find_digits,
                                      find_ink, most_prominent, to_gray)
from digitpipe.runtime.errors import InputError
from digitpipe.runtime.model import Model
from digitpipe.runtime.preprocess import resize_to_input
from digitpipe.runtime.sequence import SequenceReader

# From `python -m bench.wild` (docs/measurements.md): the highest threshold measured at which every kind
# of digit photo stays well above its target (UCI, the closest, by 1.8 points; at 0.6 by
# 0.6). Non-digit ink is mostly turned away by the finder and the model's "no digit" class.
DEFAULT_MIN_CONFIDENCE = 0.55
# Wide ink the classifier reads whole at least this surely is not cut: the cuts are classified
# only when it doubts the whole. Measured on bench.wild: the same readings as cutting always
# (at 0.9, 0.95 and 0.98), in a fraction of the time.
WHOLE_SURE = 0.9
# With a sequence reader, ink wider than SEQUENCE_ASPECT x its height (a "1" touching a digit
# makes a narrow pair) is read whole as a sequence too, unless the classifier reads it whole at
# least SEQUENCE_SKIP surely (measured on bench.wild: the same readings as offering it all, at
# 0.97x the frame rate without a sequence reader instead of 0.78x). Its reading of two digits or more
# stands when every digit is at least SEQUENCE_SURE sure and surer than the classifier of the
# whole (docs/measurements.md: touching digits read whole).
SEQUENCE_ASPECT = 0.6
SEQUENCE_SKIP = 0.95
SEQUENCE_SURE = 0.55


@dataclass(frozen=True)
class Digit:
    label: str
    confidence: float
    box: tuple[int, int, int, int]  # x, y, w, h in the input image

    def to_dict(self) -> dict:
        return {"label": self.label, "confidence": round(self.confidence, 4), "box": list(self.box)}


@dataclass
class Reading:
    digits: list[Digit]
    ms: dict = field(default_factory=dict)  # time spent per stage

    @property
    def text(self) -> str:
        return "".join(d.label for d in self.digits)

    def to_dict(self) -> dict:
        return {"text": self.text, "digits": [d.to_dict() for d in self.digits],
                "ms": {k: round(v, 3) for k, v in self.ms.items()}}


Box = tuple[int, int, int, int]  # x, y, w, h


# A digit read only where the detector is unsure (no logit past runtime.detector.SURE, some past
# WEAK) must be this sure: measured on bench.wild (docs/measurements.md: weakly marked ink).
WEAK_CONFIDENCE = 0.95


def _overlaps(mark: np.ndarray, box, shape) -> bool:
    """Whether a box (x, y, w, h in an image of `shape`) holds a pixel of a mark at its own size."""
    mh, mw = mark.shape
    h, w = shape[:2]
    x, y, bw, bh = box
    x0, y0 = int(x * mw / w), int(y * mh / h)
    x1, y1 = max(x0 + 1, int(np.ceil((x + bw) * mw / w))), max(y0 + 1, int(np.ceil((y + bh) * mh / h)))
    return bool(mark[y0:y1, x0:x1].any())


def parse_roi(text: str) -> Box:
    """'x,y,w,h' in pixels -> a box; ValueError says what is wrong."""
    parts = text.replace(" ", "").split(",")
    if len(parts) != 4 or not all(p.lstrip("-").isdigit() for p in parts):
        raise ValueError(f"--roi {text!r}: expected x,y,w,h in pixels, e.g. 100,50,320,240")
    x, y, w, h = (int(p) for p in parts)
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        raise ValueError(f"--roi {text!r}: x and y must be >= 0, w and h > 0")
    return x, y, w, h


def clip_roi(roi: Box | None, shape) -> Box:
    """The part of roi inside an image of this shape (the whole image without a roi)."""
    ih, iw = shape[:2]
    if roi is None:
        return 0, 0, iw, ih
    x, y, w, h = roi
    x1, y1 = min(x + w, iw), min(y + h, ih)
    return x, y, max(0, x1 - x), max(0, y1 - y)


class DigitReader:
    def __init__(self, model: Model, min_confidence: float = DEFAULT_MIN_CONFIDENCE, single: bool = False,
                 finder: FinderSettings = FinderSettings(), roi: Box | None = None,
                 detector: InkDetector | None = None, sequence: SequenceReader | None = None):
        """detector: an ink detector run before the finder (digits.py reads only near the ink
        it marks); without one, the finder's rules alone decide what is ink. sequence: reads
        wide ink whole as touching digits before it is cut apart (without one: only cut)."""
        self.model = model
        self.detector = detector
        self.sequence = sequence
        self.min_confidence = min_confidence
        self.single = single
        self.finder = finder
        self.roi = roi  # read only inside this box; reported boxes stay in image coordinates
        pp = model.info.preprocess
        self._locate = self._locate_digits if pp.fit == "digit" else self._locate_whole
        # The class that means "none of these" (e.g. "no digit"), or -1: it is no reading.
        self._reject = model.labels.index(model.info.reject) if model.info.reject else -1

    def locate(self, image: np.ndarray) -> tuple[list[tuple[int, int, int, int]], list[np.ndarray]]:
        """(boxes, input-size tiles) of what to classify in an image: the runtime's preprocessing
        (wide ink whole and in every cut)."""
        found, _, page, _ = self._locate(image)
        if page is not None:
            found = page.candidates()
        return [c.box for c in found], [c.tile for c in found]

    def read(self, image: np.ndarray) -> Reading:
        return self._read(image, None)

    def read_stream(self, frames: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, Reading]]:
        """(frame, reading) for each frame in turn, the readings those of read(frame). A worker
        thread takes the next frame from `frames` (decoding it, for a video) and runs the ink
        detector on it while this frame is read: OpenCV and onnxruntime let go of the GIL while
        they compute, so on two cores a video reads at 1.2-1.3x the frame rate of read() one
        frame at a time (docs/measurements.md, "Reading video a frame ahead")."""
        from concurrent.futures import ThreadPoolExecutor  # here: 8 ms of imports a still image does not need

        frames = iter(frames)
        detect = self.detector is not None and self._locate == self._locate_digits

        def take():  # in the worker: the next frame and its mark, or None at the end
            frame = next(frames, None)
            return None if frame is None else (frame, self._detect(frame) if detect else None)

        with ThreadPoolExecutor(1, thread_name_prefix="frame-ahead") as pool:
            ahead = pool.submit(take)
            while (item := ahead.result()) is not None:  # errors surface at the frame they belong to
                ahead = pool.submit(take)
                yield item[0], self._read(*item)

    def _region(self, image: np.ndarray) -> tuple[np.ndarray, int, int]:
        """(the part of the image read: the roi's, or all of it; its x and y in the image)."""
        rx, ry, rw, rh = clip_roi(self.roi, image.shape)
        if rw == 0 or rh == 0:
            raise InputError(f"the region {self.roi} lies outside the {image.shape[1]}x{image.shape[0]} image")
        return (image[ry : ry + rh, rx : rx + rw] if self.roi else image), rx, ry

    def _detect(self, image: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray] | None, float]:
        """(the ink detector's marks of the part of the image read, InkDetector.marks, or None
        where a tile needs none; the ms it took)."""
        return self._detect_region(self._region(image)[0])

    def _detect_region(self, region: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray] | None, float]:
        pp = self.model.info.preprocess
        if region.shape[:2] == (pp.height, pp.width):  # a tile (_locate_digits): no detector
            return None, 0.0
        t = time.perf_counter()
        marks = self.detector.marks(region)
        return marks, (time.perf_counter() - t) * 1e3

    def _read(self, image: np.ndarray, mark: tuple[tuple[np.ndarray, np.ndarray] | None, float] | None) -> Reading:
        """read(image); mark: _detect(image) when a worker ran it already."""
        t0 = time.perf_counter()
        region, rx, ry = self._region(image)
        found, detect_ms, page, sure = self._locate(region, mark)
        t1 = time.perf_counter()
        best, conf = self.model.classify([c.tile for c in found])
        # The reject class scores 0 when choosing how to read wide ink, and is never reported.
        score = np.where(best != self._reject, conf, 0.0)
        digits = []
        if page is not None:
            # Ink that may be touching digits is read whole as a sequence first; what the sequence
            # reader leaves and the classifier doubts whole is offered in pieces too.
            whole = {c.ink: float(p) for c, p in zip(found, score)}
            read = self._read_sequences(page, whole, digits)
            if read:
                kept = np.array([c.ink not in read for c in found], bool)
                found, best, conf, score = [c for c in found if c.ink not in read], best[kept], conf[kept], score[kept]
            pieces = [c for g in page.cuttable() if g not in read and whole.get(g, 0.0) < WHOLE_SURE
                      for c in page.pieces(g)]
            if pieces:
                more_best, more_conf = self.model.classify([c.tile for c in pieces])
                found = found + pieces
                best, conf = np.concatenate([best, more_best]), np.concatenate([conf, more_conf])
                score = np.where(best != self._reject, conf, 0.0)
        t2 = time.perf_counter()
        labels = self.model.labels
        digits += [Digit(labels[best[k]], float(conf[k]), found[k].box)
                   for k in choose_readings(found, score) if score[k] > 0]  # min_confidence: below, for all
        if sure is not None:
            digits = [d for d in digits if d.confidence >= WEAK_CONFIDENCE or _overlaps(sure, d.box, region.shape)]
        digits = [Digit(d.label, d.confidence, (d.box[0] + rx, d.box[1] + ry, *d.box[2:]))
                  for d in sorted(digits, key=lambda d: d.box[0]) if d.confidence >= self.min_confidence]
        ms = {"locate": (t1 - t0) * 1e3, "infer": (t2 - t1) * 1e3}
        if detect_ms is not None:  # part of locate, unless a worker ran it beside the previous frame
            ms["detect"] = detect_ms
        return Reading(digits, ms)

    def _read_sequences(self, page: Page, whole: dict[int, float], digits: list[Digit]) -> set[int]:
        """The groups of ink the sequence reader read, their digits added to `digits` with the
        box of the columns each was read from. whole: the classifier's score for each group read
        whole. Offered: groups wider than SEQUENCE_ASPECT x their height that the classifier is
        not SEQUENCE_SKIP sure of; kept: readings of two digits or more, each SEQUENCE_SURE sure,
        and the least sure of them surer than the classifier of the whole."""
        if self.sequence is None:
            return set()
        groups = [g for g, (_, m) in enumerate(page.groups)
                  if m.shape[1] > SEQUENCE_ASPECT * m.shape[0] and whole.get(g, 0.0) < SEQUENCE_SKIP]
        if not groups:
            return set()
        width, height = self.sequence.size
        strips = [page.strip(g, width, height) for g in groups]
        read = set()
        for g, (_, scale, left), seq in zip(groups, strips, self.sequence.read([s for s, _, _ in strips])):
            if len(seq.text) < 2 or seq.confidence < max(SEQUENCE_SURE, whole.get(g, 0.0)):
                continue  # one digit or none, or a doubtful reading: the classifier decides
            read.add(g)
            (gx, gy), mask = page.groups[g]
            for label, sure, (c0, c1) in zip(seq.text, seq.confidences, seq.columns):
                k0 = int(np.clip(np.floor((c0 - left) / scale), 0, mask.shape[1] - 1))
                k1 = int(np.clip(np.ceil((c1 - left) / scale), k0 + 1, mask.shape[1]))
                rows = np.flatnonzero(mask[:, k0:k1].any(axis=1))
                r0, r1 = (int(rows[0]), int(rows[-1]) + 1) if rows.size else (0, mask.shape[0])
                digits.append(Digit(label, sure, page.box(gx + k0, gy + r0, k1 - k0, r1 - r0)))
        return read

    def _locate_digits(self, image: np.ndarray, mark=None):
        """(whole candidates, ms the ink detector took or None without one, the Page they came
        from or None, the parts the detector is sure of or None); mark: _detect's result when it
        ran already. _locate_whole alike."""
        pp = self.model.info.preprocess
        gray = to_gray(image)
        if gray.shape == (pp.height, pp.width):
            # Already a normalised tile (e.g. an MNIST image): only the polarity may differ.
            tile = bright_ink(gray)
            has_ink = int(tile.max()) - int(tile.min()) >= self.finder.min_contrast
            found = [Candidate((0, 0, pp.width, pp.height), tile, int((tile > 0).sum()))] if has_ink else []
            return found, None, None, None
        mask = sure = detect_ms = None
        if self.detector:
            (mask, sure), detect_ms = mark if mark is not None else self._detect_region(image)
        if self.single:
            return most_prominent(find_digits(gray, self.finder, mask)), detect_ms, None, sure
        page = find_ink(gray, self.finder, mask)
        return page.wholes(), detect_ms, page, sure

    def _locate_whole(self, image: np.ndarray, mark=None):
        pp = self.model.info.preprocess
        h, w = image.shape[:2]
        return [Candidate((0, 0, w, h), resize_to_input(image, pp), h * w)], None, None, None
