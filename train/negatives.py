"""Ink that is not a digit, for the "no digit" class of a digit reader.

A 10-way softmax has no way to say "none of these": a face, a filled shape or the texture
of a photo comes out as a confident 0, 1 or 8. A reader trained with an eleventh class on
such ink can say it. The images are generated here, seeded, in the families below, and
normalised by the runtime's own MNIST-style tile normalisation, exactly as the finder
normalises what it found in a photo:
  shapes     filled circles, ellipses, boxes and polygons (blobs, not pen strokes)
  framed     an outline with marks inside (faces, boxes with writing, ...)
  texture    thresholded smooth noise, as photographed surfaces binarise
  glyphs     lowercase letters and symbols that look like no digit
  capitals   capital letters that are no digit's double, in the TrueType faces matplotlib
             ships (sans, serif, mono, Computer Modern, STIX), any weight, slanted
  hatching   parallel or crossing lines
  marks      the marks people put on pages: ticks, crosses, stars, arrows, zigzag
             crossings-out, boxes ticked or crossed
  tangles    long self-crossing scribbles
  smudges    soft-edged blobs of any shape, thin ones too: shading, a shadow, the edge of
             a face, as the finder cuts them out of a photo (graded, with no flat core)
  pairs      two training digits squeezed into one tile: what a wrong cut of touching
             digits looks like, so that the reader prefers the cut that gives two digits
bench/wild.py measures rejection on other families (capital letters in OpenCV's Hershey
faces, a drawn face, straight-line scribbles) and on real photographs, none of them
generated here.
"""
from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np

from digitpipe.runtime.digits import normalise_tile, stretch_ink

CANVAS = 112
GLYPHS = "cdefhkmnpruvwx#@&%*?=<>{}$"  # none that handwriting makes look like a digit
# I J O Q S are left out: they are 1 1 0 0 5 in most hands. B D G Z stay: their straight
# stems and sharp corners part them from 8 0 6 2 (measured: those digits read as before).
CAPITALS = "ABCDEFGHKLMNPRTUVWXYZ"
HERSHEY = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX,
           cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, cv2.FONT_HERSHEY_COMPLEX_SMALL)
SHARE = 0.1  # negatives per training digit: about as many as one digit class has


def _point(rng, lo=10, hi=CANVAS - 10):
    return int(rng.integers(lo, hi)), int(rng.integers(lo, hi))


def shapes(rng: np.random.Generator) -> np.ndarray:
    canvas = np.zeros((CANVAS, CANVAS), np.uint8)
    for _ in range(int(rng.integers(1, 3))):
        kind = int(rng.integers(4))
        if kind == 0:
            cv2.circle(canvas, _point(rng, 30, 82), int(rng.integers(12, 40)), 255, -1, cv2.LINE_AA)
        elif kind == 1:
            a = int(rng.integers(18, 45))  # no thinner than half as wide as long: a thin blob is a "1"
            cv2.ellipse(canvas, _point(rng, 30, 82), (a, int(rng.integers(a // 2, a + 1))),
                        float(rng.uniform(0, 180)), 0, 360, 255, -1, cv2.LINE_AA)
        elif kind == 2:
            x, y, w = int(rng.integers(5, 50)), int(rng.integers(5, 50)), int(rng.integers(30, 58))
            cv2.rectangle(canvas, (x, y), (x + w, y + int(rng.integers(w // 2, min(2 * w, 107 - y)))), 255, -1)
        else:
            cv2.fillPoly(canvas, [rng.integers(5, 107, (int(rng.integers(3, 7)), 2)).astype(np.int32)], 255, cv2.LINE_AA)
    return canvas


def framed(rng: np.random.Generator) -> np.ndarray:
    canvas = np.zeros((CANVAS, CANVAS), np.uint8)
    width = int(rng.integers(2, 7))
    if rng.random() < 0.5:
        cv2.ellipse(canvas, (56, 56), (int(rng.integers(35, 52)), int(rng.integers(35, 52))), 0, 0, 360, 255, width,
                    cv2.LINE_AA)
    else:
        cv2.rectangle(canvas, _point(rng, 4, 20), _point(rng, 92, 108), 255, width)
    for _ in range(int(rng.integers(2, 5))):  # marks inside: dots, dashes, arcs
        centre = _point(rng, 35, 77)
        kind = int(rng.integers(3))
        if kind == 0:
            cv2.circle(canvas, centre, int(rng.integers(3, 9)), 255, -1, cv2.LINE_AA)
        elif kind == 1:
            end = (centre[0] + int(rng.integers(-20, 21)), centre[1] + int(rng.integers(-8, 9)))
            cv2.line(canvas, centre, end, 255, width, cv2.LINE_AA)
        else:
            cv2.ellipse(canvas, centre, (int(rng.integers(8, 22)), int(rng.integers(4, 14))), 0,
                        float(rng.uniform(0, 90)), float(rng.uniform(120, 200)), 255, width, cv2.LINE_AA)
    return canvas


def texture(rng: np.random.Generator) -> np.ndarray:
    field = cv2.GaussianBlur(rng.normal(0, 1, (CANVAS, CANVAS)).astype(np.float32), (0, 0), float(rng.uniform(1.5, 6)))
    level = np.quantile(field, rng.uniform(0.45, 0.85))
    return np.where(field > level, 255, 0).astype(np.uint8)


def glyphs(rng: np.random.Generator) -> np.ndarray:
    canvas = np.zeros((CANVAS, CANVAS), np.uint8)
    glyph = GLYPHS[int(rng.integers(len(GLYPHS)))]
    cv2.putText(canvas, glyph, (20, 85), HERSHEY[int(rng.integers(len(HERSHEY)))], float(rng.uniform(2.2, 3.2)), 255,
                int(rng.integers(2, 8)), cv2.LINE_AA)
    return canvas


@functools.cache
def _faces() -> tuple:
    """matplotlib's bundled text faces (a training dependency, so the same on every machine):
    PIL FreeTypeFont factories by path; the faces without letters (symbols, the Display cuts)
    are left out."""
    import matplotlib
    from PIL import ImageFont

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    names = sorted(p for p in folder.glob("*.ttf")
                   if p.name.startswith(("DejaVuSans", "DejaVuSerif", "STIXGeneral")) and "Display" not in p.name
                   or p.name in ("cmr10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmb10.ttf", "cmti10.ttf"))
    return tuple(functools.partial(ImageFont.truetype, str(p)) for p in names)


def capitals(rng: np.random.Generator) -> np.ndarray:
    from PIL import Image, ImageDraw

    faces = _faces()
    font = faces[int(rng.integers(len(faces)))](int(rng.integers(60, 84)))
    image = Image.new("L", (CANVAS, CANVAS), 0)
    ImageDraw.Draw(image).text((CANVAS // 2, CANVAS // 2), CAPITALS[int(rng.integers(len(CAPITALS)))], fill=255,
                               font=font, anchor="mm", stroke_width=int(rng.integers(0, 4)), stroke_fill=255)
    m = cv2.getRotationMatrix2D((CANVAS / 2, CANVAS / 2), float(rng.uniform(-12, 12)), 1.0)
    m[0, 1] += float(rng.uniform(-0.25, 0.25))  # slant
    return cv2.warpAffine(np.asarray(image), m, (CANVAS, CANVAS), flags=cv2.INTER_LINEAR)


def hatching(rng: np.random.Generator) -> np.ndarray:
    canvas = np.zeros((CANVAS, CANVAS), np.uint8)
    width = int(rng.integers(4, 11))  # thinner lines fade to grey at the tile's size
    for angle in rng.uniform(0, np.pi, int(rng.integers(1, 3))):
        d = np.array([np.cos(angle), np.sin(angle)])
        normal = np.array([-d[1], d[0]])
        count = int(rng.integers(3, 7))
        for k in np.linspace(-40, 40, count):
            a, b = 56 + k * normal - 50 * d, 56 + k * normal + 50 * d
            cv2.line(canvas, tuple(int(v) for v in a), tuple(int(v) for v in b), 255, width, cv2.LINE_AA)
    return canvas


def _stroke(canvas: np.ndarray, points, width: int, closed: bool = False) -> None:
    cv2.polylines(canvas, [np.asarray(points, np.float32).round().astype(np.int32)], closed, 255, width, cv2.LINE_AA)


def marks(rng: np.random.Generator) -> np.ndarray:
    canvas = np.zeros((CANVAS, CANVAS), np.uint8)
    width = int(rng.integers(5, 12))  # a pen's 1-2 pixels at the tile's size, as in MNIST
    c, r = np.array([56.0, 56.0]), float(rng.uniform(30, 50))
    kind = int(rng.integers(6))
    if kind == 0:  # a tick
        _stroke(canvas, [c + [-r, 0], c + [-r / 3, r * 0.8], c + [r, -r]], width)
    elif kind == 1:  # a cross or an asterisk
        for angle in np.linspace(0, np.pi, int(rng.integers(2, 5)), endpoint=False) + rng.uniform(0, np.pi):
            d = r * np.array([np.cos(angle), np.sin(angle)])
            _stroke(canvas, [c - d, c + d], width)
    elif kind == 2:  # a five-pointed star in one stroke
        angles = -np.pi / 2 + np.arange(6) * 4 * np.pi / 5 + rng.uniform(-0.2, 0.2)
        _stroke(canvas, c + r * np.stack([np.cos(angles), np.sin(angles)], 1), width)
    elif kind == 3:  # an arrow, any direction
        angle = rng.uniform(0, 2 * np.pi)
        d = r * np.array([np.cos(angle), np.sin(angle)])
        tip, back = c + d, 0.4 * r
        _stroke(canvas, [c - d, tip], width)
        for turn in (2.5, -2.5):
            _stroke(canvas, [tip, tip + back * np.array([np.cos(angle + turn), np.sin(angle + turn)])], width)
    elif kind == 4:  # a zigzag crossing-out, back and forth
        count = int(rng.integers(4, 9))
        xs = np.where(np.arange(count) % 2 == 0, -r, r) + rng.normal(0, 4, count)
        ys = np.linspace(-r * 0.7, r * 0.7, count) + rng.normal(0, 3, count)
        _stroke(canvas, c + np.stack([xs, ys], 1), width)
    else:  # a box, ticked or crossed
        h = r * 0.7
        _stroke(canvas, [c + [-h, -h], c + [h, -h], c + [h, h], c + [-h, h]], max(1, width - 1), closed=True)
        if rng.random() < 0.5:
            _stroke(canvas, [c + [-h, -h], c + [h, h]], width)
            _stroke(canvas, [c + [h, -h], c + [-h, h]], width)
        else:
            _stroke(canvas, [c + [-h * 0.6, 0], c + [-h * 0.1, h * 0.6], c + [h * 1.2, -h * 1.2]], width)
    m = cv2.getRotationMatrix2D((CANVAS / 2, CANVAS / 2), float(rng.uniform(-20, 20)), float(rng.uniform(0.8, 1.1)))
    return cv2.warpAffine(canvas, m, (CANVAS, CANVAS), flags=cv2.INTER_LINEAR)


def tangles(rng: np.random.Generator) -> np.ndarray:
    canvas = np.zeros((CANVAS, CANVAS), np.uint8)
    points = rng.uniform(15, 97, (int(rng.integers(10, 16)), 2))
    t = np.linspace(0, 1, 12)[:, None]
    curve = [p0 * (1 - t) ** 2 + 2 * c * t * (1 - t) + p1 * t**2  # quadratic pieces through midpoints
             for p0, c, p1 in zip((points[:-2] + points[1:-1]) / 2, points[1:-1], (points[1:-1] + points[2:]) / 2)]
    cv2.polylines(canvas, [np.concatenate(curve).astype(np.int32)], False, 255, int(rng.integers(2, 7)), cv2.LINE_AA)
    return canvas


def smudges(rng: np.random.Generator) -> np.ndarray:
    side = 2 * CANVAS  # room for the blur: a blob cut flat by the canvas edge would look drawn
    shade = np.zeros((side, side), np.float32)
    minor = 0
    for _ in range(int(rng.integers(1, 3))):
        major = int(rng.integers(20, 50))
        axes = (int(rng.integers(major // 5, major + 1)), major)  # no thinner than a fifth: a thin bar is a "1"
        minor = max(minor, axes[0])
        centre = (int(rng.integers(90, 134)), int(rng.integers(90, 134)))
        cv2.ellipse(shade, centre, axes, float(rng.uniform(-30, 30)), 0, 360, 1.0, -1)
    shade = cv2.GaussianBlur(shade, (0, 0), max(2.0, minor * rng.uniform(0.4, 0.9)))
    shade = shade / max(float(shade.max()), 1e-6) * 200
    thresh = float(rng.uniform(40, 100))  # the finder's threshold cuts a graded slope, not an ink edge
    return stretch_ink(np.where(shade > thresh, shade, 0).astype(np.uint8), thresh)


def pair(rng: np.random.Generator, digits: np.ndarray) -> np.ndarray:
    """Two light-on-dark digit tiles side by side, touching or a little apart."""
    a, b = (digits[int(i)] for i in rng.integers(len(digits), size=2))
    gap = int(rng.integers(-5, 3))  # negative: the two overlap
    canvas = np.zeros((28, 56 + gap), np.uint8)
    canvas[:, :28] = a
    right = canvas[:, 28 + gap :]
    np.maximum(right, b, out=right)
    return canvas


FAMILIES = (shapes, framed, texture, glyphs, capitals, hatching, marks, tangles, smudges)


def negatives(count: int, seed: int, digits: np.ndarray) -> np.ndarray:
    """count uint8 28x28 tiles of non-digit ink (light on dark), the families in turn;
    digits: training digit tiles (N x 28 x 28) for the pairs."""
    rng = np.random.default_rng(seed)
    makers = (*FAMILIES, lambda rng: pair(rng, digits))
    out = np.zeros((count, 28, 28), np.uint8)
    for k in range(count):
        out[k] = normalise_tile(makers[k % len(makers)](rng))
    return out
